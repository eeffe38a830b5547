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
	n   int // scheduled attempts made so far
	// made is how many attempts of every trigger were made so far, as
	// far as the records read say (none are read for a first delivery).
	made int
	env  []byte // the signed envelope
	// sealed is the envelope sealed, while ensureReceipts stores it.
	sealed []byte

	rt        Route
	attempted bool // an attempt was made (or concluded without a request)
	start     time.Time
	res       result
	// finishDelivered: an earlier attempt delivered it; its
	// message.delivered entry is written again and the message acked.
	finishDelivered bool
	// deadLetter: dead-letter it with this reason, without an attempt.
	deadLetter string

	done bool
	out  queue.Outcome
	l    *slog.Logger
}

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

// defer hands a submission back until due; it is not an attempt.
func (it *item) deferTo(w *Worker, delay time.Duration) {
	w.metrics.deliveries.WithLabelValues("deferred").Inc()
	it.finish(queue.Retry(delay, it.n))
}

// Handle delivers the submissions of one INGEST message and returns what
// becomes of each: build or reuse the signed receipt, POST it, record the
// attempt, and ack (2xx), retry later per the schedule, or dead-letter
// after the last attempt. Work that many submissions share is done once for
// all of them: one signing-key lookup, one audit append per step, one write
// per id group for receipts and one for attempt records. It is the
// queue.Handler of the worker.
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
			it.retryLater(w, errors.New("forwarder: submission left unfinished"))
		}
		outs[i] = it.out
	}
	return outs
}

// loadState reads what earlier deliveries of these submissions stored:
// a message JetStream handed out before, or one requeued for a retry, may
// have a receipt and attempts already, and a newer copy of its schedule
// may be queued.
func (w *Worker) loadState(ctx context.Context, items []*item, now time.Time) {
	groups := map[groupKey][]*item{}
	var keys []groupKey
	for _, it := range items {
		if it.done || !(it.d.Redelivered || it.d.Attempt > 0) {
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
			last, ok := lasts[it.s.ID]
			if !ok {
				continue
			}
			it.made = last.count
			switch {
			case last.delivered:
				// Delivered, but the audit entry or the ack did not
				// complete: finish that, never post again.
				it.n, it.finishDelivered = last.n, true
			case last.result == ResultDeadLettered:
				it.n, it.deadLetter = last.n, last.class
			case last.n > it.n:
				// A newer copy of this submission's schedule was queued
				// (or was about to be): hand it back on that schedule.
				it.n = last.n
				it.finish(queue.Retry(max(0, last.due.Sub(now)), last.n))
			case now.Before(last.due):
				it.deferTo(w, last.due.Sub(now))
			}
		}
	}
}

// attemptAll makes one attempt for every item that is due one.
func (w *Worker) attemptAll(ctx context.Context, items []*item) {
	var todo []*item
	now := w.cfg.Now()
	for _, it := range items {
		switch {
		case it.done || it.env == nil || it.finishDelivered || it.deadLetter != "":
		case it.n >= len(w.cfg.Schedule):
			// Every attempt was made but dead-lettering did not finish.
			it.deadLetter = "exhausted"
		default:
			todo = append(todo, it)
		}
	}
	if len(todo) == 0 {
		return
	}
	cur, prev, err := w.cfg.Keys.SigningKeys(ctx, now)
	if err != nil {
		w.retryLaterAll(todo, err)
		return
	}
	// What an endpoint needs is looked up once per route of the batch.
	type routeState struct {
		rt       Route
		known    bool
		disabled bool
		secrets  []Secret
		err      error
	}
	routes := map[string]*routeState{}
	var wg sync.WaitGroup
	for _, it := range todo {
		rk := it.s.Tenant + "/" + it.s.Route
		st := routes[rk]
		if st == nil {
			st = &routeState{}
			routes[rk] = st
			st.rt, st.known = w.cfg.Routes.Route(it.s.Tenant, it.s.Route)
			if st.known {
				st.disabled, st.err = w.endpointDisabled(ctx, st.rt)
				if st.err == nil && !st.disabled {
					st.secrets, st.err = w.secretsFor(ctx, st.rt, now)
				}
			}
		}
		it.rt = st.rt
		switch {
		case !st.known:
			it.log().Warn("forwarder: route not configured")
			it.attempted, it.start, it.res = true, now, result{class: ClassDisabled}
		case st.err != nil:
			it.retryLater(w, st.err)
		case st.disabled:
			it.attempted, it.start, it.res = true, now, result{class: ClassDisabled, final: true}
		default:
			wg.Go(func() { w.attempt(ctx, it, cur, prev, st.secrets) })
		}
	}
	wg.Wait()
}

