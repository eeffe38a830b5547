package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"

	"github.com/sealpost/sealpost/ingress/httpapi"
)

// TestOpenAPIConformance holds the OpenAPI document and the API together:
// the document the gateway serves is valid OpenAPI 3.1, every route the
// router serves is documented and every documented operation is served,
// and the requests and answers of a walk through the API (successes and
// errors) validate against it.
func TestOpenAPIConformance(t *testing.T) {
	rcv := newReceiver(t)
	g := startGateway(t, gatewayOpts{endpoint: rcv.url()})
	code, doc := g.call("https", "GET", "/v1/openapi.json", "", nil)
	if code != 200 {
		t.Fatalf("GET /v1/openapi.json: %d", code)
	}
	d, err := libopenapi.NewDocument(doc)
	if err != nil {
		t.Fatal(err)
	}
	if v := d.GetVersion(); !strings.HasPrefix(v, "3.1") {
		t.Fatalf("openapi %s, want 3.1", v)
	}
	v, errs := validator.NewValidator(d)
	if len(errs) > 0 {
		t.Fatalf("validator: %v", errs)
	}
	if ok, verrs := v.ValidateDocument(); !ok {
		for _, e := range verrs {
			t.Errorf("document: %s: %s", e.Message, e.Reason)
		}
		t.FailNow()
	}

	// Served routes and documented operations are the same set.
	var paths struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(doc, &paths); err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for p, ops := range paths.Paths {
		for m := range ops {
			documented[strings.ToUpper(m)+" "+p] = true
		}
	}
	served := map[string]bool{}
	for _, r := range httpapi.Routes() {
		served[r.Method+" "+r.Path] = true
		if !documented[r.Method+" "+r.Path] {
			t.Errorf("served but not documented: %s %s (%s)", r.Method, r.Path, r.Server)
		}
	}
	for op := range documented {
		if !served[op] {
			t.Errorf("documented but not served: %s", op)
		}
	}

	// A walk through the API: each answer validates.
	check := func(server, method, path, token string, body any, want int) []byte {
		t.Helper()
		var raw []byte
		if body != nil {
			raw, _ = json.Marshal(body)
		}
		base := g.adminURL
		client := http.DefaultClient
		if server == "https" {
			base, client = "https://"+g.https, g.client
		}
		req, _ := http.NewRequest(method, base+path, bytes.NewReader(raw))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s %s: %d %s, want %d", method, path, resp.StatusCode, got, want)
			return got
		}
		vreq, _ := http.NewRequest(method, base+path, bytes.NewReader(raw))
		vreq.Header = req.Header.Clone()
		resp.Body = io.NopCloser(bytes.NewReader(got))
		validate := v.ValidateHttpRequestResponse
		if want >= 400 {
			// The request was wrong on purpose: only the answer is held
			// to the document.
			validate = v.ValidateHttpResponse
		}
		if ok, verrs := validate(vreq, resp); !ok {
			for _, e := range verrs {
				t.Errorf("%s %s (%d): %s: %s", method, path, resp.StatusCode, e.Message, e.Reason)
			}
		}
		return got
	}
	field := func(b []byte, path ...string) string {
		var m any
		_ = json.Unmarshal(b, &m)
		for _, p := range path {
			mm, _ := m.(map[string]any)
			m = mm[p]
		}
		s, _ := m.(string)
		return s
	}
	adm := g.admin
	check("admin", "GET", "/healthz", "", nil, 200)
	check("admin", "GET", "/readyz", "", nil, 200)
	check("admin", "GET", "/admin/whoami", adm, nil, 200)
	check("admin", "GET", "/admin/whoami", "", nil, 401)
	check("admin", "POST", "/admin/tenants", adm, map[string]any{"name": "globex", "metadata": map[string]string{"plan": "gold"}}, 201)
	check("admin", "POST", "/admin/tenants", adm, map[string]any{"name": "globex"}, 409)
	check("admin", "POST", "/admin/tenants", adm, map[string]any{"name": "Not A Name"}, 400)
	check("admin", "GET", "/admin/tenants", adm, nil, 200)
	check("admin", "GET", "/admin/tenants/globex", adm, nil, 200)
	check("admin", "PATCH", "/admin/tenants/globex", adm, map[string]any{"retention": "168h"}, 200)
	check("admin", "PATCH", "/admin/tenants/acme", adm, map[string]any{"retention": "168h"}, 409)
	check("admin", "GET", "/admin/tenants/nobody", adm, nil, 404)
	check("admin", "POST", "/admin/tenants/globex/routes", adm, map[string]any{"name": "orders"}, 201)
	check("admin", "GET", "/admin/tenants/globex/routes", adm, nil, 200)
	check("admin", "GET", "/admin/tenants/globex/routes/orders", adm, nil, 200)
	check("admin", "PATCH", "/admin/tenants/globex/routes/orders", adm, map[string]any{"description": "orders"}, 200)
	ep := check("admin", "POST", "/admin/tenants/globex/routes/orders/endpoints", adm,
		map[string]any{"id": "main", "url": rcv.url(), "allow_http": true, "event_types": []string{"order.*"}, "rate_limit": 100}, 201)
	if field(ep, "secret") == "" {
		t.Error("a new endpoint's answer has no secret")
	}
	check("admin", "GET", "/admin/tenants/globex/routes/orders/endpoints", adm, nil, 200)
	check("admin", "GET", "/admin/tenants/globex/routes/orders/endpoints/main", adm, nil, 200)
	check("admin", "PATCH", "/admin/tenants/globex/routes/orders/endpoints/main", adm, map[string]any{"event_types": []string{}}, 200)
	check("admin", "POST", "/admin/tenants/globex/routes/orders/endpoints/main/rotate-secret?overlap=1h", adm, nil, 200)
	check("admin", "POST", "/admin/tenants/globex/routes/orders/endpoints/main/disable", adm, nil, 200)
	check("admin", "POST", "/admin/tenants/globex/routes/orders/endpoints/main/enable", adm, nil, 200)
	check("admin", "POST", "/admin/tenants/globex/routes/orders/endpoints", adm, map[string]any{"url": "ftp://x"}, 400)
	key := check("admin", "POST", "/admin/tenants/globex/api-keys", adm,
		map[string]any{"id": "globex-all", "scopes": []string{"ingest:*", "receipts:read", "endpoints:write", "audit:read"}, "expires_at": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)}, 201)
	token := field(key, "token")
	check("admin", "POST", "/admin/tenants/globex/api-keys", adm, map[string]any{"scopes": []string{"write:everything"}}, 400)
	check("admin", "GET", "/admin/tenants/globex/api-keys", adm, nil, 200)
	check("admin", "GET", "/admin/tenants/globex/api-keys/globex-all", adm, nil, 200)
	check("admin", "PUT", "/admin/tenants/globex/operational-webhook", adm, map[string]any{"url": rcv.url(), "allow_http": true}, 200)
	check("admin", "GET", "/admin/tenants/globex/operational-webhook", adm, nil, 200)
	check("admin", "POST", "/admin/operators", adm, map[string]any{"id": "vera", "role": "viewer"}, 201)
	check("admin", "GET", "/admin/operators", adm, nil, 200)
	check("admin", "GET", "/admin/operators/vera", adm, nil, 200)
	check("admin", "POST", "/admin/operators/vera/rotate", adm, nil, 200)
	check("admin", "GET", "/admin/keys", adm, nil, 200)
	check("admin", "GET", "/admin/audit/verify", adm, nil, 200)
	check("admin", "GET", "/admin/backups", adm, nil, 404)

	check("https", "GET", "/.well-known/jwks.json", "", nil, 200)
	check("https", "GET", "/v1/keys", "", nil, 200)
	check("https", "GET", "/v1/keys/nope", "", nil, 404)
	check("https", "GET", "/v1/routes", token, nil, 200)
	check("https", "GET", "/v1/routes/orders/endpoints", token, nil, 200)
	check("https", "GET", "/v1/routes/orders/endpoints/main", token, nil, 200)
	check("https", "PUT", "/v1/operational-webhook", token, map[string]any{"url": "https://ops.example.com/hook"}, 200)
	check("https", "GET", "/v1/operational-webhook", token, nil, 200)
	id := field(check("https", "POST", "/v1/ingest/orders", token, map[string]any{"order": 1}, 202), "id")
	rcv.waitFor(t, 1, 30*time.Second)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, b := g.call("https", "GET", "/v1/receipts?status=delivered", token, nil); bytes.Contains(b, []byte(id)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("receipt not listed as delivered")
		}
	}
	check("https", "GET", "/v1/receipts?limit=10", token, nil, 200)
	check("https", "GET", "/v1/receipts?status=sideways", token, nil, 400)
	check("https", "GET", "/v1/receipts/"+id, token, nil, 200)
	check("https", "GET", "/v1/receipts/rcpt_01JD7AAAAAAAAAAAAAAAAAAAAA", token, nil, 404)
	check("https", "GET", "/v1/receipts/"+id+"/attempts", token, nil, 200)
	check("https", "POST", "/v1/receipts/"+id+"/redeliver", token, nil, 200)
	check("https", "GET", "/v1/dead-letters", token, nil, 200)
	check("https", "POST", "/v1/dead-letters/replay", token, nil, 200)
	now := time.Now().UTC()
	check("https", "GET", fmt.Sprintf("/v1/audit?since=%s&until=%s", now.Add(-time.Hour).Format(time.RFC3339), now.Add(time.Minute).Format(time.RFC3339)), token, nil, 200)
	check("https", "GET", "/v1/receipts", "", nil, 401)
	check("https", "POST", "/v1/routes/orders/endpoints", token, map[string]any{"url": "http://example.com/", "allow_http": true}, 403)
	check("https", "DELETE", "/v1/routes/orders/endpoints/main", token, nil, 204)
	check("https", "DELETE", "/v1/operational-webhook", token, nil, 204)

	check("admin", "DELETE", "/admin/tenants/globex/api-keys/globex-all", adm, nil, 200)
	check("admin", "DELETE", "/admin/operators/vera", adm, nil, 200)
	check("admin", "DELETE", "/admin/tenants/globex/routes/orders", adm, nil, 204)
	check("admin", "DELETE", "/admin/tenants/globex?confirm=globex", adm, nil, 200)

	// Unknown paths and methods are problem documents too.
	for _, c := range []struct{ method, path string }{{"GET", "/v1/nothing"}, {"DELETE", "/v1/receipts"}} {
		code, b := g.call("https", c.method, c.path, "", nil)
		if !slices.Contains([]int{404, 405}, code) || !bytes.Contains(b, []byte("https://sealpost.dev/problems/")) {
			t.Errorf("%s %s: %d %s", c.method, c.path, code, b)
		}
	}
}
