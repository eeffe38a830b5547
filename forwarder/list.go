package forwarder

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/sealpost/sealpost/queue"
	"github.com/sealpost/sealpost/signer"
)

// Receipts are listed in the order they were stored, from their
// messages' headers (each receipts message names its records in
// hdrIndex), so a listing reads no receipt and writes nothing. A position
// in the listing is a stream sequence and a record within that message:
// receipts stored later get later positions, so a page's cursor stays
// valid while receipts keep arriving, and none is skipped or repeated.
// Statuses come from the attempt records of the groups on the page (one
// read per group).

// Receipt statuses.
const (
	StatusPending   = "pending"   // no attempt yet
	StatusDelivered = "delivered" // every endpoint delivered
	StatusFailing   = "failing"   // an endpoint is being retried
	StatusDead      = "dead"      // an endpoint's dead letter is not resolved
)

// ReceiptFilter selects receipts of one tenant.
type ReceiptFilter struct {
	Tenant string
	// Route, Endpoint and Status ("pending", "delivered", "failing",
	// "dead") narrow the list; empty: any. With Endpoint, only receipts
	// attempted to it are listed, with its status.
	Route, Endpoint, Status string
	// Since and Until bound the receipts' received time: [Since, Until).
	Since, Until time.Time
	// Routes, when not nil, is the set of routes the caller may reach.
	Routes func(route string) bool
}

// Cursor is a position in a listing: the record after Skip records of the
// message at Seq.
type Cursor struct {
	Seq  uint64
	Skip int
}

// ReceiptSummary is one receipt of a listing: never its content.
type ReceiptSummary struct {
	ID         string            `json:"id"`
	Route      string            `json:"route"`
	ReceivedAt time.Time         `json:"received_at"`
	Status     string            `json:"status"`
	Endpoints  []EndpointSummary `json:"endpoints"`
}

// EndpointSummary is a receipt's state at one endpoint.
type EndpointSummary struct {
	Endpoint string `json:"endpoint"`
	Status   string `json:"status"`
	// Attempts is the number of scheduled attempts made.
	Attempts int `json:"attempts"`
	// NextAt is when the next attempt is due, while failing.
	NextAt time.Time `json:"next_at,omitzero"`
}

// maxListScan bounds the messages one listing call reads; a call that
// reaches it returns what it found and a cursor to go on from.
const maxListScan = 20000

type listed struct {
	s   ReceiptSummary
	pos Cursor // the position after it
	key groupKey
}

// ListReceipts returns up to limit receipts from cursor on (the zero
// cursor starts at Since, or at the oldest receipt), the cursor of the
// next page, and whether the listing may go on (false when it reached the
// newest receipt stored when it started).
func (w *Worker) ListReceipts(ctx context.Context, f ReceiptFilter, from Cursor, limit int) ([]ReceiptSummary, Cursor, bool, error) {
	if err := checkTenant(f.Tenant); err != nil {
		return nil, from, false, err
	}
	if f.Route != "" {
		if err := checkRoute(f.Route); err != nil {
			return nil, from, false, err
		}
	}
	if f.Endpoint != "" {
		if err := checkEndpoint(f.Endpoint); err != nil {
			return nil, from, false, err
		}
	}
	switch f.Status {
	case "", StatusPending, StatusDelivered, StatusFailing, StatusDead:
	default:
		return nil, from, false, fmt.Errorf("%w: status %q", ErrInvalidInput, signer.Truncate(f.Status, 40))
	}
	if limit <= 0 {
		return nil, from, false, fmt.Errorf("%w: limit", ErrInvalidInput)
	}
	opts := queue.ReadOptions{Filter: "receipt." + f.Tenant + ".>", HeadersOnly: true}
	switch {
	case from.Seq > 0:
		opts.StartSeq = from.Seq
	case !f.Since.IsZero():
		// Messages are stored shortly after their receipts were received.
		opts.StartTime = f.Since.Add(-time.Minute)
	}
	var (
		out     []ReceiptSummary
		pending []listed
		next    = from
		lastSeq uint64 // the newest message read whole
		scanned int
		full    bool
	)
	resolve := func() error {
		if err := w.statuses(ctx, pending, f); err != nil {
			return err
		}
		for _, l := range pending {
			if l.s.Status == "" {
				continue // filtered out
			}
			out = append(out, l.s)
			if len(out) == limit {
				full, next = true, l.pos
				return errStop
			}
		}
		pending = pending[:0]
		return nil
	}
	err := w.cfg.Receipts.Read(ctx, opts, func(m *queue.Msg) error {
		if scanned++; scanned > maxListScan {
			return errStop
		}
		if !f.Until.IsZero() && m.Time.After(f.Until.Add(time.Minute)) {
			return errDone
		}
		tok := strings.SplitN(m.Subject, ".", 3)
		if len(tok) != 3 {
			return nil
		}
		entries, err := w.indexOf(ctx, m)
		if err != nil {
			return err
		}
		k := groupKey{tenant: f.Tenant, group: tok[2]}
		for i, e := range entries {
			pos := Cursor{Seq: m.Seq, Skip: i + 1}
			if m.Seq == from.Seq && i < from.Skip {
				continue
			}
			suffix, route, ok := strings.Cut(e, "=")
			id := "rcpt_" + tok[2] + suffix
			if !ok || (f.Route != "" && route != f.Route) || (f.Routes != nil && !f.Routes(route)) {
				continue
			}
			u, err := ulid.ParseStrict(strings.TrimPrefix(id, "rcpt_"))
			if err != nil {
				continue
			}
			at := ulid.Time(u.Time()).UTC()
			if (!f.Since.IsZero() && at.Before(f.Since)) || (!f.Until.IsZero() && !at.Before(f.Until)) {
				continue
			}
			pending = append(pending, listed{s: ReceiptSummary{ID: id, Route: route, ReceivedAt: at}, pos: pos, key: k})
		}
		lastSeq = m.Seq
		if len(pending) >= limit {
			return resolve()
		}
		return nil
	})
	done := false
	switch {
	case errors.Is(err, errDone):
		done = true
	case err == nil:
		done = scanned <= maxListScan
	case !errors.Is(err, errStop):
		return nil, from, false, fmt.Errorf("forwarder: list receipts: %w", err)
	}
	if !full && len(pending) > 0 {
		if err := resolve(); err != nil && !errors.Is(err, errStop) {
			return nil, from, false, err
		}
	}
	if !full && lastSeq > 0 {
		// Go on after the last message read whole.
		next = Cursor{Seq: lastSeq + 1}
	}
	return out, next, !done || full, nil
}

