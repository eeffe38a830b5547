package witness

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sealpost/sealpost/audit"
	"github.com/sealpost/sealpost/queue"
	"github.com/sealpost/sealpost/signer"
)

type logKeys struct{ k signer.PrivateKey }

func (l logKeys) SigningKeys(context.Context, time.Time) (signer.PrivateKey, []signer.PrivateKey, error) {
	return l.k, nil, nil
}

// runLog opens an audit log on an embedded JetStream in dir with the given
// witnesses, runs its checkpointer every few milliseconds, and returns it
// with a function that waits for a stored checkpoint of a size and one
// that stops it.
func runLog(t *testing.T, dir string, key signer.PrivateKey, p *audit.WitnessPolicy) (*audit.Log, func(size uint64) []byte, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c, err := queue.Open(ctx, queue.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	l, err := audit.Open(ctx, audit.Config{Conn: c, Keys: logKeys{key}, Origin: origin, Witnesses: p,
		WitnessTimeout: 5 * time.Second, CheckpointEvery: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		<-done
		_ = l.Close(context.Background())
		c.Close()
	}
	t.Cleanup(stop)
	wait := func(size uint64) []byte {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second) // guards against a hang only
		for {
			n, err := l.Checkpoint(ctx)
			if err == nil {
				if cp, err := audit.OpenCheckpoint(n, origin, keySet(key)); err == nil && cp.Size == size {
					return n
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("no checkpoint of size %d", size)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return l, wait, stop
}

func appendEntries(t *testing.T, l *audit.Log, n int) {
	t.Helper()
	for i := range n {
		if err := l.Append(context.Background(), audit.Entry{Actor: "system", Action: "api.call", Outcome: audit.OutcomeSuccess, RequestID: string(rune('a' + i))}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestLogGetsCosignatures runs the log against two witnesses: checkpoints
// carry both cosignatures; a restarted log, which does not know the
// witnesses' sizes, learns them; a witness that is down costs the quorum,
// which verify reports; a forked log (another store under the same key,
// behind the witnesses) gets no cosignature and verify reports the
// rollback.
func TestLogGetsCosignatures(t *testing.T) {
	ctx := context.Background()
	key := seedKey(t, "log")
	w1 := startWitness(t, "witness.test/w1", keySet(key), nil)
	w2 := startWitness(t, "witness.test/w2", keySet(key), nil)
	both := &audit.WitnessPolicy{Quorum: 2, Witnesses: append(w1.policy().Witnesses, w2.policy().Witnesses...)}
	verify := func(l *audit.Log) (*audit.Report, map[string]bool) {
		t.Helper()
		rep, err := l.Verify(ctx, keySet(key))
		if err != nil {
			t.Fatal(err)
		}
		kinds := map[string]bool{}
		for _, p := range rep.Problems {
			kinds[p.Kind] = true
		}
		return rep, kinds
	}

	dir := t.TempDir()
	l, wait, stop := runLog(t, dir, key, both)
	appendEntries(t, l, 5)
	cp, err := audit.VerifyCheckpoint(wait(5), origin, keySet(key), both)
	if err != nil || len(cp.Cosigned) != 2 {
		t.Fatalf("checkpoint of size 5: %+v %v", cp, err)
	}
	stop()

	// Restarted: the first submissions get 409 and the witnesses' size,
	// then a proof from it.
	l, wait, stop = runLog(t, dir, key, both)
	appendEntries(t, l, 3)
	if cp, err := audit.VerifyCheckpoint(wait(8), origin, keySet(key), both); err != nil || len(cp.Cosigned) != 2 {
		t.Fatalf("checkpoint of size 8 after a restart: %+v %v", cp, err)
	}
	if rep, _ := verify(l); !rep.OK || rep.Witnessed != 8 {
		t.Fatalf("verify with both witnesses: %+v", rep)
	}

	// Witness 2 goes down: one cosignature, below the quorum.
	w2.srv.Close()
	appendEntries(t, l, 2)
	cp, err = audit.VerifyCheckpoint(wait(10), origin, keySet(key), both)
	if !errors.Is(err, audit.ErrQuorum) || len(cp.Cosigned) != 1 {
		t.Fatalf("checkpoint without witness 2: %+v %v, want ErrQuorum", cp, err)
	}
	if rep, kinds := verify(l); rep.OK || !kinds[audit.KindUnwitnessed] || kinds[audit.KindRollback] || len(rep.Notes) != 1 {
		t.Fatalf("verify without witness 2: %+v", rep)
	}
	stop()

	// A fork: another store under the same key, behind witness 1.
	f, waitF, _ := runLog(t, t.TempDir(), key, both)
	appendEntries(t, f, 3)
	cp, err = audit.VerifyCheckpoint(waitF(3), origin, keySet(key), both)
	if !errors.Is(err, audit.ErrQuorum) || len(cp.Cosigned) != 0 {
		t.Fatalf("a witness cosigned the fork: %+v %v", cp, err)
	}
	if rep, kinds := verify(f); rep.OK || !kinds[audit.KindRollback] {
		t.Fatalf("verify of the fork: %+v", rep)
	}
	if size, _ := w1.w.Latest(origin); size != 10 {
		t.Fatalf("witness 1 moved to %d", size)
	}
}
