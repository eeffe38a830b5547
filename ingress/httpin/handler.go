// Package httpin is the HTTPS ingest API: POST /v1/ingest/{route} with a
// bearer API key. It answers 202 only once the submission is durably queued.
package httpin

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/sealpost/sealpost/audit/entry"
	"github.com/sealpost/sealpost/ingress"
	"github.com/sealpost/sealpost/signer"
)

// Route is an ingest route of a tenant.
type Route struct{ Tenant, Name string }

// Routes finds a tenant's route by name.
type Routes interface {
	Route(tenant, name string) (Route, bool)
}

// Authenticator checks a request's API key. *Keys is one; a catalog that
// changes at run time is another.
type Authenticator interface {
	Authenticate(r *http.Request) (*APIKey, error)
}

var _ Authenticator = (*Keys)(nil)

// Auditor records authentication outcomes. Append returns once the entry
// is durable. (Message steps are recorded by the Enqueuer the caller wires.)
type Auditor interface {
	Append(ctx context.Context, e entry.Entry) error
}

// Idempotency remembers Idempotency-Key uses. Reserve stores rec under key
// unless the key exists, in which case it returns the stored record.
// Complete replaces the record once the submission is durable or its
// queueing failed for a passing reason. Release forgets a key whose request
// was refused for good (too large once sealed, invalid), so that a
// corrected body can use it.
type Idempotency interface {
	Reserve(ctx context.Context, key string, rec []byte) (existing []byte, err error)
	Complete(ctx context.Context, key string, rec []byte) error
	Release(ctx context.Context, key string) error
}

// staleReservation is how long a reservation may stay pending before a
// retry takes it over (the first request's process died between reserving
// and queueing). It is shorter than JetStream's duplicate window, so if the
// first request did publish, the takeover's publish of the same id is
// dropped as a duplicate.
const staleReservation = 60 * time.Second

// Config configures the handler.
type Config struct {
	Enqueuer ingress.Enqueuer // required
	Keys     Authenticator    // required
	Routes   Routes           // required
	Auditor  Auditor          // optional
	// Authenticated, when set, is called with each request's API key once
	// it authenticated, so that the caller's per-request records (the API
	// call audit entry) name the key and tenant.
	Authenticated func(r *http.Request, key *APIKey)
	// Idempotency stores Idempotency-Key uses; nil disables the header.
	Idempotency Idempotency
	// NewID mints receipt ids. Default ingress.NewID; a shared *ingress.IDs
	// (its New method) groups ids minted together, which lets receipts be
	// stored many to a write.
	NewID func(time.Time) string
	// MaxBodyBytes is the largest accepted body. Default 1 MiB, at most
	// MaxMaxBodyBytes.
	MaxBodyBytes int64
	// RatePerSecond and Burst limit requests per API key across all
	// instances. Default 100/s, burst 200; not negative. Each instance
	// enforces its share (see SetInstances).
	RatePerSecond float64
	Burst         int
	// RetryAfter is sent with 503 and 429. Default 5s; not negative.
	RetryAfter time.Duration
	// Logger receives one info line per accepted submission (ids, tenant,
	// route and size, never the payload) and the failures. Default: discard.
	Logger *slog.Logger
	Now    func() time.Time
}

// Handler serves POST /v1/ingest/{route}.
type Handler struct {
	cfg      Config
	log      *slog.Logger
	mu       sync.Mutex
	limiters map[string]*rate.Limiter
	// instances is how many instances share the rate limits.
	instances int
	// tempLog and failLog throttle the log lines of refused requests (503)
	// and failed ones (500) to one per second each: during an outage every
	// request fails the same way.
	tempLog, failLog ingress.Throttle
}

// MaxMaxBodyBytes bounds Config.MaxBodyBytes: a body is held in memory,
// parsed and canonicalized, and must fit one queue message once wrapped.
const MaxMaxBodyBytes = 4 << 20

// Validate checks cfg's settings: MaxBodyBytes, RatePerSecond, Burst and
// RetryAfter, a zero value standing for its default. It does not look at
// the enqueuer, keys and routes, which New requires as well. Its errors
// name the setting; New's add "httpin: config:".
func (cfg Config) Validate() error {
	var errs []error
	if cfg.MaxBodyBytes < 0 || cfg.MaxBodyBytes > MaxMaxBodyBytes {
		errs = append(errs, fmt.Errorf("max body bytes must be between 1 and %d, got %d", MaxMaxBodyBytes, cfg.MaxBodyBytes))
	}
	if cfg.RatePerSecond < 0 || cfg.Burst < 0 {
		errs = append(errs, errors.New("rate per second and burst must not be negative"))
	}
	if cfg.RetryAfter < 0 {
		errs = append(errs, errors.New("retry after must not be negative"))
	}
	return errors.Join(errs...)
}

