package audit

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"

	"github.com/sealpost/sealpost/queue"
	"github.com/sealpost/sealpost/signer"
)

// Filter selects the entries Export writes.
type Filter struct {
	// Tenant selects one tenant's entries; empty selects every entry
	// (operators only).
	Tenant string
	// Since and Until bound the entry time: Since <= time < Until. Zero
	// leaves that side open.
	Since, Until time.Time
}

func (f Filter) match(e *Entry) bool {
	if f.Tenant != "" && e.Tenant != f.Tenant {
		return false
	}
	if !f.Since.IsZero() && e.Time.Before(f.Since) {
		return false
	}
	if !f.Until.IsZero() && !e.Time.Before(f.Until) {
		return false
	}
	return true
}

// Export line types.
const (
	lineCheckpoint = "checkpoint"
	lineEntry      = "entry"
	lineEnd        = "end"
)

// exportCheckpoint is the first line of an export.
type exportCheckpoint struct {
	Type   string   `json:"type"`
	Origin string   `json:"origin"`
	Size   uint64   `json:"size"`
	Root   string   `json:"root"`
	KIDs   []string `json:"kids,omitempty"`
	// Note is the signed checkpoint (C2SP signed note) the proofs lead to.
	Note string `json:"note"`
}

// exportEntry is one entry line. Record holds the stored record bytes
// verbatim (canonical JSON), so its leaf hash can be recomputed.
type exportEntry struct {
	Type   string          `json:"type"`
	Seq    uint64          `json:"seq"`
	Index  uint64          `json:"index"`
	Proof  []string        `json:"proof"`
	Record json.RawMessage `json:"record"`
}

// exportEnd is the last line; a missing end line means the export was cut.
type exportEnd struct {
	Type    string `json:"type"`
	Entries int    `json:"entries"`
}

type exportItem struct {
	seq, index uint64
	record     []byte
	ids        []compact.NodeID
	nodes      proof.Nodes
	hashes     map[compact.NodeID][]byte
}

var errStopRead = errors.New("stop")

