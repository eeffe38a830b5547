package main

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/sealpost/sealpost/audit"
	"github.com/sealpost/sealpost/forwarder"
	"github.com/sealpost/sealpost/ingress/httpin"
	"github.com/sealpost/sealpost/keyring"
)

// The admin API lives on the admin listener and needs the admin bearer
// token (admin.token_sha256). The CLI's keys, dlq and audit commands call it.

func (g *gateway) adminRoutes(mux *http.ServeMux) {
	h := func(pattern string, fn http.HandlerFunc) { mux.Handle(pattern, g.adminAuth(fn)) }
	h("GET /admin/keys", g.adminListKeys)
	h("POST /admin/keys/rotate", g.adminRotateKey)
	h("POST /admin/keys/{kid}/revoke", g.adminRevokeKey)
	h("POST /admin/dlq/replay", g.adminReplay)
	h("GET /admin/audit/verify", g.adminAuditVerify)
	h("GET /admin/audit/export", g.adminAuditExport)
	h("POST /admin/receipts/{tenant}/{id}/redeliver", g.adminRedeliver)
	h("POST /admin/endpoints/{tenant}/{route}/enable", g.adminEnableEndpoint)
	h("POST /admin/endpoints/{tenant}/{route}/rotate-secret", g.adminRotateSecret)
	g.mailAdminRoutes(h)
	// Go's profiler, for operators chasing CPU or memory; behind the admin
	// token like the rest.
	h("GET /debug/pprof/", pprof.Index)
	h("GET /debug/pprof/profile", pprof.Profile)
	h("GET /debug/pprof/trace", pprof.Trace)
	h("GET /debug/pprof/symbol", pprof.Symbol)
	h("DELETE /admin/receipts/{tenant}/{id}", g.adminDeleteReceipt)
	h("DELETE /admin/tenants/{tenant}", g.adminDeleteTenant)
	h("GET /admin/tenants/{tenant}/export", g.adminExportTenant)
	h("POST /admin/backup", g.adminBackup)
	h("GET /admin/backups", g.adminListBackups)
}

func (g *gateway) adminAuth(next http.Handler) http.Handler {
	var want [32]byte
	enabled := g.cfg.Admin.TokenSHA256 != ""
	if enabled {
		want = mustHex32(g.cfg.Admin.TokenSHA256)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		sum := sha256.Sum256([]byte(token))
		ok := enabled && strings.EqualFold(scheme, "Bearer") && len(token) <= 256 && subtle.ConstantTimeCompare(sum[:], want[:]) == 1
		e := audit.Entry{Actor: "admin", Action: "auth.success", Outcome: audit.OutcomeSuccess, Target: r.Pattern,
			RequestID: r.Header.Get("X-Request-Id"), Details: map[string]string{"remote_addr": r.RemoteAddr}}
		if !ok {
			e.Actor, e.Action, e.Outcome = "anonymous", "auth.failure", audit.OutcomeDenied
		}
		g.appendAudit(r.Context(), e)
		if !ok {
			detail := "invalid admin token"
			if !enabled {
				detail = "the admin API is disabled: set admin.token_sha256"
			}
			httpin.WriteProblem(w, httpin.Problem{Status: http.StatusUnauthorized, Type: "https://sealpost.dev/problems/unauthorized", Title: "Unauthorized", Detail: detail})
			return
		}
		if ci := callInfoFrom(r.Context()); ci != nil {
			ci.actor = "admin"
		}
		next.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func (g *gateway) adminFail(w http.ResponseWriter, status int, err error) {
	if status >= 500 {
		g.log.Error("admin request failed", "err", err)
	}
	httpin.WriteProblem(w, httpin.Problem{Status: status, Type: "https://sealpost.dev/problems/admin", Title: http.StatusText(status), Detail: err.Error()})
}

func (g *gateway) adminListKeys(w http.ResponseWriter, r *http.Request) {
	keys, err := g.keys.List(r.Context())
	if err != nil {
		g.adminFail(w, http.StatusServiceUnavailable, err)
		return
	}
	var out []any
	for _, k := range keys {
		out = append(out, k.JWK())
	}
	writeJSON(w, http.StatusOK, map[string]any{"keys": out})
}

func (g *gateway) adminRotateKey(w http.ResponseWriter, r *http.Request) {
	k, err := g.keys.Rotate(r.Context(), "admin")
	if err != nil {
		g.keyError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, k.JWK())
}

func (g *gateway) adminRevokeKey(w http.ResponseWriter, r *http.Request) {
	k, err := g.keys.Revoke(r.Context(), r.PathValue("kid"), "admin")
	if err != nil {
		g.keyError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, k.JWK())
}

func (g *gateway) adminReplay(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := forwarder.ReplayFilter{Tenant: q.Get("tenant"), Route: q.Get("route")}
	f.AllTenants = f.Tenant == ""
	if s := q.Get("since"); s != "" {
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			g.adminFail(w, http.StatusBadRequest, fmt.Errorf("since: %w", err))
			return
		}
		f.Since = t
	}
	n, err := g.fwd.ReplayDeadLetters(r.Context(), f)
	g.appendAudit(r.Context(), audit.Entry{Actor: "admin", Action: "dlq.replay", Tenant: f.Tenant, Target: f.Route,
		Outcome: outcomeOf(err), RequestID: r.Header.Get("X-Request-Id"), Details: map[string]string{"replayed": fmt.Sprint(n)}})
	if err != nil {
		g.adminError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]int{"replayed": n})
}

