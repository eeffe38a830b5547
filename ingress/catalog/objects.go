package catalog

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/sealpost/sealpost/forwarder"
	"github.com/sealpost/sealpost/ingress"
	"github.com/sealpost/sealpost/ingress/smtpin"
	"github.com/sealpost/sealpost/signer"
)

// Tenant is one customer.
type Tenant struct {
	// Name: 1-63 of a-z, 0-9 and '-'.
	Name        string            `json:"name"`
	Description string            `json:"description,omitempty"`
	Metadata    map[string]string `json:"metadata,omitempty"`
	// Retention of the tenant's data, a Go duration ("168h"); empty: the
	// gateway's default.
	Retention string    `json:"retention,omitempty"`
	Declared  bool      `json:"declared"`
	Created   time.Time `json:"created_at,omitzero"`
	Updated   time.Time `json:"updated_at,omitzero"`
}

// Route is a tenant's named destination: what is posted to
// /v1/ingest/{route} (or mailed to its recipients) is delivered to each
// of its endpoints.
type Route struct {
	Tenant      string            `json:"tenant"`
	Name        string            `json:"name"`
	Description string            `json:"description,omitempty"`
	Metadata    map[string]string `json:"metadata,omitempty"`
	// Retention of the route's receipts, attempts and dead letters; empty:
	// the tenant's.
	Retention string `json:"retention,omitempty"`
	// Recipients are the mail addresses (RCPT TO) routed here, lower case;
	// an address belongs to one route only. At most MaxRecipients.
	Recipients []string  `json:"recipients,omitempty"`
	Declared   bool      `json:"declared"`
	Created    time.Time `json:"created_at,omitzero"`
	Updated    time.Time `json:"updated_at,omitzero"`
}

// Endpoint is one webhook receiver of a route.
type Endpoint struct {
	// ID: 1-63 of a-z, 0-9, '_' and '-', unique in the route. A declared
	// route's endpoint is "default".
	ID     string `json:"id"`
	Tenant string `json:"tenant"`
	Route  string `json:"route"`
	// URL: https (http only with AllowHTTP, set by an operator).
	URL       string `json:"url"`
	AllowHTTP bool   `json:"allow_http,omitempty"`
	// MaxConcurrency bounds requests in flight to it, shared by the
	// instances; 0: 16.
	MaxConcurrency int `json:"max_concurrency,omitempty"`
	// RateLimit in messages per second, shared by the instances; 0: none.
	RateLimit float64 `json:"rate_limit,omitempty"`
	// EventTypes the endpoint receives ("invoice.paid", "invoice.*");
	// empty: every event.
	EventTypes  []string          `json:"event_types,omitempty"`
	Description string            `json:"description,omitempty"`
	Metadata    map[string]string `json:"metadata,omitempty"`
	Declared    bool              `json:"declared"`
	Created     time.Time         `json:"created_at,omitzero"`
	Updated     time.Time         `json:"updated_at,omitzero"`
}

// OpWebhook is where a tenant's operational events go (endpoint disabled
// or enabled, attempts failing or exhausted, signing key rotated).
type OpWebhook struct {
	Tenant    string `json:"tenant"`
	URL       string `json:"url"`
	AllowHTTP bool   `json:"allow_http,omitempty"`
	// FailingAfter is the attempt of a message to an endpoint after whose
	// failure message.attempt.failing is sent. Default 3.
	FailingAfter int `json:"failing_after,omitempty"`
	// Events the tenant wants; empty: all.
	Events  []string  `json:"events,omitempty"`
	Updated time.Time `json:"updated_at,omitzero"`
}

// DefaultEndpoint is the id of a declared route's endpoint.
const DefaultEndpoint = forwarder.DefaultEndpoint

// Limits of the objects' fields.
const (
	maxDescription   = 500
	maxMetadata      = 16
	maxMetadataKey   = 64
	maxMetadataValue = 256
	maxEventTypes    = 32
	maxRateLimit     = 100000
	maxConcurrency   = 1024
	minRetention     = time.Second
	maxRetention     = 366 * 24 * time.Hour
)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

func checkCommon(desc string, meta map[string]string, retention string) error {
	if len(desc) > maxDescription || !printableUTF8(desc) {
		return invalid("description: at most %d characters, no control characters", maxDescription)
	}
	if len(meta) > maxMetadata {
		return invalid("metadata: at most %d entries", maxMetadata)
	}
	for k, v := range meta {
		if k == "" || len(k) > maxMetadataKey || len(v) > maxMetadataValue || !printableUTF8(k) || !printableUTF8(v) {
			return invalid("metadata: keys 1-%d and values up to %d characters, no control characters", maxMetadataKey, maxMetadataValue)
		}
	}
	if retention != "" {
		if _, err := parseRetention(retention); err != nil {
			return err
		}
	}
	return nil
}

