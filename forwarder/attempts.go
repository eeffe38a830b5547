package forwarder

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/sealpost/sealpost/keyring/kms"
	"github.com/sealpost/sealpost/signer"
)

// Attempt is the record of one delivery attempt. It never holds a body.
type Attempt struct {
	// Endpoint is the id of the endpoint it went to.
	Endpoint string `json:"endpoint"`
	// N numbers the attempts of the receipt to this endpoint from 1 in the
	// order they were made, scheduled ones, redeliveries and replays alike,
	// so that no two of them share a number. (Records written before
	// Scheduled existed number scheduled attempts only; a redelivery then
	// repeated the number of the scheduled attempt before it.)
	N int `json:"n"`
	// Scheduled is the attempt's place in the endpoint's retry schedule,
	// from 1, for Trigger "queue"; 0 (omitted) for a redelivery or replay,
	// which uses no place in it.
	Scheduled int `json:"scheduled,omitempty"`
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

// maxAttemptsListed bounds what Attempts returns.
const maxAttemptsListed = 1000

func attemptsContext(tenant, id string) kms.Context {
	return kms.Context{Tenant: tenant, Purpose: kms.PurposeAttempts, ObjectID: id}
}

// An attempt record's fields, in the clear so that the next attempt's
// number and due time are known without opening it: id, place in the
// schedule (Attempt.Scheduled; 0 for a redelivery or replay), result, next
// due time (unix milliseconds rounded up, 0 for none), trigger, error class
// and endpoint. The blob is the sealed Attempt. Attempt.N is not among
// them: an attempt's N is one more than the number of records of the
// receipt and endpoint before it. Records of earlier versions have no
// endpoint field: theirs is DefaultEndpoint.
const (
	attemptFields       = 7
	attemptFieldsBefore = 6
)

// attemptRecord returns the record of attempt a of id, sealed, kept as
// long as route's receipts.
func (w *Worker) attemptRecord(ctx context.Context, tenant, route, id string, a Attempt) (record, error) {
	if a.Endpoint == "" {
		a.Endpoint = DefaultEndpoint
	}
	plain, err := json.Marshal(a)
	if err != nil {
		return record{}, fmt.Errorf("forwarder: encode attempt: %w", err)
	}
	sealed, err := w.cfg.Sealer.Seal(ctx, attemptsContext(tenant, id), plain)
	if err != nil {
		return record{}, fmt.Errorf("forwarder: seal attempt: %w", err)
	}
	next := "0"
	if !a.NextAt.IsZero() {
		// Rounded up, so that the due time read back from the field is
		// never before the NextAt the attempt shows.
		next = strconv.FormatInt(a.NextAt.Add(time.Millisecond-time.Nanosecond).UnixMilli(), 10)
	}
	return record{fields: []string{id, strconv.Itoa(a.Scheduled), a.Result, next, a.Trigger, a.Class, a.Endpoint}, blob: sealed, ttl: w.retention(tenant, route)}, nil
}

// recordAttempt stores one attempt record of id.
func (w *Worker) recordAttempt(ctx context.Context, tenant, route, id string, a Attempt) error {
	k, err := groupOf(tenant, id)
	if err != nil {
		return err
	}
	r, err := w.attemptRecord(ctx, tenant, route, id, a)
	if err != nil {
		return err
	}
	if _, err := w.storeRecords(ctx, w.cfg.Attempts, attemptSubject(k.tenant, k.group), attemptsFormat, []record{r}, nil); err != nil {
		return fmt.Errorf("forwarder: record attempt: %w", err)
	}
	return nil
}

// lastAttempt is what the attempt records of a receipt say of its schedule
// to one endpoint.
type lastAttempt struct {
	count  int       // attempts made, of every trigger
	n      int       // place of the last scheduled attempt; 0 if none was made
	result string    // its result; "" when there is none
	class  string    // its error class
	due    time.Time // when the next attempt is due, if one was scheduled
	// delivered: some attempt, scheduled or not, got a 2xx answer.
	delivered bool
	// resolved: an attempt after the last dead letter delivered it.
	resolved bool
	// failures counts attempts that did not deliver.
	failures int
}

// attemptRecordFields checks a record's fields and returns its endpoint.
func attemptRecordFields(seq uint64, f []string) (n int, ms int64, endpoint string, err error) {
	switch len(f) {
	case attemptFields:
		endpoint = f[6]
	case attemptFieldsBefore:
		endpoint = DefaultEndpoint
	default:
		return 0, 0, "", fmt.Errorf("forwarder: attempt record at seq %d has %d fields", seq, len(f))
	}
	n, err1 := strconv.Atoi(f[1])
	ms, err2 := strconv.ParseInt(f[3], 10, 64)
	if err1 != nil || err2 != nil || n < 0 || endpoint == "" {
		return 0, 0, "", fmt.Errorf("forwarder: attempt record at seq %d is malformed", seq)
	}
	return n, ms, endpoint, nil
}

// lastAttempts returns, for each id of a group with attempt records and
// each endpoint it was attempted to, how many attempts were made, its
// newest scheduled attempt (the schedule is read from records with trigger
// "queue" only) and whether any attempt delivered it.
func (w *Worker) lastAttempts(ctx context.Context, k groupKey) (map[string]map[string]lastAttempt, error) {
	out := map[string]map[string]lastAttempt{}
	err := eachRecord(ctx, w.cfg.Attempts, attemptSubject(k.tenant, k.group), attemptsFormat, func(seq uint64, f []string, _ []byte) error {
		n, ms, ep, err := attemptRecordFields(seq, f)
		if err != nil {
			return err
		}
		byEP := out[f[0]]
		if byEP == nil {
			byEP = map[string]lastAttempt{}
			out[f[0]] = byEP
		}
		byEP[ep] = foldAttempt(byEP[ep], n, ms, f[2], f[4], f[5])
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("forwarder: read attempts: %w", err)
	}
	return out, nil
}

// foldAttempt adds one record (in stream order) to what is known.
func foldAttempt(last lastAttempt, n int, ms int64, result, trigger, class string) lastAttempt {
	last.count++
	if result == ResultDelivered {
		last.delivered = true
		if last.result == ResultDeadLettered {
			last.resolved = true
		}
	} else {
		last.failures++
	}
	if trigger == TriggerQueue {
		last.n, last.result, last.class, last.due = n, result, class, time.Time{}
		if ms > 0 {
			last.due = time.UnixMilli(ms)
		}
	}
	return last
}

// openAttempt opens the sealed Attempt of a record of id stored at seq.
// Attempts of earlier versions name no endpoint: theirs is DefaultEndpoint.
func (w *Worker) openAttempt(ctx context.Context, tenant, id string, seq uint64, blob []byte) (Attempt, error) {
	plain, err := w.cfg.Sealer.Open(ctx, attemptsContext(tenant, id), blob)
	if err != nil {
		return Attempt{}, fmt.Errorf("forwarder: open attempt at seq %d: %w", seq, err)
	}
	var a Attempt
	if err := json.Unmarshal(plain, &a); err != nil {
		return Attempt{}, fmt.Errorf("forwarder: decode attempt at seq %d: %w", seq, err)
	}
	if a.Endpoint == "" {
		a.Endpoint = DefaultEndpoint
	}
	return a, nil
}

// Attempts lists the recorded attempts of a receipt, oldest first (at most
// 1000). A receipt without attempts yields ErrNotFound.
func (w *Worker) Attempts(ctx context.Context, tenant, id string) ([]Attempt, error) {
	if err := cmp.Or(checkTenant(tenant), checkID(id)); err != nil {
		return nil, err
	}
	k, err := groupOf(tenant, id)
	if err != nil {
		return nil, fmt.Errorf("%w: no attempts for %s", ErrNotFound, signer.Truncate(id, 64))
	}
	var out []Attempt
	err = eachRecord(ctx, w.cfg.Attempts, attemptSubject(k.tenant, k.group), attemptsFormat, func(seq uint64, f []string, blob []byte) error {
		if (len(f) != attemptFields && len(f) != attemptFieldsBefore) || f[0] != id {
			return nil
		}
		a, err := w.openAttempt(ctx, tenant, id, seq, blob)
		if err != nil {
			return err
		}
		out = append(out, a)
		if len(out) >= maxAttemptsListed {
			return errStop
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no attempts for %s", ErrNotFound, id)
	}
	return out, nil
}
