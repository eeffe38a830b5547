package queue

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Bare is a plain JetStream work queue: one message per payload, one
// publish per message, one ack per message, no sealing, no bundles. It is
// the reference pipeline `sealpost bench --bare` measures sealpost against:
// what the same steps cost when nothing else is done.
type Bare struct {
	c    *Conn
	name string
	cons jetstream.Consumer
}

// Bare declares the work-queue stream name (subject "<name>.msg") and its
// consumer.
func (c *Conn) Bare(ctx context.Context, name string) (*Bare, error) {
	_, err := c.ensureStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{name + ".msg"},
		Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage, Replicas: c.replicas(), MaxBytes: -1})
	if err != nil {
		return nil, err
	}
	cons, err := c.js.CreateOrUpdateConsumer(ctx, name, jetstream.ConsumerConfig{Durable: name, AckPolicy: jetstream.AckExplicitPolicy,
		MaxAckPending: 100_000})
	if err != nil {
		return nil, fmt.Errorf("queue: consumer %s: %w", name, err)
	}
	return &Bare{c: c, name: name, cons: cons}, nil
}

// Publish stores data and returns once JetStream acknowledged it.
func (b *Bare) Publish(ctx context.Context, data []byte) error {
	_, err := b.c.js.Publish(ctx, b.name+".msg", data)
	return err
}

// Consume runs fn on workers goroutines for every message until ctx ends;
// a message is acked (and its ack confirmed) when fn returns nil, and
// handed out again after a second otherwise.
func (b *Bare) Consume(ctx context.Context, workers int, fn func(ctx context.Context, data []byte) error) error {
	it, err := b.cons.Messages(jetstream.PullMaxMessages(workers))
	if err != nil {
		return err
	}
	go func() {
		<-ctx.Done()
		it.Stop()
	}()
	msgs := make(chan jetstream.Msg)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for m := range msgs {
				if err := fn(ctx, m.Data()); err != nil {
					_ = m.NakWithDelay(time.Second)
					continue
				}
				_ = m.DoubleAck(ctx)
			}
		})
	}
	defer func() {
		close(msgs)
		wg.Wait()
	}()
	for {
		m, err := it.Next()
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			return nil
		}
		if err != nil {
			continue
		}
		msgs <- m
	}
}
