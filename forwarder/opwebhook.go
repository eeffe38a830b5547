package forwarder

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"slices"
	"sync"
	"time"

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

// opEvent is one operational event on its way.
type opEvent struct {
	tenant string
	body   []byte
	id     string
}

// opSender posts operational events: in the background, a few at a time,
// each tried up to four times over about a minute. They are not queued
// durably: an event pending when the process stops is lost (the audit log
// and the metrics keep what happened).
type opSender struct {
	w     *Worker
	mu    sync.Mutex
	ch    chan opEvent
	slots chan struct{}
}

// opRetries are the delays before each try of an operational event.
var opRetries = []time.Duration{0, 2 * time.Second, 10 * time.Second, 60 * time.Second}

const opQueueLen = 1024

func newOpSender(w *Worker) *opSender {
	return &opSender{w: w, slots: make(chan struct{}, 8)}
}

// start runs the sender until ctx ends.
func (o *opSender) start(ctx context.Context) {
	o.mu.Lock()
	ch := make(chan opEvent, opQueueLen)
	o.ch = ch
	o.mu.Unlock()
	go func() {
		for {
			select {
			case <-ctx.Done():
				o.mu.Lock()
				o.ch = nil
				o.mu.Unlock()
				return
			case ev := <-ch:
				o.slots <- struct{}{}
				go func() {
					defer func() { <-o.slots }()
					o.send(ctx, ev)
				}()
			}
		}
	}()
}

// notify queues an event for tenant when it has an operational webhook
// that wants it. It never blocks: a full queue drops the event (logged).
func (w *Worker) notify(tenant, typ string, data map[string]any) {
	if w.cfg.OpWebhooks == nil {
		return
	}
	hook, ok := w.cfg.OpWebhooks.OpWebhook(tenant)
	if !ok || (len(hook.Events) > 0 && !slices.Contains(hook.Events, typ)) {
		return
	}
	id := newEventID()
	body, err := json.Marshal(map[string]any{"type": typ, "timestamp": signer.FormatTime(w.cfg.Now()), "tenant": tenant, "data": data})
	if err == nil {
		body, err = signer.Canonicalize(body)
	}
	if err != nil {
		w.log.Error("forwarder: operational event cannot be encoded", "type", typ, "err", err)
		return
	}
	w.ops.mu.Lock()
	ch := w.ops.ch
	w.ops.mu.Unlock()
	if ch == nil {
		return
	}
	select {
	case ch <- opEvent{tenant: tenant, body: body, id: id}:
		w.metrics.opEvents.WithLabelValues("queued").Inc()
	default:
		w.metrics.opEvents.WithLabelValues("dropped").Inc()
		w.log.Warn("forwarder: operational event dropped: too many pending", "tenant", tenant, "type", typ)
	}
}

// KeyRotated sends signing_key.rotated to every tenant that wants it.
func (w *Worker) KeyRotated(kid string) {
	if w.cfg.OpWebhooks == nil {
		return
	}
	for _, t := range w.cfg.OpWebhooks.OpWebhookTenants() {
		w.notify(t, EventKeyRotated, map[string]any{"kid": kid})
	}
}

func newEventID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "evt_" + hex.EncodeToString(b[:])
}

// send posts one event, signed like every webhook (v1a with the receipt
// keys, v1 with the operational webhook's secrets), with retries.
func (o *opSender) send(ctx context.Context, ev opEvent) {
	w := o.w
	for i, d := range opRetries {
		if d > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(w.jitter(d)):
			}
		}
		hook, ok := w.cfg.OpWebhooks.OpWebhook(ev.tenant)
		if !ok {
			return // removed meanwhile
		}
		now := w.cfg.Now()
		cur, prev, err := w.cfg.Keys.SigningKeys(ctx, now)
		if err != nil {
			w.log.Warn("forwarder: operational event: signing keys unavailable", "tenant", ev.tenant, "err", err)
			continue
		}
		ep := Endpoint{ID: DefaultEndpoint, URL: hook.URL, AllowHTTP: hook.AllowHTTP}
		secrets, err := w.secretsFor(ctx, ev.tenant, opRoute, ep, now)
		if err != nil {
			w.log.Warn("forwarder: operational event: secrets unavailable", "tenant", ev.tenant, "err", err)
			continue
		}
		res, err := w.post(ctx, ep, ev.id, ev.body, cur, prev, secrets)
		if err == nil && res.ok() {
			w.metrics.opEvents.WithLabelValues("delivered").Inc()
			return
		}
		w.log.Info("forwarder: operational event not delivered", "tenant", ev.tenant, "try", i+1, "class", res.class, "status", res.status)
	}
	w.metrics.opEvents.WithLabelValues("failed").Inc()
}
