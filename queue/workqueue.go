package queue

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// WorkQueueConfig declares a small durable work queue: a stream with
// work-queue retention (a message leaves it once acknowledged) and one
// durable consumer shared by every instance.
type WorkQueueConfig struct {
	// Name of the stream and of its consumer, and the subjects it holds.
	Name     string
	Subjects []string
	// MaxAge drops a job that was not finished within it. Required.
	MaxAge time.Duration
	// MaxBytes bounds the stream; Add is refused once it is full (jobs
	// are never dropped to make room). Required.
	MaxBytes int64
	// Workers is how many jobs run at once per instance. Default 4.
	Workers int
	// AckWait is how long a job may run before JetStream hands it to
	// another instance; a handler's context ends at half of it. Default
	// 60s.
	AckWait time.Duration
	// MaxPending bounds the jobs handed out and not finished, those
	// waiting out a retry delay included: at the bound nothing else is
	// handed out, so it must exceed the jobs that can be in retry at once.
	// Default 10,000.
	MaxPending int
	Logger     *slog.Logger
}

// WorkQueue holds jobs until a handler finishes them.
type WorkQueue struct {
	c    *Conn
	cfg  WorkQueueConfig
	s    jetstream.Stream
	log  *slog.Logger
	wg   sync.WaitGroup
	mu   sync.Mutex
	stop context.CancelFunc
	// held are jobs whose handler asked for a retry while stopping: they
	// are handed back once this instance fetches no more, so that it does
	// not take them again itself.
	held []jetstream.Msg
}

// Job is one queued job handed to a handler.
type Job struct {
	Subject string
	Data    []byte
	// Tries counts the times the job was handed out, this one included.
	Tries int
}

// JobOutcome is what a handler decided for a Job.
type JobOutcome struct {
	retry bool
	delay time.Duration
}

// JobDone finishes a job, whether it succeeded or was given up: it leaves
// the queue.
func JobDone() JobOutcome { return JobOutcome{} }

// JobRetry hands the job out again after delay.
func JobRetry(delay time.Duration) JobOutcome { return JobOutcome{retry: true, delay: max(delay, 0)} }

// WorkQueue declares the stream and its consumer.
func (c *Conn) WorkQueue(ctx context.Context, cfg WorkQueueConfig) (*WorkQueue, error) {
	if cfg.Name == "" || len(cfg.Subjects) == 0 || cfg.MaxAge <= 0 || cfg.MaxBytes <= 0 {
		return nil, errors.New("queue: work queue: name, subjects, max age and max bytes are required")
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = time.Minute
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 10_000
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s, err := c.ensureStream(ctx, jetstream.StreamConfig{
		Name: cfg.Name, Subjects: cfg.Subjects, Retention: jetstream.WorkQueuePolicy,
		Storage: jetstream.FileStorage, Replicas: c.replicas(), MaxAge: cfg.MaxAge, MaxBytes: cfg.MaxBytes,
		Discard: jetstream.DiscardNew, Duplicates: min(2*time.Minute, cfg.MaxAge),
	})
	if err != nil {
		return nil, err
	}
	q := &WorkQueue{c: c, cfg: cfg, s: s, log: cfg.Logger}
	if _, err := q.consumer(ctx); err != nil {
		return nil, err
	}
	return q, nil
}

func (q *WorkQueue) consumer(ctx context.Context) (jetstream.Consumer, error) {
	var cons jetstream.Consumer
	err := q.c.retryProvision(ctx, "consumer "+q.cfg.Name, func(ctx context.Context) error {
		var err error
		cons, err = q.c.js.CreateOrUpdateConsumer(ctx, q.cfg.Name, jetstream.ConsumerConfig{
			Durable:       q.cfg.Name,
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       q.cfg.AckWait,
			MaxDeliver:    -1,
			MaxAckPending: q.cfg.MaxPending,
		})
		return err
	})
	return cons, err
}

// NewJob is a job to add.
type NewJob struct {
	Subject string
	// MsgID, when set, drops a repeat added within two minutes.
	MsgID string
	Data  []byte
}

// Add stores jobs and returns once every one is durable; the writes go out
// together. It answers how many were stored: all of them, or on an error
// those that were.
func (q *WorkQueue) Add(ctx context.Context, jobs ...NewJob) (int, error) {
	opts := func(j NewJob) []jetstream.PublishOpt {
		o := []jetstream.PublishOpt{jetstream.WithExpectStream(q.cfg.Name)}
		if j.MsgID != "" {
			o = append(o, jetstream.WithMsgID(j.MsgID))
		}
		return o
	}
	if len(jobs) == 1 {
		if _, err := q.c.js.Publish(ctx, jobs[0].Subject, jobs[0].Data, opts(jobs[0])...); err != nil {
			return 0, fmt.Errorf("queue: add to %s: %w", q.cfg.Name, err)
		}
		return 1, nil
	}
	var (
		futures = make([]jetstream.PubAckFuture, 0, len(jobs))
		first   error
	)
	for _, j := range jobs {
		f, err := q.c.js.PublishAsync(j.Subject, j.Data, opts(j)...)
		if err != nil {
			first = err
			break
		}
		futures = append(futures, f)
	}
	stored := 0
	for _, f := range futures {
		select {
		case <-f.Ok():
			stored++
		case err := <-f.Err():
			first = cmp.Or(first, err)
		case <-ctx.Done():
			first = cmp.Or(first, ctx.Err())
		}
	}
	if first != nil {
		return stored, fmt.Errorf("queue: add to %s: %w", q.cfg.Name, first)
	}
	return stored, nil
}

// Purge removes the jobs on subject (a tenant's, when it is deleted).
func (q *WorkQueue) Purge(ctx context.Context, subject string) error {
	if err := q.s.Purge(ctx, jetstream.WithPurgeSubject(subject)); err != nil {
		return fmt.Errorf("queue: purge %s %s: %w", q.cfg.Name, subject, err)
	}
	return nil
}

// Pending counts the jobs not yet finished.
func (q *WorkQueue) Pending(ctx context.Context) (uint64, error) {
	info, err := q.s.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("queue: %s: %w", q.cfg.Name, err)
	}
	return info.State.Msgs, nil
}

