package queue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Outcomes of key-value operations. Callers branch on them with errors.Is.
var (
	// ErrNotFound: the key does not exist (or was deleted).
	ErrNotFound = errors.New("queue: key not found")
	// ErrConflict: a compare-and-set lost: the key exists (Create) or its
	// revision moved on (Update).
	ErrConflict = errors.New("queue: revision conflict")
)

// KVConfig declares a key-value bucket.
type KVConfig struct {
	// Bucket name: letters, digits, '-' and '_'.
	Bucket string
	// History kept per key. Default 1.
	History uint8
	// MaxValueSize in bytes. Default: the server's max payload.
	MaxValueSize int32
	// TTL of entries; 0 keeps them forever.
	TTL time.Duration
}

// KV is a JetStream key-value bucket with compare-and-set operations.
// Keys are dot-separated tokens of letters, digits, '-', '_' and '='.
type KV struct{ kv jetstream.KeyValue }

// KV creates (or updates the settings of) a bucket and returns it.
func (c *Conn) KV(ctx context.Context, cfg KVConfig) (*KV, error) {
	if cfg.History == 0 {
		cfg.History = 1
	}
	kv, err := c.ensureKV(ctx, jetstream.KeyValueConfig{
		Bucket:       cfg.Bucket,
		History:      cfg.History,
		MaxValueSize: cfg.MaxValueSize,
		TTL:          cfg.TTL,
		Storage:      jetstream.FileStorage,
		Replicas:     c.replicas(),
	})
	if err != nil {
		return nil, err
	}
	return &KV{kv: kv}, nil
}

// LookupKV returns an existing bucket without declaring or changing it,
// or an error wrapping ErrNotFound (see LookupStream).
func (c *Conn) LookupKV(ctx context.Context, bucket string) (*KV, error) {
	kv, err := c.js.KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("%w: bucket %s", ErrNotFound, bucket)
	}
	if err != nil {
		return nil, fmt.Errorf("queue: bucket %s: %w", bucket, err)
	}
	return &KV{kv: kv}, nil
}

// Get returns the value and revision of key, or ErrNotFound.
func (k *KV) Get(ctx context.Context, key string) ([]byte, uint64, error) {
	e, err := k.kv.Get(ctx, key)
	if err != nil {
		return nil, 0, kvErr(err)
	}
	return e.Value(), e.Revision(), nil
}

// Create stores key only if it does not exist; otherwise ErrConflict.
func (k *KV) Create(ctx context.Context, key string, val []byte) (uint64, error) {
	rev, err := k.kv.Create(ctx, key, val)
	return rev, kvErr(err)
}

// Update stores key only if its current revision is rev; otherwise ErrConflict.
func (k *KV) Update(ctx context.Context, key string, val []byte, rev uint64) (uint64, error) {
	rev, err := k.kv.Update(ctx, key, val, rev)
	return rev, kvErr(err)
}

// Put stores key unconditionally.
func (k *KV) Put(ctx context.Context, key string, val []byte) (uint64, error) {
	rev, err := k.kv.Put(ctx, key, val)
	return rev, kvErr(err)
}

// Delete removes key (a tombstone; history is kept per the bucket's settings).
func (k *KV) Delete(ctx context.Context, key string) error {
	return kvErr(k.kv.Delete(ctx, key))
}

// Keys lists the keys matching filter (NATS wildcards, e.g. "acme.>"); an
// empty filter lists all. An empty bucket yields no keys and no error.
func (k *KV) Keys(ctx context.Context, filter string) ([]string, error) {
	if filter == "" {
		filter = ">"
	}
	lister, err := k.kv.ListKeysFiltered(ctx, filter)
	if err != nil {
		return nil, kvErr(err)
	}
	var keys []string
	for key := range lister.Keys() {
		keys = append(keys, key)
	}
	return keys, nil
}

// Watch calls fn with the value of every change to keys matching filter
// (current values first) until ctx ends. Deletions call fn with nil.
func (k *KV) Watch(ctx context.Context, filter string, fn func(key string, val []byte, rev uint64)) error {
	return k.WatchLoaded(ctx, filter, fn, nil)
}

// WatchLoaded is Watch that also calls loaded (when not nil) once, after
// fn has seen every value present when the watch started: a cache built
// from the values is complete from then on.
func (k *KV) WatchLoaded(ctx context.Context, filter string, fn func(key string, val []byte, rev uint64), loaded func()) error {
	w, err := k.kv.Watch(ctx, filter)
	if err != nil {
		return kvErr(err)
	}
	go func() {
		defer w.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil { // end of initial values
					if loaded != nil {
						loaded()
						loaded = nil
					}
					continue
				}
				if e.Operation() != jetstream.KeyValuePut {
					fn(e.Key(), nil, e.Revision())
					continue
				}
				fn(e.Key(), e.Value(), e.Revision())
			}
		}
	}()
	return nil
}

func kvErr(err error) error {
	var apiErr *jetstream.APIError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	case errors.Is(err, jetstream.ErrKeyExists):
		return fmt.Errorf("%w: %w", ErrConflict, err)
	case errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant):
		return fmt.Errorf("%w: %w", ErrConflict, err)
	}
	return fmt.Errorf("queue: %w", err)
}
