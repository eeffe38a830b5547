package forwarder

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sealpost/sealpost/audit/entry"
	"github.com/sealpost/sealpost/queue"
)

// RetentionPolicy says how long a tenant's data is kept.
type RetentionPolicy interface {
	// Retention is how long the receipts, attempt records and dead letters
	// of tenant's route are kept; 0 keeps them (up to the streams' own
	// limits).
	Retention(tenant, route string) time.Duration
	// TenantRetention is the longest retention of tenant's routes: how
	// long its attachments, which are shared by the tenant's routes, are
	// kept.
	TenantRetention(tenant string) time.Duration
	// Durations lists every distinct retention in use.
	Durations() []time.Duration
}

// retention is the time to live of route's records.
func (w *Worker) retention(tenant, route string) time.Duration {
	if w.cfg.Retention == nil {
		return 0
	}
	return w.cfg.Retention.Retention(tenant, route)
}

// ttlHeader adds the time to live of route's records to hdr.
func (w *Worker) ttlHeader(hdr map[string]string, tenant, route string) map[string]string {
	if d := w.retention(tenant, route); d > 0 {
		hdr[queue.HeaderTTL] = queue.TTLValue(d)
	}
	return hdr
}

// Actions of retention in the audit log.
const (
	// ActionExpire records, per tenant, how many records of each kind
	// expire within a window. Only counts: never ids or content.
	ActionExpire = "retention.expire"
)

// retentionCursorKey holds, in the endpoint state bucket, the end of the
// last window whose expiry was counted (unix milliseconds).
const retentionCursorKey = "retention.cursor"

// maxRetentionWindow bounds one counting window; a longer gap (the job was
// not running) is counted from its end, and the gap is recorded.
const maxRetentionWindow = 24 * time.Hour

// expiryCount is what expires of one tenant's data in a window.
type expiryCount struct {
	receipts, attempts, deadLetters, attachments int
}

// CountExpiry records in the audit log how many of each tenant's records
// expire between the end of the last counted window and until, and
// removes the tenant's attachments that have outlived its retention. The
// store removes the records itself when their time to live ends (it
// needs no sweeper): this counts them shortly before, from message
// headers, so that the audit log shows what went, never what it was. One
// instance should run it at a time (cmd/sealpost holds a lease).
func (w *Worker) CountExpiry(ctx context.Context, until time.Time) error {
	if w.cfg.Retention == nil {
		return nil
	}
	from := until
	raw, rev, err := w.cfg.EndpointState.Get(ctx, retentionCursorKey)
	switch {
	case errors.Is(err, queue.ErrNotFound):
	case err != nil:
		return fmt.Errorf("forwarder: retention cursor: %w", err)
	default:
		ms, perr := strconv.ParseInt(string(raw), 10, 64)
		if perr == nil {
			from = time.UnixMilli(ms)
		}
	}
	details := map[string]string{}
	if until.Sub(from) > maxRetentionWindow {
		details["gap_from"] = from.UTC().Format(time.RFC3339)
		from = until.Add(-maxRetentionWindow)
	}
	if !until.After(from) && rev != 0 {
		return nil
	}
	counts := map[string]*expiryCount{}
	get := func(tenant string) *expiryCount {
		c := counts[tenant]
		if c == nil {
			c = &expiryCount{}
			counts[tenant] = c
		}
		return c
	}
	for _, d := range w.cfg.Retention.Durations() {
		if d <= 0 {
			continue
		}
		for _, k := range []struct {
			s   *queue.Stream
			add func(c *expiryCount, n int)
		}{
			{w.cfg.Receipts, func(c *expiryCount, n int) { c.receipts += n }},
			{w.cfg.Attempts, func(c *expiryCount, n int) { c.attempts += n }},
			{w.cfg.DeadLetters, func(c *expiryCount, n int) { c.deadLetters += n }},
		} {
			if err := countStored(ctx, k.s, from.Add(-d), until.Add(-d), queue.TTLValue(d), func(tenant string, n int) {
				k.add(get(tenant), n)
			}); err != nil {
				return err
			}
		}
	}
	if w.cfg.Attachments != nil {
		if err := w.expireAttachments(ctx, until, func(tenant string) { get(tenant).attachments++ }); err != nil {
			return err
		}
	}
	var es []entry.Entry
	for _, tenant := range slices.Sorted(maps.Keys(counts)) {
		c := counts[tenant]
		d := map[string]string{
			"from": from.UTC().Format(time.RFC3339), "until": until.UTC().Format(time.RFC3339),
			"receipts": strconv.Itoa(c.receipts), "attempts": strconv.Itoa(c.attempts),
			"dead_letters": strconv.Itoa(c.deadLetters), "attachments": strconv.Itoa(c.attachments),
		}
		maps.Copy(d, details)
		es = append(es, entry.Entry{Actor: "system", Action: ActionExpire, Tenant: tenant, Target: "retention",
			Outcome: entry.OutcomeSuccess, Details: d})
	}
	if err := w.auditAll(ctx, es...); err != nil {
		return err
	}
	val := []byte(strconv.FormatInt(until.UnixMilli(), 10))
	if rev == 0 {
		_, err = w.cfg.EndpointState.Create(ctx, retentionCursorKey, val)
	} else {
		_, err = w.cfg.EndpointState.Update(ctx, retentionCursorKey, val, rev)
	}
	if err != nil {
		return fmt.Errorf("forwarder: retention cursor: %w", err)
	}
	return nil
}

// countStored calls add with the tenant and record count of every message
// of s stored in [from, to) whose time to live is ttl.
func countStored(ctx context.Context, s *queue.Stream, from, to time.Time, ttl string, add func(tenant string, n int)) error {
	err := s.Read(ctx, queue.ReadOptions{StartTime: from, HeadersOnly: true}, func(m *queue.Msg) error {
		if !m.Time.Before(to) {
			return errStop
		}
		if m.Header[queue.HeaderTTL] != ttl {
			return nil
		}
		tok := strings.SplitN(m.Subject, ".", 3)
		if len(tok) < 3 {
			return nil
		}
		n := 1
		if v, err := strconv.Atoi(m.Header[hdrRecords]); err == nil && v > 0 {
			n = v
		}
		add(tok[1], n)
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return fmt.Errorf("forwarder: count expiry in %s: %w", s.Name(), err)
	}
	return nil
}

// expireAttachments erases the attachments older than their tenant's
// longest retention.
func (w *Worker) expireAttachments(ctx context.Context, now time.Time, counted func(tenant string)) error {
	objs, err := w.cfg.Attachments.List(ctx, "")
	if err != nil {
		return err
	}
	for _, o := range objs {
		tenant, _, ok := strings.Cut(o.Name, "/")
		if !ok {
			continue
		}
		d := w.cfg.Retention.TenantRetention(tenant)
		if d <= 0 || now.Sub(o.Modified) < d {
			continue
		}
		if err := w.cfg.Attachments.Erase(ctx, o.Name); err != nil {
			return err
		}
		counted(tenant)
	}
	return nil
}
