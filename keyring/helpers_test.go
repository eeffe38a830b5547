package keyring

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/sealpost/sealpost/audit/entry"
	"github.com/sealpost/sealpost/keyring/kms"
	"github.com/sealpost/sealpost/queue"
	"github.com/sealpost/sealpost/signer"
)

// clock is a controllable clock shared by the instances of a test.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock(t time.Time) *clock { return &clock{t: t.UTC()} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t.UTC()
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// detRand is a deterministic key source: SHA-256 of a label and a counter.
type detRand struct {
	mu    sync.Mutex
	label string
	n     uint64
	buf   []byte
}

func (r *detRand) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for len(r.buf) < len(p) {
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], r.n)
		r.n++
		sum := sha256.Sum256(append([]byte(r.label), b[:]...))
		r.buf = append(r.buf, sum[:]...)
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// fixedSeeds yields the given 32-byte seeds in order, then fails.
type fixedSeeds struct {
	mu    sync.Mutex
	seeds [][]byte
}

func (f *fixedSeeds) Read(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.seeds) == 0 {
		return 0, errNoSeeds
	}
	n := copy(p, f.seeds[0])
	f.seeds = f.seeds[1:]
	return n, nil
}

var errNoSeeds = jsonError("no more seeds")

type jsonError string

func (e jsonError) Error() string { return string(e) }

// memAuditor records audit entries.
type memAuditor struct {
	mu      sync.Mutex
	entries []entry.Entry
}

func (a *memAuditor) Append(_ context.Context, e entry.Entry) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.entries = append(a.entries, e)
	return nil
}

func (a *memAuditor) actions() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for _, e := range a.entries {
		out = append(out, e.Action+" "+e.Actor+" "+e.Outcome)
	}
	return out
}

// openConn starts an embedded JetStream server in dir. With listen it opens
// a client port so that a second connection can share the server.
func openConn(t testing.TB, dir string, listen bool) *queue.Conn {
	t.Helper()
	cfg := queue.Config{DataDir: dir}
	if listen {
		cfg.ListenAddr = freeAddr(t)
	}
	c, err := queue.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// dialConn connects to the server of first, as another instance would.
func dialConn(t testing.TB, first *queue.Conn) *queue.Conn {
	t.Helper()
	c, err := queue.Open(context.Background(), queue.Config{URL: first.ClientURL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return "127.0.0.1:" + strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

func openKV(t testing.TB, c *queue.Conn) *queue.KV {
	t.Helper()
	kv, err := c.KV(context.Background(), queue.KVConfig{Bucket: "KEYRING", History: 16})
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// kvStore is a KEYRING bucket as the keyring's Store, adapted as
// cmd/sealpost adapts it.
func kvStore(kv *queue.KV) Store { return MapStoreErrors(kv, queue.ErrNotFound, queue.ErrConflict) }

func newSealer(t testing.TB, dir string) *kms.Envelope {
	t.Helper()
	kek, err := kms.OpenLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	env, err := kms.New(kms.Config{KEK: kek})
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// env is one test deployment: a NATS server, a KMS and a clock.
type env struct {
	t      testing.TB
	conn   *queue.Conn
	kv     *queue.KV
	sealer *kms.Envelope
	clock  *clock
	rand   *detRand
	audit  *memAuditor
}

func newEnv(t testing.TB, start time.Time) *env {
	t.Helper()
	conn := openConn(t, t.TempDir(), false)
	return &env{
		t: t, conn: conn, kv: openKV(t, conn), sealer: newSealer(t, t.TempDir()),
		clock: newClock(start), rand: &detRand{label: t.Name()}, audit: &memAuditor{},
	}
}

func (e *env) config() Config {
	return Config{
		Store: kvStore(e.kv), Sealer: e.sealer, Auditor: e.audit, Now: e.clock.Now,
		CheckInterval: 20 * time.Millisecond, Rand: e.rand,
	}
}

func (e *env) keyring(mod ...func(*Config)) *Keyring {
	e.t.Helper()
	c := e.config()
	for _, m := range mod {
		m(&c)
	}
	k, err := New(context.Background(), c)
	if err != nil {
		e.t.Fatal(err)
	}
	return k
}

func date(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t.UTC()
}

// signAt signs a receipt at now with the keyring's current key and returns
// the envelope.
func signAt(t testing.TB, k *Keyring, now time.Time) ([]byte, signer.PrivateKey, []signer.PrivateKey) {
	t.Helper()
	cur, prev, err := k.SigningKeys(context.Background(), now)
	if err != nil {
		t.Fatalf("signing keys at %s: %v", now.Format(time.RFC3339), err)
	}
	return signWith(t, cur, now), cur, prev
}

func signWith(t testing.TB, key signer.PrivateKey, now time.Time) []byte {
	t.Helper()
	r := signer.Receipt{
		ID: "rcpt_test", Tenant: "acme", Route: "invoices", Channel: "https",
		ReceivedAt: signer.FormatTime(now), SignedAt: signer.FormatTime(now),
		Source: json.RawMessage(`{}`), RawSHA256: signer.RawDigest([]byte("raw")), RawSize: 3,
	}
	env, err := signer.Sign(r, json.RawMessage(`{"hello":"world"}`), key)
	if err != nil {
		t.Fatal(err)
	}
	return env
}
