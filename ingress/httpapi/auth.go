package httpapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"slices"
	"strings"

	"github.com/sealpost/sealpost/audit"
	"github.com/sealpost/sealpost/forwarder"
	"github.com/sealpost/sealpost/ingress/catalog"
	"github.com/sealpost/sealpost/ingress/httpin"
)

// caller is who made a request.
type caller struct {
	// actor names the caller in audit entries: "apikey:<id>",
	// "operator:<id>", "sso:<subject>", or "admin" (the bootstrap token).
	actor string
	// key and tenant: an API key and its tenant.
	key    *httpin.APIKey
	tenant string
	// role: an operator's.
	role string
	ctx  context.Context
}

// reaches reports whether the caller may touch route's data: operators
// reach every route, a key the routes its scopes reach.
func (c *caller) reaches(route string) bool { return c.key == nil || c.key.ReachesRoute(route) }

// maxTokenLen bounds the bearer tokens looked at: an API key or operator
// token is 100 bytes, an identity provider's token a few kilobytes.
const maxTokenLen = 8 << 10

func bearer(r *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" || len(token) > maxTokenLen {
		return "", false
	}
	return token, true
}

// authKey authenticates an API key holding one of scopes (any key when
// none are listed).
func (a *API) authKey(r *http.Request, scopes []string) (*caller, error) {
	key, err := a.cfg.Catalog.Authenticate(r)
	e := audit.Entry{Actor: "anonymous", Action: audit.ActionAuthFailure, Outcome: audit.OutcomeDenied, Target: r.Pattern,
		RequestID: r.Header.Get("X-Request-Id"), Details: map[string]string{"remote_addr": r.RemoteAddr}}
	if err == nil {
		e.Actor, e.Action, e.Outcome, e.Tenant = "apikey:"+key.ID, audit.ActionAuthSuccess, audit.OutcomeSuccess, key.Tenant
	}
	a.appendAudit(r.Context(), e)
	if err != nil {
		return nil, &apiError{errUnauthorized, err.Error()}
	}
	c := &caller{actor: "apikey:" + key.ID, key: key, tenant: key.Tenant}
	NoteCaller(r, c.actor, c.tenant)
	if len(scopes) > 0 && !slices.ContainsFunc(scopes, key.Has) {
		return nil, forbiddenf("the api key lacks the scope " + strings.Join(scopes, " or "))
	}
	ctx := audit.WithTenant(r.Context(), key.Tenant)
	c.ctx = forwarder.WithActor(ctx, c.actor)
	return c, nil
}

// authOperator authenticates an operator of at least role: the bootstrap
// admin token, an operator's token, or an identity provider's token.
func (a *API) authOperator(r *http.Request, role string) (*caller, error) {
	c, err := a.operator(r)
	e := audit.Entry{Actor: "anonymous", Action: audit.ActionAuthFailure, Outcome: audit.OutcomeDenied, Target: r.Pattern,
		RequestID: r.Header.Get("X-Request-Id"), Details: map[string]string{"remote_addr": r.RemoteAddr}}
	if err == nil {
		e.Actor, e.Action, e.Outcome = c.actor, audit.ActionAuthSuccess, audit.OutcomeSuccess
		e.Details["role"] = c.role
	}
	a.appendAudit(r.Context(), e)
	if err != nil {
		return nil, err
	}
	NoteCaller(r, c.actor, "")
	if catalog.RoleRank(c.role) < catalog.RoleRank(role) {
		return nil, forbiddenf("this needs the role " + role + "; the caller has " + c.role)
	}
	c.ctx = forwarder.WithActor(r.Context(), c.actor)
	return c, nil
}

func (a *API) operator(r *http.Request) (*caller, error) {
	token, ok := bearer(r)
	if !ok {
		if !a.hasBoot && a.sso == nil && len(a.cfg.Catalog.Operators()) == 0 {
			return nil, &apiError{errUnauthorized, "the admin API is disabled: set admin.token_sha256"}
		}
		return nil, &apiError{errUnauthorized, "missing bearer token"}
	}
	if _, _, ok := httpin.ParseToken(token); ok {
		sum := sha256.Sum256([]byte(token))
		if a.hasBoot && subtle.ConstantTimeCompare(sum[:], a.admin[:]) == 1 {
			return &caller{actor: "admin", role: catalog.RoleAdmin}, nil
		}
		op, err := a.cfg.Catalog.AuthenticateOperator(token)
		if err != nil {
			return nil, &apiError{errUnauthorized, "invalid admin token"}
		}
		return &caller{actor: "operator:" + op.ID, role: op.Role}, nil
	}
	if a.sso != nil && strings.Count(token, ".") == 2 {
		id, err := a.sso.verify(r.Context(), token)
		if err != nil {
			return nil, &apiError{errUnauthorized, "identity token refused: " + err.Error()}
		}
		return &caller{actor: "sso:" + id.subject, role: id.role}, nil
	}
	return nil, &apiError{errUnauthorized, "invalid admin token"}
}

func decodeHex32(s string) ([32]byte, bool) {
	var out [32]byte
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 {
		return out, false
	}
	copy(out[:], b)
	return out, true
}
