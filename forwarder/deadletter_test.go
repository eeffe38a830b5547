package forwarder

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sealpost/sealpost/audit/entry"
	"github.com/sealpost/sealpost/ingress"
	"github.com/sealpost/sealpost/queue"
)

// deadLetterOne runs s through a 2-attempt schedule against a failing
// receiver so it ends in the dead-letter stream.
func deadLetterOne(t *testing.T, e *env, c *clock, s *ingress.Submission) {
	t.Helper()
	for range 2 {
		d := &fakeDelivery{}
		e.handle(context.Background(), s, d)
		if len(d.retries) > 0 {
			c.advance(d.retries[0])
		}
	}
	m, err := e.cfg.DeadLetters.Last(context.Background(), dlqSubject(s.Tenant, s.Route, s.ID, DefaultEndpoint))
	if err != nil || m.Header[hdrState] != stateDead {
		t.Fatalf("%s not dead-lettered: %v", s.ID, err)
	}
}

func TestRedeliverAndReplay(t *testing.T) {
	c := newClock()
	e := newEnv(t, func(cfg *Config) { cfg.Now = c.now; cfg.Schedule = []time.Duration{0, time.Minute} })
	var up atomic.Bool
	answer := func(w http.ResponseWriter, _ *http.Request, _ int) {
		if up.Load() {
			w.WriteHeader(200)
			return
		}
		w.WriteHeader(500)
	}
	rcA, rcB := newReceiver(t, answer), newReceiver(t, answer)
	e.route("a", rcA, nil)
	e.route("b", rcB, nil)
	ctx := context.Background()
	a1, a2, b1 := submission(t, "a"), submission(t, "a"), submission(t, "b")
	deadLetterOne(t, e, c, a1)
	c.advance(time.Hour)
	since := c.now()
	deadLetterOne(t, e, c, a2)
	deadLetterOne(t, e, c, b1)

	// Redeliver to a failing endpoint: ErrDeliveryFailed, still dead.
	if err := e.w.Redeliver(ctx, "acme", a1.ID, ""); !errors.Is(err, ErrDeliveryFailed) {
		t.Fatalf("Redeliver to a failing endpoint = %v, want ErrDeliveryFailed", err)
	}
	up.Store(true)
	if err := e.w.Redeliver(ctx, "acme", a1.ID, ""); err != nil {
		t.Fatalf("Redeliver = %v", err)
	}
	reqs := rcA.requests()
	last := reqs[len(reqs)-1]
	if last.header.Get("webhook-id") != a1.ID || string(last.body) != string(reqs[0].body) {
		t.Error("redelivery changed the webhook-id or the body")
	}
	// Two scheduled attempts, then two redeliveries: numbered 1 to 4, the
	// redeliveries with no place in the schedule.
	as, _ := e.w.Attempts(ctx, "acme", a1.ID)
	if got := as[len(as)-1]; got.Trigger != TriggerRedeliver || got.Result != ResultDelivered {
		t.Errorf("last attempt = %+v", got)
	}
	if got := attemptNumbers(as); !slices.Equal(got, []string{"1:1", "2:2", "3:-", "4:-"}) {
		t.Errorf("attempts numbered %v, want 1:1 2:2 3:- 4:- (N:scheduled)", got)
	}
	if !slices.Contains(e.audit.actions(a1.ID), entry.ActionRedeliver) {
		t.Error("redelivery not audited")
	}

	// Replay route b since the second dead letter: only b1.
	n, err := e.w.ReplayDeadLetters(ctx, ReplayFilter{Tenant: "acme", Route: "b", Since: since})
	if err != nil || n != 1 {
		t.Fatalf("replay route b = %d, %v; want 1", n, err)
	}
	// Replay everything: a1 and b1 are resolved, only a2 is left.
	n, err = e.w.ReplayDeadLetters(ctx, ReplayFilter{Tenant: "acme"})
	if err != nil || n != 1 {
		t.Fatalf("replay all = %d, %v; want 1", n, err)
	}
	if n, err := e.w.ReplayDeadLetters(ctx, ReplayFilter{Tenant: "acme"}); err != nil || n != 0 {
		t.Fatalf("second replay = %d, %v; want 0", n, err)
	}
	if n, _ := e.w.ReplayDeadLetters(ctx, ReplayFilter{Tenant: "other"}); n != 0 {
		t.Error("replay crossed tenants")
	}

	// An operator replays every tenant's dead letters.
	up.Store(false)
	rcC := newReceiver(t, answer)
	e.routes.set(Route{Tenant: "beta", Name: "a", Endpoint: Endpoint{URL: rcC.srv.URL}})
	c1, a3 := submission(t, "a"), submission(t, "a")
	c1.Tenant = "beta"
	deadLetterOne(t, e, c, c1)
	deadLetterOne(t, e, c, a3)
	up.Store(true)
	if _, err := e.w.ReplayDeadLetters(ctx, ReplayFilter{Tenant: "acme", AllTenants: true}); !errors.Is(err, ErrInvalidInput) {
		t.Errorf("tenant with AllTenants = %v, want ErrInvalidInput", err)
	}
	if n, err := e.w.ReplayDeadLetters(ctx, ReplayFilter{AllTenants: true, Route: "a"}); err != nil || n != 2 {
		t.Fatalf("replay all tenants = %d, %v; want 2", n, err)
	}
	if got := rcC.requests(); len(got) != 3 || got[2].header.Get("webhook-id") != c1.ID {
		t.Errorf("tenant beta's receiver got %d requests", len(got))
	}
}

