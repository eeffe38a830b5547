package httpapi

import (
	"net/http"
	"time"

	"github.com/sealpost/sealpost/audit"
	"github.com/sealpost/sealpost/ingress"
	"github.com/sealpost/sealpost/ingress/catalog"
)

// The operator API of the catalog: tenants, routes, API keys, operators.
// Objects the configuration file declares are listed with "declared": true
// and refuse changes (409 read-only).

// changed audits a change of the catalog under the caller.
func (a *API) changed(r *http.Request, c *caller, action, tenant, target string) {
	a.appendAudit(r.Context(), audit.Entry{Actor: c.actor, Action: action, Tenant: tenant, Target: target,
		Outcome: audit.OutcomeSuccess, RequestID: r.Header.Get("X-Request-Id")})
}

func (a *API) whoami(w http.ResponseWriter, _ *http.Request, c *caller) error {
	return writeJSON(w, http.StatusOK, map[string]string{"actor": c.actor, "role": c.role})
}

func (a *API) listTenants(w http.ResponseWriter, _ *http.Request, _ *caller) error {
	return writeJSON(w, http.StatusOK, map[string]any{"items": a.cfg.Catalog.Tenants()})
}

func (a *API) getTenant(w http.ResponseWriter, r *http.Request, c *caller) error {
	t, ok := a.cfg.Catalog.Tenant(r.PathValue("tenant"))
	if !ok {
		return notFoundf("no such tenant")
	}
	return writeJSON(w, http.StatusOK, t)
}

// commonInput is what tenants and routes share in a create or update.
type commonInput struct {
	Name        string             `json:"name"`
	Description *string            `json:"description"`
	Metadata    *map[string]string `json:"metadata"`
	Retention   *string            `json:"retention"`
}

func (a *API) createTenant(w http.ResponseWriter, r *http.Request, c *caller) error {
	var in commonInput
	if err := readJSON(w, r, &in, false); err != nil {
		return err
	}
	t := catalog.Tenant{Name: in.Name}
	set(&t.Description, in.Description)
	set(&t.Metadata, in.Metadata)
	set(&t.Retention, in.Retention)
	t, err := a.cfg.Catalog.CreateTenant(r.Context(), t)
	if err != nil {
		return err
	}
	a.changed(r, c, "tenant.create", t.Name, t.Name)
	return writeJSON(w, http.StatusCreated, t)
}

func (a *API) updateTenant(w http.ResponseWriter, r *http.Request, c *caller) error {
	var in commonInput
	if err := readJSON(w, r, &in, false); err != nil {
		return err
	}
	name := r.PathValue("tenant")
	if in.Name != "" && in.Name != name {
		return invalidf("name cannot change")
	}
	t, err := a.cfg.Catalog.UpdateTenant(r.Context(), name, func(t *catalog.Tenant) error {
		set(&t.Description, in.Description)
		set(&t.Metadata, in.Metadata)
		set(&t.Retention, in.Retention)
		return nil
	})
	if err != nil {
		return err
	}
	a.changed(r, c, "tenant.update", name, name)
	return writeJSON(w, http.StatusOK, t)
}

// deleteTenant deletes a tenant's data for good (crypto-shredding) and, for
// a tenant of the API, the tenant with its routes, endpoints and keys. The
// name must be repeated in ?confirm=.
func (a *API) deleteTenant(w http.ResponseWriter, r *http.Request, c *caller) error {
	tenant := r.PathValue("tenant")
	if !ingress.ValidName(tenant) {
		return invalidf("not a tenant name")
	}
	if r.URL.Query().Get("confirm") != tenant {
		return invalidf("deleting a tenant cannot be undone: repeat its name in ?confirm=")
	}
	t, known := a.cfg.Catalog.Tenant(tenant)
	if err := a.cfg.Ops.DeleteTenant(r.Context(), c.actor, tenant); err != nil {
		return err
	}
	note := "the tenant's key is destroyed: its data is unreadable here and in every backup"
	if known && t.Declared {
		note += "; remove the tenant from the configuration file to stop new data"
	} else if known {
		if err := a.cfg.Catalog.DeleteTenant(r.Context(), tenant); err != nil {
			return err
		}
	}
	return writeJSON(w, http.StatusOK, map[string]string{"tenant": tenant, "status": "deleted", "note": note})
}

