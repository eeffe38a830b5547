package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/transparency-dev/merkle/compact"

	"github.com/sealpost/sealpost/queue"
	"github.com/sealpost/sealpost/signer"
)

// tree is the checkpointer's view of the Merkle tree: the compact range of
// every entry integrated so far and where in the stream it ends. Any
// instance's tree is a prefix of the same tree, since the leaves are the
// stored records in stream order.
type tree struct {
	loaded   bool
	rng      *compact.Range // [0, size)
	lastLeaf []byte         // leaf hash of record size-1
	lastSeq  uint64         // stream sequence of the newest integrated message
	lastAt   time.Time      // when that message was stored
	// broken is set when the stored log does not continue the signed tree.
	broken error
	// writers follows the chains of the writers seen lately.
	writers map[string]*writerState
	// tiles and ix collect the proof tiles and the receipt index on the
	// instance that keeps them (the checkpointer, see keepProofs); nil
	// elsewhere.
	tiles *tileBuilder
	ix    *indexer
}

// integrateLocked brings the tree up to the end of the stream. l.tmu must
// be held.
func (l *Log) integrateLocked(ctx context.Context) error {
	t := &l.tree
	if !t.loaded {
		if err := l.loadLocked(ctx); err != nil {
			return err
		}
	}
	if t.broken != nil {
		return t.broken
	}
	st, err := l.entries.State(ctx)
	if err != nil {
		return fmt.Errorf("audit: %w: %w", ErrUnavailable, err)
	}
	if st.LastSeq < t.lastSeq {
		return l.breakTree(fmt.Errorf("audit: %w: the stream ends at seq %d, before seq %d already integrated", ErrTampered, st.LastSeq, t.lastSeq))
	}
	if st.LastSeq == t.lastSeq || st.Msgs == 0 {
		return nil
	}
	start := t.lastSeq + 1
	if start < st.FirstSeq {
		if t.lastSeq != 0 || t.rng.End() != 0 {
			return l.breakTree(fmt.Errorf("audit: %w: entries after seq %d are gone before a checkpoint covered them", ErrTampered, t.lastSeq))
		}
		// Nothing was ever checkpointed and the oldest entries expired.
		l.log.Warn("audit: the oldest entries expired before any checkpoint; the tree starts at the oldest stored one", "seq", st.FirstSeq)
		start, t.lastSeq = st.FirstSeq, st.FirstSeq-1
	}
	now := l.cfg.Now()
	err = scan(ctx, l.entries, start, func(m *queue.Msg) error {
		if m.Seq != t.lastSeq+1 {
			return fmt.Errorf("audit: %w: seq %d..%d are missing", ErrTampered, t.lastSeq+1, m.Seq-1)
		}
		for pos, line := range splitBatch(m.Data) {
			h := leafHash(line)
			if err := t.checkLink(line, h, m.Seq, now); err != nil {
				return err
			}
			var visit compact.VisitFn
			if t.tiles != nil {
				t.ix.add(line, t.rng.End(), m.Seq, pos)
				visit = t.tiles.visit
			}
			if err := t.rng.Append(h, visit); err != nil {
				return err
			}
			t.lastLeaf = h
		}
		t.lastSeq, t.lastAt = m.Seq, m.Time.UTC().Truncate(time.Microsecond)
		return nil
	})
	t.forgetIdleWriters(now)
	l.m.treeSize.Set(float64(t.rng.End()))
	if errors.Is(err, ErrTampered) {
		return l.breakTree(err)
	}
	if err != nil {
		return fmt.Errorf("audit: %w: read: %w", ErrUnavailable, err)
	}
	if t.tiles != nil && (len(t.tiles.full) >= maxPendingTiles || t.ix.n >= maxPendingNotes) {
		// Written early to bound memory; a failure is retried with the
		// next checkpoint.
		if err := l.writeProofsLocked(ctx, false); err != nil {
			l.log.Warn("audit: writing proof data failed; retrying", "err", err)
		}
	}
	return nil
}

func (l *Log) breakTree(err error) error {
	if l.tree.broken == nil {
		l.log.Error("audit: the stored log does not continue the signed tree; checkpoints stop until it is repaired (run audit verify)", "err", err)
	}
	l.tree.broken = err
	l.setBroken(err)
	return err
}

// setBroken records the inconsistency Consistent reports (nil: none).
func (l *Log) setBroken(err error) {
	if err == nil {
		l.broken.Store(nil)
		l.m.consistent.Set(1)
		return
	}
	l.broken.Store(&err)
	l.m.consistent.Set(0)
}

