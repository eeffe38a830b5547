package ingress

import (
	"sync"
	"time"
)

// Throttle lets one event through per Period and counts the ones it holds
// back, so that an outage answered per request does not write a log line
// per request. The zero value lets one event through per second.
type Throttle struct {
	Period time.Duration

	mu      sync.Mutex
	next    time.Time
	skipped int
}

// Allow reports whether the event at now is let through and, when it is,
// how many were held back since the last one let through.
func (t *Throttle) Allow(now time.Time) (ok bool, skipped int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if now.Before(t.next) {
		t.skipped++
		return false, 0
	}
	p := t.Period
	if p <= 0 {
		p = time.Second
	}
	t.next, skipped, t.skipped = now.Add(p), t.skipped, 0
	return true, skipped
}
