package queue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Declaring streams and buckets must work when several instances start at
// the same moment against a fresh cluster. JetStream answers two concurrent
// CreateOrUpdateStream calls on a new replicated stream with nothing at
// all, and a bucket created a moment ago has no leader yet, so every
// declaration here creates first (idempotent for an identical config),
// updates only when the stored config differs, waits for a leader, and
// retries passing failures with backoff until provisionTimeout or ctx ends.

// provisionTimeout bounds one declaration, retries included.
const provisionTimeout = 2 * time.Minute

// provisionAttemptTimeout bounds one request of a declaration.
const provisionAttemptTimeout = 10 * time.Second

// retryProvision calls op until it succeeds, fails for good, or the budget
// ends; what names the object in errors and logs.
func (c *Conn) retryProvision(ctx context.Context, what string, op func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, provisionTimeout)
	defer cancel()
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		actx, acancel := context.WithTimeout(ctx, provisionAttemptTimeout)
		err := op(actx)
		acancel()
		if err == nil {
			return nil
		}
		if !passing(err) {
			return fmt.Errorf("queue: %s: %w", what, err)
		}
		if attempt > 1 {
			c.log.Warn("queue: declaring storage failed; retrying", "what", what, "attempt", attempt, "err", err)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("queue: %s: %w (after %d attempts: %w)", what, ctx.Err(), attempt, err)
		case <-t.C:
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// errRaced: another instance is creating the same stream or bucket at
// this moment (the create saw it, the update did not yet).
var errRaced = errors.New("declared by another instance at the same moment")

// passing reports whether a declaration error may go away by itself: no
// answer, no leader yet, the cluster busy, a concurrent declaration. A
// refused configuration does not.
func passing(err error) bool {
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, errRaced), errors.Is(err, jetstream.ErrStreamNotFound):
		// A stream another instance is creating right now can be seen by
		// one request and not yet by the next.
		return true
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout),
		errors.Is(err, nats.ErrNoResponders), errors.Is(err, jetstream.ErrNoStreamResponse),
		errors.Is(err, nats.ErrConnectionReconnecting), errors.Is(err, nats.ErrDisconnected):
		return true
	case errors.As(err, &apiErr):
		// 5xx: JetStream or the cluster is not ready, a leader is being
		// elected, the meta layer timed out. 4xx: the request is wrong.
		return apiErr.Code >= 500 || apiErr.Code == 408
	}
	return false
}

// ensureStream declares a stream with cfg and returns it once it has a
// leader.
func (c *Conn) ensureStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	var s jetstream.Stream
	err := c.retryProvision(ctx, "stream "+cfg.Name, func(ctx context.Context) error {
		var err error
		s, err = c.js.CreateStream(ctx, cfg)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			// It exists with another configuration (an older sealpost,
			// or an operator's change), or another instance is creating
			// it right now: bring it to ours.
			s, err = c.js.UpdateStream(ctx, cfg)
		}
		if err != nil {
			return err
		}
		return c.waitLeader(ctx, s)
	})
	return s, err
}

// waitLeader returns once the stream answers with a leader (a replicated
// stream just created has none for a moment) or ctx ends.
func (c *Conn) waitLeader(ctx context.Context, s jetstream.Stream) error {
	if c.replicas() == 1 {
		return nil
	}
	for {
		info, err := s.Info(ctx)
		if err == nil && (info.Cluster == nil || info.Cluster.Leader != "") {
			return nil
		}
		if err != nil && !passing(err) {
			return err
		}
		t := time.NewTimer(100 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("no leader yet: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// ensureKV declares a key-value bucket.
func (c *Conn) ensureKV(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	var kv jetstream.KeyValue
	err := c.ensureBucket(ctx, "bucket "+cfg.Bucket, "KV_"+cfg.Bucket, func(ctx context.Context) (err error) {
		kv, err = c.js.CreateKeyValue(ctx, cfg)
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = c.js.UpdateKeyValue(ctx, cfg)
			if errors.Is(err, jetstream.ErrBucketNotFound) {
				err = errRaced
			}
		}
		return err
	})
	return kv, err
}

// ensureObjects declares an object store bucket.
func (c *Conn) ensureObjects(ctx context.Context, cfg jetstream.ObjectStoreConfig) (jetstream.ObjectStore, error) {
	var os jetstream.ObjectStore
	err := c.ensureBucket(ctx, "object store "+cfg.Bucket, "OBJ_"+cfg.Bucket, func(ctx context.Context) (err error) {
		os, err = c.js.CreateObjectStore(ctx, cfg)
		if errors.Is(err, jetstream.ErrBucketExists) {
			os, err = c.js.UpdateObjectStore(ctx, cfg)
			if errors.Is(err, jetstream.ErrBucketNotFound) {
				err = errRaced
			}
		}
		return err
	})
	return os, err
}

// ensureBucket runs declare, which creates or updates a bucket kept in
// stream, and waits for the stream's leader.
func (c *Conn) ensureBucket(ctx context.Context, what, stream string, declare func(context.Context) error) error {
	return c.retryProvision(ctx, what, func(ctx context.Context) error {
		if err := declare(ctx); err != nil {
			return err
		}
		s, err := c.js.Stream(ctx, stream)
		if err != nil {
			return err
		}
		return c.waitLeader(ctx, s)
	})
}
