package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/transparency-dev/merkle/compact"

	"github.com/sealpost/sealpost/queue"
	"github.com/sealpost/sealpost/signer"
)

// Problem kinds reported by Verify.
const (
	KindModified     = "modified"
	KindDeleted      = "deleted"
	KindReordered    = "reordered"
	KindInserted     = "inserted"
	KindTruncated    = "truncated"
	KindBadSignature = "bad_signature"
)

// maxProblems bounds the problems one report lists.
const maxProblems = 1000

// Problem is one finding of Verify. Seq is the entries stream sequence of the
// message holding the bad entry (for bad_signature: the checkpoints stream
// sequence); Index is the leaf index concerned.
type Problem struct {
	Seq    uint64 `json:"seq"`
	Index  uint64 `json:"index"`
	Kind   string `json:"kind"`
	Detail string `json:"detail"`
}

// Report is the result of Verify.
type Report struct {
	// Entries is the number of records read; Checkpoints the number of
	// checkpoints whose signature verified.
	Entries     int `json:"entries"`
	Checkpoints int `json:"checkpoints"`
	// Size is the tree size recomputed from the stored entries; Verified is
	// the largest checkpointed size whose root matched.
	Size     uint64 `json:"size"`
	Verified uint64 `json:"verified"`
	OK       bool   `json:"ok"`
	// FirstBadSeq is the lowest entries stream sequence with a problem, 0
	// when there is none.
	FirstBadSeq uint64    `json:"first_bad_seq,omitempty"`
	Problems    []Problem `json:"problems,omitempty"`
	// Truncated is set when more than maxProblems problems were found.
	Truncated bool `json:"problems_truncated,omitempty"`
}

func (r *Report) add(p Problem) {
	for _, q := range r.Problems {
		// One finding per entry and kind: a record that does not decode
		// also breaks the next record's link.
		if q == p || (p.Kind != KindBadSignature && q.Kind == p.Kind && q.Seq == p.Seq && q.Index == p.Index) {
			return
		}
	}
	if len(r.Problems) >= maxProblems {
		r.Truncated = true
		return
	}
	r.Problems = append(r.Problems, p)
}

type verifiedCP struct {
	Checkpoint
	// seq locates the stored record; its compact range is loaded only for
	// the one checkpoint a pruned log starts from, so memory stays small
	// with a year of checkpoints.
	seq      uint64
	hasRange bool
	rec      *checkpointRecord // loaded on demand
}

// mismatch is a checkpoint root that the entries [p.Index, end) failed.
type mismatch struct {
	p   Problem
	end uint64
}

type bufRec struct {
	hash, prev []byte
	seq        uint64
}

// verifier recomputes the tree over the records in index order while
// watching that stream order matches it.
type verifier struct {
	rep *Report
	cps []verifiedCP // sorted by size
	ci  int

	next     uint64
	rng      *compact.Range
	lastLeaf []byte
	lastSeq  uint64            // seq of the record at next-1
	seqOf    map[uint64]uint64 // seq of the first record after each checkpoint size
	goodSize uint64            // largest size whose root matched
	reported bool              // a root mismatch was noted since goodSize
	mismatch []mismatch        // root mismatches, reported unless pinpointed

	buf     map[uint64]bufRec
	gapSeq  uint64 // seq of the first record that came ahead of a missing one
	gapFrom uint64 // the sequence right after the last record before the gap
	maxIdx  uint64 // highest index seen plus one
	noTree  bool   // records went missing for good; roots cannot be compared

	cutoff   time.Time   // entries stored before it may have expired
	base     *verifiedCP // checkpoint the tree starts from, when the log was pruned
	load     func(seq uint64) (*checkpointRecord, error)
	started  bool
	baseFrom uint64
}

