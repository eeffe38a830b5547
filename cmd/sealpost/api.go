package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/sealpost/sealpost/audit"
	"github.com/sealpost/sealpost/forwarder"
	"github.com/sealpost/sealpost/ingress/httpin"
	"github.com/sealpost/sealpost/queue"
)

// Limits of the HTTP servers.
const (
	maxHeaderBytes    = 32 << 10
	readHeaderTimeout = 10 * time.Second
	readTimeout       = 60 * time.Second
	writeTimeout      = 60 * time.Second
	idleTimeout       = 120 * time.Second
)

// buildServers makes the HTTPS (ingest and public API), admin and SMTP
// servers. Listeners are bound by the caller.
func (g *gateway) buildServers() error {
	ingest, err := httpin.New(httpin.Config{
		Enqueuer: g.enqueuer(), Keys: g.tables.keys, Routes: g.tables, NewID: g.ids.New,
		Auditor: requestAuditor{g}, Idempotency: g.idempotency, Authenticated: noteKey,
		MaxBodyBytes: g.cfg.Ingest.MaxBodyBytes, RatePerSecond: g.cfg.Ingest.RatePerSecond, Burst: g.cfg.Ingest.Burst,
		Logger: g.log,
	})
	if err != nil {
		return err
	}
	if err := g.shareLimits(ingest); err != nil {
		return err
	}
	if g.anonLimit, err = newAnonLimiter(g.reg); err != nil {
		return err
	}
	calls, err := newHTTPMetrics(g.reg)
	if err != nil {
		return err
	}

	pub := http.NewServeMux()
	pub.Handle("POST /v1/ingest/{route}", g.ingestGate(ingest))
	// Other methods: the handler answers 405 with Allow: POST, which the
	// catch-all "/" would otherwise turn into 404.
	pub.Handle("/v1/ingest/{route}", g.ingestGate(ingest))
	pub.Handle("GET /.well-known/jwks.json", g.keys.JWKSHandler())
	pub.Handle("GET /v1/keys", g.keys.HistoryHandler())
	pub.Handle("GET /v1/keys/{kid}", g.keys.HistoryHandler())
	pub.Handle("GET /v1/audit/checkpoint", g.auditLog.CheckpointHandler())
	pub.Handle("GET /v1/audit", g.tenantAuth(g.auditLog.Handler()))
	pub.Handle("GET /v1/audit/consistency", http.HandlerFunc(g.getConsistency))
	pub.Handle("GET /v1/receipts/{id}/proof", g.tenantAuth(http.HandlerFunc(g.getReceiptProof)))
	pub.Handle("GET /v1/receipts/{id}", g.tenantAuth(http.HandlerFunc(g.getReceipt)))
	pub.Handle("GET /v1/receipts/{id}/attempts", g.tenantAuth(g.fwd.AttemptsHandler()))
	pub.Handle("POST /v1/receipts/{id}/redeliver", g.tenantAuth(g.fwd.RedeliverHandler()))
	pub.Handle("GET /v1/attachments/{tenant}/{name}", g.tenantAuth(http.HandlerFunc(g.getAttachment)))
	if err := g.mountMail(pub); err != nil {
		return err
	}
	pub.Handle("/", http.HandlerFunc(notFound))
	g.httpsSrv = &http.Server{
		Handler:           securityHeaders(true, g.apiCalls("https", calls, pub)),
		TLSConfig:         g.certs.serverTLS(),
		ReadHeaderTimeout: readHeaderTimeout, ReadTimeout: readTimeout, WriteTimeout: writeTimeout,
		IdleTimeout: idleTimeout, MaxHeaderBytes: maxHeaderBytes,
		ErrorLog: slogErrorLog(g.log),
	}

	adm := http.NewServeMux()
	adm.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	adm.HandleFunc("GET /readyz", g.readyz)
	adm.Handle("GET /metrics", metricsHandler(g.reg))
	g.adminRoutes(adm)
	if g.dev != nil {
		adm.Handle("POST "+devReceiverPath, devReceiver(g.log, g.devKeySet))
	}
	g.adminSrv = &http.Server{
		Handler:           securityHeaders(false, g.apiCalls("admin", calls, adm)),
		ReadHeaderTimeout: readHeaderTimeout, ReadTimeout: readTimeout, WriteTimeout: 10 * time.Minute,
		IdleTimeout: idleTimeout, MaxHeaderBytes: maxHeaderBytes,
		ErrorLog: slogErrorLog(g.log),
	}
	return g.buildSMTP()
}

