package forwarder

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/sealpost/sealpost/audit/entry"
	"github.com/sealpost/sealpost/ingress"
	"github.com/sealpost/sealpost/queue"
	"github.com/sealpost/sealpost/signer"
)

const (
	// slotWait is the longest a delivery waits for a free slot of an
	// endpoint at its concurrency limit while the endpoint keeps answering;
	// an endpoint that answers nothing for a while is handed its messages
	// back at once (see breaker.acquire).
	slotWait = 30 * time.Second
	// busyDelay is how long a handed-back message waits before it is tried
	// again. Waiting does not count as an attempt.
	busyDelay = time.Second
	// internalRetryDelay is how long a message waits when sealpost itself
	// could not proceed (KMS, store or audit log unavailable). It does not
	// count as an attempt either. It is shorter than the streams' duplicate
	// window, so a repeated dead-letter append is stored once.
	internalRetryDelay = 30 * time.Second
)

var (
	_ queue.Handler = (&Worker{}).Handle
	// ackOutcome finishes a submission.
	ackOutcome = queue.Ack()
)

// item is one submission of a batch on its way through Handle.
type item struct {
	w   *Worker
	d   *queue.Delivery
	s   *ingress.Submission
	key groupKey
	// n counts the scheduled attempts made so far to all the endpoints of
	// the submission: the queue's attempt count.
	n   int
	env []byte // the signed envelope
	// sealed is the envelope sealed, while ensureReceipts stores it.
	sealed []byte
	// lasts is what the attempt records say, per endpoint (requeued and
	// redelivered copies only).
	lasts map[string]lastAttempt
	// targets are the endpoints this handout deals with.
	targets []*target
	// incomplete: the records know of more attempts than the copy: the
	// handout that made them did not complete.
	incomplete bool

	done bool
	out  queue.Outcome
	l    *slog.Logger
}

// target is one endpoint of an item: its own schedule, attempts, breaker
// and dead letter.
type target struct {
	ep Endpoint
	n  int // scheduled attempts made to this endpoint
	// made is how many attempts of every trigger were made to it so far,
	// as far as the records read say (none are read for a first delivery).
	made int

	// What this handout did: attempted (res holds the answer), wait (not
	// now: come back after delay), finished (delivered or dead-lettered,
	// now or before).
	attempted bool
	start     time.Time
	res       result
	wait      bool
	delay     time.Duration
	finished  bool
	// finishDelivered: an earlier attempt delivered it but its handout
	// may not have completed (a redelivered copy): write its
	// message.delivered entry again.
	finishDelivered bool
	// deadLetter: dead-letter it with this reason.
	deadLetter string
	// checkDead: the records say it was dead-lettered with this reason;
	// whether the dead letter was stored is to be checked.
	checkDead string
	a         Attempt // the attempt's record, once concluded
}

func (tg *target) waitFor(d time.Duration) { tg.wait, tg.delay = true, d }

func (it *item) log() *slog.Logger {
	if it.l == nil {
		it.l = it.w.log.With("id", it.s.ID, "tenant", it.s.Tenant, "route", it.s.Route)
	}
	return it.l
}

func (it *item) finish(o queue.Outcome) { it.done, it.out = true, o }

// retryLater hands a submission back when sealpost itself could not go on;
// it is not an attempt.
func (it *item) retryLater(w *Worker, err error) {
	it.log().Warn("forwarder: cannot process now; retrying later", "err", err)
	it.finish(queue.Retry(w.jitter(internalRetryDelay), it.n))
}

// retryLaterAll is retryLater for every unfinished item, logged once.
func (w *Worker) retryLaterAll(its []*item, err error) {
	n := 0
	for _, it := range its {
		if !it.done {
			it.finish(queue.Retry(w.jitter(internalRetryDelay), it.n))
			n++
		}
	}
	if n > 0 {
		w.log.Warn("forwarder: cannot process now; retrying later", "messages", n, "err", err)
	}
}

