package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// cli runs a sealpost command against g's admin API and returns stdout.
func (g *testGateway) cli(args ...string) (string, error) {
	env := map[string]string{"SEALPOST_ADMIN_URL": g.adminURL, "SEALPOST_ADMIN_TOKEN": g.admin}
	var out bytes.Buffer
	err := run(context.Background(), args, func(k string) string { return env[k] }, &out, io.Discard)
	return out.String(), err
}

// TestAdminCommands drives the operator commands through the CLI and the
// admin API of a running gateway: keys, the dead-letter queue after a 410,
// endpoint re-enabling and secret rotation, and audit verification.
func TestAdminCommands(t *testing.T) {
	rcv := newReceiver(t)
	rcv.failStatus = http.StatusGone
	rcv.failFirst.Store(1)
	g := startGateway(t, gatewayOpts{endpoint: rcv.url()})

	out, err := g.cli("keys", "list")
	if err != nil || !strings.Contains(out, "active") {
		t.Fatalf("keys list: %v\n%s", err, out)
	}
	before := g.jwks()
	if out, err := g.cli("keys", "rotate"); err != nil || !strings.Contains(out, `"kid"`) {
		t.Fatalf("keys rotate: %v\n%s", err, out)
	}
	if after := g.jwks(); len(after) != len(before)+1 {
		t.Fatalf("JWKS has %d keys after a rotation, %d before", len(after), len(before))
	}
	if _, err := g.cli("keys", "revoke", "no-such-kid"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("revoking an unknown kid: %v", err)
	}

	// A 410 disables the endpoint and dead-letters the message.
	code, doc, _ := g.ingest("invoices", `{"gone":true}`, nil)
	if code != http.StatusAccepted {
		t.Fatalf("ingest: %d %v", code, doc)
	}
	id := doc["id"].(string)
	g.awaitDeadLettered(id)
	if out, err := g.cli("endpoint", "enable", "acme", "invoices"); err != nil {
		t.Fatalf("endpoint enable: %v\n%s", err, out)
	}
	out, err = g.cli("endpoint", "rotate-secret", "acme", "invoices", "--overlap", "1h")
	if err != nil || !strings.Contains(out, "whsec_") {
		t.Fatalf("rotate-secret: %v\n%s", err, out)
	}
	if out, err := g.cli("dlq", "replay", "--tenant", "acme"); err != nil || !strings.Contains(out, `"replayed": 1`) {
		t.Fatalf("dlq replay: %v\n%s", err, out)
	}
	got := rcv.waitFor(t, 1, 30*time.Second)
	if got[0].id != id || !strings.Contains(got[0].sig, "v1,") {
		t.Fatalf("replayed delivery %s with signatures %q", got[0].id, got[0].sig)
	}
	checkDelivery(t, got[0], g.jwks())

	out, err = g.cli("audit", "verify")
	if err != nil || !strings.Contains(out, "OK") {
		t.Fatalf("audit verify: %v\n%s", err, out)
	}
	out, err = g.cli("audit", "export", "--tenant", "acme")
	if err != nil {
		t.Fatal(err)
	}
	actions := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var l struct {
			Type   string
			Record struct{ Action string }
		}
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("export line %q: %v", line, err)
		}
		actions[l.Record.Action] = true
	}
	for _, want := range []string{"message.received", "message.queued", "message.signed", "message.failed", "message.dead_lettered", "message.delivered", "endpoint.enable"} {
		if !actions[want] {
			t.Errorf("audit export lacks %s (has %v)", want, actions)
		}
	}

	// The whole log: key changes (the first key at start-up and the
	// rotation above) and the ingest call under the API key that made it.
	out, err = g.cli("audit", "export")
	if err != nil {
		t.Fatal(err)
	}
	scheduledKeys, emergencyRotations, ingestCalls := 0, 0, 0
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var l struct {
			Record struct{ Actor, Action, Tenant, Target, Outcome string }
		}
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("export line %q: %v", line, err)
		}
		r := l.Record
		switch {
		case r.Action == "key.rotate" && r.Outcome == "success" && r.Actor == "system":
			scheduledKeys++
		case r.Action == "key.rotate" && r.Outcome == "success" && r.Actor == "admin":
			emergencyRotations++
		case r.Action == "api.call" && r.Target == "POST /v1/ingest/{route}":
			ingestCalls++
			if !strings.HasPrefix(r.Actor, "apikey:") || r.Tenant != "acme" {
				t.Errorf("ingest api.call recorded as actor %q tenant %q", r.Actor, r.Tenant)
			}
		}
	}
	// Start-up makes the first key, and the next period's too within 14 days
	// of a quarter's end.
	if scheduledKeys < 1 || scheduledKeys > 2 || emergencyRotations != 1 || ingestCalls != 1 {
		t.Errorf("whole export: %d key.rotate entries by the schedule (want 1 or 2), %d by the admin (want 1), %d ingest api.call entries (want 1)",
			scheduledKeys, emergencyRotations, ingestCalls)
	}

	// Without the token the admin API refuses.
	resp, err := http.Post(g.adminURL+"/admin/keys/rotate", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("admin call without token: %d", resp.StatusCode)
	}
}

