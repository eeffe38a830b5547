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
package keyring

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/sealpost/sealpost/audit"
	"github.com/sealpost/sealpost/keyring/kms"
	"github.com/sealpost/sealpost/queue"
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

// Rotate replaces the current key: a new key is published at once and signs
// from RotationDelay later (rounded up to a whole second) until the end of
// the current period, when the scheduled key takes over as planned; the
// replaced key stops signing then and enters its grace period. actor names
// who asked, for the audit log.
func (k *Keyring) Rotate(ctx context.Context, actor string) (signer.PublicKey, error) {
	// The key is made before the compare-and-set, so that a slow KMS cannot
	// eat into RotationDelay between reading the time and storing the
	// rotation.
	fresh, err := k.newKey(ctx, originRotate)
	if err != nil {
		k.auditFail(ctx, actor, "key.rotate", "", err)
		return signer.PublicKey{}, err
	}
	var made, replaced keyRecord
	st, err := k.update(ctx, func(st *state, now time.Time) (bool, error) {
		if _, err := k.ensure(ctx, st, now); err != nil {
			return false, err
		}
		at := ceilSecond(now.Add(RotationDelay))
		i := st.signing(at)
		if i < 0 {
			return false, fmt.Errorf("%w at %s", ErrNoSigningKey, at.Format(time.RFC3339))
		}
		cur := &st.Keys[i]
		if !cur.NotBefore.Before(at) {
			return false, ErrRotationPending
		}
		rec := k.window(fresh, now, at, cur.SignsUntil)
		cur.SignsUntil, cur.Expires = at, at.Add(k.c.Grace)
		replaced, made = *cur, rec
		st.Keys = append(st.Keys, rec)
		return true, nil
	})
	if err != nil {
		k.auditFail(ctx, actor, "key.rotate", "", err)
		return signer.PublicKey{}, err
	}
	k.m.created.WithLabelValues(originRotate).Inc()
	if k.c.Now().After(made.NotBefore.Add(-maxRefreshAfter)) {
		k.log.Warn("keyring: rotation stored late; an instance may sign with the replaced key after its window",
			"kid", made.KID, "signs_from", made.NotBefore.Format(time.RFC3339))
	}
	k.log.Warn("keyring: signing key rotated", "kid", made.KID, "replaced", replaced.KID, "actor", actor,
		"signs_from", made.NotBefore.Format(time.RFC3339))
	pub := st.Keys[st.find(made.KID)].public(k.c.Now())
	return pub, k.auditOK(ctx, actor, "key.rotate", made.KID, map[string]string{
		"origin": originRotate, "replaced": replaced.KID,
		"nbf": made.NotBefore.Format(time.RFC3339), "signs_until": made.SignsUntil.Format(time.RFC3339),
	})
}

// Revoke revokes the key kid now (rounded up to a whole second): it leaves
// the JWKS, the history shows it revoked, and receipts it signed at or after
// that time fail verification. Revoking the current key rotates to a new key
// at the same instant; revoking the next key replaces it with a new one for
// the same window. Revoking a revoked key changes nothing.
func (k *Keyring) Revoke(ctx context.Context, kid, actor string) (signer.PublicKey, error) {
	// A replacement is made ahead in case the key turns out to be the
	// current or the next one; see Rotate.
	fresh, err := k.newKey(ctx, originReplace)
	if err != nil {
		k.auditFail(ctx, actor, "key.revoke", kid, err)
		return signer.PublicKey{}, err
	}
	var made keyRecord
	already := false
	st, err := k.update(ctx, func(st *state, now time.Time) (bool, error) {
		made, already = keyRecord{}, false
		if _, err := k.ensure(ctx, st, now); err != nil {
			return false, err
		}
		i := st.find(kid)
		if i < 0 {
			return false, fmt.Errorf("%w: %.80q", ErrUnknownKey, kid)
		}
		r := &st.Keys[i]
		if !r.RevokedAt.IsZero() {
			already = true
			return false, nil
		}
		at := ceilSecond(now)
		switch {
		case r.signsAt(at):
			made = k.window(fresh, now, at, r.SignsUntil)
			r.SignsUntil, r.Expires = at, at
		case at.Before(r.NotBefore):
			made = k.window(fresh, now, r.NotBefore, r.SignsUntil)
		}
		r.RevokedAt, r.Sealed = at, nil
		if made.KID != "" {
			st.Keys = append(st.Keys, made)
		}
		return true, nil
	})
	if err != nil {
		k.auditFail(ctx, actor, "key.revoke", kid, err)
		return signer.PublicKey{}, err
	}
	pub := st.Keys[st.find(kid)].public(k.c.Now())
	if already {
		return pub, nil
	}
	details := map[string]string{"revoked_at": pub.RevokedAt.Format(time.RFC3339)}
	if made.KID != "" {
		k.m.created.WithLabelValues(originReplace).Inc()
		details["replacement"] = made.KID
	}
	k.log.Warn("keyring: key revoked", "kid", kid, "replacement", made.KID, "actor", actor)
	return pub, k.auditOK(ctx, actor, "key.revoke", kid, details)
}