// loadLocked starts the tree from the newest checkpoint this keyring
// signed (its compact range, not every leaf), or from the first entry. It
// compares that checkpoint with the newest one held outside the store
// (read first: the outside copy is written after the stored one, so a
// store that is not behind it was not rolled back), and, on the instance
// that keeps the proof data, restores the tiles.
func (l *Log) loadLocked(ctx context.Context) error {
	t := &l.tree
	*t = tree{rng: rangeFactory.NewEmptyRange(0)}
	outside, cp, notOurs, err := l.heads(ctx)
	if err != nil {
		return err
	}
	if notOurs != nil {
		// Not a checkpoint this keyring signed: do not build on it.
		l.log.Warn("audit: newest checkpoint does not verify; building the tree from the first entry", "err", notOurs)
	}
	if cp != nil {
		rng, err := cp.compactRange()
		if err != nil {
			t.loaded = true
			return l.breakTree(fmt.Errorf("audit: %w: checkpoint at size %d: %w", ErrTampered, cp.Size, err))
		}
		if cp.Size > 0 {
			// The stored message the checkpoint ends with must still be
			// there and end with the checkpointed leaf.
			lines, err := l.checkEnd(ctx, cp, ErrTampered, "the last one checkpointed")
			if errors.Is(err, ErrTampered) {
				t.loaded = true
				return l.breakTree(err)
			}
			if err != nil {
				return err
			}
			// Follow the chains of the writers of that message from it.
			now := l.cfg.Now()
			t.writers = map[string]*writerState{}
			for _, line := range lines {
				if w, n, _, ok := parseLink(line); ok {
					t.writers[w] = &writerState{next: n + 1, last: leafHash(line), seen: now}
				}
			}
		}
		t.rng, t.lastLeaf, t.lastSeq, t.lastAt = rng, cp.lastLeaf(), cp.LastSeq, cp.LastAt
		l.setLastCheckpoint(cp)
	}
	if err := l.checkOutside(ctx, outside, cp, true); err != nil {
		if errors.Is(err, ErrTampered) {
			t.loaded = true
			return l.breakTree(err)
		}
		return err
	}
	if l.keepProofs && l.tiles != nil {
		if err := l.loadProofsLocked(ctx, cp); err != nil {
			if errors.Is(err, ErrTampered) {
				t.loaded = true
				return l.breakTree(err)
			}
			*t = tree{}
			return err
		}
	}
	t.loaded = true
	l.setBroken(nil)
	return nil
}

// checkEnd reads the stored message a checkpoint record ends with and
// checks that it ends with the record's last leaf; it returns the
// message's records. A missing or different message is an error wrapping
// kind (ErrTampered or ErrRollback) that names the message as what.
func (l *Log) checkEnd(ctx context.Context, cp *checkpointRecord, kind error, what string) ([][]byte, error) {
	m, err := l.entries.Get(ctx, cp.LastSeq)
	if errors.Is(err, queue.ErrNotFound) {
		return nil, fmt.Errorf("audit: %w: seq %d, %s, is missing", kind, cp.LastSeq, what)
	}
	if err != nil {
		return nil, fmt.Errorf("audit: %w: %w", ErrUnavailable, err)
	}
	lines := splitBatch(m.Data)
	if !bytes.Equal(leafHash(lines[len(lines)-1]), cp.lastLeaf()) {
		return nil, fmt.Errorf("audit: %w: seq %d, %s, holds another entry", kind, cp.LastSeq, what)
	}
	return lines, nil
}

// signedByUs checks a stored checkpoint against the keyring's current and
// previous keys, so a record planted in the checkpoints stream cannot steer
// the tree this process continues.
func (l *Log) signedByUs(ctx context.Context, cp *checkpointRecord) error {
	if l.cfg.Keys == nil {
		return ErrReadOnly
	}
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

// Size integrates what was stored and returns the number of entries in
// the tree.
func (l *Log) Size(ctx context.Context) (uint64, error) {
	l.tmu.Lock()
	defer l.tmu.Unlock()
	if err := l.integrateLocked(ctx); err != nil {
		return 0, err
	}
	return l.tree.rng.End(), nil
}

// Consistent returns nil while the stored log continues the signed tree
// and is not behind the newest checkpoint held outside it, and the
// inconsistency found otherwise (wrapping ErrTampered). It does not wait
// for the checkpointer: the ingest path asks it for every message.
func (l *Log) Consistent() error {
	if p := l.broken.Load(); p != nil {
		return *p
	}
	return nil
}
