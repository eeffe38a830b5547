package forwarder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/sealpost/sealpost/audit/entry"
	"github.com/sealpost/sealpost/ingress"
	"github.com/sealpost/sealpost/keyring/kms"
	"github.com/sealpost/sealpost/queue"
)

// deadLetter is the sealed body of a dead-letter record. It holds the whole
// envelope, so a dead letter can be replayed even without the receipt store.
type deadLetter struct {
	ID       string    `json:"id"`
	Tenant   string    `json:"tenant"`
	Route    string    `json:"route"`
	Reason   string    `json:"reason"`
	Attempts int       `json:"attempts"`
	Time     time.Time `json:"time"`
	// Envelope is the receipt envelope as JSON, not base64: a dead letter
	// must fit one queue message whenever its submission did.
	Envelope json.RawMessage `json:"envelope"`
}

// Headers of dead-letter records, in the clear: no payload content.
const (
	hdrID    = "Sealpost-Id"
	hdrState = "Sealpost-State"

	stateDead     = "dead"
	stateResolved = "resolved"
)

// maxReplay bounds the dead letters one ReplayDeadLetters call sends.
const maxReplay = 10000

func dlqSubject(tenant, route, id string) string { return "dlq." + tenant + "." + route + "." + id }

func dlqContext(tenant, id string) kms.Context {
	return kms.Context{Tenant: tenant, Purpose: kms.PurposeDeadLetter, ObjectID: id}
}

// deadLetterAll stores the dead letters of items, audits them and finishes
// the items; an item whose dead letter cannot be stored now is retried
// later (its attempt record says dead_lettered, so it comes back here).
func (w *Worker) deadLetterAll(ctx context.Context, items []*item) {
	var entries []entry.Entry
	var stored []*item
	for _, it := range items {
		if it.env == nil {
			it.retryLater(w, errors.New("forwarder: dead letter without a receipt"))
			continue
		}
		reason := it.deadLetter
		plain, err := ingress.EncodeJSON(deadLetter{ID: it.s.ID, Tenant: it.s.Tenant, Route: it.s.Route, Reason: reason,
			Attempts: it.n, Time: w.cfg.Now().UTC(), Envelope: it.env})
		if err == nil {
			var sealed []byte
			sealed, err = w.cfg.Sealer.Seal(ctx, dlqContext(it.s.Tenant, it.s.ID), plain)
			clear(plain)
			if err == nil {
				// The message id makes a repeated append (after a failure
				// below) land once within the duplicate window.
				_, err = w.cfg.DeadLetters.Append(ctx, dlqSubject(it.s.Tenant, it.s.Route, it.s.ID), "dlq-"+it.s.ID+"-"+strconv.Itoa(it.n),
					w.ttlHeader(map[string]string{hdrID: it.s.ID, hdrState: stateDead}, it.s.Tenant, it.s.Route), sealed)
			}
		}
		if err != nil {
			it.retryLater(w, fmt.Errorf("forwarder: dead letter: %w", err))
			continue
		}
		entries = append(entries, entry.Entry{Actor: "system", Action: entry.ActionDeadLettered, Tenant: it.s.Tenant, Target: it.s.ID,
			Outcome: entry.OutcomeFailure, Details: map[string]string{"route": it.s.Route, "attempts": strconv.Itoa(it.n), "class": reason}})
		stored = append(stored, it)
	}
	if err := w.auditAll(ctx, entries...); err != nil {
		w.retryLaterAll(stored, err)
		return
	}
	for _, it := range stored {
		it.log().Warn("forwarder: dead-lettered", "attempts", it.n, "class", it.deadLetter)
		it.finish(ackOutcome)
		w.metrics.deliveries.WithLabelValues(ResultDeadLettered).Inc()
	}
}

// Redeliver sends a stored receipt again, now, with the same webhook-id,
// whether it was delivered, is still being retried or was dead-lettered. It
// is one attempt, made inline: it returns nil on a 2xx answer (and marks a
// dead letter of the receipt as resolved), ErrDeliveryFailed otherwise,
// ErrEndpointDisabled while the endpoint is disabled, ErrNotFound for an
// unknown receipt. The attempt is recorded and audited. As an explicit
// request it is sent even while the endpoint's circuit breaker is open.
func (w *Worker) Redeliver(ctx context.Context, tenant, id string) error {
	return w.redeliver(ctx, tenant, id, TriggerRedeliver)
}

