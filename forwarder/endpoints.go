package forwarder

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/sealpost/sealpost/audit/entry"
	"github.com/sealpost/sealpost/keyring/kms"
	"github.com/sealpost/sealpost/queue"
)

const (
	secretPrefix = "whsec_"
	secretBytes  = 24
	// maxSecrets bounds the stored secrets of one endpoint.
	maxSecrets = 4
	// MaxSecretOverlap is the longest overlap window of a rotation.
	MaxSecretOverlap = 30 * 24 * time.Hour
)

// GenerateSecret returns a new webhook secret: "whsec_" and the base64 of 24
// random bytes.
func GenerateSecret() (string, error) {
	b := make([]byte, secretBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("forwarder: random: %w", err)
	}
	defer clear(b)
	return secretPrefix + base64.StdEncoding.EncodeToString(b), nil
}

// CheckEndpointURL checks a webhook URL with the worker's rules: https (or
// http with allowHTTP), no user info or fragment, and an address literal
// in a range the SSRF guard refuses only when allow lists it. Names are
// checked again at every connection.
func CheckEndpointURL(raw string, allowHTTP bool, allow []netip.Prefix) error {
	if raw == "" {
		return errors.New("required")
	}
	err := ValidateEndpoint(raw, allowHTTP)
	if errors.Is(err, ErrBlockedAddress) {
		u, _ := url.Parse(raw)
		host, literal := u.Hostname(), u.Hostname()
		if IsLocalhost(host) {
			literal = "127.0.0.1"
		}
		if a, perr := netip.ParseAddr(literal); perr == nil && !Blocked(a, allow) {
			return nil
		}
		return fmt.Errorf("%s is in a range the SSRF guard refuses (add it to forward.allow_networks for development only)", host)
	}
	if err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), "forwarder: "))
	}
	return nil
}

// Disabled endpoints: the reasons of a disabled marker.
const (
	// DisabledGone: the endpoint answered 410 Gone.
	DisabledGone = "gone"
	// DisabledManual: an operator or the tenant disabled it.
	DisabledManual = "manual"
)

// disabledState is the value of a disabled marker in the endpoint state
// bucket. Only a hash of the URL is kept: a URL may carry a token.
type disabledState struct {
	URLSHA256 string    `json:"url_sha256"`
	Since     time.Time `json:"since"`
	Status    int       `json:"status,omitempty"`
	Reason    string    `json:"reason,omitempty"`
}

func urlHash(u string) string {
	h := sha256.Sum256([]byte(u))
	return base64.RawURLEncoding.EncodeToString(h[:])
}

// stateName is the part of an endpoint's state keys after the tenant: the
// route alone for DefaultEndpoint (the keys of single-endpoint routes of
// earlier versions), else route and endpoint.
func stateName(route, endpoint string) string {
	if endpoint == "" || endpoint == DefaultEndpoint {
		return route
	}
	return route + "." + endpoint
}

func disabledKey(tenant, route, endpoint string) string {
	return "disabled." + tenant + "." + stateName(route, endpoint)
}

func secretsKey(tenant, route, endpoint string) string {
	return "secrets." + tenant + "." + stateName(route, endpoint)
}

func secretContext(tenant, route, endpoint string) kms.Context {
	return kms.Context{Tenant: tenant, Purpose: kms.PurposeEndpointSecret, ObjectID: stateName(route, endpoint)}
}

// EndpointStatus is an endpoint's delivery state.
type EndpointStatus struct {
	// Disabled: nothing is sent until it is enabled.
	Disabled bool `json:"disabled"`
	// Reason is "gone" (it answered 410) or "manual".
	Reason string    `json:"reason,omitempty"`
	Since  time.Time `json:"since,omitzero"`
}

