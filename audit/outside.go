package audit

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/sealpost/sealpost/queue"
	"github.com/sealpost/sealpost/signer"
)

// ErrRollback reports a log that is behind, or not consistent with, a
// checkpoint held outside it (an outside copy or a witness): it was rolled
// back, or forked. It wraps ErrTampered.
var ErrRollback = fmt.Errorf("%w: it is behind or not consistent with a checkpoint held outside it", ErrTampered)

// tailCheckEvery is how often an instance that does not sign checkpoints
// compares the newest stored checkpoint with the log's tail and the
// outside copy.
const tailCheckEvery = 30 * time.Second

// decodeCheckpointBytes parses a checkpoint record held outside the store.
func decodeCheckpointBytes(b []byte) (*checkpointRecord, error) {
	if len(b) > maxCheckpointRecord {
		return nil, errNoRoom
	}
	var r checkpointRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("checkpoint record: %w", err)
	}
	return &r, nil
}

// outsideLatest reads the newest checkpoint held outside, when the log has
// a sink, and checks that this keyring signed it. A record that is not
// ours is ignored (logged): whoever can write to the outside location must
// not be able to stop the log with garbage.
func (l *Log) outsideLatest(ctx context.Context) (*checkpointRecord, error) {
	if l.cfg.Outside == nil {
		return nil, nil
	}
	b, err := l.cfg.Outside.Latest(ctx)
	if errors.Is(err, ErrNoCheckpoint) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("audit: %w: outside checkpoints: %w", ErrUnavailable, err)
	}
	rec, err := decodeCheckpointBytes(b)
	if err == nil {
		err = l.signedByUs(ctx, rec)
	}
	if err != nil {
		l.log.Warn("audit: the newest checkpoint held outside the log is not one this log signed; ignored", "err", err)
		return nil, nil
	}
	return rec, nil
}

// heads reads the newest checkpoint held outside, then the newest stored
// one: in this order, since the outside copy is written after the stored
// one, a store that is not behind it was not rolled back. A stored
// checkpoint this keyring did not sign is returned as notOurs, cp nil.
func (l *Log) heads(ctx context.Context) (outside, cp *checkpointRecord, notOurs, err error) {
	if outside, err = l.outsideLatest(ctx); err != nil {
		return nil, nil, nil, err
	}
	cp, err = l.latestCheckpoint(ctx)
	switch {
	case errors.Is(err, ErrNoCheckpoint):
		return outside, nil, nil, nil
	case err != nil:
		return nil, nil, nil, err
	}
	if err := l.signedByUs(ctx, cp); err != nil {
		return outside, nil, err, nil
	}
	return outside, cp, nil, nil
}