func (a *API) exportTenant(w http.ResponseWriter, r *http.Request, c *caller) error {
	tenant := r.PathValue("tenant")
	if !ingress.ValidName(tenant) {
		return invalidf("not a tenant name")
	}
	w.Header().Set("Content-Type", "application/x-tar")
	w.Header().Set("Content-Disposition", `attachment; filename="`+tenant+`-export.tar"`)
	w.Header().Set("Cache-Control", "no-store")
	err := a.cfg.Ops.ExportTenant(r.Context(), tenant, w)
	a.appendAudit(r.Context(), audit.Entry{Actor: c.actor, Action: "tenant.export", Tenant: tenant, Target: tenant,
		Outcome: outcomeOf(err), RequestID: r.Header.Get("X-Request-Id")})
	if err != nil {
		a.log.Error("tenant export failed", "tenant", tenant, "err", err)
		panic(http.ErrAbortHandler) // the client sees a cut connection, not a short archive that looks whole
	}
	return nil
}

func (a *API) adminListRoutes(w http.ResponseWriter, r *http.Request, c *caller) error {
	tenant, err := a.tenantOf(r, c)
	if err != nil {
		return err
	}
	out := a.cfg.Catalog.Routes(tenant)
	if out == nil {
		out = []catalog.Route{}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"items": out})
}

func (a *API) getRoute(w http.ResponseWriter, r *http.Request, c *caller) error {
	rt, err := a.routeOf(r, c)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, rt)
}

// routeInput is a route's fields in a create or update.
type routeInput struct {
	commonInput
	Recipients *[]string `json:"recipients"`
}

func (a *API) createRoute(w http.ResponseWriter, r *http.Request, c *caller) error {
	tenant, err := a.tenantOf(r, c)
	if err != nil {
		return err
	}
	var in routeInput
	if err := readJSON(w, r, &in, false); err != nil {
		return err
	}
	rt := catalog.Route{Tenant: tenant, Name: in.Name}
	set(&rt.Description, in.Description)
	set(&rt.Metadata, in.Metadata)
	set(&rt.Retention, in.Retention)
	set(&rt.Recipients, in.Recipients)
	rt, err = a.cfg.Catalog.CreateRoute(r.Context(), rt)
	if err != nil {
		return err
	}
	a.changed(r, c, "route.create", tenant, rt.Name)
	return writeJSON(w, http.StatusCreated, rt)
}

func (a *API) updateRoute(w http.ResponseWriter, r *http.Request, c *caller) error {
	old, err := a.routeOf(r, c)
	if err != nil {
		return err
	}
	var in routeInput
	if err := readJSON(w, r, &in, false); err != nil {
		return err
	}
	if in.Name != "" && in.Name != old.Name {
		return invalidf("name cannot change")
	}
	rt, err := a.cfg.Catalog.UpdateRoute(r.Context(), old.Tenant, old.Name, func(rt *catalog.Route) error {
		set(&rt.Description, in.Description)
		set(&rt.Metadata, in.Metadata)
		set(&rt.Retention, in.Retention)
		set(&rt.Recipients, in.Recipients)
		return nil
	})
	if err != nil {
		return err
	}
	a.changed(r, c, "route.update", rt.Tenant, rt.Name)
	return writeJSON(w, http.StatusOK, rt)
}

func (a *API) deleteRoute(w http.ResponseWriter, r *http.Request, c *caller) error {
	rt, err := a.routeOf(r, c)
	if err != nil {
		return err
	}
	eps := a.cfg.Catalog.Endpoints(rt.Tenant, rt.Name)
	if err := a.cfg.Catalog.DeleteRoute(r.Context(), rt.Tenant, rt.Name); err != nil {
		return err
	}
	for _, e := range eps {
		_ = a.cfg.Forwarder.DeleteSecrets(r.Context(), e.Tenant, e.Route, e.ID)
	}
	a.changed(r, c, "route.delete", rt.Tenant, rt.Name)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// keyInput is the body of POST .../api-keys and POST /admin/operators.
type keyInput struct {
	ID          string    `json:"id"`
	Scopes      []string  `json:"scopes"`
	Role        string    `json:"role"`
	Description string    `json:"description"`
	Expires     time.Time `json:"expires_at"`
}

func (a *API) listAPIKeys(w http.ResponseWriter, r *http.Request, c *caller) error {
	tenant, err := a.tenantOf(r, c)
	if err != nil {
		return err
	}
	out := a.cfg.Catalog.APIKeys(tenant)
	if out == nil {
		out = []catalog.APIKey{}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"items": out})
}

func (a *API) keyOf(r *http.Request, c *caller) (catalog.APIKey, error) {
	tenant, err := a.tenantOf(r, c)
	if err != nil {
		return catalog.APIKey{}, err
	}
	k, ok := a.cfg.Catalog.GetAPIKey(r.PathValue("id"))
	if !ok || k.Tenant != tenant {
		return catalog.APIKey{}, notFoundf("no such api key")
	}
	return k, nil
}

