package smtpin

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/sealpost/sealpost/ingress"
)

func TestSTARTTLSRequired(t *testing.T) {
	ts := startServer(t, nil)

	c := ts.dial(t, false)
	if ok, _ := c.Extension("STARTTLS"); !ok {
		t.Error("STARTTLS not advertised before TLS")
	}
	if ok, _ := c.Extension("REQUIRETLS"); ok {
		t.Error("REQUIRETLS advertised before TLS")
	}
	err := c.Mail("billing@vendor.example", nil)
	if smtpCode(err) != 530 || !strings.Contains(err.Error(), "Must issue a STARTTLS command first") {
		t.Fatalf("MAIL before STARTTLS: got %v, want 530 5.7.0", err)
	}

	c = ts.dial(t, true)
	for _, ext := range []string{"PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "SIZE", "REQUIRETLS"} {
		if ok, _ := c.Extension(ext); !ok {
			t.Errorf("%s not advertised after STARTTLS", ext)
		}
	}
	if _, size := c.Extension("SIZE"); size != fmt.Sprint(DefaultMaxMessageBytes) {
		t.Errorf("SIZE %q, want %d", size, DefaultMaxMessageBytes)
	}
	text, err := send(c, "billing@vendor.example", []string{"invoices@in.example.net"}, []byte(simpleMessage))
	if err != nil {
		t.Fatal(err)
	}
	subs := ts.enq.all()
	if len(subs) != 1 {
		t.Fatalf("%d submissions, want 1", len(subs))
	}
	if text != "2.0.0 "+subs[0].ID {
		t.Errorf("DATA answer %q, want the receipt id %q", text, subs[0].ID)
	}
	var src struct {
		MailFrom string   `json:"mail_from"`
		RcptTo   []string `json:"rcpt_to"`
		Helo     string   `json:"helo"`
		TLS      struct{ Version, Cipher string }
	}
	if err := json.Unmarshal(subs[0].Source, &src); err != nil {
		t.Fatal(err)
	}
	if src.MailFrom != "billing@vendor.example" || src.Helo != "localhost" || len(src.RcptTo) != 1 {
		t.Errorf("source = %+v", src)
	}
	if src.TLS.Version != "TLS1.3" || src.TLS.Cipher == "" {
		t.Errorf("source.tls = %+v, want TLS1.3 and a cipher", src.TLS)
	}
	if subs[0].Tenant != "acme" || subs[0].Route != "invoices" || subs[0].Channel != "smtp" || subs[0].RawSize != int64(len(simpleMessage)) {
		t.Errorf("submission = %+v", subs[0])
	}
	if subs[0].RawSHA256 != sha256Digest([]byte(simpleMessage)) {
		t.Errorf("raw_sha256 %s does not match the bytes sent", subs[0].RawSHA256)
	}
}

func TestTLSVersions(t *testing.T) {
	ts := startServer(t, nil)
	tests := []struct {
		name     string
		min, max uint16
		ciphers  []uint16
		wantOK   bool
		wantVer  string
	}{
		{"tls1.1 only", tls.VersionTLS10, tls.VersionTLS11, nil, false, ""},
		{"tls1.2 cbc only", tls.VersionTLS12, tls.VersionTLS12, []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}, false, ""},
		{"tls1.2 aead", tls.VersionTLS12, tls.VersionTLS12, nil, true, "TLS1.2"},
		{"tls1.3", tls.VersionTLS12, tls.VersionTLS13, nil, true, "TLS1.3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := ts.clientTLS()
			cfg.MinVersion, cfg.MaxVersion, cfg.CipherSuites = tt.min, tt.max, tt.ciphers
			c, err := ts.dialTLS(cfg)
			if !tt.wantOK {
				if err == nil {
					c.Close()
					t.Fatal("handshake succeeded, want refusal")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := send(c, "a@vendor.example", []string{"alerts@in.example.net"}, []byte(simpleMessage)); err != nil {
				t.Fatal(err)
			}
			subs := ts.enq.all()
			var src struct {
				TLS struct{ Version, Cipher string }
			}
			json.Unmarshal(subs[len(subs)-1].Source, &src)
			if src.TLS.Version != tt.wantVer {
				t.Errorf("tls version %q, want %q", src.TLS.Version, tt.wantVer)
			}
			if !strings.Contains(src.TLS.Cipher, "GCM") && !strings.Contains(src.TLS.Cipher, "CHACHA20") {
				t.Errorf("cipher %q is not AEAD", src.TLS.Cipher)
			}
		})
	}
}

