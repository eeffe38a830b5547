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
	Endpoint string    `json:"endpoint,omitempty"`
	Reason   string    `json:"reason"`
	Attempts int       `json:"attempts"`
	Time     time.Time `json:"time"`
	// Envelope is the receipt envelope as JSON, not base64: a dead letter
	// must fit one queue message whenever its submission did.
	Envelope json.RawMessage `json:"envelope"`
}

// Headers of dead-letter records, in the clear: no payload content.
const (
	hdrID       = "Sealpost-Id"
	hdrState    = "Sealpost-State"
	hdrEndpoint = "Sealpost-Endpoint"
	hdrReason   = "Sealpost-Reason"
	hdrAttempts = "Sealpost-Attempts"

	stateDead     = "dead"
	stateResolved = "resolved"
)

// maxReplay bounds the dead letters one ReplayDeadLetters call sends.
const maxReplay = 10000

// dlqSubject is a dead letter's subject: "dlq.<tenant>.<route>.<id>" for
// DefaultEndpoint (as in earlier versions), with ".<endpoint>" added for
// any other.
func dlqSubject(tenant, route, id, endpoint string) string {
	s := "dlq." + tenant + "." + route + "." + id
	if endpoint != "" && endpoint != DefaultEndpoint {
		s += "." + endpoint
	}
	return s
}

// dlqRef is what a dead letter's subject names.
type dlqRef struct{ tenant, route, id, endpoint string }

func parseDLQSubject(subj string) (dlqRef, bool) {
	tok := strings.Split(subj, ".")
	switch {
	case len(tok) == 4 && tok[0] == "dlq":
		return dlqRef{tok[1], tok[2], tok[3], DefaultEndpoint}, true
	case len(tok) == 5 && tok[0] == "dlq":
		return dlqRef{tok[1], tok[2], tok[3], tok[4]}, true
	}
	return dlqRef{}, false
}

func dlqContext(tenant, id string) kms.Context {
	return kms.Context{Tenant: tenant, Purpose: kms.PurposeDeadLetter, ObjectID: id}
}

// deadLetterAll stores the dead letters of items' endpoints, audits them
// and finishes the endpoints; one whose dead letter cannot be stored now
// waits (its attempt record says dead_lettered, so a redelivered copy
// comes back here).
func (w *Worker) deadLetterAll(ctx context.Context, dead []deadTarget) {
	var entries []entry.Entry
	var stored []deadTarget
	for _, d := range dead {
		it, tg := d.it, d.tg
		if it.done {
			continue
		}
		if it.env == nil {
			tg.waitFor(w.jitter(internalRetryDelay))
			continue
		}
		reason := tg.deadLetter
		plain, err := ingress.EncodeJSON(deadLetter{ID: it.s.ID, Tenant: it.s.Tenant, Route: it.s.Route, Endpoint: tg.ep.ID, Reason: reason,
			Attempts: tg.n, Time: w.cfg.Now().UTC(), Envelope: it.env})
		if err == nil {
			var sealed []byte
			sealed, err = w.cfg.Sealer.Seal(ctx, dlqContext(it.s.Tenant, it.s.ID), plain)
			clear(plain)
			if err == nil {
				// The message id makes a repeated append (after a failure
				// below) land once within the duplicate window.
				msgID := "dlq-" + it.s.ID + "-" + strconv.Itoa(tg.n)
				if tg.ep.ID != DefaultEndpoint {
					msgID += "-" + tg.ep.ID
				}
				hdr := map[string]string{hdrID: it.s.ID, hdrState: stateDead, hdrEndpoint: tg.ep.ID, hdrReason: reason, hdrAttempts: strconv.Itoa(tg.n)}
				_, err = w.cfg.DeadLetters.Append(ctx, dlqSubject(it.s.Tenant, it.s.Route, it.s.ID, tg.ep.ID), msgID,
					w.ttlHeader(hdr, it.s.Tenant, it.s.Route), sealed)
			}
		}
		if err != nil {
			it.log().Warn("forwarder: dead letter not stored; retrying later", "endpoint", tg.ep.ID, "err", err)
			tg.waitFor(w.jitter(internalRetryDelay))
			continue
		}
		entries = append(entries, entry.Entry{Actor: "system", Action: entry.ActionDeadLettered, Tenant: it.s.Tenant, Target: it.s.ID,
			Outcome: entry.OutcomeFailure, Details: map[string]string{"route": it.s.Route, "endpoint": tg.ep.ID, "attempts": strconv.Itoa(tg.n), "class": reason}})
		stored = append(stored, d)
	}
	if err := w.auditAll(ctx, entries...); err != nil {
		for _, d := range stored {
			d.tg.waitFor(w.jitter(internalRetryDelay))
		}
		w.log.Warn("forwarder: cannot process now; retrying later", "messages", len(stored), "err", err)
		return
	}
	evs := make([]opEvent, 0, len(stored))
	for _, d := range stored {
		it, tg := d.it, d.tg
		it.log().Warn("forwarder: dead-lettered", "endpoint", tg.ep.ID, "attempts", tg.n, "class", tg.deadLetter)
		tg.finished, tg.wait = true, false
		w.metrics.deliveries.WithLabelValues(ResultDeadLettered).Inc()
		evs = append(evs, opEvent{it.s.Tenant, EventAttemptExhausted, map[string]any{"id": it.s.ID, "route": it.s.Route, "endpoint": tg.ep.ID,
			"attempts": tg.n, "class": tg.deadLetter}})
	}
	w.notify(ctx, evs...)
}