func parseRetention(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil || d < minRetention || d > maxRetention {
		return 0, invalid("retention: a duration from 1s to 8784h (366 days), got %q", signer.Truncate(s, 40))
	}
	return d, nil
}

func printableUTF8(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r == '\uFFFD' {
			return false
		}
	}
	return true
}

// Validate checks a tenant.
func (t *Tenant) Validate() error {
	if !ingress.ValidName(t.Name) {
		return invalid("name: %s, got %q", ingress.NameRule, signer.Truncate(t.Name, 80))
	}
	return checkCommon(t.Description, t.Metadata, t.Retention)
}

// Validate checks a route.
func (r *Route) Validate() error {
	if !ingress.ValidRoute(r.Name) {
		return invalid("name: %s, got %q", ingress.RouteRule, signer.Truncate(r.Name, 80))
	}
	if len(r.Recipients) > MaxRecipients {
		return invalid("recipients: at most %d", MaxRecipients)
	}
	for i, a := range r.Recipients {
		if !smtpin.ValidAddress(a) || a != strings.ToLower(a) || strings.ContainsFunc(a, func(r rune) bool {
			return r <= ' ' || r == 0x7f || r == '<' || r == '>' || r == ','
		}) {
			return invalid("recipients[%d]: not a mail address (local@domain, at most 254 bytes), got %q", i, signer.Truncate(a, 80))
		}
		if slices.Contains(r.Recipients[:i], a) {
			return invalid("recipients[%d]: %s is listed twice", i, a)
		}
	}
	return checkCommon(r.Description, r.Metadata, r.Retention)
}

// MaxRecipients bounds a route's recipients.
const MaxRecipients = 100

// normalizeRecipients trims and lower-cases addresses, as the SMTP ingress
// compares them.
func normalizeRecipients(as []string) []string {
	if len(as) == 0 {
		return nil
	}
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = strings.ToLower(strings.TrimSpace(a))
	}
	return out
}

// Validate checks an endpoint; allow are the networks the SSRF guard lets
// through (forward.allow_networks).
func (e *Endpoint) Validate(allow []netip.Prefix) error {
	if !ingress.ValidRoute(e.ID) {
		return invalid("id: %s, got %q", ingress.RouteRule, signer.Truncate(e.ID, 80))
	}
	if err := forwarder.CheckEndpointURL(e.URL, e.AllowHTTP, allow); err != nil {
		return invalid("url: %v", err)
	}
	if e.MaxConcurrency < 0 || e.MaxConcurrency > maxConcurrency {
		return invalid("max_concurrency: 0 (default 16) to %d", maxConcurrency)
	}
	if e.RateLimit < 0 || e.RateLimit > maxRateLimit {
		return invalid("rate_limit: 0 (none) to %d messages per second", maxRateLimit)
	}
	if err := checkEventTypes(e.EventTypes); err != nil {
		return err
	}
	return checkCommon(e.Description, e.Metadata, "")
}

// checkEventTypes checks an event-type filter: names, or prefixes ending
// in ".*".
func checkEventTypes(ts []string) error {
	if len(ts) > maxEventTypes {
		return invalid("event_types: at most %d", maxEventTypes)
	}
	for _, t := range ts {
		name := strings.TrimSuffix(t, ".*")
		if t == "*" || !ingress.ValidEventType(name) {
			return invalid("event_types: %q is not an event type (letters, digits, '.', '_', '-'; a trailing \".*\" matches a prefix)", signer.Truncate(t, 80))
		}
	}
	return nil
}

// OpEvents are the operational events.
var OpEvents = []string{
	forwarder.EventEndpointDisabled, forwarder.EventEndpointEnabled,
	forwarder.EventAttemptExhausted, forwarder.EventAttemptFailing, forwarder.EventKeyRotated,
}

// Validate checks an operational webhook.
func (o *OpWebhook) Validate(allow []netip.Prefix) error {
	if err := forwarder.CheckEndpointURL(o.URL, o.AllowHTTP, allow); err != nil {
		return invalid("url: %v", err)
	}
	if o.FailingAfter < 0 || o.FailingAfter > 50 {
		return invalid("failing_after: 0 (default 3) to 50")
	}
	for _, e := range o.Events {
		if !slices.Contains(OpEvents, e) {
			return invalid("events: unknown event %q (%s)", signer.Truncate(e, 80), strings.Join(OpEvents, ", "))
		}
	}
	return nil
}

func cloneMeta(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	return maps.Clone(m)
}
