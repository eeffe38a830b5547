package forwarder

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// retryDelay returns how long to wait before the next attempt after attempt
// n (1-based) failed, and whether there is a next attempt at all. The
// schedule's delay is spread by the jitter; a Retry-After the receiver sent
// with a 429 or 503 lengthens it (never shortens it), capped by
// MaxRetryAfter.
func (w *Worker) retryDelay(n int, retryAfter time.Duration) (time.Duration, bool) {
	if n >= len(w.cfg.Schedule) {
		return 0, false
	}
	d := w.jitter(w.cfg.Schedule[n])
	if retryAfter > 0 {
		retryAfter = min(retryAfter, w.cfg.MaxRetryAfter)
		d = max(d, retryAfter)
	}
	return d, true
}

// jitter spreads d uniformly over [d·(1-j), d·(1+j)).
func (w *Worker) jitter(d time.Duration) time.Duration {
	j := w.cfg.Jitter
	if j == 0 || d == 0 {
		return d
	}
	f := 1 + j*(2*w.cfg.Rand()-1)
	return time.Duration(float64(d) * f)
}

// parseRetryAfter reads a Retry-After header (delay seconds or an HTTP date)
// relative to now. It returns 0 when the header is absent, unparsable or in
// the past.
func parseRetryAfter(h string, now time.Time) time.Duration {
	h = strings.TrimSpace(h)
	if h == "" || len(h) > 64 {
		return 0
	}
	if secs, err := strconv.ParseInt(h, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		// Beyond a year is nonsense; the cap applies anyway.
		return time.Duration(min(secs, 365*24*3600)) * time.Second
	}
	t, err := http.ParseTime(h)
	if err != nil || !t.After(now) {
		return 0
	}
	return min(t.Sub(now), 365*24*time.Hour)
}
