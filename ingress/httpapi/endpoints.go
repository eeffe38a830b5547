package httpapi

import (
	"context"
	"net/http"
	"time"

	"github.com/sealpost/sealpost/forwarder"
	"github.com/sealpost/sealpost/ingress/catalog"
)

// Routes, endpoints and the operational webhook, for a tenant's API key
// (its own tenant) and for operators (/admin/tenants/{tenant}/...).

// endpointView is an endpoint with its delivery state.
type endpointView struct {
	catalog.Endpoint
	Status   string    `json:"status"` // "enabled" or "disabled"
	Disabled string    `json:"disabled_reason,omitempty"`
	Since    time.Time `json:"disabled_since,omitzero"`
	// Secret is the endpoint's whsec_ secret, shown only when made.
	Secret string `json:"secret,omitempty"`
}

func (a *API) view(ctx context.Context, e catalog.Endpoint) endpointView {
	v := endpointView{Endpoint: e, Status: "enabled"}
	st, err := a.cfg.Forwarder.EndpointState(ctx, e.Tenant, e.Route, e.ID)
	if err == nil && st.Disabled {
		v.Status, v.Disabled, v.Since = "disabled", st.Reason, st.Since
	}
	return v
}

// routeOf is the route of a request ({route}) in the tenant, which the
// caller must reach.
func (a *API) routeOf(r *http.Request, c *caller) (catalog.Route, error) {
	tenant, err := a.tenantOf(r, c)
	if err != nil {
		return catalog.Route{}, err
	}
	rt, ok := a.cfg.Catalog.GetRoute(tenant, r.PathValue("route"))
	if !ok || !c.reaches(rt.Name) {
		return catalog.Route{}, notFoundf("no such route")
	}
	return rt, nil
}

func (a *API) listRoutes(w http.ResponseWriter, r *http.Request, c *caller) error {
	out := []catalog.Route{}
	for _, rt := range a.cfg.Catalog.Routes(c.tenant) {
		if c.reaches(rt.Name) {
			out = append(out, rt)
		}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"items": out})
}

func (a *API) listEndpoints(w http.ResponseWriter, r *http.Request, c *caller) error {
	rt, err := a.routeOf(r, c)
	if err != nil {
		return err
	}
	out := []endpointView{}
	for _, e := range a.cfg.Catalog.Endpoints(rt.Tenant, rt.Name) {
		out = append(out, a.view(r.Context(), e))
	}
	return writeJSON(w, http.StatusOK, map[string]any{"items": out})
}

func (a *API) endpointOf(r *http.Request, c *caller) (catalog.Endpoint, error) {
	rt, err := a.routeOf(r, c)
	if err != nil {
		return catalog.Endpoint{}, err
	}
	e, ok := a.cfg.Catalog.Endpoint(rt.Tenant, rt.Name, r.PathValue("endpoint"))
	if !ok {
		return catalog.Endpoint{}, notFoundf("no such endpoint")
	}
	return e, nil
}

func (a *API) getEndpoint(w http.ResponseWriter, r *http.Request, c *caller) error {
	e, err := a.endpointOf(r, c)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, a.view(r.Context(), e))
}

// endpointInput is the body of a create or update; absent members leave
// an update's values as they are.
type endpointInput struct {
	ID             string             `json:"id"`
	URL            *string            `json:"url"`
	AllowHTTP      *bool              `json:"allow_http"`
	MaxConcurrency *int               `json:"max_concurrency"`
	RateLimit      *float64           `json:"rate_limit"`
	EventTypes     *[]string          `json:"event_types"`
	Description    *string            `json:"description"`
	Metadata       *map[string]string `json:"metadata"`
}

func (in *endpointInput) apply(e *catalog.Endpoint, c *caller) error {
	if in.AllowHTTP != nil && *in.AllowHTTP && c.key != nil {
		return forbiddenf("allow_http can only be set by an operator")
	}
	set(&e.URL, in.URL)
	set(&e.AllowHTTP, in.AllowHTTP)
	set(&e.MaxConcurrency, in.MaxConcurrency)
	set(&e.RateLimit, in.RateLimit)
	set(&e.EventTypes, in.EventTypes)
	set(&e.Description, in.Description)
	set(&e.Metadata, in.Metadata)
	return nil
}