func (w *Worker) redeliver(ctx context.Context, tenant, id, trigger string) error {
	env, err := w.Receipt(ctx, tenant, id)
	if err != nil {
		return err
	}
	route, err := routeOf(env)
	if err != nil {
		return err
	}
	rt, ok := w.cfg.Routes.Route(tenant, route)
	if !ok {
		return fmt.Errorf("%w: %s/%s", ErrUnknownRoute, tenant, route)
	}
	if err := w.audit(ctx, entry.Entry{Actor: actorFrom(ctx), Action: entry.ActionRedeliver, Tenant: tenant, Target: id,
		Outcome: entry.OutcomeSuccess, Details: map[string]string{"route": route, "trigger": trigger}}); err != nil {
		return err
	}
	disabled, err := w.endpointDisabled(ctx, rt)
	if err != nil {
		return err
	}
	k, err := groupOf(tenant, id)
	if err != nil {
		return err
	}
	lasts, err := w.lastAttempts(ctx, k)
	if err != nil {
		return err
	}
	last := lasts[id]
	start := w.cfg.Now()
	a := Attempt{N: last.count + 1, Trigger: trigger, Time: start.UTC()}
	var res result
	if disabled {
		res = result{class: ClassDisabled}
	} else {
		cur, prev, err := w.cfg.Keys.SigningKeys(ctx, start)
		if err != nil {
			return fmt.Errorf("forwarder: signing keys: %w", err)
		}
		secrets, err := w.secretsFor(ctx, rt, start)
		if err != nil {
			return err
		}
		res, err = w.post(ctx, rt.Endpoint, id, env, cur, prev, secrets)
		if err != nil {
			return err
		}
		w.metrics.attemptSeconds.WithLabelValues(classLabel(res.class)).Observe(res.latency.Seconds())
	}
	a.Status, a.Class = res.status, res.class
	a.LatencyMS = float64(res.latency.Microseconds()) / 1000
	a.Result = ResultFailed
	if res.ok() {
		a.Result = ResultDelivered
	}
	if err := w.recordAttempt(ctx, tenant, route, id, a); err != nil {
		return err
	}
	details := map[string]string{"route": route, "trigger": trigger}
	if res.status != 0 {
		details["status"] = strconv.Itoa(res.status)
	}
	if res.ok() {
		if err := w.audit(ctx, entry.Entry{Actor: "system", Action: entry.ActionDelivered, Tenant: tenant, Target: id,
			Outcome: entry.OutcomeSuccess, Details: details}); err != nil {
			return err
		}
		w.metrics.deliveries.WithLabelValues(ResultDelivered).Inc()
		return w.markResolved(ctx, tenant, route, id)
	}
	if disabled {
		return fmt.Errorf("%w: %s/%s", ErrEndpointDisabled, tenant, route)
	}
	if res.gone {
		if err := w.disableEndpoint(ctx, rt, res.status); err != nil {
			w.log.Error("forwarder: disabling endpoint failed", "tenant", tenant, "route", route, "err", err)
		}
	}
	details["class"] = res.class
	if err := w.audit(ctx, entry.Entry{Actor: "system", Action: entry.ActionFailed, Tenant: tenant, Target: id,
		Outcome: entry.OutcomeFailure, Details: details}); err != nil {
		return err
	}
	if res.status != 0 {
		return fmt.Errorf("%w: %s %d", ErrDeliveryFailed, res.class, res.status)
	}
	return fmt.Errorf("%w: %s", ErrDeliveryFailed, res.class)
}

// markResolved appends a resolved marker after a dead letter of id, if its
// newest record is a dead letter.
func (w *Worker) markResolved(ctx context.Context, tenant, route, id string) error {
	subj := dlqSubject(tenant, route, id)
	m, err := w.cfg.DeadLetters.Last(ctx, subj)
	if errors.Is(err, queue.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("forwarder: dead letter state: %w", err)
	}
	if m.Header[hdrState] != stateDead {
		return nil
	}
	if _, err := w.cfg.DeadLetters.Append(ctx, subj, "", w.ttlHeader(map[string]string{hdrID: id, hdrState: stateResolved}, tenant, route), nil); err != nil {
		return fmt.Errorf("forwarder: resolve dead letter: %w", err)
	}
	return nil
}

