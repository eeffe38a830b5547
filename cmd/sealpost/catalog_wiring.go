package main

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/sealpost/sealpost/ingress/catalog"
	"github.com/sealpost/sealpost/ingress/httpapi"
	"github.com/sealpost/sealpost/ingress/httpin"
	"github.com/sealpost/sealpost/ingress/smtpin"
)

// openCatalog opens the catalog with what the configuration file declares
// and keeps it watched until the gateway closes.
func (g *gateway) openCatalog(ctx, bgCtx context.Context) error {
	kv, err := g.q.KV(ctx, catalog.Bucket)
	if err != nil {
		return err
	}
	var reserved []string
	if a := g.cfg.SMTP.TLSRPT.Address; a != "" {
		reserved = append(reserved, strings.ToLower(a))
	}
	g.cat, err = catalog.Open(bgCtx, catalog.Config{KV: kv, Declared: g.cfg.declared(),
		DefaultRetention: time.Duration(g.cfg.Retention), ReservedRecipients: reserved, Logger: g.log})
	if err != nil {
		return err
	}
	return nil
}

// declared maps the configuration's tenants, routes and keys onto the
// catalog: read-only through the API. A route's endpoint is its
// "default" endpoint.
func (c *Config) declared() catalog.Declared {
	var d catalog.Declared
	for _, tc := range c.Tenants {
		t := catalog.Tenant{Name: tc.Name}
		if tc.Retention != 0 {
			t.Retention = time.Duration(tc.Retention).String()
		}
		d.Tenants = append(d.Tenants, t)
		for _, rc := range tc.Routes {
			r := catalog.Route{Tenant: tc.Name, Name: rc.Name, Recipients: rc.Recipients}
			if rc.Retention != 0 {
				r.Retention = time.Duration(rc.Retention).String()
			}
			d.Routes = append(d.Routes, r)
			d.Endpoints = append(d.Endpoints, catalog.Endpoint{ID: catalog.DefaultEndpoint, Tenant: tc.Name, Route: rc.Name,
				URL: rc.Endpoint, AllowHTTP: rc.AllowHTTP, MaxConcurrency: rc.MaxConcurrency})
		}
		for _, k := range tc.APIKeys {
			scopes := k.Scopes
			if scopes == nil {
				scopes = httpin.DefaultScopes(k.Routes)
			}
			d.APIKeys = append(d.APIKeys, httpin.APIKey{ID: k.ID, Tenant: tc.Name, SHA256: mustHex32(k.SHA256), Routes: k.Routes, Scopes: scopes})
		}
	}
	return d
}

// allowNets are forward.allow_networks, parsed (validated before).
func (c *Config) allowNets() []netip.Prefix {
	var allow []netip.Prefix
	for _, n := range c.Forward.AllowNetworks {
		allow = append(allow, netip.MustParsePrefix(n))
	}
	return allow
}

// smtpRoutes are the routes with mail recipients.
func (c *Config) smtpRoutes() []smtpin.Route {
	var out []smtpin.Route
	for _, tc := range c.Tenants {
		for _, r := range tc.Routes {
			if len(r.Recipients) == 0 {
				continue
			}
			sr := smtpin.Route{Tenant: tc.Name, Name: r.Name, RequireDKIM: r.RequireDKIM, AllowedSenderDomains: r.AllowedSenderDomains}
			for _, rc := range r.Recipients {
				sr.Recipients = append(sr.Recipients, strings.ToLower(rc))
			}
			for _, n := range r.AllowedNetworks {
				sr.AllowedNetworks = append(sr.AllowedNetworks, netip.MustParsePrefix(n))
			}
			out = append(out, sr)
		}
	}
	return out
}

// ssoConfig is admin.sso for the API; nil when not configured.
func (c *Config) ssoConfig() (*httpapi.SSOConfig, error) {
	s := c.Admin.SSO
	if s.Issuer == "" {
		return nil, nil
	}
	out := &httpapi.SSOConfig{Issuer: s.Issuer, Audience: s.Audience, JWKSURL: s.JWKSURL, RoleClaim: s.RoleClaim,
		Roles: s.Roles, SubjectClaim: s.SubjectClaim}
	for v, r := range s.Roles {
		if catalog.RoleRank(r) == 0 {
			return nil, fmt.Errorf("admin.sso.roles.%s: %q is not viewer, operator or admin", v, r)
		}
	}
	return out, nil
}
