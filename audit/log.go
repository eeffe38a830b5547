package audit

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/sealpost/sealpost/queue"
	"github.com/sealpost/sealpost/signer"
)

// Stream names and subjects the audit log uses by default.
const (
	EntriesStream      = "AUDIT"
	EntriesSubject     = "audit.entries"
	CheckpointsStream  = "AUDIT_CHECKPOINTS"
	CheckpointsSubject = "audit.checkpoints"
	// LeaseBucket holds the checkpointer lease.
	LeaseBucket = "AUDIT_LEASE"
)

// DefaultRetention is 12 months plus a 30-day margin.
const DefaultRetention = (365 + 30) * 24 * time.Hour

// Sentinel errors.
var (
	// ErrClosed: the log was closed.
	ErrClosed = errors.New("audit log closed")
	// ErrReadOnly: the log was opened without signing keys or with ReadOnly.
	ErrReadOnly = errors.New("audit log is read-only")
	// ErrTampered: the stored log does not continue the signed tree; run
	// verify.
	ErrTampered = errors.New("audit log is inconsistent")
	// ErrNoCheckpoint: no signed checkpoint exists yet.
	ErrNoCheckpoint = errors.New("no audit checkpoint")
	// ErrUnavailable: the store did not accept the entries; temporary.
	ErrUnavailable = errors.New("audit store unavailable")
)

// KeySource hands out the keyring's signing keys: the current one and the
// previous ones still inside their grace period.
type KeySource interface {
	SigningKeys(ctx context.Context, now time.Time) (current signer.PrivateKey, previous []signer.PrivateKey, err error)
}

