package catalog

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/sealpost/sealpost/queue"
)

// Changes are compare-and-set writes on one key each: two instances
// changing one object at once cannot lose either change (the loser reads
// the object again and applies its change on top).

const maxCASRounds = 5

// create stores v under key unless the key exists.
func (c *Catalog) create(ctx context.Context, key string, v any) error {
	val, err := json.Marshal(v)
	if err != nil {
		return err
	}
	rev, err := c.kv.Create(ctx, key, val)
	if errors.Is(err, queue.ErrConflict) {
		return ErrExists
	}
	if err != nil {
		return fmt.Errorf("catalog: store: %w", err)
	}
	c.apply(key, val, rev)
	return nil
}

// update reads key into a fresh value from newV, lets change modify it and
// writes it back with a compare-and-set, again on a conflict.
func update[T any](ctx context.Context, c *Catalog, key string, change func(*T) error) (*T, error) {
	for range maxCASRounds {
		raw, rev, err := c.kv.Get(ctx, key)
		if errors.Is(err, queue.ErrNotFound) {
			return nil, ErrNotFound
		}
		if err != nil {
			return nil, fmt.Errorf("catalog: read: %w", err)
		}
		v := new(T)
		if err := json.Unmarshal(raw, v); err != nil {
			return nil, fmt.Errorf("catalog: stored %s: %w", key, err)
		}
		if err := change(v); err != nil {
			return nil, err
		}
		val, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		nrev, err := c.kv.Update(ctx, key, val, rev)
		if errors.Is(err, queue.ErrConflict) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("catalog: store: %w", err)
		}
		c.apply(key, val, nrev)
		return v, nil
	}
	return nil, ErrBusy
}

// remove deletes keys; missing ones are not an error.
func (c *Catalog) remove(ctx context.Context, keys ...string) error {
	for _, k := range keys {
		if err := c.kv.Delete(ctx, k); err != nil && !errors.Is(err, queue.ErrNotFound) {
			return fmt.Errorf("catalog: delete: %w", err)
		}
		c.apply(k, nil, 0)
	}
	return nil
}

// CreateTenant adds a tenant.
func (c *Catalog) CreateTenant(ctx context.Context, t Tenant) (Tenant, error) {
	if err := t.Validate(); err != nil {
		return Tenant{}, err
	}
	if old, ok := c.current().tenants[t.Name]; ok {
		if old.Declared {
			return Tenant{}, ErrReadOnly
		}
		return Tenant{}, ErrExists
	}
	now := c.cfg.Now().UTC()
	t.Declared, t.Created, t.Updated = false, now, now
	t.Metadata = cloneMeta(t.Metadata)
	return t, c.create(ctx, tenantKey(t.Name), t)
}

// UpdateTenant changes a stored tenant's description, metadata or
// retention.
func (c *Catalog) UpdateTenant(ctx context.Context, name string, change func(*Tenant) error) (Tenant, error) {
	if t, ok := c.current().tenants[name]; ok && t.Declared {
		return Tenant{}, ErrReadOnly
	}
	t, err := update(ctx, c, tenantKey(name), func(t *Tenant) error {
		if err := change(t); err != nil {
			return err
		}
		t.Name, t.Updated = name, c.cfg.Now().UTC()
		return t.Validate()
	})
	if err != nil {
		return Tenant{}, err
	}
	return *t, nil
}

// DeleteTenant removes a stored tenant with its routes, endpoints,
// operational webhook and API keys. (Its data is deleted separately.)
func (c *Catalog) DeleteTenant(ctx context.Context, name string) error {
	s := c.current()
	t, ok := s.tenants[name]
	switch {
	case !ok:
		return ErrNotFound
	case t.Declared:
		return ErrReadOnly
	}
	var keys []string
	for _, f := range []string{routePrefix + name + ".>", endpointPrefix + name + ".>", opWebhookKey(name)} {
		ks, err := c.kv.Keys(ctx, f)
		if err != nil {
			return fmt.Errorf("catalog: list: %w", err)
		}
		keys = append(keys, ks...)
	}
	for id, k := range s.apiKeys {
		if k.Tenant == name && !k.Declared {
			keys = append(keys, apiKeyKey(id), usedKey(id))
		}
	}
	return c.remove(ctx, append(keys, tenantKey(name))...)
}

// CreateRoute adds a route to a tenant.
func (c *Catalog) CreateRoute(ctx context.Context, r Route) (Route, error) {
	c.routeWrites.Lock()
	defer c.routeWrites.Unlock()
	r.Recipients = normalizeRecipients(r.Recipients)
	if err := r.Validate(); err != nil {
		return Route{}, err
	}
	s := c.current()
	if _, ok := s.tenants[r.Tenant]; !ok {
		return Route{}, ErrNotFound
	}
	if old, ok := s.routes[routeRef(r.Tenant, r.Name)]; ok {
		if old.Declared {
			return Route{}, ErrReadOnly
		}
		return Route{}, ErrExists
	}
	if err := c.recipientsFree(s, r); err != nil {
		return Route{}, err
	}
	now := c.cfg.Now().UTC()
	r.Declared, r.Created, r.Updated = false, now, now
	r.Metadata = cloneMeta(r.Metadata)
	return r, c.create(ctx, routeKey(r.Tenant, r.Name), r)
}

