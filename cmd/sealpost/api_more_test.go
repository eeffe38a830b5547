package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// TestPartialFailureThroughTheQueue: of two endpoints one delivers at once
// and the other keeps failing; the failing one is retried on its own
// schedule through the real queue until it is dead-lettered, the other is
// never posted again, the dead letter is listed for that endpoint, and a
// replay by filter delivers it once the endpoint is back.
func TestPartialFailureThroughTheQueue(t *testing.T) {
	rcv := newReceiver(t)
	g := startGateway(t, gatewayOpts{endpoint: rcv.url()})
	good, bad := newReceiver(t), newReceiver(t)
	bad.failFirst.Store(1 << 40)
	bad.failStatus = http.StatusInternalServerError
	token := apiTenant(t, g, "globex", "orders", "ingest:*", "receipts:read", "endpoints:write")
	idGood, _ := addEndpoint(t, g, "globex", "orders", map[string]any{"url": good.url()})
	idBad, _ := addEndpoint(t, g, "globex", "orders", map[string]any{"url": bad.url()})
	ops := newReceiver(t)
	g.must(200, "admin", "PUT", "/admin/tenants/globex/operational-webhook", g.admin,
		map[string]any{"url": ops.url(), "allow_http": true, "failing_after": 2, "events": []string{"message.attempt.failing", "message.attempt.exhausted"}})

	code, id := g.ingestAs(token, "orders", `{"order":7}`, "")
	if code != 202 {
		t.Fatalf("ingest %d", code)
	}
	good.waitFor(t, 1, 30*time.Second)
	// The harness's schedule has 10 attempts, 300 ms apart.
	var dl []any
	for deadline := time.Now().Add(60 * time.Second); len(dl) == 0; time.Sleep(100 * time.Millisecond) {
		dl = g.must(200, "https", "GET", "/v1/dead-letters?route=orders", token, nil)["items"].([]any)
		if time.Now().After(deadline) {
			t.Fatal("no dead letter after the failing endpoint's schedule")
		}
	}
	d := dl[0].(map[string]any)
	if len(dl) != 1 || d["id"] != id || d["endpoint"] != idBad || d["attempts"] != float64(10) {
		t.Fatalf("dead letters %v, want %s to %s after 10 attempts", dl, id, idBad)
	}
	if n := bad.calls.Load(); n != 10 {
		t.Errorf("the failing endpoint got %d requests, want 10", n)
	}
	if n := good.calls.Load(); n != 1 {
		t.Errorf("the delivering endpoint got %d requests, want 1", n)
	}
	at := g.must(200, "https", "GET", "/v1/receipts/"+id+"/attempts", token, nil)["attempts"].([]any)
	perEndpoint := map[any]int{}
	for _, a := range at {
		perEndpoint[a.(map[string]any)["endpoint"]]++
	}
	if perEndpoint[idGood] != 1 || perEndpoint[idBad] != 10 {
		t.Errorf("attempts per endpoint %v", perEndpoint)
	}
	page := g.must(200, "https", "GET", "/v1/receipts?status=dead&endpoint="+idBad, token, nil)["items"].([]any)
	if len(page) != 1 || page[0].(map[string]any)["id"] != id {
		t.Errorf("receipts dead at %s: %v", idBad, page)
	}
	// Operational events: failing after the 2nd attempt, exhausted at the end.
	evs := ops.waitFor(t, 2, 30*time.Second)
	types := map[string]bool{}
	for _, e := range evs {
		var ev struct{ Type string }
		_ = json.Unmarshal(e.body, &ev)
		types[ev.Type] = true
	}
	if !types["message.attempt.failing"] || !types["message.attempt.exhausted"] {
		t.Errorf("operational events %v", types)
	}

	// A redelivery to both endpoints reaches one: 200, partial, a result
	// per endpoint; to the failing one alone: 502.
	res := g.must(200, "https", "POST", "/v1/receipts/"+id+"/redeliver", token, nil)
	byEndpoint := map[any]any{}
	for _, e := range res["endpoints"].([]any) {
		byEndpoint[e.(map[string]any)["endpoint"]] = e.(map[string]any)["result"]
	}
	if res["result"] != "partial" || byEndpoint[idGood] != "delivered" || byEndpoint[idBad] != "failed" {
		t.Errorf("redelivery to both endpoints: %v", res)
	}
	if p := g.must(502, "https", "POST", "/v1/receipts/"+id+"/redeliver?endpoint="+idBad, token, nil); p["type"] != "https://sealpost.dev/problems/delivery-failed" {
		t.Errorf("redelivery to the failing endpoint: %v", p)
	}
	if n := good.calls.Load(); n != 2 {
		t.Errorf("the delivering endpoint got %d requests, want 2 (the redelivery)", n)
	}

	// The endpoint is back: a replay of its dead letters delivers it.
	bad.failFirst.Store(0)
	res = g.must(200, "https", "POST", "/v1/dead-letters/replay?route=orders&endpoint="+idBad, token, nil)
	if res["replayed"] != float64(1) {
		t.Fatalf("replay %v", res)
	}
	if got := bad.waitFor(t, 1, 10*time.Second); got[0].id != id {
		t.Errorf("replayed webhook-id %q, want %q", got[0].id, id)
	}
	if n := good.calls.Load(); n != 2 {
		t.Errorf("the replay of one endpoint's dead letter posted to the other (%d requests in all)", n)
	}
	if dl := g.must(200, "https", "GET", "/v1/dead-letters", token, nil)["items"].([]any); len(dl) != 0 {
		t.Errorf("dead letters after the replay: %v", dl)
	}
}