func (a *API) getAPIKey(w http.ResponseWriter, r *http.Request, c *caller) error {
	k, err := a.keyOf(r, c)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, k)
}

// createAPIKey makes a key and shows its token this once.
func (a *API) createAPIKey(w http.ResponseWriter, r *http.Request, c *caller) error {
	tenant, err := a.tenantOf(r, c)
	if err != nil {
		return err
	}
	var in keyInput
	if err := readJSON(w, r, &in, false); err != nil {
		return err
	}
	if in.Role != "" {
		return invalidf("role: only operators have one")
	}
	k, token, err := a.cfg.Catalog.CreateAPIKey(r.Context(), catalog.APIKey{ID: in.ID, Tenant: tenant, Scopes: in.Scopes,
		Description: in.Description, Expires: in.Expires})
	if err != nil {
		return err
	}
	a.changed(r, c, audit.ActionAPIKeyCreate, tenant, k.ID)
	return writeJSON(w, http.StatusCreated, map[string]any{"api_key": k, "token": token, "note": "shown once: store it now"})
}

// rotateAPIKey gives a key a new token (shown once); the old one keeps
// working for ?overlap= (default 24h).
func (a *API) rotateAPIKey(w http.ResponseWriter, r *http.Request, c *caller) error {
	k, err := a.keyOf(r, c)
	if err != nil {
		return err
	}
	overlap, err := queryOverlap(r)
	if err != nil {
		return err
	}
	k, token, err := a.cfg.Catalog.RotateAPIKey(r.Context(), k.ID, overlap)
	if err != nil {
		return err
	}
	a.changed(r, c, "apikey.rotate", k.Tenant, k.ID)
	return writeJSON(w, http.StatusOK, map[string]any{"api_key": k, "token": token, "note": "shown once: store it now"})
}

func (a *API) revokeAPIKey(w http.ResponseWriter, r *http.Request, c *caller) error {
	k, err := a.keyOf(r, c)
	if err != nil {
		return err
	}
	k, err = a.cfg.Catalog.RevokeAPIKey(r.Context(), k.ID)
	if err != nil {
		return err
	}
	a.changed(r, c, audit.ActionAPIKeyRevoke, k.Tenant, k.ID)
	return writeJSON(w, http.StatusOK, k)
}

func (a *API) listOperators(w http.ResponseWriter, _ *http.Request, _ *caller) error {
	return writeJSON(w, http.StatusOK, map[string]any{"items": a.cfg.Catalog.Operators()})
}

func (a *API) getOperator(w http.ResponseWriter, r *http.Request, _ *caller) error {
	o, ok := a.cfg.Catalog.GetOperator(r.PathValue("id"))
	if !ok {
		return notFoundf("no such operator")
	}
	return writeJSON(w, http.StatusOK, o)
}

// createOperator adds an operator and shows its token this once.
func (a *API) createOperator(w http.ResponseWriter, r *http.Request, c *caller) error {
	var in keyInput
	if err := readJSON(w, r, &in, false); err != nil {
		return err
	}
	if in.Scopes != nil {
		return invalidf("scopes: only api keys have them")
	}
	o, token, err := a.cfg.Catalog.CreateOperator(r.Context(), catalog.Operator{ID: in.ID, Role: in.Role, Description: in.Description, Expires: in.Expires})
	if err != nil {
		return err
	}
	a.changed(r, c, "operator.create", "", o.ID)
	return writeJSON(w, http.StatusCreated, map[string]any{"operator": o, "token": token, "note": "shown once: store it now"})
}

func (a *API) rotateOperator(w http.ResponseWriter, r *http.Request, c *caller) error {
	overlap, err := queryOverlap(r)
	if err != nil {
		return err
	}
	o, token, err := a.cfg.Catalog.RotateOperator(r.Context(), r.PathValue("id"), overlap)
	if err != nil {
		return err
	}
	a.changed(r, c, "operator.rotate", "", o.ID)
	return writeJSON(w, http.StatusOK, map[string]any{"operator": o, "token": token, "note": "shown once: store it now"})
}

func (a *API) revokeOperator(w http.ResponseWriter, r *http.Request, c *caller) error {
	o, err := a.cfg.Catalog.RevokeOperator(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	a.changed(r, c, "operator.revoke", "", o.ID)
	return writeJSON(w, http.StatusOK, o)
}
