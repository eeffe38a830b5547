package queue_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/sealpost/sealpost/queue"
)

// fakeNow is a settable clock.
type fakeNow struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeNow) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeNow) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// TestLease: one holder at a time; a holder that stops renewing loses the
// lease to another after the TTL, measured on the other's own clock; a
// released lease is taken at once; the old holder learns it lost.
func TestLease(t *testing.T) {
	ctx := context.Background()
	c := openConn(t, t.TempDir())
	kv, err := c.KV(ctx, queue.KVConfig{Bucket: "LEASE"})
	if err != nil {
		t.Fatal(err)
	}
	clkA, clkB := &fakeNow{t: time.Unix(1000, 0)}, &fakeNow{t: time.Unix(5000, 0)} // clocks need not agree
	a := kv.Lease("job", "a", 5*time.Second, clkA.now)
	b := kv.Lease("job", "b", 5*time.Second, clkB.now)
	hold := func(l *queue.Lease, want bool, what string) {
		t.Helper()
		got, err := l.Hold(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("%s: Hold = %v, want %v", what, got, want)
		}
	}
	hold(a, true, "a takes the free lease")
	hold(b, false, "b while a holds")
	clkB.add(10 * time.Second)
	hold(a, true, "a renews")
	hold(b, false, "b after a renewed: the revision moved")
	clkB.add(4 * time.Second)
	hold(b, false, "b before a whole TTL without renewal")
	clkB.add(2 * time.Second)
	hold(b, true, "b after a TTL without renewal")
	hold(a, false, "a after b took over")
	if a.Held() || !b.Held() {
		t.Fatalf("Held: a %v, b %v", a.Held(), b.Held())
	}
	b.Release(ctx)
	hold(a, true, "a right after b released")
}

// TestInstances counts the live instances of a registry.
func TestInstances(t *testing.T) {
	ctx := context.Background()
	c := openConn(t, t.TempDir())
	r1, err := c.Instances(ctx, "one", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := c.Instances(ctx, "two", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := r1.Count(ctx); err != nil || n != 1 {
		t.Fatalf("count before any heartbeat = %d, %v; want at least 1", n, err)
	}
	for _, r := range []*queue.Instances{r1, r2, r1} {
		if err := r.Beat(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := r2.Count(ctx); err != nil || n != 2 {
		t.Fatalf("count = %d, %v; want 2", n, err)
	}
}
