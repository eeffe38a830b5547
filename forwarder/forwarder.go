// Package forwarder is the delivery worker: it turns a queued submission into
// a signed receipt, stores the receipt sealed, and POSTs it to the route's
// webhook endpoint with Standard Webhooks headers.
//
// Delivery is at least once. The receipt id is the webhook-id and stays the
// same on every attempt, so receivers dedupe on it; ordering between messages
// is not promised. Failed attempts are retried on a schedule kept by
// JetStream (a NAK with a delay), so a restart keeps it; after the last
// attempt the message goes to a sealed dead-letter stream from which it can be
// redelivered. Every attempt is recorded (time, status, latency, error class,
// never a body) and can be listed per receipt.
//
// Outbound requests go through an SSRF guard that checks every address when
// dialing, so a name that resolves to a private address (DNS rebinding) is
// refused as well as an address literal. One slow or dead endpoint cannot
// starve the others: each route has a concurrency limit and a circuit breaker.
package forwarder

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sealpost/sealpost/audit/entry"
	"github.com/sealpost/sealpost/keyring/kms"
	"github.com/sealpost/sealpost/queue"
	"github.com/sealpost/sealpost/signer"
)

// Endpoint is one webhook receiver of a route: the route's receipts are
// POSTed to each of its endpoints (fan-out).
type Endpoint struct {
	// ID names the endpoint within its route: 1-63 of a-z, 0-9, '_' and
	// '-'. Empty means DefaultEndpoint (a route of the configuration file).
	ID string
	// URL is the https URL of the customer's webhook receiver. Required.
	URL string
	// AllowHTTP permits an http URL (development only). Default false.
	AllowHTTP bool
	// Secrets are the endpoint's whsec_ secrets for v1 (HMAC-SHA256)
	// signatures, newest first. Each secret whose NotAfter is zero or in the
	// future signs, so during a rotation's overlap window both sign. Secrets
	// stored with RotateSecret are added to these. Optional: without any,
	// only v1a signatures are sent.
	Secrets []Secret
	// MaxConcurrency bounds the requests in flight to this endpoint, across
	// the instances (Worker.SetInstances). Default: the route's
	// MaxConcurrency, else 16.
	MaxConcurrency int
	// RateLimit bounds the messages per second sent to this endpoint,
	// across the instances (Worker.SetInstances); 0 sets no bound.
	// Messages over it wait (not an attempt).
	RateLimit float64
	// EventTypes the endpoint receives: names ("invoice.paid") or
	// prefixes ("invoice.*"). Empty: every submission, with or without an
	// event type.
	EventTypes []string
}

// DefaultEndpoint is the id of a route's endpoint from the configuration
// file. Its stored state keeps the keys of the single-endpoint routes of
// earlier versions.
const DefaultEndpoint = "default"

// Accepts reports whether the endpoint receives submissions of eventType.
func (e *Endpoint) Accepts(eventType string) bool {
	if len(e.EventTypes) == 0 {
		return true
	}
	for _, t := range e.EventTypes {
		if prefix, ok := strings.CutSuffix(t, ".*"); ok {
			if strings.HasPrefix(eventType, prefix+".") {
				return true
			}
		} else if t == eventType {
			return true
		}
	}
	return false
}

func (e *Endpoint) id() string {
	if e.ID == "" {
		return DefaultEndpoint
	}
	return e.ID
}

// Secret is one symmetric webhook secret.
type Secret struct {
	// Value is "whsec_" followed by the base64 of the key bytes.
	Value string `json:"value"`
	// NotAfter ends the secret's use; zero means no end.
	NotAfter time.Time `json:"not_after,omitzero"`
}

// Route is one tenant's named destination.
type Route struct {
	Tenant, Name string
	// Endpoints the route fans out to. When nil, Endpoint is the route's
	// only endpoint (DefaultEndpoint).
	Endpoints []Endpoint
	// Endpoint is the single endpoint of a route without Endpoints.
	Endpoint Endpoint
	// MaxConcurrency bounds the requests in flight to each endpoint from
	// one instance, unless the endpoint sets its own. Default 16.
	MaxConcurrency int
}

// endpoints returns the route's endpoints with ids and limits filled in.
func (r *Route) endpoints() []Endpoint {
	eps := r.Endpoints
	if eps == nil {
		eps = []Endpoint{r.Endpoint}
	}
	out := make([]Endpoint, len(eps))
	for i, e := range eps {
		e.ID = e.id()
		if e.MaxConcurrency <= 0 {
			e.MaxConcurrency = r.MaxConcurrency
		}
		out[i] = e
	}
	return out
}

// endpoint returns one endpoint of the route by id.
func (r *Route) endpoint(id string) (Endpoint, bool) {
	for _, e := range r.endpoints() {
		if e.ID == id {
			return e, true
		}
	}
	return Endpoint{}, false
}

// Routes looks routes up by tenant and name.
type Routes interface {
	Route(tenant, name string) (Route, bool)
}