// deferTo hands a submission back until due; it is not an attempt.
func (it *item) deferTo(w *Worker, delay time.Duration) {
	w.metrics.deliveries.WithLabelValues("deferred").Inc()
	it.finish(queue.Retry(delay, it.n))
}

// Handle delivers the submissions of one batch and returns what becomes
// of each: build or reuse the signed receipt, POST it to each endpoint of
// its route that takes its event type, record the attempts, and ack (every
// endpoint delivered or dead-lettered), or retry later per each
// endpoint's schedule. Work that many submissions share is done once for
// all of them: one signing-key lookup, one audit append per step, one
// write per id group for receipts and one for attempt records. It is the
// queue.Handler of the worker.
//
// A submission's queue attempt count is the sum of the scheduled attempts
// to all its endpoints; a requeued or redelivered copy learns each
// endpoint's own schedule from the attempt records, which name the
// endpoint.
func (w *Worker) Handle(ctx context.Context, ds []*queue.Delivery) []queue.Outcome {
	now := w.cfg.Now()
	items := make([]*item, len(ds))
	for i, d := range ds {
		it := &item{w: w, d: d, s: d.Submission, n: d.Attempt}
		items[i] = it
		if err := cmp.Or(checkTenant(it.s.Tenant), checkRoute(it.s.Route), checkID(it.s.ID)); err != nil {
			it.log().Error("forwarder: submission cannot be stored; dropped", "err", err)
			it.finish(ackOutcome)
			continue
		}
		k, err := groupOf(it.s.Tenant, it.s.ID)
		if err != nil {
			it.log().Error("forwarder: submission cannot be stored; dropped", "err", err)
			it.finish(ackOutcome)
			continue
		}
		it.key = k
		if now.Before(d.Due) {
			// Handed out before its time (a deferral's shortest delay, or
			// a restart): the schedule is never shortened.
			it.deferTo(w, d.Due.Sub(now))
		}
	}
	start := time.Now()
	w.loadState(ctx, items, now)
	w.ensureReceipts(ctx, items)
	w.attemptAll(ctx, items)
	w.concludeAll(ctx, items)
	w.metrics.batchSize.Observe(float64(len(items)))
	w.metrics.batchSeconds.Observe(time.Since(start).Seconds())
	outs := make([]queue.Outcome, len(items))
	for i, it := range items {
		if !it.done {
			it.settle(w)
		}
		outs[i] = it.out
	}
	return outs
}

// settle decides an item's outcome from its targets: ack when every one
// is finished, otherwise a retry at the earliest time one of them is due,
// with the attempts made so far.
func (it *item) settle(w *Worker) {
	made := 0
	var delay time.Duration
	waiting := false
	for _, tg := range it.targets {
		if tg.attempted && tg.a.Result != "" {
			made++
		}
		if tg.finished {
			continue
		}
		if !tg.wait {
			tg.waitFor(w.jitter(internalRetryDelay))
		}
		if !waiting || tg.delay < delay {
			delay = tg.delay
		}
		waiting = true
	}
	it.n += made
	if !waiting {
		it.finish(ackOutcome)
		return
	}
	it.finish(queue.Retry(delay, it.n))
}

