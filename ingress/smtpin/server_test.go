package smtpin

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
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

// memDedup is an in-memory Dedup.
type memDedup struct {
	mu sync.Mutex
	m  map[string]string
}

func (d *memDedup) Claim(_ context.Context, key, id string) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if prev, ok := d.m[key]; ok {
		return prev, nil
	}
	d.m[key] = id
	return "", nil
}

// failNth fails the nth Enqueue with a temporary error and records the rest.
type failNth struct {
	recordingEnqueuer
	n, calls int
}

func (f *failNth) Enqueue(ctx context.Context, s *ingress.Submission) error {
	f.mu.Lock()
	f.calls++
	fail := f.calls == f.n
	f.mu.Unlock()
	if fail {
		return ingress.Temporary(errors.New("publish timed out"))
	}
	return f.recordingEnqueuer.Enqueue(ctx, s)
}

// TestRetryKeepsReceiptIDs: queueing fails for the second of two routes, so
// the sender gets 451 and sends the message again. The retry gets the ids
// of the first try: the route queued then is queued again under the same
// id (which the queue and the receivers drop), never under a new one.
func TestRetryKeepsReceiptIDs(t *testing.T) {
	enq := &failNth{n: 2}
	ts := startServer(t, func(c *Config) { c.Enqueuer = enq; c.Dedup = &memDedup{m: map[string]string{}} })
	c := ts.dial(t, true)
	to := []string{"invoices@in.example.net", "alerts@in.example.net"}
	if _, err := send(c, "a@vendor.example", to, []byte(simpleMessage)); smtpCode(err) != 451 {
		t.Fatalf("first try: %v, want 451", err)
	}
	first := enq.all()
	if len(first) != 1 {
		t.Fatalf("%d submissions after the first try, want 1", len(first))
	}
	_ = c.Reset()
	reply, err := send(c, "a@vendor.example", to, []byte(simpleMessage))
	if err != nil {
		t.Fatal(err)
	}
	all := enq.all()
	if len(all) != 3 || all[1].ID != first[0].ID || all[1].Route != first[0].Route || all[2].ID == first[0].ID {
		t.Fatalf("submissions %v %v %v", all[0], all[1], all[2])
	}
	if want := "2.0.0 " + all[1].ID + " " + all[2].ID; reply != want {
		t.Errorf("reply %q, want %q", reply, want)
	}
	// Another sender's identical bytes are another delivery.
	_ = c.Reset()
	if _, err := send(c, "b@vendor.example", to[:1], []byte(simpleMessage)); err != nil {
		t.Fatal(err)
	}
	if last := enq.all()[3]; last.ID == first[0].ID {
		t.Error("a message from another sender got the first message's id")
	}
}

// TestNonStandardMailAccepted: a header line without a colon and an
// attachment that is not valid base64 are defects, not refusals; the
// receipt's raw_sha256 covers the bytes as sent.
func TestNonStandardMailAccepted(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial(t, true)
	for _, f := range []string{"stray-header-lines", "bad-transfer-encoding"} {
		raw, err := os.ReadFile("testdata/corpus/" + f + ".eml")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := send(c, "billing@vendor.example", []string{"invoices@in.example.net"}, raw); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		subs := ts.enq.all()
		sub := subs[len(subs)-1]
		if sub.RawSHA256 != sha256Digest(raw) || sub.RawSize != int64(len(raw)) {
			t.Errorf("%s: raw_sha256/raw_size do not cover the bytes sent", f)
		}
		var m payloadView
		if err := json.Unmarshal(sub.Payload, &m); err != nil {
			t.Fatal(err)
		}
		if len(m.Defects) == 0 {
			t.Errorf("%s: no defects recorded", f)
		}
		for _, a := range m.Attachments {
			if a.Size == 0 {
				t.Errorf("%s: attachment %s stored with size 0", f, a.Filename)
			}
		}
	}
}

// lookupRoutes is a RouteLookup over a map, counting its calls.
type lookupRoutes struct {
	routes map[string]Route
	calls  atomic.Int64
}

func (l *lookupRoutes) MailRoute(addr string) (Route, bool) {
	l.calls.Add(1)
	r, ok := l.routes[strings.ToLower(addr)]
	return r, ok
}

// TestMoreRoutes: recipients the configured routes do not serve are
// looked up in MoreRoutes; the configured ones win; two recipients of a
// looked-up route make one submission; without configured routes the
// server still starts.
func TestMoreRoutes(t *testing.T) {
	dyn := Route{Tenant: "beta", Name: "orders", Recipients: []string{"po@beta.test", "orders@beta.test"}}
	more := &lookupRoutes{routes: map[string]Route{
		"po@beta.test": dyn, "orders@beta.test": dyn,
		"invoices@in.example.net": {Tenant: "beta", Name: "stolen"},
		"bad@beta.test":           {Tenant: "Not A Name", Name: "x"},
	}}
	ts := startServer(t, func(c *Config) { c.MoreRoutes = more })
	c := ts.dial(t, true)
	if _, err := send(c, "billing@vendor.example", []string{"PO@beta.test", "orders@beta.test", "invoices@in.example.net"}, []byte(simpleMessage)); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, s := range ts.enq.all() {
		var src struct {
			RcptTo []string `json:"rcpt_to"`
		}
		if err := json.Unmarshal(s.Source, &src); err != nil {
			t.Fatal(err)
		}
		got[s.Tenant+"/"+s.Route] = strings.Join(src.RcptTo, ",")
	}
	want := map[string]string{"beta/orders": "PO@beta.test,orders@beta.test", "acme/invoices": "invoices@in.example.net"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("submissions %v, want %v", got, want)
	}
	if err := c.Mail("billing@vendor.example", nil); err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"nobody@beta.test", "bad@beta.test"} {
		if err := c.Rcpt(r, nil); smtpCode(err) != 550 {
			t.Errorf("RCPT %s: %v, want 550", r, err)
		}
	}
	if more.calls.Load() == 0 {
		t.Error("MoreRoutes was never asked")
	}

	only := startServer(t, func(c *Config) { c.Routes, c.MoreRoutes = nil, more })
	if _, err := send(only.dial(t, true), "billing@vendor.example", []string{"po@beta.test"}, []byte(simpleMessage)); err != nil {
		t.Errorf("with MoreRoutes alone: %v", err)
	}
}