// New checks cfg and returns the handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Enqueuer == nil || cfg.Keys == nil || cfg.Routes == nil {
		return nil, errors.New("httpin: enqueuer, keys and routes are required")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("httpin: config: %w", err)
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	if cfg.RatePerSecond == 0 {
		cfg.RatePerSecond = 100
	}
	if cfg.Burst == 0 {
		cfg.Burst = 200
	}
	if cfg.RetryAfter == 0 {
		cfg.RetryAfter = 5 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.NewID == nil {
		cfg.NewID = ingress.NewID
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	// Requests are counted and timed by the server around the handler
	// (sealpost_http_requests_total and _duration_seconds, pattern
	// "POST /v1/ingest/{route}"), not here, so none is counted twice.
	return &Handler{cfg: cfg, log: cfg.Logger, limiters: make(map[string]*rate.Limiter), instances: 1}, nil
}

// Errors of the ingest API, mapped to problem types by writeError.
var (
	errBadJSON      = errors.New("request body is not valid JSON")
	errLossyNumber  = errors.New("request body has a number that would be signed with another value; send it as a string")
	errForbidden    = errors.New("api key is not allowed to post to this route")
	errNoRoute      = errors.New("unknown route")
	errTooLarge     = errors.New("request body too large")
	errRateLimited  = errors.New("too many requests")
	errIdemReuse    = errors.New("idempotency key reused with a different body")
	errIdemInFlight = errors.New("a request with this idempotency key is still in progress")
	errBadIdemKey   = errors.New("idempotency key must be 1-255 printable ASCII characters")
	errDupIdemKey   = errors.New("more than one Idempotency-Key header")
	errBadEventType = errors.New("the Event-Type header must be one value of 1-64 letters, digits, '.', '_' and '-'")
	errSlowBody     = errors.New("the body did not arrive within the server's read timeout")
	errMethod       = errors.New("method not allowed")
)

type accepted struct {
	ID string `json:"id"`
}

type idemRecord struct {
	BodySHA256 string `json:"body_sha256"`
	ID         string `json:"id"`
	Done       bool   `json:"done"`
	// Failed: queueing under ID failed, perhaps only in its answer. The
	// next request with the key queues again under the same ID at once, so
	// that the queue (message id) or the receiver (webhook-id) drops a
	// copy that did arrive.
	Failed bool      `json:"failed,omitempty"`
	At     time.Time `json:"at"`
}

// ServeHTTP handles one ingest request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id, err := h.serve(w, r)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	body, _ := json.Marshal(accepted{ID: id})
	body = append(body, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Header().Set("Location", "/v1/receipts/"+id)
	w.WriteHeader(http.StatusAccepted)
	_, _ = w.Write(body)
}

func (h *Handler) serve(w http.ResponseWriter, r *http.Request) (string, error) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return "", errMethod
	}
	key, err := h.cfg.Keys.Authenticate(r)
	h.auditAuth(r, key, err)
	if err != nil {
		return "", err
	}
	if h.cfg.Authenticated != nil {
		h.cfg.Authenticated(r, key)
	}
	routeName := r.PathValue("route")
	if !ingress.ValidRoute(routeName) {
		return "", errNoRoute
	}
	route, ok := h.cfg.Routes.Route(key.Tenant, routeName)
	if !ok {
		return "", errNoRoute
	}
	if !key.Allows(routeName) {
		return "", errForbidden
	}
	if !h.limiter(key.ID).Allow() {
		return "", errRateLimited
	}
	idemKeys := r.Header.Values("Idempotency-Key")
	if len(idemKeys) > 1 {
		// Which one the client meant is anyone's guess; a proxy may have
		// added one.
		return "", errDupIdemKey
	}
	idemKey := r.Header.Get("Idempotency-Key")
	if idemKey != "" && !validIdemKey(idemKey) {
		return "", errBadIdemKey
	}
	eventType := r.Header.Get("Event-Type")
	if len(r.Header.Values("Event-Type")) > 1 || (eventType != "" && !ingress.ValidEventType(eventType)) {
		return "", errBadEventType
	}
	if r.ContentLength > h.cfg.MaxBodyBytes {
		return "", errTooLarge
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return "", errTooLarge
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// The server's read timeout ended a body sent too slowly:
			// the client's fault, not a passing failure of ours.
			return "", errSlowBody
		}
		return "", fmt.Errorf("read body: %w", ingress.Temporary(err))
	}
	now := h.cfg.Now().UTC()
	payload, canonical, err := toPayload(r.Header.Get("Content-Type"), raw)
	if err != nil {
		return "", err
	}
	sub := &ingress.Submission{
		ID:         h.cfg.NewID(now),
		Tenant:     route.Tenant,
		Route:      route.Name,
		Channel:    ingress.ChannelHTTPS,
		ReceivedAt: now,
		Payload:    payload,
		PayloadJCS: canonical,
		RawSHA256:  signer.RawDigest(raw),
		RawSize:    int64(len(raw)),
		EventType:  eventType,
	}
	sub.Source, err = json.Marshal(source{
		RemoteAddr:     r.RemoteAddr,
		TLS:            tlsInfo(r.TLS),
		APIKeyID:       key.ID,
		IdempotencyKey: idemKey,
		EventType:      eventType,
	})
	if err != nil {
		return "", err
	}
	var storeKey string
	if idemKey != "" && h.cfg.Idempotency != nil {
		storeKey = idempotencyStoreKey(key, route.Name, idemKey)
		rec, _ := json.Marshal(idemRecord{BodySHA256: sub.RawSHA256, ID: sub.ID, At: now})
		existing, err := h.cfg.Idempotency.Reserve(r.Context(), storeKey, rec)
		if err != nil {
			return "", ingress.Temporary(fmt.Errorf("idempotency: %w", err))
		}
		if existing != nil {
			var prev idemRecord
			if err := json.Unmarshal(existing, &prev); err != nil {
				return "", fmt.Errorf("idempotency record: %w", err)
			}
			switch {
			case prev.BodySHA256 != sub.RawSHA256:
				return "", errIdemReuse
			case prev.Done:
				h.log.Info("ingest replayed", "id", prev.ID, "tenant", route.Tenant, "route", route.Name,
					"api_key", key.ID, "request_id", r.Header.Get("X-Request-Id"))
				return prev.ID, nil
			case !prev.Failed && now.Sub(prev.At) < staleReservation:
				// The first request with this key is still being queued:
				// answering 202 now could promise what it may yet fail to do.
				return "", errIdemInFlight
			}
			// A failed or stale reservation: queue again under the same id.
			sub.ID = prev.ID
		}
	}
	if err := h.cfg.Enqueuer.Enqueue(r.Context(), sub); err != nil {
		if storeKey != "" {
			h.enqueueFailed(r, storeKey, sub, now, err)
		}
		return "", err
	}
	if storeKey != "" {
		rec, _ := json.Marshal(idemRecord{BodySHA256: sub.RawSHA256, ID: sub.ID, Done: true, At: now})
		if err := h.cfg.Idempotency.Complete(context.WithoutCancel(r.Context()), storeKey, rec); err != nil {
			// The submission is durable; a retry finds the pending record
			// and, once it is stale, queues the same id again, which the
			// queue drops as a duplicate or the receiver dedupes.
			h.log.Warn("idempotency complete failed", "err", err)
		}
	}
	h.log.Info("ingest accepted", "id", sub.ID, "tenant", sub.Tenant, "route", sub.Route,
		"api_key", key.ID, "size", sub.RawSize, "request_id", r.Header.Get("X-Request-Id"))
	return sub.ID, nil
}

