package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sealpost/sealpost/queue"
)

// TestEndToEnd posts JSON to the ingest API and checks the webhook the
// receiver gets: headers, v1a signature, receipt signature and payload
// digest, all verified with plain crypto/ed25519 and jcs.
func TestEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("long end-to-end test: skipped with -short")
	}
	rcv := newReceiver(t)
	g := startGateway(t, gatewayOpts{endpoint: rcv.url()})
	payload := `{"invoice":"INV-1","amount":12.5,"lines":[{"sku":"a","qty":2}]}`
	code, doc, _ := g.ingest("invoices", payload, nil)
	if code != http.StatusAccepted {
		t.Fatalf("ingest: %d %v\n%s", code, doc, g.stderr)
	}
	id, _ := doc["id"].(string)
	got := rcv.waitFor(t, 1, 30*time.Second)
	d := got[0]
	if d.id != id {
		t.Fatalf("webhook-id %q, ingest answered %q", d.id, id)
	}
	receipt := checkDelivery(t, d, g.jwks())
	for k, want := range map[string]any{"v": float64(1), "tenant": "acme", "route": "invoices", "channel": "https", "raw_size": float64(len(payload))} {
		if receipt[k] != want {
			t.Errorf("receipt.%s = %v, want %v", k, receipt[k], want)
		}
	}
	src, _ := receipt["source"].(map[string]any)
	if src["api_key_id"] != "acme-test" {
		t.Errorf("receipt.source %v", src)
	}
	var env map[string]json.RawMessage
	if err := json.Unmarshal(d.body, &env); err != nil {
		t.Fatal(err)
	}
	var p1, p2 any
	_ = json.Unmarshal(env["payload"], &p1)
	_ = json.Unmarshal([]byte(payload), &p2)
	if fmt.Sprint(p1) != fmt.Sprint(p2) {
		t.Errorf("payload %s, posted %s", env["payload"], payload)
	}

	// sealpost verify accepts the saved envelope, and names what fails on a tampered one.
	dir := t.TempDir()
	envFile, jwksFile := filepath.Join(dir, "receipt.json"), filepath.Join(dir, "jwks.json")
	_, jwks := g.get("/.well-known/jwks.json")
	must(t, os.WriteFile(envFile, d.body, 0o600))
	must(t, os.WriteFile(jwksFile, jwks, 0o600))
	var out bytes.Buffer
	if err := run(context.Background(), []string{"verify", envFile, "--jwks", jwksFile}, os.Getenv, &out, io.Discard); err != nil {
		t.Fatalf("verify: %v: %s", err, out.String())
	}
	if !strings.HasPrefix(out.String(), "OK ") {
		t.Errorf("verify output %q", out.String())
	}
	// The same check against the live JWKS URL, trusting the dev certificate.
	out.Reset()
	url := "https://" + g.https + "/.well-known/jwks.json"
	if err := run(context.Background(), []string{"verify", "--jwks", url, "--cacert", filepath.Join(g.dataDir, "dev-cert.pem"), envFile}, os.Getenv, &out, io.Discard); err != nil {
		t.Fatalf("verify against URL: %v: %s", err, out.String())
	}
	for name, tamper := range map[string]func([]byte) []byte{
		"payload": func(b []byte) []byte { return bytes.Replace(b, []byte("INV-1"), []byte("INV-2"), 1) },
		"receipt": func(b []byte) []byte {
			return bytes.Replace(b, []byte(`"route":"invoices"`), []byte(`"route":"invoicez"`), 1)
		},
	} {
		must(t, os.WriteFile(envFile, tamper(d.body), 0o600))
		out.Reset()
		err := run(context.Background(), []string{"verify", envFile, "--jwks", jwksFile}, os.Getenv, &out, io.Discard)
		if ee, ok := err.(exitError); !ok || ee.code != 1 || !strings.HasPrefix(out.String(), "FAILED") {
			t.Errorf("tampered %s: err %v, output %q", name, err, out.String())
		}
	}

	// The tenant can read its receipt and the attempts back.
	code, body := g.getAuth("/v1/receipts/" + id)
	if code != 200 || !bytes.Equal(body, d.body) {
		t.Errorf("GET receipt: %d, equal to the webhook body: %v", code, bytes.Equal(body, d.body))
	}
	code, body = g.getAuth("/v1/receipts/" + id + "/attempts")
	if code != 200 || !strings.Contains(string(body), "attempts") {
		t.Errorf("GET attempts: %d %s", code, body)
	}
}

