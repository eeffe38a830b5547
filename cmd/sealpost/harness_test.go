package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gowebpki/jcs"

	"github.com/sealpost/sealpost/ingress/httpin"
)

// syncBuffer is an io.Writer safe for the gateway's goroutines and the test.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testGateway is a gateway started through run() with a generated config.
type testGateway struct {
	t        testing.TB
	dataDir  string
	cfgFile  string
	token    string
	admin    string // admin token
	https    string // host:port
	smtp     string
	adminURL string
	client   *http.Client
	stdout   *syncBuffer
	stderr   *syncBuffer
	cancel   context.CancelFunc
	done     chan error
}

type gatewayOpts struct {
	dataDir  string
	endpoint string
	extra    string // more YAML at top level
	logLevel string // default debug
	natsURL  string
	// natsReplicas is nats.replicas with natsURL; default 1.
	natsReplicas int
	token        string // reuse API key across restarts
	admin        string
	// smtp is the smtp section; default "smtp:\n  auth: \"off\"\n", so
	// that no DNS query leaves the machine.
	smtp string
	// adminExtra is more YAML inside the admin section, indented.
	adminExtra string
	// noRecipients leaves the declared route without mail recipients.
	noRecipients bool
}

var listenLine = regexp.MustCompile(`(?m)^\s+(https|smtp|admin)\s+listening on (\S+)`)

// startGateway writes a config for o and runs `sealpost serve --dev
// --config` until the test ends or stop is called.
func startGateway(t testing.TB, o gatewayOpts) *testGateway {
	t.Helper()
	g := launchGateway(t, o)
	g.awaitListening()
	return g
}

// launchGateway is startGateway without waiting for the listeners, so that
// several gateways can start at the same moment.
func launchGateway(t testing.TB, o gatewayOpts) *testGateway {
	t.Helper()
	if o.dataDir == "" {
		o.dataDir = t.TempDir()
	}
	if o.logLevel == "" {
		o.logLevel = "debug"
	}
	if o.smtp == "" {
		o.smtp = "smtp:\n  auth: \"off\"\n"
	}
	g := &testGateway{t: t, dataDir: o.dataDir, stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan error, 1)}
	var keyHash, adminHash string
	var err error
	if o.token == "" {
		if o.token, keyHash, err = httpin.NewToken("acme-test"); err != nil {
			t.Fatal(err)
		}
	} else {
		sum := sha256.Sum256([]byte(o.token))
		keyHash = fmt.Sprintf("%x", sum)
	}
	if o.admin == "" {
		if o.admin, adminHash, err = httpin.NewToken("admin"); err != nil {
			t.Fatal(err)
		}
	} else {
		sum := sha256.Sum256([]byte(o.admin))
		adminHash = fmt.Sprintf("%x", sum)
	}
	g.token, g.admin = o.token, o.admin
	nats := ""
	if o.natsURL != "" {
		nats = "nats:\n  url: " + o.natsURL + "\n  single_instance: true\n"
		if o.natsReplicas > 0 {
			nats += fmt.Sprintf("  replicas: %d\n", o.natsReplicas)
		}
	}
	cfg := fmt.Sprintf(`data_dir: %s
log_level: %s
listen:
  https: 127.0.0.1:0
  smtp: 127.0.0.1:0
  admin: 127.0.0.1:0
%sforward:
  allow_networks: ["127.0.0.0/8"]
  breaker_cooldown: 1s
  schedule: ["0s", "300ms", "300ms", "300ms", "300ms", "300ms", "300ms", "300ms", "300ms", "300ms"]
admin:
  token_sha256: %s
%s%s
%s
tenants:
  - name: acme
    api_keys:
      - id: acme-test
        sha256: %s
    routes:
      - name: invoices
        endpoint: %s
        allow_http: true
`, o.dataDir, o.logLevel, nats, adminHash, o.adminExtra, o.extra, o.smtp, keyHash, o.endpoint)
	if !o.noRecipients {
		cfg += "        recipients: [\"invoices@acme.test\"]\n"
	}
	g.cfgFile = filepath.Join(t.TempDir(), "sealpost.yaml")
	if err := os.WriteFile(g.cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g.cancel = cancel
	go func() {
		g.done <- run(ctx, []string{"serve", "--dev", "--config", g.cfgFile}, func(string) string { return "" }, g.stdout, g.stderr)
	}()
	t.Cleanup(func() { g.stop() })
	return g
}

