package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sealpost/sealpost/ingress"
	"github.com/sealpost/sealpost/keyring/kms"
)

// ConsumerConfig configures the durable consumer of INGEST.
type ConsumerConfig struct {
	// Name of the durable consumer, shared by every instance. Default "forwarder".
	Name string
	// Workers is the number of handler calls running at once per
	// instance. Default 16.
	Workers int
	// MaxBatch is the most submissions one handler call gets: the INGEST
	// messages waiting when a worker is free are handled together, so that
	// their writes are shared. Default 256.
	MaxBatch int
	// AckWait is how long a message may go without a sign of life before
	// JetStream hands it to another instance: the consumer tells JetStream
	// the message is in progress every AckWait/3 while its handler runs, so
	// this is about how long a message that was in flight when an instance
	// died waits before it is delivered again. Default 30s.
	AckWait time.Duration
	// MaxAckPending bounds the messages delivered and not yet acked,
	// including those waiting for a retry (a retry keeps a message pending
	// until its delay ends). At the bound JetStream hands out nothing new,
	// so it must exceed the retry backlog a dead endpoint can build up.
	// Default 250,000.
	MaxAckPending int
	// Quarantined, when set, is called once a submission that cannot be
	// opened or parsed was copied to QUARANTINE, with the tenant and id
	// from its record and the class of the problem ("unopenable" or
	// "invalid"). The submission leaves INGEST only once it returns nil
	// (for example once an audit entry is durable); an error keeps it
	// queued for a later try.
	Quarantined func(ctx context.Context, tenant, id, class string) error
	Logger      *slog.Logger
	// Registerer receives the consumer's metrics; nil registers none.
	Registerer prometheus.Registerer
}

// Delivery is one queued submission handed to the handler, already opened.
type Delivery struct {
	Submission *ingress.Submission
	// Attempt is the number of delivery attempts made before this message
	// was queued, as the message records it. When Redelivered, the
	// worker's own records may know of later ones.
	Attempt int
	// Due is when the next attempt may be made; zero means now.
	Due time.Time
	// Redelivered is set when JetStream delivered the message before (an
	// instance died or a settle failed part-way): some of the work may
	// already be done.
	Redelivered bool
	// Queued is when the message was stored in INGEST.
	Queued time.Time
}

// Outcome is what a handler decided for one Delivery; the consumer
// settles the message holding it accordingly.
type Outcome struct {
	retry   bool
	delay   time.Duration
	attempt int
}

// Ack is the outcome of a submission that is finished: delivered, dead
// lettered or refused for good. It leaves the queue.
func Ack() Outcome { return Outcome{} }

// Retry is the outcome of a submission to be handed out again after
// delay, with attempts the number of delivery attempts made so far
// (unchanged when sealpost itself could not proceed or the attempt was
// deferred).
func Retry(delay time.Duration, attempts int) Outcome {
	return Outcome{retry: true, delay: max(delay, 0), attempt: attempts}
}

// IsRetry reports whether o hands the submission out again.
func (o Outcome) IsRetry() bool { return o.retry }

// Delay is how long a retry waits.
func (o Outcome) Delay() time.Duration { return o.delay }

// Attempts is the number of attempts a retry has made so far.
func (o Outcome) Attempts() int { return o.attempt }

// Handler handles the submissions of one INGEST message and returns one
// Outcome per Delivery, in order. It must not keep ds.
type Handler func(ctx context.Context, ds []*Delivery) []Outcome

// Consumer feeds INGEST messages to a Handler on a pool of workers and
// settles them by the outcomes it returns.
type Consumer struct {
	c        *Conn
	cfg      ConsumerConfig
	log      *slog.Logger
	sealer   Sealer
	h        Handler
	mu       sync.Mutex
	it       jetstream.MessagesContext
	alive    atomic.Bool
	stopping chan struct{}
	stopOnce sync.Once
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	settled  *prometheus.CounterVec
}

// openRetryDelay is how long a message waits when the KMS could not open it
// or settling it failed.
const openRetryDelay = 30 * time.Second

