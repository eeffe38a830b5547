package catalog

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sealpost/sealpost/ingress"
	"github.com/sealpost/sealpost/ingress/httpin"
	"github.com/sealpost/sealpost/queue"
)

// APIKey is an API key as the API shows it: never its token or hash.
type APIKey struct {
	ID          string    `json:"id"`
	Tenant      string    `json:"tenant"`
	Scopes      []string  `json:"scopes"`
	Description string    `json:"description,omitempty"`
	Expires     time.Time `json:"expires_at,omitzero"`
	Revoked     time.Time `json:"revoked_at,omitzero"`
	Created     time.Time `json:"created_at,omitzero"`
	Rotated     time.Time `json:"rotated_at,omitzero"`
	// PreviousUntil is when the token replaced by the last rotation stops
	// working.
	PreviousUntil time.Time `json:"previous_valid_until,omitzero"`
	LastUsed      time.Time `json:"last_used_at,omitzero"`
	Declared      bool      `json:"declared"`
}

// Operator is a person or tool with access to the admin API.
type Operator struct {
	ID          string    `json:"id"`
	Role        string    `json:"role"`
	Description string    `json:"description,omitempty"`
	Expires     time.Time `json:"expires_at,omitzero"`
	Revoked     time.Time `json:"revoked_at,omitzero"`
	Created     time.Time `json:"created_at,omitzero"`
	Rotated     time.Time `json:"rotated_at,omitzero"`
	// PreviousUntil is when the token replaced by the last rotation stops
	// working.
	PreviousUntil time.Time `json:"previous_valid_until,omitzero"`
}

// Operator roles, each allowing what the one before it does.
const (
	RoleViewer   = "viewer"   // reads everything but secrets and tenant data
	RoleOperator = "operator" // and runs operations: rotation, replay, redelivery, backups
	RoleAdmin    = "admin"    // and changes tenants, routes, endpoints, keys and operators
)

// RoleRank orders roles; 0 for an unknown one.
func RoleRank(role string) int {
	switch role {
	case RoleViewer:
		return 1
	case RoleOperator:
		return 2
	case RoleAdmin:
		return 3
	}
	return 0
}

// MaxOverlap bounds a rotation's overlap.
const MaxOverlap = 30 * 24 * time.Hour

// ErrBadToken: the token is unknown, wrong, expired or revoked.
var ErrBadToken = errors.New("catalog: invalid token")

func (c *Catalog) checkDeclared() error {
	for _, k := range c.cfg.Declared.APIKeys {
		if err := httpin.CheckScopes(k.Scopes); k.Scopes != nil && err != nil {
			return fmt.Errorf("catalog: declared api key %s: %w", k.ID, err)
		}
	}
	return nil
}