func (g *testGateway) getAuth(path string) (int, []byte) {
	g.t.Helper()
	req, _ := http.NewRequest("GET", "https://"+g.https+path, nil)
	req.Header.Set("Authorization", "Bearer "+g.token)
	resp, err := g.client.Do(req)
	if err != nil {
		g.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestReceiverDownThenUp: the endpoint fails at first and recovers later;
// every message is delivered, with the same webhook-id on every attempt.
func TestReceiverDownThenUp(t *testing.T) {
	if testing.Short() {
		t.Skip("long end-to-end test: skipped with -short")
	}
	rcv := newReceiver(t)
	rcv.failFirst.Store(6)
	g := startGateway(t, gatewayOpts{endpoint: rcv.url()})
	ids := map[string]bool{}
	for i := range 3 {
		code, doc, _ := g.ingest("invoices", fmt.Sprintf(`{"n":%d}`, i), nil)
		if code != http.StatusAccepted {
			t.Fatalf("ingest: %d %v", code, doc)
		}
		ids[doc["id"].(string)] = true
	}
	got := rcv.waitFor(t, 3, 60*time.Second)
	keys := g.jwks()
	for _, d := range got {
		if !ids[d.id] {
			t.Errorf("unexpected webhook-id %s", d.id)
		}
		checkDelivery(t, d, keys)
	}
	if rcv.calls.Load() <= 6 {
		t.Errorf("%d calls: the failures were not retried", rcv.calls.Load())
	}
}

// TestRestartBeforeDelivery: the gateway accepts, stops before it could
// deliver, and a new process on the same data dir delivers.
func TestRestartBeforeDelivery(t *testing.T) {
	if testing.Short() {
		t.Skip("long end-to-end test: skipped with -short")
	}
	rcv := newReceiver(t)
	rcv.failFirst.Store(1 << 40) // down for the first process
	dataDir := t.TempDir()
	g := startGateway(t, gatewayOpts{dataDir: dataDir, endpoint: rcv.url()})
	code, doc, _ := g.ingest("invoices", `{"restart":true}`, nil)
	if code != http.StatusAccepted {
		t.Fatalf("ingest: %d %v", code, doc)
	}
	id := doc["id"].(string)
	if err := g.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if rcv.calls.Load() == 0 {
		t.Fatal("the first process never tried to deliver")
	}
	rcv.failFirst.Store(0)
	g2 := startGateway(t, gatewayOpts{dataDir: dataDir, endpoint: rcv.url(), token: g.token, admin: g.admin})
	got := rcv.waitFor(t, 1, 60*time.Second)
	if got[0].id != id {
		t.Fatalf("delivered %s, want %s", got[0].id, id)
	}
	checkDelivery(t, got[0], g2.jwks())
}

// TestQueueUnavailable: with the external NATS server gone, ingest answers
// 503 with Retry-After instead of accepting what it could lose.
func TestQueueUnavailable(t *testing.T) {
	if testing.Short() {
		t.Skip("long end-to-end test: skipped with -short")
	}
	natsDir := t.TempDir()
	port := freePort(t)
	ext, err := queue.Open(context.Background(), queue.Config{DataDir: natsDir, ListenAddr: fmt.Sprintf("127.0.0.1:%d", port), Name: "external"})
	if err != nil {
		t.Fatal(err)
	}
	rcv := newReceiver(t)
	g := startGateway(t, gatewayOpts{endpoint: rcv.url(), natsURL: ext.ClientURL()})
	if code, doc, _ := g.ingest("invoices", `{"up":true}`, nil); code != http.StatusAccepted {
		t.Fatalf("ingest while up: %d %v", code, doc)
	}
	rcv.waitFor(t, 1, 30*time.Second)
	ext.Close()
	code, doc, hdr := g.ingest("invoices", `{"up":false}`, nil)
	if code != http.StatusServiceUnavailable || hdr.Get("Retry-After") == "" {
		t.Fatalf("ingest while down: %d %v (Retry-After %q)", code, doc, hdr.Get("Retry-After"))
	}
	resp, err := http.Get(g.adminURL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/readyz while the queue is down: %d", resp.StatusCode)
	}
	// An export that cannot be read is an error, not an empty file.
	if out, err := g.cli("audit", "export"); err == nil {
		t.Errorf("audit export while the queue is down succeeded with %d bytes", len(out))
	}
}

// TestNoPlaintextAtRest runs marker payloads through the whole pipeline and
// then reads every file under the data dir, JetStream's store included: the
// marker is nowhere.
func TestNoPlaintextAtRest(t *testing.T) {
	if testing.Short() {
		t.Skip("long end-to-end test: skipped with -short")
	}
	rcv := newReceiver(t)
	rcv.failFirst.Store(2) // some attempts fail, so retries and attempt records happen
	dataDir := t.TempDir()
	g := startGateway(t, gatewayOpts{dataDir: dataDir, endpoint: rcv.url()})
	const marker = "ZQX-plaintext-marker-8c1f"
	for i := range 5 {
		code, doc, _ := g.ingest("invoices", fmt.Sprintf(`{"secret":"%s-%d","note":"%s"}`, marker, i, marker), map[string]string{"Idempotency-Key": marker + fmt.Sprint(i)})
		if code != http.StatusAccepted {
			t.Fatalf("ingest: %d %v", code, doc)
		}
	}
	rcv.waitFor(t, 5, 60*time.Second)
	// Export the audit log through the admin API: no marker there either.
	req, _ := http.NewRequest("GET", g.adminURL+"/admin/audit/export?tenant=acme", nil)
	req.Header.Set("Authorization", "Bearer "+g.admin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	export, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || len(export) == 0 {
		t.Fatalf("audit export: %d (%d bytes)", resp.StatusCode, len(export))
	}
	if bytes.Contains(export, []byte(marker)) {
		t.Error("the audit export contains payload content")
	}
	if err := g.stop(); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(g.stderr.String(), marker) {
		t.Error("the logs contain payload content")
	}
	files := 0
	err = filepath.Walk(dataDir, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		files++
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if bytes.Contains(b, []byte(marker)) {
			t.Errorf("%s holds the marker in plaintext", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 5 {
		t.Fatalf("only %d files under the data dir: the walk saw nothing", files)
	}
}

// TestGracefulShutdown: cancelling run's context stops the gateway cleanly
// and returns nil.
func TestGracefulShutdown(t *testing.T) {
	if testing.Short() {
		t.Skip("long end-to-end test: skipped with -short")
	}
	rcv := newReceiver(t)
	g := startGateway(t, gatewayOpts{endpoint: rcv.url()})
	if code, _, _ := g.ingest("invoices", `{}`, nil); code != http.StatusAccepted {
		t.Fatalf("ingest: %d", code)
	}
	rcv.waitFor(t, 1, 30*time.Second)
	if err := g.stop(); err != nil {
		t.Fatalf("run returned %v", err)
	}
	if !strings.Contains(g.stderr.String(), `"msg":"stopped"`) {
		t.Errorf("no clean stop logged:\n%s", g.stderr.String())
	}
}

// TestServeRequiresTLS: outside --dev, a configuration without certificate
// files is refused at start with a message that says what to do.
func TestServeRequiresTLS(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "c.yaml")
	must(t, os.WriteFile(cfg, []byte("data_dir: "+dir+"\nlisten:\n  https: 127.0.0.1:0\n  smtp: \"off\"\n  admin: 127.0.0.1:0\n"+
		"tenants:\n  - name: t\n    routes:\n      - name: r\n        endpoint: https://example.com/hook\n"), 0o600))
	err := run(context.Background(), []string{"serve", "--config", cfg}, func(string) string { return "" }, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "tls.cert_file") {
		t.Fatalf("got %v, want an error naming tls.cert_file", err)
	}
}

// TestIngestProblems checks the ingest API's error answers through the
// gateway's own router: each is problem+json with the documented status.
func TestIngestProblems(t *testing.T) {
	g := startGateway(t, gatewayOpts{endpoint: newReceiver(t).url(), extra: "ingest:\n  max_body_bytes: 4096\n"})
	tests := []struct {
		name, method, route, auth, body string
		want                            int
	}{
		{"no key", "POST", "invoices", "", `{}`, http.StatusUnauthorized},
		{"wrong key", "POST", "invoices", "Bearer sp_k1_wrong", `{}`, http.StatusUnauthorized},
		{"unknown route", "POST", "nope", "token", `{}`, http.StatusNotFound},
		{"invalid JSON", "POST", "invoices", "token", `{"a":`, http.StatusBadRequest},
		{"over the limit", "POST", "invoices", "token", `{"pad":"` + strings.Repeat("x", 5000) + `"}`, http.StatusRequestEntityTooLarge},
		{"GET", "GET", "invoices", "token", ``, http.StatusMethodNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, "https://"+g.https+"/v1/ingest/"+tt.route, strings.NewReader(tt.body))
			req.Header.Set("Content-Type", "application/json")
			switch tt.auth {
			case "token":
				req.Header.Set("Authorization", "Bearer "+g.token)
			case "":
			default:
				req.Header.Set("Authorization", tt.auth)
			}
			resp, err := g.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var doc map[string]any
			_ = json.NewDecoder(resp.Body).Decode(&doc)
			if resp.StatusCode != tt.want || resp.Header.Get("Content-Type") != "application/problem+json" || doc["status"] != float64(tt.want) {
				t.Fatalf("%d %s %v, want %d problem+json", resp.StatusCode, resp.Header.Get("Content-Type"), doc, tt.want)
			}
			if tt.want == http.StatusMethodNotAllowed && resp.Header.Get("Allow") != "POST" {
				t.Errorf("Allow: %q", resp.Header.Get("Allow"))
			}
		})
	}
}