// Redeliver sends a stored receipt again, now, with the same webhook-id,
// whether it was delivered, is still being retried or was dead-lettered:
// to one endpoint of its route, or with endpoint "" to each endpoint that
// takes its event type. It is one attempt per endpoint, made inline: it
// returns nil when every one answered 2xx (and marks their dead letters
// as resolved), ErrDeliveryFailed otherwise, ErrEndpointDisabled while an
// endpoint is disabled, ErrNotFound for an unknown receipt or endpoint.
// The attempts are recorded and audited. As explicit requests they are
// sent even while an endpoint's circuit breaker is open.
func (w *Worker) Redeliver(ctx context.Context, tenant, id, endpoint string) error {
	return w.redeliver(ctx, tenant, id, endpoint, TriggerRedeliver)
}

// Redelivery is what a redelivery to one endpoint came to: Err is nil
// when it delivered, else it wraps ErrDeliveryFailed or
// ErrEndpointDisabled.
type Redelivery struct {
	Endpoint string
	Err      error
}

// RedeliverEach is Redeliver with a result for each endpoint it went to.
// Its error is for what stopped it before or between attempts: an
// unknown receipt, route or endpoint, or sealpost failing itself.
func (w *Worker) RedeliverEach(ctx context.Context, tenant, id, endpoint string) ([]Redelivery, error) {
	return w.redeliverEach(ctx, tenant, id, endpoint, TriggerRedeliver)
}

// redeliver returns the first failure of redeliverEach.
func (w *Worker) redeliver(ctx context.Context, tenant, id, endpoint, trigger string) error {
	rs, err := w.redeliverEach(ctx, tenant, id, endpoint, trigger)
	if err != nil {
		return err
	}
	for _, r := range rs {
		if r.Err != nil {
			return r.Err
		}
	}
	return nil
}

