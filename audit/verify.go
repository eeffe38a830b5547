package audit

import (
	"bytes"
	"cmp"
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
	// KindRollback: the log is behind, or does not match, a checkpoint
	// held outside it (the outside copy, a witness).
	KindRollback = "rollback"
	// KindUnwitnessed: witnesses are configured and the newest checkpoint
	// lacks their quorum of cosignatures.
	KindUnwitnessed = "unwitnessed"
)

// aboutCheckpoint reports whether a problem kind concerns a checkpoint
// record (Seq is then a checkpoints stream sequence).
func aboutCheckpoint(kind string) bool { return kind == KindBadSignature || kind == KindUnwitnessed }

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
	// Outside is the size of the newest checkpoint held outside the log,
	// when the log has an outside copy; Witnessed the size of the newest
	// checkpoint when witnesses are configured and it has their quorum.
	Outside   uint64 `json:"outside_size,omitempty"`
	Witnessed uint64 `json:"witnessed,omitempty"`
	// Notes are remarks that are not problems (a witness that did not
	// answer).
	Notes []string `json:"notes,omitempty"`
}

func (r *Report) add(p Problem) {
	for _, q := range r.Problems {
		// One finding per entry and kind: a record that does not decode
		// also breaks the next record's link.
		if q == p || (!aboutCheckpoint(p.Kind) && q.Kind == p.Kind && q.Seq == p.Seq && q.Index == p.Index) {
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
	seq     uint64
	lastSeq uint64 // the record's hint: entries stream sequence of leaf Size-1
	at      time.Time
	// outside: the newest checkpoint held outside the log, not a stored one.
	outside bool
}

// mismatch is a checkpoint root that the entries [from, end) failed.
type mismatch struct {
	p    Problem
	from uint64
	end  uint64
}

// chainState follows one writer's hash chain (or the single chain of
// version 1 records).
type chainState struct {
	next    uint64 // number expected next
	last    []byte // leaf hash of the newest record
	lastSeq uint64 // where it is stored
	lastIdx uint64
	// gaps are numbers skipped so far; one found later is reordered, the
	// rest are deleted.
	gaps []gap
}

type gap struct {
	from, to uint64 // missing numbers, inclusive
	seq, idx uint64 // where the gap was noticed
	// explained: a missing stream sequence before it already reports it.
	explained bool
}

// verifier recomputes the tree over the records in stream order and
// follows every writer's chain.
type verifier struct {
	rep *Report
	cps []verifiedCP // sorted by size
	ci  int

	rng      *compact.Range
	started  bool        // leaves go into rng (false before a pruned log's base)
	base     *verifiedCP // checkpoint a pruned log starts from
	next     uint64      // leaf index of the next record
	goodSize uint64      // largest size whose root matched
	reported bool        // a root mismatch was noted since goodSize
	seqOf    map[uint64]uint64
	mismatch []mismatch

	chains   map[string]*chainState
	pruned   bool   // the oldest entries are gone (expired, or deleted: reported)
	expect   uint64 // next stream sequence
	lastGap  uint64 // newest missing stream sequence
	missing  uint64 // records known missing (chain gaps)
	lastSeen uint64 // sequence of the newest message read

	load func(seq uint64) (*checkpointRecord, error)

	maxStored uint64      // largest stored checkpoint size that verified
	outside   *verifiedCP // the newest checkpoint held outside, if any
	newest    *checkpointRecord
}

// Verify reads every checkpoint and every entry, checks the checkpoints'
// signatures against keys, recomputes the tree and compares it with every
// checkpoint, and follows every writer's hash chain. It reports modified,
// deleted, reordered, inserted and truncated entries and bad signatures;
// Report.OK is false when there is any. An error means the store could not
// be read, not that the log is bad.
func (l *Log) Verify(ctx context.Context, keys *signer.KeySet) (*Report, error) {
	rep := &Report{}
	v := &verifier{rep: rep, rng: rangeFactory.NewEmptyRange(0), seqOf: map[uint64]uint64{}, chains: map[string]*chainState{}}
	v.load = func(seq uint64) (*checkpointRecord, error) {
		m, err := l.cps.Get(ctx, seq)
		if err != nil {
			return nil, err
		}
		return decodeCheckpointRecord(m)
	}
	var err error
	if v.cps, v.newest, err = l.readCheckpoints(ctx, keys, rep); err != nil {
		return nil, err
	}
	rep.Checkpoints = len(v.cps)
	for _, c := range v.cps {
		v.maxStored = max(v.maxStored, c.Size)
	}
	if err := l.verifyOutside(ctx, keys, v); err != nil {
		return nil, err
	}
	st, err := l.entries.State(ctx)
	if err != nil {
		return nil, fmt.Errorf("audit: verify: %w", err)
	}
	v.start(st, l.cfg.Now().Add(-l.cfg.Retention).Add(pruneSlack))
	err = scan(ctx, l.entries, 0, func(m *queue.Msg) error {
		v.message(m)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("audit: verify: %w", err)
	}
	v.finish()
	l.verifyWitnesses(ctx, keys, v)
	rep.Size = v.next
	rep.Verified = v.goodSize
	// The entries' problems by sequence, then the checkpoints' as found.
	slices.SortStableFunc(rep.Problems, func(a, b Problem) int {
		switch ca, cb := aboutCheckpoint(a.Kind), aboutCheckpoint(b.Kind); {
		case ca && cb:
			return 0
		case ca:
			return 1
		case cb:
			return -1
		}
		return cmp.Compare(a.Seq, b.Seq)
	})
	for _, p := range rep.Problems {
		if !aboutCheckpoint(p.Kind) && (rep.FirstBadSeq == 0 || p.Seq < rep.FirstBadSeq) {
			rep.FirstBadSeq = p.Seq
		}
	}
	rep.OK = len(rep.Problems) == 0
	return rep, nil
}

// readCheckpoints returns the checkpoints whose signatures verify, sorted by
// size, and reports the others.
func (l *Log) readCheckpoints(ctx context.Context, keys *signer.KeySet, rep *Report) (out []verifiedCP, newest *checkpointRecord, err error) {
	err = scan(ctx, l.cps, 0, func(m *queue.Msg) error {
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
		at := rec.Time
		if at.IsZero() {
			at = m.Time
		}
		out = append(out, verifiedCP{Checkpoint: c, seq: m.Seq, lastSeq: rec.LastSeq, at: at})
		if newest == nil || rec.Size >= newest.Size {
			newest = rec
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("audit: verify: read checkpoints: %w", err)
	}
	slices.SortStableFunc(out, func(a, b verifiedCP) int { return cmp.Compare(a.Size, b.Size) })
	for i := 1; i < len(out); i++ {
		if out[i].Size == out[i-1].Size && !bytes.Equal(out[i].Root, out[i-1].Root) {
			rep.add(Problem{Seq: out[i].seq, Index: out[i].Size, Kind: KindBadSignature,
				Detail: fmt.Sprintf("two signed checkpoints of size %d disagree on the root", out[i].Size)})
		}
	}
	return out, newest, nil
}

// pruneSlack allows for clock differences between writers and the store
// when deciding whether entries can have expired.
const pruneSlack = time.Hour

// start looks at where the stored log begins. When its first message is
// not sequence 1, the messages before it are gone: that is expected only
// when they expired under the retention, which the checkpoint that first
// covered them tells (it was signed right after they were stored). The
// tree then starts from that checkpoint's compact range, which the
// checkpoint record carries; the records stored before the checkpoint ends
// are checked by their chains only.
func (v *verifier) start(st queue.StreamState, cutoff time.Time) {
	v.expect = max(st.FirstSeq, 1)
	if st.Msgs == 0 || st.FirstSeq <= 1 {
		v.started = true
		v.compare(0)
		return
	}
	v.pruned = true
	gone := st.FirstSeq - 1
	for i := range v.cps {
		c := &v.cps[i]
		if c.lastSeq < gone || c.outside {
			continue
		}
		rec, err := v.load(c.seq)
		if err != nil || rec.Size != c.Size || rec.Root != b64.EncodeToString(c.Root) || rec.Range == nil {
			continue
		}
		if _, err := rec.compactRange(); err != nil {
			continue
		}
		if c.at.After(cutoff) {
			v.rep.add(Problem{Seq: st.FirstSeq, Kind: KindDeleted,
				Detail: fmt.Sprintf("seq 1..%d are missing; the checkpoint covering them was signed at %s, too recently for them to have expired", gone, c.at.Format(time.RFC3339))})
		}
		v.base = &verifiedCP{Checkpoint: c.Checkpoint, seq: c.seq, lastSeq: c.lastSeq, at: c.at}
		if c.lastSeq == gone {
			v.startFromBase(rec)
		}
		return
	}
	v.rep.add(Problem{Seq: st.FirstSeq, Kind: KindDeleted,
		Detail: fmt.Sprintf("seq 1..%d are missing and no signed checkpoint covers them", gone)})
	v.started = true // positions are unknown; roots will not match
}

// startFromBase starts the tree from the base checkpoint's range.
func (v *verifier) startFromBase(rec *checkpointRecord) {
	rng, _ := rec.compactRange()
	v.rng, v.next, v.started, v.goodSize = rng, rec.Size, true, rec.Size
	for v.ci < len(v.cps) && v.cps[v.ci].Size <= v.next {
		v.ci++
	}
}

// message handles one stored message in stream order.
func (v *verifier) message(m *queue.Msg) {
	if m.Seq > v.expect {
		v.rep.add(Problem{Seq: v.expect, Index: v.next, Kind: KindDeleted,
			Detail: fmt.Sprintf("seq %d..%d are missing", v.expect, m.Seq-1)})
		v.lastGap = m.Seq - 1
	}
	v.expect = m.Seq + 1
	v.lastSeen = m.Seq
	lines := splitBatch(m.Data)
	for i, line := range lines {
		v.rep.Entries++
		h := leafHash(line)
		v.chain(line, h, m.Seq)
		if v.started {
			_ = v.rng.Append(h, nil)
			if _, ok := v.seqOf[v.next]; !ok && v.next == v.goodSize {
				v.seqOf[v.next] = m.Seq
			}
			v.next++
			v.compare(m.Seq)
		}
		if !v.started && v.base != nil && m.Seq == v.base.lastSeq && i == len(lines)-1 {
			rec, err := v.load(v.base.seq)
			if err == nil {
				if !bytes.Equal(h, rec.lastLeaf()) {
					v.rep.add(Problem{Seq: m.Seq, Index: rec.Size - 1, Kind: KindModified,
						Detail: "entry differs from the one the checkpoint's range was built from"})
				}
				v.startFromBase(rec)
			}
		}
	}
}

// chainHead is what verify needs of a record that may not decode.
type chainHead struct {
	V     int    `json:"v"`
	W     string `json:"w"`
	N     uint64 `json:"n"`
	Index uint64 `json:"index"`
}

// chain checks a record against its writer's chain.
func (v *verifier) chain(line, h []byte, seq uint64) {
	idx := v.next
	r, err := DecodeRecord(line)
	var name string
	var n uint64
	var prev []byte
	if err != nil {
		v.rep.add(Problem{Seq: seq, Index: idx, Kind: KindModified, Detail: fmt.Sprintf("entry %d does not decode: %v", idx, err)})
		// Keep following its chain if it still says where it belongs.
		var ch chainHead
		if json.Unmarshal(line, &ch) != nil || (ch.V != recordV1 && ch.V != recordV2) {
			return
		}
		name, n = ch.W, ch.N
		if ch.V == recordV1 {
			name, n = "", ch.Index
		}
	} else {
		name, n, prev = r.chain(), r.number(), r.prevHash()
	}
	c := v.chains[name]
	if c == nil {
		c = &chainState{}
		v.chains[name] = c
		if n > 0 && !v.pruned {
			v.rep.add(Problem{Seq: seq, Index: idx, Kind: KindDeleted,
				Detail: fmt.Sprintf("records 0..%d of %s are missing", n-1, chainName(name))})
			v.missing += n
		}
		c.next = n
	}
	switch {
	case n == c.next:
		if err == nil && c.last != nil && !bytes.Equal(prev, c.last) {
			// The link names the hash of the record before as it was
			// written.
			v.rep.add(Problem{Seq: c.lastSeq, Index: c.lastIdx, Kind: KindModified,
				Detail: fmt.Sprintf("entry %d does not hash to the link stored in entry %d", c.lastIdx, idx)})
		}
	case n > c.next:
		c.gaps = append(c.gaps, gap{from: c.next, to: n - 1, seq: seq, idx: idx, explained: v.lastGap > c.lastSeq})
		v.missing += n - c.next
	default:
		for i, g := range c.gaps {
			if n >= g.from && n <= g.to {
				v.rep.add(Problem{Seq: g.seq, Index: g.idx, Kind: KindReordered,
					Detail: fmt.Sprintf("entry %d (%s record %d) is stored after records that follow it", idx, chainName(name), n)})
				v.missing--
				c.gaps = splitGap(c.gaps, i, n)
				return
			}
		}
		v.rep.add(Problem{Seq: seq, Index: idx, Kind: KindInserted,
			Detail: fmt.Sprintf("a second entry claims %s record %d", chainName(name), n)})
		return
	}
	c.next, c.last, c.lastSeq, c.lastIdx = n+1, h, seq, idx
}

func chainName(w string) string {
	if w == "" {
		return "the version 1 chain"
	}
	return "writer " + w
}

// splitGap removes number n from gap i.
func splitGap(gs []gap, i int, n uint64) []gap {
	g := gs[i]
	out := append([]gap{}, gs[:i]...)
	if g.from < n {
		lo := g
		lo.to = n - 1
		out = append(out, lo)
	}
	if n < g.to {
		hi := g
		hi.from = n + 1
		out = append(out, hi)
	}
	return append(out, gs[i+1:]...)
}

// compare checks the tree against every checkpoint of the current size.
func (v *verifier) compare(seq uint64) {
	if !v.started {
		return
	}
	for v.ci < len(v.cps) && v.cps[v.ci].Size < v.next {
		v.ci++
	}
	for v.ci < len(v.cps) && v.cps[v.ci].Size == v.next {
		c := v.cps[v.ci]
		v.ci++
		root, err := rootOf(v.rng)
		if c.outside {
			if err != nil || !bytes.Equal(root, c.Root) {
				v.rep.add(Problem{Seq: seq, Index: c.Size, Kind: KindRollback,
					Detail: fmt.Sprintf("the first %d entries do not hash to the root of the checkpoint held outside the log (signed %s): the log was rewritten or forked",
						c.Size, c.at.UTC().Format(time.RFC3339))})
			}
			continue
		}
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
			v.mismatch = append(v.mismatch, mismatch{from: v.goodSize, end: c.Size, p: Problem{Seq: from, Index: v.goodSize, Kind: KindModified,
				Detail: fmt.Sprintf("entries %d..%d do not hash to the root signed for size %d", v.goodSize, c.Size-1, c.Size)}})
			v.reported = true
		}
	}
}

// finish reports records still missing, checkpoints beyond the end, and
// root mismatches no other finding explains.
func (v *verifier) finish() {
	for name, c := range v.chains {
		for _, g := range c.gaps {
			if g.explained {
				continue
			}
			v.rep.add(Problem{Seq: g.seq, Index: g.idx, Kind: KindDeleted,
				Detail: fmt.Sprintf("%s records %d..%d are missing", chainName(name), g.from, g.to)})
		}
	}
	for _, m := range v.mismatch {
		explained := false
		for _, p := range v.rep.Problems {
			if !aboutCheckpoint(p.Kind) && p.Kind != KindTruncated && p.Kind != KindRollback && p.Index >= m.from && p.Index < m.end {
				explained = true
			}
		}
		if !explained {
			v.rep.add(m.p)
		}
	}
	stored := v.next + v.missing
	if v.maxStored > stored {
		v.rep.add(Problem{Seq: v.lastSeen + 1, Index: stored, Kind: KindTruncated,
			Detail: fmt.Sprintf("a signed checkpoint covers %d entries, %d are stored", v.maxStored, stored)})
	}
	if o := v.outside; o != nil && (o.Size > stored || o.Size > v.maxStored) {
		v.rep.add(Problem{Seq: v.lastSeen + 1, Index: min(stored, v.maxStored), Kind: KindRollback,
			Detail: fmt.Sprintf("the newest checkpoint held outside the log covers %d entries (signed %s); the log holds %d and its newest checkpoint covers %d",
				o.Size, o.at.UTC().Format(time.RFC3339), stored, v.maxStored)})
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
			if aboutCheckpoint(p.Kind) {
				fmt.Fprintf(&b, "  %-13s checkpoint seq %d: %s\n", p.Kind, p.Seq, p.Detail)
				continue
			}
			fmt.Fprintf(&b, "  %-13s seq %d index %d: %s\n", p.Kind, p.Seq, p.Index, p.Detail)
		}
		if r.Truncated {
			fmt.Fprintf(&b, "  (only the first %d problems are listed)\n", maxProblems)
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "  note: %s\n", n)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