// UpdateRoute changes a stored route.
func (c *Catalog) UpdateRoute(ctx context.Context, tenant, name string, change func(*Route) error) (Route, error) {
	c.routeWrites.Lock()
	defer c.routeWrites.Unlock()
	if r, ok := c.current().routes[routeRef(tenant, name)]; ok && r.Declared {
		return Route{}, ErrReadOnly
	}
	r, err := update(ctx, c, routeKey(tenant, name), func(r *Route) error {
		if err := change(r); err != nil {
			return err
		}
		r.Tenant, r.Name, r.Updated = tenant, name, c.cfg.Now().UTC()
		r.Recipients = normalizeRecipients(r.Recipients)
		if err := r.Validate(); err != nil {
			return err
		}
		return c.recipientsFree(c.current(), *r)
	})
	if err != nil {
		return Route{}, err
	}
	return *r, nil
}

// DeleteRoute removes a stored route and its endpoints.
func (c *Catalog) DeleteRoute(ctx context.Context, tenant, name string) error {
	r, ok := c.current().routes[routeRef(tenant, name)]
	switch {
	case !ok:
		return ErrNotFound
	case r.Declared:
		return ErrReadOnly
	}
	keys, err := c.kv.Keys(ctx, endpointPrefix+tenant+"."+name+".*")
	if err != nil {
		return fmt.Errorf("catalog: list: %w", err)
	}
	return c.remove(ctx, append(keys, routeKey(tenant, name))...)
}

// NewEndpointID returns a fresh endpoint id: "ep_" and 16 hex digits.
func NewEndpointID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "ep_" + hex.EncodeToString(b[:])
}

// CreateEndpoint adds an endpoint to a route (a declared route too: its
// endpoints from the API are the API's). An empty id gets a fresh one.
func (c *Catalog) CreateEndpoint(ctx context.Context, e Endpoint, allow []netip.Prefix) (Endpoint, error) {
	if e.ID == "" {
		e.ID = NewEndpointID()
	}
	if err := e.Validate(allow); err != nil {
		return Endpoint{}, err
	}
	if _, ok := c.current().routes[routeRef(e.Tenant, e.Route)]; !ok {
		return Endpoint{}, ErrNotFound
	}
	if old, ok := c.Endpoint(e.Tenant, e.Route, e.ID); ok {
		if old.Declared {
			return Endpoint{}, ErrReadOnly
		}
		return Endpoint{}, ErrExists
	}
	now := c.cfg.Now().UTC()
	e.Declared, e.Created, e.Updated = false, now, now
	e.Metadata = cloneMeta(e.Metadata)
	return e, c.create(ctx, endpointKey(e.Tenant, e.Route, e.ID), e)
}

// UpdateEndpoint changes a stored endpoint.
func (c *Catalog) UpdateEndpoint(ctx context.Context, tenant, route, id string, allow []netip.Prefix, change func(*Endpoint) error) (Endpoint, error) {
	if e, ok := c.Endpoint(tenant, route, id); ok && e.Declared {
		return Endpoint{}, ErrReadOnly
	}
	e, err := update(ctx, c, endpointKey(tenant, route, id), func(e *Endpoint) error {
		if err := change(e); err != nil {
			return err
		}
		e.Tenant, e.Route, e.ID, e.Updated = tenant, route, id, c.cfg.Now().UTC()
		return e.Validate(allow)
	})
	if err != nil {
		return Endpoint{}, err
	}
	return *e, nil
}

// DeleteEndpoint removes a stored endpoint.
func (c *Catalog) DeleteEndpoint(ctx context.Context, tenant, route, id string) error {
	e, ok := c.Endpoint(tenant, route, id)
	switch {
	case !ok:
		return ErrNotFound
	case e.Declared:
		return ErrReadOnly
	}
	return c.remove(ctx, endpointKey(tenant, route, id))
}

// SetOpWebhook sets (creates or replaces) a tenant's operational webhook.
func (c *Catalog) SetOpWebhook(ctx context.Context, o OpWebhook, allow []netip.Prefix) (OpWebhook, error) {
	if err := o.Validate(allow); err != nil {
		return OpWebhook{}, err
	}
	if _, ok := c.current().tenants[o.Tenant]; !ok {
		return OpWebhook{}, ErrNotFound
	}
	o.Updated = c.cfg.Now().UTC()
	val, err := json.Marshal(o)
	if err != nil {
		return OpWebhook{}, err
	}
	rev, err := c.kv.Put(ctx, opWebhookKey(o.Tenant), val)
	if err != nil {
		return OpWebhook{}, fmt.Errorf("catalog: store: %w", err)
	}
	c.apply(opWebhookKey(o.Tenant), val, rev)
	return o, nil
}

// DeleteOpWebhook removes a tenant's operational webhook.
func (c *Catalog) DeleteOpWebhook(ctx context.Context, tenant string) error {
	if _, ok := c.current().ops[tenant]; !ok {
		return ErrNotFound
	}
	return c.remove(ctx, opWebhookKey(tenant))
}

// recipientsFree checks that no other route serves one of r's recipients
// and that none is reserved. Route changes on one instance are serialized
// and each sees the one before; two instances adding one address at the
// same moment can both pass, and the mail index then gives it to the older
// route.
func (c *Catalog) recipientsFree(s *snapshot, r Route) error {
	for _, a := range r.Recipients {
		if slices.Contains(c.cfg.ReservedRecipients, a) {
			return fmt.Errorf("%w: %s is reserved (the TLS-RPT report address)", ErrRecipientTaken, a)
		}
		if other, ok := s.mail[a]; ok && (other.Tenant != r.Tenant || other.Name != r.Name) {
			return fmt.Errorf("%w: %s already goes to another route", ErrRecipientTaken, a)
		}
	}
	return nil
}
