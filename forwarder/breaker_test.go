package forwarder

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

func TestBreakerStates(t *testing.T) {
	now := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	b := newBreaker(3, time.Minute, 2, nil)
	acquire := func(at time.Time) (admission, bool) {
		return b.acquire(context.Background(), func() time.Time { return at }, 0)
	}
	fail := func() {
		t.Helper()
		adm, probe := acquire(now)
		if adm != admitted {
			t.Fatalf("acquire = %v, want admitted", adm)
		}
		b.release(probe, outcomeFailure, now)
	}
	fail()
	fail()
	if b.state != breakerClosed {
		t.Fatal("opened before the threshold")
	}
	fail()
	if b.state != breakerOpen {
		t.Fatal("not open after 3 consecutive failures")
	}
	if adm, _ := acquire(now.Add(59 * time.Second)); adm != circuitOpen {
		t.Fatalf("acquire during cooldown = %v, want circuitOpen", adm)
	}
	now = now.Add(time.Minute)
	adm, probe := acquire(now)
	if adm != admitted || !probe {
		t.Fatalf("after cooldown: %v probe=%v, want an admitted probe", adm, probe)
	}
	if adm, _ := acquire(now); adm != circuitOpen {
		t.Fatal("a second request went through while the probe is out")
	}
	b.release(true, outcomeFailure, now)
	if b.state != breakerOpen {
		t.Fatal("failed probe did not reopen")
	}
	now = now.Add(time.Minute)
	adm, probe = acquire(now)
	b.release(probe, outcomeSuccess, now)
	if adm != admitted || b.state != breakerClosed || b.failures != 0 {
		t.Fatalf("successful probe: state %d failures %d", b.state, b.failures)
	}
	// A probe that sent nothing hands the probe to the next request.
	b.state, b.openedAt = breakerOpen, now.Add(-time.Hour)
	_, probe = acquire(now)
	b.release(probe, outcomeNone, now)
	if adm, probe := acquire(now); adm != admitted || !probe {
		t.Fatal("next request did not get the probe")
	}
}

func TestBreakerConcurrencyLimit(t *testing.T) {
	ctx := context.Background()
	b := newBreaker(3, time.Minute, 2, nil)
	b.acquire(ctx, time.Now, 0)
	b.acquire(ctx, time.Now, 0)
	if adm, _ := b.acquire(ctx, time.Now, 0); adm != busy {
		t.Fatalf("third acquire = %v, want busy", adm)
	}
	// A waiting request gets the slot a finished one gives back.
	go func() {
		time.Sleep(10 * time.Millisecond)
		b.release(false, outcomeSuccess, time.Now())
	}()
	if adm, _ := b.acquire(ctx, time.Now, time.Minute); adm != admitted {
		t.Fatal("slot not given back to a waiting request")
	}
	// A wait that runs out marks the endpoint stalled: the next request is
	// handed back without waiting, until a request finishes.
	if adm, _ := b.acquire(ctx, time.Now, time.Millisecond); adm != busy || !b.stalled {
		t.Fatalf("timed-out wait: %v stalled=%v, want busy and stalled", adm, b.stalled)
	}
	if wait, _ := b.startWait(time.Minute); wait != 0 {
		t.Fatal("a stalled endpoint lets requests wait")
	}
	b.release(false, outcomeSuccess, time.Now())
	if wait, _ := b.startWait(time.Minute); b.stalled || wait == 0 {
		t.Fatal("a finished request did not clear the stall")
	}
}

func TestSlotWait(t *testing.T) {
	b := newBreaker(3, time.Minute, 1, nil)
	for _, tc := range []struct {
		name    string
		observe []time.Duration
		want    time.Duration
	}{
		{"unknown", nil, unknownLatencyWait},
		{"fast", []time.Duration{time.Millisecond}, minSlotWait},
		{"average", []time.Duration{20 * time.Millisecond, 20 * time.Millisecond}, 160 * time.Millisecond},
		{"slow", []time.Duration{10 * time.Second}, 250 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b.latency = 0
			for _, d := range tc.observe {
				b.observe(d)
			}
			if got, _ := b.startWait(250 * time.Millisecond); got != tc.want {
				t.Errorf("startWait = %s, want %s", got, tc.want)
			}
		})
	}
}

