package forwarder

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/sealpost/sealpost/audit/entry"
	"github.com/sealpost/sealpost/ingress"
	"github.com/sealpost/sealpost/queue"
	"github.com/sealpost/sealpost/signer"
)

// testRetention keeps the "short" route 2 seconds and every other route
// forever.
type testRetention struct{}

func (testRetention) Retention(_, route string) time.Duration {
	if route == "short" {
		return 2 * time.Second
	}
	return 0
}
func (testRetention) TenantRetention(string) time.Duration { return 0 }
func (testRetention) Durations() []time.Duration           { return []time.Duration{2 * time.Second} }

// TestRetentionExpiry delivers a receipt on a route with a 2-second
// retention and one on a route without: the audit log counts what expires
// in each window on the worker's clock, and the store then removes the
// short route's receipt and attempts while the other stays.
func TestRetentionExpiry(t *testing.T) {
	ctx := context.Background()
	clock := time.Now()
	e := newEnv(t, func(c *Config) {
		c.Retention = testRetention{}
		c.Now = func() time.Time { return clock }
	})
	rc := newReceiver(t, nil)
	e.route("short", rc, nil)
	e.route("long", rc, nil)
	short, long := submission(t, "short"), submission(t, "long")
	for _, s := range []*ingress.Submission{short, long} {
		d := &fakeDelivery{}
		e.handle(ctx, s, d)
		if !d.acked {
			t.Fatalf("%s: %s", s.Route, d.decision())
		}
	}
	// The first count starts the cursor; the next counts the window.
	if err := e.w.CountExpiry(ctx, time.Now().Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := e.w.CountExpiry(ctx, time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	var got *entry.Entry
	for _, en := range e.audit.entries {
		if en.Action == ActionExpire {
			got = &en
		}
	}
	if got == nil || got.Tenant != "acme" || got.Details["receipts"] != "1" || got.Details["attempts"] != "1" || got.Details["dead_letters"] != "0" {
		t.Fatalf("expiry entry %+v, want 1 receipt and 1 attempt of acme", got)
	}
	// A window already counted is not counted again.
	n := len(e.audit.entries)
	if err := e.w.CountExpiry(ctx, time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if len(e.audit.entries) != n {
		t.Fatalf("a counted window was counted again: %v", e.audit.entries[n:])
	}

	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := e.w.Receipt(ctx, "acme", short.ID)
		if errors.Is(err, ErrNotFound) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the short route's receipt did not expire within 20s of a 2s retention")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, err := e.w.Attempts(ctx, "acme", short.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("attempts of the expired receipt: %v", err)
	}
	if _, err := e.w.Receipt(ctx, "acme", long.ID); err != nil {
		t.Fatalf("the long route's receipt: %v", err)
	}
}

// TestDeleteReceipt deletes a delivered receipt: the stored envelope
// loses its payload and still verifies, another receipt of the same group
// is untouched, and a receipt still being retried is refused.
func TestDeleteReceipt(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, nil)
	failing := false
	rc := newReceiver(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
		if failing {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	e.route("invoices", rc, nil)
	a, b := submission(t, "invoices"), submission(t, "invoices")
	out := e.w.Handle(ctx, deliveries(a, b))
	if out[0].IsRetry() || out[1].IsRetry() {
		t.Fatal("not delivered")
	}
	del, err := e.w.DeleteReceipt(WithActor(ctx, "admin"), "acme", a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if del.Route != "invoices" {
		t.Fatalf("deleted %+v", del)
	}
	env, err := e.w.Receipt(ctx, "acme", a.ID)
	if err != nil {
		t.Fatal(err)
	}
	keys := keySet(e.keys.current)
	v, err := signer.Verify(env, keys)
	if err != nil {
		t.Fatalf("the receipt without payload does not verify: %v\n%s", err, env)
	}
	if v.PayloadPresent {
		t.Fatalf("payload still present: %s", env)
	}
	envB, err := e.w.Receipt(ctx, "acme", b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if vb, err := signer.Verify(envB, keys); err != nil || !vb.PayloadPresent {
		t.Fatalf("the other receipt of the group: %v", err)
	}
	if !slices.Contains(e.audit.actions(a.ID), entry.ActionDeleted) {
		t.Fatalf("no %s entry: %v", entry.ActionDeleted, e.audit.actions(a.ID))
	}

	failing = true
	c := submission(t, "invoices")
	if out := e.w.Handle(ctx, deliveries(c)); !out[0].IsRetry() {
		t.Fatal("delivered although the endpoint fails")
	}
	if _, err := e.w.DeleteReceipt(ctx, "acme", c.ID); !errors.Is(err, ErrPending) {
		t.Fatalf("deleting a pending receipt: %v", err)
	}
	if _, err := e.w.DeleteReceipt(ctx, "acme", "rcpt_01JD7ZZZZZZZZZZZZZZZZZZZZZ"); !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrPending) {
		t.Fatalf("deleting an unknown receipt: %v", err)
	}
}

// deliveries wraps submissions as first deliveries.
func deliveries(ss ...*ingress.Submission) []*queue.Delivery {
	ds := make([]*queue.Delivery, len(ss))
	for i, s := range ss {
		ds[i] = &queue.Delivery{Submission: s}
	}
	return ds
}