// Run hands jobs to h, Workers at a time, until ctx ends or Stop. A
// handler's context ends at half the ack wait, or when Run's does; a job
// whose handler asks for a retry once Run's context ended is handed out
// again at once, after this instance stopped fetching (to another
// instance, or after a restart). A failed pull is set up again with
// backoff.
func (q *WorkQueue) Run(ctx context.Context, h func(ctx context.Context, j Job) JobOutcome) {
	ctx, cancel := context.WithCancel(ctx)
	q.mu.Lock()
	q.stop = cancel
	q.mu.Unlock()
	q.wg.Add(1)
	go func() {
		defer q.wg.Done()
		slots := make(chan struct{}, q.cfg.Workers)
		const minBackoff = 100 * time.Millisecond
		backoff := minBackoff
		for ctx.Err() == nil {
			fetched, err := q.pull(ctx, slots, h)
			if ctx.Err() != nil {
				break
			}
			if fetched {
				backoff = minBackoff
			}
			q.log.Warn("queue: work queue pull ended; pulling again", "queue", q.cfg.Name, "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 10*time.Second)
		}
		for range cap(slots) { // wait for the running handlers
			slots <- struct{}{}
		}
		q.mu.Lock()
		held := q.held
		q.held = nil
		q.mu.Unlock()
		for _, m := range held {
			_ = m.Nak()
		}
	}()
}

// pollEvery is how often an idle work queue asks for jobs.
const pollEvery = 250 * time.Millisecond

// pull fetches jobs for the free workers until ctx ends or a fetch fails,
// and reports whether a fetch succeeded. It fetches no more than there are
// free workers and leaves no fetch waiting on the server, so no job is
// delivered to an instance that is not working on it, also when it stops.
func (q *WorkQueue) pull(ctx context.Context, slots chan struct{}, h func(ctx context.Context, j Job) JobOutcome) (bool, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	cons, err := q.consumer(cctx)
	cancel()
	if err != nil {
		return false, err
	}
	fetched := false
	for ctx.Err() == nil {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return fetched, ctx.Err()
		}
		free := 1
		for free < cap(slots) {
			select {
			case slots <- struct{}{}:
				free++
				continue
			default:
			}
			break
		}
		batch, err := cons.FetchNoWait(free)
		if err != nil {
			for range free {
				<-slots
			}
			return fetched, err
		}
		got := 0
		for m := range batch.Messages() {
			got++
			free--
			if ctx.Err() != nil {
				q.hold(m)
				<-slots
				continue
			}
			go func() {
				defer func() { <-slots }()
				q.handle(ctx, m, h)
			}()
		}
		for range free {
			<-slots
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
			return fetched, err
		}
		fetched = true
		if got == 0 {
			select {
			case <-ctx.Done():
			case <-time.After(pollEvery):
			}
		}
	}
	return fetched, ctx.Err()
}

// hold keeps m to be handed back when Run ends.
func (q *WorkQueue) hold(m jetstream.Msg) {
	q.mu.Lock()
	q.held = append(q.held, m)
	q.mu.Unlock()
}

func (q *WorkQueue) handle(ctx context.Context, m jetstream.Msg, h func(ctx context.Context, j Job) JobOutcome) {
	meta, err := m.Metadata()
	if err != nil {
		q.log.Error("queue: job without metadata", "queue", q.cfg.Name, "err", err)
		_ = m.NakWithDelay(time.Minute)
		return
	}
	jctx, cancel := context.WithTimeout(ctx, q.cfg.AckWait/2)
	out := h(jctx, Job{Subject: m.Subject(), Data: m.Data(), Tries: int(meta.NumDelivered)})
	cancel()
	if ctx.Err() != nil && out.retry { // stopping: another instance (or the next start) takes it
		q.hold(m)
		return
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if !out.retry {
		err = m.DoubleAck(actx)
	} else {
		err = m.NakWithDelay(out.delay)
	}
	if err != nil {
		q.log.Warn("queue: job not settled; it comes back after the ack wait", "queue", q.cfg.Name, "err", err)
	}
}

// Stop ends Run and waits for the running handlers.
func (q *WorkQueue) Stop() {
	q.mu.Lock()
	stop := q.stop
	q.mu.Unlock()
	if stop != nil {
		stop()
	}
	q.wg.Wait()
}
