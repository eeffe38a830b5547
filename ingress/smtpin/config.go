// Package smtpin is the SMTP ingress of sealpost: a go-smtp backend that
// requires STARTTLS, routes recipients to tenants, checks SPF, DKIM and DMARC,
// parses each message into the mail payload of a receipt and answers 250 only
// once the submission is durably queued.
package smtpin

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sealpost/sealpost/ingress"
)

// Defaults applied by New to zero-valued Config fields.
const (
	DefaultAddr                = "127.0.0.1:2525"
	DefaultMaxMessageBytes     = 25 << 20
	DefaultMaxRecipients       = 100
	DefaultMaxConnsPerIP       = 20
	DefaultMaxConns            = 1000
	DefaultCommandTimeout      = 5 * time.Minute
	DefaultDataTimeout         = 10 * time.Minute
	DefaultMaxHeaderBytes      = 64 << 10
	DefaultMaxMIMEDepth        = 10
	DefaultMaxMIMEParts        = 100
	DefaultInlineAttachmentMax = 256 << 10
	DefaultMaxPayloadBytes     = 768 << 10
	DefaultMaxJunkCommands     = 20
	DefaultMaxSessionTime      = 30 * time.Minute
)

// Route sends mail for a set of recipient addresses to one tenant's route.
type Route struct {
	// Tenant owns the receipts of this route. Required; a tenant name
	// (ingress.ValidName).
	Tenant string
	// Name is the route name as it appears in receipt.route. Required; a
	// route name (ingress.ValidRoute).
	Name string
	// Recipients are the envelope addresses (RCPT TO) served by this route,
	// compared case-insensitively. At least one is required, and an address
	// may belong to one route only.
	Recipients []string
	// AllowedSenderDomains, when not empty, limits the envelope sender
	// (MAIL FROM) to these domains (exact, case-insensitive match). Optional.
	AllowedSenderDomains []string
	// AllowedNetworks, when not empty, limits the client IP address to these
	// ranges. Optional.
	AllowedNetworks []netip.Prefix
	// RequireDKIM makes the route refuse (550 5.7.20) a message without a
	// passing DKIM signature aligned with the From header domain. Optional,
	// default false: authentication results are recorded, never enforced.
	RequireDKIM bool
}

// RouteLookup finds the route of a recipient address.
type RouteLookup interface {
	MailRoute(addr string) (Route, bool)
}

// Resolver looks up DNS TXT records for SPF, DKIM and DMARC.
// *dnscache.Cache and *net.Resolver satisfy it. If the resolver also has
// LookupIPAddr, LookupMX and LookupAddr (as both do), the SPF "a", "mx",
// "exists" and "ptr" mechanisms are evaluated too; otherwise they yield
// temperror.
type Resolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
}

// BlobStore stores a large attachment and returns the ref put in the
// payload. The implementation seals the data under the tenant's key.
type BlobStore interface {
	PutBlob(ctx context.Context, tenant, name string, data []byte) (ref string, err error)
}

// Dedup remembers which receipt id a message got on a route, so that a
// sender's retry of the same message (same bytes and envelope) gets the same
// id: after a 451 part-way through several routes, or an answer lost to a
// dropped connection, nothing is delivered under two ids.
type Dedup interface {
	// Claim stores id under key unless key holds an id already, and
	// returns the stored id ("" when id was stored).
	Claim(ctx context.Context, key, id string) (existing string, err error)
}

// ReportSink keeps the TLS-RPT reports (RFC 8460) mailed to
// Config.ReportAddress. An error wrapping ErrReportRefused refuses the
// message (554 5.6.0); a temporary one (ingress.Temporary) asks the sender
// to retry (451).
type ReportSink interface {
	PutMailedReport(ctx context.Context, r MailedReport) (id string, err error)
}

// MailedReport is the report part of a message to Config.ReportAddress.
type MailedReport struct {
	// Body is the report: gzip when Gzipped, else JSON.
	Body    []byte
	Gzipped bool
	// RemoteAddr, MailFrom and Auth (receipt.source.auth) say who sent it.
	RemoteAddr, MailFrom string
	Auth                 json.RawMessage
}