func set[T any](dst *T, v *T) {
	if v != nil {
		*dst = *v
	}
}

func (a *API) createEndpoint(w http.ResponseWriter, r *http.Request, c *caller) error {
	rt, err := a.routeOf(r, c)
	if err != nil {
		return err
	}
	var in endpointInput
	if err := readJSON(w, r, &in, false); err != nil {
		return err
	}
	e := catalog.Endpoint{ID: in.ID, Tenant: rt.Tenant, Route: rt.Name}
	if err := in.apply(&e, c); err != nil {
		return err
	}
	e, err = a.cfg.Catalog.CreateEndpoint(r.Context(), e, a.cfg.AllowNets)
	if err != nil {
		return err
	}
	secret, err := a.cfg.Forwarder.RotateSecret(c.ctx, e.Tenant, e.Route, e.ID, 0)
	if err != nil {
		_ = a.cfg.Catalog.DeleteEndpoint(context.WithoutCancel(r.Context()), e.Tenant, e.Route, e.ID)
		return err
	}
	a.changed(r, c, "endpoint.create", e.Tenant, e.Route+"/"+e.ID)
	v := a.view(r.Context(), e)
	v.Secret = secret
	return writeJSON(w, http.StatusCreated, v)
}

func (a *API) updateEndpoint(w http.ResponseWriter, r *http.Request, c *caller) error {
	old, err := a.endpointOf(r, c)
	if err != nil {
		return err
	}
	var in endpointInput
	if err := readJSON(w, r, &in, false); err != nil {
		return err
	}
	if in.ID != "" && in.ID != old.ID {
		return invalidf("id cannot change")
	}
	if in.AllowHTTP != nil && *in.AllowHTTP && c.key != nil {
		return forbiddenf("allow_http can only be set by an operator")
	}
	e, err := a.cfg.Catalog.UpdateEndpoint(r.Context(), old.Tenant, old.Route, old.ID, a.cfg.AllowNets, func(e *catalog.Endpoint) error {
		return in.apply(e, c)
	})
	if err != nil {
		return err
	}
	a.changed(r, c, "endpoint.update", e.Tenant, e.Route+"/"+e.ID)
	return writeJSON(w, http.StatusOK, a.view(r.Context(), e))
}

func (a *API) deleteEndpoint(w http.ResponseWriter, r *http.Request, c *caller) error {
	e, err := a.endpointOf(r, c)
	if err != nil {
		return err
	}
	if err := a.cfg.Catalog.DeleteEndpoint(r.Context(), e.Tenant, e.Route, e.ID); err != nil {
		return err
	}
	if err := a.cfg.Forwarder.DeleteSecrets(r.Context(), e.Tenant, e.Route, e.ID); err != nil {
		a.log.Warn("endpoint secrets not removed", "tenant", e.Tenant, "route", e.Route, "endpoint", e.ID, "err", err)
	}
	a.changed(r, c, "endpoint.delete", e.Tenant, e.Route+"/"+e.ID)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// queryOverlap reads ?overlap= (a Go duration), default 24h.
func queryOverlap(r *http.Request) (time.Duration, error) {
	s := r.URL.Query().Get("overlap")
	if s == "" {
		return 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 || d > forwarder.MaxSecretOverlap {
		return 0, invalidf("overlap: a duration from 0s to 720h")
	}
	return d, nil
}

// rotateEndpointSecret makes a new whsec_ secret, shown once; the previous
// ones keep signing for ?overlap= (default 24h).
func (a *API) rotateEndpointSecret(w http.ResponseWriter, r *http.Request, c *caller) error {
	e, err := a.endpointOf(r, c)
	if err != nil {
		return err
	}
	overlap, err := queryOverlap(r)
	if err != nil {
		return err
	}
	secret, err := a.cfg.Forwarder.RotateSecret(c.ctx, e.Tenant, e.Route, e.ID, overlap)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]string{"tenant": e.Tenant, "route": e.Route, "endpoint": e.ID, "secret": secret,
		"note": "shown once: give it to the endpoint's owner now"})
}

