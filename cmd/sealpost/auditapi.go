package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sealpost/sealpost/audit"
	"github.com/sealpost/sealpost/forwarder"
	"github.com/sealpost/sealpost/ingress/httpin"
)

// The audit log's proofs and its integrity gate on the HTTPS API.

// checkAudit runs the audit log's start-up check. A log that fails it (cut,
// edited, rolled back behind its outside copy) does not stop the gateway:
// health, the read-only API, admin and verification keep working, and
// ingest is refused until an operator has dealt with it.
func (g *gateway) checkAudit(ctx context.Context) {
	err := g.auditLog.Check(ctx)
	switch {
	case err == nil:
	case errors.Is(err, audit.ErrTampered):
		g.log.Error("audit log failed its integrity check; ingest is refused, everything else works (run sealpost audit verify)", "err", err)
	default:
		g.log.Warn("audit log start-up check incomplete; the checkpointer tries again", "err", err)
	}
}

// retryAfterInconsistent is the Retry-After of ingest refused while the
// audit log is inconsistent: an operator has to act, so not soon.
const retryAfterInconsistent = "300"

// ingestGate answers ingest requests with 503 and the problem type
// audit-inconsistent while the audit log is inconsistent. The audited
// enqueuer refuses such submissions too (SMTP answers 451 4.3.0).
func (g *gateway) ingestGate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if g.auditLog.Consistent() != nil {
			w.Header().Set("Retry-After", retryAfterInconsistent)
			httpin.WriteProblem(w, httpin.Problem{Status: http.StatusServiceUnavailable, Type: "https://sealpost.dev/problems/audit-inconsistent",
				Title: "Ingest suspended", Detail: "the audit log failed its integrity check; nothing is accepted until an operator has verified it"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// getReceiptProof serves GET /v1/receipts/{id}/proof: the receipt's audit
// entries with their inclusion proofs in the newest checkpoint (see
// audit.ReceiptProof), for the tenant that owns it.
func (g *gateway) getReceiptProof(w http.ResponseWriter, r *http.Request) {
	tenant, id := tenantFrom(r.Context()), r.PathValue("id")
	p, err := g.auditLog.ReceiptProof(r.Context(), tenant, id)
	if errors.Is(err, audit.ErrNotFound) {
		// Not indexed yet, or not the tenant's: the receipt store tells
		// which (it is tenant-scoped too).
		_, rerr := g.fwd.Receipt(r.Context(), tenant, id)
		switch {
		case rerr == nil:
			err = &audit.PendingError{RetryAfter: time.Duration(g.cfg.Audit.CheckpointEvery)}
		case errors.Is(rerr, forwarder.ErrNotFound), errors.Is(rerr, forwarder.ErrInvalidInput):
			err = fmt.Errorf("%w: no such receipt", audit.ErrNotFound)
		default:
			err = rerr
		}
	}
	if err != nil {
		g.writeProofError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = audit.EncodeProof(w, p)
}

// getConsistency serves GET /v1/audit/consistency?from=N[&to=M]: the
// consistency proof between two stored checkpoints (to defaults to the
// newest), with both checkpoints. It needs no API key, like
// /v1/audit/checkpoint.
func (g *gateway) getConsistency(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	from, ok := parseSize(q.Get("from"))
	if !ok {
		g.writeProofError(w, errBadSize)
		return
	}
	to, latest := uint64(0), !q.Has("to")
	if !latest {
		if to, ok = parseSize(q.Get("to")); !ok {
			g.writeProofError(w, errBadSize)
			return
		}
	}
	p, err := g.auditLog.ConsistencyProof(r.Context(), from, to, latest)
	if err != nil {
		g.writeProofError(w, err)
		return
	}
	// A proof between two fixed sizes never changes.
	cc := "public, max-age=86400, immutable"
	if latest {
		cc = "no-cache"
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", cc)
	_ = audit.EncodeProof(w, p)
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

// writeProofError is the one mapping of proof errors to answers.
func (g *gateway) writeProofError(w http.ResponseWriter, err error) {
	const base = "https://sealpost.dev/problems/"
	var pending *audit.PendingError
	switch {
	case errors.As(err, &pending):
		w.Header().Set("Retry-After", strconv.Itoa(int(pending.RetryAfter.Round(time.Second)/time.Second)))
		httpin.WriteProblem(w, httpin.Problem{Status: http.StatusConflict, Type: base + "proof-pending", Title: "Proof not yet available",
			Detail: "no signed checkpoint covers the receipt's audit entries yet; ask again after Retry-After seconds"})
	case errors.Is(err, errBadSize), errors.Is(err, audit.ErrBadRange):
		httpin.WriteProblem(w, httpin.Problem{Status: http.StatusBadRequest, Type: base + "invalid-range", Title: "Invalid tree sizes", Detail: err.Error()})
	case errors.Is(err, audit.ErrNotFound):
		httpin.WriteProblem(w, httpin.Problem{Status: http.StatusNotFound, Type: base + "not-found", Title: "Not found",
			Detail: strings.TrimPrefix(err.Error(), "audit: not found: ")})
	case errors.Is(err, audit.ErrBusy):
		w.Header().Set("Retry-After", "1")
		httpin.WriteProblem(w, httpin.Problem{Status: http.StatusTooManyRequests, Type: base + "rate-limited", Title: "Too many requests", Detail: "too many proofs are being built; try again shortly"})
	case errors.Is(err, audit.ErrProofsUnavailable):
		httpin.WriteProblem(w, httpin.Problem{Status: http.StatusNotImplemented, Type: base + "proofs-unavailable", Title: "Proofs unavailable",
			Detail: "this gateway keeps no proof tiles for its audit log"})
	default:
		g.log.Error("audit proof failed", "err", err)
		w.Header().Set("Retry-After", "5")
		httpin.WriteProblem(w, httpin.Problem{Status: http.StatusServiceUnavailable, Type: base + "unavailable", Title: "Service unavailable"})
	}
}