// ReplayFilter selects dead letters to replay: one tenant's, or with
// AllTenants every tenant's (an operator action). One of the two is
// required.
type ReplayFilter struct {
	Tenant string
	// AllTenants replays every tenant's dead letters; Tenant must be empty.
	AllTenants bool
	// Route limits the replay to one route; empty replays every route.
	Route string
	// Since limits the replay to messages dead-lettered at or after it;
	// zero replays all.
	Since time.Time
}

// deadRef names one dead letter.
type deadRef struct{ tenant, id string }

// ReplayDeadLetters sends every selected dead letter that was not
// delivered since, once, inline, with its original webhook-id (see
// Redeliver), at most 10,000 per call. It returns how many were delivered;
// when some were not, the error wraps ErrDeliveryFailed, and
// ErrEndpointDisabled too when each of them was for a disabled endpoint,
// and they stay dead letters.
func (w *Worker) ReplayDeadLetters(ctx context.Context, f ReplayFilter) (int, error) {
	tenantTok := f.Tenant
	switch {
	case f.AllTenants && f.Tenant != "":
		return 0, fmt.Errorf("%w: a tenant and all tenants", ErrInvalidInput)
	case f.AllTenants:
		tenantTok = "*"
	default:
		if err := checkTenant(f.Tenant); err != nil {
			return 0, err
		}
	}
	routeTok := "*"
	if f.Route != "" {
		if err := checkRoute(f.Route); err != nil {
			return 0, err
		}
		routeTok = f.Route
	}
	filter := "dlq." + tenantTok + "." + routeTok + ".*"
	// The newest record of a subject says whether it is still dead.
	state := map[string]string{}
	var order []string
	err := w.cfg.DeadLetters.Read(ctx, queue.ReadOptions{Filter: filter, StartTime: f.Since}, func(m *queue.Msg) error {
		if _, seen := state[m.Subject]; !seen {
			order = append(order, m.Subject)
		}
		state[m.Subject] = m.Header[hdrState]
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("forwarder: read dead letters: %w", err)
	}
	var pending []deadRef
	for _, subj := range order {
		tok := strings.Split(subj, ".")
		if state[subj] == stateDead && len(tok) == 4 {
			pending = append(pending, deadRef{tenant: tok[1], id: tok[3]})
		}
	}
	details := map[string]string{"count": strconv.Itoa(len(pending))}
	if f.Route != "" {
		details["route"] = f.Route
	}
	if f.AllTenants {
		details["tenants"] = "all"
	}
	if !f.Since.IsZero() {
		details["since"] = f.Since.UTC().Format(time.RFC3339)
	}
	if err := w.audit(ctx, entry.Entry{Actor: actorFrom(ctx), Action: entry.ActionDLQReplay, Tenant: f.Tenant, Outcome: entry.OutcomeSuccess, Details: details}); err != nil {
		return 0, err
	}
	if len(pending) > maxReplay {
		pending = pending[:maxReplay]
	}
	delivered, failed, disabled := 0, 0, 0
	var firstErr error
	for _, ref := range pending {
		if err := ctx.Err(); err != nil {
			return delivered, err
		}
		err := w.redeliver(ctx, ref.tenant, ref.id, TriggerReplay)
		if err == nil {
			delivered++
			continue
		}
		failed++
		if errors.Is(err, ErrEndpointDisabled) {
			disabled++
		}
		if firstErr == nil {
			firstErr = err
		}
		if !errors.Is(err, ErrDeliveryFailed) && !errors.Is(err, ErrEndpointDisabled) && !errors.Is(err, ErrUnknownRoute) {
			// sealpost itself is failing (store, KMS, audit): stop.
			return delivered, fmt.Errorf("forwarder: replay stopped after %d delivered: %w", delivered, err)
		}
	}
	if failed > 0 {
		if disabled == failed {
			return delivered, fmt.Errorf("%w (%w): %d of %d dead letters not delivered (first: %v)", ErrDeliveryFailed, ErrEndpointDisabled, failed, len(pending), firstErr)
		}
		return delivered, fmt.Errorf("%w: %d of %d dead letters not delivered (first: %v)", ErrDeliveryFailed, failed, len(pending), firstErr)
	}
	return delivered, nil
}
