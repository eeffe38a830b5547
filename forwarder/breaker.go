package forwarder

import (
	"context"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Breaker states, as exported in the breaker_state metric.
const (
	breakerClosed   = 0
	breakerOpen     = 1
	breakerHalfOpen = 2
)

// breaker limits the requests in flight to one endpoint and stops sending to
// it after consecutive failures. It is per instance: every sealpost
// instance learns an endpoint's health on its own.
//
// Closed: requests go through; failures are counted, a success resets the
// count. After threshold consecutive failures the circuit opens. Open: no
// request is sent until cooldown has passed; then one probe is let through
// (half-open). A successful probe closes the circuit; a failed one opens it
// for another cooldown.
type breaker struct {
	threshold int
	cooldown  time.Duration
	onState   func(state int)
	// slots is a semaphore of the endpoint's concurrency limit.
	slots chan struct{}

	mu       sync.Mutex
	state    int
	failures int
	openedAt time.Time
	// stalled is set when a wait for a slot ran out without any request
	// finishing meanwhile, and cleared when one finishes: the endpoint is
	// slow, and its requests are handed back at once instead of holding
	// workers.
	stalled bool
	// releases counts finished requests.
	releases uint64
	// latency is a moving average of the endpoint's answer time; zero
	// until the first answer.
	latency time.Duration
}

func newBreaker(threshold int, cooldown time.Duration, limit int, onState func(int)) *breaker {
	return &breaker{threshold: threshold, cooldown: cooldown, slots: make(chan struct{}, limit), onState: onState}
}

// admission is the answer of acquire.
type admission int

const (
	admitted    admission = iota
	busy                  // at the concurrency limit: try again shortly
	circuitOpen           // the circuit is open: count as a failed attempt
)

// acquire asks to send one request. When the endpoint is at its
// concurrency limit it waits for a slot as long as the endpoint keeps
// answering, at most maxWait, so a busy but fast endpoint keeps its
// messages (handing a backlog back to the queue would only bring it back
// all at once). The wait goes in periods of a few times the endpoint's
// average answer time (short while that is not known yet); once a period
// passes without any of the endpoint's requests finishing, the endpoint
// counts as stalled and its requests are handed back at once until one of
// them finishes. When acquire returns admitted, the caller must call
// release exactly once; probe says the request is a half-open probe.
func (b *breaker) acquire(ctx context.Context, now func() time.Time, maxWait time.Duration) (admission, bool) {
	if !b.mayAdmit(now()) {
		return circuitOpen, false
	}
	select {
	case b.slots <- struct{}{}:
	default:
		if !b.waitSlot(ctx, maxWait) {
			return busy, false
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state {
	case breakerOpen:
		if now().Sub(b.openedAt) < b.cooldown {
			<-b.slots
			return circuitOpen, false
		}
		b.setState(breakerHalfOpen)
		return admitted, true
	case breakerHalfOpen:
		// A probe is in flight; everything else waits for its answer.
		<-b.slots
		return circuitOpen, false
	}
	return admitted, false
}

// Bounds of one period of the wait for a slot.
const (
	unknownLatencyWait = 100 * time.Millisecond
	minSlotWait        = 100 * time.Millisecond
	maxSlotWait        = 2 * time.Second
	waitPerLatency     = 8
)

// waitSlot waits for a free slot while the endpoint's requests keep
// finishing, at most maxWait in all, and reports whether it got one.
func (b *breaker) waitSlot(ctx context.Context, maxWait time.Duration) bool {
	deadline := time.Now().Add(maxWait)
	for {
		wait, seen := b.startWait(time.Until(deadline))
		if wait <= 0 {
			return false
		}
		t := time.NewTimer(wait)
		select {
		case b.slots <- struct{}{}:
			t.Stop()
			return true
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return false
		}
		if b.endWait(seen) {
			return false
		}
	}
}

// startWait returns how long to wait for a slot (zero: do not wait) and
// the count of finished requests, for endWait.
func (b *breaker) startWait(maxWait time.Duration) (time.Duration, uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.stalled || maxWait <= 0:
		return 0, b.releases
	case b.latency == 0:
		return min(maxWait, unknownLatencyWait), b.releases
	}
	return min(maxWait, maxSlotWait, max(minSlotWait, waitPerLatency*b.latency)), b.releases
}

// observe feeds the answer time of one request into the average.
func (b *breaker) observe(d time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.latency == 0 {
		b.latency = d
		return
	}
	b.latency += (d - b.latency) / 8
}

// endWait ends a period of waiting that started when seen requests had
// finished, and reports whether the endpoint is stalled: a period in which
// others finished (and took the slots) does not make it so.
func (b *breaker) endWait(seen uint64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.releases == seen {
		b.stalled = true
	}
	return b.stalled
}

// mayAdmit is acquire's check before it waits for a slot.
func (b *breaker) mayAdmit(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state {
	case breakerOpen:
		return now.Sub(b.openedAt) >= b.cooldown
	case breakerHalfOpen:
		return false
	}
	return true
}

// outcome of one admitted request, for release.
type outcome int

const (
	outcomeNone    outcome = iota // nothing was sent
	outcomeSuccess                // 2xx
	outcomeFailure                // anything else
)

// release ends a request admitted by acquire.
func (b *breaker) release(probe bool, o outcome, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	<-b.slots
	b.stalled = false
	b.releases++
	switch {
	case o == outcomeSuccess:
		b.failures = 0
		if b.state != breakerClosed {
			b.setState(breakerClosed)
		}
	case o == outcomeFailure:
		b.failures++
		if probe || (b.state == breakerClosed && b.failures >= b.threshold) {
			b.openedAt = now
			b.setState(breakerOpen)
		}
	case probe:
		// The probe sent nothing; let the next request probe.
		b.setState(breakerOpen)
	}
}

func (b *breaker) setState(s int) {
	b.state = s
	if b.onState != nil {
		b.onState(s)
	}
}

// breakerFor returns the breaker of an endpoint, creating it on first use
// and again when its concurrency limit changed (requests in flight finish
// on the old one).
func (w *Worker) breakerFor(tenant, route string, ep Endpoint) *breaker {
	key := tenant + "/" + route + "/" + ep.id()
	limit := ep.MaxConcurrency
	if limit <= 0 {
		limit = defaultMaxConcurrency
	}
	limit = max(1, limit/w.share())
	for {
		old, ok := w.breakers.Load(key)
		if ok && cap(old.(*breaker).slots) == limit {
			return old.(*breaker)
		}
		b := newBreaker(w.cfg.BreakerFailures, w.cfg.BreakerCooldown, limit, func(s int) {
			w.metrics.breakerState.WithLabelValues(tenant, route, ep.id()).Set(float64(s))
		})
		if ok {
			if w.breakers.CompareAndSwap(key, old, b) {
				return b
			}
			continue // another request replaced it first
		}
		actual, _ := w.breakers.LoadOrStore(key, b)
		return actual.(*breaker)
	}
}

// rateWait takes one message of an endpoint's rate and returns 0, or,
// when the endpoint is over this instance's share of its rate, how long to
// wait; the waiting message takes nothing.
func (w *Worker) rateWait(tenant, route string, ep Endpoint) time.Duration {
	if ep.RateLimit <= 0 {
		return 0
	}
	lim := rate.Limit(float64(ep.RateLimit) / float64(w.share()))
	key := tenant + "/" + route + "/" + ep.id()
	v, ok := w.limiters.Load(key)
	if !ok || v.(*rate.Limiter).Limit() != lim {
		burst := max(1, int(lim))
		v, _ = w.limiters.LoadOrStore(key, rate.NewLimiter(lim, burst))
		if l := v.(*rate.Limiter); l.Limit() != lim {
			l.SetLimit(lim)
			l.SetBurst(burst)
		}
	}
	r := v.(*rate.Limiter).Reserve()
	d := r.Delay()
	if d > 0 {
		r.Cancel()
		return max(d, 10*time.Millisecond)
	}
	return 0
}