// Config configures the SMTP ingress. Zero values take the documented default.
type Config struct {
	// Addr is the listen address used by ListenAndServe. Default 127.0.0.1:2525.
	Addr string
	// Hostname is the name announced in the greeting. Required.
	Hostname string
	// TLSConfig holds the server certificate. Required. New works on a clone
	// that enforces TLS 1.2 as the minimum and AEAD cipher suites for 1.2.
	TLSConfig *tls.Config

	// Routes maps recipients to tenants. At least one is required, unless
	// MoreRoutes is set.
	Routes []Route
	// MoreRoutes, when set, is asked for a recipient none of Routes
	// serves: routes that change while the server runs (the catalog's).
	// Optional.
	MoreRoutes RouteLookup
	// Enqueuer durably queues submissions. Required.
	Enqueuer ingress.Enqueuer
	// Blobs stores attachments above InlineAttachmentMax. Required.
	Blobs BlobStore
	// Dedup gives a retried message the receipt ids of its first delivery.
	// Optional: without it each delivery gets new ids.
	Dedup Dedup
	// NewID mints receipt ids. Default ingress.NewID; a shared *ingress.IDs
	// (its New method) groups ids minted together, which lets receipts be
	// stored many to a write.
	NewID func(time.Time) string
	// Resolver answers the DNS queries of SPF, DKIM and DMARC. Required
	// unless AuthOff (a *dnscache.Cache in production).
	Resolver Resolver
	// AuthOff turns SPF, DKIM and DMARC off: no DNS lookups are made and
	// receipts record "skipped" for each. For development and tests; a
	// route with RequireDKIM cannot be served then. Default false.
	AuthOff bool
	// ReportAddress receives TLS-RPT reports (the mailto: of the _smtp._tls
	// TXT record): they go to Reports instead of a route. Optional; it must
	// not be a route's recipient.
	ReportAddress string
	// Reports keeps the reports mailed to ReportAddress. Required with it.
	Reports ReportSink
	// Logger receives one line per connection problem and per message.
	// Default: discard.
	Logger *slog.Logger
	// Registerer receives the ingress metrics. Optional.
	Registerer prometheus.Registerer

	// MaxMessageBytes is the largest message accepted, in bytes, as
	// advertised by SIZE. Default 25 MiB; 1024 to 100 MiB. Larger messages
	// get 552 5.3.4.
	MaxMessageBytes int64
	// MaxRecipients is the most RCPT TO per message. Default 100; more get
	// 452 4.5.3.
	MaxRecipients int
	// MaxConnsPerIP is the most simultaneous connections from one client
	// IPv4 address or IPv6 /64. Default 20; more get 421 4.7.0 and are
	// closed.
	MaxConnsPerIP int
	// MaxConns is the most simultaneous connections in total. Default 1000.
	MaxConns int
	// CommandTimeout is how long the server waits for the next command,
	// CRLF included. Default 5 minutes; then 421 4.4.2 and the connection is
	// closed (a command without its CRLF is not executed).
	CommandTimeout time.Duration
	// MaxSessionTime bounds a connection from its start. Default 30
	// minutes; then 421 4.4.2 and the connection is closed. At least
	// DataTimeout, at most 24 hours.
	MaxSessionTime time.Duration
	// MaxJunkCommands is the most commands in a row that move no message
	// forward (NOOP, RSET, VRFY, HELP, a repeated EHLO, refused MAIL and
	// RCPT, unknown commands); the count starts again after each accepted
	// message. Default 20, at most 10000; one more gets 421 4.7.0 and the
	// connection is closed. go-smtp itself closes a connection after its fourth unknown
	// or malformed command (500 5.5.1).
	MaxJunkCommands int
	// DataTimeout is how long a client may take to send one message body,
	// from the 354 answer to the final dot. Default 10 minutes.
	DataTimeout time.Duration
	// MaxHeaderBytes is the largest message header block, in bytes.
	// Default 64 KiB; 1024 to 1 MiB. Larger get 552 5.3.4.
	MaxHeaderBytes int
	// MaxMIMEDepth is the deepest nesting of multipart bodies. Default 10,
	// at most 100; deeper messages get 554 5.6.0.
	MaxMIMEDepth int
	// MaxMIMEParts is the most MIME parts in one message. Default 100, at
	// most 10000; more get 554 5.6.0.
	MaxMIMEParts int
	// InlineAttachmentMax is the largest attachment, in decoded bytes, kept
	// inline (base64) in the payload; larger ones go to Blobs and are
	// referenced. Default 256 KiB, at most 512 KiB.
	InlineAttachmentMax int64
	// MaxPayloadBytes is the largest payload JSON handed to the Enqueuer.
	// Attachments are moved to Blobs, largest first, until the payload fits;
	// a message whose text alone does not fit gets 552 5.3.4. Default 768 KiB.
	MaxPayloadBytes int
	// Now returns the current time. Default time.Now.
	Now func() time.Time
}

