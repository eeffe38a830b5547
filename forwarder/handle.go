package forwarder

import (
	"context"
	"log/slog"
	"strconv"
	"time"

	"github.com/sealpost/sealpost/audit"
	"github.com/sealpost/sealpost/ingress"
	"github.com/sealpost/sealpost/queue"
)

const (
	// slotWait is the longest a worker waits for a free slot of an
	// endpoint at its concurrency limit before handing the message back.
	slotWait = 250 * time.Millisecond
	// busyDelay is how long a handed-back message waits before it is tried
	// again. Waiting does not count as an attempt.
	busyDelay = time.Second
	// internalRetryDelay is how long a message waits when sealpost itself
	// could not proceed (KMS, store or audit log unavailable). It does not
	// count as an attempt either. It is shorter than the streams' duplicate
	// window, so a repeated dead-letter append is stored once.
	internalRetryDelay = 30 * time.Second
	// earlyTolerance is how much earlier than its due time a retry may
	// arrive and still be made.
	earlyTolerance = time.Second
)

// delivery is what handle needs of a queue.Delivery.
type delivery interface {
	Ack(ctx context.Context) error
	Retry(delay time.Duration) error
	Drop() error
}

var (
	_ delivery      = (*queue.Delivery)(nil)
	_ queue.Handler = (&Worker{}).Handle
)

// Handle processes one INGEST delivery: build or reuse the signed receipt,
// POST it, and then ack (2xx), retry later per the schedule, or dead-letter
// after the last attempt. It is the queue.Handler of the worker.
func (w *Worker) Handle(ctx context.Context, d *queue.Delivery) {
	w.handle(ctx, d.Submission, d)
}

func (w *Worker) handle(ctx context.Context, s *ingress.Submission, d delivery) {
	log := w.log.With("id", s.ID, "tenant", s.Tenant, "route", s.Route)
	if err := checkTokens(s.Tenant, s.Route, s.ID); err != nil {
		log.Error("forwarder: submission cannot be stored; dropped", "err", err)
		_ = d.Drop()
		return
	}
	env, err := w.ensureReceipt(ctx, s)
	if err != nil {
		w.retryLater(log, d, err)
		return
	}
	last, err := w.lastAttempt(ctx, s.Tenant, s.ID)
	if err != nil {
		w.retryLater(log, d, err)
		return
	}
	n, due := last.n, last.due
	if last.delivered {
		// Delivered, but the audit entry or the ack did not complete:
		// finish that, never post again.
		w.finishDelivered(ctx, log, d, s, map[string]string{"route": s.Route, "attempt": strconv.Itoa(n)})
		return
	}
	if wait := due.Sub(w.cfg.Now()); !due.IsZero() && wait > earlyTolerance {
		// Redelivered before its time (the queue server restarted, or an
		// ack wait ran out): keep the schedule, this is not an attempt.
		w.metrics.deliveries.WithLabelValues("deferred").Inc()
		_ = d.Retry(wait)
		return
	}
	if n >= len(w.cfg.Schedule) {
		// Every attempt was made but dead-lettering did not finish.
		w.deadLetterDelivery(ctx, log, d, s.Tenant, s.Route, s.ID, env, "exhausted", n)
		return
	}
	rt, known := w.cfg.Routes.Route(s.Tenant, s.Route)
	if !known {
		log.Warn("forwarder: route not configured")
		w.conclude(ctx, log, d, s, rt, env, n+1, w.cfg.Now(), result{class: ClassDisabled})
		return
	}
	disabled, err := w.endpointDisabled(ctx, rt)
	if err != nil {
		w.retryLater(log, d, err)
		return
	}
	if disabled {
		w.conclude(ctx, log, d, s, rt, env, n+1, w.cfg.Now(), result{class: ClassDisabled, final: true})
		return
	}
	cur, prev, err := w.cfg.Keys.SigningKeys(ctx, w.cfg.Now())
	if err != nil {
		w.retryLater(log, d, err)
		return
	}
	secrets, err := w.secretsFor(ctx, rt, w.cfg.Now())
	if err != nil {
		w.retryLater(log, d, err)
		return
	}
	// The endpoint's slot is held only around the request.
	b := w.breakerFor(rt)
	adm, probe := b.acquire(ctx, w.cfg.Now, slotWait)
	switch adm {
	case busy:
		w.metrics.deliveries.WithLabelValues("deferred").Inc()
		_ = d.Retry(w.jitter(busyDelay))
		return
	case circuitOpen:
		// The endpoint is resting after repeated failures: this message was
		// not tried, so it keeps its place in its own schedule and comes back
		// when the breaker lets a probe through. Only real requests count
		// as attempts, so a dead endpoint cannot burn through every
		// message's attempts while nobody calls it.
		w.metrics.deliveries.WithLabelValues("deferred").Inc()
		_ = d.Retry(w.jitter(w.cfg.BreakerCooldown))
		return
	}
	start := w.cfg.Now()
	res, err := w.post(ctx, rt.Endpoint, s.ID, env, cur, prev, secrets)
	switch {
	case err != nil:
		b.release(probe, outcomeNone, w.cfg.Now())
		w.retryLater(log, d, err)
		return
	case ctx.Err() != nil:
		// Shutting down: the attempt was cut short by us, not by the
		// endpoint. It is not recorded and another instance (or this one
		// after a restart) makes it again.
		b.release(probe, outcomeNone, w.cfg.Now())
		log.Info("forwarder: attempt abandoned at shutdown")
		_ = d.Retry(w.jitter(busyDelay))
		return
	}
	b.observe(res.latency)
	o := outcomeFailure
	if res.ok() {
		o = outcomeSuccess
	}
	b.release(probe, o, w.cfg.Now())
	w.metrics.attemptSeconds.WithLabelValues(classLabel(res.class)).Observe(res.latency.Seconds())
	w.conclude(ctx, log, d, s, rt, env, n+1, start, res)
}