// errDone ends a listing that passed its time range.
var errDone = errors.New("done")

// indexOf returns a receipts message's index entries: from its header, or,
// for a message stored before the header existed, from its records.
func (w *Worker) indexOf(ctx context.Context, m *queue.Msg) ([]string, error) {
	if v, ok := m.Header[hdrIndex]; ok {
		return strings.Fields(v), nil
	}
	full, err := w.cfg.Receipts.Get(ctx, m.Seq)
	if errors.Is(err, queue.ErrNotFound) {
		return nil, nil // expired or rewritten meanwhile
	}
	if err != nil {
		return nil, err
	}
	var out []string
	err = queue.EachRecord(full.Data, func(f []string, _ []byte) error {
		if len(f) == 2 {
			out = append(out, receiptIndex(f[0], f[1]))
		}
		return nil
	})
	return out, err
}

// statuses fills in the status of each listed receipt from its group's
// attempt records, and clears it (filtered out) where the filter refuses
// it.
func (w *Worker) statuses(ctx context.Context, ls []listed, f ReceiptFilter) error {
	byGroup := map[groupKey]map[string]map[string]lastAttempt{}
	for i := range ls {
		l := &ls[i]
		lasts, ok := byGroup[l.key]
		if !ok {
			var err error
			if lasts, err = w.lastAttempts(ctx, l.key); err != nil {
				return err
			}
			byGroup[l.key] = lasts
		}
		eps := lasts[l.s.ID]
		l.s.Endpoints = []EndpointSummary{}
		status := StatusPending
		rank := 0
		for ep, last := range eps {
			st := endpointStatusOf(last)
			l.s.Endpoints = append(l.s.Endpoints, EndpointSummary{Endpoint: ep, Status: st, Attempts: last.n, NextAt: nextAt(last, st)})
			if f.Endpoint != "" && ep != f.Endpoint {
				continue
			}
			if r := statusRank(st); r > rank {
				status, rank = st, r
			}
		}
		sortEndpoints(l.s.Endpoints)
		if f.Endpoint != "" {
			if _, ok := eps[f.Endpoint]; !ok {
				l.s.Status = ""
				continue
			}
		}
		if f.Status != "" && status != f.Status {
			l.s.Status = ""
			continue
		}
		l.s.Status = status
	}
	return nil
}

// endpointStatusOf is the status of a receipt at one endpoint.
func endpointStatusOf(last lastAttempt) string {
	switch {
	case last.result == ResultDeadLettered && !last.resolved:
		return StatusDead
	case last.delivered:
		return StatusDelivered
	case last.n > 0 || last.failures > 0:
		return StatusFailing
	}
	return StatusPending
}

func nextAt(last lastAttempt, status string) time.Time {
	if status == StatusFailing {
		return last.due.UTC()
	}
	return time.Time{}
}

// statusRank orders statuses for a receipt's overall status: the worst
// endpoint's. A receipt with every endpoint delivered is delivered.
func statusRank(s string) int {
	switch s {
	case StatusDelivered:
		return 1
	case StatusPending:
		return 2
	case StatusFailing:
		return 3
	case StatusDead:
		return 4
	}
	return 0
}

func sortEndpoints(es []EndpointSummary) {
	for i := 1; i < len(es); i++ {
		for j := i; j > 0 && es[j].Endpoint < es[j-1].Endpoint; j-- {
			es[j], es[j-1] = es[j-1], es[j]
		}
	}
}