// Upper bounds of Config's limits.
const (
	MaxMaxMessageBytes     = 100 << 20
	MaxMaxHeaderBytes      = 1 << 20
	MaxMaxMIMEDepth        = 100
	MaxMaxMIMEParts        = 10000
	MaxInlineAttachmentMax = 512 << 10
	MaxMaxJunkCommands     = 10000
	MaxMaxSessionTime      = 24 * time.Hour
)

// Validate checks c's settings: the limits, a zero value standing for its
// default, and the routes and ReportAddress. It does not look at what New
// requires besides: Hostname, TLSConfig, Enqueuer, Blobs, a Resolver
// unless AuthOff, at least one route, and Reports with ReportAddress. Its
// errors name the field; New's add "smtpin:".
func (c Config) Validate() error {
	c = c.limitDefaults()
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	switch {
	case c.MaxMessageBytes < 1024:
		bad("MaxMessageBytes %d is below 1024", c.MaxMessageBytes)
	case c.MaxMessageBytes > MaxMaxMessageBytes:
		bad("MaxMessageBytes %d is above %d (100 MiB)", c.MaxMessageBytes, MaxMaxMessageBytes)
	}
	if c.MaxRecipients < 1 {
		bad("MaxRecipients %d must be positive", c.MaxRecipients)
	}
	if c.MaxConnsPerIP < 1 || c.MaxConns < 1 {
		bad("MaxConnsPerIP and MaxConns must be positive")
	}
	if c.CommandTimeout < time.Second || c.DataTimeout < time.Second {
		bad("CommandTimeout and DataTimeout must be at least 1s")
	}
	switch {
	case c.MaxSessionTime < c.DataTimeout:
		bad("MaxSessionTime %s is below DataTimeout %s", c.MaxSessionTime, c.DataTimeout)
	case c.MaxSessionTime > MaxMaxSessionTime:
		bad("MaxSessionTime %s is above %s", c.MaxSessionTime, MaxMaxSessionTime)
	}
	if c.MaxJunkCommands < 1 || c.MaxJunkCommands > MaxMaxJunkCommands {
		bad("MaxJunkCommands %d must be between 1 and %d", c.MaxJunkCommands, MaxMaxJunkCommands)
	}
	if c.MaxHeaderBytes < 1024 || c.MaxHeaderBytes > MaxMaxHeaderBytes {
		bad("MaxHeaderBytes %d must be between 1024 and %d (1 MiB)", c.MaxHeaderBytes, MaxMaxHeaderBytes)
	}
	if c.MaxMIMEDepth < 1 || c.MaxMIMEDepth > MaxMaxMIMEDepth || c.MaxMIMEParts < 1 || c.MaxMIMEParts > MaxMaxMIMEParts {
		bad("MaxMIMEDepth and MaxMIMEParts must be positive, at most %d and %d", MaxMaxMIMEDepth, MaxMaxMIMEParts)
	}
	if c.InlineAttachmentMax < 0 || c.InlineAttachmentMax > MaxInlineAttachmentMax {
		bad("InlineAttachmentMax %d must be between 0 and %d (512 KiB)", c.InlineAttachmentMax, MaxInlineAttachmentMax)
	}
	if c.MaxPayloadBytes < 4096 {
		bad("MaxPayloadBytes %d is below 4096", c.MaxPayloadBytes)
	}

	seen := make(map[string]string)
	if c.ReportAddress != "" {
		if !ValidAddress(c.ReportAddress) {
			bad("ReportAddress %q is not an address", c.ReportAddress)
		}
		seen[normalizeAddr(c.ReportAddress)] = "TLS reports (ReportAddress)"
	}
	names := make(map[string]bool)
	for i, r := range c.Routes {
		where := fmt.Sprintf("Routes[%d]", i)
		if !ingress.ValidName(r.Tenant) {
			bad("%s: Tenant %q is not a tenant name (%s)", where, r.Tenant, ingress.NameRule)
			continue
		}
		if !ingress.ValidRoute(r.Name) {
			bad("%s: Name %q is not a route name (%s)", where, r.Name, ingress.RouteRule)
			continue
		}
		where = fmt.Sprintf("%s (%s/%s)", where, r.Tenant, r.Name)
		if names[r.Tenant+"/"+r.Name] {
			bad("%s: duplicate route %s/%s", where, r.Tenant, r.Name)
		}
		names[r.Tenant+"/"+r.Name] = true
		if len(r.Recipients) == 0 {
			bad("%s: Recipients needs at least one address", where)
		}
		for _, a := range r.Recipients {
			key := normalizeAddr(a)
			if !ValidAddress(a) {
				bad("%s: recipient %q is not an address", where, a)
			} else if other, dup := seen[key]; dup {
				bad("%s: recipient %q is already served by route %s", where, a, other)
			} else {
				seen[key] = r.Tenant + "/" + r.Name
			}
		}
		for _, d := range r.AllowedSenderDomains {
			if !ValidSenderDomain(d) {
				bad("%s: AllowedSenderDomains entry %q is not a domain", where, d)
			}
		}
		if r.RequireDKIM && c.AuthOff {
			bad("%s: RequireDKIM needs authentication, which AuthOff turns off", where)
		}
		for _, p := range r.AllowedNetworks {
			if !p.IsValid() {
				bad("%s: AllowedNetworks has an invalid prefix", where)
				break
			}
		}
	}
	return errors.Join(errs...)
}

