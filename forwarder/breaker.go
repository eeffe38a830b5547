package forwarder

import (
	"sync"
	"time"
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
	limit     int
	onState   func(state int)

	mu       sync.Mutex
	state    int
	failures int
	openedAt time.Time
	inflight int
}

// admission is the answer of acquire.
type admission int

const (
	admitted    admission = iota
	busy                  // at the concurrency limit: try again shortly
	circuitOpen           // the circuit is open: count as a failed attempt
)

// acquire asks to send one request at now. When it returns admitted, the
// caller must call release exactly once.
func (b *breaker) acquire(now time.Time) (admission, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.inflight >= b.limit {
		return busy, false
	}
	probe := false
	switch b.state {
	case breakerOpen:
		if now.Sub(b.openedAt) < b.cooldown {
			return circuitOpen, false
		}
		b.setState(breakerHalfOpen)
		probe = true
	case breakerHalfOpen:
		// A probe is in flight; everything else waits for its answer.
		return circuitOpen, false
	}
	b.inflight++
	return admitted, probe
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
	b.inflight--
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

// breakerFor returns the breaker of a route, creating it on first use.
func (w *Worker) breakerFor(rt Route) *breaker {
	key := rt.Tenant + "/" + rt.Name
	if b, ok := w.breakers.Load(key); ok {
		return b.(*breaker)
	}
	limit := rt.MaxConcurrency
	if limit <= 0 {
		limit = defaultMaxConcurrency
	}
	b := &breaker{
		threshold: w.cfg.BreakerFailures,
		cooldown:  w.cfg.BreakerCooldown,
		limit:     limit,
		onState: func(s int) {
			w.metrics.breakerState.WithLabelValues(rt.Tenant, rt.Name).Set(float64(s))
		},
	}
	actual, _ := w.breakers.LoadOrStore(key, b)
	return actual.(*breaker)
}