// Keys gives the receipt signing keys in effect at now: the current key
// signs receipts and webhooks; the previous keys (those still in their grace
// period) add one more v1a webhook signature each.
type Keys interface {
	SigningKeys(ctx context.Context, now time.Time) (current signer.PrivateKey, previous []signer.PrivateKey, err error)
}

// Sealer seals and opens bytes under an encryption context. *kms.Envelope
// implements it.
type Sealer interface {
	Seal(ctx context.Context, c kms.Context, p []byte) ([]byte, error)
	Open(ctx context.Context, c kms.Context, s []byte) ([]byte, error)
}

// Auditor appends entries to the audit log, returning once they are
// durable.
type Auditor interface {
	AppendAll(ctx context.Context, es ...entry.Entry) error
}

var _ Sealer = (*kms.Envelope)(nil)

// Default settings.
var (
	// DefaultSchedule is the Standard Webhooks retry schedule: the delay
	// before each attempt, the first one immediate.
	DefaultSchedule = []time.Duration{0, 5 * time.Second, 5 * time.Minute, 30 * time.Minute,
		2 * time.Hour, 5 * time.Hour, 10 * time.Hour, 10 * time.Hour}
)

const (
	defaultJitter          = 0.2
	defaultMaxRetryAfter   = time.Hour
	defaultConnectTimeout  = 5 * time.Second
	defaultTLSTimeout      = 5 * time.Second
	defaultTimeout         = 15 * time.Second
	defaultBreakerFailures = 5
	defaultBreakerCooldown = 30 * time.Second
	defaultMaxConcurrency  = 16
)

// Bounds of Config.Schedule.
const (
	MaxScheduleLen   = 50
	MaxScheduleDelay = 7 * 24 * time.Hour
)

// Config configures a Worker.
type Config struct {
	// Routes resolves a submission's tenant and route. Required.
	Routes Routes
	// Keys gives the signing keys. Required.
	Keys Keys
	// Sealer seals receipts, dead letters, attempt records and endpoint
	// secrets. Required.
	Sealer Sealer
	// Auditor records message steps. Optional: nil records nothing.
	Auditor Auditor
	// OpWebhooks finds tenants' operational webhooks. Optional: nil sends
	// no operational events.
	OpWebhooks OpWebhooks
	// OpEvents holds operational events until they are sent; declare it
	// with OpEventsQueue. Required with OpWebhooks.
	OpEvents *queue.WorkQueue

	// Receipts holds the sealed receipts; declare it with ReceiptsStream.
	// Required.
	Receipts *queue.Stream
	// DeadLetters is the dead-letter stream; declare it with
	// DeadLetterStream. Required.
	DeadLetters *queue.Stream
	// Attempts records every delivery attempt; declare it with
	// AttemptsStream. Required.
	Attempts *queue.Stream
	// EndpointState holds disabled endpoints and stored endpoint secrets;
	// declare it with EndpointStateBucket. Required.
	EndpointState *queue.KV
	// Attachments is the object store of mail attachments and bodies
	// stored by reference ("<tenant>/<name>"): deletion and retention
	// remove them. Optional.
	Attachments *queue.Objects
	// Retention says how long each tenant's and route's receipts, attempt
	// records, dead letters and attachments are kept. Optional: nil keeps
	// them (up to the streams' own limits).
	Retention RetentionPolicy
	// MaxMessageBytes is the largest message the queue server takes
	// (queue.Conn.MaxPayload); receipts and attempt records are stored many
	// to a message up to it. Default 1 MiB.
	MaxMessageBytes int

	// Schedule is the delay before each attempt; its length is the number of
	// attempts. The first entry is ignored (the first attempt is made when
	// the message arrives). Default DefaultSchedule (8 attempts over about
	// 28 hours); 1 to 50 entries of 0 to 168h.
	Schedule []time.Duration
	// Jitter spreads each retry delay by up to this fraction either way.
	// Default 0.2; a negative value disables jitter.
	Jitter float64
	// MaxRetryAfter caps how long a Retry-After on a 429 or 503 answer may
	// delay the next attempt. Default 1 hour.
	MaxRetryAfter time.Duration

	// ConnectTimeout bounds the TCP connect. Default 5s.
	ConnectTimeout time.Duration
	// TLSTimeout bounds the TLS handshake. Default 5s.
	TLSTimeout time.Duration
	// Timeout bounds a whole attempt: connect, TLS, request and reading the
	// answer. Default 15s.
	Timeout time.Duration
	// AllowNets are address ranges the SSRF guard lets through although
	// they are private, loopback etc. For development and tests only.
	// Default none.
	AllowNets []netip.Prefix
	// RootCAs replaces the system roots for verifying endpoints (tests).
	// Default nil: the system roots.
	RootCAs *x509.CertPool

	// BreakerFailures is the number of consecutive failures after which an
	// endpoint's circuit opens. Default 5.
	BreakerFailures int
	// BreakerCooldown is how long an open circuit waits before letting one
	// probe through. Default 30s.
	BreakerCooldown time.Duration

	// Logger receives operational logs. Default: discard.
	Logger *slog.Logger
	// Registerer receives the metrics. Default nil: not registered.
	Registerer prometheus.Registerer
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Rand returns a uniform number in [0, 1) for jitter. Default math/rand/v2.
	Rand func() float64
}

