package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/sealpost/sealpost/queue"
)

// Outcomes of proof requests; the HTTP layer maps them to answers.
var (
	// ErrNotFound: no entry of that receipt for that tenant, or no stored
	// checkpoint of that size.
	ErrNotFound = errors.New("audit: not found")
	// ErrPending: the entries exist but no checkpoint covers them yet; see
	// PendingError for when to ask again.
	ErrPending = errors.New("audit: no checkpoint covers the entries yet")
	// ErrBadRange: the sizes of a consistency proof request are out of
	// order or beyond the newest checkpoint.
	ErrBadRange = errors.New("audit: invalid tree sizes")
	// ErrBusy: too many proofs are being built; try again shortly.
	ErrBusy = errors.New("audit: too many proof requests")
)

// maxProofsInFlight bounds the proofs built at once.
const maxProofsInFlight = 8

// PendingError is ErrPending with the time the next checkpoint is due.
type PendingError struct{ RetryAfter time.Duration }

func (e *PendingError) Error() string { return ErrPending.Error() }
func (e *PendingError) Unwrap() error { return ErrPending }

// Proof document types.
const (
	TypeReceiptProof     = "sealpost.receipt-proof/v1"
	TypeConsistencyProof = "sealpost.consistency-proof/v1"
)

// ReceiptProof is the answer of GET /v1/receipts/{id}/proof and what
// `sealpost verify --proof` reads: the receipt's audit entries (every
// message.* entry whose target is the receipt id) with their RFC 6962
// inclusion proofs in the signed checkpoint, which carries the log's
// signed time and the witnesses' cosignatures.
type ReceiptProof struct {
	Type      string `json:"type"`
	ReceiptID string `json:"receipt_id"`
	Origin    string `json:"origin"`
	Size      uint64 `json:"size"`
	Root      string `json:"root"`
	// Checkpoint is the signed note (C2SP checkpoint) of Size and Root.
	Checkpoint string        `json:"checkpoint"`
	Entries    []ProvenEntry `json:"entries"`
	// Pending counts the receipt's entries no checkpoint covers yet.
	Pending int `json:"pending,omitempty"`
	// More is set when the receipt has more entries than a proof lists.
	More bool `json:"more,omitempty"`
}

// ProvenEntry is one audit entry with its inclusion proof. Record is the
// stored record verbatim (canonical JSON), whose leaf hash is
// SHA-256(0x00 || record).
type ProvenEntry struct {
	Index  uint64          `json:"index"`
	Seq    uint64          `json:"seq"`
	Proof  []string        `json:"proof"`
	Record json.RawMessage `json:"record"`
}

// ConsistencyProof is the answer of GET /v1/audit/consistency: the RFC
// 6962 consistency proof between two stored checkpoints, both included.
type ConsistencyProof struct {
	Type   string `json:"type"`
	Origin string `json:"origin"`
	From   uint64 `json:"from"`
	To     uint64 `json:"to"`
	// FromCheckpoint is empty when From is 0 (the empty tree).
	FromCheckpoint string   `json:"from_checkpoint,omitempty"`
	ToCheckpoint   string   `json:"to_checkpoint"`
	Proof          []string `json:"proof"`
}

