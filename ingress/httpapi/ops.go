package httpapi

import (
	"bytes"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/sealpost/sealpost/audit"
)

// Operations on the whole gateway, the public audit documents, health.

func (a *API) healthz(w http.ResponseWriter, _ *http.Request, _ *caller) error {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ok\n"))
	return nil
}

func (a *API) readyz(w http.ResponseWriter, r *http.Request, _ *caller) error {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if err := a.cfg.Ops.Ready(r.Context()); err != nil {
		a.log.Warn("not ready", "err", err)
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("not ready\n"))
		return nil
	}
	_, _ = w.Write([]byte("ready\n"))
	return nil
}

func (a *API) getOpenAPI(w http.ResponseWriter, _ *http.Request, _ *caller) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=3600")
	_, _ = w.Write(OpenAPI)
	return nil
}

// retryAfterInconsistent is the Retry-After of ingest refused while the
// audit log is inconsistent: an operator has to act, so not soon.
const retryAfterInconsistent = "300"

// ingestGate answers ingest requests with 503 audit-inconsistent while the
// audit log is inconsistent (the audited enqueuer refuses such
// submissions too; SMTP answers 451 4.3.0).
func (a *API) ingestGate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.cfg.Audit.Consistent() != nil {
			w.Header().Set("Retry-After", retryAfterInconsistent)
			problem(w, http.StatusServiceUnavailable, probAuditTampered, "Ingest suspended",
				"the audit log failed its integrity check; nothing is accepted until an operator has verified it")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// getConsistency serves GET /v1/audit/consistency?from=N[&to=M]: the
// consistency proof between two stored checkpoints (to defaults to the
// newest), with both checkpoints. It needs no API key, like
// /v1/audit/checkpoint.
func (a *API) getConsistency(w http.ResponseWriter, r *http.Request, _ *caller) error {
	q := r.URL.Query()
	from, ok := parseSize(q.Get("from"))
	if !ok {
		return errBadSize
	}
	to, latest := uint64(0), !q.Has("to")
	if !latest {
		if to, ok = parseSize(q.Get("to")); !ok {
			return errBadSize
		}
	}
	p, err := a.cfg.Audit.ConsistencyProof(r.Context(), from, to, latest)
	if err != nil {
		return err
	}
	// A proof between two fixed sizes never changes.
	cc := "public, max-age=86400, immutable"
	if latest {
		cc = "no-cache"
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", cc)
	return audit.EncodeProof(w, p)
}

var errBadSize = errors.New("from and to must be tree sizes: decimal numbers below 2^53")

// parseSize reads a tree size: decimal digits, no sign, below 2^53.
func parseSize(s string) (uint64, bool) {
	if s == "" || len(s) > 16 || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil && n < 1<<53
}

func (a *API) adminListKeys(w http.ResponseWriter, r *http.Request, _ *caller) error {
	keys, err := a.cfg.Keys.List(r.Context())
	if err != nil {
		return err
	}
	out := []any{}
	for _, k := range keys {
		out = append(out, k.JWK())
	}
	return writeJSON(w, http.StatusOK, map[string]any{"keys": out})
}

func (a *API) adminRotateKey(w http.ResponseWriter, r *http.Request, c *caller) error {
	k, err := a.cfg.Keys.Rotate(r.Context(), c.actor)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, k.JWK())
}

func (a *API) adminRevokeKey(w http.ResponseWriter, r *http.Request, c *caller) error {
	k, err := a.cfg.Keys.Revoke(r.Context(), r.PathValue("kid"), c.actor)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, k.JWK())
}

func (a *API) adminAuditVerify(w http.ResponseWriter, r *http.Request, _ *caller) error {
	rep, err := a.cfg.Audit.Verify(r.Context(), a.cfg.Keys.KeySet(time.Now(), true))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, rep)
}

// adminAuditExport builds the export first, so that a failure (queue down,
// a tampered log) is an error answer and an audited failure, never a short
// file.
func (a *API) adminAuditExport(w http.ResponseWriter, r *http.Request, c *caller) error {
	f := audit.Filter{Tenant: r.URL.Query().Get("tenant")}
	var err error
	if f.Since, err = queryTime(r, "since"); err != nil {
		return err
	}
	if f.Until, err = queryTime(r, "until"); err != nil {
		return err
	}
	var out bytes.Buffer
	err = a.cfg.Audit.Export(r.Context(), &out, f)
	a.appendAudit(r.Context(), audit.Entry{Actor: c.actor, Action: audit.ActionExport, Tenant: f.Tenant, Outcome: outcomeOf(err),
		RequestID: r.Header.Get("X-Request-Id")})
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	_, _ = out.WriteTo(w)
	return nil
}

func (a *API) adminBackup(w http.ResponseWriter, r *http.Request, _ *caller) error {
	res, err := a.cfg.Ops.Backup(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, res)
}

func (a *API) adminListBackups(w http.ResponseWriter, r *http.Request, _ *caller) error {
	ids, err := a.cfg.Ops.Backups(r.Context())
	if err != nil {
		return err
	}
	if ids == nil {
		ids = []string{}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"snapshots": ids})
}

// deleteReceipt removes one receipt's payload and attachments; the signed
// receipt without payload stays and verifies.
func (a *API) deleteReceipt(w http.ResponseWriter, r *http.Request, c *caller) error {
	d, err := a.cfg.Forwarder.DeleteReceipt(c.ctx, r.PathValue("tenant"), r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, d)
}
