package audit

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"slices"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/sealpost/sealpost/signer"
)

// Witness is a witness of the log: a C2SP tlog-witness cosigner. Verifiers
// need its Name and Key; the log also needs URL, the witness's submission
// prefix (add-checkpoint is POSTed to URL + "/add-checkpoint").
type Witness struct {
	Name string
	Key  ed25519.PublicKey
	URL  string
}

// WitnessPolicy says whose cosignatures a checkpoint needs: at least Quorum
// of Witnesses. The zero value (no witnesses) requires none.
type WitnessPolicy struct {
	Witnesses []Witness
	Quorum    int
}

// maxWitnesses bounds a witness policy.
const maxWitnesses = 32

// Check validates the policy: names unique, keys Ed25519, 1 <= Quorum <=
// len(Witnesses) when there are witnesses.
func (p *WitnessPolicy) Check() error {
	if p == nil || len(p.Witnesses) == 0 {
		if p != nil && p.Quorum != 0 {
			return errors.New("a witness quorum needs witnesses")
		}
		return nil
	}
	if len(p.Witnesses) > maxWitnesses {
		return fmt.Errorf("%d witnesses, at most %d", len(p.Witnesses), maxWitnesses)
	}
	if p.Quorum < 1 || p.Quorum > len(p.Witnesses) {
		return fmt.Errorf("witness quorum %d must be between 1 and the number of witnesses (%d)", p.Quorum, len(p.Witnesses))
	}
	seen := map[string]bool{}
	for _, w := range p.Witnesses {
		if !validKeyName(w.Name) || len(w.Key) != ed25519.PublicKeySize {
			return fmt.Errorf("witness %q: invalid name or key", w.Name)
		}
		if seen[w.Name] {
			return fmt.Errorf("witness %q listed twice", w.Name)
		}
		seen[w.Name] = true
	}
	return nil
}

func (p *WitnessPolicy) active() bool { return p != nil && len(p.Witnesses) > 0 }

// ErrNoLogSignature: a note carries no valid signature by a log key (only
// cosignatures, or none).
var ErrNoLogSignature = errors.New("no signature by a log key")

// ErrQuorum reports a checkpoint with fewer valid witness cosignatures than
// the policy requires.
var ErrQuorum = errors.New("checkpoint lacks the witness quorum")

// cpVerifiers are the verifiers of one origin's checkpoints.
type cpVerifiers struct {
	list note.Verifiers
	log  map[uint32]bool   // hashes of log signature keys
	time map[uint32]bool   // hashes of the log's timestamp cosignature keys
	wit  map[uint32]string // witness cosignature key hash -> witness name
}

func newCPVerifiers(origin string, keys *signer.KeySet, wp *WitnessPolicy) (*cpVerifiers, error) {
	if keys == nil {
		return nil, errors.New("audit: no verification keys")
	}
	if err := wp.Check(); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	cv := &cpVerifiers{log: map[uint32]bool{}, time: map[uint32]bool{}, wit: map[uint32]string{}}
	var vs []note.Verifier
	var seen [][]byte
	for _, k := range keys.Keys {
		if len(k.Key) != ed25519.PublicKeySize || slices.ContainsFunc(seen, func(b []byte) bool { return bytes.Equal(b, k.Key) }) {
			continue
		}
		seen = append(seen, k.Key)
		vkey, err := note.NewEd25519VerifierKey(origin, k.Key)
		if err != nil {
			continue
		}
		v, err := note.NewVerifier(vkey)
		if err != nil {
			return nil, fmt.Errorf("audit: verifier for %s: %w", k.KID, err)
		}
		tv, err := NewCosignatureVerifier(origin, k.Key)
		if err != nil {
			return nil, fmt.Errorf("audit: verifier for %s: %w", k.KID, err)
		}
		cv.log[v.KeyHash()] = true
		cv.time[tv.KeyHash()] = true
		vs = append(vs, v, tv)
	}
	if wp.active() {
		for _, w := range wp.Witnesses {
			v, err := NewCosignatureVerifier(w.Name, w.Key)
			if err != nil {
				return nil, fmt.Errorf("audit: witness %s: %w", w.Name, err)
			}
			cv.wit[v.KeyHash()] = w.Name
			vs = append(vs, v)
		}
	}
	cv.list = note.VerifierList(vs...)
	return cv, nil
}

// VerifyCheckpoint verifies a signed checkpoint note: at least one
// signature by one of keys under the origin name (empty origin accepts the
// note's own first line), the body's form, and, when wp names witnesses,
// valid cosignatures of at least wp.Quorum of them (ErrQuorum otherwise).
// The result carries the log's signed time, when the checkpoint has one,
// and the witnesses' cosignature times.
func VerifyCheckpoint(signed []byte, origin string, keys *signer.KeySet, wp *WitnessPolicy) (Checkpoint, error) {
	if len(signed) > maxCheckpointRecord {
		return Checkpoint{}, errors.New("checkpoint too large")
	}
	if origin == "" {
		first, _, _ := bytes.Cut(signed, []byte{'\n'})
		origin = string(first)
	}
	cv, err := newCPVerifiers(origin, keys, wp)
	if err != nil {
		return Checkpoint{}, err
	}
	n, err := note.Open(signed, cv.list)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint signature: %w", err)
	}
	c, err := ParseCheckpoint(n.Text)
	if err != nil {
		return Checkpoint{}, err
	}
	if c.Origin != origin {
		return Checkpoint{}, fmt.Errorf("checkpoint origin %q, want %q", c.Origin, origin)
	}
	logSigned := false
	for _, s := range n.Sigs {
		switch {
		case s.Name == origin && cv.log[s.Hash]:
			logSigned = true
		case s.Name == origin && cv.time[s.Hash]:
			if t, err := cosignatureTime(s); err == nil && (c.Time.IsZero() || t.Before(c.Time)) {
				c.Time = t
			}
		case cv.wit[s.Hash] == s.Name:
			t, err := cosignatureTime(s)
			if err != nil {
				continue
			}
			if c.Cosigned == nil {
				c.Cosigned = map[string]time.Time{}
			}
			c.Cosigned[s.Name] = t
		}
	}
	if !logSigned {
		return Checkpoint{}, fmt.Errorf("checkpoint signature: %w", ErrNoLogSignature)
	}
	if wp.active() && len(c.Cosigned) < wp.Quorum {
		return c, fmt.Errorf("%w: %d of %d witnesses cosigned, %d required", ErrQuorum, len(c.Cosigned), len(wp.Witnesses), wp.Quorum)
	}
	return c, nil
}

// checkpointBody returns the note text (the body, up to and including the
// blank line's newline) of a signed note, without verifying it.
func checkpointBody(signed []byte) ([]byte, bool) {
	i := bytes.LastIndex(signed, []byte("\n\n"))
	if i < 0 {
		return nil, false
	}
	return signed[:i+1], true
}