// enqueueFailed updates the Idempotency-Key record of a submission that
// was not queued. After a passing failure the client's retry goes through
// at once under the same id, since a timed-out publish may have been stored
// after all; after a permanent refusal the key is free again.
func (h *Handler) enqueueFailed(r *http.Request, storeKey string, sub *ingress.Submission, now time.Time, cause error) {
	ctx := context.WithoutCancel(r.Context())
	var err error
	if ingress.IsTemporary(cause) || errors.Is(cause, context.DeadlineExceeded) {
		rec, _ := json.Marshal(idemRecord{BodySHA256: sub.RawSHA256, ID: sub.ID, Failed: true, At: now})
		err = h.cfg.Idempotency.Complete(ctx, storeKey, rec)
	} else {
		err = h.cfg.Idempotency.Release(ctx, storeKey)
	}
	if err != nil {
		h.log.Warn("idempotency record update failed; a retry takes the reservation over once it is stale", "err", err)
	}
}

type source struct {
	RemoteAddr     string   `json:"remote_addr"`
	TLS            *tlsJSON `json:"tls,omitempty"`
	APIKeyID       string   `json:"api_key_id"`
	IdempotencyKey string   `json:"idempotency_key,omitempty"`
	EventType      string   `json:"event_type,omitempty"`
}

type tlsJSON struct {
	Version string `json:"version"`
	Cipher  string `json:"cipher"`
}

func tlsInfo(cs *tls.ConnectionState) *tlsJSON {
	if cs == nil {
		return nil
	}
	return &tlsJSON{
		Version: strings.ReplaceAll(tls.VersionName(cs.Version), " ", ""),
		Cipher:  tls.CipherSuiteName(cs.CipherSuite),
	}
}

