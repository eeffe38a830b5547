package httpapi

import (
	"net/http"
	"net/http/pprof"
	"sync"

	"github.com/sealpost/sealpost/ingress/catalog"
	"github.com/sealpost/sealpost/ingress/httpin"
)

// handler serves one route for an authenticated caller; an error is
// answered by writeError.
type handler func(w http.ResponseWriter, r *http.Request, c *caller) error

// access says who may call a route.
type access struct {
	// apikey: an API key holding one of scopes (none: any key).
	apikey bool
	scopes []string
	// role: an operator of at least this role.
	role string
}

var (
	receiptsRead  = access{apikey: true, scopes: []string{httpin.ScopeReceiptsRead}}
	endpointsRead = access{apikey: true, scopes: []string{httpin.ScopeReceiptsRead, httpin.ScopeEndpointsWrite}}
	endpointsW    = access{apikey: true, scopes: []string{httpin.ScopeEndpointsWrite}}
	auditRead     = access{apikey: true, scopes: []string{httpin.ScopeAuditRead}}
	viewer        = access{role: catalog.RoleViewer}
	operator      = access{role: catalog.RoleOperator}
	admin         = access{role: catalog.RoleAdmin}
)

// route is one operation of the API.
type route struct {
	server       string // "https" or "admin"
	method, path string
	access       access
	h            handler
	raw          http.Handler // instead of h, for handlers of other packages
}

// DevReceiverPath is where --dev's built-in webhook receiver listens.
const DevReceiverPath = "/dev/webhook"