// loadState reads what earlier deliveries of these submissions stored:
// a message JetStream handed out before, or one requeued for a retry, may
// have a receipt and attempts already, and a newer copy of its schedule
// may be queued. A requeued copy has a due time even when it counts no
// attempt (it went back, say, after its attempt's audit entry failed, or
// waited while a redelivery was made); only a first delivery has none, and
// only a first delivery reads nothing.
func (w *Worker) loadState(ctx context.Context, items []*item, now time.Time) {
	groups := map[groupKey][]*item{}
	var keys []groupKey
	for _, it := range items {
		if it.done || !(it.d.Redelivered || it.d.Attempt > 0 || !it.d.Due.IsZero()) {
			continue
		}
		if _, ok := groups[it.key]; !ok {
			keys = append(keys, it.key)
		}
		groups[it.key] = append(groups[it.key], it)
	}
	for _, k := range keys {
		its := groups[k]
		wanted := map[string]bool{}
		for _, it := range its {
			wanted[it.s.ID] = true
		}
		stored, err := w.receiptsOf(ctx, k, func(id string, _ uint64) bool { return wanted[id] })
		if err != nil {
			w.retryLaterAll(its, err)
			continue
		}
		lasts, err := w.lastAttempts(ctx, k)
		if err != nil {
			w.retryLaterAll(its, err)
			continue
		}
		for _, it := range its {
			if r, ok := stored[it.s.ID]; ok {
				if it.env, err = w.openReceipt(ctx, k.tenant, it.s.ID, r.sealed); err != nil {
					it.retryLater(w, err)
					continue
				}
			}
			it.lasts = lasts[it.s.ID]
			total, due, open := 0, time.Time{}, false
			for _, last := range it.lasts {
				total += last.n
				if !last.delivered && last.result != ResultDeadLettered {
					open = true
					if !last.due.IsZero() && (due.IsZero() || last.due.Before(due)) {
						due = last.due
					}
				}
			}
			switch {
			case total > it.n && open:
				// A newer copy of this submission's schedule was queued
				// (or was about to be): hand it back on that schedule.
				it.n = total
				it.finish(queue.Retry(max(0, due.Sub(now)), total))
			case total > it.n:
				// Every endpoint attempted is finished, but the handout
				// that finished one did not complete: finish it now (the
				// count stays, so that a failure now hands this copy back
				// as it is).
				it.incomplete = true
			}
		}
	}
}

// routeState is what the endpoints of one route need, looked up once per
// batch.
type routeState struct {
	rt        Route
	known     bool
	endpoints []*endpointState
}

type endpointState struct {
	ep       Endpoint
	disabled bool
	secrets  []Secret
	err      error
}

func (w *Worker) routeStateOf(ctx context.Context, tenant, route string, now time.Time) *routeState {
	st := &routeState{}
	st.rt, st.known = w.cfg.Routes.Route(tenant, route)
	if !st.known {
		return st
	}
	for _, ep := range st.rt.endpoints() {
		es := &endpointState{ep: ep}
		var status EndpointStatus
		status, es.err = w.endpointStatus(ctx, tenant, route, ep)
		es.disabled = status.Disabled
		if es.err == nil && !es.disabled {
			es.secrets, es.err = w.secretsFor(ctx, tenant, route, ep, now)
		}
		st.endpoints = append(st.endpoints, es)
	}
	return st
}

// attemptAll makes one attempt for every endpoint of every item that is
// due one.
func (w *Worker) attemptAll(ctx context.Context, items []*item) {
	now := w.cfg.Now()
	routes := map[string]*routeState{}
	type job struct {
		it *item
		tg *target
		es *endpointState
	}
	var todo []job
	for _, it := range items {
		if it.done || it.env == nil {
			continue
		}
		rk := it.s.Tenant + "/" + it.s.Route
		st := routes[rk]
		if st == nil {
			st = w.routeStateOf(ctx, it.s.Tenant, it.s.Route, now)
			routes[rk] = st
		}
		if !st.known {
			// The route is gone: each attempt fails as "disabled", so the
			// message is dead-lettered at the end of its schedule and can
			// be replayed once the route is back.
			it.log().Warn("forwarder: route not configured")
			tg := &target{ep: Endpoint{ID: DefaultEndpoint}}
			w.planTarget(it, tg, now)
			if !tg.finished && !tg.wait && tg.deadLetter == "" {
				tg.attempted, tg.start, tg.res = true, now, result{class: ClassDisabled}
			}
			it.targets = append(it.targets, tg)
			continue
		}
		eventType := it.s.Type()
		for _, es := range st.endpoints {
			if !es.ep.Accepts(eventType) {
				continue
			}
			tg := &target{ep: es.ep}
			it.targets = append(it.targets, tg)
			w.planTarget(it, tg, now)
			if tg.checkDead != "" {
				w.checkDeadLetter(ctx, it, tg)
			}
			switch {
			case tg.finished || tg.wait || tg.deadLetter != "" || tg.finishDelivered:
			case es.err != nil:
				it.log().Warn("forwarder: endpoint state unavailable; retrying later", "endpoint", es.ep.ID, "err", es.err)
				tg.waitFor(w.jitter(internalRetryDelay))
			case es.disabled:
				tg.attempted, tg.start, tg.res = true, now, result{class: ClassDisabled, final: true}
			default:
				todo = append(todo, job{it, tg, es})
			}
		}
	}
	if len(todo) == 0 {
		return
	}
	cur, prev, err := w.cfg.Keys.SigningKeys(ctx, now)
	if err != nil {
		for _, j := range todo {
			j.tg.waitFor(w.jitter(internalRetryDelay))
		}
		w.log.Warn("forwarder: cannot process now; retrying later", "messages", len(todo), "err", err)
		return
	}
	var wg sync.WaitGroup
	for _, j := range todo {
		wg.Go(func() { w.attempt(ctx, j.it, j.tg, cur, prev, j.es.secrets) })
	}
	wg.Wait()
}

