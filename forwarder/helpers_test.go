package forwarder

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/sealpost/sealpost/audit/entry"
	"github.com/sealpost/sealpost/ingress"
	"github.com/sealpost/sealpost/keyring/kms"
	"github.com/sealpost/sealpost/queue"
	"github.com/sealpost/sealpost/signer"
)

// staticRoutes is a map of routes keyed by "tenant/name".
type staticRoutes struct {
	mu sync.Mutex
	m  map[string]Route
}

func (r *staticRoutes) Route(tenant, name string) (Route, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rt, ok := r.m[tenant+"/"+name]
	return rt, ok
}

func (r *staticRoutes) set(rt Route) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[string]Route{}
	}
	r.m[rt.Tenant+"/"+rt.Name] = rt
}

// staticKeys returns fixed keys derived from seeds.
type staticKeys struct {
	current  signer.PrivateKey
	previous []signer.PrivateKey
}

func (k *staticKeys) SigningKeys(context.Context, time.Time) (signer.PrivateKey, []signer.PrivateKey, error) {
	return k.current, k.previous, nil
}

func testKey(t testing.TB, seed string) signer.PrivateKey {
	t.Helper()
	s := sha256.Sum256([]byte(seed))
	k, err := signer.NewPrivateKeyFromSeed(s[:])
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// memAudit keeps entries in memory; fail makes Append fail, failAction
// makes it fail for one action.
type memAudit struct {
	mu         sync.Mutex
	entries    []entry.Entry
	fail       bool
	failAction string
}

func (a *memAudit) AppendAll(_ context.Context, es ...entry.Entry) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, e := range es {
		if a.fail || e.Action == a.failAction {
			return errAuditDown
		}
	}
	a.entries = append(a.entries, es...)
	return nil
}

var errAuditDown = errors.New("audit log unavailable")

func (a *memAudit) actions(target string) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for _, e := range a.entries {
		if e.Target == target {
			out = append(out, e.Action)
		}
	}
	return out
}

// env is a worker on a real embedded JetStream with the local KMS.
type env struct {
	t      testing.TB
	conn   *queue.Conn
	sealer *kms.Envelope
	routes *staticRoutes
	keys   *staticKeys
	audit  *memAudit
	w      *Worker
	cfg    Config
	// queued is what the queue keeps of each submission between handle
	// calls.
	mu     sync.Mutex
	queued map[string]queued
}

// queued is a submission's state in the queue: what a copy handed out
// next carries.
type queued struct {
	attempt     int
	due         time.Time
	redelivered bool
}

func newEnv(t testing.TB, mod func(*Config)) *env {
	t.Helper()
	ctx := context.Background()
	conn, err := queue.Open(ctx, queue.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	local, err := kms.OpenLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	sealer, err := kms.New(kms.Config{KEK: local})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, conn: conn, sealer: sealer, routes: &staticRoutes{}, audit: &memAudit{}, queued: map[string]queued{},
		keys: &staticKeys{current: testKey(t, "current")}}
	cfg := Config{
		Routes: e.routes, Keys: e.keys, Sealer: sealer, Auditor: e.audit,
		AllowNets: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")},
		Jitter:    -1,
	}
	if cfg.Receipts, err = conn.Stream(ctx, ReceiptsStream); err != nil {
		t.Fatal(err)
	}
	if cfg.EndpointState, err = conn.KV(ctx, EndpointStateBucket); err != nil {
		t.Fatal(err)
	}
	if cfg.DeadLetters, err = conn.Stream(ctx, DeadLetterStream); err != nil {
		t.Fatal(err)
	}
	if cfg.Attempts, err = conn.Stream(ctx, AttemptsStream); err != nil {
		t.Fatal(err)
	}
	if mod != nil {
		mod(&cfg)
	}
	e.cfg = cfg
	if e.w, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	return e
}

// receiver is a TLS webhook receiver that records requests and answers
// with what answer returns.
type receiver struct {
	srv    *httptest.Server
	mu     sync.Mutex
	reqs   []received
	answer func(w http.ResponseWriter, r *http.Request, n int)
}

type received struct {
	header http.Header
	body   []byte
}

func newReceiver(t testing.TB, answer func(w http.ResponseWriter, r *http.Request, n int)) *receiver {
	return newReceiverOpts(t, answer, true)
}