// TestConfigChangesAudited: API keys live in the configuration file, so
// each start records what changed since the last one: config.reload, and
// apikey.create and apikey.revoke for added, removed or replaced keys. A
// start with the same file records nothing.
func TestConfigChangesAudited(t *testing.T) {
	dataDir := t.TempDir()
	endpoint := newReceiver(t).url()
	g := startGateway(t, gatewayOpts{dataDir: dataDir, endpoint: endpoint})
	must(t, g.stop())
	// The same key id with a new secret: the old key is revoked, a new one created.
	g = startGateway(t, gatewayOpts{dataDir: dataDir, endpoint: endpoint, admin: g.admin})
	must(t, g.stop())
	g = startGateway(t, gatewayOpts{dataDir: dataDir, endpoint: endpoint, admin: g.admin, token: g.token})
	out, err := g.cli("audit", "export")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var l struct {
			Record struct{ Action, Tenant, Target string }
		}
		must(t, json.Unmarshal([]byte(line), &l))
		switch l.Record.Action {
		case "config.reload", "apikey.create", "apikey.revoke":
			got = append(got, l.Record.Action+" "+l.Record.Tenant+"/"+l.Record.Target)
		}
	}
	want := []string{
		"config.reload /config", "apikey.create acme/acme-test",
		"config.reload /config", "apikey.revoke acme/acme-test", "apikey.create acme/acme-test",
	}
	if !slices.Equal(got, want) {
		t.Errorf("configuration entries\n got %q\nwant %q", got, want)
	}
}

// TestCatalogCommands drives the tenant, route, endpoint, apikey and
// operator commands through the admin API: what they create works (the
// key ingests, the endpoint receives, the operator's token reaches the
// admin API), and bad input is refused with usage or the API's error.
func TestCatalogCommands(t *testing.T) {
	rcv := newReceiver(t)
	g := startGateway(t, gatewayOpts{endpoint: rcv.url()})
	must := func(args ...string) string {
		t.Helper()
		out, err := g.cli(args...)
		if err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	must("tenant", "create", "globex", "--description", "Globex Corp")
	must("route", "create", "globex", "orders", "--retention", "168h", "--recipient", "orders@globex.test", "--recipient", "po@globex.test")
	if out := must("route", "list", "globex"); !strings.Contains(out, `"orders"`) || !strings.Contains(out, `"po@globex.test"`) {
		t.Errorf("route list: %s", out)
	}
	if out := must("route", "update", "globex", "orders", "--no-recipients"); strings.Contains(out, "@globex.test") {
		t.Errorf("route update --no-recipients: %s", out)
	}
	must("endpoint", "create", "globex", "orders", "--url", rcv.url(), "--id", "main", "--allow-http", "--rate-limit", "50")
	out := must("apikey", "create", "globex", "--scope", "ingest:orders", "--id", "globex-ci")
	var created struct{ Token string }
	if err := json.Unmarshal([]byte(out), &created); err != nil || !strings.HasPrefix(created.Token, "sp_globex-ci_") {
		t.Fatalf("apikey create printed %s (%v), want its token", out, err)
	}
	code, first := g.ingestAs(created.Token, "orders", `{"order":1}`, "")
	if code != http.StatusAccepted {
		t.Fatalf("ingest with the created key: %d", code)
	}
	if d := rcv.waitFor(t, 1, 30*time.Second); d[0].id != first {
		t.Errorf("the created endpoint got %s, want %s", d[0].id, first)
	}

	out = must("operator", "create", "ann", "--role", "viewer")
	var op struct{ Token string }
	if err := json.Unmarshal([]byte(out), &op); err != nil || op.Token == "" {
		t.Fatalf("operator create printed %s (%v), want its token", out, err)
	}
	viewer := func(args ...string) error {
		env := map[string]string{"SEALPOST_ADMIN_URL": g.adminURL, "SEALPOST_ADMIN_TOKEN": op.Token}
		return run(context.Background(), args, func(k string) string { return env[k] }, io.Discard, io.Discard)
	}
	if err := viewer("tenant", "list"); err != nil {
		t.Errorf("a viewer lists tenants: %v", err)
	}
	if err := viewer("tenant", "create", "initech"); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("a viewer creates a tenant: %v, want 403", err)
	}
	must("apikey", "revoke", "globex", "globex-ci")
	if code, _ := g.ingestAs(created.Token, "orders", `{"order":2}`, ""); code != http.StatusUnauthorized {
		t.Errorf("ingest with the revoked key: %d, want 401", code)
	}

	for _, args := range [][]string{
		{"route", "create", "globex"}, // no route name
		{"route", "update", "globex", "orders", "--recipient", "a@globex.test", "--no-recipients"},
		{"endpoint", "get", "globex"},     // too few words
		{"operator", "frobnicate", "ann"}, // no such subcommand
		{"apikey", "list"},                // no tenant
	} {
		if _, err := g.cli(args...); !errors.As(err, new(exitError)) {
			t.Errorf("%s: %v, want a usage error", strings.Join(args, " "), err)
		}
	}
	if _, err := g.cli("route", "create", "globex", "Bad_Name"); err == nil || !strings.Contains(err.Error(), "400") {
		t.Errorf("route create with a bad name: %v, want 400", err)
	}
	if _, err := g.cli("endpoint", "delete", "globex", "orders", "nope"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("endpoint delete of an unknown one: %v, want 404", err)
	}
}
