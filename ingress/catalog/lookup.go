package catalog

import (
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/sealpost/sealpost/forwarder"
	"github.com/sealpost/sealpost/ingress/smtpin"
)

// Tenants lists every tenant, by name.
func (c *Catalog) Tenants() []Tenant {
	s := c.current()
	out := make([]Tenant, 0, len(s.tenants))
	for _, t := range s.tenants {
		out = append(out, *t)
	}
	slices.SortFunc(out, func(a, b Tenant) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Tenant returns one tenant.
func (c *Catalog) Tenant(name string) (Tenant, bool) {
	t, ok := c.current().tenants[name]
	if !ok {
		return Tenant{}, false
	}
	return *t, true
}

// Routes lists a tenant's routes, by name.
func (c *Catalog) Routes(tenant string) []Route {
	s := c.current()
	var out []Route
	for _, r := range s.routes {
		if r.Tenant == tenant {
			out = append(out, *r)
		}
	}
	slices.SortFunc(out, func(a, b Route) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// GetRoute returns one route.
func (c *Catalog) GetRoute(tenant, name string) (Route, bool) {
	r, ok := c.current().routes[routeRef(tenant, name)]
	if !ok {
		return Route{}, false
	}
	return *r, true
}

// MailRoute returns the route that mail to addr goes to: the SMTP
// ingress's lookup for the routes not in its own configuration.
func (c *Catalog) MailRoute(addr string) (smtpin.Route, bool) {
	r, ok := c.current().mail[strings.ToLower(strings.TrimSpace(addr))]
	if !ok {
		return smtpin.Route{}, false
	}
	return smtpin.Route{Tenant: r.Tenant, Name: r.Name, Recipients: slices.Clone(r.Recipients)}, true
}

var _ smtpin.RouteLookup = (*Catalog)(nil)

// MailDomain reports whether some route has a recipient in domain (lower
// case): the TLS-RPT store's test for reports about API routes' domains.
func (c *Catalog) MailDomain(domain string) bool { return c.current().domains[domain] }

// Endpoints lists a route's endpoints, by id.
func (c *Catalog) Endpoints(tenant, route string) []Endpoint {
	eps := c.current().endpoints[routeRef(tenant, route)]
	out := make([]Endpoint, len(eps))
	for i, e := range eps {
		out[i] = *e
	}
	return out
}

// Endpoint returns one endpoint.
func (c *Catalog) Endpoint(tenant, route, id string) (Endpoint, bool) {
	for _, e := range c.current().endpoints[routeRef(tenant, route)] {
		if e.ID == id {
			return *e, true
		}
	}
	return Endpoint{}, false
}

// OpWebhook returns a tenant's operational webhook.
func (c *Catalog) OpWebhook(tenant string) (OpWebhook, bool) {
	o, ok := c.current().ops[tenant]
	if !ok {
		return OpWebhook{}, false
	}
	return *o, true
}

// ForwarderRoutes is the catalog as the delivery worker reads it.
func (c *Catalog) ForwarderRoutes() forwarder.Routes { return fwdRoutes{c} }

type fwdRoutes struct{ c *Catalog }

var (
	_ forwarder.Routes     = fwdRoutes{}
	_ forwarder.OpWebhooks = fwdRoutes{}
)

// Route implements forwarder.Routes: the route with its endpoints.
func (f fwdRoutes) Route(tenant, name string) (forwarder.Route, bool) {
	s := f.c.current()
	ref := routeRef(tenant, name)
	if _, ok := s.routes[ref]; !ok {
		return forwarder.Route{}, false
	}
	rt := forwarder.Route{Tenant: tenant, Name: name}
	for _, e := range s.endpoints[ref] {
		rt.Endpoints = append(rt.Endpoints, forwarder.Endpoint{
			ID: e.ID, URL: e.URL, AllowHTTP: e.AllowHTTP, MaxConcurrency: e.MaxConcurrency,
			RateLimit: e.RateLimit, EventTypes: e.EventTypes,
		})
	}
	if rt.Endpoints == nil {
		rt.Endpoints = []forwarder.Endpoint{} // a route without endpoints: nothing to deliver
	}
	return rt, true
}

// OpWebhook implements forwarder.OpWebhooks.
func (f fwdRoutes) OpWebhook(tenant string) (forwarder.OpWebhook, bool) {
	o, ok := f.c.current().ops[tenant]
	if !ok {
		return forwarder.OpWebhook{}, false
	}
	return forwarder.OpWebhook{URL: o.URL, AllowHTTP: o.AllowHTTP, FailingAfter: o.FailingAfter, Events: o.Events}, true
}

// OpWebhookTenants implements forwarder.OpWebhooks.
func (f fwdRoutes) OpWebhookTenants() []string {
	s := f.c.current()
	out := make([]string, 0, len(s.ops))
	for t := range s.ops {
		out = append(out, t)
	}
	slices.Sort(out)
	return out
}

// retention is the retention of every tenant and route at one moment.
type retention struct {
	def     time.Duration
	tenants map[string]time.Duration
	routes  map[string]time.Duration // "tenant/route"
	longest map[string]time.Duration
	all     []time.Duration
}

func newRetention(def time.Duration, s *snapshot) retention {
	p := retention{def: def, tenants: map[string]time.Duration{}, routes: map[string]time.Duration{}, longest: map[string]time.Duration{}}
	set := map[time.Duration]bool{def: true}
	for name, t := range s.tenants {
		d := def
		if v, err := parseRetention(t.Retention); t.Retention != "" && err == nil {
			d = v
		}
		p.tenants[name], p.longest[name] = d, d
		set[d] = true
	}
	for ref, r := range s.routes {
		if r.Retention == "" {
			continue
		}
		if d, err := parseRetention(r.Retention); err == nil {
			p.routes[ref] = d
			p.longest[r.Tenant] = max(p.longest[r.Tenant], d)
			set[d] = true
		}
	}
	p.all = slices.Sorted(maps.Keys(set))
	return p
}

// Retention implements forwarder.RetentionPolicy.
func (c *Catalog) Retention(tenant, route string) time.Duration {
	p := &c.current().retention
	if d, ok := p.routes[routeRef(tenant, route)]; ok {
		return d
	}
	if d, ok := p.tenants[tenant]; ok {
		return d
	}
	return p.def
}

// TenantRetention implements forwarder.RetentionPolicy.
func (c *Catalog) TenantRetention(tenant string) time.Duration {
	p := &c.current().retention
	if d, ok := p.longest[tenant]; ok {
		return d
	}
	return p.def
}

// Durations implements forwarder.RetentionPolicy.
func (c *Catalog) Durations() []time.Duration { return c.current().retention.all }

var _ forwarder.RetentionPolicy = (*Catalog)(nil)