// Consume starts workers that open each INGEST message's submissions with
// s, pass them to h and settle the message. Stop ends them. If the server
// ends the pull (the consumer was deleted, a cluster leader changed) the
// consumer is declared again and fetching resumes; Alive reports whether it
// is fetching.
func (c *Conn) Consume(ctx context.Context, cfg ConsumerConfig, s Sealer, h Handler) (*Consumer, error) {
	if cfg.Name == "" {
		cfg.Name = "forwarder"
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 16
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 256
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = 30 * time.Second
	}
	if cfg.MaxAckPending <= 0 {
		cfg.MaxAckPending = 250_000
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	k := &Consumer{c: c, cfg: cfg, log: log, sealer: s, h: h, cancel: cancel, stopping: make(chan struct{}),
		settled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sealpost_queue_submissions_settled_total",
			Help: "Queued submissions settled by outcome: ack (finished), retry (handed out again later), quarantined.",
		}, []string{"outcome"})}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(k.settled); err != nil {
			cancel()
			return nil, fmt.Errorf("queue: consumer metrics: %w", err)
		}
	}
	if err := k.subscribe(ctx); err != nil {
		cancel()
		return nil, err
	}
	// Messages wait here while every worker is busy, so that a worker that
	// frees up takes many at once (gather).
	msgs := make(chan jetstream.Msg, cfg.MaxBatch)
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
				k.handle(wctx, k.gather(m, msgs))
			}
		}()
	}
	return k, nil
}

// subscribe declares the durable consumer and starts a pull iterator.
func (k *Consumer) subscribe(ctx context.Context) error {
	var cons jetstream.Consumer
	err := k.c.retryProvision(ctx, "consumer "+k.cfg.Name, func(ctx context.Context) error {
		var err error
		cons, err = k.c.js.CreateOrUpdateConsumer(ctx, IngestStream, jetstream.ConsumerConfig{
			Durable:       k.cfg.Name,
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       k.cfg.AckWait,
			MaxDeliver:    -1,
			MaxAckPending: k.cfg.MaxAckPending,
			FilterSubject: "ingest.>",
		})
		return err
	})
	if err != nil {
		return err
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(k.cfg.MaxBatch))
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

// gather adds to first the messages already waiting, up to MaxBatch
// submissions (as the messages' headers count them).
func (k *Consumer) gather(first jetstream.Msg, msgs <-chan jetstream.Msg) []jetstream.Msg {
	batch := []jetstream.Msg{first}
	n := memberCount(first)
	for n < k.cfg.MaxBatch {
		select {
		case m, ok := <-msgs:
			if !ok {
				return batch
			}
			batch = append(batch, m)
			n += memberCount(m)
		default:
			return batch
		}
	}
	return batch
}

func memberCount(m jetstream.Msg) int {
	n, err := strconv.Atoi(m.Headers().Get(hdrCount))
	if err != nil || n < 1 {
		return 1
	}
	return n
}

// inMsg is one INGEST message of a batch.
type inMsg struct {
	m        jetstream.Msg
	meta     *jetstream.MsgMetadata
	members  []*member
	outcomes []Outcome
}

// handle opens the messages of a batch, runs the handler once on every
// submission that opened, and settles each message.
func (k *Consumer) handle(ctx context.Context, batch []jetstream.Msg) {
	stop := k.keepAlive(batch)
	defer stop()
	var (
		ims  []*inMsg
		ds   []*Delivery
		back []*Outcome // where each Delivery's outcome goes
	)
	for _, m := range batch {
		meta, err := m.Metadata()
		if err != nil {
			k.log.Error("queue: message without metadata", "err", err)
			_ = m.NakWithDelay(openRetryDelay)
			continue
		}
		members, err := decodeBundle(m.Headers(), m.Data())
		if err != nil {
			k.quarantineMessage(ctx, m, meta, err)
			continue
		}
		im := &inMsg{m: m, meta: meta, members: members, outcomes: make([]Outcome, len(members))}
		ims = append(ims, im)
		for i, mb := range members {
			d, out, ok := k.open(ctx, mb, meta)
			if !ok {
				im.outcomes[i] = out
				continue
			}
			ds = append(ds, d)
			back = append(back, &im.outcomes[i])
		}
	}
	if len(ds) > 0 {
		res := k.h(ctx, ds)
		if len(res) != len(ds) {
			k.log.Error("queue: handler returned the wrong number of outcomes; retrying the messages", "want", len(ds), "got", len(res))
			for _, im := range ims {
				_ = im.m.NakWithDelay(openRetryDelay)
			}
			return
		}
		for i, o := range res {
			*back[i] = o
		}
	}
	for _, im := range ims {
		k.settle(ctx, im.m, im.meta, im.members, im.outcomes)
	}
}

// keepAlive tells JetStream the messages are being worked on every third of
// the ack wait until stop is called.
func (k *Consumer) keepAlive(batch []jetstream.Msg) (stop func()) {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(k.cfg.AckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				for _, m := range batch {
					_ = m.InProgress()
				}
			}
		}
	}()
	return func() { close(done) }
}