func (g *gateway) adminRedeliver(w http.ResponseWriter, r *http.Request) {
	tenant, id := r.PathValue("tenant"), r.PathValue("id")
	if err := g.fwd.Redeliver(forwarder.WithActor(r.Context(), "admin"), tenant, id); err != nil {
		g.adminError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"id": id, "result": "delivered"})
}

func (g *gateway) adminAuditVerify(w http.ResponseWriter, r *http.Request) {
	rep, err := g.auditLog.Verify(r.Context(), g.keys.KeySet(time.Now(), true))
	if err != nil {
		g.adminFail(w, http.StatusServiceUnavailable, err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

func (g *gateway) adminAuditExport(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := audit.Filter{Tenant: q.Get("tenant")}
	for name, dst := range map[string]*time.Time{"since": &f.Since, "until": &f.Until} {
		if s := q.Get(name); s != "" {
			t, err := time.Parse(time.RFC3339, s)
			if err != nil {
				g.adminFail(w, http.StatusBadRequest, fmt.Errorf("%s: %w", name, err))
				return
			}
			*dst = t
		}
	}
	// The export is built first, so that a failure (queue down, a tampered
	// log) is an error answer and an audited failure, never a short file.
	var out bytes.Buffer
	err := g.auditLog.Export(r.Context(), &out, f)
	g.appendAudit(r.Context(), audit.Entry{Actor: "admin", Action: "audit.export", Tenant: f.Tenant, Outcome: outcomeOf(err),
		RequestID: r.Header.Get("X-Request-Id")})
	if err != nil {
		status := http.StatusServiceUnavailable
		if errors.Is(err, audit.ErrTampered) {
			status = http.StatusConflict
		}
		g.adminFail(w, status, err)
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	_, _ = out.WriteTo(w)
}

// adminError maps forwarder errors of admin requests to answers.
func (g *gateway) adminError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, forwarder.ErrNotFound), errors.Is(err, forwarder.ErrUnknownRoute):
		g.adminFail(w, http.StatusNotFound, err)
	case errors.Is(err, forwarder.ErrInvalidInput):
		g.adminFail(w, http.StatusBadRequest, err)
	case errors.Is(err, forwarder.ErrEndpointDisabled):
		// The tenant API answers a redelivery to a disabled endpoint
		// with the same status and problem type.
		httpin.WriteProblem(w, httpin.Problem{Status: http.StatusConflict, Type: forwarder.ProblemEndpointDisabled,
			Title: http.StatusText(http.StatusConflict), Detail: err.Error()})
	case errors.Is(err, forwarder.ErrPending):
		g.adminFail(w, http.StatusConflict, err)
	case errors.Is(err, forwarder.ErrDeliveryFailed):
		g.adminFail(w, http.StatusBadGateway, err)
	default:
		g.adminFail(w, http.StatusServiceUnavailable, err)
	}
}

func (g *gateway) adminEnableEndpoint(w http.ResponseWriter, r *http.Request) {
	tenant, route := r.PathValue("tenant"), r.PathValue("route")
	if _, ok := g.tables.Route(tenant, route); !ok {
		g.adminFail(w, http.StatusNotFound, fmt.Errorf("unknown route %s/%s", tenant, route))
		return
	}
	if err := g.fwd.EnableEndpoint(forwarder.WithActor(r.Context(), "admin"), tenant, route); err != nil {
		g.adminError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"tenant": tenant, "route": route, "status": "enabled"})
}

// adminRotateSecret makes a new whsec_ secret for a route's endpoint and
// shows it once; the previous secrets keep signing for ?overlap= (default 24h).
func (g *gateway) adminRotateSecret(w http.ResponseWriter, r *http.Request) {
	tenant, route := r.PathValue("tenant"), r.PathValue("route")
	overlap := 24 * time.Hour
	if s := r.URL.Query().Get("overlap"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			g.adminFail(w, http.StatusBadRequest, fmt.Errorf("overlap: %w", err))
			return
		}
		overlap = d
	}
	secret, err := g.fwd.RotateSecret(forwarder.WithActor(r.Context(), "admin"), tenant, route, overlap)
	if err != nil {
		g.adminError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"tenant": tenant, "route": route, "secret": secret,
		"note": "shown once: give it to the endpoint owner now"})
}

// keyError maps keyring errors of admin requests to answers.
func (g *gateway) keyError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, keyring.ErrUnknownKey):
		g.adminFail(w, http.StatusNotFound, err)
	case errors.Is(err, keyring.ErrRotationPending):
		g.adminFail(w, http.StatusConflict, err)
	default:
		g.adminFail(w, http.StatusServiceUnavailable, err)
	}
}
