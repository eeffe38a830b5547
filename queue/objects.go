package queue

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// Objects is a JetStream object store for payload parts too large for one
// message (mail attachments). Callers store only sealed bytes.
type Objects struct {
	os     jetstream.ObjectStore
	js     jetstream.JetStream
	bucket string
}

// ObjectsConfig declares an object store bucket.
type ObjectsConfig struct {
	Bucket string
	// MaxBytes bounds the bucket; 0 is unlimited.
	MaxBytes int64
}

// Objects creates (or opens) an object store bucket.
func (c *Conn) Objects(ctx context.Context, cfg ObjectsConfig) (*Objects, error) {
	oc := jetstream.ObjectStoreConfig{
		Bucket:   cfg.Bucket,
		Storage:  jetstream.FileStorage,
		Replicas: c.replicas(),
		MaxBytes: cfg.MaxBytes,
	}
	if cfg.MaxBytes == 0 {
		oc.MaxBytes = -1
	}
	os, err := c.ensureObjects(ctx, oc)
	if err != nil {
		return nil, err
	}
	return &Objects{os: os, js: c.js, bucket: cfg.Bucket}, nil
}

// Put stores data under name, replacing any previous object.
func (o *Objects) Put(ctx context.Context, name string, data []byte) error {
	if _, err := o.os.PutBytes(ctx, name, data); err != nil {
		return fmt.Errorf("queue: put object: %w", err)
	}
	return nil
}

// Get returns the object stored under name, or ErrNotFound.
func (o *Objects) Get(ctx context.Context, name string) ([]byte, error) {
	b, err := o.os.GetBytes(ctx, name)
	if err != nil {
		if errors.Is(err, jetstream.ErrObjectNotFound) {
			return nil, fmt.Errorf("%w: object", ErrNotFound)
		}
		return nil, fmt.Errorf("queue: get object: %w", err)
	}
	return b, nil
}

// Delete removes the object stored under name.
func (o *Objects) Delete(ctx context.Context, name string) error {
	if err := o.os.Delete(ctx, name); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return fmt.Errorf("queue: delete object: %w", err)
	}
	return nil
}
