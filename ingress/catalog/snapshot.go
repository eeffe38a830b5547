package catalog

import (
	"cmp"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/sealpost/sealpost/ingress/httpin"
)

// Keys of the bucket. Every name in them is a token of letters, digits,
// '-' and '_'.
const (
	tenantPrefix    = "tenant."    // tenant.<tenant>
	routePrefix     = "route."     // route.<tenant>.<route>
	endpointPrefix  = "endpoint."  // endpoint.<tenant>.<route>.<id>
	opWebhookPrefix = "opwebhook." // opwebhook.<tenant>
	apiKeyPrefix    = "apikey."    // apikey.<id>
	operatorPrefix  = "operator."  // operator.<id>
	usedPrefix      = "used."      // used.<api key id>: RFC 3339 time
)

func tenantKey(t string) string            { return tenantPrefix + t }
func routeKey(t, r string) string          { return routePrefix + t + "." + r }
func endpointKey(t, r, e string) string    { return endpointPrefix + t + "." + r + "." + e }
func opWebhookKey(t string) string         { return opWebhookPrefix + t }
func apiKeyKey(id string) string           { return apiKeyPrefix + id }
func operatorKey(id string) string         { return operatorPrefix + id }
func usedKey(id string) string             { return usedPrefix + id }
func routeRef(tenant, route string) string { return tenant + "/" + route }

// snapshot is the whole catalog at one moment; it is never changed once
// built.
type snapshot struct {
	tenants   map[string]*Tenant
	routes    map[string]*Route      // "tenant/route"
	endpoints map[string][]*Endpoint // "tenant/route", by id
	ops       map[string]*OpWebhook  // tenant
	apiKeys   map[string]*keyRecord  // id
	operators map[string]*operatorRecord
	keys      *httpin.Keys
	used      map[string]time.Time // api key id -> last used, as stored
	mail      map[string]*Route    // recipient address -> route
	domains   map[string]bool      // the domains of the recipients
	// conflicts are the routes whose recipient went to an older route:
	// "tenant/route address".
	conflicts map[string]bool
	retention retention
}

// keyRecord is what the bucket holds of an API key.
type keyRecord struct {
	APIKey
	SHA256   string     `json:"sha256"`
	Previous []prevHash `json:"previous,omitempty"`
}

// operatorRecord is what the bucket holds of an operator.
type operatorRecord struct {
	Operator
	SHA256   string     `json:"sha256"`
	Previous []prevHash `json:"previous,omitempty"`
}

// prevHash is the hash of a token a rotation replaced, valid until
// NotAfter.
type prevHash struct {
	SHA256   string    `json:"sha256"`
	NotAfter time.Time `json:"not_after"`
}