// Export writes the entries selected by f as JSON Lines: first the latest
// signed checkpoint, then one line per entry with its stream sequence, leaf
// index and RFC 6962 inclusion proof against that checkpoint, then an end
// line with the count. A writable log signs a fresh checkpoint first when
// entries were added since the last one; a read-only log exports up to the
// latest stored checkpoint. Proof nodes are collected in one pass over the
// log; memory grows with the number of exported entries, not the log size.
func (l *Log) Export(ctx context.Context, w io.Writer, f Filter) error {
	var rec *checkpointRecord
	var err error
	switch {
	case l.cfg.ReadOnly:
		rec, err = l.latestCheckpoint(ctx)
	case l.leader(ctx):
		rec, err = l.checkpointIfGrown(ctx)
	default:
		// Another instance stores checkpoints; this one signs the tree as
		// it stands for this export only.
		rec, err = l.signCheckpoint(ctx, false)
	}
	if err != nil {
		return fmt.Errorf("audit: export: %w", err)
	}
	size := rec.Size
	rng := rangeFactory.NewEmptyRange(0)
	var items []*exportItem
	want := map[compact.NodeID][]*exportItem{}
	visit := func(id compact.NodeID, h []byte) {
		for _, it := range want[id] {
			it.hashes[id] = h
		}
		delete(want, id)
	}
	st, err := l.entries.State(ctx)
	if err != nil {
		return fmt.Errorf("audit: export: %w", err)
	}
	// A log whose oldest entries expired starts from the checkpoint that
	// covers them; the entries stored before that checkpoint ends cannot
	// be proven and are left out.
	var skipTo uint64
	if st.Msgs > 0 && st.FirstSeq > 1 {
		base, err := l.baseCheckpoint(ctx, st.FirstSeq-1)
		if err != nil {
			return fmt.Errorf("audit: export: %w", err)
		}
		if rng, err = base.compactRange(); err != nil {
			return fmt.Errorf("audit: export: %w: base checkpoint: %w", ErrTampered, err)
		}
		skipTo = base.LastSeq
	}
	expect := st.FirstSeq
	err = scan(ctx, l.entries, 0, func(m *queue.Msg) error {
		if m.Seq != expect {
			return fmt.Errorf("%w: seq %d..%d are missing; run verify", ErrTampered, expect, m.Seq-1)
		}
		expect++
		if m.Seq <= skipTo {
			return nil
		}
		for _, line := range splitBatch(m.Data) {
			if rng.End() >= size {
				return errStopRead
			}
			r, err := DecodeRecord(line)
			if err != nil {
				return fmt.Errorf("%w: seq %d: %w", ErrTampered, m.Seq, err)
			}
			index := rng.End()
			if f.match(&r.Entry) {
				it, err := newExportItem(m.Seq, index, size, line, rng)
				if err != nil {
					return err
				}
				for _, id := range it.ids {
					if _, ok := it.hashes[id]; !ok {
						want[id] = append(want[id], it)
					}
				}
				items = append(items, it)
			}
			if err := rng.Append(leafHash(line), visit); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStopRead) {
		return fmt.Errorf("audit: export: %w", err)
	}
	if rng.End() < size {
		return fmt.Errorf("audit: export: %w: %d entries stored, the checkpoint covers %d; run verify", ErrTampered, rng.End(), size)
	}
	root, err := rootOf(rng)
	if err != nil || b64.EncodeToString(root) != rec.Root {
		return fmt.Errorf("audit: export: %w: stored entries do not hash to the checkpoint root; run verify", ErrTampered)
	}

	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	if err := enc.Encode(exportCheckpoint{Type: lineCheckpoint, Origin: l.cfg.Origin, Size: size, Root: rec.Root, KIDs: rec.KIDs, Note: rec.Note}); err != nil {
		return fmt.Errorf("audit: export: %w", err)
	}
	for _, it := range items {
		hs := make([][]byte, len(it.ids))
		for i, id := range it.ids {
			hs[i] = it.hashes[id]
		}
		p, err := it.nodes.Rehash(hs, hasher.HashChildren)
		if err != nil {
			return fmt.Errorf("audit: export: proof for %d: %w", it.index, err)
		}
		line := exportEntry{Type: lineEntry, Seq: it.seq, Index: it.index, Proof: make([]string, len(p)), Record: it.record}
		for i, h := range p {
			line.Proof[i] = b64.EncodeToString(h)
		}
		if err := writeEntryLine(bw, &line); err != nil {
			return fmt.Errorf("audit: export: %w", err)
		}
	}
	if err := enc.Encode(exportEnd{Type: lineEnd, Entries: len(items)}); err != nil {
		return fmt.Errorf("audit: export: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("audit: export: %w", err)
	}
	return nil
}

// writeEntryLine writes an entry line with the record bytes verbatim
// (encoding/json would re-escape them).
func writeEntryLine(w *bufio.Writer, e *exportEntry) error {
	proofJSON, err := json.Marshal(e.Proof)
	if err != nil {
		return err
	}
	w.WriteString(`{"type":"entry","seq":`)
	w.WriteString(strconv.FormatUint(e.Seq, 10))
	w.WriteString(`,"index":`)
	w.WriteString(strconv.FormatUint(e.Index, 10))
	w.WriteString(`,"proof":`)
	w.Write(proofJSON)
	w.WriteString(`,"record":`)
	w.Write(e.Record)
	_, err = w.WriteString("}\n")
	return err
}

// newExportItem prepares the proof of leaf index in a tree of size; the
// nodes left of the leaf are the compact range [0, index) at this moment,
// the others are filled in by the visitor as the tree grows.
func newExportItem(seq, index, size uint64, record []byte, rng *compact.Range) (*exportItem, error) {
	nodes, err := proof.Inclusion(index, size)
	if err != nil {
		return nil, err
	}
	it := &exportItem{seq: seq, index: index, record: bytes.Clone(record), ids: nodes.IDs, nodes: nodes,
		hashes: make(map[compact.NodeID][]byte, len(nodes.IDs))}
	left := compact.RangeNodes(rng.Begin(), rng.End(), nil)
	have := make(map[compact.NodeID][]byte, len(left))
	for i, id := range left {
		have[id] = rng.Hashes()[i]
	}
	for _, id := range nodes.IDs {
		if h, ok := have[id]; ok {
			it.hashes[id] = h
		}
	}
	return it, nil
}

// baseCheckpoint returns, for a log whose oldest entries expired (the
// stream's first sequence is after gone), the checkpoint that first covered
// sequence gone; entries up to its end cannot be proven and are left out
// of exports. It refuses when those entries cannot have expired yet.
func (l *Log) baseCheckpoint(ctx context.Context, gone uint64) (*checkpointRecord, error) {
	var found *checkpointRecord
	err := scan(ctx, l.cps, 0, func(m *queue.Msg) error {
		rec, err := decodeCheckpointRecord(m)
		if err != nil || rec.LastSeq < gone || rec.Range == nil || (found != nil && rec.Size >= found.Size) {
			return nil
		}
		if _, err := rec.compactRange(); err == nil {
			found = rec
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if found == nil {
		return nil, fmt.Errorf("%w: seq 1..%d are missing and no checkpoint holds their range", ErrTampered, gone)
	}
	if cutoff := l.cfg.Now().Add(-l.cfg.Retention).Add(pruneSlack); found.Time.After(cutoff) {
		return nil, fmt.Errorf("%w: seq 1..%d are missing but cannot have expired; run verify", ErrTampered, gone)
	}
	return found, nil
}

// maxExportLine bounds one line VerifyExport reads.
const maxExportLine = 256 << 10

// VerifyExport checks an export file on its own: the checkpoint's signature
// against keys (a JWKS or key history), each record's form, and each
// inclusion proof against the checkpoint root, and that the file is
// complete. It needs nothing from the sealpost that wrote it.
func VerifyExport(r io.Reader, keys *signer.KeySet) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxExportLine)
	var cp Checkpoint
	lineNo, entries := 0, 0
	ended := false
	lastIndex := int64(-1)
	for sc.Scan() {
		lineNo++
		line := sc.Bytes()
		if ended {
			return fmt.Errorf("audit export line %d: data after the end line", lineNo)
		}
		var kind struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(line, &kind); err != nil {
			return fmt.Errorf("audit export line %d: %w", lineNo, err)
		}
		if lineNo == 1 {
			if kind.Type != lineCheckpoint {
				return fmt.Errorf("audit export line 1: want the checkpoint, got %q", kind.Type)
			}
			var c exportCheckpoint
			if err := json.Unmarshal(line, &c); err != nil {
				return fmt.Errorf("audit export line 1: %w", err)
			}
			var err error
			if cp, err = OpenCheckpoint([]byte(c.Note), c.Origin, keys); err != nil {
				return fmt.Errorf("audit export line 1: %w", err)
			}
			if cp.Size != c.Size || b64.EncodeToString(cp.Root) != c.Root {
				return errors.New("audit export line 1: size or root differ from the signed note")
			}
			continue
		}
		switch kind.Type {
		case lineEntry:
			var e exportEntry
			if err := json.Unmarshal(line, &e); err != nil {
				return fmt.Errorf("audit export line %d: %w", lineNo, err)
			}
			if int64(e.Index) <= lastIndex {
				return fmt.Errorf("audit export line %d: index %d is not after %d", lineNo, e.Index, lastIndex)
			}
			lastIndex = int64(e.Index)
			rec, err := DecodeRecord(e.Record)
			if err != nil {
				return fmt.Errorf("audit export line %d: %w", lineNo, err)
			}
			if rec.V == recordV1 && rec.Index != e.Index {
				return fmt.Errorf("audit export line %d: record index %d, line index %d", lineNo, rec.Index, e.Index)
			}
			if e.Index >= cp.Size {
				return fmt.Errorf("audit export line %d: index %d is outside the checkpoint (size %d)", lineNo, e.Index, cp.Size)
			}
			p := make([][]byte, len(e.Proof))
			for i, s := range e.Proof {
				if p[i], err = b64.Strict().DecodeString(s); err != nil {
					return fmt.Errorf("audit export line %d: proof: %w", lineNo, err)
				}
			}
			if err := proof.VerifyInclusion(hasher, e.Index, cp.Size, leafHash(e.Record), p, cp.Root); err != nil {
				return fmt.Errorf("audit export line %d: entry %d is not in the signed tree: %w", lineNo, e.Index, err)
			}
			entries++
		case lineEnd:
			var e exportEnd
			if err := json.Unmarshal(line, &e); err != nil {
				return fmt.Errorf("audit export line %d: %w", lineNo, err)
			}
			if e.Entries != entries {
				return fmt.Errorf("audit export: end line counts %d entries, the file has %d", e.Entries, entries)
			}
			ended = true
		default:
			return fmt.Errorf("audit export line %d: unknown line type %q", lineNo, kind.Type)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("audit export: %w", err)
	}
	if lineNo == 0 {
		return errors.New("audit export: empty")
	}
	if !ended {
		return errors.New("audit export: no end line; the file is incomplete")
	}
	return nil
}