// checkOutside compares the newest stored checkpoint cp (nil: none) with
// the newest outside one: the store must not be behind it, and must hold
// the same root at its size. With deep, an outside checkpoint older than
// cp is also checked to be a prefix of cp, by replaying the entries
// between them (normally none: the outside copy is written right after
// the stored one).
func (l *Log) checkOutside(ctx context.Context, outside, cp *checkpointRecord, deep bool) error {
	if outside == nil {
		return nil
	}
	var have uint64
	if cp != nil {
		have = cp.Size
	}
	switch {
	case cp == nil || outside.Size > cp.Size:
		return fmt.Errorf("audit: %w: the newest checkpoint held outside covers %d entries (signed %s); the newest in the log covers %d",
			ErrRollback, outside.Size, outside.Time.UTC().Format(time.RFC3339), have)
	case outside.Size == cp.Size:
		if outside.Root != cp.Root {
			return fmt.Errorf("audit: %w: the checkpoint held outside and the one in the log disagree on the root of size %d", ErrRollback, cp.Size)
		}
		return nil
	case !deep:
		return nil
	}
	rng, err := outside.compactRange()
	if err != nil {
		l.log.Warn("audit: the newest outside checkpoint has no usable range; only its size is compared", "err", err)
		return nil
	}
	if outside.Size > 0 {
		if _, err := l.checkEnd(ctx, outside, ErrRollback, "the last one the outside checkpoint covers"); err != nil {
			return err
		}
	}
	err = scan(ctx, l.entries, outside.LastSeq+1, func(m *queue.Msg) error {
		if m.Seq > cp.LastSeq {
			return errStopRead
		}
		for _, line := range splitBatch(m.Data) {
			if err := rng.Append(leafHash(line), nil); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStopRead) {
		return fmt.Errorf("audit: %w: %w", ErrUnavailable, err)
	}
	root, err := rootOf(rng)
	if err != nil || rng.End() != cp.Size || b64.EncodeToString(root) != cp.Root {
		return fmt.Errorf("audit: %w: the log's checkpoint of size %d does not extend the one held outside (size %d)", ErrRollback, cp.Size, outside.Size)
	}
	return nil
}

// outsideTimeout bounds one write to the outside location.
const outsideTimeout = 10 * time.Second

// putOutside writes a stored checkpoint to the outside location. A failure
// is logged and counted; the next checkpoint is written in any case. A
// different root for the same size there is a fork: the tree breaks.
func (l *Log) putOutside(ctx context.Context, rec *checkpointRecord, root, data []byte) {
	if l.cfg.Outside == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, outsideTimeout)
	defer cancel()
	err := l.cfg.Outside.Put(ctx, OutsideCheckpoint{Origin: l.cfg.Origin, Size: rec.Size, Root: root, Time: rec.Time, Record: data})
	if err == nil {
		l.m.outsideWrites.WithLabelValues("ok").Inc()
		return
	}
	l.m.outsideWrites.WithLabelValues("error").Inc()
	if errors.Is(err, ErrFork) {
		l.tmu.Lock()
		_ = l.breakTree(fmt.Errorf("audit: %w: %w", ErrRollback, err))
		l.tmu.Unlock()
		return
	}
	l.log.Error("audit: writing the checkpoint outside failed", "size", rec.Size, "err", err)
}

// CheckTail compares the newest stored checkpoint with the newest one held
// outside and with the log's tail (the entry it ends with must still be
// there): what an instance that does not sign checkpoints checks every 30
// seconds, so that it too refuses ingest soon after the log was rolled
// back. A finding wraps ErrTampered and is what Consistent reports.
func (l *Log) CheckTail(ctx context.Context) error {
	outside, cp, notOurs, err := l.heads(ctx)
	if err != nil {
		return err
	}
	if notOurs != nil {
		return fmt.Errorf("audit: newest checkpoint: %w", notOurs)
	}
	finding := l.checkOutside(ctx, outside, cp, false)
	if finding == nil && cp != nil && cp.Size > 0 {
		if _, err := l.checkEnd(ctx, cp, ErrTampered, "the last one checkpointed"); errors.Is(err, ErrTampered) {
			finding = err
		} else if err != nil {
			return err
		}
	}
	if finding == nil {
		return nil
	}
	if l.Consistent() == nil {
		l.log.Error("audit: the stored log does not continue the signed tree; ingest stops until it is repaired (run audit verify)", "err", finding)
	}
	l.setBroken(finding)
	return finding
}

// verifyOutside adds the newest checkpoint held outside to what Verify
// compares the log with. One that does not verify against keys is a
// problem of its own.
func (l *Log) verifyOutside(ctx context.Context, keys *signer.KeySet, v *verifier) error {
	if l.cfg.Outside == nil {
		return nil
	}
	b, err := l.cfg.Outside.Latest(ctx)
	if errors.Is(err, ErrNoCheckpoint) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("audit: verify: outside checkpoints: %w", err)
	}
	rec, err := decodeCheckpointBytes(b)
	var c Checkpoint
	if err == nil {
		c, err = OpenCheckpoint([]byte(rec.Note), l.cfg.Origin, keys)
	}
	if err == nil && (c.Size != rec.Size || b64.EncodeToString(c.Root) != rec.Root) {
		err = errors.New("fields differ from the signed note")
	}
	if err != nil {
		v.rep.add(Problem{Kind: KindBadSignature, Detail: fmt.Sprintf("the newest checkpoint held outside the log: %v", err)})
		return nil
	}
	at := rec.Time
	if !c.Time.IsZero() {
		at = c.Time
	}
	o := verifiedCP{Checkpoint: c, lastSeq: rec.LastSeq, at: at, outside: true}
	v.outside = &o
	v.rep.Outside = c.Size
	v.cps = append(v.cps, o)
	slices.SortStableFunc(v.cps, func(a, b verifiedCP) int { return cmp.Compare(a.Size, b.Size) })
	return nil
}

// verifyWitnesses checks, when witnesses are configured, that the newest
// stored checkpoint carries their quorum, and asks each witness for the
// size it cosigned last: a witness that cosigned more than the log holds
// saw a tree the log no longer has. A witness that cannot be reached is
// noted, not a problem.
func (l *Log) verifyWitnesses(ctx context.Context, keys *signer.KeySet, v *verifier) {
	if !l.cfg.Witnesses.active() || v.newest == nil {
		return
	}
	switch _, err := VerifyCheckpoint([]byte(v.newest.Note), l.cfg.Origin, keys, l.cfg.Witnesses); {
	case err == nil:
		v.rep.Witnessed = v.newest.Size
	case errors.Is(err, ErrQuorum):
		v.rep.add(Problem{Seq: v.newest.seq, Index: v.newest.Size, Kind: KindUnwitnessed,
			Detail: fmt.Sprintf("the newest checkpoint (size %d): %v", v.newest.Size, err)})
	}
	if l.wit == nil {
		return
	}
	stored := v.next + v.missing
	for _, w := range l.cfg.Witnesses.Witnesses {
		if w.URL == "" {
			continue
		}
		size, err := l.wit.askSize(ctx, w, []byte(v.newest.Note), v.newest.Size)
		if err != nil {
			v.rep.Notes = append(v.rep.Notes, fmt.Sprintf("witness %s: %v", w.Name, err))
			continue
		}
		if size > v.newest.Size || size > stored {
			v.rep.add(Problem{Seq: v.lastSeen + 1, Index: min(stored, v.newest.Size), Kind: KindRollback,
				Detail: fmt.Sprintf("witness %s cosigned a checkpoint of size %d; the log holds %d entries and its newest checkpoint covers %d",
					w.Name, size, stored, v.newest.Size)})
		}
	}
}

// Check integrates what was stored and compares the log with the newest
// checkpoint held outside it: what the checkpointer checks when it starts,
// for a gateway to know before it accepts anything. A finding wraps
// ErrTampered and is what Consistent reports from then on; another error
// means the store or the outside location could not be read.
func (l *Log) Check(ctx context.Context) error {
	_, err := l.Size(ctx)
	return err
}
