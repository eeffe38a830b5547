package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestLossyNumberRefused: a number that a double cannot hold is refused at
// ingest with 400 lossy-number and never delivered; the same number sent as
// a string, and numbers JCS only respells, arrive with their values.
func TestLossyNumberRefused(t *testing.T) {
	rcv := newReceiver(t)
	g := startGateway(t, gatewayOpts{endpoint: rcv.url()})

	code, doc, hdr := g.ingest("invoices", `{"order":12345678901234567890}`, nil)
	if code != http.StatusBadRequest || doc["type"] != "https://sealpost.dev/problems/lossy-number" ||
		hdr.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("lossy number: %d %v", code, doc)
	}
	if detail, _ := doc["detail"].(string); !strings.Contains(detail, "12345678901234567890 would be signed as 12345678901234567000") {
		t.Fatalf("detail %q does not name the number", detail)
	}

	code, doc, _ = g.ingest("invoices", `{"order":"12345678901234567890","max":9007199254740992,"price":4.50,"n":1e3}`, nil)
	if code != http.StatusAccepted {
		t.Fatalf("ingest: %d %v", code, doc)
	}
	got := rcv.waitFor(t, 1, 30*time.Second)
	if len(got) != 1 || got[0].id != doc["id"] {
		t.Fatalf("deliveries %v, want only %v", got, doc["id"])
	}
	checkDelivery(t, got[0], g.jwks())
	var env struct{ Payload json.RawMessage }
	if err := json.Unmarshal(got[0].body, &env); err != nil {
		t.Fatal(err)
	}
	if want := `{"max":9007199254740992,"n":1000,"order":"12345678901234567890","price":4.5}`; string(env.Payload) != want {
		t.Fatalf("payload %s, want %s", env.Payload, want)
	}
}