// table is every route of the API.
func (a *API) table() []route {
	o := a.cfg.Optional
	orNotFound := func(h http.Handler) http.Handler {
		if h != nil {
			return h
		}
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			writeError(w, a.log, notFoundf("not enabled on this gateway"))
		})
	}
	const ep = "/v1/routes/{route}/endpoints/{endpoint}"
	const aep = "/admin/tenants/{tenant}/routes/{route}/endpoints/{endpoint}"
	return []route{
		// Public documents.
		{server: "https", method: "GET", path: "/.well-known/jwks.json", raw: lazy(func() http.Handler { return a.cfg.Keys.JWKSHandler() })},
		{server: "https", method: "GET", path: "/v1/keys", raw: lazy(func() http.Handler { return a.cfg.Keys.HistoryHandler() })},
		{server: "https", method: "GET", path: "/v1/keys/{kid}", raw: lazy(func() http.Handler { return a.cfg.Keys.HistoryHandler() })},
		{server: "https", method: "GET", path: "/v1/audit/checkpoint", raw: lazy(func() http.Handler { return a.cfg.Audit.CheckpointHandler() })},
		{server: "https", method: "GET", path: "/v1/audit/consistency", h: a.getConsistency},
		{server: "https", method: "GET", path: "/v1/openapi.json", h: a.getOpenAPI},
		{server: "https", method: "GET", path: "/.well-known/mta-sts.txt", raw: orNotFound(o.MTASTSPolicy)},
		{server: "https", method: "POST", path: "/v1/tlsrpt", raw: orNotFound(o.TLSReport)},
		// The tenant API.
		{server: "https", method: "POST", path: "/v1/ingest/{route}", raw: a.ingestGate(a.cfg.Ingest)},
		{server: "https", method: "GET", path: "/v1/receipts", access: receiptsRead, h: a.listReceipts},
		{server: "https", method: "GET", path: "/v1/receipts/{id}", access: receiptsRead, h: a.getReceipt},
		{server: "https", method: "GET", path: "/v1/receipts/{id}/attempts", access: receiptsRead, h: a.getAttempts},
		{server: "https", method: "GET", path: "/v1/receipts/{id}/proof", access: receiptsRead, h: a.getReceiptProof},
		{server: "https", method: "POST", path: "/v1/receipts/{id}/redeliver", access: endpointsW, h: a.redeliver},
		{server: "https", method: "GET", path: "/v1/dead-letters", access: receiptsRead, h: a.listDeadLetters},
		{server: "https", method: "POST", path: "/v1/dead-letters/replay", access: endpointsW, h: a.replayDeadLetters},
		{server: "https", method: "GET", path: "/v1/attachments/{tenant}/{name}", access: receiptsRead, h: a.getAttachment},
		{server: "https", method: "GET", path: "/v1/audit", access: auditRead, h: a.getAudit},
		{server: "https", method: "GET", path: "/v1/routes", access: endpointsRead, h: a.listRoutes},
		{server: "https", method: "GET", path: "/v1/routes/{route}/endpoints", access: endpointsRead, h: a.listEndpoints},
		{server: "https", method: "POST", path: "/v1/routes/{route}/endpoints", access: endpointsW, h: a.createEndpoint},
		{server: "https", method: "GET", path: ep, access: endpointsRead, h: a.getEndpoint},
		{server: "https", method: "PATCH", path: ep, access: endpointsW, h: a.updateEndpoint},
		{server: "https", method: "DELETE", path: ep, access: endpointsW, h: a.deleteEndpoint},
		{server: "https", method: "POST", path: ep + "/rotate-secret", access: endpointsW, h: a.rotateEndpointSecret},
		{server: "https", method: "POST", path: ep + "/enable", access: endpointsW, h: a.enableEndpoint},
		{server: "https", method: "POST", path: ep + "/disable", access: endpointsW, h: a.disableEndpoint},
		{server: "https", method: "GET", path: "/v1/operational-webhook", access: endpointsW, h: a.getOpWebhook},
		{server: "https", method: "PUT", path: "/v1/operational-webhook", access: endpointsW, h: a.putOpWebhook},
		{server: "https", method: "DELETE", path: "/v1/operational-webhook", access: endpointsW, h: a.deleteOpWebhook},
		{server: "https", method: "POST", path: "/v1/operational-webhook/rotate-secret", access: endpointsW, h: a.rotateOpSecret},

		// Probes and metrics.
		{server: "admin", method: "GET", path: "/healthz", h: a.healthz},
		{server: "admin", method: "GET", path: "/readyz", h: a.readyz},
		{server: "admin", method: "GET", path: "/metrics", raw: orNotFound(o.Metrics)},
		{server: "admin", method: "POST", path: DevReceiverPath, raw: orNotFound(o.DevReceiver)},
		// The operator API.
		{server: "admin", method: "GET", path: "/admin/whoami", access: viewer, h: a.whoami},
		{server: "admin", method: "GET", path: "/admin/tenants", access: viewer, h: a.listTenants},
		{server: "admin", method: "POST", path: "/admin/tenants", access: admin, h: a.createTenant},
		{server: "admin", method: "GET", path: "/admin/tenants/{tenant}", access: viewer, h: a.getTenant},
		{server: "admin", method: "PATCH", path: "/admin/tenants/{tenant}", access: admin, h: a.updateTenant},
		{server: "admin", method: "DELETE", path: "/admin/tenants/{tenant}", access: admin, h: a.deleteTenant},
		{server: "admin", method: "GET", path: "/admin/tenants/{tenant}/export", access: admin, h: a.exportTenant},
		{server: "admin", method: "GET", path: "/admin/tenants/{tenant}/routes", access: viewer, h: a.adminListRoutes},
		{server: "admin", method: "POST", path: "/admin/tenants/{tenant}/routes", access: admin, h: a.createRoute},
		{server: "admin", method: "GET", path: "/admin/tenants/{tenant}/routes/{route}", access: viewer, h: a.getRoute},
		{server: "admin", method: "PATCH", path: "/admin/tenants/{tenant}/routes/{route}", access: admin, h: a.updateRoute},
		{server: "admin", method: "DELETE", path: "/admin/tenants/{tenant}/routes/{route}", access: admin, h: a.deleteRoute},
		{server: "admin", method: "GET", path: "/admin/tenants/{tenant}/routes/{route}/endpoints", access: viewer, h: a.listEndpoints},
		{server: "admin", method: "POST", path: "/admin/tenants/{tenant}/routes/{route}/endpoints", access: admin, h: a.createEndpoint},
		{server: "admin", method: "GET", path: aep, access: viewer, h: a.getEndpoint},
		{server: "admin", method: "PATCH", path: aep, access: admin, h: a.updateEndpoint},
		{server: "admin", method: "DELETE", path: aep, access: admin, h: a.deleteEndpoint},
		{server: "admin", method: "POST", path: aep + "/rotate-secret", access: admin, h: a.rotateEndpointSecret},
		{server: "admin", method: "POST", path: aep + "/enable", access: operator, h: a.enableEndpoint},
		{server: "admin", method: "POST", path: aep + "/disable", access: operator, h: a.disableEndpoint},
		{server: "admin", method: "GET", path: "/admin/tenants/{tenant}/operational-webhook", access: viewer, h: a.getOpWebhook},
		{server: "admin", method: "PUT", path: "/admin/tenants/{tenant}/operational-webhook", access: admin, h: a.putOpWebhook},
		{server: "admin", method: "DELETE", path: "/admin/tenants/{tenant}/operational-webhook", access: admin, h: a.deleteOpWebhook},
		{server: "admin", method: "POST", path: "/admin/tenants/{tenant}/operational-webhook/rotate-secret", access: admin, h: a.rotateOpSecret},
		{server: "admin", method: "GET", path: "/admin/tenants/{tenant}/api-keys", access: viewer, h: a.listAPIKeys},
		{server: "admin", method: "POST", path: "/admin/tenants/{tenant}/api-keys", access: admin, h: a.createAPIKey},
		{server: "admin", method: "GET", path: "/admin/tenants/{tenant}/api-keys/{id}", access: viewer, h: a.getAPIKey},
		{server: "admin", method: "POST", path: "/admin/tenants/{tenant}/api-keys/{id}/rotate", access: admin, h: a.rotateAPIKey},
		{server: "admin", method: "DELETE", path: "/admin/tenants/{tenant}/api-keys/{id}", access: admin, h: a.revokeAPIKey},
		{server: "admin", method: "GET", path: "/admin/operators", access: viewer, h: a.listOperators},
		{server: "admin", method: "POST", path: "/admin/operators", access: admin, h: a.createOperator},
		{server: "admin", method: "GET", path: "/admin/operators/{id}", access: viewer, h: a.getOperator},
		{server: "admin", method: "POST", path: "/admin/operators/{id}/rotate", access: admin, h: a.rotateOperator},
		{server: "admin", method: "DELETE", path: "/admin/operators/{id}", access: admin, h: a.revokeOperator},
		{server: "admin", method: "POST", path: "/admin/receipts/{tenant}/{id}/redeliver", access: operator, h: a.redeliver},
		{server: "admin", method: "DELETE", path: "/admin/receipts/{tenant}/{id}", access: admin, h: a.deleteReceipt},
		{server: "admin", method: "POST", path: "/admin/dlq/replay", access: operator, h: a.adminReplay},
		{server: "admin", method: "GET", path: "/admin/keys", access: viewer, h: a.adminListKeys},
		{server: "admin", method: "POST", path: "/admin/keys/rotate", access: operator, h: a.adminRotateKey},
		{server: "admin", method: "POST", path: "/admin/keys/{kid}/revoke", access: admin, h: a.adminRevokeKey},
		{server: "admin", method: "GET", path: "/admin/audit/verify", access: viewer, h: a.adminAuditVerify},
		{server: "admin", method: "GET", path: "/admin/audit/export", access: viewer, h: a.adminAuditExport},
		{server: "admin", method: "POST", path: "/admin/backup", access: operator, h: a.adminBackup},
		{server: "admin", method: "GET", path: "/admin/backups", access: viewer, h: a.adminListBackups},
		{server: "admin", method: "GET", path: "/admin/tls-reports", access: viewer, raw: orNotFound(o.TLSReports)},
		{server: "admin", method: "GET", path: "/admin/tls-reports/{id}", access: viewer, raw: orNotFound(o.TLSReportGet)},
		// Go's profiler, for operators chasing CPU or memory.
		{server: "admin", method: "GET", path: "/debug/pprof/", access: admin, raw: http.HandlerFunc(pprof.Index)},
		{server: "admin", method: "GET", path: "/debug/pprof/profile", access: admin, raw: http.HandlerFunc(pprof.Profile)},
		{server: "admin", method: "GET", path: "/debug/pprof/trace", access: admin, raw: http.HandlerFunc(pprof.Trace)},
		{server: "admin", method: "GET", path: "/debug/pprof/symbol", access: admin, raw: http.HandlerFunc(pprof.Symbol)},
	}
}