// EncodeProof writes a proof document as JSON without HTML escapes, so
// that the records in it stay byte for byte what was stored: their leaf
// hashes depend on it.
func EncodeProof(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

func (l *Log) proofSlot() (func(), error) {
	if l.tiles == nil || l.index == nil {
		return nil, ErrProofsUnavailable
	}
	select {
	case l.proofSlots <- struct{}{}:
		return func() { <-l.proofSlots }, nil
	default:
		return nil, ErrBusy
	}
}

// ReceiptProof returns the proof of receipt id's entries in the newest
// stored checkpoint, for tenant. The entries are found through the receipt
// index and each is checked to be the receipt's and the tenant's: another
// tenant's receipt is ErrNotFound, like an unknown one. Entries stored
// after the newest checkpoint are counted in Pending; when no entry is
// covered yet the answer is a *PendingError.
func (l *Log) ReceiptProof(ctx context.Context, tenant, id string) (*ReceiptProof, error) {
	if tenant == "" {
		return nil, errors.New("audit: receipt proof without a tenant")
	}
	done, err := l.proofSlot()
	if err != nil {
		return nil, err
	}
	defer done()
	if !ValidReceiptID(id) {
		return nil, ErrNotFound
	}
	// The checkpoint first: an entry indexed after it was read counts as
	// pending, never as covered by a tree that does not hold it.
	cp, err := l.latestCheckpoint(ctx)
	if err != nil && !errors.Is(err, ErrNoCheckpoint) {
		return nil, err
	}
	found, more, err := lookupReceipt(ctx, l.index, l.cfg.IndexSubject, id)
	if err != nil {
		return nil, fmt.Errorf("audit: %w: receipt index: %w", ErrUnavailable, err)
	}
	p := &ReceiptProof{Type: TypeReceiptProof, ReceiptID: id, Origin: l.cfg.Origin, More: more, Entries: []ProvenEntry{}}
	if cp != nil {
		p.Size, p.Root, p.Checkpoint = cp.Size, cp.Root, cp.Note
	}
	root, _ := b64.DecodeString(p.Root)
	msgs := map[uint64][][]byte{}
	for _, e := range found {
		lines, ok := msgs[e.Seq]
		if !ok {
			m, err := l.entries.Get(ctx, e.Seq)
			if err != nil && !errors.Is(err, queue.ErrNotFound) {
				return nil, fmt.Errorf("audit: %w: %w", ErrUnavailable, err)
			}
			if err == nil {
				lines = splitBatch(m.Data)
			}
			msgs[e.Seq] = lines
		}
		if e.Pos >= len(lines) {
			continue
		}
		r, err := DecodeRecord(lines[e.Pos])
		if err != nil || r.Target != id || r.Tenant != tenant {
			continue
		}
		if cp == nil || e.Index >= cp.Size {
			p.Pending++
			continue
		}
		proof, err := proveInclusion(ctx, l.tiles, e.Index, cp.Size, root)
		if err != nil {
			return nil, fmt.Errorf("audit: %w: proof of leaf %d: %w", ErrUnavailable, e.Index, err)
		}
		pe := ProvenEntry{Index: e.Index, Seq: e.Seq, Record: json.RawMessage(lines[e.Pos]), Proof: make([]string, len(proof))}
		for i, h := range proof {
			pe.Proof[i] = b64.EncodeToString(h)
		}
		p.Entries = append(p.Entries, pe)
	}
	switch {
	case len(p.Entries) > 0:
		return p, nil
	case p.Pending > 0:
		return nil, &PendingError{RetryAfter: l.nextCheckpointIn()}
	}
	return nil, ErrNotFound
}

// nextCheckpointIn estimates when the next checkpoint is stored, at least a
// second and at most CheckpointEvery from now.
func (l *Log) nextCheckpointIn() time.Duration {
	l.cpMu.Lock()
	at := l.lastCPAt
	l.cpMu.Unlock()
	wait := l.cfg.CheckpointEvery
	if !at.IsZero() {
		wait = at.Add(l.cfg.CheckpointEvery).Sub(l.cfg.Now())
	}
	return min(max(wait, time.Second), l.cfg.CheckpointEvery) + integrateEvery
}

// ConsistencyProof returns the RFC 6962 consistency proof between the
// stored checkpoints of sizes from and to (to 0 with latest set: the
// newest). Sizes must name stored checkpoints (ErrNotFound otherwise) with
// from <= to (ErrBadRange otherwise); from may be 0, the empty tree.
func (l *Log) ConsistencyProof(ctx context.Context, from, to uint64, latest bool) (*ConsistencyProof, error) {
	done, err := l.proofSlot()
	if err != nil {
		return nil, err
	}
	defer done()
	newest, err := l.latestCheckpoint(ctx)
	if errors.Is(err, ErrNoCheckpoint) {
		return nil, fmt.Errorf("%w: no checkpoint yet", ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	if latest {
		to = newest.Size
	}
	switch {
	case from > to:
		return nil, fmt.Errorf("%w: from %d is after to %d", ErrBadRange, from, to)
	case to > newest.Size:
		return nil, fmt.Errorf("%w: to %d is beyond the newest checkpoint (size %d)", ErrBadRange, to, newest.Size)
	}
	toRec := newest
	if to != newest.Size {
		if toRec, err = l.checkpointOfSize(ctx, to); err != nil {
			return nil, err
		}
	}
	p := &ConsistencyProof{Type: TypeConsistencyProof, Origin: l.cfg.Origin, From: from, To: to, ToCheckpoint: toRec.Note}
	if from > 0 {
		fromRec, err := l.checkpointOfSize(ctx, from)
		if err != nil {
			return nil, err
		}
		p.FromCheckpoint = fromRec.Note
	}
	root, err := b64.Strict().DecodeString(toRec.Root)
	if err != nil {
		return nil, fmt.Errorf("audit: %w: checkpoint record of size %d: bad root", ErrTampered, to)
	}
	proof, err := proveConsistency(ctx, l.tiles, from, to, root)
	if err != nil {
		return nil, fmt.Errorf("audit: %w: consistency proof: %w", ErrUnavailable, err)
	}
	p.Proof = make([]string, len(proof))
	for i, h := range proof {
		p.Proof[i] = b64.EncodeToString(h)
	}
	return p, nil
}

// maxCheckpointProbes bounds the reads of checkpointOfSize.
const maxCheckpointProbes = 256

// checkpointOfSize finds a stored checkpoint of the given size. Stored
// sizes never decrease along the stream (each is stored with a
// compare-and-set after the newest, and only when not smaller), so a
// binary search over sequences finds it in about log2(checkpoints) reads.
func (l *Log) checkpointOfSize(ctx context.Context, size uint64) (*checkpointRecord, error) {
	st, err := l.cps.State(ctx)
	if err != nil {
		return nil, fmt.Errorf("audit: %w: %w", ErrUnavailable, err)
	}
	probes := 0
	// get reads the first decodable record at or after seq (up to hi).
	get := func(seq, hi uint64) (*checkpointRecord, error) {
		for ; seq <= hi && probes < maxCheckpointProbes; seq++ {
			probes++
			m, err := l.cps.Get(ctx, seq)
			if errors.Is(err, queue.ErrNotFound) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("audit: %w: %w", ErrUnavailable, err)
			}
			if r, err := decodeCheckpointRecord(m); err == nil {
				return r, nil
			}
		}
		return nil, nil
	}
	if st.Msgs == 0 {
		return nil, fmt.Errorf("%w: no stored checkpoint of size %d", ErrNotFound, size)
	}
	// best is the first record found with a size of at least size; the
	// search moves left of it until nothing is left.
	var best *checkpointRecord
	lo, hi := st.FirstSeq, st.LastSeq
	for lo <= hi && lo > 0 && probes < maxCheckpointProbes {
		mid := lo + (hi-lo)/2
		r, err := get(mid, hi)
		if err != nil {
			return nil, err
		}
		switch {
		case r != nil && r.Size < size:
			lo = r.seq + 1
			continue
		case r != nil:
			best = r
		}
		if mid == 0 {
			break
		}
		hi = mid - 1
	}
	r := best
	if r == nil || r.Size != size {
		return nil, fmt.Errorf("%w: no stored checkpoint of size %d", ErrNotFound, size)
	}
	return r, nil
}