// TestChangeSeenByAnotherInstance: two gateways on one JetStream; a
// tenant, route and key made through one work on the other, and a key
// revoked on one is refused by the other.
func TestChangeSeenByAnotherInstance(t *testing.T) {
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true, MaxPayload: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	srv.SetLoggerV2(quietLog{}, false, false, false)
	srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(30 * time.Second) {
		t.Fatal("nats not ready")
	}
	rcv := newReceiver(t)
	dirs := []string{t.TempDir(), t.TempDir()}
	shareMasterKey(t, dirs...)
	o := gatewayOpts{natsURL: srv.ClientURL(), endpoint: rcv.url(), logLevel: "warn", dataDir: dirs[0]}
	g1 := startGateway(t, o)
	o.dataDir, o.token, o.admin = dirs[1], g1.token, g1.admin
	g2 := startGateway(t, o)

	token := apiTenant(t, g1, "globex", "orders", "ingest:*", "receipts:read")
	api := newReceiver(t)
	addEndpoint(t, g1, "globex", "orders", map[string]any{"url": api.url()})
	var code int
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if code, _ = g2.call("https", "GET", "/v1/routes", token, nil); code == 200 || time.Now().After(deadline) {
			break
		}
	}
	if code != 200 {
		t.Fatalf("the second instance answers %d to the key made on the first", code)
	}
	if code, _ := g2.ingestAs(token, "orders", `{"via":"g2"}`, ""); code != 202 {
		t.Fatalf("ingest on the second instance: %d", code)
	}
	api.waitFor(t, 1, 30*time.Second)
	keys := g1.must(200, "admin", "GET", "/admin/tenants/globex/api-keys", g1.admin, nil)["items"].([]any)
	id := keys[0].(map[string]any)["id"].(string)
	g1.must(200, "admin", "DELETE", "/admin/tenants/globex/api-keys/"+id, g1.admin, nil)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if code, _ = g2.call("https", "GET", "/v1/routes", token, nil); code == 401 || time.Now().After(deadline) {
			break
		}
	}
	if code != 401 {
		t.Fatalf("the second instance answers %d to a key revoked on the first", code)
	}
}

// idp is an identity provider: a JWKS on an httptest server and tokens
// signed in the test.
type idp struct {
	srv   *httptest.Server
	ed    ed25519.PrivateKey
	ec    *ecdsa.PrivateKey
	issue string
}

func newIDP(t *testing.T) *idp {
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p := &idp{ed: ed, ec: ec, issue: "https://idp.test/"}
	b64 := base64.RawURLEncoding
	ecx, ecy := ec.X.FillBytes(make([]byte, 32)), ec.Y.FillBytes(make([]byte, 32))
	jwks, _ := json.Marshal(map[string]any{"keys": []map[string]string{
		{"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": b64.EncodeToString(ed.Public().(ed25519.PublicKey))},
		{"kty": "EC", "crv": "P-256", "kid": "ec", "x": b64.EncodeToString(ecx), "y": b64.EncodeToString(ecy)},
	}})
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(jwks) }))
	t.Cleanup(p.srv.Close)
	return p
}

