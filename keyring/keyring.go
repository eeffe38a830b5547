// Package keyring keeps sealpost's Ed25519 receipt-signing keys: a new key
// for every calendar period (quarters by default), published in the JWKS
// before it signs and kept there for a grace period after, emergency
// rotation and revocation, and the history of every key ever used.
//
// The whole schedule is one document in a shared key-value store, changed
// only by compare-and-set, so any number of sealpost instances on one NATS
// agree on exactly one signing key at every instant. Period boundaries need
// no coordination at all: the next key is created (by whichever instance
// wins) well before its period starts, and every instance switches to it by
// the clock. Private keys are stored only sealed by the KMS layer.
//
// # Key state
//
// The Store holds one JSON document under StateKey:
//
//	{"v":1,"keys":[{"kid":"…","pub":"<base64 public key>","sealed":"<base64 sealed seed>",
//	  "origin":"schedule","iat":"…","nbf":"…","signs_until":"…","exp":"…","revoked_at":"…"}]}
//
// A key signs in [nbf, signs_until), or until revoked_at when that is
// earlier; these effective windows never overlap and leave no gap, which the
// keyring checks on every read and before every write. "sealed" is dropped
// once a key expires or is revoked. Every change reads the document, changes
// a copy and writes it back with the revision it read; a writer that lost
// the race reads again and retries.
package keyring

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/sealpost/sealpost/audit/entry"
	"github.com/sealpost/sealpost/signer"
)

// Outcomes callers branch on with errors.Is.
var (
	// ErrNoSigningKey: no key signs at the requested time. Temporary: the
	// state could not be completed; retry later.
	ErrNoSigningKey = errors.New("keyring: no signing key")
	// ErrUnknownKey: no key with that key id was ever created.
	ErrUnknownKey = errors.New("keyring: unknown key id")
	// ErrRotationPending: a rotation asked for moments ago takes effect at
	// the same second; rotate again after it.
	ErrRotationPending = errors.New("keyring: a key change is already pending")
	// ErrContention: the key state changed under every one of several
	// compare-and-set attempts. Temporary.
	ErrContention = errors.New("keyring: key state kept changing")
)

// maxAttempts bounds the compare-and-set retries of one change.
const maxAttempts = 16

// maxRefreshAfter bounds how old the cached state may be before SigningKeys
// reads it again. Run's watch normally delivers changes long before.
const maxRefreshAfter = 5 * time.Second

// RotationDelay is how far ahead of the command an emergency rotation takes
// effect. Every instance reads the key state again before its cached copy is
// older than 5 seconds, so all of them have seen the rotation before it
// takes effect and switch keys at the same instant: no instance signs with
// the old key after its signing window ended.
const RotationDelay = 10 * time.Second

// Keyring is the signing-key schedule of one sealpost instance. It is safe
// for concurrent use.
type Keyring struct {
	c   Config
	log *slog.Logger
	m   *metrics

	mu       sync.RWMutex
	st       *state // never modified once installed; changes work on a clone
	rev      uint64
	loadedAt time.Time

	privMu sync.Mutex
	privs  map[string]signer.PrivateKey // opened private keys by kid
}

// New validates c, loads the key state and makes sure that a key signs now
// and that the next period's key exists once it is due for publication.
func New(ctx context.Context, c Config) (*Keyring, error) {
	c, err := c.withDefaults()
	if err != nil {
		return nil, err
	}
	if c.Rand == nil {
		c.Rand = rand.Reader
	}
	k := &Keyring{c: c, log: c.Logger, privs: make(map[string]signer.PrivateKey)}
	if k.m, err = newMetrics(c.Registerer, k); err != nil {
		return nil, fmt.Errorf("keyring: metrics: %w", err)
	}
	if _, err := k.sync(ctx); err != nil {
		return nil, err
	}
	return k, nil
}

// Run keeps the schedule going until ctx ends: it follows changes made by
// other instances as they happen (when the Store is a Watcher) and every
// CheckInterval re-reads the state, creates the next key when it is due and
// destroys the private keys that are no longer needed.
func (k *Keyring) Run(ctx context.Context) {
	if w, ok := k.c.Store.(Watcher); ok {
		err := w.Watch(ctx, StateKey, func(_ string, val []byte, rev uint64) { k.observe(val, rev) })
		if err != nil {
			k.log.Warn("keyring: cannot watch key state; relying on periodic checks", "err", err)
		}
	}
	t := time.NewTicker(k.c.CheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := k.sync(ctx); err != nil && ctx.Err() == nil {
				k.log.Error("keyring: key schedule check failed", "err", err)
			}
		}
	}
}

