package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// problemEndpointDisabled is the problem type of a 409 for a disabled
// endpoint (docs/api.md).
const problemEndpointDisabled = "https://sealpost.dev/problems/endpoint-disabled"

// awaitDeadLettered waits until the attempts of receipt id show it
// dead-lettered.
func (g *testGateway) awaitDeadLettered(id string) {
	g.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, body := g.getAuth("/v1/receipts/" + id + "/attempts")
		if strings.Contains(string(body), "dead_lettered") {
			return
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("not dead-lettered: %s", body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestDisabledEndpointConflict: once an endpoint answered 410 Gone and is
// disabled, a redelivery through the tenant API, a redelivery through the
// admin API and a dead-letter replay all answer 409 with the same problem
// type, and none of them calls the endpoint.
func TestDisabledEndpointConflict(t *testing.T) {
	rcv := newReceiver(t)
	rcv.failStatus = http.StatusGone
	rcv.failFirst.Store(1)
	g := startGateway(t, gatewayOpts{endpoint: rcv.url()})

	code, doc, _ := g.ingest("invoices", `{"gone":true}`, nil)
	if code != http.StatusAccepted {
		t.Fatalf("ingest: %d %v", code, doc)
	}
	id := doc["id"].(string)
	g.awaitDeadLettered(id)

	for _, c := range []struct {
		name, url, token string
		client           *http.Client
	}{
		{"tenant redeliver", "https://" + g.https + "/v1/receipts/" + id + "/redeliver", g.token, g.client},
		{"admin redeliver", g.adminURL + "/admin/receipts/acme/" + id + "/redeliver", g.admin, http.DefaultClient},
		{"admin replay", g.adminURL + "/admin/dlq/replay?tenant=acme", g.admin, http.DefaultClient},
	} {
		req, _ := http.NewRequest(http.MethodPost, c.url, nil)
		req.Header.Set("Authorization", "Bearer "+c.token)
		resp, err := c.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var p struct{ Type string }
		_ = json.Unmarshal(body, &p)
		if resp.StatusCode != http.StatusConflict || p.Type != problemEndpointDisabled ||
			resp.Header.Get("Content-Type") != "application/problem+json" {
			t.Errorf("%s: %d %s %s, want 409 %s", c.name, resp.StatusCode, resp.Header.Get("Content-Type"), body, problemEndpointDisabled)
		}
	}
	if n := rcv.calls.Load(); n != 1 {
		t.Errorf("the disabled endpoint was called %d times, want once (the 410)", n)
	}
}
