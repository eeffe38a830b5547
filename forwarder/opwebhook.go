package forwarder

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/sealpost/sealpost/keyring/kms"
	"github.com/sealpost/sealpost/queue"
	"github.com/sealpost/sealpost/signer"
)

// Operational events, sent to a tenant's operational webhook.
const (
	// EventEndpointDisabled: an endpoint answered 410 Gone, or was
	// disabled by hand.
	EventEndpointDisabled = "endpoint.disabled"
	// EventEndpointEnabled: an endpoint was enabled again.
	EventEndpointEnabled = "endpoint.enabled"
	// EventAttemptExhausted: a message was dead-lettered for an endpoint.
	EventAttemptExhausted = "message.attempt.exhausted"
	// EventAttemptFailing: a message's attempt to an endpoint failed for
	// the tenant's failing_after-th time (default 3).
	EventAttemptFailing = "message.attempt.failing"
	// EventKeyRotated: a new receipt signing key was made; receivers
	// refresh their JWKS.
	EventKeyRotated = "signing_key.rotated"
)

// OpWebhook is a tenant's operational webhook.
type OpWebhook struct {
	URL       string
	AllowHTTP bool
	// FailingAfter: the failed attempt after which message.attempt.failing
	// is sent. Default 3.
	FailingAfter int
	// Events the tenant wants; empty: all.
	Events []string
}

// DefaultFailingAfter is OpWebhook.FailingAfter's default.
const DefaultFailingAfter = 3

// OpWebhooks finds tenants' operational webhooks.
type OpWebhooks interface {
	OpWebhook(tenant string) (OpWebhook, bool)
	// OpWebhookTenants lists the tenants that have one.
	OpWebhookTenants() []string
}

// opRoute is the route name under which an operational webhook's secrets
// are stored (route names cannot start with '_').
const opRoute = "_ops"

// RotateOpSecret makes a new whsec_ secret for a tenant's operational
// webhook, shown this once (see RotateSecret).
func (w *Worker) RotateOpSecret(ctx context.Context, tenant string, overlap time.Duration) (string, error) {
	if err := checkTenant(tenant); err != nil {
		return "", err
	}
	return w.RotateSecret(ctx, tenant, opRoute, DefaultEndpoint, overlap)
}

// opEvent is one operational event for a tenant.
type opEvent struct {
	tenant, typ string
	data        map[string]any
}

// opEventSubject is the subject of an operational event in OpEventsQueue.
func opEventSubject(tenant, id string) string { return "opevents." + tenant + "." + id }

func opEventContext(tenant, id string) kms.Context {
	return kms.Context{Tenant: tenant, Purpose: kms.PurposeOpEvent, ObjectID: id}
}

// opRetries are the delays before the second and later tries of an
// operational event: four tries over about a minute and a quarter.
var opRetries = []time.Duration{2 * time.Second, 10 * time.Second, 60 * time.Second}

// opStoreTimeout bounds sealing one operational event, and storing a
// batch of them.
const opStoreTimeout = 5 * time.Second

// notify stores the events whose tenant has an operational webhook that
// wants them in OpEvents, sealed, to be sent by RunOpEvents on any
// instance, also after a restart. Events that cannot be stored are counted
// as dropped and logged; what happened stays in the audit log.
func (w *Worker) notify(ctx context.Context, evs ...opEvent) {
	if w.cfg.OpWebhooks == nil || len(evs) == 0 {
		return
	}
	ctx = context.WithoutCancel(ctx)
	jobs := make([]queue.NewJob, 0, len(evs))
	for _, ev := range evs {
		hook, ok := w.cfg.OpWebhooks.OpWebhook(ev.tenant)
		if !ok || (len(hook.Events) > 0 && !slices.Contains(hook.Events, ev.typ)) {
			continue
		}
		id := newEventID()
		body, err := json.Marshal(map[string]any{"type": ev.typ, "timestamp": signer.FormatTime(w.cfg.Now()), "tenant": ev.tenant, "data": ev.data})
		if err == nil {
			body, err = signer.Canonicalize(body)
		}
		if err == nil {
			sctx, cancel := context.WithTimeout(ctx, opStoreTimeout)
			body, err = w.cfg.Sealer.Seal(sctx, opEventContext(ev.tenant, id), body)
			cancel()
		}
		if err != nil {
			w.metrics.opEvents.WithLabelValues("dropped").Inc()
			w.log.Error("forwarder: operational event not stored", "tenant", ev.tenant, "type", ev.typ, "err", err)
			continue
		}
		jobs = append(jobs, queue.NewJob{Subject: opEventSubject(ev.tenant, id), MsgID: id, Data: body})
	}
	if len(jobs) == 0 {
		return
	}
	actx, cancel := context.WithTimeout(ctx, opStoreTimeout)
	stored, err := w.cfg.OpEvents.Add(actx, jobs...)
	cancel()
	w.metrics.opEvents.WithLabelValues("queued").Add(float64(stored))
	if err != nil {
		w.metrics.opEvents.WithLabelValues("dropped").Add(float64(len(jobs) - stored))
		w.log.Error("forwarder: operational events not stored", "events", len(jobs)-stored, "err", err)
	}
}