// awaitListening waits until the gateway announced its listeners and
// prepares its client.
func (g *testGateway) awaitListening() {
	t := g.t
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		found := map[string]string{}
		for _, m := range listenLine.FindAllStringSubmatch(g.stdout.String(), -1) {
			found[m[1]] = m[2]
		}
		if len(found) == 3 {
			g.https, g.smtp, g.adminURL = found["https"], found["smtp"], "http://"+found["admin"]
			break
		}
		select {
		case err := <-g.done:
			t.Fatalf("gateway exited: %v\nstderr:\n%s", err, g.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway did not start; stdout:\n%s\nstderr:\n%s", g.stdout.String(), g.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	pool := x509.NewCertPool()
	pem, err := os.ReadFile(filepath.Join(g.dataDir, "dev-cert.pem"))
	if err != nil || !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("dev certificate: %v", err)
	}
	g.client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, MaxIdleConnsPerHost: 64}}
}

// stop shuts the gateway down gracefully and returns run's error.
func (g *testGateway) stop() error {
	if g.cancel == nil {
		return nil
	}
	g.cancel()
	g.cancel = nil
	select {
	case err := <-g.done:
		if g.t.Failed() {
			lines := strings.Split(g.stderr.String(), "\n")
			if len(lines) > 80 {
				lines = lines[len(lines)-80:]
			}
			g.t.Logf("gateway log (tail):\n%s", strings.Join(lines, "\n"))
		}
		if strings.Contains(g.stderr.String(), `"level":"ERROR"`) && !g.t.Failed() {
			g.t.Logf("errors were logged:\n%s", grepLines(g.stderr.String(), `"level":"ERROR"`))
		}
		return err
	case <-time.After(60 * time.Second):
		g.t.Fatalf("gateway did not stop within 60s; its goroutines:\n%s", sealpostStacks())
		return nil
	}
}

// sealpostStacks returns the stacks of the goroutines running sealpost
// code, to show where a shutdown hangs.
func sealpostStacks() string {
	buf := make([]byte, 8<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "sealpost/sealpost/") && !strings.Contains(g, "testing.tRunner") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}

func grepLines(s, sub string) string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), sub) {
			out = append(out, sc.Text())
		}
	}
	return strings.Join(out, "\n")
}

// ingest posts body to a route and returns the status and decoded answer.
func (g *testGateway) ingest(route, body string, hdr map[string]string) (int, map[string]any, http.Header) {
	g.t.Helper()
	req, _ := http.NewRequest("POST", "https://"+g.https+"/v1/ingest/"+route, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+g.token)
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := g.client.Do(req)
	if err != nil {
		g.t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&doc)
	return resp.StatusCode, doc, resp.Header
}

