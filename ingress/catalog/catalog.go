// Package catalog holds what a gateway serves: tenants, their routes, the
// endpoints each route fans out to, API keys, operators and the tenants'
// operational webhooks. The configuration file declares some of them
// (read-only); the rest live in a KV bucket and change through the API.
//
// Every instance watches the bucket and keeps the whole catalog in memory
// as an immutable snapshot that is swapped atomically on each change: the
// ingest and delivery paths look routes, endpoints and keys up without a
// store read, and a change made through one instance reaches every other
// within the watch's latency (milliseconds on a healthy cluster).
package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sealpost/sealpost/ingress/httpin"
	"github.com/sealpost/sealpost/queue"
)

// Bucket declares the catalog's KV bucket.
var Bucket = queue.KVConfig{Bucket: "CATALOG", History: 5}

// Errors callers branch on.
var (
	// ErrNotFound: no such object (or not the caller's).
	ErrNotFound = errors.New("catalog: not found")
	// ErrExists: an object of that name or id exists already.
	ErrExists = errors.New("catalog: already exists")
	// ErrReadOnly: the object is declared in the configuration file.
	ErrReadOnly = errors.New("catalog: declared in the configuration file; read-only through the API")
	// ErrInvalid: a field is missing, malformed or out of bounds.
	ErrInvalid = errors.New("catalog: invalid")
	// ErrBusy: the object kept changing under a compare-and-set.
	ErrBusy = errors.New("catalog: too many concurrent changes")
	// ErrRecipientTaken: a mail address another route serves, or one
	// reserved.
	ErrRecipientTaken = errors.New("catalog: recipient taken")
)

// Config configures a Catalog.
type Config struct {
	// KV is the catalog's bucket (declare it with Bucket). Required.
	KV *queue.KV
	// Declared is what the configuration file declares.
	Declared Declared
	// DefaultRetention is how long tenant data is kept when neither the
	// tenant nor the route says. Required (positive).
	DefaultRetention time.Duration
	// UsedEvery is how often the time API keys were last used is written
	// (only for keys used since). Default 1m.
	UsedEvery time.Duration
	// LoadTimeout bounds the initial load of the bucket. Default 30s.
	LoadTimeout time.Duration
	// ReservedRecipients are addresses no route may take (lower case): the
	// TLS-RPT report address.
	ReservedRecipients []string
	// OnChange, when set, is called after each change of the snapshot.
	OnChange func()
	Logger   *slog.Logger
	Now      func() time.Time
}

// Declared is what the configuration file declares. Its objects are
// marked Declared and refuse changes through the API.
type Declared struct {
	Tenants   []Tenant
	Routes    []Route
	Endpoints []Endpoint
	APIKeys   []httpin.APIKey
}

// Catalog is the catalog of one instance. It is safe for concurrent use.
type Catalog struct {
	cfg  Config
	log  *slog.Logger
	kv   *queue.KV
	snap atomic.Pointer[snapshot]

	// rebuilding serializes rebuilds, so a snapshot never replaces a newer
	// one.
	rebuilding sync.Mutex
	// routeWrites serializes route changes on this instance, so that two
	// requests here cannot give one mail address to two routes.
	routeWrites sync.Mutex
	mu          sync.Mutex // guards stored and rev
	// stored holds the decoded values of the bucket by key.
	stored map[string]json.RawMessage
	rev    map[string]uint64
	loaded bool

	// used holds, per API key id, the unix second it was last used on
	// this instance (*atomic.Int64); flushed by runUsed.
	used sync.Map
}