// endpointStatus reads an endpoint's disabled marker (from the watched
// cache once Watch runs). A marker for another URL (the endpoint was
// pointed elsewhere since) does not count.
func (w *Worker) endpointStatus(ctx context.Context, tenant, route string, ep Endpoint) (EndpointStatus, error) {
	key := disabledKey(tenant, route, ep.id())
	v, ok, err := w.stateValue(ctx, key)
	if err != nil || !ok {
		return EndpointStatus{}, err
	}
	var st disabledState
	if err := json.Unmarshal(v, &st); err != nil {
		return EndpointStatus{}, fmt.Errorf("forwarder: endpoint state of %s: %w", key, err)
	}
	if st.URLSHA256 != urlHash(ep.URL) {
		return EndpointStatus{}, nil
	}
	if st.Reason == "" {
		st.Reason = DisabledGone
	}
	return EndpointStatus{Disabled: true, Reason: st.Reason, Since: st.Since}, nil
}

// disableEndpoint stores a disabled marker, audits it, counts it and sends
// endpoint.disabled.
func (w *Worker) disableEndpoint(ctx context.Context, tenant, route string, ep Endpoint, status int, reason string) error {
	st, _ := json.Marshal(disabledState{URLSHA256: urlHash(ep.URL), Since: w.cfg.Now().UTC(), Status: status, Reason: reason})
	rev, err := w.cfg.EndpointState.Put(ctx, disabledKey(tenant, route, ep.id()), st)
	if err != nil {
		return err
	}
	w.stateChanged(disabledKey(tenant, route, ep.id()), st, rev)
	w.metrics.endpointDisabled.WithLabelValues(tenant, route).Inc()
	w.refreshDisabledGauge(ctx)
	details := map[string]string{"endpoint": ep.id(), "reason": reason}
	actor := "system"
	if reason == DisabledGone {
		details["status"] = "410"
		w.log.Warn("forwarder: endpoint answered 410 Gone; disabled until re-enabled", "tenant", tenant, "route", route, "endpoint", ep.id())
	} else {
		actor = actorFrom(ctx)
	}
	w.notify(ctx, opEvent{tenant, EventEndpointDisabled, map[string]any{"route": route, "endpoint": ep.id(), "reason": reason}})
	return w.audit(ctx, entry.Entry{Actor: actor, Action: "endpoint.disable", Tenant: tenant, Target: route, Outcome: entry.OutcomeSuccess, Details: details})
}

// lookupEndpoint finds a configured endpoint.
func (w *Worker) lookupEndpoint(tenant, route, endpoint string) (Endpoint, error) {
	if err := cmp.Or(checkTenant(tenant), checkRoute(route), checkEndpoint(endpoint)); err != nil {
		return Endpoint{}, err
	}
	rt, ok := w.cfg.Routes.Route(tenant, route)
	if !ok {
		return Endpoint{}, fmt.Errorf("%w: %s/%s", ErrUnknownRoute, tenant, route)
	}
	ep, ok := rt.endpoint(endpoint)
	if !ok {
		return Endpoint{}, fmt.Errorf("%w: endpoint %s of %s/%s", ErrNotFound, endpoint, tenant, route)
	}
	return ep, nil
}

// EnableEndpoint re-enables an endpoint disabled by a 410 Gone or by hand
// and sends endpoint.enabled. Dead letters kept while it was disabled are
// not sent by this; replay them with ReplayDeadLetters. Enabling an
// endpoint that is not disabled is not an error.
func (w *Worker) EnableEndpoint(ctx context.Context, tenant, route, endpoint string) error {
	if err := cmp.Or(checkTenant(tenant), checkRoute(route), checkEndpoint(endpoint)); err != nil {
		return err
	}
	key := disabledKey(tenant, route, endpoint)
	err := w.cfg.EndpointState.Delete(ctx, key)
	if err != nil && !errors.Is(err, queue.ErrNotFound) {
		return fmt.Errorf("forwarder: enable %s/%s/%s: %w", tenant, route, endpoint, err)
	}
	w.stateChanged(key, nil, 0)
	w.refreshDisabledGauge(ctx)
	w.notify(ctx, opEvent{tenant, EventEndpointEnabled, map[string]any{"route": route, "endpoint": endpoint}})
	return w.audit(ctx, entry.Entry{Actor: actorFrom(ctx), Action: "endpoint.enable", Tenant: tenant, Target: route,
		Outcome: entry.OutcomeSuccess, Details: map[string]string{"endpoint": endpoint}})
}