func TestLookupErrors(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	for name, err := range map[string]error{
		"receipt unknown":   func() error { _, err := e.w.Receipt(ctx, "acme", "rcpt_nope"); return err }(),
		"attempts unknown":  func() error { _, err := e.w.Attempts(ctx, "acme", "rcpt_nope"); return err }(),
		"redeliver unknown": e.w.Redeliver(ctx, "acme", "rcpt_nope", ""),
		"receipt no tenant": func() error { _, err := e.w.Receipt(ctx, "", "rcpt_x"); return err }(),
		"replay no tenant":  func() error { _, err := e.w.ReplayDeadLetters(ctx, ReplayFilter{}); return err }(),
		"replay bad route": func() error {
			_, err := e.w.ReplayDeadLetters(ctx, ReplayFilter{Tenant: "acme", Route: "a.>"})
			return err
		}(),
		"attempts wildcard":  func() error { _, err := e.w.Attempts(ctx, "acme", "*"); return err }(),
		"enable bad tenant":  e.w.EnableEndpoint(ctx, "ac me", "r", DefaultEndpoint),
		"redeliver wildcard": e.w.Redeliver(ctx, "acme", ">", ""),
	} {
		want := ErrInvalidInput
		if name == "receipt unknown" || name == "attempts unknown" || name == "redeliver unknown" {
			want = ErrNotFound
		}
		if !errors.Is(err, want) {
			t.Errorf("%s: %v, want %v", name, err, want)
		}
	}
}

// attemptNumbers lists each attempt as "N:scheduled" ("-" for none).
func attemptNumbers(as []Attempt) []string {
	var out []string
	for _, a := range as {
		sched := "-"
		if a.Scheduled > 0 {
			sched = strconv.Itoa(a.Scheduled)
		}
		out = append(out, strconv.Itoa(a.N)+":"+sched)
	}
	return out
}