func (w *Worker) redeliverEach(ctx context.Context, tenant, id, endpoint, trigger string) ([]Redelivery, error) {
	env, err := w.Receipt(ctx, tenant, id)
	if err != nil {
		return nil, err
	}
	rc, err := receiptOf(env)
	if err != nil {
		return nil, err
	}
	route := rc.Route
	rt, ok := w.cfg.Routes.Route(tenant, route)
	if !ok {
		return nil, fmt.Errorf("%w: %s/%s", ErrUnknownRoute, tenant, route)
	}
	var eps []Endpoint
	if endpoint != "" {
		ep, ok := rt.endpoint(endpoint)
		if !ok {
			return nil, fmt.Errorf("%w: endpoint %s of %s/%s", ErrNotFound, endpoint, tenant, route)
		}
		eps = []Endpoint{ep}
	} else {
		for _, ep := range rt.endpoints() {
			if ep.Accepts(rc.eventType()) {
				eps = append(eps, ep)
			}
		}
	}
	if len(eps) == 0 {
		return nil, fmt.Errorf("%w: no endpoint of %s/%s takes this receipt", ErrNotFound, tenant, route)
	}
	k, err := groupOf(tenant, id)
	if err != nil {
		return nil, err
	}
	lasts, err := w.lastAttempts(ctx, k)
	if err != nil {
		return nil, err
	}
	out := make([]Redelivery, 0, len(eps))
	for _, ep := range eps {
		err := w.redeliverTo(ctx, tenant, route, id, env, ep, lasts[id][ep.ID], trigger)
		if err != nil && !errors.Is(err, ErrDeliveryFailed) && !errors.Is(err, ErrEndpointDisabled) {
			return nil, err
		}
		out = append(out, Redelivery{Endpoint: ep.ID, Err: err})
	}
	return out, nil
}