// DisableEndpoint stops deliveries to an endpoint until EnableEndpoint;
// its messages wait (they are retried on their schedule and dead-lettered
// at its end).
func (w *Worker) DisableEndpoint(ctx context.Context, tenant, route, endpoint string) error {
	ep, err := w.lookupEndpoint(tenant, route, endpoint)
	if err != nil {
		return err
	}
	return w.disableEndpoint(ctx, tenant, route, ep, 0, DisabledManual)
}

// EndpointDisabled reports whether an endpoint is disabled.
func (w *Worker) EndpointDisabled(ctx context.Context, tenant, route, endpoint string) (bool, error) {
	st, err := w.EndpointState(ctx, tenant, route, endpoint)
	return st.Disabled, err
}

// EndpointState returns whether an endpoint is disabled.
func (w *Worker) EndpointState(ctx context.Context, tenant, route, endpoint string) (EndpointStatus, error) {
	ep, err := w.lookupEndpoint(tenant, route, endpoint)
	if err != nil {
		return EndpointStatus{}, err
	}
	return w.endpointStatus(ctx, tenant, route, ep)
}

func (w *Worker) refreshDisabledGauge(ctx context.Context) {
	keys, err := w.cfg.EndpointState.Keys(ctx, "disabled.>")
	if err == nil {
		w.metrics.disabled.Set(float64(len(keys)))
	}
}

// RotateSecret generates a new whsec_ secret for an endpoint, stores it
// sealed and returns it; this is the only time it is shown. Secrets
// stored before keep signing for overlap (at most MaxSecretOverlap), so
// the customer can switch over without losing webhooks; 0 ends them now.
// Expired secrets are removed.
func (w *Worker) RotateSecret(ctx context.Context, tenant, route, endpoint string, overlap time.Duration) (string, error) {
	if overlap < 0 || overlap > MaxSecretOverlap {
		return "", fmt.Errorf("%w: overlap %s out of range [0, %s]", ErrInvalidInput, overlap, MaxSecretOverlap)
	}
	if route != opRoute {
		if _, err := w.lookupEndpoint(tenant, route, endpoint); err != nil {
			return "", err
		}
	}
	fresh, err := GenerateSecret()
	if err != nil {
		return "", err
	}
	key := secretsKey(tenant, route, endpoint)
	for range 5 {
		old, rev, err := w.storedSecrets(ctx, tenant, route, endpoint)
		if err != nil {
			return "", err
		}
		now := w.cfg.Now().UTC()
		end := now.Add(overlap)
		next := []Secret{{Value: fresh}}
		for _, s := range old {
			if s.NotAfter.IsZero() || s.NotAfter.After(end) {
				s.NotAfter = end
			}
			if s.NotAfter.After(now) && len(next) < maxSecrets {
				next = append(next, s)
			}
		}
		plain, _ := json.Marshal(next)
		sealed, err := w.cfg.Sealer.Seal(ctx, secretContext(tenant, route, endpoint), plain)
		clear(plain)
		if err != nil {
			return "", fmt.Errorf("forwarder: seal secret: %w", err)
		}
		if rev == 0 {
			rev, err = w.cfg.EndpointState.Create(ctx, key, sealed)
		} else {
			rev, err = w.cfg.EndpointState.Update(ctx, key, sealed, rev)
		}
		if errors.Is(err, queue.ErrConflict) {
			continue // another instance rotated at the same time; redo on top of it
		}
		if err != nil {
			return "", fmt.Errorf("forwarder: store secret: %w", err)
		}
		w.stateChanged(key, sealed, rev)
		if err := w.audit(ctx, entry.Entry{Actor: actorFrom(ctx), Action: "endpoint.secret_rotate", Tenant: tenant, Target: route,
			Outcome: entry.OutcomeSuccess, Details: map[string]string{"endpoint": endpoint, "overlap": overlap.String()}}); err != nil {
			return "", err
		}
		return fresh, nil
	}
	return "", fmt.Errorf("forwarder: rotate secret of %s/%s/%s: too many concurrent changes", tenant, route, endpoint)
}

