package forwarder

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/sealpost/sealpost/audit/entry"
	"github.com/sealpost/sealpost/ingress"
	"github.com/sealpost/sealpost/keyring/kms"
	"github.com/sealpost/sealpost/queue"
)

// clock is a controllable clock.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newClock() *clock { return &clock{t: time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)} }

// runSchedule handles s until the worker acks it, advancing the clock by
// each requested delay, and returns the delays.
func runSchedule(t *testing.T, e *env, c *clock, s *ingress.Submission, maxRuns int) ([]time.Duration, *fakeDelivery) {
	t.Helper()
	var delays []time.Duration
	for range maxRuns {
		d := &fakeDelivery{}
		e.handle(context.Background(), s, d)
		switch d.decision() {
		case "ack":
			return delays, d
		case "retry":
			delays = append(delays, d.retries[0])
			c.advance(d.retries[0])
		default:
			t.Fatal("handle made no decision")
		}
	}
	t.Fatalf("no ack or drop after %d runs", maxRuns)
	return nil, nil
}

func TestScheduleThenDeadLetter(t *testing.T) {
	c := newClock()
	e := newEnv(t, func(cfg *Config) { cfg.Now = c.now })
	rc := newReceiver(t, func(w http.ResponseWriter, _ *http.Request, _ int) { w.WriteHeader(http.StatusInternalServerError) })
	e.route("invoices", rc, nil)
	s := submission(t, "invoices")
	delays, d := runSchedule(t, e, c, s, 20)
	if !d.acked {
		t.Fatalf("last decision %s, want ack after dead-lettering", d.decision())
	}
	if want := DefaultSchedule[1:]; !slices.Equal(delays, want) {
		t.Errorf("delays = %v, want %v", delays, want)
	}
	if n := len(rc.requests()); n != len(DefaultSchedule) {
		t.Errorf("receiver got %d requests, want %d", n, len(DefaultSchedule))
	}
	as, err := e.w.Attempts(context.Background(), "acme", s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(as) != len(DefaultSchedule) {
		t.Fatalf("%d attempts recorded, want %d", len(as), len(DefaultSchedule))
	}
	at := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	for i, a := range as {
		if a.N != i+1 || a.Status != 500 || a.Class != ClassStatus || !a.Time.Equal(at) {
			t.Errorf("attempt %d = %+v, want n=%d status 500 at %s", i, a, i+1, at)
		}
		if i < len(as)-1 {
			at = at.Add(DefaultSchedule[i+1])
			if a.Result != ResultRetry || !a.NextAt.Equal(at) {
				t.Errorf("attempt %d result %s next %s, want retry at %s", i+1, a.Result, a.NextAt, at)
			}
		} else if a.Result != ResultDeadLettered {
			t.Errorf("last attempt result %s, want dead_lettered", a.Result)
		}
	}
	want := []string{entry.ActionSigned}
	for range len(DefaultSchedule) {
		want = append(want, entry.ActionFailed)
	}
	want = append(want, entry.ActionDeadLettered)
	if got := e.audit.actions(s.ID); !slices.Equal(got, want) {
		t.Errorf("audit = %v, want %v", got, want)
	}
	// The dead letter is stored sealed and lists for replay.
	m, err := e.cfg.DeadLetters.Last(context.Background(), dlqSubject("acme", "invoices", s.ID, DefaultEndpoint))
	if err != nil {
		t.Fatal(err)
	}
	if m.Header[hdrState] != stateDead || bytes.Contains(m.Data, []byte("invoice")) || bytes.Contains(m.Data, []byte(s.ID)) {
		t.Error("dead letter is not a sealed dead record")
	}
}

func TestJitter(t *testing.T) {
	for _, tc := range []struct {
		rand float64
		want time.Duration
	}{
		{0, 4 * time.Minute},
		{0.5, 5 * time.Minute},
		{0.75, 5*time.Minute + 30*time.Second},
	} {
		t.Run(strconv.FormatFloat(tc.rand, 'f', -1, 64), func(t *testing.T) {
			w, err := New(Config{Routes: &staticRoutes{}, Keys: &staticKeys{}, Sealer: nopSealer{},
				Receipts: &queue.Stream{}, EndpointState: &queue.KV{}, DeadLetters: &queue.Stream{}, Attempts: &queue.Stream{},
				Rand: func() float64 { return tc.rand }})
			if err != nil {
				t.Fatal(err)
			}
			got, more := w.retryDelay(2, 0)
			if !more || got != tc.want {
				t.Errorf("retryDelay(2) = %s, %v; want %s", got, more, tc.want)
			}
		})
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name       string
		status     int
		retryAfter string
		attempt    int // attempts already made before this one
		want       time.Duration
	}{
		{"429 longer than schedule", 429, "120", 0, 120 * time.Second},
		{"503 http date", 503, now.Add(10 * time.Minute).Format(http.TimeFormat), 0, 10 * time.Minute},
		{"429 shorter than schedule", 429, "10", 2, 30 * time.Minute},
		{"429 capped", 429, "99999", 0, 2 * time.Hour},
		{"429 garbage", 429, "soon", 0, 5 * time.Second},
		{"500 ignores retry-after", 500, "600", 0, 5 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &clock{t: now}
			e := newEnv(t, func(cfg *Config) { cfg.Now = c.now; cfg.MaxRetryAfter = 2 * time.Hour })
			rc := newReceiver(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
				w.Header().Set("Retry-After", tc.retryAfter)
				w.WriteHeader(tc.status)
			})
			e.route("invoices", rc, nil)
			s := submission(t, "invoices")
			for i := range tc.attempt {
				if err := e.w.recordAttempt(context.Background(), "acme", "invoices", s.ID, Attempt{N: i + 1, Scheduled: i + 1, Trigger: TriggerQueue, Result: ResultRetry}); err != nil {
					t.Fatal(err)
				}
			}
			// The queued copy carries the attempts made.
			e.queued[s.ID] = queued{attempt: tc.attempt}
			d := &fakeDelivery{}
			e.handle(context.Background(), s, d)
			if len(d.retries) != 1 || d.retries[0] != tc.want {
				t.Errorf("retries = %v, want [%s]", d.retries, tc.want)
			}
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"0", 0},
		{"-5", 0},
		{"30", 30 * time.Second},
		{" 30 ", 30 * time.Second},
		{"99999999999999", 365 * 24 * time.Hour},
		{now.Add(time.Minute).Format(http.TimeFormat), time.Minute},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
		{"tomorrow", 0},
	} {
		if got := parseRetryAfter(tc.in, now); got != tc.want {
			t.Errorf("parseRetryAfter(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"", "30", "Sun, 22 Nov 2026 10:01:00 GMT", "-1", "1e9"} {
		f.Add(s)
	}
	now := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		if d := parseRetryAfter(s, now); d < 0 || d > 365*24*time.Hour {
			t.Fatalf("parseRetryAfter(%q) = %s", s, d)
		}
	})
}

