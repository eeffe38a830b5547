package forwarder

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sealpost/sealpost/audit/entry"
	"github.com/sealpost/sealpost/ingress"
	"github.com/sealpost/sealpost/queue"
	"github.com/sealpost/sealpost/signer"
)

// waitFor polls cond until it holds or 20s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func keySet(keys ...signer.PrivateKey) *signer.KeySet {
	ks := &signer.KeySet{}
	for _, k := range keys {
		ks.Keys = append(ks.Keys, signer.PublicKey{KID: k.KID, Key: k.Public()})
	}
	return ks
}

// TestDeliverThroughQueue runs the whole path: enqueue to INGEST, consume,
// sign, store, POST, ack.
func TestDeliverThroughQueue(t *testing.T) {
	e := newEnv(t, nil)
	rc := newReceiver(t, nil)
	e.route("invoices", rc, nil)
	ctx := context.Background()
	s := submission(t, "invoices")
	if err := e.publisher().Enqueue(ctx, s); err != nil {
		t.Fatal(err)
	}
	cons, err := e.conn.Consume(ctx, queue.ConsumerConfig{Workers: 2}, e.sealer, e.w.Handle)
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Stop(ctx)
	waitFor(t, "delivered audit entry", func() bool {
		return slices.Contains(e.audit.actions(s.ID), entry.ActionDelivered)
	})
	reqs := rc.requests()
	if len(reqs) != 1 {
		t.Fatalf("receiver got %d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if got := r.header.Get("webhook-id"); got != s.ID {
		t.Errorf("webhook-id = %q, want %q", got, s.ID)
	}
	if got := r.header.Get("content-type"); got != "application/json" {
		t.Errorf("content-type = %q", got)
	}
	ts, err := strconv.ParseInt(r.header.Get("webhook-timestamp"), 10, 64)
	if err != nil {
		t.Fatalf("webhook-timestamp: %v", err)
	}
	if err := signer.VerifyWebhookV1a(e.keys.current.Public(), s.ID, ts, r.body, r.header.Get("webhook-signature")); err != nil {
		t.Errorf("v1a signature: %v", err)
	}
	v, err := signer.Verify(r.body, keySet(e.keys.current))
	if err != nil {
		t.Fatalf("receipt does not verify: %v", err)
	}
	if !v.PayloadPresent || v.Receipt.ID != s.ID || v.Receipt.Tenant != "acme" || v.Receipt.Route != "invoices" {
		t.Errorf("verified receipt = %+v", v)
	}
	if v.Receipt.KID != signer.Thumbprint(e.keys.current.Public()) {
		t.Errorf("kid %q is not the key's thumbprint", v.Receipt.KID)
	}
	stored, err := e.w.Receipt(ctx, "acme", s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if string(stored) != string(r.body) {
		t.Error("stored receipt differs from the webhook body")
	}
	if got, want := e.audit.actions(s.ID), []string{entry.ActionSigned, entry.ActionDelivered}; !slices.Equal(got, want) {
		t.Errorf("audit actions = %v, want %v", got, want)
	}
	as, err := e.w.Attempts(ctx, "acme", s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(as) != 1 || as[0].Result != ResultDelivered || as[0].Status != http.StatusNoContent || as[0].N != 1 {
		t.Errorf("attempts = %+v", as)
	}
	// The message was acked: it left INGEST, so nothing else can arrive.
	waitFor(t, "ack", func() bool { return ingestMessages(t, e.conn) == 0 })
	if n := len(rc.requests()); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
}

// ingestMessages is the number of messages in INGEST, from the queue's
// metrics.
func ingestMessages(t *testing.T, c *queue.Conn) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(c.Collector(""))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "sealpost_queue_stream_messages" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "stream" && l.GetValue() == "INGEST" {
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	t.Fatal("no INGEST message count")
	return 0
}

// TestSameReceiptOnRetry checks that every attempt sends the same signed
// envelope (id, signed_at, signature), signed once.
func TestSameReceiptOnRetry(t *testing.T) {
	clock := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	e := newEnv(t, func(c *Config) { c.Now = func() time.Time { return clock } })
	rc := newReceiver(t, func(w http.ResponseWriter, _ *http.Request, n int) {
		if n < 3 {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	e.route("invoices", rc, nil)
	s := submission(t, "invoices")
	ctx := context.Background()
	var decisions []string
	for range 3 {
		d := &fakeDelivery{}
		e.handle(ctx, s, d)
		decisions = append(decisions, d.decision())
		clock = clock.Add(time.Hour)
	}
	if want := []string{"retry", "retry", "ack"}; !slices.Equal(decisions, want) {
		t.Fatalf("decisions = %v, want %v", decisions, want)
	}
	reqs := rc.requests()
	for i, r := range reqs[1:] {
		if string(r.body) != string(reqs[0].body) {
			t.Errorf("attempt %d sent another body", i+2)
		}
		if r.header.Get("webhook-id") != s.ID {
			t.Errorf("attempt %d webhook-id = %q", i+2, r.header.Get("webhook-id"))
		}
		if r.header.Get("webhook-timestamp") == reqs[0].header.Get("webhook-timestamp") {
			t.Errorf("attempt %d reused the first webhook-timestamp", i+2)
		}
	}
	var env struct {
		Receipt signer.Receipt `json:"receipt"`
	}
	if err := json.Unmarshal(reqs[2].body, &env); err != nil {
		t.Fatal(err)
	}
	if want := signer.FormatTime(time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)); env.Receipt.SignedAt != want {
		t.Errorf("signed_at = %s, want the first attempt's %s", env.Receipt.SignedAt, want)
	}
	want := []string{entry.ActionSigned, entry.ActionFailed, entry.ActionFailed, entry.ActionDelivered}
	if got := e.audit.actions(s.ID); !slices.Equal(got, want) {
		t.Errorf("audit = %v, want %v", got, want)
	}
}

// TestDeliveredNotPostedAgain: the POST succeeded but its audit entry could
// not be written, so the message was not acked. When it comes back it is
// audited and acked without a second POST, and never dead-lettered.
func TestDeliveredNotPostedAgain(t *testing.T) {
	c, e, rc, s := oneRoute(t)
	e.audit.failAction = entry.ActionDelivered
	for range len(e.w.cfg.Schedule) + 2 {
		d := &fakeDelivery{}
		e.handle(context.Background(), s, d)
		if d.acked || len(d.retries) != 1 {
			t.Fatalf("decision = %s while the audit log refuses message.delivered, want retry", d.decision())
		}
		c.advance(d.retries[0])
	}
	e.audit.failAction = ""
	d := &fakeDelivery{}
	e.handle(context.Background(), s, d)
	if !d.acked {
		t.Fatalf("decision = %s after the audit log came back, want ack", d.decision())
	}
	if n := len(rc.requests()); n != 1 {
		t.Errorf("the receiver got %d POSTs, want 1", n)
	}
	if acts := e.audit.actions(s.ID); slices.Contains(acts, entry.ActionDeadLettered) || acts[len(acts)-1] != entry.ActionDelivered {
		t.Errorf("audit trail %v", acts)
	}
}

// TestRequeuedCopyReadsRecords: the same, when the copy comes back not as
// a redelivery of its message but requeued alone with no attempt counted
// (as when another submission of its INGEST message changed): the records
// of the first handout still count, so there is no second POST and no
// second attempt numbered 1.
func TestRequeuedCopyReadsRecords(t *testing.T) {
	c, e, rc, s := oneRoute(t)
	e.audit.failAction = entry.ActionDelivered
	d := &fakeDelivery{}
	e.handle(context.Background(), s, d)
	if d.acked || len(d.retries) != 1 {
		t.Fatalf("decision = %s while the audit log refuses message.delivered, want retry", d.decision())
	}
	c.advance(d.retries[0])
	e.audit.failAction = ""
	e.queued[s.ID] = queued{attempt: 0, due: c.now()} // requeued alone, not redelivered
	d = &fakeDelivery{}
	e.handle(context.Background(), s, d)
	if !d.acked {
		t.Fatalf("decision = %s, want ack", d.decision())
	}
	if n := len(rc.requests()); n != 1 {
		t.Errorf("the receiver got %d POSTs, want 1", n)
	}
	if as, err := e.w.Attempts(context.Background(), "acme", s.ID); err != nil || len(as) != 1 {
		t.Errorf("attempts = %+v, %v; want one", as, err)
	}
}

// TestNotAckedBeforeAudit: a delivery whose audit entry cannot be written is
// not acked; it is retried.
func TestNotAckedBeforeAudit(t *testing.T) {
	c, e, _, s := oneRoute(t)
	e.audit.fail = true
	d := &fakeDelivery{}
	e.handle(context.Background(), s, d)
	if d.acked || len(d.retries) != 1 {
		t.Fatalf("decision = %s, want retry", d.decision())
	}
	if _, err := e.w.Receipt(context.Background(), "acme", s.ID); err == nil {
		t.Error("a receipt was stored without its message.signed entry")
	}
	c.advance(d.retries[0])
	e.audit.fail = false
	d = &fakeDelivery{}
	e.handle(context.Background(), s, d)
	if !d.acked {
		t.Fatalf("decision = %s after the audit log came back, want ack", d.decision())
	}
}

// TestFirstStoredReceiptWins: a second copy of a submission handed out as
// new (a sender's retry whose first copy was queued after all) signs a
// receipt of its own, but finds the one stored first and sends that: the
// receiver gets the same body twice, never two receipts for one id.
func TestFirstStoredReceiptWins(t *testing.T) {
	c := newClock()
	e := newEnv(t, func(cfg *Config) { cfg.Now = c.now })
	rc := newReceiver(t, nil)
	e.route("invoices", rc, nil)
	var ids ingress.IDs
	s := submission(t, "invoices")
	other := submission(t, "invoices")
	s.ID, other.ID = ids.New(s.ReceivedAt), ids.New(s.ReceivedAt) // one id group
	ctx := context.Background()
	outs := e.w.Handle(ctx, []*queue.Delivery{{Submission: s}})
	if outs[0].IsRetry() {
		t.Fatal("first copy not delivered")
	}
	c.advance(time.Second) // a later signed_at, if it were signed again
	outs = e.w.Handle(ctx, []*queue.Delivery{{Submission: s}, {Submission: other}})
	if outs[0].IsRetry() || outs[1].IsRetry() {
		t.Fatal("second copy not delivered")
	}
	// A third copy on another instance, which knows nothing of the group
	// yet: its write meets the stored ones and it reads them.
	w2, err := New(e.w.cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.advance(time.Second)
	if outs := w2.Handle(ctx, []*queue.Delivery{{Submission: s}}); outs[0].IsRetry() {
		t.Fatal("third copy not delivered")
	}
	reqs := rc.requests()
	if len(reqs) != 4 {
		t.Fatalf("%d requests, want 4", len(reqs))
	}
	var bodies [][]byte
	for _, r := range reqs {
		if r.header.Get("webhook-id") == s.ID {
			bodies = append(bodies, r.body)
		}
	}
	first := bodies[0]
	for i, b := range bodies[1:] {
		if !bytes.Equal(first, b) {
			t.Fatalf("copy %d sent another receipt:\n%s\n%s", i+2, first, b)
		}
	}
	stored, err := e.w.Receipt(ctx, "acme", s.ID)
	if err != nil || !bytes.Equal(stored, first) {
		t.Fatalf("stored receipt differs from the one sent (%v)", err)
	}
	if stored, err := e.w.Receipt(ctx, "acme", other.ID); err != nil || len(stored) == 0 {
		t.Fatalf("the other receipt of the group: %v", err)
	}
}

// oneRoute is an env on a controllable clock with route "invoices" posting
// to a receiver, and a submission to it.
func oneRoute(t *testing.T) (*clock, *env, *receiver, *ingress.Submission) {
	t.Helper()
	c := newClock()
	e := newEnv(t, func(cfg *Config) { cfg.Now = c.now })
	rc := newReceiver(t, nil)
	e.route("invoices", rc, nil)
	return c, e, rc, submission(t, "invoices")
}
