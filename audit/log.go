package audit

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
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
)

// DefaultRetention is 12 months plus a 30-day margin.
const DefaultRetention = (365 + 30) * 24 * time.Hour

// Sentinel errors.
var (
	// ErrClosed: the log was closed.
	ErrClosed = errors.New("audit log closed")
	// ErrReadOnly: the log was opened without signing keys or with ReadOnly.
	ErrReadOnly = errors.New("audit log is read-only")
	// ErrTampered: the stored log does not continue the tree this process
	// knows; run verify.
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
	// when Stream and Checkpoints are nil.
	Conn *queue.Conn
	// Stream holds the entries and Checkpoints the signed checkpoints. When
	// set they are used as they are (tests, tools reading a copy).
	Stream, Checkpoints *queue.Stream
	// Subject entries are published on; default EntriesSubject. Checkpoint
	// is the checkpoints' subject; default CheckpointsSubject.
	Subject, CheckpointSubject string
	// Keys signs checkpoints. Nil makes the log read-only (verify, export of
	// the stored checkpoints).
	Keys KeySource
	// ReadOnly opens the log without recovering the tree: Append and the
	// checkpoint loop are refused, Verify and Export work. For tools.
	ReadOnly bool
	// Origin is the checkpoint origin line and the note key name, e.g.
	// "sealpost.example/audit". Required; no spaces or '+'.
	Origin string
	// Retention is how long entries and checkpoints are kept. Default
	// DefaultRetention (395 days). Only used when the streams are declared
	// here.
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
	// StoreTimeout bounds one publish. Default 5s.
	StoreTimeout time.Duration
	Logger       *slog.Logger
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

	// mu guards the tree state below. The writer holds it while publishing
	// so checkpoints see whole batches.
	mu       sync.Mutex
	rng      *compact.Range // [0, size)
	lastLeaf []byte         // leaf hash of record size-1
	lastAt   time.Time      // when record size-1 was stored (at the latest)
	lastSeq  uint64         // stream sequence of the newest record
	synced   time.Time      // when the state was last compared with the stream
	broken   error          // set when the stored log does not continue our tree
	writerID string         // random, names this process's messages
	calls    uint64         // publish calls so far, in message ids
	// lookFor maps the message ids of the publish in progress to the
	// number of entries each holds; syncLocked sets found to the one it
	// reads back, which makes it durable.
	lookFor map[string]int
	found   string

	// exportSlots bounds the tenant exports (GET /v1/audit) running at
	// once: each reads the whole log to build its proofs.
	exportSlots chan struct{}

	cpMu     sync.Mutex
	lastCP   *checkpointRecord
	lastCPAt time.Time
}

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

