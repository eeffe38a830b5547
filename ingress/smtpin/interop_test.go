package smtpin

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// needTool finds an outside client, skipping the test when it is missing
// unless SEALPOST_REQUIRE_INTEROP=1.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("SEALPOST_REQUIRE_INTEROP") == "1" {
			t.Fatalf("%s not found and SEALPOST_REQUIRE_INTEROP=1: %v", name, err)
		}
		t.Skipf("%s not installed (apt-get install %s); set SEALPOST_REQUIRE_INTEROP=1 to make this a failure", name, name)
	}
	return p
}

func runTool(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

// bigAttachment is deterministic pseudo-random data of n bytes.
func bigAttachment(n int) []byte {
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// mimeWithAttachment builds an 8-bit message with one base64 attachment.
func mimeWithAttachment(data []byte) []byte {
	var b bytes.Buffer
	b.WriteString("From: Fabrik Müller <billing@vendor.example>\r\nTo: invoices@in.example.net\r\n" +
		"Subject: Lieferschein\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"ZZ\"\r\n\r\n" +
		"--ZZ\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" +
		"Grüße, anbei der Lieferschein für März.\r\n" +
		"--ZZ\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"lieferschein.bin\"\r\n" +
		"Content-Transfer-Encoding: base64\r\n\r\n")
	enc := base64.StdEncoding.EncodeToString(data)
	for len(enc) > 76 {
		b.WriteString(enc[:76])
		b.WriteString("\r\n")
		enc = enc[76:]
	}
	b.WriteString(enc + "\r\n--ZZ--\r\n")
	return b.Bytes()
}

// checkBigSubmission verifies that the one queued submission carries the
// attachment by reference with the right size and digest.
func checkBigSubmission(t *testing.T, ts *testServer, data []byte) {
	t.Helper()
	subs := ts.enq.all()
	if len(subs) != 1 {
		t.Fatalf("%d submissions, want 1", len(subs))
	}
	var m payloadView
	if err := json.Unmarshal(subs[0].Payload, &m); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(m.Text, "Grüße") {
		t.Errorf("8-bit text not kept: %q", m.Text)
	}
	var found bool
	for _, a := range m.Attachments {
		if a.Size != int64(len(data)) {
			continue
		}
		found = true
		want(t, "sha256", a.SHA256, sha256Digest(data))
		if a.Ref == "" || a.Content != nil {
			t.Errorf("large attachment not stored by reference: ref %q", a.Ref)
		}
		stored := ts.blobs.m[a.Ref]
		if !bytes.Equal(stored, data) {
			t.Errorf("blob %q holds %d bytes, want the %d attachment bytes", a.Ref, len(stored), len(data))
		}
	}
	if !found {
		t.Errorf("no attachment of %d bytes in %d attachments", len(data), len(m.Attachments))
	}
}

func TestInteropSwaks(t *testing.T) {
	if testing.Short() {
		t.Skip("interop test with an outside tool: skipped with -short")
	}
	swaks := needTool(t, "swaks")
	ts := startServer(t, func(c *Config) { c.MaxMessageBytes = 32 << 20 })
	_, port, _ := net.SplitHostPort(ts.addr)
	ca := ts.cert.writeCAFile(t)
	base := []string{"--server", "127.0.0.1", "--port", port, "--from", "billing@vendor.example",
		"--to", "invoices@in.example.net", "--ehlo", "swaks.test", "--timeout", "60"}

	t.Run("plain refused", func(t *testing.T) {
		out, err := runTool(t, swaks, base...)
		if err == nil || !strings.Contains(out, "530 5.7.0") {
			t.Fatalf("swaks without TLS: err %v, output:\n%s", err, out)
		}
	})
	t.Run("starttls 8bit pipelining", func(t *testing.T) {
		before := len(ts.enq.all())
		msg := filepath.Join(t.TempDir(), "msg.eml")
		os.WriteFile(msg, []byte("From: billing@vendor.example\r\nTo: invoices@in.example.net\r\nSubject: Grüße\r\n"+
			"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nÄpfel und Birnen.\r\n"), 0o600)
		args := append(append([]string{}, base...), "--tls", "--tls-verify", "--tls-ca-path", ca, "--pipeline", "--data", "@"+msg)
		out, err := runTool(t, swaks, args...)
		if err != nil {
			t.Fatalf("swaks: %v\n%s", err, out)
		}
		subs := ts.enq.all()
		if len(subs) != before+1 || !strings.Contains(out, "250 2.0.0 "+subs[len(subs)-1].ID) {
			t.Fatalf("receipt id not in the answer; output:\n%s", out)
		}
		var m payloadView
		json.Unmarshal(subs[len(subs)-1].Payload, &m)
		want(t, "text", strings.TrimSpace(m.Text), "Äpfel und Birnen.")
	})
	t.Run("20 MiB attachment", func(t *testing.T) {
		ts.enq.mu.Lock()
		ts.enq.subs = nil
		ts.enq.mu.Unlock()
		data := bigAttachment(20 << 20)
		msg := filepath.Join(t.TempDir(), "big.eml")
		if err := os.WriteFile(msg, mimeWithAttachment(data), 0o600); err != nil {
			t.Fatal(err)
		}
		args := append(append([]string{}, base...), "--tls", "--tls-verify", "--tls-ca-path", ca, "--data", "@"+msg, "--silent", "2")
		if out, err := runTool(t, swaks, args...); err != nil {
			t.Fatalf("swaks: %v\n%s", err, out)
		}
		checkBigSubmission(t, ts, data)
	})
}

const smtplibScript = `
import smtplib, ssl, sys
host, port, cafile, path, starttls = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5] == "1"
msg = open(path, "rb").read()
s = smtplib.SMTP(host, port, local_hostname="python.test", timeout=120)
s.ehlo()
if starttls:
    s.starttls(context=ssl.create_default_context(cafile=cafile))
    s.ehlo()
    assert s.has_extn("8bitmime") and s.has_extn("smtputf8") and s.has_extn("size"), s.esmtp_features
code, resp = s.mail("billing@vendor.example", ["BODY=8BITMIME", "SIZE=%d" % len(msg)])
print("MAIL", code, resp.decode())
if code != 250:
    sys.exit(1)
code, resp = s.rcpt("invoices@in.example.net")
print("RCPT", code, resp.decode())
code, resp = s.data(msg)
print("DATA", code, resp.decode())
s.quit()
`

func TestInteropPythonSmtplib(t *testing.T) {
	if testing.Short() {
		t.Skip("interop test with an outside tool: skipped with -short")
	}
	py := needTool(t, "python3")
	ts := startServer(t, func(c *Config) { c.MaxMessageBytes = 32 << 20 })
	_, port, _ := net.SplitHostPort(ts.addr)
	ca := ts.cert.writeCAFile(t)
	dir := t.TempDir()
	script := filepath.Join(dir, "send.py")
	os.WriteFile(script, []byte(smtplibScript), 0o600)

	t.Run("plain refused", func(t *testing.T) {
		msg := filepath.Join(dir, "small.eml")
		os.WriteFile(msg, []byte(simpleMessage), 0o600)
		out, err := runTool(t, py, script, "127.0.0.1", port, ca, msg, "0")
		if err == nil || !strings.Contains(out, "MAIL 530") {
			t.Fatalf("smtplib without TLS: err %v, output:\n%s", err, out)
		}
	})
	t.Run("starttls 8bitmime 20 MiB attachment", func(t *testing.T) {
		data := bigAttachment(20 << 20)
		msg := filepath.Join(dir, "big.eml")
		os.WriteFile(msg, mimeWithAttachment(data), 0o600)
		out, err := runTool(t, py, script, "127.0.0.1", port, ca, msg, "1")
		if err != nil {
			t.Fatalf("smtplib: %v\n%s", err, out)
		}
		subs := ts.enq.all()
		if len(subs) != 1 || !strings.Contains(out, fmt.Sprintf("DATA 250 2.0.0 %s", subs[0].ID)) {
			t.Fatalf("output:\n%s", out)
		}
		checkBigSubmission(t, ts, data)
	})
}

// TestInteropSizeLimitSmtplib: Python's smtplib declares SIZE= and sends a
// message of exactly the limit, which is accepted; one byte more is refused
// at MAIL, before the upload.
func TestInteropSizeLimitSmtplib(t *testing.T) {
	py := needTool(t, "python3")
	const limit = 4096
	ts := startServer(t, func(c *Config) { c.MaxMessageBytes = limit })
	_, port, _ := net.SplitHostPort(ts.addr)
	ca := ts.cert.writeCAFile(t)
	dir := t.TempDir()
	script := filepath.Join(dir, "send.py")
	os.WriteFile(script, []byte(smtplibScript), 0o600)
	for _, tt := range []struct {
		size int
		want string
	}{{limit, "DATA 250"}, {limit + 1, "MAIL 552"}} {
		msg := filepath.Join(dir, fmt.Sprintf("%d.eml", tt.size))
		os.WriteFile(msg, messageOfSize(tt.size), 0o600)
		out, _ := runTool(t, py, script, "127.0.0.1", port, ca, msg, "1")
		if !strings.Contains(out, tt.want) {
			t.Errorf("%d bytes: want %q in the output:\n%s", tt.size, tt.want, out)
		}
	}
	if n := len(ts.enq.all()); n != 1 {
		t.Errorf("%d messages queued, want 1", n)
	}
}