// DeleteSecrets removes an endpoint's stored secrets (the endpoint was
// deleted).
func (w *Worker) DeleteSecrets(ctx context.Context, tenant, route, endpoint string) error {
	if err := cmp.Or(checkTenant(tenant), checkRoute(route), checkEndpoint(endpoint)); err != nil {
		return err
	}
	for _, key := range []string{secretsKey(tenant, route, endpoint), disabledKey(tenant, route, endpoint)} {
		if err := w.cfg.EndpointState.Delete(ctx, key); err != nil && !errors.Is(err, queue.ErrNotFound) {
			return err
		}
		w.stateChanged(key, nil, 0)
	}
	return nil
}

// storedSecrets returns the sealed secrets stored for an endpoint, newest
// first, and the revision of their key (0 when there are none).
func (w *Worker) storedSecrets(ctx context.Context, tenant, route, endpoint string) ([]Secret, uint64, error) {
	key := secretsKey(tenant, route, endpoint)
	if c := w.state.Load(); c != nil {
		sealed, rev, ok := c.get(key)
		if !ok {
			return nil, 0, nil
		}
		if ss, ok := c.opened(key, rev); ok {
			return ss, rev, nil
		}
		ss, err := w.openSecrets(ctx, tenant, route, endpoint, sealed)
		if err != nil {
			return nil, 0, err
		}
		c.keepOpened(key, rev, ss)
		return ss, rev, nil
	}
	sealed, rev, err := w.cfg.EndpointState.Get(ctx, key)
	if errors.Is(err, queue.ErrNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("forwarder: read secrets: %w", err)
	}
	ss, err := w.openSecrets(ctx, tenant, route, endpoint, sealed)
	if err != nil {
		return nil, 0, err
	}
	return ss, rev, nil
}

func (w *Worker) openSecrets(ctx context.Context, tenant, route, endpoint string, sealed []byte) ([]Secret, error) {
	plain, err := w.cfg.Sealer.Open(ctx, secretContext(tenant, route, endpoint), sealed)
	if err != nil {
		return nil, fmt.Errorf("forwarder: open secrets: %w", err)
	}
	defer clear(plain)
	var ss []Secret
	if err := json.Unmarshal(plain, &ss); err != nil {
		return nil, fmt.Errorf("forwarder: decode secrets: %w", err)
	}
	return ss, nil
}

// secretsFor returns every secret that signs for an endpoint at now: the
// stored ones and the configured ones. A malformed configured secret is
// skipped and logged (without its value).
func (w *Worker) secretsFor(ctx context.Context, tenant, route string, ep Endpoint, now time.Time) ([]Secret, error) {
	stored, _, err := w.storedSecrets(ctx, tenant, route, ep.id())
	if err != nil {
		return nil, err
	}
	all := slices.Concat(stored, ep.Secrets)
	return slices.DeleteFunc(all, func(s Secret) bool {
		if err := ValidateSecret(s.Value); err != nil {
			w.log.Error("forwarder: endpoint secret is malformed; skipped", "tenant", tenant, "route", route, "endpoint", ep.id(), "err", err)
			return true
		}
		return !s.NotAfter.IsZero() && !now.Before(s.NotAfter)
	}), nil
}