// SigningKeys returns the key that signs at now and the keys in their grace
// period (newest first), whose signatures receivers with an older cached JWKS
// still expect. It never returns a current key whose signing window does not
// contain now. It fails when the state cannot be read; the caller retries
// later.
func (k *Keyring) SigningKeys(ctx context.Context, now time.Time) (current signer.PrivateKey, previous []signer.PrivateKey, err error) {
	st, err := k.fresh(ctx)
	if err != nil {
		return signer.PrivateKey{}, nil, err
	}
	i := st.signing(now)
	if i < 0 {
		// A key may be due that no instance has created yet.
		if st, err = k.sync(ctx); err != nil {
			return signer.PrivateKey{}, nil, err
		}
		if i = st.signing(now); i < 0 {
			return signer.PrivateKey{}, nil, fmt.Errorf("%w at %s", ErrNoSigningKey, now.UTC().Format(time.RFC3339))
		}
	}
	current, err = k.private(ctx, &st.Keys[i])
	if err != nil {
		return signer.PrivateKey{}, nil, err
	}
	var grace []*keyRecord
	for j := range st.Keys {
		if r := &st.Keys[j]; r.status(now) == signer.StatusGrace && r.Sealed != nil {
			grace = append(grace, r)
		}
	}
	slices.SortFunc(grace, func(a, b *keyRecord) int { return b.end().Compare(a.end()) })
	for _, r := range grace {
		p, err := k.private(ctx, r)
		if err != nil {
			// The current signature is enough for receivers with a fresh
			// JWKS; one unreadable retired key must not stop delivery.
			k.log.Warn("keyring: cannot open grace-period key", "kid", r.KID, "err", err)
			continue
		}
		previous = append(previous, p)
	}
	return current, previous, nil
}

// KeySet returns the keys published at now, from the cached state: the next,
// current and grace-period keys (the JWKS), or with includeHistory every key
// ever created, revoked and expired ones included. Keys carry their status
// at now and come newest first.
func (k *Keyring) KeySet(now time.Time, includeHistory bool) *signer.KeySet {
	st, _ := k.cached()
	return keySet(st, now, includeHistory)
}

func keySet(st *state, now time.Time, includeHistory bool) *signer.KeySet {
	set := &signer.KeySet{Keys: []signer.PublicKey{}}
	for i := len(st.Keys) - 1; i >= 0; i-- {
		p := st.Keys[i].public(now)
		switch p.Status {
		case signer.StatusNext, signer.StatusActive, signer.StatusGrace:
		default:
			if !includeHistory {
				continue
			}
		}
		set.Keys = append(set.Keys, p)
	}
	return set
}

// List reads the key state and returns every key ever created with its
// status now, oldest first.
func (k *Keyring) List(ctx context.Context) ([]signer.PublicKey, error) {
	st, _, err := k.load(ctx)
	if err != nil {
		return nil, err
	}
	now := k.c.Now()
	keys := make([]signer.PublicKey, 0, len(st.Keys))
	for i := range st.Keys {
		keys = append(keys, st.Keys[i].public(now))
	}
	return keys, nil
}

func (k *Keyring) auditOK(ctx context.Context, actor, action, target string, details map[string]string) error {
	if k.c.Auditor == nil {
		return nil
	}
	err := k.c.Auditor.Append(ctx, entry.Entry{
		Time: k.c.Now().UTC(), Actor: actor, Action: action, Target: target,
		Outcome: entry.OutcomeSuccess, Details: details,
	})
	if err != nil {
		return fmt.Errorf("keyring: %s done, but the audit entry was not written: %w", action, err)
	}
	return nil
}

func (k *Keyring) auditFail(ctx context.Context, actor, action, target string, cause error) {
	if k.c.Auditor == nil {
		return
	}
	class := "internal"
	switch {
	case errors.Is(cause, ErrUnknownKey):
		class = "unknown_key"
	case errors.Is(cause, ErrContention):
		class = "contention"
	}
	err := k.c.Auditor.Append(ctx, entry.Entry{
		Time: k.c.Now().UTC(), Actor: actor, Action: action, Target: signer.Truncate(target, 80),
		Outcome: entry.OutcomeFailure, Details: map[string]string{"error": class},
	})
	if err != nil {
		k.log.Error("keyring: audit append failed", "action", action, "err", err)
	}
}
