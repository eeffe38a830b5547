package main

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// TestSMTPEndToEnd sends mail with go-smtp's client over STARTTLS, one
// message with a small body and one with an attachment large enough to be
// stored sealed in the object store, and checks the signed receipts the
// webhook receives.
func TestSMTPEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("long end-to-end test: skipped with -short")
	}
	rcv := newReceiver(t)
	g := startGateway(t, gatewayOpts{endpoint: rcv.url()})
	pool := x509.NewCertPool()
	pem, err := os.ReadFile(filepath.Join(g.dataDir, "dev-cert.pem"))
	if err != nil || !pool.AppendCertsFromPEM(pem) {
		t.Fatal("dev certificate", err)
	}
	attachment := make([]byte, 2<<20)
	if _, err := rand.Read(attachment); err != nil {
		t.Fatal(err)
	}
	attSum := sha256.Sum256(attachment)
	var att strings.Builder
	enc := base64.StdEncoding.EncodeToString(attachment)
	for len(enc) > 76 {
		att.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	att.WriteString(enc + "\r\n")
	messages := []string{
		"From: Billing <billing@vendor.test>\r\nTo: invoices@acme.test\r\nSubject: Invoice 7\r\n" +
			"Message-ID: <inv7@vendor.test>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPlease find invoice 7.\r\n",
		"From: billing@vendor.test\r\nTo: invoices@acme.test\r\nSubject: Big\r\nMIME-Version: 1.0\r\n" +
			"Content-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n" +
			"--b1\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=blob.bin\r\n" +
			"Content-Transfer-Encoding: base64\r\n\r\n" + att.String() + "--b1--\r\n",
	}
	for i, msg := range messages {
		c, err := smtp.DialStartTLS(g.smtp, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.SendMail("billing@vendor.test", []string{"invoices@acme.test"}, strings.NewReader(msg)); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		_ = c.Quit()
	}
	got := rcv.waitFor(t, 2, 60*time.Second)
	keys := g.jwks()
	var sawRef bool
	for _, d := range got {
		receipt := checkDelivery(t, d, keys)
		src, _ := receipt["source"].(map[string]any)
		tlsInfo, _ := src["tls"].(map[string]any)
		if receipt["channel"] != "smtp" || tlsInfo["version"] == nil {
			t.Errorf("receipt %v", receipt)
		}
		var env struct {
			Payload struct {
				Subject     string `json:"subject"`
				Attachments []struct {
					Size   int64  `json:"size"`
					SHA256 string `json:"sha256"`
					Ref    string `json:"ref"`
				} `json:"attachments"`
			} `json:"payload"`
		}
		if err := json.Unmarshal(d.body, &env); err != nil {
			t.Fatal(err)
		}
		for _, a := range env.Payload.Attachments {
			if a.Ref != "" {
				sawRef = true
				if a.Size != int64(len(attachment)) || a.SHA256 != base64.RawURLEncoding.EncodeToString(attSum[:]) {
					t.Errorf("attachment %+v", a)
				}
				// The ref is fetched under /v1/ by the tenant that owns it.
				if code, body := g.getAuth("/v1/" + a.Ref); code != http.StatusOK || !bytes.Equal(body, attachment) {
					t.Errorf("GET /v1/%s: %d, %d bytes; want 200 and the attachment", a.Ref, code, len(body))
				}
				other := strings.Replace(a.Ref, "attachments/acme/", "attachments/globex/", 1)
				unknown := a.Ref[:len(a.Ref)-4] + "AAAA"
				for _, p := range []string{other, unknown, "attachments/acme/..%2f..%2fx"} {
					if code, _ := g.getAuth("/v1/" + p); code != http.StatusNotFound {
						t.Errorf("GET /v1/%s: %d, want 404", p, code)
					}
				}
			}
		}
	}
	if !sawRef {
		t.Error("the 2 MiB attachment was not stored by reference")
	}
	// Nothing of the attachment is on disk in the clear.
	probe := attachment[1000:1064]
	_ = filepath.Walk(g.dataDir, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			if b, _ := os.ReadFile(p); bytes.Contains(b, probe) {
				t.Errorf("%s holds attachment bytes in the clear", p)
			}
		}
		return nil
	})
}