func newReceiverOpts(t testing.TB, answer func(w http.ResponseWriter, r *http.Request, n int), h2 bool) *receiver {
	t.Helper()
	rc := &receiver{answer: answer}
	rc.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := make([]byte, 0, 1024)
		buf := make([]byte, 32<<10)
		for {
			n, err := r.Body.Read(buf)
			body = append(body, buf[:n]...)
			if err != nil {
				break
			}
		}
		rc.mu.Lock()
		rc.reqs = append(rc.reqs, received{header: r.Header.Clone(), body: body})
		n := len(rc.reqs)
		rc.mu.Unlock()
		if rc.answer == nil {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		rc.answer(w, r, n)
	}))
	rc.srv.EnableHTTP2 = h2
	rc.srv.StartTLS()
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) requests() []received {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]received(nil), rc.reqs...)
}

// route registers a route to rc's URL and makes the worker trust rc.
func (e *env) route(name string, rc *receiver, mod func(*Route)) Route {
	rt := Route{Tenant: "acme", Name: name, Endpoint: Endpoint{URL: rc.srv.URL + "/hook"}}
	if mod != nil {
		mod(&rt)
	}
	e.routes.set(rt)
	e.trust(rc)
	return rt
}

// trust rebuilds the worker's client with rc's certificate as a root.
// (Every httptest TLS server uses the same certificate.)
func (e *env) trust(rc *receiver) {
	if e.w.cfg.RootCAs != nil {
		return
	}
	pool := x509.NewCertPool()
	pool.AddCert(rc.srv.Certificate())
	e.w.cfg.RootCAs = pool
	e.w.client = newClient(e.w.cfg, e.w.guard, nil)
}

var seq int

func submission(t testing.TB, route string) *ingress.Submission {
	t.Helper()
	seq++
	now := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC).Add(time.Duration(seq) * time.Millisecond)
	payload, _ := json.Marshal(map[string]any{"invoice": seq, "amount": "12.50", "note": "héllo"})
	return &ingress.Submission{
		ID: ingress.NewID(now), Tenant: "acme", Route: route, Channel: ingress.ChannelHTTPS,
		ReceivedAt: now, Source: json.RawMessage(`{"remote_addr":"192.0.2.1","api_key_id":"k1"}`),
		Payload: payload, RawSHA256: signer.RawDigest(payload), RawSize: int64(len(payload)),
	}
}

// publisher returns a publisher on the env's queue, closed with the test.
func (e *env) publisher() *queue.Publisher {
	e.t.Helper()
	p, err := e.conn.Publisher(e.sealer, queue.PublisherConfig{})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(p.Close)
	return p
}

// fakeDelivery records what the worker decided for one handle call.
type fakeDelivery struct {
	acked   bool
	retries []time.Duration
}

func (d *fakeDelivery) decision() string {
	switch {
	case d.acked:
		return "ack"
	case len(d.retries) > 0:
		return "retry"
	}
	return "none"
}

// handle hands s to the worker the way the queue would: with the attempt
// count and due time its queued copy carries, marked redelivered when an
// earlier copy was handed out and not requeued (acked, or a retry that
// changed nothing). It records the outcome in d and keeps what the queue
// would keep.
func (e *env) handle(ctx context.Context, s *ingress.Submission, d *fakeDelivery) {
	e.mu.Lock()
	q := e.queued[s.ID]
	e.mu.Unlock()
	out := e.w.Handle(ctx, []*queue.Delivery{{Submission: s, Attempt: q.attempt, Due: q.due, Redelivered: q.redelivered}})[0]
	switch {
	case !out.IsRetry():
		d.acked = true
		q.redelivered = true // any later copy is a duplicate
	case out.Attempts() == q.attempt:
		// The whole message goes back as it is.
		d.retries = append(d.retries, out.Delay())
		q.redelivered = true
	default:
		// Requeued alone with its new schedule.
		d.retries = append(d.retries, out.Delay())
		q = queued{attempt: out.Attempts(), due: e.w.cfg.Now().Add(out.Delay())}
	}
	e.mu.Lock()
	e.queued[s.ID] = q
	e.mu.Unlock()
}
