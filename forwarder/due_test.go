package forwarder

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sealpost/sealpost/queue"
)

// TestNeverBeforeNextAt: a retry handed out without a due time of its own
// half a millisecond before the next_at its attempt record shows is put
// back, without a request, until the millisecond its record rounds next_at
// up to; then it is made. (Rounded down, the record would let it through
// early.)
func TestNeverBeforeNextAt(t *testing.T) {
	c := newClock()
	c.advance(700 * time.Microsecond) // next_at falls inside a millisecond
	e := newEnv(t, func(cfg *Config) { cfg.Now = c.now; cfg.Schedule = []time.Duration{0, time.Minute, time.Minute} })
	rc := newReceiver(t, func(w http.ResponseWriter, _ *http.Request, _ int) { w.WriteHeader(500) })
	e.route("invoices", rc, nil)
	ctx := context.Background()
	s := submission(t, "invoices")
	e.handle(ctx, s, &fakeDelivery{})
	as, err := e.w.Attempts(ctx, "acme", s.ID)
	if err != nil || len(as) != 1 || as[0].NextAt.IsZero() {
		t.Fatalf("first attempt %+v, %v", as, err)
	}
	next := as[0].NextAt
	c.advance(next.Sub(c.now()) - 500*time.Microsecond)
	redelivered := []*queue.Delivery{{Submission: s, Attempt: 1, Redelivered: true}}
	out := e.w.Handle(ctx, redelivered)[0]
	if !out.IsRetry() || out.Attempts() != 1 || out.Delay() < 500*time.Microsecond || out.Delay() >= 1500*time.Microsecond || len(rc.requests()) != 1 {
		t.Fatalf("half a millisecond early: retry %t after %s with %d attempts, %d requests; want it put back for 500µs to the next millisecond, no request",
			out.IsRetry(), out.Delay(), out.Attempts(), len(rc.requests()))
	}
	c.advance(out.Delay())
	e.w.Handle(ctx, redelivered)
	as, _ = e.w.Attempts(ctx, "acme", s.ID)
	if len(as) != 2 || as[1].Time.Before(next) {
		t.Fatalf("attempts %+v, want the second at or after %s", as, next)
	}
}

// skewedClock is the wall clock moved by an offset the test sets.
type skewedClock struct{ offset atomic.Int64 }

func (c *skewedClock) now() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }
