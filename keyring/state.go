package keyring

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/sealpost/sealpost/signer"
)

// StateKey is the key of the key-state document in the Store. The whole
// key schedule lives in this one document, so that a single compare-and-set
// decides every change: two instances racing to create the next key cannot
// both win.
const StateKey = "state"

// MaxStateSize is the largest key-state document, in bytes, that the keyring
// reads or writes (1 MiB: thousands of keys).
const MaxStateSize = 1 << 20

// stateVersion is the version of the key-state document format.
const stateVersion = 1

// Origins say why a key was created. They are kept in the key state and
// shown by List for operators.
const (
	originInitial  = "initial"  // the first key of a new deployment
	originSchedule = "schedule" // the key of a calendar period
	originRotate   = "rotate"   // an emergency rotation
	originReplace  = "replace"  // replaces a revoked key
)

// state is the key-state document. Keys are ordered by NotBefore, then by
// IssuedAt.
type state struct {
	V    int         `json:"v"`
	Keys []keyRecord `json:"keys"`
}

// keyRecord is one key with its windows. The private key is present only
// sealed, and only while the key may still sign: it is dropped once the key
// expires or is revoked.
type keyRecord struct {
	KID    string `json:"kid"`
	Public []byte `json:"pub"`
	// Sealed is the 32-byte Ed25519 seed sealed by the KMS layer for tenant
	// "_system", purpose signing-key, object id KID.
	Sealed     []byte    `json:"sealed,omitempty"`
	Origin     string    `json:"origin"`
	IssuedAt   time.Time `json:"iat"`
	NotBefore  time.Time `json:"nbf"`
	SignsUntil time.Time `json:"signs_until"`
	Expires    time.Time `json:"exp"`
	RevokedAt  time.Time `json:"revoked_at,omitzero"`
}

// end is the end of the key's effective signing window: SignsUntil, or the
// revocation time when that is earlier.
func (r *keyRecord) end() time.Time {
	if !r.RevokedAt.IsZero() && r.RevokedAt.Before(r.SignsUntil) {
		return r.RevokedAt
	}
	return r.SignsUntil
}

// live reports whether the key's effective signing window is not empty.
func (r *keyRecord) live() bool { return r.end().After(r.NotBefore) }

// signsAt reports whether t lies in the key's effective signing window.
func (r *keyRecord) signsAt(t time.Time) bool {
	return !t.Before(r.NotBefore) && t.Before(r.end())
}

// status is the key's status at now.
func (r *keyRecord) status(now time.Time) string {
	switch {
	case !r.RevokedAt.IsZero() && !now.Before(r.RevokedAt):
		return signer.StatusRevoked
	case now.Before(r.NotBefore):
		return signer.StatusNext
	case now.Before(r.SignsUntil):
		return signer.StatusActive
	case now.Before(r.Expires):
		return signer.StatusGrace
	}
	return signer.StatusExpired
}

// public returns the published form of the key at now.
func (r *keyRecord) public(now time.Time) signer.PublicKey {
	return signer.PublicKey{
		KID:        r.KID,
		Key:        ed25519.PublicKey(bytes.Clone(r.Public)),
		Status:     r.status(now),
		IssuedAt:   r.IssuedAt,
		NotBefore:  r.NotBefore,
		SignsUntil: r.SignsUntil,
		Expires:    r.Expires,
		RevokedAt:  r.RevokedAt,
	}
}

// find returns the index of kid in s, or -1.
func (s *state) find(kid string) int {
	return slices.IndexFunc(s.Keys, func(r keyRecord) bool { return r.KID == kid })
}

// signing returns the index of the key that signs at t, or -1.
func (s *state) signing(t time.Time) int {
	for i := range s.Keys {
		if s.Keys[i].signsAt(t) {
			return i
		}
	}
	return -1
}

// tail returns the index of the live key whose signing window ends last, or
// -1 when no key is live.
func (s *state) tail() int {
	best := -1
	for i := range s.Keys {
		r := &s.Keys[i]
		if r.live() && (best < 0 || r.end().After(s.Keys[best].end())) {
			best = i
		}
	}
	return best
}

// clone returns a deep copy of s, so that a failed compare-and-set leaves
// the cached state untouched.
func (s *state) clone() *state {
	c := &state{V: s.V, Keys: make([]keyRecord, len(s.Keys))}
	for i, r := range s.Keys {
		r.Public = bytes.Clone(r.Public)
		r.Sealed = bytes.Clone(r.Sealed)
		c.Keys[i] = r
	}
	return c
}