// attempt POSTs one item's envelope, holding a slot of its endpoint only
// around the request.
func (w *Worker) attempt(ctx context.Context, it *item, cur signer.PrivateKey, prev []signer.PrivateKey, secrets []Secret) {
	b := w.breakerFor(it.rt)
	adm, probe := b.acquire(ctx, w.cfg.Now, slotWait)
	switch adm {
	case busy:
		it.deferTo(w, w.jitter(busyDelay))
		return
	case circuitOpen:
		// The endpoint is resting after repeated failures: this message was
		// not tried, so it keeps its place in its own schedule and comes back
		// when the breaker lets a probe through. Only real requests count
		// as attempts, so a dead endpoint cannot burn through every
		// message's attempts while nobody calls it.
		it.deferTo(w, w.jitter(w.cfg.BreakerCooldown))
		return
	}
	start := w.cfg.Now()
	res, err := w.post(ctx, it.rt.Endpoint, it.s.ID, it.env, cur, prev, secrets)
	switch {
	case err != nil:
		b.release(probe, outcomeNone, w.cfg.Now())
		it.retryLater(w, err)
		return
	case ctx.Err() != nil:
		// Shutting down: the attempt was cut short by us, not by the
		// endpoint. It is not recorded and another instance (or this one
		// after a restart) makes it again.
		b.release(probe, outcomeNone, w.cfg.Now())
		it.log().Info("forwarder: attempt abandoned at shutdown")
		it.finish(queue.Retry(w.jitter(busyDelay), it.n))
		return
	}
	b.observe(res.latency)
	o := outcomeFailure
	if res.ok() {
		o = outcomeSuccess
	}
	b.release(probe, o, w.cfg.Now())
	w.metrics.attemptSeconds.WithLabelValues(classLabel(res.class)).Observe(res.latency.Seconds())
	it.attempted, it.start, it.res = true, start, res
}

// concluded is what one item's attempt decided.
type concluded struct {
	it    *item
	a     Attempt
	delay time.Duration // before the next attempt, when a.Result is retry
}

// concludeAll records the attempts, audits them and decides each item's
// outcome; the last attempt's items are dead-lettered. Nothing is acked
// before its attempt record and audit entries are durable.
func (w *Worker) concludeAll(ctx context.Context, items []*item) {
	var (
		cs      []concluded
		entries []entry.Entry
		groups  = map[groupKey][]record{}
		owners  = map[groupKey][]*item{}
		gone    = map[string]bool{}
	)
	for _, it := range items {
		if it.done {
			continue
		}
		if it.finishDelivered {
			entries = append(entries, deliveredEntry(it, it.n, 0))
			continue
		}
		if !it.attempted {
			continue
		}
		n := it.n + 1
		res := it.res
		a := Attempt{N: it.made + 1, Scheduled: n, Trigger: TriggerQueue, Time: it.start.UTC(), Status: res.status,
			LatencyMS: float64(res.latency.Microseconds()) / 1000, Class: res.class}
		c := concluded{it: it}
		if res.ok() {
			a.Result = ResultDelivered
			entries = append(entries, deliveredEntry(it, n, res.status))
		} else {
			if res.gone && !gone[it.s.Tenant+"/"+it.s.Route] {
				gone[it.s.Tenant+"/"+it.s.Route] = true
				if err := w.disableEndpoint(ctx, it.rt, res.status); err != nil {
					it.log().Error("forwarder: disabling endpoint failed", "err", err)
				}
			}
			delay, more := w.retryDelay(n, res.retryAfter)
			if res.final || res.gone {
				more = false
			}
			details := map[string]string{"route": it.s.Route, "attempt": strconv.Itoa(n), "class": res.class}
			if res.status != 0 {
				details["status"] = strconv.Itoa(res.status)
			}
			if more {
				a.Result, a.NextAt, c.delay = ResultRetry, it.start.Add(delay).UTC(), delay
				details["retry_in"] = delay.Round(time.Millisecond).String()
			} else {
				a.Result = ResultDeadLettered
			}
			entries = append(entries, entry.Entry{Actor: "system", Action: entry.ActionFailed, Tenant: it.s.Tenant,
				Target: it.s.ID, Outcome: entry.OutcomeFailure, Details: details})
		}
		r, err := w.attemptRecord(ctx, it.s.Tenant, it.s.Route, it.s.ID, a)
		if err != nil {
			it.retryLater(w, err)
			continue
		}
		c.a = a
		cs = append(cs, c)
		groups[it.key] = append(groups[it.key], r)
		owners[it.key] = append(owners[it.key], it)
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
			if !it.done && (it.attempted || it.finishDelivered) {
				it.retryLater(w, err)
			}
		}
	}
	var dead []*item
	for _, it := range items {
		if !it.done && it.finishDelivered {
			it.finish(ackOutcome)
			w.metrics.deliveries.WithLabelValues(ResultDelivered).Inc()
		}
		if !it.done && it.deadLetter != "" {
			dead = append(dead, it)
		}
	}
	for _, c := range cs {
		it := c.it
		if it.done {
			continue
		}
		switch c.a.Result {
		case ResultDelivered:
			it.finish(ackOutcome)
			w.metrics.deliveries.WithLabelValues(ResultDelivered).Inc()
			it.log().Info("forwarder: delivered", "attempt", c.a.N, "status", c.a.Status, "latency", time.Duration(c.a.LatencyMS*float64(time.Millisecond)).String())
		case ResultRetry:
			it.n = c.a.Scheduled
			it.finish(queue.Retry(c.delay, c.a.Scheduled))
			w.metrics.deliveries.WithLabelValues(ResultFailed).Inc()
			it.log().Info("forwarder: attempt failed; retrying", "attempt", c.a.N, "class", c.a.Class, "status", c.a.Status, "retry_in", c.delay.String())
		default:
			it.n, it.deadLetter = c.a.Scheduled, c.a.Class
			dead = append(dead, it)
		}
	}
	w.deadLetterAll(ctx, dead)
}

func deliveredEntry(it *item, n, status int) entry.Entry {
	details := map[string]string{"route": it.s.Route, "attempt": strconv.Itoa(n)}
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