// TestBreakerOpensAndProbes: after BreakerFailures failures the endpoint
// is not called; after the cooldown one probe goes through and closes it.
func TestBreakerOpensAndProbes(t *testing.T) {
	c := newClock()
	var healthy atomic.Bool
	e := newEnv(t, func(cfg *Config) { cfg.Now = c.now; cfg.BreakerFailures = 2; cfg.BreakerCooldown = time.Minute })
	rc := newReceiver(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
		if healthy.Load() {
			w.WriteHeader(200)
			return
		}
		w.WriteHeader(503)
	})
	e.route("invoices", rc, nil)
	ctx := context.Background()
	for range 2 {
		e.handle(ctx, submission(t, "invoices"), &fakeDelivery{})
	}
	s := submission(t, "invoices")
	d := &fakeDelivery{}
	e.handle(ctx, s, d)
	as, _ := e.w.Attempts(ctx, "acme", s.ID)
	if d.decision() != "retry" || len(as) != 0 {
		t.Fatalf("with the circuit open: %s %+v, want a retry that is not counted as an attempt", d.decision(), as)
	}
	if got := d.retries[0]; got < 48*time.Second || got > 72*time.Second {
		t.Fatalf("deferred for %s, want the cooldown ±20%%", got)
	}
	if n := len(rc.requests()); n != 2 {
		t.Fatalf("receiver got %d requests, want 2", n)
	}
	healthy.Store(true)
	c.advance(time.Minute)
	d = &fakeDelivery{}
	e.handle(ctx, s, d)
	if !d.acked {
		t.Fatalf("probe: %s, want ack", d.decision())
	}
	if b := e.w.breakerFor("acme", "invoices", Endpoint{}); b.state != breakerClosed {
		t.Error("circuit not closed after a good probe")
	}
}

// TestSlowEndpointDoesNotStarve: while an endpoint with MaxConcurrency 1
// hangs, its next message is deferred (not counted as an attempt) and
// another endpoint is served.
func TestSlowEndpointDoesNotStarve(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Timeout = 10 * time.Second })
	release := make(chan struct{})
	arrived := make(chan struct{}, 1)
	slow := newReceiver(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		arrived <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
		w.WriteHeader(200)
	})
	fast := newReceiver(t, nil)
	e.route("slow", slow, func(r *Route) { r.MaxConcurrency = 1 })
	e.route("fast", fast, nil)
	ctx := context.Background()
	done := make(chan *fakeDelivery)
	go func() {
		d := &fakeDelivery{}
		e.handle(ctx, submission(t, "slow"), d)
		done <- d
	}()
	<-arrived
	s := submission(t, "slow")
	d := &fakeDelivery{}
	e.handle(ctx, s, d)
	if d.decision() != "retry" || d.retries[0] > 2*busyDelay {
		t.Errorf("second message to the busy endpoint: %s %v, want a short retry", d.decision(), d.retries)
	}
	if _, err := e.w.Attempts(ctx, "acme", s.ID); err == nil {
		t.Error("deferral was recorded as an attempt")
	}
	d = &fakeDelivery{}
	e.handle(ctx, submission(t, "fast"), d)
	if !d.acked {
		t.Errorf("fast endpoint: %s, want ack while the slow one hangs", d.decision())
	}
	close(release)
	if d := <-done; !d.acked {
		t.Errorf("slow endpoint: %s, want ack", d.decision())
	}
}

// TestLimitsShared: with n instances, each enforces 1/n of an endpoint's
// rate limit and concurrency limit, and follows n as it changes.
func TestLimitsShared(t *testing.T) {
	e := newEnv(t, nil)
	ep := Endpoint{URL: "https://example.com/hook", RateLimit: 4, MaxConcurrency: 16}
	taken := func(route string) int {
		n := 0
		for range 10 {
			if e.w.rateWait("acme", route, ep) > 0 {
				break
			}
			n++
		}
		return n
	}
	if n := taken("invoices"); n != 4 {
		t.Errorf("one instance: %d messages before the rate limit, want 4", n)
	}
	if c := cap(e.w.breakerFor("acme", "invoices", ep).slots); c != 16 {
		t.Errorf("one instance: %d slots, want 16", c)
	}
	e.w.SetInstances(2)
	if n := taken("orders"); n != 2 { // a fresh limiter, its burst full
		t.Errorf("two instances: %d messages before the rate limit, want 2", n)
	}
	if c := cap(e.w.breakerFor("acme", "invoices", ep).slots); c != 8 {
		t.Errorf("two instances: %d slots, want 8", c)
	}
	e.w.SetInstances(32)
	if c := cap(e.w.breakerFor("acme", "invoices", ep).slots); c != 1 {
		t.Errorf("32 instances: %d slots, want 1", c)
	}
}
