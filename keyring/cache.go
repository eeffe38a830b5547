package keyring

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sealpost/sealpost/signer"
)

// This file holds the cached key state and the opened private keys: how
// they are read, followed and replaced by compare-and-set.

// private returns a copy of the opened private key of r, opened before when
// possible. Callers own their copy: the keyring zeroes its own when the key
// retires, which must not race with a signature in progress.
func (k *Keyring) private(ctx context.Context, r *keyRecord) (signer.PrivateKey, error) {
	k.privMu.Lock()
	p, ok := k.privs[r.KID]
	if ok {
		p = signer.NewPrivateKey(p.Key)
	}
	k.privMu.Unlock()
	if ok {
		return p, nil
	}
	if r.Sealed == nil {
		return signer.PrivateKey{}, fmt.Errorf("%w: private key of %s was destroyed", ErrNoSigningKey, r.KID)
	}
	seed, err := k.c.Sealer.Open(ctx, sealContext(r.KID), r.Sealed)
	if err != nil {
		return signer.PrivateKey{}, fmt.Errorf("keyring: open private key %s: %w", r.KID, err)
	}
	defer clear(seed)
	p, err = signer.NewPrivateKeyFromSeed(seed)
	if err != nil {
		return signer.PrivateKey{}, fmt.Errorf("keyring: private key %s: %w", r.KID, err)
	}
	if p.KID != r.KID {
		p.Zero()
		return signer.PrivateKey{}, fmt.Errorf("keyring: private key %s does not match its public key", r.KID)
	}
	k.privMu.Lock()
	defer k.privMu.Unlock()
	if _, ok := k.privs[r.KID]; !ok {
		k.privs[r.KID] = signer.NewPrivateKey(p.Key)
	}
	return p, nil
}

// forget drops the opened private keys that st no longer lets sign.
func (k *Keyring) forget(st *state, now time.Time) {
	k.privMu.Lock()
	defer k.privMu.Unlock()
	for kid, p := range k.privs {
		i := st.find(kid)
		if i >= 0 && st.Keys[i].Sealed != nil {
			switch st.Keys[i].status(now) {
			case signer.StatusActive, signer.StatusGrace, signer.StatusNext:
				continue
			}
		}
		p.Zero()
		delete(k.privs, kid)
	}
}

// observe installs a state delivered by the store's watch.
func (k *Keyring) observe(val []byte, rev uint64) {
	if val == nil {
		return
	}
	seen := k.c.Now()
	st, err := parseState(val)
	if err != nil {
		k.m.errors.Inc()
		k.log.Error("keyring: ignoring invalid key state", "rev", rev, "err", err)
		return
	}
	k.adopt(st, rev, seen)
}

// load reads the stored state and installs it as the cached one. A missing
// document is an empty state with revision 0.
func (k *Keyring) load(ctx context.Context) (*state, uint64, error) {
	// The state read is at least as new as the moment the read started.
	seen := k.c.Now()
	b, rev, err := k.c.Store.Get(ctx, StateKey)
	if errors.Is(err, ErrStoreNotFound) {
		return &state{V: stateVersion}, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("keyring: read key state: %w", err)
	}
	st, err := parseState(b)
	if err != nil {
		return nil, 0, err
	}
	k.adopt(st, rev, seen)
	return st, rev, nil
}

// fresh returns the cached state, read again when it is older than
// min(CheckInterval, 5s).
func (k *Keyring) fresh(ctx context.Context) (*state, error) {
	k.mu.RLock()
	st, at := k.st, k.loadedAt
	k.mu.RUnlock()
	// A negative age (the clock stepped back) counts as stale.
	if age := k.c.Now().Sub(at); st != nil && age >= 0 && age < min(k.c.CheckInterval, maxRefreshAfter) {
		return st, nil
	}
	st, _, err := k.load(ctx)
	return st, err
}

// adopt installs st with revision rev, known to be current at seen, as the
// cached state unless a newer revision is installed already.
func (k *Keyring) adopt(st *state, rev uint64, seen time.Time) {
	now := k.c.Now()
	k.mu.Lock()
	if k.st == nil || rev >= k.rev {
		k.st, k.rev = st, rev
		if seen.After(k.loadedAt) {
			k.loadedAt = seen
		}
	}
	cur := k.st
	k.mu.Unlock()
	k.forget(cur, now)
}

// update applies fn to a copy of the freshly read state and stores the
// result by compare-and-set, retrying from a fresh read when another
// instance changed the state in between. fn reports whether it changed
// anything; when it did not, nothing is written.
func (k *Keyring) update(ctx context.Context, fn func(st *state, now time.Time) (bool, error)) (*state, error) {
	for range maxAttempts {
		cur, rev, err := k.load(ctx)
		if err != nil {
			return nil, err
		}
		next := cur.clone()
		now := k.c.Now()
		changed, err := fn(next, now)
		if err != nil {
			return nil, err
		}
		if !changed {
			return cur, nil
		}
		b, err := next.marshal()
		if err != nil {
			return nil, err
		}
		var newRev uint64
		if rev == 0 {
			newRev, err = k.c.Store.Create(ctx, StateKey, b)
		} else {
			newRev, err = k.c.Store.Update(ctx, StateKey, b, rev)
		}
		if errors.Is(err, ErrStoreConflict) {
			k.m.conflicts.Inc()
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("keyring: store key state: %w", err)
		}
		k.adopt(next, newRev, now)
		return next, nil
	}
	return nil, ErrContention
}
