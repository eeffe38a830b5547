package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sealpost/sealpost/ingress"
	"github.com/sealpost/sealpost/keyring/kms"
)

// IngestStream is the work-queue stream every accepted submission goes to.
const IngestStream = "INGEST"

// Headers on INGEST messages. They carry no payload content: only what is
// needed to open the sealed body.
const (
	hdrTenant = "Sealpost-Tenant"
	hdrRoute  = "Sealpost-Route"
	hdrID     = "Sealpost-Id"
)

// Sealer seals and opens bytes under a tenant-scoped encryption context.
// *kms.Envelope implements it.
type Sealer interface {
	Seal(ctx context.Context, c kms.Context, plaintext []byte) ([]byte, error)
	Open(ctx context.Context, c kms.Context, sealed []byte) ([]byte, error)
}

func (c *Conn) ensureIngest(ctx context.Context) error {
	_, err := c.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:       IngestStream,
		Subjects:   []string{"ingest.>"},
		Retention:  jetstream.WorkQueuePolicy,
		Storage:    jetstream.FileStorage,
		Replicas:   c.replicas(),
		Duplicates: 2 * time.Minute,
		MaxBytes:   -1,
		Discard:    jetstream.DiscardNew,
	})
	if err != nil {
		return fmt.Errorf("queue: stream %s: %w", IngestStream, err)
	}
	_, err = c.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:       QuarantineStream,
		Subjects:   []string{"quarantine.>"},
		Storage:    jetstream.FileStorage,
		Replicas:   c.replicas(),
		Duplicates: 2 * time.Minute,
		MaxBytes:   -1,
		DenyDelete: true,
	})
	if err != nil {
		return fmt.Errorf("queue: stream %s: %w", QuarantineStream, err)
	}
	return nil
}

// publishTimeout bounds the wait for JetStream's acknowledgement.
const publishTimeout = 10 * time.Second

// Publisher seals submissions and publishes them to INGEST.
type Publisher struct {
	c      *Conn
	sealer Sealer
}

var _ ingress.Enqueuer = (*Publisher)(nil)

// Publisher returns an Enqueuer that seals every submission with s before
// it is published.
func (c *Conn) Publisher(s Sealer) *Publisher { return &Publisher{c: c, sealer: s} }

// Enqueue seals s and publishes it, returning nil only after JetStream
// acknowledged it. The receipt id is the message id, so a retried publish of
// the same submission is stored once. Failures of the KMS or the queue are
// temporary; a submission over the server's message size is ErrTooLarge.
func (p *Publisher) Enqueue(ctx context.Context, s *ingress.Submission) error {
	if err := s.Validate(); err != nil {
		return err
	}
	if !p.c.nc.IsConnected() {
		// Fail fast rather than buffer: the sender retries later.
		return ingress.Temporary(errors.New("queue: not connected"))
	}
	body, err := ingress.EncodeJSON(s) // '<' stays 1 byte: the size limit is what was sent
	if err != nil {
		return fmt.Errorf("queue: encode submission: %w", err)
	}
	sealed, err := p.sealer.Seal(ctx, kms.Context{Tenant: s.Tenant, Purpose: kms.PurposeIngest, ObjectID: s.ID}, body)
	clear(body)
	switch {
	case errors.Is(err, kms.ErrTooLarge):
		return fmt.Errorf("queue: seal submission: %w: %w", ingress.ErrTooLarge, err)
	case err != nil:
		return ingress.Temporary(fmt.Errorf("queue: seal submission: %w", err))
	}
	if max := p.c.MaxPayload(); int64(len(sealed))+1024 > max {
		return fmt.Errorf("queue: sealed submission of %d bytes over the %d-byte message limit: %w", len(sealed), max, ingress.ErrTooLarge)
	}
	m := nats.NewMsg("ingest." + s.Tenant + "." + s.Route)
	m.Data = sealed
	m.Header.Set(hdrTenant, s.Tenant)
	m.Header.Set(hdrRoute, s.Route)
	m.Header.Set(hdrID, s.ID)
	ctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	if _, err := p.c.js.PublishMsg(ctx, m, jetstream.WithMsgID(s.ID), jetstream.WithExpectStream(IngestStream)); err != nil {
		return ingress.Temporary(fmt.Errorf("queue: publish: %w", err))
	}
	return nil
}

// ConsumerConfig configures the durable consumer of INGEST.
type ConsumerConfig struct {
	// Name of the durable consumer, shared by every instance. Default "forwarder".
	Name string
	// Workers is the number of deliveries handled at once per instance. Default 16.
	Workers int
	// AckWait is how long a delivery may stay unacknowledged before
	// JetStream hands it to another worker; it is also how long a message
	// that was in flight when an instance died waits before it is delivered
	// again. Default 45s; handlers call InProgress for longer work.
	AckWait time.Duration
	// MaxAckPending bounds the messages delivered and not yet acked,
	// including those waiting for a retry (Retry keeps a message pending
	// until its delay ends). At the bound JetStream hands out nothing new,
	// so it must exceed the retry backlog a dead endpoint can build up.
	// Default 250,000.
	MaxAckPending int
	// Quarantined, when set, is called once a message that cannot be opened
	// or parsed was copied to QUARANTINE, with the tenant and id from its
	// headers and the class of the problem ("unopenable" or "invalid"). The
	// message leaves INGEST only once it returns nil (for example once an
	// audit entry is durable); an error keeps it queued for a later try.
	Quarantined func(ctx context.Context, tenant, id, class string) error
	Logger      *slog.Logger
}

