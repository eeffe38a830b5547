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
	"slices"
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

// disabledState is the value of "disabled.<tenant>.<route>" in the endpoint
// state bucket. Only a hash of the URL is kept: a URL may carry a token.
type disabledState struct {
	URLSHA256 string    `json:"url_sha256"`
	Since     time.Time `json:"since"`
	Status    int       `json:"status"`
}

func urlHash(u string) string {
	h := sha256.Sum256([]byte(u))
	return base64.RawURLEncoding.EncodeToString(h[:])
}

func disabledKey(tenant, route string) string { return "disabled." + tenant + "." + route }
func secretsKey(tenant, route string) string  { return "secrets." + tenant + "." + route }

// endpointDisabled reports whether rt's endpoint is disabled. A marker for
// another URL (the customer changed the endpoint) does not count.
func (w *Worker) endpointDisabled(ctx context.Context, rt Route) (bool, error) {
	v, _, err := w.cfg.EndpointState.Get(ctx, disabledKey(rt.Tenant, rt.Name))
	if errors.Is(err, queue.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	var st disabledState
	if err := json.Unmarshal(v, &st); err != nil {
		return false, fmt.Errorf("forwarder: endpoint state of %s/%s: %w", rt.Tenant, rt.Name, err)
	}
	return st.URLSHA256 == urlHash(rt.Endpoint.URL), nil
}

// disableEndpoint marks rt's endpoint disabled after a 410 Gone, audits it
// and counts it.
func (w *Worker) disableEndpoint(ctx context.Context, rt Route, status int) error {
	st, _ := json.Marshal(disabledState{URLSHA256: urlHash(rt.Endpoint.URL), Since: w.cfg.Now().UTC(), Status: status})
	if _, err := w.cfg.EndpointState.Put(ctx, disabledKey(rt.Tenant, rt.Name), st); err != nil {
		return err
	}
	w.metrics.endpointDisabled.WithLabelValues(rt.Tenant, rt.Name).Inc()
	w.refreshDisabledGauge(ctx)
	w.log.Warn("forwarder: endpoint answered 410 Gone; disabled until re-enabled", "tenant", rt.Tenant, "route", rt.Name)
	return w.audit(ctx, entry.Entry{Actor: "system", Action: "endpoint.disable", Tenant: rt.Tenant, Target: rt.Name,
		Outcome: entry.OutcomeSuccess, Details: map[string]string{"status": "410"}})
}

// EnableEndpoint re-enables a route's endpoint disabled by a 410 Gone. Dead
// letters kept while it was disabled are not sent by this; replay them with
// ReplayDeadLetters. Enabling an endpoint that is not disabled is not an
// error.
func (w *Worker) EnableEndpoint(ctx context.Context, tenant, route string) error {
	if err := cmp.Or(checkTenant(tenant), checkRoute(route)); err != nil {
		return err
	}
	err := w.cfg.EndpointState.Delete(ctx, disabledKey(tenant, route))
	if err != nil && !errors.Is(err, queue.ErrNotFound) {
		return fmt.Errorf("forwarder: enable %s/%s: %w", tenant, route, err)
	}
	w.refreshDisabledGauge(ctx)
	return w.audit(ctx, entry.Entry{Actor: actorFrom(ctx), Action: "endpoint.enable", Tenant: tenant, Target: route, Outcome: entry.OutcomeSuccess})
}

// EndpointDisabled reports whether a route's endpoint is disabled.
func (w *Worker) EndpointDisabled(ctx context.Context, tenant, route string) (bool, error) {
	if err := cmp.Or(checkTenant(tenant), checkRoute(route)); err != nil {
		return false, err
	}
	rt, ok := w.cfg.Routes.Route(tenant, route)
	if !ok {
		return false, fmt.Errorf("%w: %s/%s", ErrUnknownRoute, tenant, route)
	}
	return w.endpointDisabled(ctx, rt)
}

func (w *Worker) refreshDisabledGauge(ctx context.Context) {
	keys, err := w.cfg.EndpointState.Keys(ctx, "disabled.>")
	if err == nil {
		w.metrics.disabled.Set(float64(len(keys)))
	}
}

// RotateSecret generates a new whsec_ secret for a route's endpoint, stores
// it sealed and returns it; this is the only time it is shown. Secrets
// stored before keep signing for overlap (at most MaxSecretOverlap), so
// the customer can switch over without losing webhooks; 0 ends them now.
// Expired secrets are removed.
func (w *Worker) RotateSecret(ctx context.Context, tenant, route string, overlap time.Duration) (string, error) {
	if err := cmp.Or(checkTenant(tenant), checkRoute(route)); err != nil {
		return "", err
	}
	if overlap < 0 || overlap > MaxSecretOverlap {
		return "", fmt.Errorf("%w: overlap %s out of range [0, %s]", ErrInvalidInput, overlap, MaxSecretOverlap)
	}
	if _, ok := w.cfg.Routes.Route(tenant, route); !ok {
		return "", fmt.Errorf("%w: %s/%s", ErrUnknownRoute, tenant, route)
	}
	fresh, err := GenerateSecret()
	if err != nil {
		return "", err
	}
	key := secretsKey(tenant, route)
	for range 5 {
		old, rev, err := w.storedSecrets(ctx, tenant, route)
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
		sealed, err := w.cfg.Sealer.Seal(ctx, kms.Context{Tenant: tenant, Purpose: kms.PurposeEndpointSecret, ObjectID: route}, plain)
		clear(plain)
		if err != nil {
			return "", fmt.Errorf("forwarder: seal secret: %w", err)
		}
		if rev == 0 {
			_, err = w.cfg.EndpointState.Create(ctx, key, sealed)
		} else {
			_, err = w.cfg.EndpointState.Update(ctx, key, sealed, rev)
		}
		if errors.Is(err, queue.ErrConflict) {
			continue // another instance rotated at the same time; redo on top of it
		}
		if err != nil {
			return "", fmt.Errorf("forwarder: store secret: %w", err)
		}
		if err := w.audit(ctx, entry.Entry{Actor: actorFrom(ctx), Action: "endpoint.secret_rotate", Tenant: tenant, Target: route,
			Outcome: entry.OutcomeSuccess, Details: map[string]string{"overlap": overlap.String()}}); err != nil {
			return "", err
		}
		return fresh, nil
	}
	return "", fmt.Errorf("forwarder: rotate secret of %s/%s: too many concurrent changes", tenant, route)
}

// storedSecrets returns the sealed secrets stored for a route, newest
// first, and the revision of their key (0 when there are none).
func (w *Worker) storedSecrets(ctx context.Context, tenant, route string) ([]Secret, uint64, error) {
	sealed, rev, err := w.cfg.EndpointState.Get(ctx, secretsKey(tenant, route))
	if errors.Is(err, queue.ErrNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("forwarder: read secrets: %w", err)
	}
	plain, err := w.cfg.Sealer.Open(ctx, kms.Context{Tenant: tenant, Purpose: kms.PurposeEndpointSecret, ObjectID: route}, sealed)
	if err != nil {
		return nil, 0, fmt.Errorf("forwarder: open secrets: %w", err)
	}
	defer clear(plain)
	var ss []Secret
	if err := json.Unmarshal(plain, &ss); err != nil {
		return nil, 0, fmt.Errorf("forwarder: decode secrets: %w", err)
	}
	return ss, rev, nil
}

// secretsFor returns every secret that signs for rt at now: the stored ones
// and the configured ones. A malformed configured secret is skipped and
// logged (without its value); ValidateSecret catches it at configuration.
func (w *Worker) secretsFor(ctx context.Context, rt Route, now time.Time) ([]Secret, error) {
	stored, _, err := w.storedSecrets(ctx, rt.Tenant, rt.Name)
	if err != nil {
		return nil, err
	}
	all := slices.Concat(stored, rt.Endpoint.Secrets)
	return slices.DeleteFunc(all, func(s Secret) bool {
		if err := ValidateSecret(s.Value); err != nil {
			w.log.Error("forwarder: endpoint secret is malformed; skipped", "tenant", rt.Tenant, "route", rt.Name, "err", err)
			return true
		}
		return !s.NotAfter.IsZero() && !now.Before(s.NotAfter)
	}), nil
}