// open opens one member. When it cannot be handed to the handler, ok is
// false and out says what becomes of it.
func (k *Consumer) open(ctx context.Context, mb *member, meta *jetstream.MsgMetadata) (d *Delivery, out Outcome, ok bool) {
	body, err := k.sealer.Open(ctx, kms.Context{Tenant: mb.tenant, Purpose: kms.PurposeIngest, ObjectID: mb.id}, mb.sealed)
	if err != nil {
		if errors.Is(err, kms.ErrUnavailable) {
			k.log.Warn("queue: cannot open a submission now; retrying", "id", mb.id, "err", err)
			return nil, Retry(openRetryDelay, mb.attempt), false
		}
		// Sealed under another key (provider or key changed, another
		// instance's local master key) or altered in the store.
		return nil, k.quarantineMember(ctx, mb, meta, "unopenable", err), false
	}
	sub, err := ingress.DecodeSubmission(body)
	if err == nil && (sub.Tenant != mb.tenant || sub.ID != mb.id) {
		err = errors.New("record does not match the sealed submission")
	}
	if err != nil {
		return nil, k.quarantineMember(ctx, mb, meta, "invalid", err), false
	}
	return &Delivery{Submission: sub, Attempt: mb.attempt, Due: mb.due, Redelivered: meta.NumDelivered > 1,
		Queued: meta.Timestamp}, Outcome{}, true
}

// settle removes a message whose submissions are all finished. Submissions
// to be retried go back: the whole message with a delay when none of them
// changed (nothing was attempted), otherwise each in a message of its own
// carrying its new schedule, stored before the original is removed.
func (k *Consumer) settle(ctx context.Context, m jetstream.Msg, meta *jetstream.MsgMetadata, members []*member, outcomes []Outcome) {
	var retries []int
	unchanged := true
	var minDelay time.Duration
	for i, o := range outcomes {
		if !o.retry {
			continue
		}
		if len(retries) == 0 || o.delay < minDelay {
			minDelay = o.delay
		}
		retries = append(retries, i)
		if o.attempt != members[i].attempt {
			unchanged = false
		}
	}
	if len(retries) == len(members) && unchanged {
		if err := m.NakWithDelay(minDelay); err != nil {
			k.log.Warn("queue: nak failed; the ack wait hands the message out again", "err", err)
		}
		k.settled.WithLabelValues("retry").Add(float64(len(retries)))
		return
	}
	now := time.Now()
	for _, i := range retries {
		o, mb := outcomes[i], members[i]
		next := &member{tenant: mb.tenant, id: mb.id, attempt: o.attempt, due: now.Add(o.delay), sealed: mb.sealed}
		pctx, cancel := context.WithTimeout(ctx, publishTimeout)
		// The id names the submission and its attempt count, so a repeat
		// of this settle (after a failed ack) is stored once.
		_, err := k.c.js.PublishMsg(pctx, bundleMsg([]*member{next}), jetstream.WithExpectStream(IngestStream),
			jetstream.WithMsgID(mb.id+".a"+strconv.Itoa(o.attempt)))
		cancel()
		if err != nil {
			k.log.Warn("queue: requeueing a retry failed; the message comes back later", "id", mb.id, "err", err)
			_ = m.NakWithDelay(openRetryDelay)
			return
		}
	}
	if err := m.Ack(); err != nil {
		k.log.Warn("queue: ack failed; the message comes back and its finished submissions are recognised", "seq", meta.Sequence.Stream, "err", err)
	}
	k.settled.WithLabelValues("retry").Add(float64(len(retries)))
	k.settled.WithLabelValues("ack").Add(float64(len(members) - len(retries)))
}