func TestRouting(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial(t, true)

	if err := c.Mail("billing@vendor.example", nil); err != nil {
		t.Fatal(err)
	}
	err := c.Rcpt("nobody@in.example.net", nil)
	if smtpCode(err) != 550 || !strings.Contains(err.Error(), "No such recipient") {
		t.Fatalf("unknown recipient: got %v, want 550 5.1.1", err)
	}
	err = c.Rcpt("partners@in.example.net", nil)
	if smtpCode(err) != 550 {
		t.Fatalf("sender outside AllowedSenderDomains: got %v, want 550 5.7.1", err)
	}
	for _, r := range []string{"Invoices@in.example.net", "alerts@in.example.net", "billing@in.example.net", "orders@globex.example.net"} {
		if err := c.Rcpt(r, nil); err != nil {
			t.Fatalf("RCPT %s: %v", r, err)
		}
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte(simpleMessage))
	resp, err := w.CloseWithResponse()
	if err != nil {
		t.Fatal(err)
	}
	subs := ts.enq.all()
	if len(subs) != 3 {
		t.Fatalf("%d submissions, want one per route (3)", len(subs))
	}
	var ids []string
	got := map[string][]string{}
	for _, s := range subs {
		ids = append(ids, s.ID)
		var src struct {
			RcptTo []string `json:"rcpt_to"`
		}
		json.Unmarshal(s.Source, &src)
		got[s.Tenant+"/"+s.Route] = src.RcptTo
	}
	if resp.StatusText != "2.0.0 "+strings.Join(ids, " ") {
		t.Errorf("DATA answer %q, want the receipt ids %q", resp.StatusText, ids)
	}
	want := map[string][]string{
		"acme/invoices": {"Invoices@in.example.net", "billing@in.example.net"},
		"acme/alerts":   {"alerts@in.example.net"},
		"globex/orders": {"orders@globex.example.net"},
	}
	for k, v := range want {
		if strings.Join(got[k], ",") != strings.Join(v, ",") {
			t.Errorf("route %s rcpt_to %v, want %v", k, got[k], v)
		}
	}

	// The allowed sender domain gets through.
	if _, err := send(c, "x@partner.example", []string{"partners@in.example.net"}, []byte(simpleMessage)); err != nil {
		t.Fatalf("allowed sender: %v", err)
	}
}

func TestQueueDownIsTemporary(t *testing.T) {
	tests := []struct {
		name     string
		enqErr   error
		blobErr  error
		wantCode int
		wantEnh  string
	}{
		{"queue unavailable", ingress.ErrUnavailable, nil, 451, "4.3.0"},
		{"kms down", ingress.Temporary(errors.New("kms: timeout")), nil, 451, "4.3.0"},
		// A deadline is a net.Error with Timeout(); it is still our failure.
		{"publish timeout", ingress.Temporary(fmt.Errorf("publish: %w", context.DeadlineExceeded)), nil, 451, "4.3.0"},
		{"deadline", context.DeadlineExceeded, nil, 451, "4.3.0"},
		{"blob store down", nil, ingress.Temporary(errors.New("object store down")), 451, "4.3.0"},
		{"unknown error", errors.New("boom"), nil, 554, "5.0.0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, func(c *Config) { c.InlineAttachmentMax = 10 })
			ts.enq.err, ts.blobs.err = tt.enqErr, tt.blobErr
			c := ts.dial(t, true)
			_, err := send(c, "a@vendor.example", []string{"invoices@in.example.net"}, []byte(attachmentMessage))
			if smtpCode(err) != tt.wantCode || enhCode(err) != tt.wantEnh {
				t.Fatalf("got %v, want %d %s", err, tt.wantCode, tt.wantEnh)
			}
			if strings.Contains(err.Error(), "boom") || strings.Contains(err.Error(), "kms") {
				t.Errorf("answer leaks the internal error: %v", err)
			}
		})
	}
}

const attachmentMessage = "From: a@vendor.example\r\n" +
	"To: invoices@in.example.net\r\n" +
	"Subject: with attachment\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: multipart/mixed; boundary=XX\r\n" +
	"\r\n" +
	"--XX\r\n" +
	"Content-Type: text/plain\r\n" +
	"\r\n" +
	"see attached\r\n" +
	"--XX\r\n" +
	"Content-Type: application/pdf\r\n" +
	"Content-Disposition: attachment; filename=\"invoice.pdf\"\r\n" +
	"Content-Transfer-Encoding: base64\r\n" +
	"\r\n" +
	"JVBERi0xLjQKJcTl8uXrp/Og0MTGCjEgMCBvYmoK\r\n" +
	"--XX--\r\n"

func TestLargePartsStoredApart(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.MaxPayloadBytes = 8192; c.InlineAttachmentMax = 16 })
	c := ts.dial(t, true)
	body := strings.Repeat("line of a long report\r\n", 1000)
	msg := strings.Replace(attachmentMessage, "see attached\r\n", body, 1)
	if _, err := send(c, "a@vendor.example", []string{"invoices@in.example.net", "orders@globex.example.net"}, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	text := strings.TrimSuffix(body, "\r\n") // the last CRLF belongs to the boundary
	subs := ts.enq.all()
	if len(subs) != 2 {
		t.Fatalf("%d submissions, want 2", len(subs))
	}
	for _, s := range subs {
		var m struct {
			payloadView
			TextRef    string `json:"text_ref"`
			TextSHA256 string `json:"text_sha256"`
		}
		if err := json.Unmarshal(s.Payload, &m); err != nil {
			t.Fatal(err)
		}
		if len(s.Payload) > 8192 {
			t.Errorf("payload of %d bytes over MaxPayloadBytes", len(s.Payload))
		}
		if m.Text != "" || !strings.HasPrefix(m.TextRef, "blob:"+s.Tenant+"/") || string(ts.blobs.m[m.TextRef]) != text {
			t.Errorf("%s: text not stored apart under the tenant: ref %q", s.Tenant, m.TextRef)
		}
		want(t, "text_sha256", m.TextSHA256, sha256Digest([]byte(text)))
		a := m.Attachments[0]
		if a.Content != nil || !strings.HasPrefix(a.Ref, "blob:"+s.Tenant+"/") || len(ts.blobs.m[a.Ref]) != int(a.Size) {
			t.Errorf("%s: attachment above InlineAttachmentMax not stored apart: %+v", s.Tenant, a)
		}
	}
}
