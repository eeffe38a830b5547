package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/sealpost/sealpost/audit"
)

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
// the handler: who authenticated.
type callInfo struct {
	actor, tenant string
}

func callInfoFrom(ctx context.Context) *callInfo {
	ci, _ := ctx.Value(callInfoKey{}).(*callInfo)
	return ci
}

// NoteCaller records who a request authenticated as, for its api.call
// entry (the ingest handler's Authenticated hook).
func NoteCaller(r *http.Request, actor, tenant string) {
	if ci := callInfoFrom(r.Context()); ci != nil {
		ci.actor, ci.tenant = actor, tenant
	}
}

// unaudited are the admin patterns that are not API calls: probes and
// scrapes.
var unaudited = map[string]bool{"GET /metrics": true, "GET /healthz": true, "GET /readyz": true, "POST " + DevReceiverPath: true}

// calls gives every request a request id, counts and times it, and
// appends an "api.call" audit entry with method, route pattern, status,
// caller and remote address once it is answered.
func (a *API) calls(server string, next http.Handler) http.Handler {
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
		a.metrics.observe(server, pattern, rec.code, time.Since(start))
		if server == "admin" && unaudited[pattern] {
			return
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
		a.appendAudit(r.Context(), audit.Entry{
			Actor: actor, Action: audit.ActionAPICall, Tenant: ci.tenant, Target: pattern, Outcome: outcome, RequestID: rid,
			Details: map[string]string{"server": server, "method": r.Method, "status": strconv.Itoa(rec.code), "remote_addr": r.RemoteAddr},
		})
	})
}

// RequestAuditTimeout bounds how long a request waits for its audit
// entries when the store is slow or down.
const RequestAuditTimeout = time.Second

// appendAudit records an entry of the request path (an API call, an
// authentication) without holding the request up: it is queued for the
// audit log's next write, ahead of any entry the request then waits for
// (message.received), so an accepted message's entries are all durable
// before its answer. A failure is logged and counted by the audit log, not
// turned into an error for the client.
func (a *API) appendAudit(ctx context.Context, e audit.Entry) {
	if !a.anon.allow(e) {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), RequestAuditTimeout)
	defer cancel()
	if err := a.cfg.Audit.AppendAsync(ctx, e); err != nil {
		a.log.Error("audit append failed", "action", e.Action, "err", err)
	}
}

// RequestAuditor is the Auditor of the ingest handler: its entries are
// queued like the API's own.
func (a *API) RequestAuditor() interface {
	Append(ctx context.Context, e audit.Entry) error
} {
	return requestAuditor{a}
}

type requestAuditor struct{ a *API }

func (r requestAuditor) Append(ctx context.Context, e audit.Entry) error {
	r.a.appendAudit(ctx, e)
	return nil
}

func newRequestID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
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