// Delivery is one INGEST message handed to a worker, already opened.
type Delivery struct {
	Submission *ingress.Submission
	// Attempt counts deliveries of this message, starting at 1.
	Attempt int
	// Queued is when the message was stored in INGEST.
	Queued time.Time
	msg    jetstream.Msg
}

// Ack removes the message from the queue once JetStream confirms it.
func (d *Delivery) Ack(ctx context.Context) error { return d.msg.DoubleAck(ctx) }

// Retry asks for redelivery after delay.
func (d *Delivery) Retry(delay time.Duration) error { return d.msg.NakWithDelay(delay) }

// Drop removes the message without delivery (after it was dead-lettered).
func (d *Delivery) Drop() error { return d.msg.Term() }

// InProgress resets the ack timer for long-running work.
func (d *Delivery) InProgress() error { return d.msg.InProgress() }

// Handler processes one delivery and must Ack, Retry or Drop it.
type Handler func(ctx context.Context, d *Delivery)

// Consumer feeds INGEST messages to a Handler on a pool of workers.
type Consumer struct {
	c        *Conn
	cfg      ConsumerConfig
	log      *slog.Logger
	mu       sync.Mutex
	it       jetstream.MessagesContext
	alive    atomic.Bool
	stopping chan struct{}
	stopOnce sync.Once
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// openRetryDelay is how long a message waits when the KMS could not open it.
const openRetryDelay = 30 * time.Second

// QuarantineStream keeps INGEST messages that cannot be opened or parsed
// (sealed under another key, altered in the store, missing headers), still
// sealed, instead of deleting them: an operator can fix the key
// configuration and move them back.
const QuarantineStream = "QUARANTINE"

// Consume starts workers that open each INGEST message with s and pass it to
// h. Stop ends them. If the server ends the pull (the consumer was deleted,
// a cluster leader changed) the consumer is declared again and fetching
// resumes; Alive reports whether it is fetching.
func (c *Conn) Consume(ctx context.Context, cfg ConsumerConfig, s Sealer, h Handler) (*Consumer, error) {
	if cfg.Name == "" {
		cfg.Name = "forwarder"
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 16
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = 45 * time.Second
	}
	if cfg.MaxAckPending <= 0 {
		cfg.MaxAckPending = 250_000
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	k := &Consumer{c: c, cfg: cfg, log: log, cancel: cancel, stopping: make(chan struct{})}
	if err := k.subscribe(ctx); err != nil {
		cancel()
		return nil, err
	}
	msgs := make(chan jetstream.Msg)
	k.wg.Add(1)
	go func() {
		defer k.wg.Done()
		defer close(msgs)
		k.fetch(msgs)
	}()
	for range cfg.Workers {
		k.wg.Add(1)
		go func() {
			defer k.wg.Done()
			for m := range msgs {
				c.deliver(wctx, log, s, h, m, cfg.Quarantined)
			}
		}()
	}
	return k, nil
}

// subscribe declares the durable consumer and starts a pull iterator.
func (k *Consumer) subscribe(ctx context.Context) error {
	cons, err := k.c.js.CreateOrUpdateConsumer(ctx, IngestStream, jetstream.ConsumerConfig{
		Durable:       k.cfg.Name,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       k.cfg.AckWait,
		MaxDeliver:    -1,
		MaxAckPending: k.cfg.MaxAckPending,
		FilterSubject: "ingest.>",
	})
	if err != nil {
		return fmt.Errorf("queue: consumer %s: %w", k.cfg.Name, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(k.cfg.Workers))
	if err != nil {
		return fmt.Errorf("queue: consume %s: %w", k.cfg.Name, err)
	}
	k.mu.Lock()
	k.it = it
	k.mu.Unlock()
	k.alive.Store(true)
	return nil
}

// fetch feeds msgs until Stop; a pull the server ended is re-established
// with backoff.
func (k *Consumer) fetch(msgs chan<- jetstream.Msg) {
	backoff := 100 * time.Millisecond
	for {
		k.mu.Lock()
		it := k.it
		k.mu.Unlock()
		m, err := it.Next()
		if err == nil {
			backoff = 100 * time.Millisecond
			msgs <- m
			continue
		}
		if !errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			k.log.Warn("queue: fetch", "err", err)
			continue
		}
		select {
		case <-k.stopping:
			return
		default:
		}
		// The server ended the pull: declare the consumer again.
		k.alive.Store(false)
		k.log.Error("queue: consumer stopped by the server; re-subscribing", "consumer", k.cfg.Name)
		for {
			select {
			case <-k.stopping:
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 10*time.Second)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := k.subscribe(ctx)
			cancel()
			if err == nil {
				break
			}
			k.log.Warn("queue: re-subscribe failed", "err", err)
		}
	}
}

// Alive reports whether the consumer is fetching (for /readyz).
func (k *Consumer) Alive() bool { return k.alive.Load() }

func (c *Conn) deliver(ctx context.Context, log *slog.Logger, s Sealer, h Handler, m jetstream.Msg, quarantined func(ctx context.Context, tenant, id, class string) error) {
	meta, err := m.Metadata()
	if err != nil {
		log.Error("queue: message without metadata", "err", err)
		_ = m.NakWithDelay(openRetryDelay)
		return
	}
	tenant, id := m.Headers().Get(hdrTenant), m.Headers().Get(hdrID)
	if tenant == "" || id == "" {
		c.quarantine(ctx, log, m, meta, "invalid", "missing headers", quarantined)
		return
	}
	body, err := s.Open(ctx, kms.Context{Tenant: tenant, Purpose: kms.PurposeIngest, ObjectID: id}, m.Data())
	if err != nil {
		if errors.Is(err, kms.ErrUnavailable) {
			log.Warn("queue: cannot open message now; retrying", "id", id, "err", err)
			_ = m.NakWithDelay(openRetryDelay)
			return
		}
		// Sealed under another key (provider or key changed, another
		// instance's local master key) or altered in the store.
		c.quarantine(ctx, log, m, meta, "unopenable", err.Error(), quarantined)
		return
	}
	var sub ingress.Submission
	err = json.Unmarshal(body, &sub)
	clear(body)
	if err == nil {
		err = sub.Validate()
	}
	if err == nil && (sub.Tenant != tenant || sub.ID != id) {
		err = errors.New("headers do not match the sealed submission")
	}
	if err != nil {
		c.quarantine(ctx, log, m, meta, "invalid", err.Error(), quarantined)
		return
	}
	h(ctx, &Delivery{Submission: &sub, Attempt: int(meta.NumDelivered), Queued: meta.Timestamp, msg: m})
}

// quarantine moves a message that cannot be processed, still sealed, to
// QUARANTINE and only then removes it from INGEST. It is reported to
// quarantined first: if that fails, nothing was copied and the message is
// tried again later; if the copy fails, the message stays in INGEST and is
// reported and copied again later (a repeated report is harmless, a
// repeated copy outside the duplicate window would be a permanent one).
func (c *Conn) quarantine(ctx context.Context, log *slog.Logger, m jetstream.Msg, meta *jetstream.MsgMetadata, class, reason string, quarantined func(ctx context.Context, tenant, id, class string) error) {
	// Header values of a message that failed its checks: bounded and
	// printable before they are recorded anywhere.
	tenant, id := truncateHeader(m.Headers().Get(hdrTenant)), truncateHeader(m.Headers().Get(hdrID))
	if quarantined != nil {
		if err := quarantined(ctx, tenant, id, class); err != nil {
			log.Error("queue: message cannot be opened or parsed; kept queued until the quarantine is recorded", "seq", meta.Sequence.Stream, "err", err)
			_ = m.NakWithDelay(openRetryDelay)
			return
		}
	}
	q := nats.NewMsg("quarantine." + m.Subject())
	q.Data = m.Data()
	for k, v := range m.Headers() {
		q.Header[k] = v
	}
	q.Header.Set("Sealpost-Quarantine-Reason", truncateHeader(reason))
	q.Header.Del("Nats-Msg-Id")
	pctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	if _, err := c.js.PublishMsg(pctx, q, jetstream.WithExpectStream(QuarantineStream),
		jetstream.WithMsgID(fmt.Sprintf("q-%d", meta.Sequence.Stream))); err != nil {
		log.Error("queue: quarantine failed; the message stays queued", "seq", meta.Sequence.Stream, "err", err)
		_ = m.NakWithDelay(openRetryDelay)
		return
	}
	c.quarantined.Add(1)
	log.Error("queue: message cannot be opened or parsed; moved to quarantine",
		"seq", meta.Sequence.Stream, "tenant", tenant, "id", id, "class", class, "reason", reason)
	_ = m.Term()
}

func truncateHeader(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == utf8.RuneError {
			return '?'
		}
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > 200 {
		s = strings.ToValidUTF8(s[:200], "?")
	}
	return s
}

// Stop stops fetching and waits for in-flight deliveries to finish, or for
// ctx to end, whichever is first. Unfinished deliveries are redelivered later.
func (k *Consumer) Stop(ctx context.Context) {
	k.stopOnce.Do(func() { close(k.stopping) })
	k.alive.Store(false)
	k.mu.Lock()
	k.it.Drain()
	k.mu.Unlock()
	done := make(chan struct{})
	go func() { k.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		k.cancel()
		<-done
	}
}
