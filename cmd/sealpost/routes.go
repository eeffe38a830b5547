package main

import (
	"net/netip"
	"strings"
	"sync"

	"github.com/sealpost/sealpost/forwarder"
	"github.com/sealpost/sealpost/ingress/httpin"
	"github.com/sealpost/sealpost/ingress/smtpin"
)

// routeTables maps the configuration's tenants and routes onto what each
// component looks up: ingest routes, webhook endpoints, SMTP recipients and
// API keys.
type routeTables struct {
	mu     sync.RWMutex
	routes map[string]*RouteConfig // "tenant/route"
	keys   *httpin.Keys
	smtp   []smtpin.Route
}

var (
	_ httpin.Routes    = (*routeTables)(nil)
	_ forwarder.Routes = (*forwarder2httpRoutes)(nil)
)

func newRouteTables(cfg *Config) (*routeTables, error) {
	t := &routeTables{routes: map[string]*RouteConfig{}}
	var keys []httpin.APIKey
	for _, tc := range cfg.Tenants {
		for i := range tc.Routes {
			r := tc.Routes[i]
			t.routes[tc.Name+"/"+r.Name] = &r
			if len(r.Recipients) > 0 {
				sr := smtpin.Route{Tenant: tc.Name, Name: r.Name, RequireDKIM: r.RequireDKIM}
				for _, rc := range r.Recipients {
					sr.Recipients = append(sr.Recipients, strings.ToLower(rc))
				}
				sr.AllowedSenderDomains = r.AllowedSenderDomains
				for _, n := range r.AllowedNetworks {
					sr.AllowedNetworks = append(sr.AllowedNetworks, netip.MustParsePrefix(n))
				}
				t.smtp = append(t.smtp, sr)
			}
		}
		for _, k := range tc.APIKeys {
			keys = append(keys, httpin.APIKey{ID: k.ID, Tenant: tc.Name, SHA256: mustHex32(k.SHA256), Routes: k.Routes})
		}
	}
	var err error
	if t.keys, err = httpin.NewKeys(keys); err != nil {
		return nil, err
	}
	return t, nil
}

// Route implements httpin.Routes.
func (t *routeTables) Route(tenant, name string) (httpin.Route, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if _, ok := t.routes[tenant+"/"+name]; !ok {
		return httpin.Route{}, false
	}
	return httpin.Route{Tenant: tenant, Name: name}, true
}

// setEndpoint points a route at another URL (the dev receiver's address is
// known only once its listener is bound).
func (t *routeTables) setEndpoint(tenant, name, url string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if r, ok := t.routes[tenant+"/"+name]; ok {
		r.Endpoint = url
	}
}

// forwarder2httpRoutes adapts the tables to forwarder.Routes.
type forwarder2httpRoutes struct{ t *routeTables }

// Route implements forwarder.Routes.
func (f *forwarder2httpRoutes) Route(tenant, name string) (forwarder.Route, bool) {
	f.t.mu.RLock()
	defer f.t.mu.RUnlock()
	r, ok := f.t.routes[tenant+"/"+name]
	if !ok {
		return forwarder.Route{}, false
	}
	return forwarder.Route{
		Tenant: tenant, Name: name, MaxConcurrency: r.MaxConcurrency,
		Endpoint: forwarder.Endpoint{URL: r.Endpoint, AllowHTTP: r.AllowHTTP},
	}, true
}