// KeyRotated sends signing_key.rotated to every tenant that wants it. It
// returns at once: the events are stored in the background, a batch at a
// time.
func (w *Worker) KeyRotated(kid string) {
	if w.cfg.OpWebhooks == nil {
		return
	}
	tenants := w.cfg.OpWebhooks.OpWebhookTenants()
	go func() {
		for chunk := range slices.Chunk(tenants, 64) {
			evs := make([]opEvent, 0, len(chunk))
			for _, t := range chunk {
				evs = append(evs, opEvent{tenant: t, typ: EventKeyRotated, data: map[string]any{"kid": kid}})
			}
			w.notify(context.Background(), evs...)
		}
	}()
}

func newEventID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "evt_" + hex.EncodeToString(b[:])
}

// RunOpEvents sends the stored operational events, on every instance, until
// ctx ends or StopOpEvents. Without operational webhooks it does nothing.
func (w *Worker) RunOpEvents(ctx context.Context) {
	if w.cfg.OpEvents != nil {
		w.cfg.OpEvents.Run(ctx, w.sendOpEvent)
	}
}

// StopOpEvents ends RunOpEvents and waits for the events being sent.
func (w *Worker) StopOpEvents() {
	if w.cfg.OpEvents != nil {
		w.cfg.OpEvents.Stop()
	}
}

// sendOpEvent makes one try of a stored event, signed like every webhook
// (v1a with the receipt keys, v1 with the operational webhook's secrets).
// The event id is its webhook-id on every try.
func (w *Worker) sendOpEvent(ctx context.Context, j queue.Job) queue.JobOutcome {
	parts := strings.Split(j.Subject, ".")
	if len(parts) != 3 || checkTenant(parts[1]) != nil || !strings.HasPrefix(parts[2], "evt_") {
		w.log.Error("forwarder: operational event on an unexpected subject; dropped", "subject", j.Subject)
		return queue.JobDone()
	}
	tenant, id := parts[1], parts[2]
	hook, ok := w.cfg.OpWebhooks.OpWebhook(tenant)
	if !ok {
		w.metrics.opEvents.WithLabelValues("failed").Inc()
		return queue.JobDone() // the webhook was removed meanwhile
	}
	// A try cut short because the instance stops is made again at once
	// by another instance or after the restart, never given up: only a
	// try that ran its course counts against the four.
	retry := func() queue.JobOutcome {
		switch {
		case errors.Is(ctx.Err(), context.Canceled):
			return queue.JobRetry(0)
		case j.Tries > len(opRetries):
			w.metrics.opEvents.WithLabelValues("failed").Inc()
			w.log.Warn("forwarder: operational event given up", "tenant", tenant, "event", id, "tries", j.Tries)
			return queue.JobDone()
		}
		return queue.JobRetry(w.jitter(opRetries[j.Tries-1]))
	}
	body, err := w.cfg.Sealer.Open(ctx, opEventContext(tenant, id), j.Data)
	if err != nil {
		w.log.Warn("forwarder: operational event cannot be opened", "tenant", tenant, "event", id, "err", err)
		return retry()
	}
	var head struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(body, &head); err != nil || (len(hook.Events) > 0 && !slices.Contains(hook.Events, head.Type)) {
		return queue.JobDone() // no longer wanted (or not an event: cannot happen)
	}
	now := w.cfg.Now()
	cur, prev, err := w.cfg.Keys.SigningKeys(ctx, now)
	if err != nil {
		w.log.Warn("forwarder: operational event: signing keys unavailable", "tenant", tenant, "err", err)
		return retry()
	}
	ep := Endpoint{ID: DefaultEndpoint, URL: hook.URL, AllowHTTP: hook.AllowHTTP}
	secrets, err := w.secretsFor(ctx, tenant, opRoute, ep, now)
	if err != nil {
		w.log.Warn("forwarder: operational event: secrets unavailable", "tenant", tenant, "err", err)
		return retry()
	}
	res, err := w.post(ctx, ep, id, body, cur, prev, secrets)
	if err == nil && res.ok() {
		w.metrics.opEvents.WithLabelValues("delivered").Inc()
		return queue.JobDone()
	}
	w.log.Info("forwarder: operational event not delivered", "tenant", tenant, "event", id, "try", j.Tries, "class", res.class, "status", res.status)
	return retry()
}
