package audit

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/sealpost/sealpost/ingress"
)

// EnqueueTimeout bounds how long an ingress waits for a message's audit
// entries when the store is slow or down.
const EnqueueTimeout = time.Second

// Enqueuer is what both ingresses hand submissions to: the next enqueuer
// (the sealing publisher) with message.received recorded before and
// message.queued once the queue acknowledged. Nothing is accepted while
// the log failed its integrity check, nor without its received entry.
type Enqueuer struct {
	Next ingress.Enqueuer
	Log  EnqueueLog
	// Logger receives failures of the queued entry. Default: discard.
	Logger *slog.Logger
}

// EnqueueLog is what Enqueuer needs of the log; *Log is one.
type EnqueueLog interface {
	Append(ctx context.Context, e Entry) error
	AppendAsync(ctx context.Context, es ...Entry) error
	Consistent() error
}

var (
	_ ingress.Enqueuer = (*Enqueuer)(nil)
	_ EnqueueLog       = (*Log)(nil)
)

// Enqueue implements ingress.Enqueuer.
func (a *Enqueuer) Enqueue(ctx context.Context, s *ingress.Submission) error {
	// Nothing is accepted into a log that failed its integrity check:
	// senders retry (451, 503) until an operator has dealt with it.
	if a.Log.Consistent() != nil {
		return fmt.Errorf("%w: ingest suspended: the audit log failed its integrity check", ingress.ErrUnavailable)
	}
	details := map[string]string{"route": s.Route, "channel": s.Channel, "raw_size": strconv.FormatInt(s.RawSize, 10)}
	// No message is accepted without its "received" entry: when the audit
	// log cannot take it, the sender gets a temporary failure and retries.
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), EnqueueTimeout)
	err := a.Log.Append(actx, Entry{Time: s.ReceivedAt, Actor: s.Channel, Action: ActionReceived,
		Tenant: s.Tenant, Target: s.ID, Outcome: OutcomeSuccess, Details: details})
	cancel()
	if err != nil {
		return ingress.Temporary(fmt.Errorf("audit: %w", err))
	}
	if err := a.Next.Enqueue(ctx, s); err != nil {
		return err
	}
	// The message is durable now. Its "queued" entry is written without
	// holding up the answer; a failure is logged and counted, and does not
	// turn an accepted message into a retry (the worker's "signed" entry
	// follows in any case).
	actx, cancel = context.WithTimeout(context.WithoutCancel(ctx), EnqueueTimeout)
	defer cancel()
	if err := a.Log.AppendAsync(actx, Entry{Actor: s.Channel, Action: ActionQueued, Tenant: s.Tenant,
		Target: s.ID, Outcome: OutcomeSuccess, Details: details}); err != nil && a.Logger != nil {
		a.Logger.Error("audit append failed", "action", ActionQueued, "id", s.ID, "err", err)
	}
	return nil
}