// nopSealer is only for tests that never store anything.
type nopSealer struct{}

func (nopSealer) Seal(context.Context, kms.Context, []byte) ([]byte, error) {
	return nil, errors.New("nop")
}
func (nopSealer) Open(context.Context, kms.Context, []byte) ([]byte, error) {
	return nil, errors.New("nop")
}

// TestEarlyRedeliveryKeepsSchedule: a message handed out again before its
// due time (a queue server restart, an expired ack wait) is put back for
// the rest of its delay without an attempt.
func TestEarlyRedeliveryKeepsSchedule(t *testing.T) {
	c := newClock()
	e := newEnv(t, func(cfg *Config) { cfg.Now = c.now })
	rc := newReceiver(t, func(w http.ResponseWriter, _ *http.Request, _ int) { w.WriteHeader(500) })
	e.route("invoices", rc, nil)
	s := submission(t, "invoices")
	ctx := context.Background()
	for range 2 {
		d := &fakeDelivery{}
		e.handle(ctx, s, d)
		c.advance(d.retries[0])
	}
	// Attempt 3 is due 5 minutes after attempt 2; redeliver after 2.
	c.advance(-3 * time.Minute)
	d := &fakeDelivery{}
	e.handle(ctx, s, d)
	if len(d.retries) != 1 || d.retries[0] != 3*time.Minute {
		t.Errorf("early redelivery: retries %v, want [3m]", d.retries)
	}
	if n := len(rc.requests()); n != 2 {
		t.Errorf("receiver got %d requests, want 2", n)
	}
	c.advance(3 * time.Minute)
	d = &fakeDelivery{}
	e.handle(ctx, s, d)
	as, _ := e.w.Attempts(ctx, "acme", s.ID)
	if len(as) != 3 || as[2].N != 3 || d.retries[0] != 30*time.Minute {
		t.Errorf("on time: %d attempts, next delay %v; want 3 and 30m", len(as), d.retries)
	}
}