// Open opens the log. Unless ReadOnly, it recovers the tree state (the
// compact range, not every leaf) from the latest checkpoint and the entries
// stored after it, and starts the writer. It fails with ErrTampered when the
// stored entries do not continue the checkpointed tree.
func Open(ctx context.Context, c Config) (*Log, error) {
	if c.Origin == "" || !validOrigin(c.Origin) {
		return nil, fmt.Errorf("audit: origin %q must be non-empty without spaces or '+'", c.Origin)
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
	if c.BatchDelay < 0 {
		return nil, errors.New("audit: batch delay must not be negative")
	}
	if c.CheckpointEvery <= 0 {
		c.CheckpointEvery = time.Minute
	}
	if c.IdleCheckpointEvery <= 0 {
		c.IdleCheckpointEvery = time.Hour
	}
	if c.StoreTimeout <= 0 {
		c.StoreTimeout = 5 * time.Second
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
	l := &Log{cfg: c, log: c.Logger, entries: c.Stream, cps: c.Checkpoints, m: newMetrics(c.Registerer),
		rng: rangeFactory.NewEmptyRange(0), writerID: randomID(), exportSlots: make(chan struct{}, maxTenantExports)}
	if l.entries == nil || l.cps == nil {
		if c.Conn == nil {
			return nil, errors.New("audit: conn or both streams are required")
		}
		var err error
		if l.entries, l.cps, err = OpenStreams(ctx, c.Conn, c.Retention); err != nil {
			return nil, err
		}
	}
	if c.ReadOnly {
		return l, nil
	}
	if err := l.recover(ctx); err != nil {
		return nil, err
	}
	l.in = make(chan []*pending, 4*c.BatchMax)
	l.stop = make(chan struct{})
	l.done = make(chan struct{})
	go l.writer()
	return l, nil
}

// randomID returns 8 random bytes in hex.
func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func validOrigin(s string) bool {
	for _, r := range s {
		if r <= ' ' || r == '+' || r == 0x7f {
			return false
		}
	}
	return true
}

// recover rebuilds the tree state from the newest checkpoint that carries
// its compact range, then reads the entries stored after it.
func (l *Log) recover(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	cp, err := l.latestCheckpoint(ctx)
	switch {
	case errors.Is(err, ErrNoCheckpoint):
	case err != nil:
		return err
	default:
		if err := l.signedByUs(ctx, cp); err != nil {
			// Not a checkpoint this keyring signed: do not build on it.
			l.log.Warn("audit: newest checkpoint does not verify; rebuilding the tree from the first entry", "err", err)
			break
		}
		rng, err := cp.compactRange()
		if err != nil {
			return fmt.Errorf("audit: %w: checkpoint at size %d: %w", ErrTampered, cp.Size, err)
		}
		if cp.Size > 0 {
			// The stored message the checkpoint ends with must still be
			// there and end with the checkpointed leaf.
			m, err := l.entries.Get(ctx, cp.LastSeq)
			if err != nil && !errors.Is(err, queue.ErrNotFound) {
				return fmt.Errorf("audit: %w: %w", ErrUnavailable, err)
			}
			if err != nil {
				return fmt.Errorf("audit: %w: seq %d, the last one checkpointed, is missing", ErrTampered, cp.LastSeq)
			}
			lines := splitBatch(m.Data)
			if !bytes.Equal(leafHash(lines[len(lines)-1]), cp.lastLeaf()) {
				return fmt.Errorf("audit: %w: seq %d differs from the checkpointed entry", ErrTampered, cp.LastSeq)
			}
		}
		l.rng, l.lastLeaf, l.lastSeq, l.lastAt = rng, cp.lastLeaf(), cp.LastSeq, cp.LastAt
		l.setLastCheckpoint(cp)
	}
	if err := l.syncLocked(ctx); err != nil {
		return err
	}
	l.log.Info("audit log opened", "size", l.rng.End(), "last_seq", l.lastSeq)
	return nil
}

// signedByUs checks a stored checkpoint against the keyring's current and
// previous keys, so a record planted in the checkpoints stream cannot steer
// the tree this process continues.
func (l *Log) signedByUs(ctx context.Context, cp *checkpointRecord) error {
	cur, prev, err := l.cfg.Keys.SigningKeys(ctx, l.cfg.Now())
	if err != nil {
		return fmt.Errorf("signing keys: %w", err)
	}
	ks := &signer.KeySet{}
	for _, k := range append([]signer.PrivateKey{cur}, prev...) {
		if pub := k.Public(); pub != nil {
			ks.Keys = append(ks.Keys, signer.PublicKey{KID: k.KID, Key: pub})
		}
	}
	c, err := OpenCheckpoint([]byte(cp.Note), l.cfg.Origin, ks)
	if err != nil {
		return err
	}
	if c.Size != cp.Size || b64.EncodeToString(c.Root) != cp.Root {
		return errors.New("checkpoint record differs from its signed note")
	}
	return nil
}

// syncLocked reads records stored after lastSeq (by another instance, or by
// a publish whose answer was lost) into the tree. l.mu must be held.
func (l *Log) syncLocked(ctx context.Context) error {
	st, err := l.entries.State(ctx)
	if err != nil {
		return fmt.Errorf("audit: %w: %w", ErrUnavailable, err)
	}
	l.synced = l.cfg.Now()
	if st.LastSeq < l.lastSeq {
		l.broken = fmt.Errorf("audit: %w: the stream ends at seq %d, before seq %d already written", ErrTampered, st.LastSeq, l.lastSeq)
		return l.broken
	}
	if st.LastSeq == l.lastSeq || st.Msgs == 0 {
		return nil
	}
	start := l.lastSeq + 1
	if start < st.FirstSeq {
		if l.rng.End() != 0 || l.lastSeq != 0 {
			return fmt.Errorf("audit: %w: entries after seq %d have expired before a checkpoint covered them", ErrTampered, l.lastSeq)
		}
		start = st.FirstSeq
	}
	err = scan(ctx, l.entries, start, func(m *queue.Msg) error {
		for _, line := range splitBatch(m.Data) {
			r, err := DecodeRecord(line)
			if err != nil {
				return fmt.Errorf("audit: %w: seq %d: %w", ErrTampered, m.Seq, err)
			}
			size := l.rng.End()
			if size == 0 && l.lastLeaf == nil && r.Index != 0 {
				return fmt.Errorf("audit: %w: the oldest stored entry has index %d and no checkpoint covers the ones before it", ErrTampered, r.Index)
			}
			if r.Index != size {
				return fmt.Errorf("audit: %w: seq %d holds index %d, want %d", ErrTampered, m.Seq, r.Index, size)
			}
			if !bytes.Equal(r.prevHash(), l.lastLeaf) {
				return fmt.Errorf("audit: %w: seq %d index %d does not link to the entry before it", ErrTampered, m.Seq, r.Index)
			}
			h := leafHash(line)
			if err := l.rng.Append(h, nil); err != nil {
				return err
			}
			l.lastLeaf, l.lastAt = h, m.Time.UTC().Truncate(time.Microsecond)
		}
		l.lastSeq = m.Seq
		if _, ok := l.lookFor[m.Header["Nats-Msg-Id"]]; ok {
			l.found = m.Header["Nats-Msg-Id"]
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrTampered) {
			l.broken = err
			return err
		}
		return fmt.Errorf("audit: %w: read: %w", ErrUnavailable, err)
	}
	return nil
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

// enqueue hands entries to the writer, refusing them once Close began so
// that every queued entry is answered.
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
		// Encode once here to report size errors to the caller, not the batch.
		if _, err := encodeRecord(e, maxIndex, link{hash: make([]byte, sha256.Size), time: e.Time}); err != nil {
			l.m.appends.WithLabelValues("invalid").Add(float64(len(es)))
			return nil, err
		}
		ps[i] = &pending{e: e, done: make(chan error, 1), async: async}
	}
	return ps, nil
}

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

// writer is the single goroutine that publishes batches.
func (l *Log) writer() {
	defer close(l.done)
	var batch []*pending
	for {
		batch = batch[:0]
		select {
		case g := <-l.in:
			batch = append(batch, g...)
		case <-l.stop:
			l.drain()
			return
		}
		batch = l.fill(batch)
		l.commit(batch)
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
func (l *Log) drain() {
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
		l.commit(batch)
	}
}

// commit writes batch as one or more messages and answers every waiter.
func (l *Log) commit(batch []*pending) {
	for len(batch) > 0 {
		n, err := l.publish(batch)
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

// publish writes a prefix of batch as one message and returns its length.
//
// Several sealpost instances may append to one stream, so every publish
// carries the stream sequence it expects to follow (JetStream's
// Nats-Expected-Last-Sequence): the store refuses it when someone else wrote
// first, and the writer then reads what was written, renumbers the batch and
// tries again. The message id is unique to this writer and batch, so a
// publish whose answer was lost is recognised when reading back.
func (l *Log) publish(batch []*pending) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.broken != nil {
		return len(batch), l.broken
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*l.cfg.StoreTimeout)
	defer cancel()
	// Every attempt's message id is watched for in every read-back of this
	// call: an attempt whose answer was lost may be stored at any later
	// moment, and must then count as this batch, not be written again.
	l.lookFor, l.found = map[string]int{}, ""
	defer func() { l.lookFor, l.found = nil, "" }()
	// Ids name this call: an earlier call's message that lands late is
	// someone else's entries to this one, not its own.
	l.calls++
	callID := "audit-" + l.writerID + "-" + strconv.FormatUint(l.calls, 10) + "-"
	// Records of this batch name this moment as their predecessor's store
	// time; it is no later than the store's own timestamp. It is fixed for
	// the call, so attempts at the same index build the same bytes.
	built := l.cfg.Now().UTC().Truncate(time.Microsecond)
	var lastErr error
	for attempt := 0; attempt < 6; attempt++ {
		if attempt > 0 || l.cfg.Now().Sub(l.synced) > 30*time.Second {
			if err := l.syncLocked(ctx); err != nil {
				return len(batch), err
			}
			if n, ok := l.lookFor[l.found]; ok {
				l.published(n)
				return n, nil
			}
		}
		first := l.rng.End()
		prev := l.lastLeaf
		prevAt := l.lastAt
		var data []byte
		var leaves [][]byte
		n := 0
		for _, p := range batch {
			rec, err := encodeRecord(p.e, first+uint64(n), link{hash: prev, time: prevAt})
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
			prev, prevAt = leafHash(rec), built
			leaves = append(leaves, prev)
			n++
		}
		msgID := callID + strconv.FormatUint(first, 10)
		hdr := map[string]string{
			"Audit-Index":                 strconv.FormatUint(first, 10),
			"Audit-Count":                 strconv.Itoa(n),
			"Nats-Expected-Last-Sequence": strconv.FormatUint(l.lastSeq, 10),
		}
		l.lookFor[msgID] = n
		c, cancelStore := context.WithTimeout(ctx, l.cfg.StoreTimeout)
		seq, dup, err := l.entries.AppendOnce(c, l.cfg.Subject, msgID, hdr, data)
		cancelStore()
		if err == nil && !dup && seq == l.lastSeq+1 {
			for _, h := range leaves {
				if err := l.rng.Append(h, nil); err != nil {
					return n, err
				}
			}
			l.lastLeaf, l.lastSeq, l.lastAt = prev, seq, built
			l.published(n)
			return n, nil
		}
		switch {
		case err == nil && dup:
			// An earlier attempt with this id is stored (a cluster checks
			// duplicates before the expected sequence): read it back.
			err = fmt.Errorf("duplicate of seq %d", seq)
		case err == nil:
			err = fmt.Errorf("stored at seq %d, expected %d", seq, l.lastSeq+1)
		}
		lastErr = err
		// Another writer came first, or the answer was lost: read what is
		// stored. Finding our own message there means it is durable.
		if serr := l.syncLocked(ctx); serr != nil {
			return n, serr
		}
		if n, ok := l.lookFor[l.found]; ok {
			l.published(n)
			return n, nil
		}
		if attempt > 0 {
			select {
			case <-time.After(time.Duration(attempt) * 50 * time.Millisecond):
			case <-ctx.Done():
				return n, fmt.Errorf("audit: %w: %w", ErrUnavailable, ctx.Err())
			}
		}
	}
	l.log.Warn("audit publish failed", "err", lastErr)
	return len(batch), fmt.Errorf("audit: %w: %w", ErrUnavailable, lastErr)
}

func (l *Log) published(n int) {
	l.m.publishes.Inc()
	l.m.batchSize.Observe(float64(n))
	l.m.treeSize.Set(float64(l.rng.End()))
}

// Size returns the number of entries in the tree this process knows.
func (l *Log) Size() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rng.End()
}

// Close stops accepting entries, writes the queued ones and signs a final
// checkpoint when entries were added since the last one.
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
	if _, err := l.checkpointIfGrown(ctx); err != nil {
		return fmt.Errorf("audit: close: %w", err)
	}
	return nil
}
