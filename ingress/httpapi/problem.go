package httpapi

import (
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sealpost/sealpost/audit"
	"github.com/sealpost/sealpost/forwarder"
	"github.com/sealpost/sealpost/ingress/catalog"
	"github.com/sealpost/sealpost/ingress/httpin"
	"github.com/sealpost/sealpost/keyring"
	"github.com/sealpost/sealpost/queue"
)

// Every error answer of the HTTP API is an RFC 9457 problem document whose
// type is https://sealpost.dev/problems/<name>, one of the names below
// (the ingest handler adds its own: invalid-json, too-large, ...; see
// docs/api.md). writeError is the one place errors become answers.
const (
	probUnauthorized      = "unauthorized"
	probForbidden         = "forbidden"
	probNotFound          = "not-found"
	probMethod            = "method-not-allowed"
	probInvalid           = "invalid-request"
	probTooLarge          = "too-large"
	probExists            = "already-exists"
	probReadOnly          = "read-only"
	probConflict          = "conflict"
	probRecipientTaken    = "recipient-taken"
	probEndpointDisabled  = "endpoint-disabled"
	probPending           = "pending"
	probProofPending      = "proof-pending"
	probInvalidRange      = "invalid-range"
	probDeliveryFailed    = "delivery-failed"
	probRateLimited       = "rate-limited"
	probProofsUnavailable = "proofs-unavailable"
	probAuditTampered     = "audit-inconsistent"
	probUnavailable       = "unavailable"
)

const problemBase = "https://sealpost.dev/problems/"

// Errors of the API itself.
var (
	errUnauthorized = errors.New("missing or invalid credentials")
	errForbidden    = errors.New("not allowed")
	errNotFound     = errors.New("not found")
	errInvalid      = errors.New("invalid request")
	errTooLarge     = errors.New("request body too large")
	errMethod       = errors.New("method not allowed")
	errDisabled     = errors.New("not enabled on this gateway")
)

// apiError is an error with the detail the client sees.
type apiError struct {
	kind   error
	detail string
}

func (e *apiError) Error() string { return e.detail }
func (e *apiError) Unwrap() error { return e.kind }

func invalidf(detail string) error   { return &apiError{errInvalid, detail} }
func forbiddenf(detail string) error { return &apiError{errForbidden, detail} }
func notFoundf(detail string) error  { return &apiError{errNotFound, detail} }

func problem(w http.ResponseWriter, status int, name, title, detail string) {
	httpin.WriteProblem(w, httpin.Problem{Status: status, Type: problemBase + name, Title: title, Detail: detail})
}

// writeError answers err. Unknown errors fail closed: 503 with a generic
// text, logged here.
func writeError(w http.ResponseWriter, log *slog.Logger, err error) {
	var (
		ae      *apiError
		pending *audit.PendingError
	)
	detail := func(def string) string {
		if errors.As(err, &ae) {
			return ae.detail
		}
		if def != "" {
			return def
		}
		return err.Error()
	}
	switch {
	case errors.Is(err, errUnauthorized):
		w.Header().Set("WWW-Authenticate", `Bearer realm="sealpost"`)
		problem(w, http.StatusUnauthorized, probUnauthorized, "Unauthorized", detail(""))
	case errors.Is(err, errForbidden):
		problem(w, http.StatusForbidden, probForbidden, "Forbidden", detail(""))
	case errors.Is(err, errMethod):
		problem(w, http.StatusMethodNotAllowed, probMethod, "Method not allowed", detail(""))
	case errors.Is(err, errNotFound), errors.Is(err, catalog.ErrNotFound), errors.Is(err, forwarder.ErrNotFound),
		errors.Is(err, queue.ErrNotFound), errors.Is(err, audit.ErrNotFound), errors.Is(err, keyring.ErrUnknownKey),
		errors.Is(err, forwarder.ErrUnknownRoute), errors.Is(err, errDisabled):
		problem(w, http.StatusNotFound, probNotFound, "Not found", detail("no such object"))
	case errors.Is(err, errTooLarge):
		problem(w, http.StatusRequestEntityTooLarge, probTooLarge, "Payload too large", detail(""))
	case errors.Is(err, errInvalid), errors.Is(err, catalog.ErrInvalid), errors.Is(err, forwarder.ErrInvalidInput):
		problem(w, http.StatusBadRequest, probInvalid, "Invalid request", detail(""))
	case errors.Is(err, catalog.ErrExists):
		problem(w, http.StatusConflict, probExists, "Already exists", detail("an object with this name or id exists"))
	case errors.Is(err, catalog.ErrRecipientTaken):
		_, d, _ := strings.Cut(err.Error(), catalog.ErrRecipientTaken.Error()+": ")
		problem(w, http.StatusConflict, probRecipientTaken, "Recipient taken", d)
	case errors.Is(err, catalog.ErrReadOnly):
		problem(w, http.StatusConflict, probReadOnly, "Read-only", "declared in the configuration file: change it there")
	case errors.Is(err, catalog.ErrBusy), errors.Is(err, keyring.ErrRotationPending):
		w.Header().Set("Retry-After", "1")
		problem(w, http.StatusConflict, probConflict, "Conflict", detail(""))
	case errors.Is(err, forwarder.ErrEndpointDisabled):
		problem(w, http.StatusConflict, probEndpointDisabled, "Endpoint disabled", "the endpoint is disabled (it answered 410 Gone, or was disabled): enable it first")
	case errors.Is(err, forwarder.ErrPending):
		problem(w, http.StatusConflict, probPending, "Delivery pending", "the receipt is still being delivered; try once it was delivered or dead-lettered")
	case errors.As(err, &pending):
		w.Header().Set("Retry-After", strconv.Itoa(int(pending.RetryAfter.Round(time.Second)/time.Second)))
		problem(w, http.StatusConflict, probProofPending, "Proof not yet available",
			"no signed checkpoint covers the receipt's audit entries yet; ask again after Retry-After seconds")
	case errors.Is(err, errBadSize), errors.Is(err, audit.ErrBadRange):
		problem(w, http.StatusBadRequest, probInvalidRange, "Invalid tree sizes", err.Error())
	case errors.Is(err, forwarder.ErrDeliveryFailed):
		problem(w, http.StatusBadGateway, probDeliveryFailed, "Delivery failed", err.Error())
	case errors.Is(err, audit.ErrBusy), errors.Is(err, errBusy):
		w.Header().Set("Retry-After", "10")
		problem(w, http.StatusTooManyRequests, probRateLimited, "Too many requests", "too many such requests are running; try again shortly")
	case errors.Is(err, audit.ErrProofsUnavailable):
		problem(w, http.StatusNotImplemented, probProofsUnavailable, "Proofs unavailable", "this gateway keeps no proof tiles for its audit log")
	case errors.Is(err, audit.ErrTampered):
		problem(w, http.StatusConflict, probAuditTampered, "Audit log inconsistent", "the audit log failed verification: run sealpost audit verify")
	default:
		log.Error("api request failed", "err", err)
		w.Header().Set("Retry-After", "5")
		problem(w, http.StatusServiceUnavailable, probUnavailable, "Service unavailable", "temporarily unavailable; try again later")
	}
}

// errBusy: too many requests of a kind are running.
var errBusy = errors.New("busy")
