package forwarder

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sealpost/sealpost/queue"
)

// The delivery path needs, per endpoint of a batch, whether it is
// disabled and its secrets. Once Watch runs, the endpoint state bucket is
// kept in memory (a KV watch), so a batch reads neither; opened secrets
// are kept per revision, so they are opened once per change.

// stateCache is the endpoint state bucket in memory.
type stateCache struct {
	mu   sync.RWMutex
	vals map[string]stateVal
	// open holds opened secrets by key, for the revision they came from.
	open map[string]openedSecrets
}

type stateVal struct {
	val []byte
	rev uint64
}

type openedSecrets struct {
	rev uint64
	ss  []Secret
}

// stateLoadTimeout bounds the initial load of the bucket.
const stateLoadTimeout = 30 * time.Second

// Watch loads the endpoint state bucket into memory and keeps it there,
// updated by a KV watch, until ctx ends. Without it every batch reads the
// bucket.
func (w *Worker) Watch(ctx context.Context) error {
	c := &stateCache{vals: map[string]stateVal{}, open: map[string]openedSecrets{}}
	loaded := make(chan struct{})
	err := w.cfg.EndpointState.WatchLoaded(ctx, ">", func(key string, val []byte, rev uint64) {
		c.set(key, val, rev)
	}, func() { close(loaded) })
	if err != nil {
		return fmt.Errorf("forwarder: watch endpoint state: %w", err)
	}
	select {
	case <-loaded:
	case <-time.After(stateLoadTimeout):
		return errors.New("forwarder: endpoint state did not load in time")
	case <-ctx.Done():
		return ctx.Err()
	}
	w.state.Store(c)
	return nil
}

// set records a value unless a newer revision is known (rev 0: a deletion
// or write of this instance whose revision is not known).
func (c *stateCache) set(key string, val []byte, rev uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.vals[key]; ok && rev != 0 && rev < old.rev {
		return
	}
	if val == nil {
		delete(c.vals, key)
		delete(c.open, key)
		return
	}
	c.vals[key] = stateVal{val: append([]byte(nil), val...), rev: rev}
}

func (c *stateCache) get(key string) ([]byte, uint64, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	v, ok := c.vals[key]
	return v.val, v.rev, ok
}

func (c *stateCache) opened(key string, rev uint64) ([]Secret, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	o, ok := c.open[key]
	return o.ss, ok && o.rev == rev
}

func (c *stateCache) keepOpened(key string, rev uint64, ss []Secret) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if v, ok := c.vals[key]; ok && v.rev == rev {
		c.open[key] = openedSecrets{rev: rev, ss: ss}
	}
}

// stateChanged applies a write of this instance to the cache at once, so
// that its own next batch sees it (the watch brings it too).
func (w *Worker) stateChanged(key string, val []byte, rev uint64) {
	if c := w.state.Load(); c != nil {
		c.set(key, val, rev)
	}
}

// stateValue reads one key of the endpoint state bucket, from the cache
// once Watch runs.
func (w *Worker) stateValue(ctx context.Context, key string) ([]byte, bool, error) {
	if c := w.state.Load(); c != nil {
		v, _, ok := c.get(key)
		return v, ok, nil
	}
	v, _, err := w.cfg.EndpointState.Get(ctx, key)
	if errors.Is(err, queue.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return v, true, nil
}
