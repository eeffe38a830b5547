package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/transparency-dev/merkle/proof"

	"github.com/sealpost/sealpost/signer"
)

// Offline checks of proof documents. They share no code with the proof
// builder (tiles and golang.org/x/mod/sumdb/tlog): inclusion and
// consistency are checked with github.com/transparency-dev/merkle, so the
// two RFC 6962 implementations hold each other to the same answers.

// MaxProofDocument bounds a proof document, in bytes: at most
// maxReceiptEntries records of MaxEntrySize with their proofs.
const MaxProofDocument = 4 << 20

// maxProofHashes bounds a proof's hashes: two per tree level.
const maxProofHashes = 128

// ProofType returns the "type" member of a proof document.
func ProofType(doc []byte) (string, error) {
	if len(doc) > MaxProofDocument {
		return "", fmt.Errorf("proof document is %d bytes, limit %d", len(doc), MaxProofDocument)
	}
	var t struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(doc, &t); err != nil {
		return "", fmt.Errorf("proof document: %w", err)
	}
	return t.Type, nil
}

func decodeHashes(ss []string) ([][]byte, error) {
	if len(ss) > maxProofHashes {
		return nil, fmt.Errorf("%d proof hashes, at most %d", len(ss), maxProofHashes)
	}
	out := make([][]byte, len(ss))
	for i, s := range ss {
		h, err := b64.Strict().DecodeString(s)
		if err != nil || len(h) != hashSize {
			return nil, fmt.Errorf("proof hash %d is not a base64 sha-256 hash", i)
		}
		out[i] = h
	}
	return out, nil
}

func decodeStrict(doc []byte, v any) error {
	if len(doc) > MaxProofDocument {
		return fmt.Errorf("proof document is %d bytes, limit %d", len(doc), MaxProofDocument)
	}
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("proof document: %w", err)
	}
	if dec.More() {
		return errors.New("proof document: data after the document")
	}
	return nil
}

// VerifyReceiptProof checks a receipt proof document on its own: the
// checkpoint's signature against keys (a JWKS or key history) and, when wp
// names witnesses, their quorum; that every record is canonical, a
// message step of the receipt, and included at its index in the tree the
// checkpoint signs. It returns the document and the verified checkpoint.
func VerifyReceiptProof(doc []byte, keys *signer.KeySet, wp *WitnessPolicy) (*ReceiptProof, Checkpoint, error) {
	var p ReceiptProof
	if err := decodeStrict(doc, &p); err != nil {
		return nil, Checkpoint{}, err
	}
	if p.Type != TypeReceiptProof {
		return nil, Checkpoint{}, fmt.Errorf("proof document of type %q, want %q", p.Type, TypeReceiptProof)
	}
	if !ValidReceiptID(p.ReceiptID) {
		return nil, Checkpoint{}, errors.New("proof document: receipt_id is not a receipt id")
	}
	cp, err := VerifyCheckpoint([]byte(p.Checkpoint), p.Origin, keys, wp)
	if err != nil {
		return nil, cp, err
	}
	if cp.Size != p.Size || b64.EncodeToString(cp.Root) != p.Root {
		return nil, cp, errors.New("proof document: size or root differ from the signed checkpoint")
	}
	if len(p.Entries) == 0 {
		return nil, cp, errors.New("proof document: no entries")
	}
	if len(p.Entries) > maxReceiptEntries {
		return nil, cp, fmt.Errorf("proof document: %d entries, at most %d", len(p.Entries), maxReceiptEntries)
	}
	for i, e := range p.Entries {
		if i > 0 && e.Index <= p.Entries[i-1].Index {
			return nil, cp, fmt.Errorf("entry %d: index %d is not after %d", i, e.Index, p.Entries[i-1].Index)
		}
		r, err := DecodeRecord(e.Record)
		if err != nil {
			return nil, cp, fmt.Errorf("entry %d: %w", e.Index, err)
		}
		if r.Target != p.ReceiptID || !strings.HasPrefix(r.Action, "message.") {
			return nil, cp, fmt.Errorf("entry %d is %s of %q, not a step of receipt %s", e.Index, r.Action, r.Target, p.ReceiptID)
		}
		hashes, err := decodeHashes(e.Proof)
		if err != nil {
			return nil, cp, fmt.Errorf("entry %d: %w", e.Index, err)
		}
		if err := proof.VerifyInclusion(hasher, e.Index, cp.Size, leafHash(e.Record), hashes, cp.Root); err != nil {
			return nil, cp, fmt.Errorf("entry %d is not in the signed tree: %w", e.Index, err)
		}
	}
	return &p, cp, nil
}

// VerifyConsistencyProof checks a consistency proof document on its own:
// both checkpoints' signatures against keys (the witness quorum of wp on
// the newer one), and that the newer tree extends the older one. It
// returns the document and the two verified checkpoints (the first is the
// empty tree when From is 0).
func VerifyConsistencyProof(doc []byte, keys *signer.KeySet, wp *WitnessPolicy) (*ConsistencyProof, Checkpoint, Checkpoint, error) {
	var p ConsistencyProof
	var from, to Checkpoint
	if err := decodeStrict(doc, &p); err != nil {
		return nil, from, to, err
	}
	if p.Type != TypeConsistencyProof {
		return nil, from, to, fmt.Errorf("proof document of type %q, want %q", p.Type, TypeConsistencyProof)
	}
	to, err := VerifyCheckpoint([]byte(p.ToCheckpoint), p.Origin, keys, wp)
	if err != nil {
		return nil, from, to, fmt.Errorf("to_checkpoint: %w", err)
	}
	if to.Size != p.To {
		return nil, from, to, fmt.Errorf("to_checkpoint has size %d, the document says %d", to.Size, p.To)
	}
	from = Checkpoint{Origin: p.Origin, Root: hasher.EmptyRoot()}
	if p.From > 0 || p.FromCheckpoint != "" {
		if from, err = VerifyCheckpoint([]byte(p.FromCheckpoint), p.Origin, keys, nil); err != nil {
			return nil, from, to, fmt.Errorf("from_checkpoint: %w", err)
		}
		if from.Size != p.From {
			return nil, from, to, fmt.Errorf("from_checkpoint has size %d, the document says %d", from.Size, p.From)
		}
	}
	hashes, err := decodeHashes(p.Proof)
	if err != nil {
		return nil, from, to, err
	}
	if err := CheckConsistency(from, to, hashes); err != nil {
		return nil, from, to, err
	}
	return &p, from, to, nil
}

// CheckConsistency checks that the tree of checkpoint to extends the tree
// of checkpoint from, given the RFC 6962 consistency proof between them.
// A smaller to is a rollback; the same size with another root is a fork.
func CheckConsistency(from, to Checkpoint, hashes [][]byte) error {
	switch {
	case to.Size < from.Size:
		return fmt.Errorf("%w: a checkpoint of size %d follows one of size %d", ErrRollback, to.Size, from.Size)
	case to.Size == from.Size && !bytes.Equal(to.Root, from.Root):
		return fmt.Errorf("%w: %v", ErrFork, "two checkpoints of the same size with different roots")
	}
	if err := proof.VerifyConsistency(hasher, from.Size, to.Size, hashes, from.Root, to.Root); err != nil {
		return fmt.Errorf("%w: the tree of size %d does not extend the tree of size %d: %w", ErrFork, to.Size, from.Size, err)
	}
	return nil
}