func notFound(w http.ResponseWriter, _ *http.Request) {
	httpin.WriteProblem(w, httpin.Problem{Status: http.StatusNotFound, Type: "https://sealpost.dev/problems/not-found", Title: "Not found"})
}

func (g *gateway) readyz(w http.ResponseWriter, r *http.Request) {
	if g.draining.Load() {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	if g.consumer != nil && !g.consumer.Alive() {
		http.Error(w, "delivery worker not consuming", http.StatusServiceUnavailable)
		return
	}
	if err := g.q.Ready(r.Context()); err != nil {
		g.log.Warn("not ready", "err", err)
		http.Error(w, "queue unavailable", http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte("ready\n"))
}

// statusRecorder remembers the status code a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

type callInfoKey struct{}

// callInfo collects what the audit entry of an API call needs from inside
// the handler: the API key that authenticated.
type callInfo struct {
	actor, tenant string
}

func callInfoFrom(ctx context.Context) *callInfo {
	ci, _ := ctx.Value(callInfoKey{}).(*callInfo)
	return ci
}

// noteKey records the API key that authenticated r for its api.call entry.
func noteKey(r *http.Request, key *httpin.APIKey) {
	if ci := callInfoFrom(r.Context()); ci != nil {
		ci.actor, ci.tenant = "apikey:"+key.ID, key.Tenant
	}
}

// apiCalls gives every request a request id, counts and times it, and
// appends an "api.call" audit entry with method, route pattern, status, API
// key id and remote address once it is answered.
func (g *gateway) apiCalls(server string, calls *httpMetrics, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rid := newRequestID()
		r.Header.Set("X-Request-Id", rid)
		w.Header().Set("X-Request-Id", rid)
		ci := &callInfo{}
		r = r.WithContext(context.WithValue(r.Context(), callInfoKey{}, ci))
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		pattern := patternLabel(r.Pattern)
		if rec.code == 0 {
			rec.code = http.StatusOK
		}
		calls.observe(server, pattern, rec.code, time.Since(start))
		if server == "admin" && (pattern == "GET /metrics" || pattern == "GET /healthz" || pattern == "GET /readyz" || pattern == "POST "+devReceiverPath) {
			return // probes and scrapes are not API calls
		}
		actor := "anonymous"
		if ci.actor != "" {
			actor = ci.actor
		}
		outcome := audit.OutcomeSuccess
		switch {
		case rec.code == http.StatusUnauthorized || rec.code == http.StatusForbidden:
			outcome = audit.OutcomeDenied
		case rec.code >= 400:
			outcome = audit.OutcomeFailure
		}
		g.appendAudit(r.Context(), audit.Entry{
			Actor: actor, Action: "api.call", Tenant: ci.tenant, Target: pattern, Outcome: outcome, RequestID: rid,
			Details: map[string]string{"server": server, "method": r.Method, "status": strconv.Itoa(rec.code), "remote_addr": r.RemoteAddr},
		})
	})
}

// requestAuditTimeout bounds how long a request waits for its audit
// entries when the store is slow or down.
const requestAuditTimeout = time.Second

// appendAudit records an entry of the request path (an API call, an
// authentication) without holding the request up: it is queued for the
// audit log's next write, ahead of any entry the request then waits for
// (message.received), so an accepted message's entries are all durable
// before its answer. A failure is logged and counted by the audit log, not
// turned into an error for the client.
func (g *gateway) appendAudit(ctx context.Context, e audit.Entry) {
	if !g.anonLimit.allow(e) {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), requestAuditTimeout)
	defer cancel()
	if err := g.auditLog.AppendAsync(ctx, e); err != nil {
		g.log.Error("audit append failed", "action", e.Action, "err", err)
	}
}