// planTarget sets what the records say of an endpoint of an item: done
// already, not due yet, out of attempts, or due an attempt now.
func (w *Worker) planTarget(it *item, tg *target, now time.Time) {
	last, ok := it.lasts[tg.ep.ID]
	if !ok {
		return
	}
	tg.n, tg.made = last.n, last.count
	switch {
	case last.delivered:
		tg.finished = true
		// A redelivered copy may be one whose handout did not complete
		// (its audit entry or its ack): finish that, never post again.
		tg.finishDelivered = it.d.Redelivered || it.incomplete
	case last.result == ResultDeadLettered:
		// Dead-lettered, unless storing the dead letter failed: that is
		// looked up (a rare path: only while other endpoints go on).
		tg.finished, tg.checkDead = true, last.class
	case now.Before(last.due):
		tg.waitFor(last.due.Sub(now))
	case tg.n >= len(w.cfg.Schedule):
		// Every attempt was made but dead-lettering did not finish.
		tg.deadLetter = "exhausted"
	}
}

// checkDeadLetter makes sure an endpoint whose records say it was
// dead-lettered has its dead letter.
func (w *Worker) checkDeadLetter(ctx context.Context, it *item, tg *target) {
	_, err := w.cfg.DeadLetters.Last(ctx, dlqSubject(it.s.Tenant, it.s.Route, it.s.ID, tg.ep.ID))
	switch {
	case err == nil:
	case errors.Is(err, queue.ErrNotFound):
		tg.finished, tg.deadLetter = false, tg.checkDead
	default:
		tg.finished = false
		tg.waitFor(w.jitter(internalRetryDelay))
	}
}