func buildSnapshot(cfg Config, stored map[string]json.RawMessage, log *slog.Logger) *snapshot {
	s := &snapshot{
		tenants: map[string]*Tenant{}, routes: map[string]*Route{}, endpoints: map[string][]*Endpoint{},
		ops: map[string]*OpWebhook{}, apiKeys: map[string]*keyRecord{}, operators: map[string]*operatorRecord{},
		used: map[string]time.Time{},
	}
	d := cfg.Declared
	for i := range d.Tenants {
		t := d.Tenants[i]
		t.Declared = true
		s.tenants[t.Name] = &t
	}
	for i := range d.Routes {
		r := d.Routes[i]
		r.Declared = true
		s.routes[routeRef(r.Tenant, r.Name)] = &r
	}
	for i := range d.Endpoints {
		e := d.Endpoints[i]
		e.Declared = true
		s.endpoints[routeRef(e.Tenant, e.Route)] = append(s.endpoints[routeRef(e.Tenant, e.Route)], &e)
	}
	for _, k := range d.APIKeys {
		s.apiKeys[k.ID] = &keyRecord{APIKey: APIKey{ID: k.ID, Tenant: k.Tenant, Scopes: effectiveScopes(k), Expires: k.Expires, Declared: true},
			SHA256: hex.EncodeToString(k.SHA256[:])}
	}
	decode := func(key string, raw json.RawMessage, v any) bool {
		if err := json.Unmarshal(raw, v); err != nil {
			log.Error("catalog: stored object does not decode; ignored", "key", key, "err", err)
			return false
		}
		return true
	}
	// Tenants first, so that routes, endpoints and keys of a tenant that
	// is gone (or declared) are left out.
	var later []string
	for k, raw := range stored {
		if name, ok := strings.CutPrefix(k, tenantPrefix); ok {
			var t Tenant
			if s.tenants[name] == nil && decode(k, raw, &t) && t.Name == name {
				t.Declared = false
				s.tenants[name] = &t
			}
			continue
		}
		later = append(later, k)
	}
	slices.Sort(later) // routes before their endpoints ("endpoint." < "route." is fine: both checked below)
	for _, k := range later {
		if strings.HasPrefix(k, routePrefix) {
			var r Route
			if decode(k, stored[k], &r) && k == routeKey(r.Tenant, r.Name) && s.tenants[r.Tenant] != nil && s.routes[routeRef(r.Tenant, r.Name)] == nil {
				r.Declared = false
				s.routes[routeRef(r.Tenant, r.Name)] = &r
			}
		}
	}
	for _, k := range later {
		raw := stored[k]
		switch {
		case strings.HasPrefix(k, endpointPrefix):
			var e Endpoint
			if !decode(k, raw, &e) || k != endpointKey(e.Tenant, e.Route, e.ID) {
				continue
			}
			ref := routeRef(e.Tenant, e.Route)
			if s.routes[ref] == nil || slices.ContainsFunc(s.endpoints[ref], func(x *Endpoint) bool { return x.ID == e.ID }) {
				continue
			}
			e.Declared = false
			s.endpoints[ref] = append(s.endpoints[ref], &e)
		case strings.HasPrefix(k, opWebhookPrefix):
			var o OpWebhook
			if decode(k, raw, &o) && k == opWebhookKey(o.Tenant) && s.tenants[o.Tenant] != nil {
				s.ops[o.Tenant] = &o
			}
		case strings.HasPrefix(k, apiKeyPrefix):
			var r keyRecord
			if decode(k, raw, &r) && k == apiKeyKey(r.ID) && s.tenants[r.Tenant] != nil && s.apiKeys[r.ID] == nil {
				r.Declared = false
				s.apiKeys[r.ID] = &r
			}
		case strings.HasPrefix(k, operatorPrefix):
			var r operatorRecord
			if decode(k, raw, &r) && k == operatorKey(r.ID) {
				s.operators[r.ID] = &r
			}
		case strings.HasPrefix(k, usedPrefix):
			if t, err := time.Parse(time.RFC3339, string(raw)); err == nil {
				s.used[strings.TrimPrefix(k, usedPrefix)] = t
			}
		}
	}
	for _, eps := range s.endpoints {
		slices.SortFunc(eps, func(a, b *Endpoint) int { return strings.Compare(a.ID, b.ID) })
	}
	keys := append([]httpin.APIKey(nil), d.APIKeys...)
	for _, r := range s.apiKeys {
		if r.Declared {
			continue
		}
		k, ok := r.httpinKey()
		if !ok {
			log.Error("catalog: stored api key has a malformed hash; ignored", "id", r.ID)
			continue
		}
		keys = append(keys, k)
	}
	var err error
	if s.keys, err = httpin.NewKeys(keys); err != nil {
		// Ids are unique by construction (one key per id in the bucket,
		// declared ids refused); fall back to the declared keys alone.
		log.Error("catalog: api keys do not index; serving the declared keys only", "err", err)
		s.keys, _ = httpin.NewKeys(d.APIKeys)
	}
	if cfg.Now != nil {
		s.keys.Now = cfg.Now
	}
	s.retention = newRetention(cfg.DefaultRetention, s)
	s.mail, s.conflicts = mailIndex(s.routes)
	s.domains = map[string]bool{}
	for a := range s.mail {
		if at := strings.LastIndexByte(a, '@'); at >= 0 {
			s.domains[strings.TrimSuffix(a[at+1:], ".")] = true
		}
	}
	return s
}

// mailIndex maps each recipient to its route: declared routes first, then
// the others by age, so that an address two routes were given at the same
// moment (by two instances) goes to the older one. It also answers the
// routes that lost an address that way.
func mailIndex(routes map[string]*Route) (map[string]*Route, map[string]bool) {
	rs := slices.Collect(maps.Values(routes))
	slices.SortFunc(rs, func(a, b *Route) int {
		if a.Declared != b.Declared {
			if a.Declared {
				return -1
			}
			return 1
		}
		return cmp.Or(a.Created.Compare(b.Created), strings.Compare(routeRef(a.Tenant, a.Name), routeRef(b.Tenant, b.Name)))
	})
	out, lost := map[string]*Route{}, map[string]bool{}
	for _, r := range rs {
		for _, a := range r.Recipients {
			a = strings.ToLower(a)
			if _, ok := out[a]; ok {
				lost[routeRef(r.Tenant, r.Name)+" "+a] = true
				continue
			}
			out[a] = r
		}
	}
	return out, lost
}

// httpinKey is the key as httpin authenticates it. A revoked key expires
// at its revocation.
func (r *keyRecord) httpinKey() (httpin.APIKey, bool) {
	sum, ok := decodeSum(r.SHA256)
	if !ok {
		return httpin.APIKey{}, false
	}
	k := httpin.APIKey{ID: r.ID, Tenant: r.Tenant, SHA256: sum, Scopes: slices.Clone(r.Scopes), Expires: r.Expires}
	if k.Scopes == nil {
		k.Scopes = []string{}
	}
	if !r.Revoked.IsZero() && (k.Expires.IsZero() || r.Revoked.Before(k.Expires)) {
		k.Expires = r.Revoked
	}
	for _, p := range r.Previous {
		if ps, ok := decodeSum(p.SHA256); ok {
			k.Previous = append(k.Previous, httpin.PreviousHash{SHA256: ps, NotAfter: p.NotAfter})
		}
	}
	return k, true
}

func decodeSum(h string) ([32]byte, bool) {
	var sum [32]byte
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != 32 {
		return sum, false
	}
	copy(sum[:], b)
	return sum, true
}

// effectiveScopes are the scopes a declared key acts with: its own, or the
// configuration file's default (httpin.DefaultScopes).
func effectiveScopes(k httpin.APIKey) []string {
	if k.Scopes != nil {
		return slices.Clone(k.Scopes)
	}
	return httpin.DefaultScopes(k.Routes)
}