// Open loads the bucket, starts watching it until ctx ends, and returns
// the catalog.
func Open(ctx context.Context, cfg Config) (*Catalog, error) {
	if cfg.KV == nil {
		return nil, errors.New("catalog: bucket is required")
	}
	if cfg.DefaultRetention <= 0 {
		return nil, errors.New("catalog: default retention is required")
	}
	if cfg.UsedEvery <= 0 {
		cfg.UsedEvery = time.Minute
	}
	if cfg.LoadTimeout <= 0 {
		cfg.LoadTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &Catalog{cfg: cfg, log: cfg.Logger, kv: cfg.KV, stored: map[string]json.RawMessage{}, rev: map[string]uint64{}}
	if err := c.checkDeclared(); err != nil {
		return nil, err
	}
	c.rebuild()
	loaded := make(chan struct{})
	err := c.kv.WatchLoaded(ctx, ">", c.observe, func() {
		c.mu.Lock()
		c.loaded = true
		c.mu.Unlock()
		c.rebuild()
		close(loaded)
	})
	if err != nil {
		return nil, fmt.Errorf("catalog: watch: %w", err)
	}
	select {
	case <-loaded:
	case <-time.After(cfg.LoadTimeout):
		return nil, errors.New("catalog: the bucket did not load in time")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	go c.runUsed(ctx)
	return c, nil
}

// observe takes one change of the bucket.
func (c *Catalog) observe(key string, val []byte, rev uint64) {
	if strings.HasPrefix(key, usedPrefix) {
		c.mu.Lock()
		c.storeLocked(key, val, rev)
		c.mu.Unlock()
		return // last-used times do not change the snapshot's shape
	}
	c.mu.Lock()
	changed := c.storeLocked(key, val, rev)
	loaded := c.loaded
	c.mu.Unlock()
	if changed && loaded {
		c.rebuild()
	}
}

// storeLocked records a value unless a newer revision is known; c.mu must
// be held.
func (c *Catalog) storeLocked(key string, val []byte, rev uint64) bool {
	if rev != 0 && rev < c.rev[key] {
		return false
	}
	c.rev[key] = rev
	if val == nil {
		delete(c.stored, key)
	} else {
		c.stored[key] = append(json.RawMessage(nil), val...)
	}
	return true
}

// apply takes a change this instance wrote, so its own reads see it at
// once (the watch brings it too, with the same revision).
func (c *Catalog) apply(key string, val []byte, rev uint64) {
	c.mu.Lock()
	changed := c.storeLocked(key, val, rev)
	c.mu.Unlock()
	if changed {
		c.rebuild()
	}
}

// rebuild makes a new snapshot from the declared objects and the stored
// ones, and swaps it in.
func (c *Catalog) rebuild() {
	c.rebuilding.Lock()
	defer c.rebuilding.Unlock()
	c.mu.Lock()
	stored := make(map[string]json.RawMessage, len(c.stored))
	for k, v := range c.stored {
		stored[k] = v
	}
	cfg := c.cfg
	c.mu.Unlock()
	s := buildSnapshot(cfg, stored, c.log)
	prev := c.snap.Swap(s)
	for k := range s.conflicts {
		if prev == nil || !prev.conflicts[k] {
			route, addr, _ := strings.Cut(k, " ")
			c.log.Warn("catalog: a recipient of two routes goes to the older one", "route", route, "rcpt_domain", addr[strings.LastIndexByte(addr, '@')+1:])
		}
	}
	if c.cfg.OnChange != nil {
		c.cfg.OnChange()
	}
}

func (c *Catalog) current() *snapshot { return c.snap.Load() }

// Authenticate implements httpin.Authenticator: the request's API key,
// noting its use (written to the bucket at most once a minute).
func (c *Catalog) Authenticate(r *http.Request) (*httpin.APIKey, error) {
	k, err := c.current().keys.Authenticate(r)
	if err == nil {
		c.noteUsed(k.ID)
	}
	return k, err
}

var _ httpin.Authenticator = (*Catalog)(nil)

// Route implements httpin.Routes.
func (c *Catalog) Route(tenant, name string) (httpin.Route, bool) {
	if _, ok := c.current().routes[tenant+"/"+name]; !ok {
		return httpin.Route{}, false
	}
	return httpin.Route{Tenant: tenant, Name: name}, true
}

var _ httpin.Routes = (*Catalog)(nil)

// SetDeclaredURL points a declared endpoint at another URL (the --dev
// receiver's address is known only once its listener is bound).
func (c *Catalog) SetDeclaredURL(tenant, route, endpoint, url string) {
	c.mu.Lock()
	eps := slices.Clone(c.cfg.Declared.Endpoints)
	for i := range eps {
		if e := &eps[i]; e.Tenant == tenant && e.Route == route && e.ID == endpoint {
			e.URL = url
		}
	}
	c.cfg.Declared.Endpoints = eps
	c.mu.Unlock()
	c.rebuild()
}
