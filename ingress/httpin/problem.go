package httpin

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/sealpost/sealpost/ingress"
)

// Problem is an RFC 9457 problem details document.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
}

// problemBase prefixes our problem type URIs; they are stable identifiers,
// documented in docs/api.md, not fetched.
const problemBase = "https://sealpost.dev/problems/"

// WriteProblem writes p as application/problem+json.
func WriteProblem(w http.ResponseWriter, p Problem) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p)
}

// writeError is the one place where ingest errors become HTTP answers.
// Unknown errors fail closed: a generic 500 that reveals nothing.
func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, err error) {
	p := Problem{Status: http.StatusInternalServerError, Type: problemBase + "internal", Title: "Internal error",
		Detail: "the request could not be processed"}
	retry := false
	switch {
	case errors.Is(err, ErrNoCredentials), errors.Is(err, ErrBadCredentials):
		w.Header().Set("WWW-Authenticate", `Bearer realm="sealpost"`)
		p = Problem{Status: http.StatusUnauthorized, Type: problemBase + "unauthorized", Title: "Unauthorized", Detail: err.Error()}
	case errors.Is(err, errForbidden):
		p = Problem{Status: http.StatusForbidden, Type: problemBase + "forbidden", Title: "Forbidden", Detail: err.Error()}
	case errors.Is(err, errNoRoute):
		p = Problem{Status: http.StatusNotFound, Type: problemBase + "unknown-route", Title: "Unknown route", Detail: err.Error()}
	case errors.Is(err, errMethod):
		p = Problem{Status: http.StatusMethodNotAllowed, Type: problemBase + "method-not-allowed", Title: "Method not allowed", Detail: err.Error()}
	case errors.Is(err, errLossyNumber):
		p = Problem{Status: http.StatusBadRequest, Type: problemBase + "lossy-number", Title: "Number cannot be signed exactly", Detail: err.Error()}
	case errors.Is(err, errBadJSON):
		p = Problem{Status: http.StatusBadRequest, Type: problemBase + "invalid-json", Title: "Invalid JSON", Detail: err.Error()}
	case errors.Is(err, errBadIdemKey):
		p = Problem{Status: http.StatusBadRequest, Type: problemBase + "invalid-idempotency-key", Title: "Invalid Idempotency-Key", Detail: err.Error()}
	case errors.Is(err, errBadEventType):
		p = Problem{Status: http.StatusBadRequest, Type: problemBase + "invalid-event-type", Title: "Invalid Event-Type", Detail: err.Error()}
	case errors.Is(err, errDupIdemKey):
		p = Problem{Status: http.StatusBadRequest, Type: problemBase + "invalid-idempotency-key", Title: "Invalid Idempotency-Key", Detail: err.Error()}
	case errors.Is(err, errSlowBody):
		// The rest of the body may still be on its way: close the
		// connection rather than read it.
		w.Header().Set("Connection", "close")
		p = Problem{Status: http.StatusRequestTimeout, Type: problemBase + "request-timeout", Title: "Request timeout", Detail: err.Error()}
	case errors.Is(err, errIdemReuse):
		p = Problem{Status: http.StatusConflict, Type: problemBase + "idempotency-conflict", Title: "Idempotency key reused", Detail: err.Error()}
	case errors.Is(err, errIdemInFlight):
		retry = true
		p = Problem{Status: http.StatusConflict, Type: problemBase + "idempotency-in-progress", Title: "Request in progress", Detail: err.Error()}
	case errors.Is(err, errTooLarge):
		p = Problem{Status: http.StatusRequestEntityTooLarge, Type: problemBase + "too-large", Title: "Payload too large",
			Detail: "the body exceeds the limit of " + strconv.FormatInt(h.cfg.MaxBodyBytes, 10) + " bytes"}
	case errors.Is(err, ingress.ErrTooLarge):
		p = Problem{Status: http.StatusRequestEntityTooLarge, Type: problemBase + "too-large", Title: "Payload too large",
			Detail: "the payload, once wrapped for the queue, exceeds the queue's message size"}
	case errors.Is(err, errRateLimited):
		retry = true
		p = Problem{Status: http.StatusTooManyRequests, Type: problemBase + "rate-limited", Title: "Too many requests", Detail: err.Error()}
	case ingress.IsTemporary(err):
		retry = true
		p = Problem{Status: http.StatusServiceUnavailable, Type: problemBase + "unavailable", Title: "Service unavailable",
			Detail: "the payload was not accepted; retry later"}
		if ok, skipped := h.tempLog.Allow(h.cfg.Now()); ok {
			h.log.Warn("ingest temporarily failing", "err", err, "not_logged", skipped)
		}
	default:
		if ok, skipped := h.failLog.Allow(h.cfg.Now()); ok {
			h.log.Error("ingest failed", "err", err, "not_logged", skipped)
		}
	}
	if retry {
		w.Header().Set("Retry-After", strconv.Itoa(int(h.cfg.RetryAfter/time.Second)))
	}
	WriteProblem(w, p)
}