// lazy builds a handler of another package on first use.
func lazy(mk func() http.Handler) http.Handler {
	var once sync.Once
	var h http.Handler
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() { h = mk() })
		h.ServeHTTP(w, r)
	})
}

// Routes lists every route of the API, for its description and the test
// that holds the two together.
func Routes() []RouteInfo {
	a := &API{}
	a.routes = a.table()
	return a.Routes()
}

// mux routes one server's requests: each route behind its access check;
// anything else is a problem document (404, or 405 with Allow).
func (a *API) mux(server string) http.Handler {
	m := http.NewServeMux()
	for _, rt := range a.routes {
		if rt.server != server {
			continue
		}
		m.Handle(rt.method+" "+rt.path, a.guard(rt))
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, pattern := m.Handler(r)
		if pattern != "" {
			m.ServeHTTP(w, r)
			return
		}
		// Unmatched: the mux would answer 404 or 405 in plain text; keep
		// its status and Allow, answer a problem.
		rec := &headerOnly{h: http.Header{}}
		h.ServeHTTP(rec, r)
		if allow := rec.h.Get("Allow"); rec.code == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", allow)
			writeError(w, a.log, &apiError{errMethod, "method not allowed; allowed: " + allow})
			return
		}
		writeError(w, a.log, notFoundf("no such path"))
	})
}

// headerOnly records what a handler answers, without the body.
type headerOnly struct {
	h    http.Header
	code int
}

func (h *headerOnly) Header() http.Header         { return h.h }
func (h *headerOnly) Write(b []byte) (int, error) { return len(b), nil }
func (h *headerOnly) WriteHeader(code int)        { h.code = code }

// guard authenticates the caller of a route and checks its access.
func (a *API) guard(rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var c *caller
		var err error
		switch {
		case rt.access.apikey:
			c, err = a.authKey(r, rt.access.scopes)
		case rt.access.role != "":
			c, err = a.authOperator(r, rt.access.role)
		default:
			c = &caller{}
		}
		if err != nil {
			writeError(w, a.log, err)
			return
		}
		if c.ctx != nil {
			r = r.WithContext(c.ctx)
		}
		if rt.raw != nil {
			rt.raw.ServeHTTP(w, r)
			return
		}
		if err := rt.h(w, r, c); err != nil {
			writeError(w, a.log, err)
		}
	})
}
