package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sealpost/sealpost/ingress"
	"github.com/sealpost/sealpost/keyring/kms"
)

// PublisherConfig configures a Publisher.
type PublisherConfig struct {
	// MaxBundle is the most submissions one INGEST message holds. Default
	// 256, at most 1024.
	MaxBundle int
	// Flushers is how many bundles may be in flight to JetStream at once.
	// Default 4.
	Flushers int
	// Timeout bounds the wait for JetStream's acknowledgement of a bundle.
	// Default 5s.
	Timeout time.Duration
	Logger  *slog.Logger
	// Registerer receives the publisher's metrics; nil registers none.
	Registerer prometheus.Registerer
}

// Publisher seals submissions and publishes them to INGEST. Submissions
// that arrive while a bundle is being stored are stored together in the
// next one, so concurrent senders share one write (and, with every write
// flushed, one flush to disk) without waiting for each other: a bundle is
// whatever queued up meanwhile, never held back for more.
type Publisher struct {
	c      *Conn
	sealer Sealer
	cfg    PublisherConfig
	log    *slog.Logger
	in     chan *pubJob
	// maxBytes bounds a bundle's body: the server's message limit less
	// room for headers.
	maxBytes int

	mu      sync.RWMutex // guards closing against sends on in
	closing bool
	wg      sync.WaitGroup

	bundleSize     prometheus.Histogram
	publishSeconds prometheus.Histogram
}

type pubJob struct {
	m    member
	done chan error // buffered
}

var _ ingress.Enqueuer = (*Publisher)(nil)

// bundleHeadroom is what a bundle leaves of the server's message limit for
// headers and framing.
const bundleHeadroom = 4 << 10

// Publisher returns an Enqueuer that seals every submission with s and
// publishes it in a bundle. Close stops it.
func (c *Conn) Publisher(s Sealer, cfg PublisherConfig) (*Publisher, error) {
	if cfg.MaxBundle <= 0 {
		cfg.MaxBundle = 256
	}
	if cfg.MaxBundle > maxBundleMembers {
		return nil, fmt.Errorf("queue: max bundle %d above %d", cfg.MaxBundle, maxBundleMembers)
	}
	if cfg.Flushers <= 0 {
		cfg.Flushers = 4
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Publisher{c: c, sealer: s, cfg: cfg, log: cfg.Logger,
		in:       make(chan *pubJob, 4*cfg.MaxBundle),
		maxBytes: int(c.MaxPayload()) - bundleHeadroom,
		bundleSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sealpost_queue_bundle_submissions",
			Help:    "Submissions stored together in one INGEST message (one write).",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024},
		}),
		publishSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sealpost_queue_bundle_publish_seconds",
			Help:    "Time from sending an INGEST bundle to JetStream's acknowledgement that it is stored.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 12),
		}),
	}
	if cfg.Registerer != nil {
		for _, m := range []prometheus.Collector{p.bundleSize, p.publishSeconds} {
			if err := cfg.Registerer.Register(m); err != nil {
				return nil, fmt.Errorf("queue: publisher metrics: %w", err)
			}
		}
	}
	for range cfg.Flushers {
		p.wg.Add(1)
		go p.flusher()
	}
	return p, nil
}

// Enqueue seals s and publishes it, returning nil only after JetStream
// acknowledged the bundle holding it. Failures of the KMS or the queue are
// temporary; a submission over the server's message size is ErrTooLarge.
// When ctx ends first the submission may still be stored.
func (p *Publisher) Enqueue(ctx context.Context, s *ingress.Submission) error {
	if err := s.Validate(); err != nil {
		return err
	}
	if !p.c.nc.IsConnected() {
		// Fail fast rather than buffer: the sender retries later.
		return ingress.Temporary(errors.New("queue: not connected"))
	}
	body := s.AppendBinary(make([]byte, 0, s.BinarySize()))
	sealed, err := p.sealer.Seal(ctx, kms.Context{Tenant: s.Tenant, Purpose: kms.PurposeIngest, ObjectID: s.ID}, body)
	clear(body)
	switch {
	case errors.Is(err, kms.ErrTooLarge):
		return fmt.Errorf("queue: seal submission: %w: %w", ingress.ErrTooLarge, err)
	case err != nil:
		return ingress.Temporary(fmt.Errorf("queue: seal submission: %w", err))
	}
	j := &pubJob{m: member{tenant: s.Tenant, id: s.ID, sealed: sealed}, done: make(chan error, 1)}
	if n := j.m.size(); n > p.maxBytes {
		return fmt.Errorf("queue: sealed submission of %d bytes over the %d-byte message limit: %w", n, p.maxBytes, ingress.ErrTooLarge)
	}
	if err := p.send(ctx, j); err != nil {
		return err
	}
	select {
	case err := <-j.done:
		return err
	case <-ctx.Done():
		return ingress.Temporary(fmt.Errorf("queue: publish: %w", ctx.Err()))
	}
}

func (p *Publisher) send(ctx context.Context, j *pubJob) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closing {
		return ingress.ErrUnavailable
	}
	select {
	case p.in <- j:
		return nil
	case <-ctx.Done():
		return ingress.Temporary(fmt.Errorf("queue: publish: %w", ctx.Err()))
	}
}

// flusher stores bundles until Close: each holds what queued up while the
// previous one was being stored.
func (p *Publisher) flusher() {
	defer p.wg.Done()
	var batch []*pubJob
	for j := range p.in {
		batch = append(batch[:0], j)
		size := j.m.size()
	fill:
		for len(batch) < p.cfg.MaxBundle {
			select {
			case j, ok := <-p.in:
				if !ok {
					break fill
				}
				if n := j.m.size(); size+n > p.maxBytes {
					p.publish(batch)
					batch, size = batch[:0], 0
				}
				batch = append(batch, j)
				size += j.m.size()
			default:
				break fill
			}
		}
		p.publish(batch)
	}
}

// publish stores one bundle and answers its submitters.
func (p *Publisher) publish(batch []*pubJob) {
	if len(batch) == 0 {
		return
	}
	ms := make([]*member, len(batch))
	for i, j := range batch {
		ms[i] = &j.m
	}
	msg := bundleMsg(ms)
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.Timeout)
	start := time.Now()
	_, err := p.c.js.PublishMsg(ctx, msg, jetstream.WithExpectStream(IngestStream))
	cancel()
	if err != nil {
		p.log.Warn("queue: storing a bundle failed", "submissions", len(batch), "err", err)
		err = ingress.Temporary(fmt.Errorf("queue: publish: %w", err))
	} else {
		p.publishSeconds.Observe(time.Since(start).Seconds())
		p.bundleSize.Observe(float64(len(batch)))
	}
	for _, j := range batch {
		j.done <- err
	}
}

// Close refuses new submissions, stores the queued ones and returns once
// every submitter has its answer.
func (p *Publisher) Close() {
	p.mu.Lock()
	if !p.closing {
		p.closing = true
		close(p.in)
	}
	p.mu.Unlock()
	p.wg.Wait()
}
