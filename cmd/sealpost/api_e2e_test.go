package main

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// call sends a request to the gateway's "https" or "admin" server with a
// bearer token (none when empty) and a JSON body (none when nil).
func (g *testGateway) call(server, method, path, token string, body any) (int, []byte) {
	g.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			g.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	base := g.adminURL
	if server == "https" {
		base = "https://" + g.https
	}
	req, err := http.NewRequest(method, base+path, rd)
	if err != nil {
		g.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	client := g.client
	if server != "https" {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		g.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// must is call that fails the test unless the answer has status want, and
// decodes a JSON answer into a map.
func (g *testGateway) must(want int, server, method, path, token string, body any) map[string]any {
	g.t.Helper()
	code, b := g.call(server, method, path, token, body)
	if code != want {
		g.t.Fatalf("%s %s: %d %s, want %d", method, path, code, b, want)
	}
	var out map[string]any
	_ = json.Unmarshal(b, &out)
	return out
}

// ingestAs posts a JSON body to a route with a key and an event type.
func (g *testGateway) ingestAs(token, route, body, eventType string) (int, string) {
	g.t.Helper()
	req, _ := http.NewRequest("POST", "https://"+g.https+"/v1/ingest/"+route, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	if eventType != "" {
		req.Header.Set("Event-Type", eventType)
	}
	resp, err := g.client.Do(req)
	if err != nil {
		g.t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc struct{ ID string }
	_ = json.NewDecoder(resp.Body).Decode(&doc)
	return resp.StatusCode, doc.ID
}

// verifyV1 checks a delivery's v1 signature with a whsec_ secret.
func verifyV1(d delivery, secret string) error {
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		return err
	}
	h := http.Header{}
	h.Set("webhook-id", d.id)
	h.Set("webhook-timestamp", d.ts)
	h.Set("webhook-signature", d.sig)
	return wh.Verify(d.body, h)
}

// apiTenant creates a tenant, an API key with scopes and a route through
// the admin API, and returns the key's token.
func apiTenant(t *testing.T, g *testGateway, tenant, route string, scopes ...string) string {
	t.Helper()
	g.must(201, "admin", "POST", "/admin/tenants", g.admin, map[string]any{"name": tenant, "description": "made in a test"})
	g.must(201, "admin", "POST", "/admin/tenants/"+tenant+"/routes", g.admin, map[string]any{"name": route})
	k := g.must(201, "admin", "POST", "/admin/tenants/"+tenant+"/api-keys", g.admin, map[string]any{"scopes": scopes})
	return k["token"].(string)
}

// addEndpoint adds an endpoint through the admin API and returns its id
// and secret.
func addEndpoint(t *testing.T, g *testGateway, tenant, route string, ep map[string]any) (string, string) {
	t.Helper()
	ep["allow_http"] = true
	e := g.must(201, "admin", "POST", "/admin/tenants/"+tenant+"/routes/"+route+"/endpoints", g.admin, ep)
	return e["id"].(string), e["secret"].(string)
}

// TestFanOutThroughTheAPI: a tenant, a key, a route and two endpoints made
// through the API; a submission reaches both, each verifying its own v1
// secret with the same webhook-id; an event-type filter holds one back.
func TestFanOutThroughTheAPI(t *testing.T) {
	rcvYAML := newReceiver(t)
	g := startGateway(t, gatewayOpts{endpoint: rcvYAML.url()})
	a, b := newReceiver(t), newReceiver(t)
	token := apiTenant(t, g, "globex", "orders", "ingest:*", "receipts:read")
	idA, secretA := addEndpoint(t, g, "globex", "orders", map[string]any{"url": a.url(), "description": "all events"})
	idB, secretB := addEndpoint(t, g, "globex", "orders", map[string]any{"url": b.url(), "event_types": []string{"order.*"}})

	code, first := g.ingestAs(token, "orders", `{"order":1}`, "order.created")
	if code != 202 {
		t.Fatalf("ingest: %d", code)
	}
	da, db := a.waitFor(t, 1, 30*time.Second)[0], b.waitFor(t, 1, 30*time.Second)[0]
	keys := g.jwks()
	for _, d := range []delivery{da, db} {
		checkDelivery(t, d, keys)
		if d.id != first {
			t.Errorf("webhook-id %q, want the receipt id %q on every endpoint", d.id, first)
		}
	}
	if verifyV1(da, secretA) != nil || verifyV1(db, secretB) != nil {
		t.Fatal("an endpoint's v1 signature does not verify with its own secret")
	}
	if verifyV1(da, secretB) == nil || verifyV1(db, secretA) == nil {
		t.Fatal("an endpoint's v1 signature verifies with the other endpoint's secret")
	}

	// Another event type: the filtered endpoint does not get it.
	code, second := g.ingestAs(token, "orders", `{"invoice":2}`, "invoice.paid")
	if code != 202 {
		t.Fatalf("ingest: %d", code)
	}
	a.waitFor(t, 2, 30*time.Second)
	var summary map[string]any
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		page := g.must(200, "https", "GET", "/v1/receipts?route=orders", token, nil)
		for _, it := range page["items"].([]any) {
			if m := it.(map[string]any); m["id"] == second && m["status"] == "delivered" {
				summary = m
			}
		}
		if summary != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("receipt %s not listed as delivered: %v", second, page)
		}
	}
	eps := summary["endpoints"].([]any)
	if len(eps) != 1 || eps[0].(map[string]any)["endpoint"] != idA {
		t.Errorf("endpoints of the invoice.paid receipt %v, want only %s", eps, idA)
	}
	if b.calls.Load() != 1 {
		t.Errorf("the order.* endpoint %s got %d requests, want 1", idB, b.calls.Load())
	}
	// The attempts say which endpoint each went to.
	at := g.must(200, "https", "GET", "/v1/receipts/"+first+"/attempts?endpoint="+idB, token, nil)
	if n := len(at["attempts"].([]any)); n != 1 {
		t.Errorf("attempts of %s to %s: %d, want 1", first, idB, n)
	}
	// The configured route kept its own endpoint.
	if rcvYAML.calls.Load() != 0 {
		t.Errorf("the configured route's receiver got %d requests", rcvYAML.calls.Load())
	}
}

// TestScopesEnforced: every scope is checked on its routes (403), and a
// key scoped to one route does not reach another route's receipts.
func TestScopesEnforced(t *testing.T) {
	rcv := newReceiver(t)
	g := startGateway(t, gatewayOpts{endpoint: rcv.url()})
	ingestOnly := apiTenant(t, g, "globex", "orders", "ingest:orders")
	g.must(201, "admin", "POST", "/admin/tenants/globex/routes", g.admin, map[string]any{"name": "refunds"})
	addEndpoint(t, g, "globex", "orders", map[string]any{"url": rcv.url()})
	addEndpoint(t, g, "globex", "refunds", map[string]any{"url": rcv.url()})
	mk := func(scopes ...string) string {
		k := g.must(201, "admin", "POST", "/admin/tenants/globex/api-keys", g.admin, map[string]any{"scopes": scopes})
		return k["token"].(string)
	}
	ordersReader := mk("ingest:orders", "receipts:read", "endpoints:write")
	refundsWriter := mk("ingest:refunds")
	reader := mk("receipts:read")

	_, orderID := g.ingestAs(ingestOnly, "orders", `{"a":1}`, "")
	_, refundID := g.ingestAs(refundsWriter, "refunds", `{"b":2}`, "")
	rcv.waitFor(t, 2, 30*time.Second)

	for _, tc := range []struct {
		name, token, method, path string
		want                      int
	}{
		{"ingest to another route", ingestOnly, "POST", "/v1/ingest/refunds", 403},
		{"read without receipts:read", ingestOnly, "GET", "/v1/receipts", 403},
		{"one receipt without receipts:read", ingestOnly, "GET", "/v1/receipts/" + orderID, 403},
		{"attempts without receipts:read", ingestOnly, "GET", "/v1/receipts/" + orderID + "/attempts", 403},
		{"dead letters without receipts:read", ingestOnly, "GET", "/v1/dead-letters", 403},
		{"redeliver without endpoints:write", reader, "POST", "/v1/receipts/" + orderID + "/redeliver", 403},
		{"replay without endpoints:write", reader, "POST", "/v1/dead-letters/replay", 403},
		{"endpoints without endpoints:write", reader, "POST", "/v1/routes/orders/endpoints", 403},
		{"operational webhook without endpoints:write", reader, "GET", "/v1/operational-webhook", 403},
		{"audit without audit:read", reader, "GET", "/v1/audit?since=2026-01-01T00:00:00Z&until=2026-01-02T00:00:00Z", 403},
		{"routes without any", ingestOnly, "GET", "/v1/routes", 403},
		{"list another route", ordersReader, "GET", "/v1/receipts?route=refunds", 403},
		{"another route's receipt", ordersReader, "GET", "/v1/receipts/" + refundID, 404},
		{"redeliver another route's receipt", ordersReader, "POST", "/v1/receipts/" + refundID + "/redeliver", 404},
		{"another route's endpoints", ordersReader, "GET", "/v1/routes/refunds/endpoints", 404},
		{"own route's receipt", ordersReader, "GET", "/v1/receipts/" + orderID, 200},
		{"unscoped reader", reader, "GET", "/v1/receipts/" + refundID, 200},
	} {
		if code, body := g.call("https", tc.method, tc.path, tc.token, nil); code != tc.want {
			t.Errorf("%s: %s %s = %d %s, want %d", tc.name, tc.method, tc.path, code, body, tc.want)
		} else if code == 403 && !bytes.Contains(body, []byte("problems/forbidden")) {
			t.Errorf("%s: 403 without the forbidden problem type: %s", tc.name, body)
		}
	}
	// A listing by a key scoped to one route shows that route only.
	page := g.must(200, "https", "GET", "/v1/receipts", ordersReader, nil)
	for _, it := range page["items"].([]any) {
		if r := it.(map[string]any)["route"]; r != "orders" {
			t.Errorf("a key scoped to orders lists a receipt of %v", r)
		}
	}

	// Operator roles.
	viewer := g.must(201, "admin", "POST", "/admin/operators", g.admin, map[string]any{"id": "vera", "role": "viewer"})["token"].(string)
	ops := g.must(201, "admin", "POST", "/admin/operators", g.admin, map[string]any{"id": "otto", "role": "operator"})["token"].(string)
	g.must(200, "admin", "GET", "/admin/tenants", viewer, nil)
	g.must(403, "admin", "POST", "/admin/tenants", viewer, map[string]any{"name": "nope"})
	g.must(403, "admin", "POST", "/admin/keys/rotate", viewer, nil)
	g.must(403, "admin", "POST", "/admin/operators", ops, map[string]any{"id": "x", "role": "admin"})
	who := g.must(200, "admin", "GET", "/admin/whoami", ops, nil)
	if who["actor"] != "operator:otto" || who["role"] != "operator" {
		t.Errorf("whoami %v", who)
	}
	g.must(200, "admin", "DELETE", "/admin/operators/otto", g.admin, nil)
	g.must(401, "admin", "GET", "/admin/whoami", ops, nil)
	// A revoked API key is refused.
	g.must(200, "admin", "DELETE", "/admin/tenants/globex/api-keys/"+strings.Split(strings.TrimPrefix(reader, "sp_"), "_")[0], g.admin, nil)
	g.must(401, "https", "GET", "/v1/receipts", reader, nil)
}

// TestDeclaredObjectsReadOnly: what the configuration file declares is
// listed, marked declared, and refuses changes through the API.
func TestDeclaredObjectsReadOnly(t *testing.T) {
	rcv := newReceiver(t)
	g := startGateway(t, gatewayOpts{endpoint: rcv.url()})
	ten := g.must(200, "admin", "GET", "/admin/tenants/acme", g.admin, nil)
	if ten["declared"] != true {
		t.Fatalf("tenant acme %v, want declared", ten)
	}
	for _, tc := range []struct {
		method, path string
		body         any
	}{
		{"PATCH", "/admin/tenants/acme", map[string]any{"description": "x"}},
		{"POST", "/admin/tenants", map[string]any{"name": "acme"}},
		{"PATCH", "/admin/tenants/acme/routes/invoices", map[string]any{"description": "x"}},
		{"DELETE", "/admin/tenants/acme/routes/invoices", nil},
		{"POST", "/admin/tenants/acme/routes", map[string]any{"name": "invoices"}},
		{"PATCH", "/admin/tenants/acme/routes/invoices/endpoints/default", map[string]any{"url": "https://example.com/"}},
		{"DELETE", "/admin/tenants/acme/routes/invoices/endpoints/default", nil},
		{"POST", "/admin/tenants/acme/api-keys/acme-test/rotate", nil},
		{"DELETE", "/admin/tenants/acme/api-keys/acme-test", nil},
	} {
		code, body := g.call("admin", tc.method, tc.path, g.admin, tc.body)
		if code != 409 || !bytes.Contains(body, []byte("problems/read-only")) {
			t.Errorf("%s %s = %d %s, want 409 read-only", tc.method, tc.path, code, body)
		}
	}
	// A declared route still takes endpoints from the API.
	extra := newReceiver(t)
	addEndpoint(t, g, "acme", "invoices", map[string]any{"url": extra.url()})
	if code, _, _ := g.ingest("invoices", `{"x":1}`, nil); code != 202 {
		t.Fatalf("ingest %d", code)
	}
	rcv.waitFor(t, 1, 30*time.Second)
	extra.waitFor(t, 1, 30*time.Second)
}

// TestOperationalWebhookOn410: an endpoint answering 410 is disabled and
// the tenant's operational webhook gets endpoint.disabled, signed like
// every webhook; enabling it sends endpoint.enabled.
func TestOperationalWebhookOn410(t *testing.T) {
	rcv := newReceiver(t)
	rcv.failStatus = http.StatusGone
	rcv.failFirst.Store(1)
	g := startGateway(t, gatewayOpts{endpoint: rcv.url()})
	ops := newReceiver(t)
	set := g.must(200, "admin", "PUT", "/admin/tenants/acme/operational-webhook", g.admin,
		map[string]any{"url": ops.url(), "allow_http": true, "events": []string{"endpoint.disabled", "endpoint.enabled"}})
	secret := set["secret"].(string)
	if code, _, _ := g.ingest("invoices", `{"x":1}`, nil); code != 202 {
		t.Fatalf("ingest %d", code)
	}
	got := ops.waitFor(t, 1, 30*time.Second)[0]
	var ev struct {
		Type   string
		Tenant string
		Data   map[string]any
	}
	if err := json.Unmarshal(got.body, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Type != "endpoint.disabled" || ev.Tenant != "acme" || ev.Data["route"] != "invoices" || ev.Data["endpoint"] != "default" || ev.Data["reason"] != "gone" {
		t.Fatalf("operational event %s", got.body)
	}
	if err := verifyV1(got, secret); err != nil {
		t.Fatalf("operational event v1 signature: %v", err)
	}
	keys := g.jwks()
	ok := false
	for _, part := range strings.Fields(got.sig) {
		if v, sig, _ := strings.Cut(part, ","); v == "v1a" {
			for _, k := range keys {
				if verifyV1a(k, got.id, got.ts, got.body, sig) {
					ok = true
				}
			}
		}
	}
	if !ok {
		t.Fatal("operational event has no v1a signature of a published key")
	}
	st := g.must(200, "admin", "GET", "/admin/tenants/acme/routes/invoices/endpoints/default", g.admin, nil)
	if st["status"] != "disabled" || st["disabled_reason"] != "gone" {
		t.Fatalf("endpoint after 410: %v", st)
	}
	g.must(200, "admin", "POST", "/admin/tenants/acme/routes/invoices/endpoints/default/enable", g.admin, nil)
	got = ops.waitFor(t, 2, 30*time.Second)[1]
	if !bytes.Contains(got.body, []byte(`"type":"endpoint.enabled"`)) {
		t.Fatalf("second operational event %s", got.body)
	}
}

// TestMailToAnAPIRoute: a route made through the API with a recipient
// takes mail at once (go-smtp's client over STARTTLS) and delivers it to
// its endpoint; a recipient another route serves is refused with 409, and
// a removed recipient gets 550 again.
func TestMailToAnAPIRoute(t *testing.T) {
	rcvYAML := newReceiver(t)
	g := startGateway(t, gatewayOpts{endpoint: rcvYAML.url()})
	rcv := newReceiver(t)
	g.must(201, "admin", "POST", "/admin/tenants", g.admin, map[string]any{"name": "globex"})
	rt := g.must(201, "admin", "POST", "/admin/tenants/globex/routes", g.admin,
		map[string]any{"name": "orders", "recipients": []string{"Orders@Globex.test"}})
	if fmt.Sprint(rt["recipients"]) != "[orders@globex.test]" {
		t.Errorf("route %v: recipients not stored in lower case", rt)
	}
	addEndpoint(t, g, "globex", "orders", map[string]any{"url": rcv.url()})
	conflict := g.must(409, "admin", "POST", "/admin/tenants/globex/routes", g.admin,
		map[string]any{"name": "stolen", "recipients": []string{"invoices@acme.test"}})
	if conflict["type"] != "https://sealpost.dev/problems/recipient-taken" {
		t.Errorf("a declared route's recipient: %v", conflict)
	}
	g.must(400, "admin", "POST", "/admin/tenants/globex/routes", g.admin,
		map[string]any{"name": "bad", "recipients": []string{"not an address"}})

	send := func(to string) error {
		c, err := smtp.DialStartTLS(g.smtp, g.smtpTLS(t))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		msg := "From: Buyer <buyer@vendor.test>\r\nTo: " + to + "\r\nSubject: PO 9\r\nMessage-ID: <po9-" + to + "@vendor.test>\r\n\r\nOrder 9.\r\n"
		return c.SendMail("buyer@vendor.test", []string{to}, strings.NewReader(msg))
	}
	if err := send("orders@globex.test"); err != nil {
		t.Fatalf("mail to the API route: %v", err)
	}
	d := rcv.waitFor(t, 1, 60*time.Second)[0]
	receipt := checkDelivery(t, d, g.jwks())
	if receipt["tenant"] != "globex" || receipt["route"] != "orders" || receipt["channel"] != "smtp" {
		t.Errorf("receipt %v", receipt)
	}
	g.must(200, "admin", "PATCH", "/admin/tenants/globex/routes/orders", g.admin, map[string]any{"recipients": []string{}})
	var se *smtp.SMTPError
	if err := send("orders@globex.test"); !errors.As(err, &se) || se.Code != 550 {
		t.Errorf("mail to a removed recipient: %v, want 550", err)
	}
}

// TestServeWithoutRecipients: with no recipient in the file, serve still
// starts the SMTP ingress (as check-config says), which refuses every
// recipient until a route made through the API has one.
func TestServeWithoutRecipients(t *testing.T) {
	rcv := newReceiver(t)
	g := startGateway(t, gatewayOpts{endpoint: rcv.url(), noRecipients: true})
	c, err := smtp.DialStartTLS(g.smtp, g.smtpTLS(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Mail("buyer@vendor.test", nil); err != nil {
		t.Fatal(err)
	}
	var se *smtp.SMTPError
	if err := c.Rcpt("invoices@acme.test", nil); !errors.As(err, &se) || se.Code != 550 {
		t.Errorf("RCPT with no recipients configured: %v, want 550", err)
	}
	g.must(201, "admin", "POST", "/admin/tenants/acme/routes", g.admin, map[string]any{"name": "po", "recipients": []string{"po@acme.test"}})
	if err := c.Rcpt("po@acme.test", nil); err != nil {
		t.Errorf("RCPT to a route made through the API: %v", err)
	}
}

// TestOperationalEventsSurviveRestart: an operational event whose webhook
// is failing when the gateway stops is kept, sealed, and sent after the
// restart, with the webhook-id it had.
func TestOperationalEventsSurviveRestart(t *testing.T) {
	rcv := newReceiver(t)
	dir := t.TempDir()
	g := startGateway(t, gatewayOpts{endpoint: rcv.url(), dataDir: dir})
	ops := newReceiver(t)
	ops.failFirst.Store(1 << 40)
	g.must(200, "admin", "PUT", "/admin/tenants/acme/operational-webhook", g.admin,
		map[string]any{"url": ops.url(), "allow_http": true})
	g.must(200, "admin", "POST", "/admin/tenants/acme/routes/invoices/endpoints/default/disable", g.admin, nil)
	for deadline := time.Now().Add(30 * time.Second); ops.calls.Load() == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the operational webhook was not tried")
		}
	}
	if err := g.stop(); err != nil {
		t.Fatal(err)
	}
	// Stored, and sealed: its subject is on disk, its body is not.
	if !dirContains(t, dir, []byte("opevents.acme.evt_")) {
		t.Fatal("no operational event stored")
	}
	if dirContains(t, dir, []byte(`"type":"endpoint.disabled"`)) {
		t.Fatal("an operational event is stored in the clear")
	}
	tried := ops.calls.Load()
	ops.failFirst.Store(0)
	g2 := startGateway(t, gatewayOpts{endpoint: rcv.url(), dataDir: dir, token: g.token, admin: g.admin})
	got := ops.waitFor(t, 1, 60*time.Second)[0]
	if !bytes.Contains(got.body, []byte(`"type":"endpoint.disabled"`)) || !strings.HasPrefix(got.id, "evt_") {
		t.Fatalf("after the restart: %s %s", got.id, got.body)
	}
	ops.mu.Lock()
	failed := slices.Clone(ops.failedIDs)
	ops.mu.Unlock()
	if len(failed) == 0 || failed[0] != got.id {
		t.Errorf("delivered after the restart as %s; the failed tries before it were %v", got.id, failed)
	}
	if ops.calls.Load() <= tried {
		t.Fatal("no try after the restart")
	}
	for deadline := time.Now().Add(10 * time.Second); g2.metric(`sealpost_forwarder_operational_events_total{outcome="delivered"}`) != 1; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("delivered operational events: %v", g2.metric(`sealpost_forwarder_operational_events_total{outcome="delivered"}`))
		}
	}
	if n := len(ops.waitFor(t, 1, time.Second)); n != 1 {
		t.Errorf("the event was delivered %d times", n)
	}
}

// TestPaginationStableUnderInserts: paging through the receipts while
// more arrive lists every receipt stored before the first page exactly
// once, and never one twice.
func TestPaginationStableUnderInserts(t *testing.T) {
	rcv := newReceiver(t)
	g := startGateway(t, gatewayOpts{endpoint: rcv.url()})
	var before []string
	for i := range 30 {
		code, doc, _ := g.ingest("invoices", fmt.Sprintf(`{"n":%d}`, i), nil)
		if code != 202 {
			t.Fatalf("ingest %d", code)
		}
		before = append(before, doc["id"].(string))
	}
	rcv.waitFor(t, 30, 60*time.Second)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 40 {
			select {
			case <-stop:
				return
			default:
			}
			g.ingest("invoices", fmt.Sprintf(`{"later":%d}`, i), nil)
		}
	}()
	seen := map[string]int{}
	cursor := ""
	for page := 0; ; page++ {
		if page > 200 {
			t.Fatal("more than 200 pages")
		}
		doc := g.must(200, "https", "GET", "/v1/receipts?limit=7&cursor="+cursor, g.token, nil)
		for _, it := range doc["items"].([]any) {
			seen[it.(map[string]any)["id"].(string)]++
		}
		cursor = doc["next_cursor"].(string)
		if doc["has_more"] != true {
			break
		}
	}
	close(stop)
	wg.Wait()
	for _, id := range before {
		if seen[id] != 1 {
			t.Errorf("receipt %s listed %d times, want once", id, seen[id])
		}
	}
	for id, n := range seen {
		if n > 1 {
			t.Errorf("receipt %s listed %d times", id, n)
		}
	}
	if !slices.ContainsFunc(before, func(id string) bool { return seen[id] == 1 }) {
		t.Fatal("nothing listed")
	}
}

// verifyV1a checks one v1a signature over "{id}.{ts}.{body}" with
// crypto/ed25519 alone.
func verifyV1a(k ed25519.PublicKey, id, ts string, body []byte, sig string) bool {
	raw, err := base64.StdEncoding.DecodeString(sig)
	return err == nil && ed25519.Verify(k, []byte(id+"."+ts+"."+string(body)), raw)
}
