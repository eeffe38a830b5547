package keyring

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"io"
	"time"

	"github.com/sealpost/sealpost/keyring/kms"
	"github.com/sealpost/sealpost/signer"
)

// This file holds the changes to the key schedule: the periodic check,
// emergency rotation and revocation.

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