// TestRedeliverNumbering: a redelivery between two scheduled attempts gets
// a number of its own, and the next scheduled attempt neither repeats it
// nor loses its place in the schedule.
func TestRedeliverNumbering(t *testing.T) {
	c := newClock()
	e := newEnv(t, func(cfg *Config) { cfg.Now = c.now; cfg.Schedule = []time.Duration{0, time.Minute, time.Minute} })
	rc := newReceiver(t, func(w http.ResponseWriter, _ *http.Request, _ int) { w.WriteHeader(500) })
	e.route("invoices", rc, nil)
	ctx := context.Background()
	s := submission(t, "invoices")

	d := &fakeDelivery{}
	e.handle(ctx, s, d) // scheduled attempt 1 fails, the next is due in a minute
	if err := e.w.Redeliver(ctx, "acme", s.ID, ""); !errors.Is(err, ErrDeliveryFailed) {
		t.Fatalf("Redeliver = %v, want ErrDeliveryFailed", err)
	}
	c.advance(d.retries[0])
	e.handle(ctx, s, d) // scheduled attempt 2
	as, err := e.w.Attempts(ctx, "acme", s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got := attemptNumbers(as); !slices.Equal(got, []string{"1:1", "2:-", "3:2"}) {
		t.Errorf("attempts numbered %v, want 1:1 2:- 3:2 (N:scheduled)", got)
	}
	if last := as[len(as)-1]; last.Trigger != TriggerQueue || last.Result != ResultRetry {
		t.Errorf("scheduled attempt 2 = %+v, want a retry: the redelivery used no place in the schedule", last)
	}
}

// TestScheduleThroughJetStream: with a short schedule, JetStream keeps the
// delays and the message ends in the dead-letter stream after the last
// attempt, also across a consumer restart. After the first attempt the
// worker's clock falls a second behind the queue's, so the queue hands
// each retry out before the worker holds it due: no attempt is made before
// the next_at of the attempt before it, by the clock of the worker that
// records both, and the early deliveries are put back (counted as
// deferred).
func TestScheduleThroughJetStream(t *testing.T) {
	clk := &skewedClock{}
	reg := prometheus.NewRegistry()
	e := newEnv(t, func(c *Config) {
		c.Now, c.Registerer = clk.now, reg
		c.Schedule = []time.Duration{0, 200 * time.Millisecond, 200 * time.Millisecond}
	})
	rc := newReceiver(t, func(w http.ResponseWriter, _ *http.Request, _ int) { w.WriteHeader(503) })
	e.route("invoices", rc, nil)
	ctx := context.Background()
	s := submission(t, "invoices")
	if err := e.publisher().Enqueue(ctx, s); err != nil {
		t.Fatal(err)
	}
	cons, err := e.conn.Consume(ctx, queue.ConsumerConfig{Workers: 1}, e.sealer, e.w.Handle)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "first attempt", func() bool { return len(rc.requests()) >= 1 })
	clk.offset.Store(int64(-time.Second))
	cons.Stop(ctx)
	cons, err = e.conn.Consume(ctx, queue.ConsumerConfig{Workers: 1}, e.sealer, e.w.Handle)
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Stop(ctx)
	waitFor(t, "dead letter", func() bool { return slices.Contains(e.audit.actions(s.ID), entry.ActionDeadLettered) })
	if n := len(rc.requests()); n != 3 {
		t.Errorf("receiver got %d requests, want 3", n)
	}
	as, err := e.w.Attempts(ctx, "acme", s.ID)
	if err != nil || len(as) != 3 {
		t.Fatalf("attempts = %d, %v; want 3", len(as), err)
	}
	for i := 1; i < len(as); i++ {
		if as[i].Time.Before(as[i-1].NextAt) {
			t.Errorf("attempt %d at %s came before its due time %s", i+1, as[i].Time, as[i-1].NextAt)
		}
	}
	if n := counter(t, reg, "sealpost_forwarder_deliveries_total", "deferred"); n == 0 {
		t.Error("no early delivery was deferred: the test did not hand a retry out early")
	}
}

// TestEarlierAttemptRecords: an attempt record of an earlier version has
// six fields and no endpoint; listing and export both read it, as the
// default endpoint's.
func TestEarlierAttemptRecords(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	s := submission(t, "invoices")
	old := Attempt{N: 1, Trigger: TriggerQueue, Time: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), Status: 204, Result: ResultDelivered}
	r, err := e.w.attemptRecord(ctx, "acme", "invoices", s.ID, old)
	if err != nil {
		t.Fatal(err)
	}
	r.fields = r.fields[:attemptFieldsBefore] // as written before endpoints
	k, err := groupOf("acme", s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.w.storeRecords(ctx, e.w.cfg.Attempts, attemptSubject(k.tenant, k.group), attemptsFormat, []record{r}, nil); err != nil {
		t.Fatal(err)
	}
	listed, err := e.w.Attempts(ctx, "acme", s.ID)
	if err != nil || len(listed) != 1 || listed[0].Endpoint != DefaultEndpoint {
		t.Errorf("Attempts = %+v, %v; want the earlier record, endpoint %q", listed, err, DefaultEndpoint)
	}
	var exported []Attempt
	if err := e.w.EachAttempt(ctx, "acme", func(id string, a Attempt) error {
		if id == s.ID {
			exported = append(exported, a)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(exported) != 1 || exported[0].Endpoint != DefaultEndpoint {
		t.Errorf("EachAttempt = %+v; want the earlier record, endpoint %q", exported, DefaultEndpoint)
	}
}