// Worker delivers receipts. It is safe for concurrent use.
type Worker struct {
	cfg      Config
	log      *slog.Logger
	client   *http.Client
	guard    *guard
	metrics  *metrics
	breakers sync.Map // endpoint key -> *breaker
	limiters sync.Map // endpoint key -> *rateLimiter
	groups   *groupIndex
	// state caches the endpoint state bucket once Watch runs.
	state atomic.Pointer[stateCache]
	// instances delivering from the same queue (SetInstances); 0 is one.
	instances atomic.Int64
}

// SetInstances tells the worker how many instances deliver from the same
// queue. Each then enforces its share of every endpoint's limits: 1/n of
// its rate limit, and 1/n of its concurrency limit (at least one request
// in flight), so that the endpoint sees about its configured limits across
// the cluster while the queue spreads messages evenly.
func (w *Worker) SetInstances(n int) { w.instances.Store(int64(max(n, 1))) }

// share is the number of instances the limits are shared by.
func (w *Worker) share() int { return max(1, int(w.instances.Load())) }

// Errors callers branch on.
var (
	// ErrNotFound: no such receipt (or dead letter) for this tenant.
	ErrNotFound = errors.New("forwarder: not found")
	// ErrDeliveryFailed: an inline delivery (redeliver, replay) did not get
	// a 2xx answer.
	ErrDeliveryFailed = errors.New("forwarder: delivery failed")
	// ErrEndpointDisabled: the endpoint answered 410 Gone and is disabled
	// until EnableEndpoint.
	ErrEndpointDisabled = errors.New("forwarder: endpoint disabled")
	// ErrUnknownRoute: the route is not configured.
	ErrUnknownRoute = errors.New("forwarder: unknown route")
	// ErrInvalidInput: a missing tenant, an id or route that is not a valid
	// key token, or a filter that makes no sense.
	ErrInvalidInput = errors.New("forwarder: invalid input")
)

// Validate checks c's settings: Schedule (nil stands for the default) and
// Jitter. It does not look at the routes, keys, sealer and stores, which
// New requires as well. Its errors name the setting; New's add
// "forwarder: config:".
func (c Config) Validate() error {
	var errs []error
	if c.Schedule != nil && (len(c.Schedule) == 0 || len(c.Schedule) > MaxScheduleLen) {
		errs = append(errs, fmt.Errorf("schedule must have 1 to %d entries, got %d", MaxScheduleLen, len(c.Schedule)))
	}
	for _, d := range c.Schedule {
		if d < 0 || d > MaxScheduleDelay {
			errs = append(errs, fmt.Errorf("schedule delay %s is out of range [0s, %s]", d, MaxScheduleDelay))
		}
	}
	if c.Jitter >= 1 {
		errs = append(errs, fmt.Errorf("jitter %g must be below 1", c.Jitter))
	}
	return errors.Join(errs...)
}

// New checks c, fills in defaults and returns a Worker.
func New(c Config) (*Worker, error) {
	switch {
	case c.Routes == nil:
		return nil, errors.New("forwarder: config: routes are required")
	case c.Keys == nil:
		return nil, errors.New("forwarder: config: keys are required")
	case c.Sealer == nil:
		return nil, errors.New("forwarder: config: sealer is required")
	case c.Receipts == nil || c.EndpointState == nil:
		return nil, errors.New("forwarder: config: receipts stream and endpoint state bucket are required")
	case c.DeadLetters == nil || c.Attempts == nil:
		return nil, errors.New("forwarder: config: dead-letter and attempts streams are required")
	case c.OpWebhooks != nil && c.OpEvents == nil:
		return nil, errors.New("forwarder: config: operational webhooks need the operational events queue")
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("forwarder: config: %w", err)
	}
	if c.Schedule == nil {
		c.Schedule = DefaultSchedule
	}
	c.Schedule = append([]time.Duration(nil), c.Schedule...)
	switch {
	case c.Jitter == 0:
		c.Jitter = defaultJitter
	case c.Jitter < 0:
		c.Jitter = 0
	}
	setDefault(&c.MaxRetryAfter, defaultMaxRetryAfter)
	setDefault(&c.ConnectTimeout, defaultConnectTimeout)
	setDefault(&c.TLSTimeout, defaultTLSTimeout)
	setDefault(&c.Timeout, defaultTimeout)
	setDefault(&c.BreakerCooldown, defaultBreakerCooldown)
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = 1 << 20
	}
	if c.BreakerFailures <= 0 {
		c.BreakerFailures = defaultBreakerFailures
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Rand == nil {
		c.Rand = rand.Float64
	}
	m, err := newMetrics(c.Registerer)
	if err != nil {
		return nil, err
	}
	g := &guard{allow: append([]netip.Prefix(nil), c.AllowNets...)}
	w := &Worker{cfg: c, log: c.Logger, guard: g, metrics: m, groups: newGroupIndex()}
	w.client = newClient(c, g, nil)
	return w, nil
}

func setDefault(d *time.Duration, def time.Duration) {
	if *d <= 0 {
		*d = def
	}
}