// toPayload turns the body into the receipt payload: JSON bodies in their
// JCS (RFC 8785) form, which is what the receipt signs (canonical is set),
// anything else wrapped as {"content_type", "body_base64"}.
func toPayload(contentType string, raw []byte) (payload json.RawMessage, canonical bool, err error) {
	mt, _, _ := mime.ParseMediaType(contentType)
	if mt == "application/json" || strings.HasSuffix(mt, "+json") || contentType == "" {
		if len(bytes.TrimSpace(raw)) == 0 || !json.Valid(raw) {
			return nil, false, errBadJSON
		}
		canon, err := canonicalJSON(raw)
		if errors.Is(err, signer.ErrLossyNumber) {
			return nil, false, fmt.Errorf("%w: %w", errLossyNumber, err)
		} else if err != nil {
			return nil, false, fmt.Errorf("%w: %w", errBadJSON, err)
		}
		return canon, true, nil
	}
	payload, err = json.Marshal(struct {
		ContentType string `json:"content_type"`
		BodyBase64  string `json:"body_base64"`
	}{ContentType: signer.Truncate(contentType, 255), BodyBase64: base64.StdEncoding.EncodeToString(raw)})
	return payload, false, err
}

// canonicalJSON returns the JCS form of a valid JSON document and refuses
// what JCS cannot sign reproducibly: duplicate member names (also when they
// differ only in escapes), nesting deeper than maxJSONDepth, and anything
// else the canonicalizer refuses, such as a number that an IEEE-754 double
// cannot hold (signer.ErrLossyNumber).
func canonicalJSON(raw []byte) ([]byte, error) {
	if err := checkDepth(raw); err != nil {
		return nil, err
	}
	return signer.Canonicalize(raw)
}

// maxJSONDepth bounds nesting so a hostile body cannot exhaust the stack.
const maxJSONDepth = 64

// checkDepth refuses valid JSON nested deeper than maxJSONDepth, counting
// brackets outside strings.
func checkDepth(raw []byte) error {
	depth, inString, escaped := 0, false, false
	for _, c := range raw {
		switch {
		case escaped:
			escaped = false
		case inString:
			switch c {
			case '\\':
				escaped = true
			case '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			if depth++; depth > maxJSONDepth {
				return fmt.Errorf("nesting deeper than %d", maxJSONDepth)
			}
		case c == '}' || c == ']':
			depth--
		}
	}
	return nil
}

func validIdemKey(k string) bool {
	if len(k) > 255 {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e {
			return false
		}
	}
	return true
}

// idempotencyStoreKey scopes a key to the API key and the route: the same
// Idempotency-Key on another route is another request.
func idempotencyStoreKey(key *APIKey, route, idem string) string {
	sum := sha256.Sum256([]byte(route + "\x00" + idem))
	return key.Tenant + "." + key.ID + "." + hex.EncodeToString(sum[:16])
}

func (h *Handler) limiter(id string) *rate.Limiter {
	h.mu.Lock()
	defer h.mu.Unlock()
	l := h.limiters[id]
	if l == nil {
		lim, burst := h.share()
		l = rate.NewLimiter(lim, burst)
		h.limiters[id] = l
	}
	return l
}

// share is this instance's part of the rate limits. h.mu must be held.
func (h *Handler) share() (rate.Limit, int) {
	return rate.Limit(h.cfg.RatePerSecond / float64(h.instances)), max(1, h.cfg.Burst/h.instances)
}

// SetInstances tells the handler how many instances share the configured
// rate limits (the live instances of a cluster): each enforces 1/n of
// them, so that n instances behind a load balancer that spreads requests
// evenly allow the configured rate together.
func (h *Handler) SetInstances(n int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	n = max(n, 1)
	if n == h.instances {
		return
	}
	h.instances = n
	lim, burst := h.share()
	for _, l := range h.limiters {
		l.SetLimit(lim)
		l.SetBurst(burst)
	}
}

func (h *Handler) auditAuth(r *http.Request, key *APIKey, err error) {
	e := entry.Entry{Action: entry.ActionAuthSuccess, Outcome: entry.OutcomeSuccess, Target: "POST /v1/ingest/{route}",
		Details: map[string]string{"remote_addr": r.RemoteAddr}}
	if err != nil {
		e.Action, e.Outcome, e.Actor = entry.ActionAuthFailure, entry.OutcomeDenied, "anonymous"
		if id, _, ok := ParseToken(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")); ok {
			e.Details["api_key_id"] = id
		}
	} else {
		e.Actor, e.Tenant = "apikey:"+key.ID, key.Tenant
	}
	h.audit(r, e)
}

func (h *Handler) audit(r *http.Request, e entry.Entry) {
	if h.cfg.Auditor == nil {
		return
	}
	e.RequestID = r.Header.Get("X-Request-Id")
	if err := h.cfg.Auditor.Append(r.Context(), e); err != nil {
		h.log.Error("audit append failed", "action", e.Action, "err", err)
	}
}
