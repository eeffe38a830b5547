package queue

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Instances is a registry of the sealpost instances sharing a cluster: each
// puts a heartbeat under its own key in a bucket whose entries expire, and
// the number of keys present is the number of live instances. It lets
// per-instance shares of cluster-wide limits follow the instances that
// are running.
type Instances struct {
	kv     *KV
	stream jetstream.Stream
	self   string
	ttl    time.Duration
}

// InstancesBucket is the registry's bucket.
const InstancesBucket = "INSTANCES"

// Instances opens the registry for self (a token unique to this process);
// heartbeats older than ttl no longer count. Beat must be called at least
// every ttl/3.
func (c *Conn) Instances(ctx context.Context, self string, ttl time.Duration) (*Instances, error) {
	kv, err := c.KV(ctx, KVConfig{Bucket: InstancesBucket, TTL: ttl})
	if err != nil {
		return nil, err
	}
	s, err := c.js.Stream(ctx, "KV_"+InstancesBucket)
	if err != nil {
		return nil, fmt.Errorf("queue: instances: %w", err)
	}
	return &Instances{kv: kv, stream: s, self: self, ttl: ttl}, nil
}

// Beat records that this instance is alive.
func (r *Instances) Beat(ctx context.Context) error {
	_, err := r.kv.Put(ctx, r.self, []byte(time.Now().UTC().Format(time.RFC3339)))
	return err
}

// Count returns the number of instances whose heartbeat has not expired,
// at least 1.
func (r *Instances) Count(ctx context.Context) (int, error) {
	info, err := r.stream.Info(ctx, jetstream.WithSubjectFilter("$KV."+InstancesBucket+".>"))
	if err != nil {
		return 1, fmt.Errorf("queue: instances: %w", err)
	}
	return max(1, len(info.State.Subjects)), nil
}
