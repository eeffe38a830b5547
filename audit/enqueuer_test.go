package audit_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/sealpost/sealpost/audit"
	"github.com/sealpost/sealpost/ingress"
)

type failingAudit struct {
	mu         sync.Mutex
	failAction string
	got        []string
	broken     error
}

func (f *failingAudit) Consistent() error { return f.broken }

func (f *failingAudit) Append(_ context.Context, e audit.Entry) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if e.Action == f.failAction {
		return errors.New("audit store down")
	}
	f.got = append(f.got, e.Action)
	return nil
}

func (f *failingAudit) AppendAsync(ctx context.Context, es ...audit.Entry) error {
	for _, e := range es {
		if err := f.Append(ctx, e); err != nil {
			return err
		}
	}
	return nil
}

type countingEnqueuer struct{ n int }

func (c *countingEnqueuer) Enqueue(context.Context, *ingress.Submission) error {
	c.n++
	return nil
}

// TestNotAcceptedWithoutReceivedEntry: a message whose "received" entry
// cannot be written is refused with a temporary error and never queued; a
// failed "queued" entry after the queue acknowledged does not undo the
// acceptance.
func TestNotAcceptedWithoutReceivedEntry(t *testing.T) {
	sub := &ingress.Submission{ID: "rcpt_1", Tenant: "acme", Route: "invoices", Channel: "https", ReceivedAt: time.Now()}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	aud, q := &failingAudit{failAction: audit.ActionReceived}, &countingEnqueuer{}
	err := (&audit.Enqueuer{Next: q, Log: aud, Logger: log}).Enqueue(context.Background(), sub)
	if !ingress.IsTemporary(err) || q.n != 0 {
		t.Fatalf("audit down: err %v, %d queued; want a temporary error and nothing queued", err, q.n)
	}

	aud, q = &failingAudit{failAction: audit.ActionQueued}, &countingEnqueuer{}
	if err := (&audit.Enqueuer{Next: q, Log: aud, Logger: log}).Enqueue(context.Background(), sub); err != nil || q.n != 1 {
		t.Fatalf("queued entry failed: err %v, %d queued; want accepted once", err, q.n)
	}
	if len(aud.got) != 1 || aud.got[0] != audit.ActionReceived {
		t.Errorf("entries %v", aud.got)
	}

	// An inconsistent audit log takes nothing, and writes nothing to it.
	aud, q = &failingAudit{broken: audit.ErrRollback}, &countingEnqueuer{}
	err = (&audit.Enqueuer{Next: q, Log: aud, Logger: log}).Enqueue(context.Background(), sub)
	if !errors.Is(err, ingress.ErrUnavailable) || q.n != 0 || len(aud.got) != 0 {
		t.Fatalf("inconsistent log: err %v, %d queued, entries %v; want unavailable and nothing done", err, q.n, aud.got)
	}
}
