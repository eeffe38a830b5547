// Package httpapi is sealpost's HTTP API: the HTTPS server's tenant API
// (ingest, receipts, dead letters, endpoints, the tenant's audit entries,
// and the public keys and checkpoints) and the admin listener's operator
// API (tenants, routes, endpoints, API keys, operators, signing keys,
// backups, health). Every route is declared once, in routes.go, with who
// may call it: anyone, an API key with one of some scopes, or an operator
// of at least some role. Errors become answers in one place (writeError)
// with one problem vocabulary. The API is described by the OpenAPI 3.1
// document served at /v1/openapi.json.
package httpapi

import (
	"context"
	_ "embed"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sealpost/sealpost/audit"
	"github.com/sealpost/sealpost/forwarder"
	"github.com/sealpost/sealpost/ingress/catalog"
	"github.com/sealpost/sealpost/keyring"
)

// OpenAPI is the API's OpenAPI 3.1 document.
//
//go:embed openapi.json
var OpenAPI []byte

// BlobReader opens a tenant's stored attachment or body; an unknown name
// is an error wrapping queue.ErrNotFound.
type BlobReader interface {
	GetBlob(ctx context.Context, tenant, name string) ([]byte, error)
}

// Operations are the gateway's whole-system actions.
type Operations interface {
	// DeleteTenant destroys a tenant's data (crypto-shredding).
	DeleteTenant(ctx context.Context, actor, tenant string) error
	// ExportTenant writes a tenant's export archive.
	ExportTenant(ctx context.Context, tenant string, w io.Writer) error
	// Backup writes a backup now and describes it.
	Backup(ctx context.Context) (any, error)
	// Backups lists the complete snapshots; an error wrapping
	// ErrNotConfigured when there is no backup location.
	Backups(ctx context.Context) ([]string, error)
	// Ready reports whether the gateway takes traffic (/readyz).
	Ready(ctx context.Context) error
}

// ErrNotConfigured: the feature asked for is not set up on this gateway.
var ErrNotConfigured = errDisabled

// Optional handlers mounted when their feature is on; nil answers 404.
type Optional struct {
	// MTASTSPolicy serves GET /.well-known/mta-sts.txt.
	MTASTSPolicy http.Handler
	// TLSReport takes POST /v1/tls-reports.
	TLSReport http.Handler
	// TLSReports and TLSReportGet serve the admin's report list and one
	// report.
	TLSReports, TLSReportGet http.Handler
	// DevReceiver is the --dev webhook receiver.
	DevReceiver http.Handler
	// Metrics serves /metrics.
	Metrics http.Handler
}

// Config configures the API.
type Config struct {
	Catalog   *catalog.Catalog  // required
	Forwarder *forwarder.Worker // required
	Audit     *audit.Log        // required
	Keys      *keyring.Keyring  // required
	// Ingest serves POST /v1/ingest/{route}; it authenticates its key and
	// checks its ingest scope itself. Required.
	Ingest http.Handler
	Blobs  BlobReader // required
	Ops    Operations // required
	Optional
	// AdminTokenSHA256 is the hex SHA-256 of the bootstrap admin token
	// (admin.token_sha256): an operator "admin" of role admin. Optional.
	AdminTokenSHA256 string
	// SSO accepts an identity provider's tokens on the admin API.
	// Optional.
	SSO *SSOConfig
	// AllowNets are the networks endpoints may point into despite the SSRF
	// guard (forward.allow_networks).
	AllowNets []netip.Prefix
	// CheckpointEvery is how often the audit log signs a checkpoint (the
	// Retry-After of a proof not yet available).
	CheckpointEvery time.Duration
	Logger          *slog.Logger
	Registerer      prometheus.Registerer
}

// API serves the HTTP API.
type API struct {
	cfg     Config
	log     *slog.Logger
	metrics *httpMetrics
	anon    *anonLimiter
	sso     *ssoVerifier
	admin   [32]byte
	hasBoot bool
	exports chan struct{}
	routes  []route
}

// New checks cfg and builds the API.
func New(cfg Config) (*API, error) {
	if cfg.Catalog == nil || cfg.Forwarder == nil || cfg.Audit == nil || cfg.Keys == nil || cfg.Ingest == nil || cfg.Blobs == nil || cfg.Ops == nil {
		return nil, errors.New("httpapi: catalog, forwarder, audit, keys, ingest, blobs and operations are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	if cfg.CheckpointEvery <= 0 {
		cfg.CheckpointEvery = time.Minute
	}
	a := &API{cfg: cfg, log: cfg.Logger, exports: make(chan struct{}, 2)}
	var err error
	if a.metrics, err = newHTTPMetrics(cfg.Registerer); err != nil {
		return nil, err
	}
	if a.anon, err = newAnonLimiter(cfg.Registerer); err != nil {
		return nil, err
	}
	if cfg.AdminTokenSHA256 != "" {
		sum, ok := decodeHex32(cfg.AdminTokenSHA256)
		if !ok {
			return nil, errors.New("httpapi: admin token sha256 must be 64 hex digits")
		}
		a.admin, a.hasBoot = sum, true
	}
	if cfg.SSO != nil {
		if a.sso, err = newSSOVerifier(*cfg.SSO); err != nil {
			return nil, err
		}
	}
	a.routes = a.table()
	return a, nil
}

// HTTPS is the handler of the HTTPS server.
func (a *API) HTTPS() http.Handler { return securityHeaders(true, a.calls("https", a.mux("https"))) }

// Admin is the handler of the admin listener.
func (a *API) Admin() http.Handler { return securityHeaders(false, a.calls("admin", a.mux("admin"))) }

// RouteInfo names one route of the API and who may call it: "public",
// "apikey" with Scopes (any of them), or "operator" with Role.
type RouteInfo struct {
	Server, Method, Path string
	Access               string
	Scopes               []string
	Role                 string
}

// Routes lists every route the API serves, for its description.
func (a *API) Routes() []RouteInfo {
	out := make([]RouteInfo, len(a.routes))
	for i, r := range a.routes {
		out[i] = RouteInfo{Server: r.server, Method: r.method, Path: r.path, Access: "public", Scopes: r.access.scopes, Role: r.access.role}
		switch {
		case r.access.apikey:
			out[i].Access = "apikey"
		case r.access.role != "":
			out[i].Access = "operator"
		}
	}
	return out
}
