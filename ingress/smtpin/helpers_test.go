package smtpin

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sealpost/sealpost/ingress"
)

// testCert is a self-signed certificate for localhost and 127.0.0.1.
type testCert struct {
	server  *tls.Config
	pool    *x509.CertPool
	certPEM []byte
}

var (
	certOnce sync.Once
	certVal  *testCert
)

func newTestCert(t testing.TB) *testCert {
	t.Helper()
	certOnce.Do(func() {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(1),
			Subject:      pkix.Name{CommonName: "localhost"},
			DNSNames:     []string{"localhost"},
			IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			panic(err)
		}
		leaf, _ := x509.ParseCertificate(der)
		pool := x509.NewCertPool()
		pool.AddCert(leaf)
		certVal = &testCert{
			server:  &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}}},
			pool:    pool,
			certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		}
	})
	return certVal
}

// writeCAFile writes the test certificate for outside clients.
func (c *testCert) writeCAFile(t testing.TB) string {
	p := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(p, c.certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// recordingEnqueuer keeps every submission; err, when set, is returned instead.
type recordingEnqueuer struct {
	mu   sync.Mutex
	subs []*ingress.Submission
	err  error
}

func (e *recordingEnqueuer) Enqueue(_ context.Context, s *ingress.Submission) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.err != nil {
		return e.err
	}
	e.subs = append(e.subs, s)
	return nil
}

func (e *recordingEnqueuer) all() []*ingress.Submission {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]*ingress.Submission(nil), e.subs...)
}

var _ ingress.Enqueuer = (*recordingEnqueuer)(nil)

// memBlobs is an in-memory BlobStore.
type memBlobs struct {
	mu  sync.Mutex
	m   map[string][]byte
	err error
}

func (b *memBlobs) PutBlob(_ context.Context, tenant, name string, data []byte) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return "", b.err
	}
	if b.m == nil {
		b.m = make(map[string][]byte)
	}
	ref := "blob:" + tenant + "/" + name
	b.m[ref] = append([]byte(nil), data...)
	return ref, nil
}

var _ BlobStore = (*memBlobs)(nil)

// fakeResolver answers DNS from maps; a missing name is NXDOMAIN, a name in
// fail is a temporary failure.
type fakeResolver struct {
	txt  map[string][]string
	ip   map[string][]string
	mx   map[string][]string
	ptr  map[string][]string // by address
	fail map[string]bool
}