func (g *testGateway) get(path string) (int, []byte) {
	g.t.Helper()
	resp, err := g.client.Get("https://" + g.https + path)
	if err != nil {
		g.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// jwks fetches the gateway's JWKS and decodes the Ed25519 keys by kid,
// with nothing but encoding/json and crypto/ed25519.
func (g *testGateway) jwks() map[string]ed25519.PublicKey {
	g.t.Helper()
	code, body := g.get("/.well-known/jwks.json")
	if code != 200 {
		g.t.Fatalf("jwks: %d %s", code, body)
	}
	var doc struct {
		Keys []struct{ Kty, Crv, X, Kid string } `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		g.t.Fatal(err)
	}
	out := map[string]ed25519.PublicKey{}
	for _, k := range doc.Keys {
		x, err := base64.RawURLEncoding.DecodeString(k.X)
		if k.Kty != "OKP" || k.Crv != "Ed25519" || err != nil || len(x) != ed25519.PublicKeySize {
			g.t.Fatalf("bad JWK %+v", k)
		}
		out[k.Kid] = ed25519.PublicKey(x)
	}
	return out
}

// delivery is one webhook request as the receiver saw it.
type delivery struct {
	id, ts, sig string
	body        []byte
	at          time.Time
}

// receiver is a webhook endpoint with knobs: it fails the first failFirst
// requests with failStatus, and records everything.
type receiver struct {
	srv        *httptest.Server
	mu         sync.Mutex
	got        []delivery
	ids        map[string]bool
	failFirst  atomic.Int64
	failStatus int
	failedIDs  []string // webhook-ids of the requests failed on purpose
	calls      atomic.Int64
	notify     chan struct{}
}

func newReceiver(t testing.TB) *receiver {
	r := &receiver{failStatus: http.StatusServiceUnavailable, notify: make(chan struct{}, 1), ids: map[string]bool{}}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		n := r.calls.Add(1)
		body, _ := io.ReadAll(req.Body)
		if n <= r.failFirst.Load() {
			r.mu.Lock()
			r.failedIDs = append(r.failedIDs, req.Header.Get("webhook-id"))
			r.mu.Unlock()
			w.WriteHeader(r.failStatus)
			return
		}
		r.mu.Lock()
		r.got = append(r.got, delivery{id: req.Header.Get("webhook-id"), ts: req.Header.Get("webhook-timestamp"),
			sig: req.Header.Get("webhook-signature"), body: body, at: time.Now()})
		r.ids[req.Header.Get("webhook-id")] = true
		r.mu.Unlock()
		select {
		case r.notify <- struct{}{}:
		default: // a waiter is already due to look
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) url() string { return r.srv.URL + "/hook" }

// waitFor blocks until the receiver has n deliveries with distinct ids.
func (r *receiver) waitFor(t testing.TB, n int, timeout time.Duration) []delivery {
	t.Helper()
	deadline := time.After(timeout)
	for {
		r.mu.Lock()
		distinct := len(r.ids)
		var got []delivery
		if distinct >= n {
			got = append([]delivery(nil), r.got...)
		}
		r.mu.Unlock()
		if distinct >= n {
			return got
		}
		select {
		case <-r.notify:
		case <-deadline:
			t.Fatalf("receiver got %d distinct deliveries, want %d", distinct, n)
		}
	}
}

// checkDelivery verifies a webhook independently of sealpost's own code:
// the v1a signature over "{id}.{ts}.{body}" and the receipt signature over
// JCS(receipt) with crypto/ed25519, and payload_sha256 with jcs + sha256.
func checkDelivery(t testing.TB, d delivery, keys map[string]ed25519.PublicKey) map[string]any {
	t.Helper()
	ts, err := strconv.ParseInt(d.ts, 10, 64)
	if err != nil || ts < time.Now().Add(-5*time.Minute).Unix() || ts > time.Now().Add(time.Minute).Unix() {
		t.Fatalf("webhook-timestamp %q", d.ts)
	}
	signed := []byte(d.id + "." + d.ts + "." + string(d.body))
	var v1aOK bool
	for _, part := range strings.Fields(d.sig) {
		ver, sig, ok := strings.Cut(part, ",")
		if !ok || ver != "v1a" {
			continue
		}
		raw, err := base64.StdEncoding.DecodeString(sig)
		if err != nil {
			t.Fatalf("v1a signature not base64: %q", sig)
		}
		for _, k := range keys {
			if ed25519.Verify(k, signed, raw) {
				v1aOK = true
			}
		}
	}
	if !v1aOK {
		t.Fatalf("no v1a signature verifies (header %q)", d.sig)
	}
	var env struct {
		Receipt   json.RawMessage `json:"receipt"`
		Payload   json.RawMessage `json:"payload"`
		Signature struct{ Alg, Kid, Sig string }
	}
	if err := json.Unmarshal(d.body, &env); err != nil {
		t.Fatal(err)
	}
	canon, err := jcs.Transform(env.Receipt)
	if err != nil {
		t.Fatal(err)
	}
	var receipt map[string]any
	if err := json.Unmarshal(env.Receipt, &receipt); err != nil {
		t.Fatal(err)
	}
	key := keys[env.Signature.Kid]
	sig, err := base64.RawURLEncoding.DecodeString(env.Signature.Sig)
	if key == nil || err != nil || env.Signature.Alg != "Ed25519" || receipt["kid"] != env.Signature.Kid {
		t.Fatalf("signature block %+v, receipt kid %v", env.Signature, receipt["kid"])
	}
	if !ed25519.Verify(key, canon, sig) {
		t.Fatal("receipt signature does not verify over JCS(receipt)")
	}
	pc, err := jcs.Transform(env.Payload)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(pc)
	if receipt["payload_sha256"] != base64.RawURLEncoding.EncodeToString(sum[:]) {
		t.Fatalf("payload_sha256 %v does not match the payload", receipt["payload_sha256"])
	}
	if receipt["id"] != d.id {
		t.Fatalf("webhook-id %q, receipt id %v", d.id, receipt["id"])
	}
	return receipt
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// metric returns the value of a sample of the gateway's /metrics, the
// sample given as it appears there (name and labels), or -1 when absent.
func (g *testGateway) metric(sample string) float64 {
	g.t.Helper()
	resp, err := http.Get(g.adminURL + "/metrics")
	if err != nil {
		g.t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if ok && name == sample {
			v, err := strconv.ParseFloat(value, 64)
			if err != nil {
				g.t.Fatalf("metric %s: %v", sample, err)
			}
			return v
		}
	}
	return -1
}