// attempt POSTs one item's envelope to one endpoint, holding a slot of the
// endpoint only around the request.
func (w *Worker) attempt(ctx context.Context, it *item, tg *target, cur signer.PrivateKey, prev []signer.PrivateKey, secrets []Secret) {
	if d := w.rateWait(it.s.Tenant, it.s.Route, tg.ep); d > 0 {
		// Over the endpoint's rate: not an attempt.
		w.metrics.deliveries.WithLabelValues("deferred").Inc()
		tg.waitFor(d)
		return
	}
	b := w.breakerFor(it.s.Tenant, it.s.Route, tg.ep)
	adm, probe := b.acquire(ctx, w.cfg.Now, slotWait)
	switch adm {
	case busy:
		w.metrics.deliveries.WithLabelValues("deferred").Inc()
		tg.waitFor(w.jitter(busyDelay))
		return
	case circuitOpen:
		// The endpoint is resting after repeated failures: this message was
		// not tried, so it keeps its place in its own schedule and comes back
		// when the breaker lets a probe through. Only real requests count
		// as attempts, so a dead endpoint cannot burn through every
		// message's attempts while nobody calls it.
		w.metrics.deliveries.WithLabelValues("deferred").Inc()
		tg.waitFor(w.jitter(w.cfg.BreakerCooldown))
		return
	}
	start := w.cfg.Now()
	res, err := w.post(ctx, tg.ep, it.s.ID, it.env, cur, prev, secrets)
	switch {
	case err != nil:
		b.release(probe, outcomeNone, w.cfg.Now())
		it.log().Warn("forwarder: cannot process now; retrying later", "endpoint", tg.ep.ID, "err", err)
		tg.waitFor(w.jitter(internalRetryDelay))
		return
	case ctx.Err() != nil:
		// Shutting down: the attempt was cut short by us, not by the
		// endpoint. It is not recorded and another instance (or this one
		// after a restart) makes it again.
		b.release(probe, outcomeNone, w.cfg.Now())
		it.log().Info("forwarder: attempt abandoned at shutdown", "endpoint", tg.ep.ID)
		tg.waitFor(w.jitter(busyDelay))
		return
	}
	b.observe(res.latency)
	o := outcomeFailure
	if res.ok() {
		o = outcomeSuccess
	}
	b.release(probe, o, w.cfg.Now())
	w.metrics.attemptSeconds.WithLabelValues(classLabel(res.class)).Observe(res.latency.Seconds())
	tg.attempted, tg.start, tg.res = true, start, res
}

// deadTarget is one endpoint of an item to dead-letter.
type deadTarget struct {
	it *item
	tg *target
}

// concludeAll records the attempts, audits them and decides each
// endpoint's next step; the last attempt's endpoints are dead-lettered.
// Nothing is acked before its attempt record and audit entries are
// durable.
func (w *Worker) concludeAll(ctx context.Context, items []*item) {
	var (
		entries []entry.Entry
		groups  = map[groupKey][]record{}
		owners  = map[groupKey][]*item{}
		gone    = map[string]bool{}
		failing []opEvent
	)
	for _, it := range items {
		if it.done {
			continue
		}
		for _, tg := range it.targets {
			if tg.finishDelivered {
				entries = append(entries, deliveredEntry(it, tg, tg.n, 0))
			}
			if !tg.attempted {
				continue
			}
			w.conclude(ctx, it, tg, &entries, gone, &failing)
			r, err := w.attemptRecord(ctx, it.s.Tenant, it.s.Route, it.s.ID, tg.a)
			if err != nil {
				it.retryLater(w, err)
				break
			}
			groups[it.key] = append(groups[it.key], r)
			if o := owners[it.key]; len(o) == 0 || o[len(o)-1] != it {
				owners[it.key] = append(owners[it.key], it)
			}
		}
	}
	var wg sync.WaitGroup
	for k, recs := range groups {
		wg.Go(func() {
			if _, err := w.storeRecords(ctx, w.cfg.Attempts, attemptSubject(k.tenant, k.group), attemptsFormat, recs, nil); err != nil {
				w.retryLaterAll(owners[k], err)
			}
		})
	}
	wg.Wait()
	// Entries of items whose record was not stored are written anyway: an
	// audit entry of an attempt is true whether or not its record made it.
	if err := w.auditAll(ctx, entries...); err != nil {
		for _, it := range items {
			if !it.done && len(it.targets) > 0 {
				it.retryLater(w, err)
			}
		}
	}
	var dead []deadTarget
	for _, it := range items {
		if it.done {
			continue
		}
		for _, tg := range it.targets {
			switch {
			case tg.finishDelivered:
				w.metrics.deliveries.WithLabelValues(ResultDelivered).Inc()
			case tg.attempted && tg.a.Result == ResultDelivered:
				tg.finished = true
				w.metrics.deliveries.WithLabelValues(ResultDelivered).Inc()
				it.log().Info("forwarder: delivered", "endpoint", tg.ep.ID, "attempt", tg.a.N, "status", tg.a.Status,
					"latency", time.Duration(tg.a.LatencyMS*float64(time.Millisecond)).String())
			case tg.attempted && tg.a.Result == ResultRetry:
				w.metrics.deliveries.WithLabelValues(ResultFailed).Inc()
				it.log().Info("forwarder: attempt failed; retrying", "endpoint", tg.ep.ID, "attempt", tg.a.N, "class", tg.a.Class,
					"status", tg.a.Status, "retry_in", tg.delay.String())
			case tg.attempted:
				tg.deadLetter = tg.a.Class
				dead = append(dead, deadTarget{it, tg})
			case tg.deadLetter != "":
				dead = append(dead, deadTarget{it, tg})
			}
		}
	}
	w.notify(ctx, failing...)
	w.deadLetterAll(ctx, dead)
}