// Config configures a Log. Either Conn, or both Stream and Checkpoints, are
// required.
type Config struct {
	// Conn is used to declare the AUDIT and AUDIT_CHECKPOINTS streams (deny
	// delete, deny purge, MaxAge Retention, the connection's replica count)
	// when Stream and Checkpoints are nil, and the checkpointer lease's
	// bucket when Lease is nil.
	Conn *queue.Conn
	// Stream holds the entries and Checkpoints the signed checkpoints. When
	// set they are used as they are (tests, tools reading a copy).
	Stream, Checkpoints *queue.Stream
	// Lease elects the one instance that signs checkpoints. Nil with a Conn:
	// the "checkpointer" key of the AUDIT_LEASE bucket. Nil without a Conn:
	// this log always signs (one instance).
	Lease *queue.Lease
	// Subject entries are published on; default EntriesSubject. Checkpoint
	// is the checkpoints' subject; default CheckpointsSubject.
	Subject, CheckpointSubject string
	// Keys signs checkpoints. Nil makes the log read-only (verify, export of
	// the stored checkpoints).
	Keys KeySource
	// ReadOnly opens the log for reading only: Append and the checkpoint
	// loop are refused, Verify and Export work. For tools.
	ReadOnly bool
	// Origin is the checkpoint origin line and the note key name, e.g.
	// "sealpost.example/audit". Required; at most 255 bytes, no spaces,
	// control characters or '+'.
	Origin string
	// Retention is how long entries and checkpoints are kept. Default
	// DefaultRetention (395 days); at least MinRetention. Only used when
	// the streams are declared here.
	Retention time.Duration
	// BatchMax is the most entries written in one publish. Default 256.
	BatchMax int
	// BatchDelay is how long the writer waits for more entries after the
	// first one of a batch. Default 0: a batch is what queued up while the
	// previous publish was in flight (group commit without added latency).
	BatchDelay time.Duration
	// CheckpointEvery is how often a checkpoint is signed when entries were
	// appended. Default 1 minute.
	CheckpointEvery time.Duration
	// IdleCheckpointEvery is the longest time between checkpoints when
	// nothing was appended. Default 1 hour.
	IdleCheckpointEvery time.Duration
	// Writers is how many batches one instance has in flight to the store
	// at once, each on a hash chain of its own. Default 2: with every write
	// flushed, fewer and larger batches cost fewer flushes.
	Writers int
	// StoreTimeout bounds one publish attempt. Default 2s.
	StoreTimeout time.Duration
	// Tiles holds the proof tiles and Index the receipt index, which the
	// checkpointer writes and proofs read. Nil with a Conn and not
	// ReadOnly: the AUDIT_TILES bucket and the AUDIT_INDEX stream
	// (retention plus 30 days). Nil otherwise: no proofs
	// (ErrProofsUnavailable).
	Tiles *queue.KV
	Index *queue.Stream
	// IndexSubject prefixes the receipt index's subjects; default
	// IndexSubject.
	IndexSubject string
	// Outside receives a copy of every checkpoint stored; the checkpointer
	// and Verify compare the log with the newest copy there, the only way
	// a rollback of the whole store shows. Nil keeps no copies.
	Outside CheckpointSink
	// Witnesses cosign every checkpoint before it is stored (C2SP
	// tlog-witness), and Verify requires their quorum on the newest
	// checkpoint. Nil or empty: no witnesses.
	Witnesses *WitnessPolicy
	// WitnessTimeout bounds one witness's answer. Default 10s.
	WitnessTimeout time.Duration
	// HTTPClient calls the witnesses. Default: a client with
	// WitnessTimeout.
	HTTPClient *http.Client
	// RetryFor is how long the writer keeps trying to store a batch whose
	// publish failed (the same message, so JetStream keeps one copy) before
	// giving its entries up. Default 60s; at most a minute, inside
	// JetStream's two-minute duplicate window.
	RetryFor time.Duration
	Logger   *slog.Logger
	// Registerer receives the log's metrics; nil registers none.
	Registerer prometheus.Registerer
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// maxBatchBytes bounds one published message, well below the 1 MiB
// max_payload a NATS server has by default.
const maxBatchBytes = 256 << 10

var hasher = rfc6962.DefaultHasher

var rangeFactory = &compact.RangeFactory{Hash: hasher.HashChildren}

// Log is the append-only audit log.
//
// Appends from every instance go straight to the stream: each instance's
// writer publishes batches of records chained to its own previous records,
// so instances never wait for each other and the order of the leaves is
// the stream's order. The instance holding the checkpointer lease (Run)
// reads what was stored, integrates it into the Merkle tree and signs
// checkpoints.
type Log struct {
	cfg     Config
	log     *slog.Logger
	entries stream
	cps     *queue.Stream
	m       *metrics

	in      chan []*pending
	stop    chan struct{}
	done    chan struct{}
	closed  sync.Once
	closeMu sync.RWMutex
	closing bool

	// writers are the chains this instance writes, one goroutine each.
	writers []*writer
	// name is this instance's holder name for the checkpointer lease.
	name string

	// tmu guards the checkpointer's tree.
	tmu  sync.Mutex
	tree tree

	// exportSlots bounds the tenant exports (GET /v1/audit) running at
	// once: each reads the whole log to build its proofs.
	exportSlots chan struct{}

	cpMu     sync.Mutex
	lastCP   *checkpointRecord
	lastCPAt time.Time

	// Proof data: nil tiles means none is kept. keepProofs (guarded by
	// tmu) is set on the checkpointer.
	tiles      kvStore
	index      indexStream
	keepProofs bool
	proofSlots chan struct{}
	// wit submits checkpoints to the witnesses; nil without witnesses.
	wit *witnesses
	// broken is the inconsistency Consistent reports.
	broken atomic.Pointer[error]
}

// writer is one chain of records: only its goroutine touches it.
type writer struct {
	id   string
	next uint64 // number of the chain's next record
	last []byte // leaf hash of the chain's newest stored record
}

// restart starts a new chain: the last message of the old one may or may
// not have been stored.
func (w *writer) restart() { w.id, w.next, w.last = randomID(), 0, nil }

type pending struct {
	e    Entry
	done chan error // buffered: the writer never waits for a reader
	// async: nobody waits for done; the writer counts the outcome.
	async bool
}

// OpenStreams declares the audit streams on c: deny delete and purge, file
// storage, the connection's replica count, MaxAge retention.
func OpenStreams(ctx context.Context, c *queue.Conn, retention time.Duration) (entries, checkpoints *queue.Stream, err error) {
	if retention == 0 {
		retention = DefaultRetention
	}
	entries, err = c.Stream(ctx, queue.StreamConfig{Name: EntriesStream, Subjects: []string{EntriesSubject},
		MaxAge: retention, DenyDelete: true, DenyPurge: true})
	if err != nil {
		return nil, nil, fmt.Errorf("audit: %w", err)
	}
	// Checkpoints outlive the entries by a month so the oldest entries
	// always have a checkpoint to start from.
	checkpoints, err = c.Stream(ctx, queue.StreamConfig{Name: CheckpointsStream, Subjects: []string{CheckpointsSubject},
		MaxAge: retention + 30*24*time.Hour, DenyDelete: true, DenyPurge: true})
	if err != nil {
		return nil, nil, fmt.Errorf("audit: %w", err)
	}
	return entries, checkpoints, nil
}

// leaseTTL is how long the checkpointer lease lasts without renewal: the
// longest another instance waits to take checkpointing over.
const leaseTTL = 6 * time.Second

// Open opens the log and, unless ReadOnly, starts the writer. It reads
// nothing of the stored log: checkpointing (Run) checks that the stored
// entries continue the signed tree.
func Open(ctx context.Context, c Config) (*Log, error) {
	if c.Origin == "" {
		return nil, errors.New("audit: origin is required")
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	if c.Subject == "" {
		c.Subject = EntriesSubject
	}
	if c.CheckpointSubject == "" {
		c.CheckpointSubject = CheckpointsSubject
	}
	if c.Retention == 0 {
		c.Retention = DefaultRetention
	}
	if c.BatchMax <= 0 {
		c.BatchMax = 256
	}
	if c.CheckpointEvery <= 0 {
		c.CheckpointEvery = time.Minute
	}
	if c.IdleCheckpointEvery <= 0 {
		c.IdleCheckpointEvery = time.Hour
	}
	if c.StoreTimeout <= 0 {
		c.StoreTimeout = 2 * time.Second
	}
	if c.Writers <= 0 {
		c.Writers = 2
	}
	if c.RetryFor <= 0 || c.RetryFor > time.Minute {
		c.RetryFor = time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Keys == nil {
		c.ReadOnly = true
	}
	if c.IndexSubject == "" {
		c.IndexSubject = IndexSubject
	}
	if c.WitnessTimeout <= 0 {
		c.WitnessTimeout = DefaultWitnessTimeout
	}
	l := &Log{cfg: c, log: c.Logger, entries: c.Stream, cps: c.Checkpoints, m: newMetrics(c.Registerer),
		name: randomID(), exportSlots: make(chan struct{}, maxTenantExports), proofSlots: make(chan struct{}, maxProofsInFlight)}
	if l.entries == nil || l.cps == nil {
		if c.Conn == nil {
			return nil, errors.New("audit: conn or both streams are required")
		}
		var err error
		if l.entries, l.cps, err = OpenStreams(ctx, c.Conn, c.Retention); err != nil {
			return nil, err
		}
	}
	if c.Tiles == nil && c.Index == nil && c.Conn != nil && !c.ReadOnly {
		var err error
		if c.Tiles, c.Index, err = openProofStores(ctx, c.Conn, c.Retention); err != nil {
			return nil, err
		}
	}
	if c.Tiles != nil && c.Index != nil {
		l.tiles, l.index = c.Tiles, c.Index
	}
	if c.Witnesses.active() {
		l.wit = newWitnesses(c.Witnesses, c.HTTPClient, c.WitnessTimeout, c.Logger)
		l.m.quorum.Set(float64(c.Witnesses.Quorum))
	}
	if c.ReadOnly {
		return l, nil
	}
	if l.cfg.Lease == nil && c.Conn != nil {
		kv, err := c.Conn.KV(ctx, queue.KVConfig{Bucket: LeaseBucket})
		if err != nil {
			return nil, fmt.Errorf("audit: %w", err)
		}
		l.cfg.Lease = kv.Lease("checkpointer", l.name, leaseTTL, c.Now)
	}
	l.in = make(chan []*pending, 4*c.BatchMax)
	l.stop = make(chan struct{})
	l.done = make(chan struct{})
	var wg sync.WaitGroup
	for range c.Writers {
		w := &writer{}
		w.restart()
		l.writers = append(l.writers, w)
		wg.Go(func() { l.write(w) })
	}
	go func() { wg.Wait(); close(l.done) }()
	return l, nil
}

// randomID returns 8 random bytes in hex.
func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// MinRetention bounds Config.Retention from below: a log that forgets its
// entries within a day cannot be audited.
const MinRetention = 24 * time.Hour

// maxOriginLen bounds Config.Origin.
const maxOriginLen = 255

// Validate checks c's settings: Origin when it is set (Open requires it),
// Retention, BatchDelay and Witnesses, a zero value standing for its
// default. It does not look at the connection, streams and keys. Its
// errors name the setting; Open's add "audit:".
func (c Config) Validate() error {
	var errs []error
	if c.Origin != "" && (!validOrigin(c.Origin) || len(c.Origin) > maxOriginLen) {
		errs = append(errs, fmt.Errorf("origin %q must be at most %d bytes without spaces, control characters or '+'", c.Origin, maxOriginLen))
	}
	if c.Retention != 0 && c.Retention < MinRetention {
		errs = append(errs, fmt.Errorf("retention must be at least %s, got %s", MinRetention, c.Retention))
	}
	if c.BatchDelay < 0 {
		errs = append(errs, errors.New("batch delay must not be negative"))
	}
	if err := c.Witnesses.Check(); err != nil {
		errs = append(errs, fmt.Errorf("witnesses: %w", err))
	}
	return errors.Join(errs...)
}

// validOrigin reports whether s can be a checkpoint origin or note key
// name as far as its characters go: no spaces, control characters or '+'.
func validOrigin(s string) bool {
	for _, r := range s {
		if r <= ' ' || r == '+' || r == 0x7f {
			return false
		}
	}
	return true
}

// Append validates e, removes mail local parts, and returns once the entry
// is durable in JetStream. Concurrent Appends share publishes. An error
// wrapping ErrInvalidEntry is permanent; others are temporary.
func (l *Log) Append(ctx context.Context, e Entry) error {
	return l.AppendAll(ctx, e)
}

// AppendAll appends several entries, in order, and returns once all are
// durable; they usually share one publish. When any entry is invalid none is
// written. On another error some entries may have been written.
func (l *Log) AppendAll(ctx context.Context, es ...Entry) error {
	ps, err := l.prepare(es, false)
	if err != nil {
		return err
	}
	start := time.Now()
	if err := l.enqueue(ctx, ps); err != nil {
		return err
	}
	var first error
	for _, p := range ps {
		select {
		case err := <-p.done:
			if err != nil && first == nil {
				first = err
			}
		case <-ctx.Done():
			// The entries may still be written; the caller treats them as
			// not durable.
			return fmt.Errorf("audit: append: %w", ctx.Err())
		}
	}
	l.m.appendSeconds.Observe(time.Since(start).Seconds())
	if first != nil {
		l.m.appends.WithLabelValues("error").Add(float64(len(ps)))
		return first
	}
	l.m.appends.WithLabelValues("ok").Add(float64(len(ps)))
	return nil
}

// AppendAsync queues entries to be written with the next batch and returns
// without waiting for them to be durable: for records that must not hold up
// an answer and whose loss costs no message. Invalid entries and a closed
// log are errors; a failed write is logged and counted
// (sealpost_audit_appends_total{result="error"}). Close writes what is
// queued.
func (l *Log) AppendAsync(ctx context.Context, es ...Entry) error {
	ps, err := l.prepare(es, true)
	if err != nil {
		return err
	}
	return l.enqueue(ctx, ps)
}

// prepare normalizes and validates entries for the writer.
func (l *Log) prepare(es []Entry, async bool) ([]*pending, error) {
	if l.cfg.ReadOnly {
		return nil, ErrReadOnly
	}
	now := l.cfg.Now()
	ps := make([]*pending, len(es))
	for i, e := range es {
		e = normalize(e, now)
		if err := validate(&e); err != nil {
			l.m.appends.WithLabelValues("invalid").Add(float64(len(es)))
			return nil, err
		}
		// Report size errors to the caller, not the batch: an entry that
		// cannot be too large even with every byte escaped passes at once,
		// others are encoded as the writer will.
		if maxRecordSize(&e) > MaxEntrySize {
			if _, err := encodeRecord(e, head{v: recordV2, writer: "0123456789abcdef", n: maxIndex, prev: make([]byte, sha256.Size)}); err != nil {
				l.m.appends.WithLabelValues("invalid").Add(float64(len(es)))
				return nil, err
			}
		}
		ps[i] = &pending{e: e, done: make(chan error, 1), async: async}
	}
	return ps, nil
}

// enqueue hands entries to the writer, refusing them once Close began so
// that every queued entry is answered.
func (l *Log) enqueue(ctx context.Context, ps []*pending) error {
	l.closeMu.RLock()
	defer l.closeMu.RUnlock()
	if l.closing {
		return ErrClosed
	}
	// The entries travel together so they share a publish.
	select {
	case l.in <- ps:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("audit: append: %w", ctx.Err())
	}
}

// write is the goroutine of one writer: it publishes what queued up while
// its previous batch was in flight. Entries of one Append call travel
// together and so share a batch and a chain.
func (l *Log) write(w *writer) {
	var batch []*pending
	for {
		batch = batch[:0]
		select {
		case g := <-l.in:
			batch = append(batch, g...)
		case <-l.stop:
			l.drain(w)
			return
		}
		batch = l.fill(batch)
		l.commit(w, batch)
	}
}

// fill adds queued entries to batch, waiting up to BatchDelay for more.
func (l *Log) fill(batch []*pending) []*pending {
	var timer <-chan time.Time
	if l.cfg.BatchDelay > 0 {
		t := time.NewTimer(l.cfg.BatchDelay)
		defer t.Stop()
		timer = t.C
	}
	for len(batch) < l.cfg.BatchMax {
		select {
		case g := <-l.in:
			batch = append(batch, g...)
			continue
		default:
		}
		if timer == nil {
			return batch
		}
		select {
		case g := <-l.in:
			batch = append(batch, g...)
		case <-timer:
			return batch
		case <-l.stop:
			return batch
		}
	}
	return batch
}

// drain commits what is queued at Close.
func (l *Log) drain(w *writer) {
	for {
		var batch []*pending
		for len(batch) < l.cfg.BatchMax {
			select {
			case g := <-l.in:
				batch = append(batch, g...)
				continue
			default:
			}
			break
		}
		if len(batch) == 0 {
			return
		}
		l.commit(w, batch)
	}
}

// commit writes batch as one or more messages and answers every waiter.
func (l *Log) commit(w *writer, batch []*pending) {
	for len(batch) > 0 {
		n, err := l.publish(w, batch)
		for _, p := range batch[:n] {
			p.done <- err
			if p.async {
				result := "ok"
				if err != nil {
					result = "error"
					l.log.Error("audit: entry not written", "action", p.e.Action, "target", p.e.Target, "err", err)
				}
				l.m.appends.WithLabelValues(result).Inc()
			}
		}
		batch = batch[n:]
	}
}

// publish writes a prefix of batch as one message, chained to w's previous
// one, and returns its length. A failed publish is
// repeated with the same bytes and message id, so JetStream stores it once
// even when an earlier answer was lost; after RetryFor the entries are
// given up and the writer starts a new chain, since its last message may or
// may not have been stored.
func (l *Log) publish(w *writer, batch []*pending) (int, error) {
	var data []byte
	prev := w.last
	n := 0
	for _, p := range batch {
		rec, err := encodeRecord(p.e, head{v: recordV2, writer: w.id, n: w.next + uint64(n), prev: prev})
		if err != nil { // checked in Append; only a bug gets here
			return max(n, 1), err
		}
		if n > 0 && len(data)+1+len(rec) > maxBatchBytes {
			break
		}
		if n > 0 {
			data = append(data, '\n')
		}
		data = append(data, rec...)
		prev = leafHash(rec)
		n++
	}
	msgID := "audit-" + w.id + "-" + strconv.FormatUint(w.next, 10)
	hdr := map[string]string{"Audit-Writer": w.id, "Audit-N": strconv.FormatUint(w.next, 10), "Audit-Count": strconv.Itoa(n)}
	start := l.cfg.Now()
	backoff := 50 * time.Millisecond
	for {
		ctx, cancel := context.WithTimeout(context.Background(), l.cfg.StoreTimeout)
		_, _, err := l.entries.AppendOnce(ctx, l.cfg.Subject, msgID, hdr, data)
		cancel()
		if err == nil {
			w.next += uint64(n)
			w.last = prev
			l.m.publishes.Inc()
			l.m.publishSecs.Observe(l.cfg.Now().Sub(start).Seconds())
			l.m.batchSize.Observe(float64(n))
			return n, nil
		}
		if l.cfg.Now().Sub(start)+backoff >= l.cfg.RetryFor {
			l.log.Error("audit: publish failed; entries given up, starting a new chain", "entries", n, "err", err)
			w.restart()
			return n, fmt.Errorf("audit: %w: %w", ErrUnavailable, err)
		}
		select {
		case <-l.stop:
			// Closing: no more than one store timeout of retries.
			if l.cfg.Now().Sub(start) > l.cfg.StoreTimeout {
				w.restart()
				return n, fmt.Errorf("audit: %w: %w", ErrUnavailable, err)
			}
		default:
		}
		l.log.Warn("audit: publish failed; retrying", "entries", n, "err", err)
		time.Sleep(backoff)
		// At most 250 ms apart: a new stream leader is found soon after
		// the election, and a failed attempt costs one small request.
		backoff = min(2*backoff, 250*time.Millisecond)
	}
}

// Close stops accepting entries, writes the queued ones, and, on the
// instance that holds the checkpointer lease, signs a final checkpoint when
// entries were added since the last one and gives the lease up.
func (l *Log) Close(ctx context.Context) error {
	if l.cfg.ReadOnly {
		return nil
	}
	l.closed.Do(func() {
		l.closeMu.Lock()
		l.closing = true
		l.closeMu.Unlock()
		close(l.stop)
	})
	select {
	case <-l.done:
	case <-ctx.Done():
		return fmt.Errorf("audit: close: %w", ctx.Err())
	}
	if !l.leader(ctx) {
		return nil
	}
	defer l.releaseLease(ctx)
	if l.Consistent() != nil {
		// Nothing can be signed over it; it was reported when found.
		return nil
	}
	if _, err := l.checkpointIfGrown(ctx); err != nil {
		return fmt.Errorf("audit: close: %w", err)
	}
	return nil
}
