package audit

import (
	"context"
	"errors"
	"fmt"

	"github.com/sealpost/sealpost/queue"
)

// keepProofsLocked makes this instance keep the proof tiles and the
// receipt index (on) or stop keeping them. The checkpointer keeps them;
// other instances integrate the tree at times (exports) and must not hold
// notes nobody writes. A change reloads the tree, so the checkpointer
// starts from the tiles the previous one wrote. l.tmu must be held.
func (l *Log) keepProofsLocked(on bool) {
	if l.tiles == nil || l.keepProofs == on {
		return
	}
	l.keepProofs = on
	if l.tree.broken == nil {
		l.tree.loaded = false
	}
	if !on {
		l.tree.tiles, l.tree.ix = nil, nil
	}
}

// loadProofsLocked restores the tiles at the checkpoint the tree starts
// from (nil: the empty tree), or rebuilds them and the receipt index from
// the stored entries when they are behind.
func (l *Log) loadProofsLocked(ctx context.Context, cp *checkpointRecord) error {
	t := &l.tree
	var size uint64
	if cp != nil {
		size = cp.Size
	}
	tb, err := loadTiles(ctx, l.tiles, size)
	switch {
	case err == nil:
	case errors.Is(err, errTilesBehind) && size == 0:
		tb = &tileBuilder{}
	case errors.Is(err, errTilesBehind):
		l.log.Info("audit: building the proof tiles and the receipt index from the stored entries", "entries", size, "reason", err)
		tb, err = l.rebuildProofs(ctx, cp)
		if errors.Is(err, ErrProofsUnavailable) {
			l.log.Warn("audit: the oldest entries expired before proof tiles were kept; no proofs will be served for this log", "entries", size)
			return nil
		}
		if err != nil {
			return err
		}
	default:
		return fmt.Errorf("audit: %w: proof tiles: %w", ErrUnavailable, err)
	}
	t.tiles, t.ix = tb, newIndexer()
	l.m.proofState.Set(float64(size))
	return nil
}

// rebuildProofs reads the stored entries up to the checkpoint cp and
// writes their tiles and index notes. The entries must hash to the
// checkpoint's root; otherwise the log is inconsistent (ErrTampered).
func (l *Log) rebuildProofs(ctx context.Context, cp *checkpointRecord) (*tileBuilder, error) {
	st, err := l.entries.State(ctx)
	if err != nil {
		return nil, fmt.Errorf("audit: %w: %w", ErrUnavailable, err)
	}
	if st.FirstSeq > 1 {
		return nil, ErrProofsUnavailable
	}
	rng := rangeFactory.NewEmptyRange(0)
	tb, ix := &tileBuilder{}, newIndexer()
	err = scan(ctx, l.entries, 1, func(m *queue.Msg) error {
		if m.Seq > cp.LastSeq {
			return errStopRead
		}
		for pos, line := range splitBatch(m.Data) {
			ix.add(line, rng.End(), m.Seq, pos)
			if err := rng.Append(leafHash(line), tb.visit); err != nil {
				return err
			}
		}
		if len(tb.full) >= maxPendingTiles {
			if err := tb.writeFull(ctx, l.tiles); err != nil {
				return err
			}
		}
		if ix.n >= maxPendingNotes {
			return ix.write(ctx, l.index, l.cfg.IndexSubject)
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStopRead) {
		return nil, fmt.Errorf("audit: %w: rebuild proof tiles: %w", ErrUnavailable, err)
	}
	root, err := rootOf(rng)
	if err != nil || rng.End() != cp.Size || b64.EncodeToString(root) != cp.Root {
		return nil, fmt.Errorf("audit: %w: the stored entries up to seq %d are %d leaves that do not hash to the checkpoint of size %d (run audit verify)",
			ErrTampered, cp.LastSeq, rng.End(), cp.Size)
	}
	if err := tb.writeFull(ctx, l.tiles); err != nil {
		return nil, fmt.Errorf("audit: %w: %w", ErrUnavailable, err)
	}
	if err := ix.write(ctx, l.index, l.cfg.IndexSubject); err != nil {
		return nil, fmt.Errorf("audit: %w: %w", ErrUnavailable, err)
	}
	if err := tb.writePartial(ctx, l.tiles, cp.Size); err != nil {
		return nil, fmt.Errorf("audit: %w: %w", ErrUnavailable, err)
	}
	return tb, nil
}

// writeProofsLocked writes the complete tiles and the index notes
// gathered so far and, when final, the incomplete tiles and the proof
// state for the current tree size, which a checkpoint of that size needs.
func (l *Log) writeProofsLocked(ctx context.Context, final bool) error {
	t := &l.tree
	if t.tiles == nil {
		return nil
	}
	if err := t.tiles.writeFull(ctx, l.tiles); err != nil {
		return err
	}
	if err := t.ix.write(ctx, l.index, l.cfg.IndexSubject); err != nil {
		return err
	}
	if !final {
		return nil
	}
	size := t.rng.End()
	if err := t.tiles.writePartial(ctx, l.tiles, size); err != nil {
		return err
	}
	l.m.proofState.Set(float64(size))
	return nil
}