// token signs claims with the Ed25519 ("ed") or P-256 ("ec") key.
func (p *idp) token(t *testing.T, kid string, claims map[string]any) string {
	b64 := base64.RawURLEncoding
	alg := map[string]string{"ed": "EdDSA", "ec": "ES256"}[kid]
	h, _ := json.Marshal(map[string]string{"alg": alg, "kid": kid, "typ": "JWT"})
	c, _ := json.Marshal(claims)
	in := b64.EncodeToString(h) + "." + b64.EncodeToString(c)
	var sig []byte
	if kid == "ed" {
		sig = ed25519.Sign(p.ed, []byte(in))
	} else {
		sum := sha256.Sum256([]byte(in))
		r, s, err := ecdsa.Sign(rand.Reader, p.ec, sum[:])
		if err != nil {
			t.Fatal(err)
		}
		sig = append(r.FillBytes(make([]byte, 32)), s.FillBytes(make([]byte, 32))...)
	}
	return in + "." + b64.EncodeToString(sig)
}

// TestSSOOperators: an identity provider's token opens the admin API with
// the role its claim maps to; a wrong audience, an expired token, a token
// signed by another key and one without a mapped role are refused; every
// call is audited under the caller's subject.
func TestSSOOperators(t *testing.T) {
	p := newIDP(t)
	rcv := newReceiver(t)
	g := startGateway(t, gatewayOpts{endpoint: rcv.url(), adminExtra: fmt.Sprintf(`  sso:
    issuer: %s
    audience: sealpost-admin
    jwks_url: %s/jwks.json
    role_claim: groups
    roles: {sealpost-admins: admin, sealpost-viewers: viewer}
`, p.issue, p.srv.URL)})
	now := time.Now()
	claims := func(sub string, groups any, mod func(map[string]any)) map[string]any {
		c := map[string]any{"iss": p.issue, "aud": []string{"other", "sealpost-admin"}, "sub": sub, "groups": groups,
			"iat": now.Unix(), "exp": now.Add(10 * time.Minute).Unix()}
		if mod != nil {
			mod(c)
		}
		return c
	}
	adminTok := p.token(t, "ed", claims("alice", []string{"staff", "sealpost-admins"}, nil))
	who := g.must(200, "admin", "GET", "/admin/whoami", adminTok, nil)
	if who["actor"] != "sso:alice" || who["role"] != "admin" {
		t.Fatalf("whoami %v", who)
	}
	g.must(201, "admin", "POST", "/admin/tenants", adminTok, map[string]any{"name": "initech"})
	viewerTok := p.token(t, "ec", claims("bob", "sealpost-viewers", nil))
	g.must(200, "admin", "GET", "/admin/tenants", viewerTok, nil)
	g.must(403, "admin", "POST", "/admin/tenants", viewerTok, map[string]any{"name": "nope"})

	other := &idp{issue: p.issue}
	_, other.ed, _ = ed25519.GenerateKey(rand.Reader)
	for name, tok := range map[string]string{
		"wrong audience": p.token(t, "ed", claims("alice", "sealpost-admins", func(c map[string]any) { c["aud"] = "someone-else" })),
		"wrong issuer":   p.token(t, "ed", claims("alice", "sealpost-admins", func(c map[string]any) { c["iss"] = "https://evil.test/" })),
		"expired":        p.token(t, "ed", claims("alice", "sealpost-admins", func(c map[string]any) { c["exp"] = now.Add(-time.Hour).Unix() })),
		"no role":        p.token(t, "ed", claims("carol", []string{"staff"}, nil)),
		"another key":    other.token(t, "ed", claims("mallory", "sealpost-admins", nil)),
	} {
		if code, body := g.call("admin", "GET", "/admin/whoami", tok, nil); code != 401 {
			t.Errorf("%s: %d %s, want 401", name, code, body)
		}
	}
	// The calls are audited under the subject.
	var export []byte
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		_, export = g.call("admin", "GET", "/admin/audit/export", g.admin, nil)
		if bytes.Contains(export, []byte(`"actor":"sso:alice"`)) && bytes.Contains(export, []byte(`"tenant.create"`)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no audit entry under sso:alice")
		}
	}
}

// quietLog drops an embedded server's output.
type quietLog struct{}

func (quietLog) Noticef(string, ...any) {}
func (quietLog) Warnf(string, ...any)   {}
func (quietLog) Fatalf(string, ...any)  {}
func (quietLog) Errorf(string, ...any)  {}
func (quietLog) Debugf(string, ...any)  {}
func (quietLog) Tracef(string, ...any)  {}
