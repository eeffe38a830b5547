package catalog

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sealpost/sealpost/ingress/httpin"
	"github.com/sealpost/sealpost/queue"
)

// clock is a controllable Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// openKV returns the catalog bucket of an embedded JetStream.
func openKV(t *testing.T) *queue.KV {
	t.Helper()
	ctx := context.Background()
	conn, err := queue.Open(ctx, queue.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	kv, err := conn.KV(ctx, Bucket)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

func openCatalog(t *testing.T, kv *queue.KV, c *clock, d Declared) *Catalog {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	cat, err := Open(ctx, Config{KV: kv, Declared: d, DefaultRetention: 720 * time.Hour, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	return cat
}

func bearer(token string) *http.Request {
	r, _ := http.NewRequest(http.MethodPost, "https://gateway.example/v1/ingest/orders", nil)
	r.Header.Set("Authorization", "Bearer "+token)
	return r
}

// TestValidate: malformed fields are refused with ErrInvalid, by the one
// name rule of package ingress and the documented bounds.
func TestValidate(t *testing.T) {
	long := strings.Repeat("x", maxDescription+1)
	for _, c := range []struct {
		name string
		err  error
	}{
		{"tenant upper case", (&Tenant{Name: "Acme"}).Validate()},
		{"tenant underscore", (&Tenant{Name: "ac_me"}).Validate()},
		{"tenant description", (&Tenant{Name: "acme", Description: long}).Validate()},
		{"tenant control character", (&Tenant{Name: "acme", Description: "a\nb"}).Validate()},
		{"tenant retention", (&Tenant{Name: "acme", Retention: "400d"}).Validate()},
		{"tenant retention too long", (&Tenant{Name: "acme", Retention: "9000h"}).Validate()},
		{"route name", (&Route{Tenant: "acme", Name: "-orders"}).Validate()},
		{"route metadata key", (&Route{Tenant: "acme", Name: "orders", Metadata: map[string]string{"": "v"}}).Validate()},
		{"endpoint id", (&Endpoint{ID: "ep.1", URL: "https://example.com/hook"}).Validate(nil)},
		{"endpoint http", (&Endpoint{ID: "ep1", URL: "http://example.com/hook"}).Validate(nil)},
		{"endpoint loopback", (&Endpoint{ID: "ep1", URL: "https://127.0.0.1/hook"}).Validate(nil)},
		{"endpoint concurrency", (&Endpoint{ID: "ep1", URL: "https://example.com/hook", MaxConcurrency: maxConcurrency + 1}).Validate(nil)},
		{"endpoint rate", (&Endpoint{ID: "ep1", URL: "https://example.com/hook", RateLimit: -1}).Validate(nil)},
		{"endpoint event type", (&Endpoint{ID: "ep1", URL: "https://example.com/hook", EventTypes: []string{"a b"}}).Validate(nil)},
	} {
		if !errors.Is(c.err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", c.name, c.err)
		}
	}
	for _, err := range []error{
		(&Tenant{Name: "acme", Retention: "168h", Metadata: map[string]string{"plan": "pro"}}).Validate(),
		(&Route{Tenant: "acme", Name: "orders_eu"}).Validate(),
		(&Endpoint{ID: "ep_1", URL: "https://example.com/hook", MaxConcurrency: 4, RateLimit: 10, EventTypes: []string{"order.*"}}).Validate(nil),
	} {
		if err != nil {
			t.Errorf("a valid object was refused: %v", err)
		}
	}
}

// TestAPIKeyLifecycle: a key's token works once created; after a rotation
// the old token works for the overlap only; a revoked or expired key
// works no more; a second instance sees every change.
func TestAPIKeyLifecycle(t *testing.T) {
	kv := openKV(t)
	c := &clock{t: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}
	cat := openCatalog(t, kv, c, Declared{})
	other := openCatalog(t, kv, c, Declared{})
	ctx := context.Background()
	if _, err := cat.CreateTenant(ctx, Tenant{Name: "acme"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := cat.CreateAPIKey(ctx, APIKey{ID: "k1", Tenant: "ghost", Scopes: []string{httpin.ScopeIngestAll}}); !errors.Is(err, ErrNotFound) {
		t.Errorf("a key of an unknown tenant: %v, want ErrNotFound", err)
	}
	if _, _, err := cat.CreateAPIKey(ctx, APIKey{ID: "k1", Tenant: "acme", Scopes: []string{"admin:*"}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("an unknown scope: %v, want ErrInvalid", err)
	}
	k, token, err := cat.CreateAPIKey(ctx, APIKey{ID: "k1", Tenant: "acme", Scopes: []string{httpin.ScopeIngestAll}, Expires: c.now().Add(48 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := cat.CreateAPIKey(ctx, APIKey{ID: "k1", Tenant: "acme", Scopes: []string{httpin.ScopeIngestAll}}); !errors.Is(err, ErrExists) {
		t.Errorf("a second key k1: %v, want ErrExists", err)
	}
	works := func(cat *Catalog, token string) bool {
		got, err := cat.Authenticate(bearer(token))
		return err == nil && got.ID == k.ID && got.Tenant == "acme"
	}
	eventually := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not seen within 10s", what)
			}
		}
	}
	if !works(cat, token) {
		t.Fatal("a new key's token does not work")
	}
	eventually("the new key on the other instance", func() bool { return works(other, token) })

	_, rotated, err := cat.RotateAPIKey(ctx, "k1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !works(cat, rotated) || !works(cat, token) {
		t.Error("during the overlap, the new and the old token must both work")
	}
	c.advance(time.Hour + time.Second)
	if !works(cat, rotated) || works(cat, token) {
		t.Error("after the overlap, only the new token may work")
	}
	c.advance(48 * time.Hour)
	if works(cat, rotated) {
		t.Error("an expired key works")
	}
	c.advance(-48 * time.Hour)
	if _, err := cat.RevokeAPIKey(ctx, "k1"); err != nil {
		t.Fatal(err)
	}
	if works(cat, rotated) {
		t.Error("a revoked key works")
	}
	eventually("the revocation on the other instance", func() bool { return !works(other, rotated) })
}

// TestOperatorTokens: roles are checked, ids follow the name rule, and an
// operator's token follows the same rotation and revocation rules.
func TestOperatorTokens(t *testing.T) {
	c := &clock{t: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}
	cat := openCatalog(t, openKV(t), c, Declared{})
	ctx := context.Background()
	for _, o := range []Operator{{ID: "ann", Role: "root"}, {ID: "admin", Role: RoleAdmin}, {ID: "Ann", Role: RoleViewer}, {ID: "a_b", Role: RoleViewer}} {
		if _, _, err := cat.CreateOperator(ctx, o); !errors.Is(err, ErrInvalid) {
			t.Errorf("operator %+v: %v, want ErrInvalid", o, err)
		}
	}
	o, token, err := cat.CreateOperator(ctx, Operator{ID: "ann", Role: RoleOperator})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := cat.AuthenticateOperator(token); err != nil || got.ID != o.ID || got.Role != RoleOperator {
		t.Fatalf("AuthenticateOperator = %+v, %v", got, err)
	}
	if _, err := cat.AuthenticateOperator(token + "x"); !errors.Is(err, ErrBadToken) {
		t.Errorf("a wrong token: %v, want ErrBadToken", err)
	}
	_, rotated, err := cat.RotateOperator(ctx, "ann", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cat.AuthenticateOperator(token); !errors.Is(err, ErrBadToken) {
		t.Errorf("the token replaced without overlap: %v, want ErrBadToken", err)
	}
	if _, err := cat.RevokeOperator(ctx, "ann"); err != nil {
		t.Fatal(err)
	}
	if _, err := cat.AuthenticateOperator(rotated); !errors.Is(err, ErrBadToken) {
		t.Errorf("a revoked operator: %v, want ErrBadToken", err)
	}
	if RoleRank(RoleViewer) >= RoleRank(RoleOperator) || RoleRank(RoleOperator) >= RoleRank(RoleAdmin) || RoleRank("root") != 0 {
		t.Error("roles are not ordered viewer < operator < admin")
	}
}

// TestDeclaredReadOnly: objects from the configuration file refuse
// changes through the API, while the API may add to a declared route.
func TestDeclaredReadOnly(t *testing.T) {
	c := &clock{t: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}
	d := Declared{
		Tenants:   []Tenant{{Name: "acme"}},
		Routes:    []Route{{Tenant: "acme", Name: "invoices"}},
		Endpoints: []Endpoint{{ID: DefaultEndpoint, Tenant: "acme", Route: "invoices", URL: "https://example.com/hook"}},
	}
	cat := openCatalog(t, openKV(t), c, d)
	ctx := context.Background()
	if _, err := cat.UpdateTenant(ctx, "acme", func(t *Tenant) error { t.Description = "x"; return nil }); !errors.Is(err, ErrReadOnly) {
		t.Errorf("update a declared tenant: %v, want ErrReadOnly", err)
	}
	if err := cat.DeleteRoute(ctx, "acme", "invoices"); !errors.Is(err, ErrReadOnly) {
		t.Errorf("delete a declared route: %v, want ErrReadOnly", err)
	}
	if err := cat.DeleteEndpoint(ctx, "acme", "invoices", DefaultEndpoint); !errors.Is(err, ErrReadOnly) {
		t.Errorf("delete a declared endpoint: %v, want ErrReadOnly", err)
	}
	e, err := cat.CreateEndpoint(ctx, Endpoint{Tenant: "acme", Route: "invoices", URL: "https://example.org/hook"}, nil)
	if err != nil {
		t.Fatalf("add an endpoint to a declared route: %v", err)
	}
	if eps := cat.Endpoints("acme", "invoices"); len(eps) != 2 {
		t.Errorf("endpoints of the declared route: %d, want 2 (%s and %s)", len(eps), DefaultEndpoint, e.ID)
	}
	if err := cat.DeleteEndpoint(ctx, "acme", "invoices", e.ID); err != nil {
		t.Errorf("delete the added endpoint: %v", err)
	}
}

// TestMailRecipients: routes made through the API take mail recipients,
// seen by every instance; an address belongs to one route (a declared
// one included) and the reserved ones to none; bad addresses are refused.
func TestMailRecipients(t *testing.T) {
	c := &clock{t: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}
	d := Declared{
		Tenants: []Tenant{{Name: "acme"}},
		Routes:  []Route{{Tenant: "acme", Name: "invoices", Recipients: []string{"invoices@acme.test"}}},
	}
	kv := openKV(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cat, err := Open(ctx, Config{KV: kv, Declared: d, DefaultRetention: 720 * time.Hour, Now: c.now,
		ReservedRecipients: []string{"tlsrpt@acme.test"}})
	if err != nil {
		t.Fatal(err)
	}
	other := openCatalog(t, kv, c, d)
	if _, err := cat.CreateTenant(ctx, Tenant{Name: "beta"}); err != nil {
		t.Fatal(err)
	}
	r, err := cat.CreateRoute(ctx, Route{Tenant: "beta", Name: "orders", Recipients: []string{" Orders@Beta.test", "po@beta.test"}})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(r.Recipients, " ") != "orders@beta.test po@beta.test" {
		t.Errorf("recipients stored as %q, want lower case and trimmed", r.Recipients)
	}
	for _, cc := range []*Catalog{cat, other} {
		waitUntil(t, func() bool { _, ok := cc.MailRoute("ORDERS@beta.test"); return ok })
		if mr, ok := cc.MailRoute("orders@beta.test"); !ok || mr.Tenant != "beta" || mr.Name != "orders" {
			t.Errorf("MailRoute(orders@beta.test) = %+v, %v", mr, ok)
		}
		if mr, ok := cc.MailRoute("invoices@acme.test"); !ok || mr.Tenant != "acme" || mr.Name != "invoices" {
			t.Errorf("MailRoute of the declared recipient = %+v, %v", mr, ok)
		}
		if _, ok := cc.MailRoute("nobody@beta.test"); ok {
			t.Error("an unknown recipient has a route")
		}
	}

	for _, tc := range []struct {
		name  string
		rcpts []string
		want  error
	}{
		{"declared", []string{"invoices@acme.test"}, ErrRecipientTaken},
		{"other route", []string{"PO@beta.test"}, ErrRecipientTaken},
		{"reserved", []string{"tlsrpt@acme.test"}, ErrRecipientTaken},
		{"no at", []string{"orders"}, ErrInvalid},
		{"no domain", []string{"orders@"}, ErrInvalid},
		{"space", []string{"a b@beta.test"}, ErrInvalid},
		{"angle", []string{"<a@beta.test>"}, ErrInvalid},
		{"twice", []string{"x@beta.test", "X@beta.test"}, ErrInvalid},
		{"too long", []string{strings.Repeat("a", 250) + "@b.test"}, ErrInvalid},
		{"too many", manyAddrs(MaxRecipients + 1), ErrInvalid},
	} {
		if _, err := cat.CreateRoute(ctx, Route{Tenant: "beta", Name: "new-" + strings.ReplaceAll(tc.name, " ", "-"), Recipients: tc.rcpts}); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	if _, err := cat.CreateRoute(ctx, Route{Tenant: "beta", Name: "bulk", Recipients: manyAddrs(MaxRecipients)}); err != nil {
		t.Errorf("%d recipients: %v", MaxRecipients, err)
	}

	// An update changes them: the old address is free again, and a route
	// keeps its own addresses when it lists them again.
	if _, err := cat.UpdateRoute(ctx, "beta", "orders", func(r *Route) error {
		r.Recipients = []string{"orders@beta.test", "orders2@beta.test"}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := cat.UpdateRoute(ctx, "beta", "bulk", func(r *Route) error {
		r.Recipients = []string{"orders2@beta.test"}
		return nil
	}); !errors.Is(err, ErrRecipientTaken) {
		t.Errorf("update to another route's address: %v", err)
	}
	waitUntil(t, func() bool { _, ok := other.MailRoute("po@beta.test"); return !ok })
	if _, err := cat.CreateRoute(ctx, Route{Tenant: "beta", Name: "po", Recipients: []string{"po@beta.test"}}); err != nil {
		t.Errorf("a freed address: %v", err)
	}
	if err := cat.DeleteRoute(ctx, "beta", "po"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, func() bool { _, ok := other.MailRoute("po@beta.test"); return !ok })
}

func manyAddrs(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = "r" + strconv.Itoa(i) + "@bulk.test"
	}
	return out
}

func waitUntil(t *testing.T, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !ok(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("not seen within 10 s")
		}
	}
}