// conclude turns one endpoint's attempt into its record and audit entry,
// and disables the endpoint after a 410.
func (w *Worker) conclude(ctx context.Context, it *item, tg *target, entries *[]entry.Entry, gone map[string]bool, failing *[]opEvent) {
	n := tg.n + 1
	res := tg.res
	a := Attempt{Endpoint: tg.ep.ID, N: tg.made + 1, Scheduled: n, Trigger: TriggerQueue, Time: tg.start.UTC(), Status: res.status,
		LatencyMS: float64(res.latency.Microseconds()) / 1000, Class: res.class}
	tg.n = n
	if res.ok() {
		a.Result = ResultDelivered
		*entries = append(*entries, deliveredEntry(it, tg, n, res.status))
		tg.a = a
		return
	}
	if ek := it.s.Tenant + "/" + it.s.Route + "/" + tg.ep.ID; res.gone && !gone[ek] {
		gone[ek] = true
		if err := w.disableEndpoint(ctx, it.s.Tenant, it.s.Route, tg.ep, res.status, DisabledGone); err != nil {
			it.log().Error("forwarder: disabling endpoint failed", "endpoint", tg.ep.ID, "err", err)
		}
	}
	delay, more := w.retryDelay(n, res.retryAfter)
	if res.final || res.gone {
		more = false
	}
	details := map[string]string{"route": it.s.Route, "endpoint": tg.ep.ID, "attempt": strconv.Itoa(n), "class": res.class}
	if res.status != 0 {
		details["status"] = strconv.Itoa(res.status)
	}
	if more {
		a.Result, a.NextAt = ResultRetry, tg.start.Add(delay).UTC()
		tg.waitFor(delay)
		details["retry_in"] = delay.Round(time.Millisecond).String()
		if w.cfg.OpWebhooks != nil {
			if hook, ok := w.cfg.OpWebhooks.OpWebhook(it.s.Tenant); ok {
				after := hook.FailingAfter
				if after <= 0 {
					after = DefaultFailingAfter
				}
				if n == after {
					data := map[string]any{"id": it.s.ID, "route": it.s.Route, "endpoint": tg.ep.ID, "attempt": n, "class": res.class, "status": res.status}
					*failing = append(*failing, opEvent{it.s.Tenant, EventAttemptFailing, data})
				}
			}
		}
	} else {
		a.Result = ResultDeadLettered
	}
	*entries = append(*entries, entry.Entry{Actor: "system", Action: entry.ActionFailed, Tenant: it.s.Tenant,
		Target: it.s.ID, Outcome: entry.OutcomeFailure, Details: details})
	tg.a = a
}

func deliveredEntry(it *item, tg *target, n, status int) entry.Entry {
	details := map[string]string{"route": it.s.Route, "endpoint": tg.ep.ID, "attempt": strconv.Itoa(n)}
	if status != 0 {
		details["status"] = strconv.Itoa(status)
	}
	return entry.Entry{Actor: "system", Action: entry.ActionDelivered, Tenant: it.s.Tenant, Target: it.s.ID,
		Outcome: entry.OutcomeSuccess, Details: details}
}

func classLabel(class string) string {
	if class == "" {
		return "ok"
	}
	return class
}