// requestAuditor is the Auditor handed to the ingest handler: its entries
// are queued like appendAudit's.
type requestAuditor struct{ g *gateway }

func (a requestAuditor) Append(ctx context.Context, e audit.Entry) error {
	a.g.appendAudit(ctx, e)
	return nil
}

func newRequestID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

type tenantKey struct{}

// tenantAuth authenticates a tenant's API key for the non-ingest API and
// puts the tenant into the request context (also as audit.WithTenant).
func (g *gateway) tenantAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key, err := g.tables.keys.Authenticate(r)
		e := audit.Entry{Actor: "anonymous", Action: "auth.failure", Outcome: audit.OutcomeDenied, Target: r.Pattern,
			RequestID: r.Header.Get("X-Request-Id"), Details: map[string]string{"remote_addr": r.RemoteAddr}}
		if err == nil {
			e.Actor, e.Action, e.Outcome, e.Tenant = "apikey:"+key.ID, "auth.success", audit.OutcomeSuccess, key.Tenant
		}
		g.appendAudit(r.Context(), e)
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="sealpost"`)
			httpin.WriteProblem(w, httpin.Problem{Status: http.StatusUnauthorized, Type: "https://sealpost.dev/problems/unauthorized", Title: "Unauthorized", Detail: err.Error()})
			return
		}
		noteKey(r, key)
		ctx := context.WithValue(r.Context(), tenantKey{}, key.Tenant)
		ctx = audit.WithTenant(ctx, key.Tenant)
		ctx = forwarder.WithTenant(ctx, key.Tenant)
		ctx = forwarder.WithActor(ctx, "apikey:"+key.ID)
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

func tenantFrom(ctx context.Context) string {
	t, _ := ctx.Value(tenantKey{}).(string)
	return t
}

// writeAPIError is the one mapping of receipt-API errors to answers.
func (g *gateway) writeAPIError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, queue.ErrNotFound), errors.Is(err, forwarder.ErrInvalidInput):
		httpin.WriteProblem(w, httpin.Problem{Status: http.StatusNotFound, Type: "https://sealpost.dev/problems/not-found", Title: "Not found", Detail: "no such receipt"})
	default:
		g.log.Error("api request failed", "err", err)
		w.Header().Set("Retry-After", "5")
		httpin.WriteProblem(w, httpin.Problem{Status: http.StatusServiceUnavailable, Type: "https://sealpost.dev/problems/unavailable", Title: "Service unavailable"})
	}
}

// anonLimiter bounds the audit entries that unauthenticated clients can
// cause (failed logins, unmatched paths): per remote IP, a burst of 20 and
// then one a second. Entries over the limit are counted, not written, so
// an anonymous flood cannot fill the append-only audit stream (which denies
// deletes) and the disk INGEST shares with it.
type anonLimiter struct {
	mu         sync.Mutex
	byIP       map[string]*rate.Limiter
	suppressed prometheus.Counter
}

const anonLimiterMaxIPs = 10000

func newAnonLimiter(reg prometheus.Registerer) (*anonLimiter, error) {
	l := &anonLimiter{byIP: map[string]*rate.Limiter{}, suppressed: prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sealpost_audit_anonymous_suppressed_total",
		Help: "Audit entries of unauthenticated requests not written because their client exceeded its rate.",
	})}
	return l, reg.Register(l.suppressed)
}

// allow reports whether e may be written: always for authenticated actors.
func (l *anonLimiter) allow(e audit.Entry) bool {
	if l == nil || (e.Actor != "anonymous" && e.Actor != "") {
		return true
	}
	ip := e.Details["remote_addr"]
	if host, _, err := net.SplitHostPort(ip); err == nil {
		ip = host
	}
	l.mu.Lock()
	lim := l.byIP[ip]
	if lim == nil {
		if len(l.byIP) >= anonLimiterMaxIPs {
			clear(l.byIP)
		}
		lim = rate.NewLimiter(1, 20)
		l.byIP[ip] = lim
	}
	ok := lim.Allow()
	l.mu.Unlock()
	if !ok {
		l.suppressed.Inc()
	}
	return ok
}