// Verify reads every checkpoint and every entry, checks the checkpoints'
// signatures against keys, recomputes the tree and compares it with every
// checkpoint. It reports modified, deleted, reordered, inserted and
// truncated entries and bad signatures; Report.OK is false when there is any.
// An error means the store could not be read, not that the log is bad.
func (l *Log) Verify(ctx context.Context, keys *signer.KeySet) (*Report, error) {
	rep := &Report{}
	v := &verifier{rep: rep, rng: rangeFactory.NewEmptyRange(0), seqOf: map[uint64]uint64{}, buf: map[uint64]bufRec{},
		cutoff: l.cfg.Now().Add(-l.cfg.Retention).Add(pruneSlack)}
	v.load = func(seq uint64) (*checkpointRecord, error) {
		m, err := l.cps.Get(ctx, seq)
		if err != nil {
			return nil, err
		}
		return decodeCheckpointRecord(m)
	}
	var err error
	if v.cps, err = l.readCheckpoints(ctx, keys, rep); err != nil {
		return nil, err
	}
	rep.Checkpoints = len(v.cps)
	first := true
	err = scan(ctx, l.entries, 0, func(m *queue.Msg) error {
		for _, line := range splitBatch(m.Data) {
			rep.Entries++
			if first {
				first = false
				v.start(line, m.Seq)
			}
			v.record(line, m.Seq)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("audit: verify: %w", err)
	}
	if first {
		v.start(nil, 0)
	}
	v.finish()
	rep.Size = v.next
	rep.Verified = v.goodSize
	slices.SortStableFunc(rep.Problems, func(a, b Problem) int {
		if a.Kind == KindBadSignature || b.Kind == KindBadSignature {
			return boolCmp(a.Kind == KindBadSignature, b.Kind == KindBadSignature)
		}
		return cmpU(a.Seq, b.Seq)
	})
	for _, p := range rep.Problems {
		if p.Kind != KindBadSignature && (rep.FirstBadSeq == 0 || p.Seq < rep.FirstBadSeq) {
			rep.FirstBadSeq = p.Seq
		}
	}
	rep.OK = len(rep.Problems) == 0
	return rep, nil
}

func cmpU(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func boolCmp(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

// readCheckpoints returns the checkpoints whose signatures verify, sorted by
// size, and reports the others.
func (l *Log) readCheckpoints(ctx context.Context, keys *signer.KeySet, rep *Report) ([]verifiedCP, error) {
	var out []verifiedCP
	err := scan(ctx, l.cps, 0, func(m *queue.Msg) error {
		rec, err := decodeCheckpointRecord(m)
		if err != nil {
			rep.add(Problem{Seq: m.Seq, Kind: KindBadSignature, Detail: err.Error()})
			return nil
		}
		c, err := OpenCheckpoint([]byte(rec.Note), l.cfg.Origin, keys)
		if err != nil {
			rep.add(Problem{Seq: m.Seq, Kind: KindBadSignature, Detail: fmt.Sprintf("checkpoint record %d: %v", m.Seq, err)})
			return nil
		}
		if c.Size != rec.Size || b64.EncodeToString(c.Root) != rec.Root {
			rep.add(Problem{Seq: m.Seq, Kind: KindBadSignature, Detail: fmt.Sprintf("checkpoint record %d: fields differ from the signed note", m.Seq)})
			return nil
		}
		out = append(out, verifiedCP{Checkpoint: c, seq: m.Seq, hasRange: rec.Range != nil})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("audit: verify: read checkpoints: %w", err)
	}
	slices.SortStableFunc(out, func(a, b verifiedCP) int { return cmpU(a.Size, b.Size) })
	for i := 1; i < len(out); i++ {
		if out[i].Size == out[i-1].Size && !bytes.Equal(out[i].Root, out[i-1].Root) {
			rep.add(Problem{Seq: out[i].seq, Index: out[i].Size, Kind: KindBadSignature,
				Detail: fmt.Sprintf("two signed checkpoints of size %d disagree on the root", out[i].Size)})
		}
	}
	return out, nil
}

// pruneSlack allows for clock differences between writers and the store
// when deciding whether entries can have expired.
const pruneSlack = time.Hour

// start looks at the oldest stored record. When it is not index 0, the
// entries before it are missing: that is expected only when they expired
// under the retention, which the oldest record's link time tells (the time
// its predecessor was stored). The tree then starts from the first
// checkpoint at or after it, whose compact range the checkpoint record
// carries; records between the two are checked by their links.
func (v *verifier) start(line []byte, seq uint64) {
	idx := uint64(0)
	if line != nil {
		var probe struct {
			Index uint64 `json:"index"`
		}
		if json.Unmarshal(line, &probe) == nil {
			idx = probe.Index
		}
	}
	if idx == 0 {
		v.started = true
		v.compare(seq)
		return
	}
	if r, err := DecodeRecord(line); err != nil || r.PrevTime.IsZero() || r.PrevTime.After(v.cutoff) {
		at := "at an unknown time"
		if err == nil && !r.PrevTime.IsZero() {
			at = "at " + r.PrevTime.Format(time.RFC3339)
		}
		v.rep.add(Problem{Seq: seq, Index: 0, Kind: KindDeleted,
			Detail: fmt.Sprintf("entries 0..%d are missing; entry %d was stored %s, too recently to have expired", idx-1, idx-1, at)})
	}
	for i := range v.cps {
		c := &v.cps[i]
		if c.Size < idx || !c.hasRange {
			continue
		}
		rec, err := v.load(c.seq)
		if err != nil || rec.Size != c.Size || rec.Root != b64.EncodeToString(c.Root) {
			continue
		}
		if _, err := rec.compactRange(); err != nil {
			continue
		}
		c.rec = rec
		v.base, v.baseFrom, v.next = c, idx, idx
		if c.Size == idx {
			v.startFromBase()
			v.compare(seq)
		}
		return
	}
	v.rep.add(Problem{Seq: seq, Index: 0, Kind: KindDeleted,
		Detail: fmt.Sprintf("the oldest stored entry has index %d and no signed checkpoint covers the entries before it", idx)})
	v.next = idx
}

func (v *verifier) startFromBase() {
	rng, _ := v.base.rec.compactRange()
	v.rng = rng
	if v.lastLeaf != nil && !bytes.Equal(v.lastLeaf, v.base.rec.lastLeaf()) {
		v.rep.add(Problem{Seq: v.lastSeq, Index: v.next - 1, Kind: KindModified,
			Detail: "entry differs from the one the checkpoint's range was built from"})
	}
	v.lastLeaf = v.base.rec.lastLeaf()
	v.started = true
	v.goodSize = v.base.Size
	for v.ci < len(v.cps) && v.cps[v.ci].Size < v.next {
		v.ci++
	}
}

// record handles one stored record in stream order.
func (v *verifier) record(line []byte, seq uint64) {
	h := leafHash(line)
	r, err := DecodeRecord(line)
	if err == nil {
		v.maxIdx = max(v.maxIdx, r.Index+1)
	}
	if err != nil {
		// The leaf sits at its stream position; its hash will not match.
		v.rep.add(Problem{Seq: seq, Index: v.next, Kind: KindModified, Detail: fmt.Sprintf("entry %d does not decode: %v", v.next, err)})
		v.accept(v.next, h, nil, seq, false)
		return
	}
	switch {
	case r.Index == v.next:
		v.accept(r.Index, h, r.prevHash(), seq, true)
		for {
			b, ok := v.buf[v.next]
			if !ok {
				break
			}
			delete(v.buf, v.next)
			v.accept(v.next, b.hash, b.prev, b.seq, true)
		}
		if len(v.buf) == 0 && v.gapSeq != 0 {
			v.rep.add(Problem{Seq: v.gapSeq, Index: r.Index, Kind: KindReordered,
				Detail: fmt.Sprintf("entry %d is stored after entries with higher indices", r.Index)})
			v.gapSeq = 0
		}
	case r.Index > v.next:
		if _, dup := v.buf[r.Index]; dup {
			v.rep.add(Problem{Seq: seq, Index: r.Index, Kind: KindInserted, Detail: fmt.Sprintf("a second entry claims index %d", r.Index)})
			return
		}
		if v.gapSeq == 0 {
			// The missing records were in the messages after the last
			// accepted one, or in this message itself when it holds a
			// batch that lost a line.
			v.gapSeq, v.gapFrom = seq, min(seq, v.lastSeq+1)
		}
		v.buf[r.Index] = bufRec{hash: h, prev: r.prevHash(), seq: seq}
		if len(v.buf) > maxReorder {
			v.skipGap()
		}
	default:
		v.rep.add(Problem{Seq: seq, Index: r.Index, Kind: KindInserted, Detail: fmt.Sprintf("a second entry claims index %d", r.Index)})
	}
}

// maxReorder bounds how many records verify holds while waiting for a
// missing one to turn up later in the stream.
var maxReorder = 1 << 16 // a variable so tests can lower it

// skipGap gives up waiting for the missing records: they are reported as
// deleted, the tree can no longer be compared with checkpoints, and reading
// goes on from the lowest held record.
func (v *verifier) skipGap() {
	lowest := v.lowestHeld()
	v.rep.add(Problem{Seq: v.gapFrom, Index: v.next, Kind: KindDeleted,
		Detail: fmt.Sprintf("entries %d..%d are missing", v.next, lowest-1)})
	v.noTree, v.gapSeq = true, 0
	v.next = lowest
	for {
		b, ok := v.buf[v.next]
		if !ok {
			break
		}
		delete(v.buf, v.next)
		v.accept(v.next, b.hash, b.prev, b.seq, false)
	}
}

func (v *verifier) lowestHeld() uint64 {
	lowest := uint64(0)
	first := true
	for i := range v.buf {
		if first || i < lowest {
			lowest, first = i, false
		}
	}
	return lowest
}

// accept adds the record at index idx (== v.next) to the tree.
func (v *verifier) accept(idx uint64, h, prev []byte, seq uint64, checkLink bool) {
	if checkLink && v.started && !bytes.Equal(prev, v.lastLeaf) && !(idx == 0 && prev == nil) {
		// The link names the hash of entry idx-1 as it was written.
		v.rep.add(Problem{Seq: v.lastSeq, Index: idx - 1, Kind: KindModified,
			Detail: fmt.Sprintf("entry %d does not hash to the link stored in entry %d", idx-1, idx)})
	} else if checkLink && !v.started && v.lastLeaf != nil && !bytes.Equal(prev, v.lastLeaf) {
		v.rep.add(Problem{Seq: v.lastSeq, Index: idx - 1, Kind: KindModified,
			Detail: fmt.Sprintf("entry %d does not hash to the link stored in entry %d", idx-1, idx)})
	}
	if v.started {
		_ = v.rng.Append(h, nil)
	}
	v.lastLeaf, v.lastSeq = h, seq
	v.next = idx + 1
	if _, ok := v.seqOf[idx]; !ok && (idx == v.goodSize) {
		v.seqOf[idx] = seq
	}
	if !v.started && v.base != nil && v.next == v.base.Size {
		v.startFromBase()
	}
	v.compare(seq)
}

// compare checks the tree against every checkpoint of the current size.
func (v *verifier) compare(seq uint64) {
	if !v.started || v.noTree {
		return
	}
	for v.ci < len(v.cps) && v.cps[v.ci].Size < v.next {
		v.ci++
	}
	for v.ci < len(v.cps) && v.cps[v.ci].Size == v.next {
		c := v.cps[v.ci]
		v.ci++
		root, err := rootOf(v.rng)
		if err == nil && bytes.Equal(root, c.Root) {
			v.goodSize = c.Size
			v.reported = false
			continue
		}
		if !v.reported {
			from := v.seqOf[v.goodSize]
			if from == 0 {
				from = seq
			}
			v.mismatch = append(v.mismatch, mismatch{end: c.Size, p: Problem{Seq: from, Index: v.goodSize, Kind: KindModified,
				Detail: fmt.Sprintf("entries %d..%d do not hash to the root signed for size %d", v.goodSize, c.Size-1, c.Size)}})
			v.reported = true
		}
	}
}

// finish reports entries still missing and checkpoints beyond the end, and
// root mismatches not already explained by a pinpointed modification.
func (v *verifier) finish() {
	for _, m := range v.mismatch {
		explained := false
		for _, p := range v.rep.Problems {
			if p.Kind == KindModified && p.Index >= m.p.Index && p.Index < m.end {
				explained = true
			}
		}
		if !explained {
			v.rep.add(m.p)
		}
	}
	if len(v.buf) > 0 {
		lowest := v.lowestHeld()
		v.rep.add(Problem{Seq: v.gapFrom, Index: v.next, Kind: KindDeleted,
			Detail: fmt.Sprintf("entries %d..%d are missing", v.next, lowest-1)})
	}
	stored := max(v.next, v.maxIdx)
	if n := len(v.cps); n > 0 && v.cps[n-1].Size > stored {
		end := v.lastSeq + 1
		for _, b := range v.buf {
			end = max(end, b.seq+1)
		}
		v.rep.add(Problem{Seq: end, Index: stored, Kind: KindTruncated,
			Detail: fmt.Sprintf("a signed checkpoint covers %d entries, %d are stored", v.cps[n-1].Size, stored)})
	}
}

// WriteText writes the report for people: a summary line, then one line per
// problem. It is what `sealpost audit verify` prints.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	if r.OK {
		fmt.Fprintf(&b, "audit log OK: %d entries, %d verified by %d signed checkpoints\n", r.Size, r.Verified, r.Checkpoints)
	} else {
		fmt.Fprintf(&b, "audit log FAILED: %d problems; first bad sequence %d\n", len(r.Problems), r.FirstBadSeq)
		fmt.Fprintf(&b, "  %d entries read, %d verified by %d signed checkpoints\n", r.Entries, r.Verified, r.Checkpoints)
		for _, p := range r.Problems {
			if p.Kind == KindBadSignature {
				fmt.Fprintf(&b, "  %-13s checkpoint seq %d: %s\n", p.Kind, p.Seq, p.Detail)
				continue
			}
			fmt.Fprintf(&b, "  %-13s seq %d index %d: %s\n", p.Kind, p.Seq, p.Index, p.Detail)
		}
		if r.Truncated {
			fmt.Fprintf(&b, "  (only the first %d problems are listed)\n", maxProblems)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