// sync brings the stored schedule up to date: see ensure.
func (k *Keyring) sync(ctx context.Context) (*state, error) {
	var made []keyRecord
	st, err := k.update(ctx, func(st *state, now time.Time) (bool, error) {
		var err error
		made, err = k.ensure(ctx, st, now)
		if err != nil {
			return false, err
		}
		return len(made) > 0 || destroyRetired(st, now), nil
	})
	if err != nil {
		k.m.errors.Inc()
		return nil, err
	}
	for _, r := range made {
		k.m.created.WithLabelValues(r.Origin).Inc()
		k.log.Info("keyring: signing key created", "kid", r.KID, "origin", r.Origin,
			"nbf", r.NotBefore.Format(time.RFC3339), "signs_until", r.SignsUntil.Format(time.RFC3339))
		if err := k.auditOK(ctx, "system", "key.rotate", r.KID, map[string]string{
			"origin": r.Origin, "nbf": r.NotBefore.Format(time.RFC3339), "signs_until": r.SignsUntil.Format(time.RFC3339),
		}); err != nil {
			k.log.Error("keyring: audit append failed", "kid", r.KID, "err", err)
		}
	}
	return st, nil
}

// ensure completes the schedule in st at now and returns the keys it
// created: a first key when there is none, and the key of the next period
// once now is within PrePublish of the current key's end. When no instance
// ran across a whole pre-publication window, the key that follows starts
// where the last one ended, so the signing windows stay contiguous.
func (k *Keyring) ensure(ctx context.Context, st *state, now time.Time) ([]keyRecord, error) {
	var made []keyRecord
	add := func(origin string, nbf, until time.Time) error {
		r, err := k.newKey(ctx, origin)
		if err != nil {
			return err
		}
		r = k.window(r, now, nbf, until)
		st.Keys = append(st.Keys, r)
		made = append(made, r)
		return nil
	}
	if st.tail() < 0 {
		// The first key of a deployment signs from the start of the current
		// second: nothing signed before it, and rounding up would leave a
		// moment with no signing key.
		nbf := now.UTC().Truncate(time.Second)
		if err := add(originInitial, nbf, nextBoundary(nbf, k.c.PeriodMonths)); err != nil {
			return nil, err
		}
	}
	for range 4 { // PrePublish is shorter than a period: one or two keys at most
		end := st.Keys[st.tail()].end()
		var err error
		switch {
		case !end.After(now):
			err = add(originSchedule, end, nextBoundary(now, k.c.PeriodMonths))
		case !now.Before(end.Add(-k.c.PrePublish)):
			err = add(originSchedule, end, nextBoundary(end, k.c.PeriodMonths))
		default:
			return made, nil
		}
		if err != nil {
			return nil, err
		}
	}
	return made, nil
}

// destroyRetired drops the sealed private keys of expired and revoked keys:
// they will never sign again. It reports whether it dropped any.
func destroyRetired(st *state, now time.Time) bool {
	changed := false
	for i := range st.Keys {
		r := &st.Keys[i]
		if s := r.status(now); r.Sealed != nil && (s == signer.StatusExpired || s == signer.StatusRevoked) {
			r.Sealed = nil
			changed = true
		}
	}
	return changed
}

// newKey creates a key and seals its private half; window gives it its
// windows.
func (k *Keyring) newKey(ctx context.Context, origin string) (keyRecord, error) {
	seed := make([]byte, ed25519.SeedSize)
	defer clear(seed)
	if _, err := io.ReadFull(k.c.Rand, seed); err != nil {
		return keyRecord{}, fmt.Errorf("keyring: generate key: %w", err)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	defer clear(priv)
	pub := priv.Public().(ed25519.PublicKey)
	kid := signer.Thumbprint(pub)
	sealed, err := k.c.Sealer.Seal(ctx, sealContext(kid), seed)
	if err != nil {
		return keyRecord{}, fmt.Errorf("keyring: seal new key: %w", err)
	}
	return keyRecord{KID: kid, Public: pub, Sealed: sealed, Origin: origin}, nil
}

// window returns r issued at now, signing in [nbf, until) and published
// until the grace period after.
func (k *Keyring) window(r keyRecord, now, nbf, until time.Time) keyRecord {
	r.IssuedAt, r.NotBefore, r.SignsUntil, r.Expires = now.UTC().Truncate(time.Second), nbf, until, until.Add(k.c.Grace)
	return r
}

func sealContext(kid string) kms.Context {
	return kms.Context{Tenant: SystemTenant, Purpose: kms.PurposeSigningKey, ObjectID: kid}
}

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
	if errors.Is(err, queue.ErrNotFound) {
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
		if errors.Is(err, queue.ErrConflict) {
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

func (k *Keyring) auditOK(ctx context.Context, actor, action, target string, details map[string]string) error {
	if k.c.Auditor == nil {
		return nil
	}
	err := k.c.Auditor.Append(ctx, audit.Entry{
		Time: k.c.Now().UTC(), Actor: actor, Action: action, Target: target,
		Outcome: audit.OutcomeSuccess, Details: details,
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
	err := k.c.Auditor.Append(ctx, audit.Entry{
		Time: k.c.Now().UTC(), Actor: actor, Action: action, Target: truncate(target),
		Outcome: audit.OutcomeFailure, Details: map[string]string{"error": class},
	})
	if err != nil {
		k.log.Error("keyring: audit append failed", "action", action, "err", err)
	}
}

// truncate bounds untrusted text before it is recorded.
func truncate(s string) string {
	if len(s) > 80 {
		return s[:80]
	}
	return s
}
