package audit

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sealpost/sealpost/queue"
)

// clock is a settable test clock that counts how often it was read.
type clock struct {
	mu    sync.Mutex
	t     time.Time
	reads int
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reads++
	return c.t
}

// Reads returns how often Now was called.
func (c *clock) Reads() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reads
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// checkpointCount returns how many checkpoints are stored and the newest.
func checkpointCount(t *testing.T, s *queue.Stream) (int, *checkpointRecord) {
	t.Helper()
	n := 0
	var last *checkpointRecord
	err := s.Read(context.Background(), queue.ReadOptions{}, func(m *queue.Msg) error {
		n++
		var err error
		last, err = decodeCheckpointRecord(m)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n, last
}

// waitFor polls cond until it holds; the deadline only guards against a hang.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRunSignsCheckpoints(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := openConn(t)
	entries, cps := plainStreams(t, c, "RUN")
	clk := &clock{t: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)}
	keys := &testKeys{cur: newTestKey(t, "a")}
	l := openLog(t, entries, cps, keys, func(c *Config) {
		c.Now = clk.Now
		c.CheckpointEvery = time.Millisecond
		c.IdleCheckpointEvery = time.Hour
	})
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()

	// An empty log gets a checkpoint of size 0 at once.
	waitFor(t, "the first checkpoint", func() bool { n, _ := checkpointCount(t, cps); return n >= 1 })
	for i := range 7 {
		if err := l.Append(ctx, testEntry(i, "acme")); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "a checkpoint of size 7", func() bool { _, r := checkpointCount(t, cps); return r.Size == 7 })
	n7, _ := checkpointCount(t, cps)
	// Without entries, no new checkpoint until the idle interval passed:
	// the checkpointer reads the clock on each of its rounds (every
	// millisecond here) to see whether one is due; it must go many rounds
	// without signing.
	reads := clk.Reads()
	waitFor(t, "50 idle rounds of the checkpointer", func() bool {
		if n, _ := checkpointCount(t, cps); n != n7 {
			t.Fatalf("%d checkpoints while idle, want %d", n, n7)
		}
		return clk.Reads() >= reads+50
	})
	clk.Add(time.Hour)
	waitFor(t, "the idle checkpoint", func() bool { n, _ := checkpointCount(t, cps); return n == n7+1 })
	cancel()
	<-done
	note, err := l.Checkpoint(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	cp, err := OpenCheckpoint(note, testOrigin, keys.keySet())
	if err != nil || cp.Size != 7 {
		t.Fatalf("latest checkpoint %+v, %v; want a valid one of size 7", cp, err)
	}
}

// TestVerifyPrunedLog covers a log whose oldest entries expired under the
// retention: verify and export start from a checkpoint's compact range.
func TestVerifyPrunedLog(t *testing.T) {
	ctx := context.Background()
	f := newTamperFixture(t)
	// The fixture's clock stands still at 10:00; a year and a bit later the
	// oldest entries may have expired.
	later := func(c *Config) {
		c.Now = func() time.Time {
			return time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC).Add(DefaultRetention + 2*time.Hour)
		}
	}
	for _, from := range []int{10, 5, 20} {
		t.Run(fmt.Sprint(from), func(t *testing.T) {
			l, _ := f.copyLogFrom(t, fmt.Sprintf("PRUNED%d", from), uint64(from)+1, f.msgs[from:], later)
			rep, err := l.Verify(ctx, f.keys.keySet())
			if err != nil {
				t.Fatal(err)
			}
			if !rep.OK || rep.Verified != 33 {
				t.Fatalf("report %+v, want OK up to 33", rep)
			}
			var buf bytes.Buffer
			if err := l.Export(ctx, &buf, Filter{}); err != nil {
				t.Fatal(err)
			}
			if err := VerifyExport(bytes.NewReader(buf.Bytes()), f.keys.keySet()); err != nil {
				t.Fatal(err)
			}
		})
	}
	// Edited inside the unproven prefix: the link into the checkpointed
	// range still catches it.
	msgs := append([][]byte{}, f.msgs[5:]...)
	msgs[4] = bytes.Replace(msgs[4], []byte(`"req-0009"`), []byte(`"req-9999"`), 1)
	l, _ := f.copyLogFrom(t, "PRUNEDEDIT", 6, msgs, later)
	rep, err := l.Verify(ctx, f.keys.keySet())
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK || rep.FirstBadSeq != 10 {
		t.Fatalf("report %+v, want a problem at seq 10", rep)
	}
	// The same oldest entries missing before they could have expired: deleted.
	l, _ = f.copyLogFrom(t, "HEADLESS", 4, f.msgs[3:])
	rep, err = l.Verify(ctx, f.keys.keySet())
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK || rep.FirstBadSeq != 4 || rep.Problems[0].Kind != KindDeleted {
		t.Fatalf("report %+v, want deleted at seq 4", rep)
	}
}
