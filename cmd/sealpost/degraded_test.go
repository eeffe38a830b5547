package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// copyDir copies a data dir as a file-level backup would.
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o700)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, info.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
}

// offline runs `sealpost audit verify --data DIR` with more flags.
func offline(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), append([]string{"audit", "verify", "--data", dir}, args...), func(string) string { return "" }, &out, &errOut)
	return out.String() + errOut.String(), err
}

// ingestOK posts n payloads and waits until the receiver has them all.
func ingestOK(t *testing.T, g *testGateway, rcv *receiver, n int) []string {
	t.Helper()
	rcv.mu.Lock()
	have := len(rcv.ids)
	rcv.mu.Unlock()
	var ids []string
	for i := range n {
		code, doc, _ := g.ingest("invoices", `{"n":`+string(rune('0'+i))+`}`, nil)
		if code != http.StatusAccepted {
			t.Fatalf("ingest: %d %v", code, doc)
		}
		ids = append(ids, doc["id"].(string))
	}
	rcv.waitFor(t, have+n, 30*time.Second)
	return ids
}

func metric(t *testing.T, g *testGateway, name string) string {
	t.Helper()
	resp, err := http.Get(g.adminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no metric %s", name)
	}
	return string(m[1])
}

// TestRolledBackDataDirStartsDegraded puts back an older copy of the data
// dir, as a restored backup or someone covering tracks would, while the
// checkpoints written outside it have moved on. Offline verification
// reports the rollback; the gateway starts on it, serves health, the
// read-only API, admin and verification, refuses ingest over HTTPS (503
// audit-inconsistent) and SMTP (451), and reports sealpost_audit_consistent
// 0. Offline verification refuses a data dir the gateway is running on.
func TestRolledBackDataDirStartsDegraded(t *testing.T) {
	rcv := newReceiver(t)
	dataDir, outside := t.TempDir(), t.TempDir()
	extra := "audit:\n  checkpoint_every: 1s\n  outside:\n    dir: " + outside + "\n"
	g := startGateway(t, gatewayOpts{dataDir: dataDir, endpoint: rcv.url(), extra: extra})
	ids := ingestOK(t, g, rcv, 2)
	must(t, g.stop())
	older := t.TempDir()
	copyDir(t, dataDir, older)

	g = startGateway(t, gatewayOpts{dataDir: dataDir, endpoint: rcv.url(), extra: extra, token: g.token, admin: g.admin})
	ingestOK(t, g, rcv, 2)
	must(t, g.stop())
	// A backup of the current state verifies offline, against the same
	// outside copies.
	backup := t.TempDir()
	copyDir(t, dataDir, backup)
	if out, err := offline(t, backup, "--outside", outside); err != nil || !strings.Contains(out, "OK") {
		t.Fatalf("offline verify of a backup: %v\n%s", err, out)
	}

	// The older copy: the log is behind its outside copies.
	out, err := offline(t, older, "--outside", outside)
	if err == nil || !strings.Contains(out, "rollback") {
		t.Fatalf("offline verify of the rolled back data dir: %v\n%s", err, out)
	}
	// Without the outside copies nothing is wrong with it on its own.
	if out, err := offline(t, older); err != nil {
		t.Fatalf("offline verify without outside copies: %v\n%s", err, out)
	}

	g = startGateway(t, gatewayOpts{dataDir: older, endpoint: rcv.url(), extra: extra, token: g.token, admin: g.admin})
	if v := metric(t, g, "sealpost_audit_consistent"); v != "0" {
		t.Errorf("sealpost_audit_consistent %s, want 0", v)
	}
	resp, err := http.Get(g.adminURL + "/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	resp.Body.Close()
	code, doc, hdr := g.ingest("invoices", `{"n":9}`, nil)
	if code != http.StatusServiceUnavailable || doc["type"] != "https://sealpost.dev/problems/audit-inconsistent" || hdr.Get("Retry-After") == "" {
		t.Errorf("ingest on a rolled back log: %d %v (Retry-After %q)", code, doc, hdr.Get("Retry-After"))
	}
	if err := sendMail(t, g); err == nil || !strings.Contains(err.Error(), "451") {
		t.Errorf("mail on a rolled back log: %v, want 451", err)
	}
	// Reading works: a receipt, the checkpoint, the key history.
	if code, body := g.getAuth("/v1/receipts/" + ids[0]); code != http.StatusOK {
		t.Errorf("receipt: %d %s", code, body)
	}
	if code, body := g.get("/v1/audit/checkpoint"); code != http.StatusOK {
		t.Errorf("checkpoint: %d %s", code, body)
	}
	out, err = g.cli("audit", "verify")
	if err == nil || !strings.Contains(out, "rollback") {
		t.Errorf("audit verify through the gateway: %v\n%s", err, out)
	}
	out, err = offline(t, older, "--outside", outside)
	if err == nil || !strings.Contains(err.Error(), "in use by a running sealpost") {
		t.Errorf("offline verify of a data dir in use: %v\n%s", err, out)
	}
}

// sendMail sends one message over STARTTLS and returns the error.
func sendMail(t *testing.T, g *testGateway) error {
	t.Helper()
	pool := x509.NewCertPool()
	pem, err := os.ReadFile(filepath.Join(g.dataDir, "dev-cert.pem"))
	if err != nil || !pool.AppendCertsFromPEM(pem) {
		t.Fatal("dev certificate", err)
	}
	c, err := smtp.DialStartTLS(g.smtp, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.SendMail("billing@vendor.test", []string{"invoices@acme.test"},
		strings.NewReader("From: billing@vendor.test\r\nTo: invoices@acme.test\r\nSubject: x\r\n\r\nbody\r\n"))
}

// TestTruncatedAuditStoreDetectedOffline cuts the newest messages off the
// audit stream's file store on disk, with the gateway stopped: offline
// verification reports it (the checkpoints cover more than is stored) and
// the gateway starts without ingest.
func TestTruncatedAuditStoreDetectedOffline(t *testing.T) {
	rcv := newReceiver(t)
	dataDir := t.TempDir()
	g := startGateway(t, gatewayOpts{dataDir: dataDir, endpoint: rcv.url()})
	ingestOK(t, g, rcv, 3)
	must(t, g.stop())
	if out, err := offline(t, dataDir); err != nil {
		t.Fatalf("untouched: %v\n%s", err, out)
	}
	truncateStream(t, dataDir, "AUDIT")
	out, err := offline(t, dataDir)
	if err == nil || !(strings.Contains(out, "truncated") || strings.Contains(out, "deleted")) {
		t.Fatalf("offline verify of a truncated store: %v\n%s", err, out)
	}
	t.Logf("offline verify of the truncated store:\n%s", out)
	g = startGateway(t, gatewayOpts{dataDir: dataDir, endpoint: rcv.url(), token: g.token, admin: g.admin})
	if code, doc, _ := g.ingest("invoices", `{"n":9}`, nil); code != http.StatusServiceUnavailable {
		t.Errorf("ingest on a truncated log: %d %v", code, doc)
	}
	var rep map[string]any
	resp, err := adminGet(g, "/admin/audit/verify")
	if err != nil {
		t.Fatal(err)
	}
	_ = json.Unmarshal(resp, &rep)
	if rep["ok"] != false {
		t.Errorf("admin audit verify: %s", resp)
	}
}

func adminGet(g *testGateway, path string) ([]byte, error) {
	req, _ := http.NewRequest("GET", g.adminURL+path, nil)
	req.Header.Set("Authorization", "Bearer "+g.admin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

// truncateStream cuts the second half off the newest message block of a
// stream's file store and removes its cached state, as a torn write or an
// edit on disk would leave it.
func truncateStream(t *testing.T, dataDir, stream string) {
	t.Helper()
	var blocks []string
	dir := ""
	err := filepath.WalkDir(filepath.Join(dataDir, "jetstream"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == stream && filepath.Base(filepath.Dir(p)) == "streams" {
			dir = p
		}
		if dir != "" && strings.HasPrefix(p, dir+string(filepath.Separator)) && strings.HasSuffix(p, ".blk") {
			blocks = append(blocks, p)
		}
		return nil
	})
	if err != nil || len(blocks) == 0 {
		t.Fatalf("no blocks of %s: %v", stream, err)
	}
	last := blocks[len(blocks)-1]
	info, err := os.Stat(last)
	if err != nil {
		t.Fatal(err)
	}
	must(t, os.Truncate(last, info.Size()/2))
	for _, name := range []string{"index.db"} {
		_ = os.Remove(filepath.Join(dir, "msgs", name))
	}
}