// conclude records the attempt, audits it and acks, retries or
// dead-letters the delivery. Nothing is acked before its audit entries are
// durable.
func (w *Worker) conclude(ctx context.Context, log *slog.Logger, d delivery, s *ingress.Submission, rt Route, env []byte, n int, start time.Time, res result) {
	a := Attempt{N: n, Trigger: TriggerQueue, Time: start.UTC(), Status: res.status,
		LatencyMS: float64(res.latency.Microseconds()) / 1000, Class: res.class}
	details := map[string]string{"route": s.Route, "attempt": strconv.Itoa(n)}
	if res.status != 0 {
		details["status"] = strconv.Itoa(res.status)
	}
	if res.ok() {
		a.Result = ResultDelivered
		if err := w.recordAttempt(ctx, s.Tenant, s.ID, a); err != nil {
			w.retryLater(log, d, err)
			return
		}
		w.finishDelivered(ctx, log, d, s, details)
		return
	}
	details["class"] = res.class
	if res.gone {
		if err := w.disableEndpoint(ctx, rt, res.status); err != nil {
			log.Error("forwarder: disabling endpoint failed", "err", err)
		}
		res.final = true
	}
	delay, more := w.retryDelay(n, res.retryAfter)
	if res.final {
		more = false
	}
	if more {
		a.Result = ResultRetry
		a.NextAt = start.Add(delay).UTC()
		details["retry_in"] = delay.Round(time.Millisecond).String()
	} else {
		a.Result = ResultDeadLettered
	}
	if err := w.recordAttempt(ctx, s.Tenant, s.ID, a); err != nil {
		w.retryLater(log, d, err)
		return
	}
	if err := w.audit(ctx, audit.Entry{Actor: "system", Action: audit.ActionFailed, Tenant: s.Tenant, Target: s.ID,
		Outcome: audit.OutcomeFailure, Details: details}); err != nil {
		w.retryLater(log, d, err)
		return
	}
	if !more {
		w.deadLetterDelivery(ctx, log, d, s.Tenant, s.Route, s.ID, env, res.class, n)
		return
	}
	log.Info("forwarder: attempt failed; retrying", "attempt", n, "class", res.class, "status", res.status, "retry_in", delay)
	if err := d.Retry(delay); err != nil {
		log.Warn("forwarder: nak failed; the ack wait will redeliver", "err", err)
	}
	w.metrics.deliveries.WithLabelValues(ResultFailed).Inc()
}

// finishDelivered audits a recorded delivery and acks the message. When
// the audit entry cannot be written the message comes back later, and its
// delivered attempt record brings it here again instead of to the endpoint.
func (w *Worker) finishDelivered(ctx context.Context, log *slog.Logger, d delivery, s *ingress.Submission, details map[string]string) {
	if err := w.audit(ctx, audit.Entry{Actor: "system", Action: audit.ActionDelivered, Tenant: s.Tenant, Target: s.ID,
		Outcome: audit.OutcomeSuccess, Details: details}); err != nil {
		w.retryLater(log, d, err)
		return
	}
	if err := d.Ack(ctx); err != nil {
		log.Warn("forwarder: ack after delivery failed; it is acked when the queue hands it back", "err", err)
	}
	w.metrics.deliveries.WithLabelValues(ResultDelivered).Inc()
}

// retryLater hands a delivery back when sealpost itself could not go on.
func (w *Worker) retryLater(log *slog.Logger, d delivery, err error) {
	log.Warn("forwarder: cannot process now; retrying later", "err", err)
	_ = d.Retry(w.jitter(internalRetryDelay))
}

func classLabel(class string) string {
	if class == "" {
		return "ok"
	}
	return class
}