// redeliverTo makes one inline attempt to one endpoint.
func (w *Worker) redeliverTo(ctx context.Context, tenant, route, id string, env []byte, ep Endpoint, last lastAttempt, trigger string) error {
	if err := w.audit(ctx, entry.Entry{Actor: actorFrom(ctx), Action: entry.ActionRedeliver, Tenant: tenant, Target: id,
		Outcome: entry.OutcomeSuccess, Details: map[string]string{"route": route, "endpoint": ep.ID, "trigger": trigger}}); err != nil {
		return err
	}
	status, err := w.endpointStatus(ctx, tenant, route, ep)
	if err != nil {
		return err
	}
	start := w.cfg.Now()
	a := Attempt{Endpoint: ep.ID, N: last.count + 1, Trigger: trigger, Time: start.UTC()}
	var res result
	if status.Disabled {
		res = result{class: ClassDisabled}
	} else {
		cur, prev, err := w.cfg.Keys.SigningKeys(ctx, start)
		if err != nil {
			return fmt.Errorf("forwarder: signing keys: %w", err)
		}
		secrets, err := w.secretsFor(ctx, tenant, route, ep, start)
		if err != nil {
			return err
		}
		res, err = w.post(ctx, ep, id, env, cur, prev, secrets)
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
	details := map[string]string{"route": route, "endpoint": ep.ID, "trigger": trigger}
	if res.status != 0 {
		details["status"] = strconv.Itoa(res.status)
	}
	if res.ok() {
		if err := w.audit(ctx, entry.Entry{Actor: "system", Action: entry.ActionDelivered, Tenant: tenant, Target: id,
			Outcome: entry.OutcomeSuccess, Details: details}); err != nil {
			return err
		}
		w.metrics.deliveries.WithLabelValues(ResultDelivered).Inc()
		return w.markResolved(ctx, tenant, route, id, ep.ID)
	}
	if status.Disabled {
		return fmt.Errorf("%w: %s/%s/%s", ErrEndpointDisabled, tenant, route, ep.ID)
	}
	if res.gone {
		if err := w.disableEndpoint(ctx, tenant, route, ep, res.status, DisabledGone); err != nil {
			w.log.Error("forwarder: disabling endpoint failed", "tenant", tenant, "route", route, "endpoint", ep.ID, "err", err)
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

// markResolved appends a resolved marker after a dead letter of id to
// endpoint, if its newest record is a dead letter.
func (w *Worker) markResolved(ctx context.Context, tenant, route, id, endpoint string) error {
	subj := dlqSubject(tenant, route, id, endpoint)
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
	hdr := map[string]string{hdrID: id, hdrState: stateResolved, hdrEndpoint: endpoint}
	if _, err := w.cfg.DeadLetters.Append(ctx, subj, "", w.ttlHeader(hdr, tenant, route), nil); err != nil {
		return fmt.Errorf("forwarder: resolve dead letter: %w", err)
	}
	return nil
}

// ReplayFilter selects dead letters: one tenant's, or with AllTenants
// every tenant's (an operator action). One of the two is required.
type ReplayFilter struct {
	Tenant string
	// AllTenants selects every tenant's dead letters; Tenant must be empty.
	AllTenants bool
	// Route limits the selection to one route; empty selects every route.
	Route string
	// Endpoint limits it to one endpoint (with Route); empty: every one.
	Endpoint string
	// Since and Until limit it to messages dead-lettered in [Since,
	// Until); zero leaves that side open.
	Since, Until time.Time
	// Routes, when not nil, is the set of routes the caller may reach
	// (an API key scoped to some routes).
	Routes func(route string) bool
}

// DeadLetter is one dead letter of the list: never its content.
type DeadLetter struct {
	ID       string    `json:"id"`
	Route    string    `json:"route"`
	Endpoint string    `json:"endpoint"`
	Reason   string    `json:"reason,omitempty"`
	Attempts int       `json:"attempts,omitempty"`
	Time     time.Time `json:"dead_lettered_at"`
	// Seq orders dead letters; Cursor pages on it.
	Seq uint64 `json:"-"`
}

// maxDeadScan bounds the records one listing or replay reads.
const maxDeadScan = 200000

// deadLetters returns the selected dead letters that are still dead, in
// the order they were dead-lettered, with the tenant of each.
func (w *Worker) deadLetters(ctx context.Context, f ReplayFilter) ([]DeadLetter, []string, error) {
	tenantTok := f.Tenant
	switch {
	case f.AllTenants && f.Tenant != "":
		return nil, nil, fmt.Errorf("%w: a tenant and all tenants", ErrInvalidInput)
	case f.AllTenants:
		tenantTok = "*"
	default:
		if err := checkTenant(f.Tenant); err != nil {
			return nil, nil, err
		}
	}
	routeTok := "*"
	if f.Route != "" {
		if err := checkRoute(f.Route); err != nil {
			return nil, nil, err
		}
		routeTok = f.Route
	}
	if f.Endpoint != "" {
		if err := checkEndpoint(f.Endpoint); err != nil {
			return nil, nil, err
		}
	}
	// The newest record of a subject says whether it is still dead.
	type rec struct {
		dl    DeadLetter
		state string
	}
	latest := map[string]*rec{}
	var order []string
	scanned := 0
	err := w.cfg.DeadLetters.Read(ctx, queue.ReadOptions{Filter: "dlq." + tenantTok + "." + routeTok + ".>", StartTime: f.Since, HeadersOnly: true}, func(m *queue.Msg) error {
		if scanned++; scanned > maxDeadScan {
			return errStop
		}
		if !f.Until.IsZero() && !m.Time.Before(f.Until) {
			return errStop
		}
		ref, ok := parseDLQSubject(m.Subject)
		if !ok || (f.Endpoint != "" && ref.endpoint != f.Endpoint) || (f.Routes != nil && !f.Routes(ref.route)) {
			return nil
		}
		r := latest[m.Subject]
		if r == nil {
			r = &rec{}
			latest[m.Subject] = r
			order = append(order, m.Subject)
		}
		r.state = m.Header[hdrState]
		if r.state == stateDead {
			n, _ := strconv.Atoi(m.Header[hdrAttempts])
			r.dl = DeadLetter{ID: ref.id, Route: ref.route, Endpoint: ref.endpoint, Reason: m.Header[hdrReason], Attempts: n, Time: m.Time.UTC(), Seq: m.Seq}
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return nil, nil, fmt.Errorf("forwarder: read dead letters: %w", err)
	}
	var out []DeadLetter
	var tenants []string
	for _, subj := range order {
		if r := latest[subj]; r.state == stateDead {
			out = append(out, r.dl)
			tenants = append(tenants, strings.Split(subj, ".")[1])
		}
	}
	return out, tenants, nil
}

// DeadLetters lists a tenant's dead letters that were not delivered since,
// oldest first: at most limit of them after the one at sequence after (0:
// from the first), and whether more follow.
func (w *Worker) DeadLetters(ctx context.Context, f ReplayFilter, after uint64, limit int) ([]DeadLetter, bool, error) {
	if f.AllTenants {
		return nil, false, fmt.Errorf("%w: one tenant's", ErrInvalidInput)
	}
	all, _, err := w.deadLetters(ctx, f)
	if err != nil {
		return nil, false, err
	}
	var out []DeadLetter
	for _, d := range all {
		if d.Seq <= after {
			continue
		}
		if len(out) == limit {
			return out, true, nil
		}
		out = append(out, d)
	}
	return out, false, nil
}

// ReplayDeadLetters sends every selected dead letter that was not
// delivered since, once, inline, with its original webhook-id (see
// Redeliver), at most 10,000 per call. It returns how many were delivered;
// when some were not, the error wraps ErrDeliveryFailed, and
// ErrEndpointDisabled too when each of them was for a disabled endpoint,
// and they stay dead letters.
func (w *Worker) ReplayDeadLetters(ctx context.Context, f ReplayFilter) (int, error) {
	pending, tenants, err := w.deadLetters(ctx, f)
	if err != nil {
		return 0, err
	}
	details := map[string]string{"count": strconv.Itoa(len(pending))}
	if f.Route != "" {
		details["route"] = f.Route
	}
	if f.Endpoint != "" {
		details["endpoint"] = f.Endpoint
	}
	if f.AllTenants {
		details["tenants"] = "all"
	}
	if !f.Since.IsZero() {
		details["since"] = f.Since.UTC().Format(time.RFC3339)
	}
	if !f.Until.IsZero() {
		details["until"] = f.Until.UTC().Format(time.RFC3339)
	}
	if err := w.audit(ctx, entry.Entry{Actor: actorFrom(ctx), Action: entry.ActionDLQReplay, Tenant: f.Tenant, Outcome: entry.OutcomeSuccess, Details: details}); err != nil {
		return 0, err
	}
	if len(pending) > maxReplay {
		pending = pending[:maxReplay]
	}
	delivered, failed, disabled := 0, 0, 0
	var firstErr error
	for i, d := range pending {
		if err := ctx.Err(); err != nil {
			return delivered, err
		}
		err := w.redeliver(ctx, tenants[i], d.ID, d.Endpoint, TriggerReplay)
		if err == nil {
			delivered++
			continue
		}
		failed++
		if firstErr == nil {
			firstErr = err
		}
		if errors.Is(err, ErrEndpointDisabled) {
			disabled++
		}
		if !errors.Is(err, ErrDeliveryFailed) && !errors.Is(err, ErrEndpointDisabled) && !errors.Is(err, ErrUnknownRoute) && !errors.Is(err, ErrNotFound) {
			// sealpost itself is failing (store, KMS, audit): stop.
			return delivered, fmt.Errorf("forwarder: replay stopped after %d delivered: %w", delivered, err)
		}
	}
	switch {
	case failed > 0 && disabled == failed:
		return delivered, fmt.Errorf("%w (%w): %d of %d dead letters not delivered (first: %v)", ErrDeliveryFailed, ErrEndpointDisabled, failed, len(pending), firstErr)
	case failed > 0:
		return delivered, fmt.Errorf("%w: %d of %d dead letters not delivered (first: %v)", ErrDeliveryFailed, failed, len(pending), firstErr)
	}
	return delivered, nil
}