// publishTimeout bounds the wait for JetStream's acknowledgement of a
// requeue or quarantine copy.
const publishTimeout = 10 * time.Second

// quarantineMessage moves a whole message that does not decode to
// QUARANTINE, still sealed, and only then removes it from INGEST.
func (k *Consumer) quarantineMessage(ctx context.Context, m jetstream.Msg, meta *jetstream.MsgMetadata, cause error) {
	tenant, id := truncateHeader(m.Headers().Get(hdrTenant)), truncateHeader(m.Headers().Get(hdrID))
	q := nats.NewMsg("quarantine." + m.Subject())
	q.Data = m.Data()
	for h, v := range m.Headers() {
		q.Header[h] = v
	}
	if err := k.copyToQuarantine(ctx, q, fmt.Sprintf("q-%d", meta.Sequence.Stream), tenant, id, "invalid", cause); err != nil {
		_ = m.NakWithDelay(openRetryDelay)
		return
	}
	k.settled.WithLabelValues("quarantined").Inc()
	_ = m.Term()
}

// quarantineMember copies one submission that cannot be opened or parsed,
// still sealed, to QUARANTINE; the outcome removes it from its message once
// the copy is stored, and keeps it queued otherwise.
func (k *Consumer) quarantineMember(ctx context.Context, mb *member, meta *jetstream.MsgMetadata, class string, cause error) Outcome {
	q := bundleMsg([]*member{mb})
	q.Subject = "quarantine." + ingestSubject
	if err := k.copyToQuarantine(ctx, q, fmt.Sprintf("q-%d-%s", meta.Sequence.Stream, mb.id), mb.tenant, mb.id, class, cause); err != nil {
		return Retry(openRetryDelay, mb.attempt)
	}
	k.settled.WithLabelValues("quarantined").Inc()
	return Ack()
}

// copyToQuarantine reports a quarantine and then stores its copy. It is
// reported first: if that fails, nothing was copied and the message is
// tried again later; if the copy fails, it is reported and copied again
// later (a repeated report is harmless, a repeated copy outside the
// duplicate window would be a permanent one).
func (k *Consumer) copyToQuarantine(ctx context.Context, q *nats.Msg, msgID, tenant, id, class string, cause error) error {
	tenant, id = truncateHeader(tenant), truncateHeader(id)
	if k.cfg.Quarantined != nil {
		if err := k.cfg.Quarantined(ctx, tenant, id, class); err != nil {
			k.log.Error("queue: submission cannot be opened or parsed; kept queued until the quarantine is recorded", "id", id, "err", err)
			return err
		}
	}
	q.Header.Set("Sealpost-Quarantine-Reason", truncateHeader(cause.Error()))
	q.Header.Del("Nats-Msg-Id")
	pctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	if _, err := k.c.js.PublishMsg(pctx, q, jetstream.WithExpectStream(QuarantineStream), jetstream.WithMsgID(msgID)); err != nil {
		k.log.Error("queue: quarantine failed; the submission stays queued", "id", id, "err", err)
		return err
	}
	k.c.quarantined.Add(1)
	k.log.Error("queue: submission cannot be opened or parsed; moved to quarantine",
		"tenant", tenant, "id", id, "class", class, "reason", truncateHeader(cause.Error()))
	return nil
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

// Stop stops fetching and waits for in-flight messages to be handled and
// settled, or for ctx to end, whichever is first. Unfinished messages are
// handed out again later.
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