func (a *API) enableEndpoint(w http.ResponseWriter, r *http.Request, c *caller) error {
	e, err := a.endpointOf(r, c)
	if err != nil {
		return err
	}
	if err := a.cfg.Forwarder.EnableEndpoint(c.ctx, e.Tenant, e.Route, e.ID); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, a.view(r.Context(), e))
}

func (a *API) disableEndpoint(w http.ResponseWriter, r *http.Request, c *caller) error {
	e, err := a.endpointOf(r, c)
	if err != nil {
		return err
	}
	if err := a.cfg.Forwarder.DisableEndpoint(c.ctx, e.Tenant, e.Route, e.ID); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, a.view(r.Context(), e))
}

// opWebhookInput is the body of PUT .../operational-webhook.
type opWebhookInput struct {
	URL          string   `json:"url"`
	AllowHTTP    bool     `json:"allow_http"`
	FailingAfter int      `json:"failing_after"`
	Events       []string `json:"events"`
}

func (a *API) getOpWebhook(w http.ResponseWriter, r *http.Request, c *caller) error {
	tenant, err := a.tenantOf(r, c)
	if err != nil {
		return err
	}
	o, ok := a.cfg.Catalog.OpWebhook(tenant)
	if !ok {
		return notFoundf("no operational webhook")
	}
	return writeJSON(w, http.StatusOK, o)
}

// putOpWebhook sets the operational webhook; when it had none, a whsec_
// secret is made and shown this once.
func (a *API) putOpWebhook(w http.ResponseWriter, r *http.Request, c *caller) error {
	tenant, err := a.tenantOf(r, c)
	if err != nil {
		return err
	}
	var in opWebhookInput
	if err := readJSON(w, r, &in, false); err != nil {
		return err
	}
	if in.AllowHTTP && c.key != nil {
		return forbiddenf("allow_http can only be set by an operator")
	}
	_, existed := a.cfg.Catalog.OpWebhook(tenant)
	o, err := a.cfg.Catalog.SetOpWebhook(r.Context(), catalog.OpWebhook{Tenant: tenant, URL: in.URL, AllowHTTP: in.AllowHTTP,
		FailingAfter: in.FailingAfter, Events: in.Events}, a.cfg.AllowNets)
	if err != nil {
		return err
	}
	a.changed(r, c, "opwebhook.set", tenant, "operational-webhook")
	out := map[string]any{"operational_webhook": o}
	if !existed {
		secret, err := a.cfg.Forwarder.RotateOpSecret(c.ctx, tenant, 0)
		if err != nil {
			return err
		}
		out["secret"] = secret
	}
	return writeJSON(w, http.StatusOK, out)
}

func (a *API) deleteOpWebhook(w http.ResponseWriter, r *http.Request, c *caller) error {
	tenant, err := a.tenantOf(r, c)
	if err != nil {
		return err
	}
	if err := a.cfg.Catalog.DeleteOpWebhook(r.Context(), tenant); err != nil {
		return err
	}
	a.changed(r, c, "opwebhook.delete", tenant, "operational-webhook")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *API) rotateOpSecret(w http.ResponseWriter, r *http.Request, c *caller) error {
	tenant, err := a.tenantOf(r, c)
	if err != nil {
		return err
	}
	if _, ok := a.cfg.Catalog.OpWebhook(tenant); !ok {
		return notFoundf("no operational webhook")
	}
	overlap, err := queryOverlap(r)
	if err != nil {
		return err
	}
	secret, err := a.cfg.Forwarder.RotateOpSecret(c.ctx, tenant, overlap)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]string{"tenant": tenant, "secret": secret, "note": "shown once"})
}
