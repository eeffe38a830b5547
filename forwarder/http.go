package forwarder

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
)

type (
	tenantKey struct{}
	actorKey  struct{}
)

// WithActor returns a context naming who asks for a redelivery, replay,
// endpoint enable or secret rotation ("apikey:<id>", "admin", ...), for the
// audit entry. Without it the actor is "admin".
func WithActor(ctx context.Context, actor string) context.Context {
	return context.WithValue(ctx, actorKey{}, actor)
}

func actorFrom(ctx context.Context) string {
	if a, ok := ctx.Value(actorKey{}).(string); ok && a != "" {
		return a
	}
	return "admin"
}

// WithTenant returns a context carrying the authenticated tenant. The
// caller's authentication middleware sets it; the handlers below serve only
// that tenant's receipts.
func WithTenant(ctx context.Context, tenant string) context.Context {
	return context.WithValue(ctx, tenantKey{}, tenant)
}

func tenantFrom(ctx context.Context) (string, bool) {
	t, ok := ctx.Value(tenantKey{}).(string)
	return t, ok && t != ""
}

// RedeliverHandler serves POST /v1/receipts/{id}/redeliver: one inline
// attempt with the stored receipt and its original webhook-id. It answers
// 200 {"id","result":"delivered"}, or a problem: 404 unknown receipt, 409
// endpoint disabled (ProblemEndpointDisabled) or route gone, 502 the
// endpoint did not answer 2xx, 503 sealpost could not proceed. Register it
// with a pattern that has an {id} wildcard.
func (w *Worker) RedeliverHandler() http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			rw.Header().Set("Allow", http.MethodPost)
			problem(rw, http.StatusMethodNotAllowed, "method not allowed")
			return
		}
		tenant, ok := tenantFrom(r.Context())
		if !ok {
			problem(rw, http.StatusUnauthorized, "no tenant")
			return
		}
		id := r.PathValue("id")
		if err := w.Redeliver(r.Context(), tenant, id); err != nil {
			w.problemFor(rw, err)
			return
		}
		writeJSON(rw, http.StatusOK, map[string]string{"id": id, "result": ResultDelivered})
	})
}

// AttemptsHandler serves GET /v1/receipts/{id}/attempts: 200
// {"id","attempts":[...]} oldest first, or 404.
func (w *Worker) AttemptsHandler() http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			rw.Header().Set("Allow", "GET, HEAD")
			problem(rw, http.StatusMethodNotAllowed, "method not allowed")
			return
		}
		tenant, ok := tenantFrom(r.Context())
		if !ok {
			problem(rw, http.StatusUnauthorized, "no tenant")
			return
		}
		id := r.PathValue("id")
		as, err := w.Attempts(r.Context(), tenant, id)
		if err != nil {
			w.problemFor(rw, err)
			return
		}
		writeJSON(rw, http.StatusOK, struct {
			ID       string    `json:"id"`
			Attempts []Attempt `json:"attempts"`
		}{id, as})
	})
}

// problemFor maps an error of Redeliver or Attempts to its HTTP answer. It
// is the only place that does.
func (w *Worker) problemFor(rw http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, ErrInvalidInput), errors.Is(err, ErrNotFound):
		// An id that cannot exist is as unknown as one that does not.
		problem(rw, http.StatusNotFound, "receipt not found")
	case errors.Is(err, ErrEndpointDisabled):
		typedProblem(rw, http.StatusConflict, ProblemEndpointDisabled, EndpointDisabledDetail)
	case errors.Is(err, ErrUnknownRoute):
		problem(rw, http.StatusConflict, "the receipt's route is no longer configured")
	case errors.Is(err, ErrDeliveryFailed):
		problem(rw, http.StatusBadGateway, err.Error())
	default:
		w.log.Error("forwarder: request failed", "err", err)
		rw.Header().Set("Retry-After", "30")
		problem(rw, http.StatusServiceUnavailable, "temporarily unavailable")
	}
}

// ProblemEndpointDisabled is the problem type of a 409 answer to a
// redelivery or replay whose endpoint is disabled (after a 410 Gone), in
// the tenant API and the admin API alike; EndpointDisabledDetail is its
// detail.
const (
	ProblemEndpointDisabled = "https://sealpost.dev/problems/endpoint-disabled"
	EndpointDisabledDetail  = "the endpoint is disabled after answering 410 Gone; re-enable it first"
)

func problem(rw http.ResponseWriter, status int, detail string) {
	typedProblem(rw, status, "about:blank", detail)
}

func typedProblem(rw http.ResponseWriter, status int, typ, detail string) {
	rw.Header().Set("Content-Type", "application/problem+json")
	rw.Header().Set("Cache-Control", "no-store")
	rw.WriteHeader(status)
	_ = json.NewEncoder(rw).Encode(map[string]any{
		"type": typ, "title": http.StatusText(status), "status": status, "detail": detail,
	})
}

func writeJSON(rw http.ResponseWriter, status int, v any) {
	rw.Header().Set("Content-Type", "application/json")
	rw.Header().Set("Cache-Control", "no-store")
	rw.WriteHeader(status)
	_ = json.NewEncoder(rw).Encode(v)
}