// sort orders the keys by NotBefore, then IssuedAt, then KID.
func (s *state) sort() {
	slices.SortStableFunc(s.Keys, func(a, b keyRecord) int {
		if c := a.NotBefore.Compare(b.NotBefore); c != 0 {
			return c
		}
		if c := a.IssuedAt.Compare(b.IssuedAt); c != 0 {
			return c
		}
		return strings.Compare(a.KID, b.KID)
	})
}

// check verifies the invariants every stored state keeps: well-formed keys
// with distinct ids, and effective signing windows that are disjoint and
// contiguous, so that exactly one key signs at every instant from the first
// key on. The keyring checks every state it reads and every state it is
// about to write.
func (s *state) check() error {
	if s.V != stateVersion {
		return fmt.Errorf("key state version %d is not %d", s.V, stateVersion)
	}
	seen := make(map[string]bool, len(s.Keys))
	var live []*keyRecord
	for i := range s.Keys {
		r := &s.Keys[i]
		if len(r.Public) != ed25519.PublicKeySize {
			return fmt.Errorf("key %d: public key is %d bytes, want %d", i, len(r.Public), ed25519.PublicKeySize)
		}
		if r.KID != signer.Thumbprint(r.Public) {
			return fmt.Errorf("key %d: kid is not the thumbprint of its public key", i)
		}
		if seen[r.KID] {
			return fmt.Errorf("key %d: kid %s repeats", i, r.KID)
		}
		seen[r.KID] = true
		if r.NotBefore.IsZero() || r.SignsUntil.Before(r.NotBefore) || r.Expires.Before(r.SignsUntil) {
			return fmt.Errorf("key %s: windows out of order (nbf %s, signs_until %s, exp %s)",
				r.KID, r.NotBefore.Format(time.RFC3339), r.SignsUntil.Format(time.RFC3339), r.Expires.Format(time.RFC3339))
		}
		if len(r.Sealed) > maxSealedKey {
			return fmt.Errorf("key %s: sealed private key is %d bytes, limit %d", r.KID, len(r.Sealed), maxSealedKey)
		}
		if r.live() {
			live = append(live, r)
		}
	}
	slices.SortFunc(live, func(a, b *keyRecord) int { return a.NotBefore.Compare(b.NotBefore) })
	for i := 1; i < len(live); i++ {
		if prev := live[i-1].end(); !prev.Equal(live[i].NotBefore) {
			return fmt.Errorf("signing windows of %s and %s are not contiguous (%s, %s)", live[i-1].KID, live[i].KID,
				prev.Format(time.RFC3339Nano), live[i].NotBefore.Format(time.RFC3339Nano))
		}
	}
	return nil
}

// maxSealedKey bounds one sealed private key; a sealed 32-byte seed is far
// smaller.
const maxSealedKey = 16 << 10

// errState marks a key-state document that cannot be used.
var errState = errors.New("keyring: invalid key state")

// parseState reads and checks a key-state document. Members this version
// does not know are ignored, so that instances of different versions can
// share the state during a rolling upgrade; an incompatible change of the
// format changes V, which older versions refuse.
func parseState(b []byte) (*state, error) {
	if len(b) > MaxStateSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", errState, len(b), MaxStateSize)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	var s state
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("%w: %w", errState, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data", errState)
	}
	for i := range s.Keys {
		r := &s.Keys[i]
		r.IssuedAt, r.NotBefore, r.SignsUntil, r.Expires = r.IssuedAt.UTC(), r.NotBefore.UTC(), r.SignsUntil.UTC(), r.Expires.UTC()
		if !r.RevokedAt.IsZero() {
			r.RevokedAt = r.RevokedAt.UTC()
		}
	}
	if err := s.check(); err != nil {
		return nil, fmt.Errorf("%w: %w", errState, err)
	}
	s.sort()
	return &s, nil
}

// marshal checks s and encodes it.
func (s *state) marshal() ([]byte, error) {
	s.sort()
	if err := s.check(); err != nil {
		return nil, fmt.Errorf("%w: refusing to store: %w", errState, err)
	}
	b, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("keyring: encode key state: %w", err)
	}
	if len(b) > MaxStateSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", errState, len(b), MaxStateSize)
	}
	return b, nil
}
