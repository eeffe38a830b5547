package audit

import (
	"bytes"
	"context"
	"net/http"
	"time"
)

type tenantKey struct{}

// WithTenant returns ctx carrying the authenticated tenant; the API key
// middleware sets it before Handler runs.
func WithTenant(ctx context.Context, tenant string) context.Context {
	return context.WithValue(ctx, tenantKey{}, tenant)
}

// TenantFrom returns the tenant WithTenant stored, or "".
func TenantFrom(ctx context.Context) string {
	t, _ := ctx.Value(tenantKey{}).(string)
	return t
}

// maxExportWindow bounds one GET /v1/audit request.
const maxExportWindow = 31 * 24 * time.Hour

// maxTenantExports is how many tenant exports run at once; more get 429.
const maxTenantExports = 2

// Handler serves GET /v1/audit?since=<RFC 3339>&until=<RFC 3339>: the
// calling tenant's own entries as an export (JSON Lines with inclusion
// proofs, see Export). Both bounds are required and at most 31 days apart.
// The tenant comes from the request context (WithTenant); without one the
// answer is 401. Two exports run at once; more get 429. The export itself
// is audited.
func (l *Log) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", "GET")
			writeProblem(w, http.StatusMethodNotAllowed, "method not allowed")
			return
		}
		tenant := TenantFrom(r.Context())
		if tenant == "" {
			writeProblem(w, http.StatusUnauthorized, "no tenant")
			return
		}
		q := r.URL.Query()
		since, err1 := time.Parse(time.RFC3339Nano, q.Get("since"))
		until, err2 := time.Parse(time.RFC3339Nano, q.Get("until"))
		switch {
		case err1 != nil || err2 != nil:
			writeProblem(w, http.StatusBadRequest, "since and until must be RFC 3339 times")
			return
		case !until.After(since):
			writeProblem(w, http.StatusBadRequest, "until must be after since")
			return
		case until.Sub(since) > maxExportWindow:
			writeProblem(w, http.StatusBadRequest, "since and until may be at most 31 days apart")
			return
		}
		select {
		case l.exportSlots <- struct{}{}:
			defer func() { <-l.exportSlots }()
		default:
			w.Header().Set("Retry-After", "10")
			writeProblem(w, http.StatusTooManyRequests, "other exports are running; try again later")
			return
		}
		reqID := r.Header.Get("X-Request-Id")
		if len(reqID) > 128 {
			reqID = reqID[:128]
		}
		var buf bytes.Buffer
		err := l.Export(r.Context(), &buf, Filter{Tenant: tenant, Since: since, Until: until})
		outcome := OutcomeSuccess
		if err != nil {
			outcome = OutcomeFailure
		}
		if aerr := l.Append(r.Context(), Entry{Actor: "tenant:" + tenant, Action: ActionExport, Tenant: tenant,
			Target: "GET /v1/audit", Outcome: outcome, RequestID: reqID,
			Details: map[string]string{"since": since.UTC().Format(time.RFC3339), "until": until.UTC().Format(time.RFC3339)}}); aerr != nil && err == nil {
			err = aerr
		}
		if err != nil {
			l.log.Error("audit export failed", "tenant", tenant, "err", err)
			w.Header().Set("Retry-After", "30")
			writeProblem(w, http.StatusServiceUnavailable, "export unavailable")
			return
		}
		w.Header().Set("Content-Type", "application/jsonl")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(buf.Bytes())
	})
}