func notFound(name string) error {
	return &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func (r *fakeResolver) LookupTXT(_ context.Context, name string) ([]string, error) {
	name = trimDot(name)
	if r.fail[name] {
		return nil, &net.DNSError{Err: "server misbehaving", Name: name, IsTemporary: true}
	}
	if v, ok := r.txt[name]; ok {
		return v, nil
	}
	return nil, notFound(name)
}

func (r *fakeResolver) LookupIPAddr(_ context.Context, name string) ([]net.IPAddr, error) {
	name = trimDot(name)
	v, ok := r.ip[name]
	if !ok {
		return nil, notFound(name)
	}
	var out []net.IPAddr
	for _, s := range v {
		out = append(out, net.IPAddr{IP: net.ParseIP(s)})
	}
	return out, nil
}

func (r *fakeResolver) LookupMX(_ context.Context, name string) ([]*net.MX, error) {
	name = trimDot(name)
	v, ok := r.mx[name]
	if !ok {
		return nil, notFound(name)
	}
	var out []*net.MX
	for _, h := range v {
		out = append(out, &net.MX{Host: h, Pref: 10})
	}
	return out, nil
}

func (r *fakeResolver) LookupAddr(_ context.Context, addr string) ([]string, error) {
	v, ok := r.ptr[addr]
	if !ok {
		return nil, notFound(addr)
	}
	return v, nil
}

func trimDot(s string) string {
	if len(s) > 0 && s[len(s)-1] == '.' {
		return s[:len(s)-1]
	}
	return s
}

// testServer is a running ingress on 127.0.0.1:0.
type testServer struct {
	addr  string
	srv   *Server
	enq   *recordingEnqueuer
	blobs *memBlobs
	cert  *testCert
	done  chan error
}

func testRoutes() []Route {
	return []Route{
		{Tenant: "acme", Name: "invoices", Recipients: []string{"invoices@in.example.net", "billing@in.example.net"}},
		{Tenant: "acme", Name: "alerts", Recipients: []string{"alerts@in.example.net"}},
		{Tenant: "globex", Name: "orders", Recipients: []string{"orders@globex.example.net"}},
		{Tenant: "acme", Name: "partners", Recipients: []string{"partners@in.example.net"},
			AllowedSenderDomains: []string{"partner.example"}},
		{Tenant: "acme", Name: "signed", Recipients: []string{"signed@in.example.net"}, RequireDKIM: true},
	}
}

func startServer(t testing.TB, mutate func(*Config)) *testServer {
	t.Helper()
	cert := newTestCert(t)
	ts := &testServer{enq: &recordingEnqueuer{}, blobs: &memBlobs{}, cert: cert, done: make(chan error, 1)}
	cfg := Config{
		Hostname:  "mx.test",
		TLSConfig: cert.server,
		Routes:    testRoutes(),
		Enqueuer:  ts.enq,
		Blobs:     ts.blobs,
		Resolver:  &fakeResolver{},
		Now:       func() time.Time { return time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC) },
	}
	if mutate != nil {
		mutate(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.addr, ts.srv = ln.Addr().String(), srv
	go func() { ts.done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-ts.done
	})
	return ts
}

// clientTLS is the client side TLS configuration trusting the test cert.
func (ts *testServer) clientTLS() *tls.Config {
	return &tls.Config{RootCAs: ts.cert.pool, ServerName: "localhost"}
}

// dial connects and says EHLO; with startTLS it upgrades to TLS (the
// client then introduces itself as "localhost").
func (ts *testServer) dial(t testing.TB, startTLS bool) *smtp.Client {
	t.Helper()
	if startTLS {
		c, err := ts.dialTLS(ts.clientTLS())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	c, err := smtp.Dial(ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	return c
}

// dialTLS connects, issues STARTTLS with cfg and completes the handshake.
func (ts *testServer) dialTLS(cfg *tls.Config) (*smtp.Client, error) {
	conn, err := net.Dial("tcp", ts.addr)
	if err != nil {
		return nil, err
	}
	c, err := smtp.NewClientStartTLS(conn, cfg)
	if err != nil {
		return nil, err
	}
	if err := c.Noop(); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// send runs one transaction and returns the DATA answer text or the first
// error.
func send(c *smtp.Client, from string, to []string, msg []byte) (string, error) {
	if err := c.Mail(from, nil); err != nil {
		return "", err
	}
	for _, r := range to {
		if err := c.Rcpt(r, nil); err != nil {
			return "", err
		}
	}
	w, err := c.Data()
	if err != nil {
		return "", err
	}
	if _, err := w.Write(msg); err != nil {
		return "", err
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return "", err
	}
	return resp.StatusText, nil
}

// smtpCode returns the SMTP code of err, or 0.
func smtpCode(err error) int {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

const simpleMessage = "From: Vendor <billing@vendor.example>\r\n" +
	"To: invoices@in.example.net\r\n" +
	"Subject: Invoice 42\r\n" +
	"Message-ID: <42@vendor.example>\r\n" +
	"Date: Sun, 22 Nov 2026 10:00:00 +0000\r\n" +
	"\r\n" +
	"Please find the invoice.\r\n"

// enhCode returns the enhanced status code of err as "x.y.z", or "".
func enhCode(err error) string {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return fmt.Sprintf("%d.%d.%d", se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
	}
	return ""
}
