package forwarder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/sealpost/sealpost/keyring/kms"
	"github.com/sealpost/sealpost/queue"
)

// Attempt is the record of one delivery attempt. It never holds a body.
type Attempt struct {
	// N is the number of the scheduled attempt, from 1. Redeliveries and
	// replays repeat the number of the last scheduled attempt.
	N int `json:"n"`
	// Trigger is "queue" (the retry schedule), "redeliver" or "replay".
	Trigger string `json:"trigger"`
	// Time the attempt started, UTC.
	Time time.Time `json:"time"`
	// Status is the HTTP status of the answer; 0 when none came.
	Status int `json:"status,omitempty"`
	// LatencyMS is the time from sending the request to reading the answer.
	LatencyMS float64 `json:"latency_ms"`
	// Class is empty for a 2xx answer, otherwise one of timeout, connect,
	// tls, status, redirect, ssrf, breaker_open, disabled.
	Class string `json:"class,omitempty"`
	// Result is "delivered", "retry", "dead_lettered" or "failed" (an inline
	// redelivery that did not get a 2xx).
	Result string `json:"result"`
	// NextAt is when the next attempt is due, for Result "retry".
	NextAt time.Time `json:"next_at,omitzero"`
}

// Triggers and results of attempts.
const (
	TriggerQueue     = "queue"
	TriggerRedeliver = "redeliver"
	TriggerReplay    = "replay"

	ResultDelivered    = "delivered"
	ResultRetry        = "retry"
	ResultDeadLettered = "dead_lettered"
	ResultFailed       = "failed"
)

// hdrAttempt and hdrNextAt carry Attempt.N and Attempt.NextAt (unix
// milliseconds) in the clear, so the next attempt's number and due time
// are known without opening the record.
const (
	hdrAttempt = "Sealpost-Attempt"
	hdrNextAt  = "Sealpost-Next-At"
	// hdrResult carries Attempt.Result, so that a redelivered message whose
	// last attempt succeeded is acked, not posted again.
	hdrResult = "Sealpost-Result"
)

// maxAttemptsListed bounds what Attempts returns.
const maxAttemptsListed = 1000

func attemptsSubject(tenant, id string) string { return "attempts." + tenant + "." + id }

func attemptsContext(tenant, id string) kms.Context {
	return kms.Context{Tenant: tenant, Purpose: kms.PurposeAttempts, ObjectID: id}
}

// recordAttempt appends a sealed attempt record.
func (w *Worker) recordAttempt(ctx context.Context, tenant, id string, a Attempt) error {
	plain, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("forwarder: encode attempt: %w", err)
	}
	sealed, err := w.cfg.Sealer.Seal(ctx, attemptsContext(tenant, id), plain)
	if err != nil {
		return fmt.Errorf("forwarder: seal attempt: %w", err)
	}
	h := map[string]string{hdrAttempt: strconv.Itoa(a.N), hdrResult: a.Result}
	if !a.NextAt.IsZero() {
		h[hdrNextAt] = strconv.FormatInt(a.NextAt.UnixMilli(), 10)
	}
	if _, err := w.cfg.Attempts.Append(ctx, attemptsSubject(tenant, id), "", h, sealed); err != nil {
		return fmt.Errorf("forwarder: record attempt: %w", err)
	}
	return nil
}

// lastAttempt is what the newest attempt record of a receipt says.
type lastAttempt struct {
	n         int       // number of the last scheduled attempt; 0 if none was made
	due       time.Time // when the next attempt is due, if one was scheduled
	delivered bool      // the last attempt succeeded
}

// lastAttempt reads the newest attempt record of a receipt from its
// headers, without opening it.
func (w *Worker) lastAttempt(ctx context.Context, tenant, id string) (lastAttempt, error) {
	m, err := w.cfg.Attempts.Last(ctx, attemptsSubject(tenant, id))
	if errors.Is(err, queue.ErrNotFound) {
		return lastAttempt{}, nil
	}
	if err != nil {
		return lastAttempt{}, fmt.Errorf("forwarder: last attempt: %w", err)
	}
	n, err := strconv.Atoi(m.Header[hdrAttempt])
	if err != nil || n < 0 {
		return lastAttempt{}, fmt.Errorf("forwarder: attempt record without a number")
	}
	last := lastAttempt{n: n, delivered: m.Header[hdrResult] == ResultDelivered}
	if v := m.Header[hdrNextAt]; v != "" {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return lastAttempt{}, fmt.Errorf("forwarder: attempt record with a bad due time")
		}
		last.due = time.UnixMilli(ms)
	}
	return last, nil
}

// Attempts lists the recorded attempts of a receipt, oldest first (at most
// 1000). A receipt without attempts yields ErrNotFound.
func (w *Worker) Attempts(ctx context.Context, tenant, id string) ([]Attempt, error) {
	if err := checkTokens(tenant, id); err != nil {
		return nil, err
	}
	var out []Attempt
	errEnough := errors.New("enough")
	err := w.cfg.Attempts.Read(ctx, queue.ReadOptions{Filter: attemptsSubject(tenant, id)}, func(m *queue.Msg) error {
		plain, err := w.cfg.Sealer.Open(ctx, attemptsContext(tenant, id), m.Data)
		if err != nil {
			return fmt.Errorf("forwarder: open attempt %d: %w", m.Seq, err)
		}
		var a Attempt
		if err := json.Unmarshal(plain, &a); err != nil {
			return fmt.Errorf("forwarder: decode attempt %d: %w", m.Seq, err)
		}
		out = append(out, a)
		if len(out) >= maxAttemptsListed {
			return errEnough
		}
		return nil
	})
	if err != nil && !errors.Is(err, errEnough) {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no attempts for %s", ErrNotFound, id)
	}
	return out, nil
}
