package audit

import (
	"context"
	"crypto/sha256"
	"fmt"
	"testing"
	"time"

	"github.com/sealpost/sealpost/queue"
	"github.com/sealpost/sealpost/signer"
)

const testOrigin = "sealpost.test/audit"

// testKeys is a fixed key source: a current key and optional previous ones.
type testKeys struct {
	cur  signer.PrivateKey
	prev []signer.PrivateKey
}

func (k *testKeys) SigningKeys(context.Context, time.Time) (signer.PrivateKey, []signer.PrivateKey, error) {
	return k.cur, k.prev, nil
}

func (k *testKeys) keySet() *signer.KeySet {
	ks := &signer.KeySet{}
	for _, p := range append([]signer.PrivateKey{k.cur}, k.prev...) {
		ks.Keys = append(ks.Keys, signer.PublicKey{KID: p.KID, Key: p.Public()})
	}
	return ks
}

func newTestKey(t testing.TB, name string) signer.PrivateKey {
	t.Helper()
	seed := sha256.Sum256([]byte("audit test key " + name))
	k, err := signer.NewPrivateKeyFromSeed(seed[:])
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// openConn starts an embedded JetStream server with a client port, so tests
// can also reach it through nats.go.
func openConn(t testing.TB) *queue.Conn {
	t.Helper()
	ctx := context.Background()
	c, err := queue.Open(ctx, queue.Config{DataDir: t.TempDir(), ListenAddr: "127.0.0.1:-1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// plainStreams declares an entries and a checkpoints stream named after
// prefix without the deny flags, so tests can tamper with copies.
func plainStreams(t testing.TB, c *queue.Conn, prefix string) (entries, cps *queue.Stream) {
	t.Helper()
	ctx := context.Background()
	var err error
	entries, err = c.Stream(ctx, queue.StreamConfig{Name: prefix, Subjects: []string{subjectOf(prefix)}})
	if err != nil {
		t.Fatal(err)
	}
	cps, err = c.Stream(ctx, queue.StreamConfig{Name: prefix + "_CP", Subjects: []string{subjectOf(prefix) + "_cp"}})
	if err != nil {
		t.Fatal(err)
	}
	return entries, cps
}

func subjectOf(prefix string) string { return "t." + prefix }

func openLog(t testing.TB, entries, cps *queue.Stream, keys KeySource, mod func(*Config)) *Log {
	t.Helper()
	cfg := Config{Stream: entries, Checkpoints: cps, Subject: subjectOf(entries.Name()),
		CheckpointSubject: subjectOf(entries.Name()) + "_cp", Keys: keys, Origin: testOrigin,
		Now: func() time.Time { return time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC) }}
	if mod != nil {
		mod(&cfg)
	}
	l, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close(context.Background()) })
	return l
}

// testEntry returns a distinct, valid entry.
func testEntry(i int, tenant string) Entry {
	return Entry{
		Actor:     "apikey:k" + fmt.Sprint(i%7),
		Action:    ActionAPICall,
		Tenant:    tenant,
		Target:    "POST /v1/ingest/{route}",
		Outcome:   OutcomeSuccess,
		RequestID: fmt.Sprintf("req-%04d", i),
		Details:   map[string]string{"status": "202", "n": fmt.Sprint(i)},
	}
}

// newTestLog opens a log on fresh plain streams named name, signing
// checkpoints with a new key "a".
func newTestLog(t *testing.T, name string) (l *Log, entries, cps *queue.Stream, keys *testKeys) {
	t.Helper()
	entries, cps = plainStreams(t, openConn(t), name)
	keys = &testKeys{cur: newTestKey(t, "a")}
	return openLog(t, entries, cps, keys, nil), entries, cps, keys
}