// APIKeys lists a tenant's API keys (every tenant's for ""), by id.
func (c *Catalog) APIKeys(tenant string) []APIKey {
	s := c.current()
	var out []APIKey
	for _, r := range s.apiKeys {
		if tenant == "" || r.Tenant == tenant {
			out = append(out, c.view(s, r))
		}
	}
	slices.SortFunc(out, func(a, b APIKey) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// GetAPIKey returns one API key.
func (c *Catalog) GetAPIKey(id string) (APIKey, bool) {
	s := c.current()
	r, ok := s.apiKeys[id]
	if !ok {
		return APIKey{}, false
	}
	return c.view(s, r), true
}

func (c *Catalog) view(s *snapshot, r *keyRecord) APIKey {
	k := r.APIKey
	k.Scopes = slices.Clone(k.Scopes)
	k.LastUsed = s.used[k.ID]
	if v, ok := c.used.Load(k.ID); ok {
		if t := time.Unix(v.(*atomic.Int64).Load(), 0).UTC(); t.After(k.LastUsed) {
			k.LastUsed = t
		}
	}
	return k
}

// CreateAPIKey makes a key for a tenant and returns it with its token,
// which is shown this once: only its SHA-256 is kept. An empty id gets a
// fresh one.
func (c *Catalog) CreateAPIKey(ctx context.Context, k APIKey) (APIKey, string, error) {
	if k.ID == "" {
		k.ID = "key-" + strings.ReplaceAll(strings.TrimPrefix(NewEndpointID(), "ep_"), "_", "")
	}
	if err := httpin.CheckScopes(k.Scopes); err != nil {
		return APIKey{}, "", invalid("scopes: %v", err)
	}
	if k.Scopes == nil {
		return APIKey{}, "", invalid("scopes: at least one is required")
	}
	if err := checkCommon(k.Description, nil, ""); err != nil {
		return APIKey{}, "", err
	}
	s := c.current()
	if _, ok := s.tenants[k.Tenant]; !ok {
		return APIKey{}, "", ErrNotFound
	}
	if old, ok := s.apiKeys[k.ID]; ok {
		if old.Declared {
			return APIKey{}, "", ErrReadOnly
		}
		return APIKey{}, "", ErrExists
	}
	token, sum, err := httpin.NewToken(k.ID)
	if err != nil {
		return APIKey{}, "", invalid("%v", err)
	}
	now := c.cfg.Now().UTC()
	if !k.Expires.IsZero() && !k.Expires.After(now) {
		return APIKey{}, "", invalid("expires_at: must be in the future")
	}
	k.Created, k.Declared, k.Revoked, k.Rotated, k.PreviousUntil, k.LastUsed = now, false, time.Time{}, time.Time{}, time.Time{}, time.Time{}
	if err := c.create(ctx, apiKeyKey(k.ID), keyRecord{APIKey: k, SHA256: sum}); err != nil {
		return APIKey{}, "", err
	}
	return k, token, nil
}

// RotateAPIKey gives a key a new token (shown once); the old one keeps
// working for overlap (at most 30 days; 0 ends it now).
func (c *Catalog) RotateAPIKey(ctx context.Context, id string, overlap time.Duration) (APIKey, string, error) {
	if r, ok := c.current().apiKeys[id]; ok && r.Declared {
		return APIKey{}, "", ErrReadOnly
	}
	if overlap < 0 || overlap > MaxOverlap {
		return APIKey{}, "", invalid("overlap: 0 to %s", MaxOverlap)
	}
	token, sum, err := httpin.NewToken(id)
	if err != nil {
		return APIKey{}, "", invalid("%v", err)
	}
	r, err := update(ctx, c, apiKeyKey(id), func(r *keyRecord) error {
		if !r.Revoked.IsZero() {
			return invalid("the key is revoked")
		}
		now := c.cfg.Now().UTC()
		r.Previous = rotate(r.Previous, r.SHA256, now, overlap)
		r.SHA256, r.Rotated, r.PreviousUntil = sum, now, now.Add(overlap)
		return nil
	})
	if err != nil {
		return APIKey{}, "", err
	}
	return c.view(c.current(), r), token, nil
}

// rotate keeps the previous hashes still valid at now, adds cur until
// now+overlap, and keeps at most two.
func rotate(prev []prevHash, cur string, now time.Time, overlap time.Duration) []prevHash {
	out := []prevHash{{SHA256: cur, NotAfter: now.Add(overlap)}}
	for _, p := range prev {
		if p.NotAfter.After(now) && len(out) < 2 {
			p.NotAfter = minTime(p.NotAfter, now.Add(overlap))
			out = append(out, p)
		}
	}
	return out
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// RevokeAPIKey ends a key at once; it stays listed as revoked.
func (c *Catalog) RevokeAPIKey(ctx context.Context, id string) (APIKey, error) {
	if r, ok := c.current().apiKeys[id]; ok && r.Declared {
		return APIKey{}, ErrReadOnly
	}
	r, err := update(ctx, c, apiKeyKey(id), func(r *keyRecord) error {
		if r.Revoked.IsZero() {
			r.Revoked = c.cfg.Now().UTC()
		}
		r.Previous = nil
		return nil
	})
	if err != nil {
		return APIKey{}, err
	}
	return c.view(c.current(), r), nil
}

// noteUsed remembers that key id was used now.
func (c *Catalog) noteUsed(id string) {
	now := c.cfg.Now().Unix()
	v, ok := c.used.Load(id)
	if !ok {
		v, _ = c.used.LoadOrStore(id, new(atomic.Int64))
	}
	a := v.(*atomic.Int64)
	if a.Load() < now {
		a.Store(now)
	}
}

// runUsed writes the last-used times every UsedEvery, for the keys used
// since the last write, with a compare-and-set that never moves a time
// back (another instance may have written a later one).
func (c *Catalog) runUsed(ctx context.Context) {
	t := time.NewTicker(c.cfg.UsedEvery)
	defer t.Stop()
	written := map[string]int64{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c.used.Range(func(k, v any) bool {
			id, at := k.(string), v.(*atomic.Int64).Load()
			if written[id] >= at {
				return true
			}
			if err := c.writeUsed(ctx, id, time.Unix(at, 0).UTC()); err != nil {
				c.log.Warn("catalog: writing an api key's last use failed", "id", id, "err", err)
				return true
			}
			written[id] = at
			return true
		})
	}
}

func (c *Catalog) writeUsed(ctx context.Context, id string, at time.Time) error {
	val := []byte(at.Format(time.RFC3339))
	for range maxCASRounds {
		old, rev, err := c.kv.Get(ctx, usedKey(id))
		switch {
		case errors.Is(err, queue.ErrNotFound):
			_, err = c.kv.Create(ctx, usedKey(id), val)
		case err != nil:
			return err
		default:
			if prev, perr := time.Parse(time.RFC3339, string(old)); perr == nil && !prev.Before(at) {
				return nil
			}
			_, err = c.kv.Update(ctx, usedKey(id), val, rev)
		}
		if !errors.Is(err, queue.ErrConflict) {
			return err
		}
	}
	return ErrBusy
}

// Operators lists the stored operators, by id.
func (c *Catalog) Operators() []Operator {
	s := c.current()
	out := make([]Operator, 0, len(s.operators))
	for _, r := range s.operators {
		out = append(out, r.Operator)
	}
	slices.SortFunc(out, func(a, b Operator) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// GetOperator returns one operator.
func (c *Catalog) GetOperator(id string) (Operator, bool) {
	r, ok := c.current().operators[id]
	if !ok {
		return Operator{}, false
	}
	return r.Operator, true
}

// CreateOperator adds an operator and returns its token, shown this once.
func (c *Catalog) CreateOperator(ctx context.Context, o Operator) (Operator, string, error) {
	if !ingress.ValidName(o.ID) || o.ID == "admin" {
		return Operator{}, "", invalid("id: %s, not \"admin\"", ingress.NameRule)
	}
	if RoleRank(o.Role) == 0 {
		return Operator{}, "", invalid("role: viewer, operator or admin")
	}
	if err := checkCommon(o.Description, nil, ""); err != nil {
		return Operator{}, "", err
	}
	now := c.cfg.Now().UTC()
	if !o.Expires.IsZero() && !o.Expires.After(now) {
		return Operator{}, "", invalid("expires_at: must be in the future")
	}
	token, sum, err := httpin.NewToken(o.ID)
	if err != nil {
		return Operator{}, "", invalid("%v", err)
	}
	o.Created, o.Revoked, o.Rotated, o.PreviousUntil = now, time.Time{}, time.Time{}, time.Time{}
	if err := c.create(ctx, operatorKey(o.ID), operatorRecord{Operator: o, SHA256: sum}); err != nil {
		return Operator{}, "", err
	}
	return o, token, nil
}

// RotateOperator gives an operator a new token (shown once); the old one
// keeps working for overlap.
func (c *Catalog) RotateOperator(ctx context.Context, id string, overlap time.Duration) (Operator, string, error) {
	if overlap < 0 || overlap > MaxOverlap {
		return Operator{}, "", invalid("overlap: 0 to %s", MaxOverlap)
	}
	token, sum, err := httpin.NewToken(id)
	if err != nil {
		return Operator{}, "", invalid("%v", err)
	}
	r, err := update(ctx, c, operatorKey(id), func(r *operatorRecord) error {
		if !r.Revoked.IsZero() {
			return invalid("the operator is revoked")
		}
		now := c.cfg.Now().UTC()
		r.Previous = rotate(r.Previous, r.SHA256, now, overlap)
		r.SHA256, r.Rotated, r.PreviousUntil = sum, now, now.Add(overlap)
		return nil
	})
	if err != nil {
		return Operator{}, "", err
	}
	return r.Operator, token, nil
}

// RevokeOperator ends an operator's access at once.
func (c *Catalog) RevokeOperator(ctx context.Context, id string) (Operator, error) {
	r, err := update(ctx, c, operatorKey(id), func(r *operatorRecord) error {
		if r.Revoked.IsZero() {
			r.Revoked = c.cfg.Now().UTC()
		}
		r.Previous = nil
		return nil
	})
	if err != nil {
		return Operator{}, err
	}
	return r.Operator, nil
}

// AuthenticateOperator checks an operator's token ("sp_<id>_<secret>"):
// constant-time, and an unknown id costs the same hash.
func (c *Catalog) AuthenticateOperator(token string) (Operator, error) {
	id, _, ok := httpin.ParseToken(token)
	sum := sha256.Sum256([]byte(token))
	r := c.current().operators[id]
	if !ok || r == nil {
		subtle.ConstantTimeCompare(sum[:], sum[:])
		return Operator{}, ErrBadToken
	}
	now := c.cfg.Now()
	cur, _ := decodeSum(r.SHA256)
	match := subtle.ConstantTimeCompare(sum[:], cur[:]) == 1
	for _, p := range r.Previous {
		ps, _ := decodeSum(p.SHA256)
		if subtle.ConstantTimeCompare(sum[:], ps[:]) == 1 && now.Before(p.NotAfter) {
			match = true
		}
	}
	if !match || !r.Revoked.IsZero() || (!r.Expires.IsZero() && !now.Before(r.Expires)) {
		return Operator{}, ErrBadToken
	}
	return r.Operator, nil
}