// limitDefaults fills in the defaults of c's limits.
func (c Config) limitDefaults() Config {
	setDefault(&c.MaxMessageBytes, DefaultMaxMessageBytes)
	setDefault(&c.MaxRecipients, DefaultMaxRecipients)
	setDefault(&c.MaxConnsPerIP, DefaultMaxConnsPerIP)
	setDefault(&c.MaxConns, DefaultMaxConns)
	setDefault(&c.CommandTimeout, DefaultCommandTimeout)
	setDefault(&c.DataTimeout, DefaultDataTimeout)
	setDefault(&c.MaxHeaderBytes, DefaultMaxHeaderBytes)
	setDefault(&c.MaxMIMEDepth, DefaultMaxMIMEDepth)
	setDefault(&c.MaxMIMEParts, DefaultMaxMIMEParts)
	setDefault(&c.InlineAttachmentMax, DefaultInlineAttachmentMax)
	setDefault(&c.MaxPayloadBytes, DefaultMaxPayloadBytes)
	setDefault(&c.MaxJunkCommands, DefaultMaxJunkCommands)
	setDefault(&c.MaxSessionTime, DefaultMaxSessionTime)
	return c
}

// withDefaults returns c with defaults applied, or an error naming what is
// missing or invalid.
func (c Config) withDefaults() (Config, error) {
	switch {
	case c.Hostname == "":
		return c, errors.New("smtpin: Hostname is required")
	case c.TLSConfig == nil:
		return c, errors.New("smtpin: TLSConfig is required (STARTTLS is mandatory)")
	case len(c.TLSConfig.Certificates) == 0 && c.TLSConfig.GetCertificate == nil && c.TLSConfig.GetConfigForClient == nil:
		return c, errors.New("smtpin: TLSConfig has no certificate")
	case c.Enqueuer == nil:
		return c, errors.New("smtpin: Enqueuer is required")
	case c.Blobs == nil:
		return c, errors.New("smtpin: Blobs is required")
	case c.Resolver == nil && !c.AuthOff:
		return c, errors.New("smtpin: Resolver is required (or AuthOff)")
	case len(c.Routes) == 0 && c.MoreRoutes == nil:
		return c, errors.New("smtpin: Routes needs at least one route")
	case c.ReportAddress != "" && c.Reports == nil:
		return c, errors.New("smtpin: Reports is required with ReportAddress")
	}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("smtpin: %w", err)
	}
	c = c.limitDefaults()
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.NewID == nil {
		c.NewID = ingress.NewID
	}
	return c, nil
}

// ValidAddress reports whether a is a mail address as routes and
// ReportAddress take it: something before and after its last '@', at most
// 254 bytes once trimmed.
func ValidAddress(a string) bool {
	local, domain, ok := splitAddr(normalizeAddr(a))
	return ok && local != "" && domain != "" && len(normalizeAddr(a)) <= 254
}

// ValidSenderDomain reports whether d can be an entry of a route's
// AllowedSenderDomains: printable ASCII without '@' or spaces.
func ValidSenderDomain(d string) bool {
	if d == "" || strings.ContainsAny(d, "@ ") {
		return false
	}
	for i := 0; i < len(d); i++ {
		if d[i] < 0x21 || d[i] > 0x7e {
			return false
		}
	}
	return true
}

func setDefault[T int | int64 | time.Duration](v *T, def T) {
	if *v == 0 {
		*v = def
	}
}

// normalizeAddr lower-cases an address for routing lookups.
func normalizeAddr(a string) string {
	return strings.ToLower(strings.TrimSpace(a))
}

// splitAddr splits an address at its last "@".
func splitAddr(a string) (local, domain string, ok bool) {
	i := strings.LastIndexByte(a, '@')
	if i < 0 {
		return a, "", false
	}
	return a[:i], a[i+1:], true
}

// addrDomain returns the lower-cased domain of an address, or "".
func addrDomain(a string) string {
	_, d, _ := splitAddr(a)
	return strings.ToLower(strings.TrimSuffix(d, "."))
}
