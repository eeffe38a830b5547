package keyring

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/sealpost/sealpost/queue"
	"github.com/sealpost/sealpost/signer"
)

// TestNewCreatesCurrentKey checks that a fresh deployment gets a key that
// signs from now until the end of the quarter, published in the JWKS, and
// that a second start reuses it.
func TestNewCreatesCurrentKey(t *testing.T) {
	e := newEnv(t, date("2026-02-10T08:30:00Z"))
	k := e.keyring()
	cur, prev, err := k.SigningKeys(context.Background(), e.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(prev) != 0 {
		t.Errorf("previous keys = %d, want 0", len(prev))
	}
	set := k.KeySet(e.clock.Now(), false)
	if len(set.Keys) != 1 || set.Keys[0].KID != cur.KID {
		t.Fatalf("jwks = %+v, want only %s", set.Keys, cur.KID)
	}
	got := set.Keys[0]
	if !got.NotBefore.Equal(date("2026-02-10T08:30:00Z")) || !got.SignsUntil.Equal(date("2026-04-01T00:00:00Z")) ||
		!got.Expires.Equal(date("2026-04-01T00:00:00Z").Add(DefaultGrace)) || got.Status != signer.StatusActive {
		t.Errorf("key windows = nbf %s until %s exp %s status %s", got.NotBefore, got.SignsUntil, got.Expires, got.Status)
	}
	if got.KID != signer.Thumbprint(got.Key) {
		t.Errorf("kid %s is not the thumbprint", got.KID)
	}
	again := e.keyring()
	cur2, _, err := again.SigningKeys(context.Background(), e.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	if cur2.KID != cur.KID {
		t.Errorf("restart signs with %s, want %s", cur2.KID, cur.KID)
	}
	if _, err := signer.Verify(signWith(t, cur, e.clock.Now()), k.KeySet(e.clock.Now(), true)); err != nil {
		t.Errorf("verify: %v", err)
	}
}

// TestFirstKeyMidSecond starts a deployment at a fractional second and
// checks that it can sign at once.
func TestFirstKeyMidSecond(t *testing.T) {
	e := newEnv(t, date("2026-02-10T08:30:00Z").Add(500*time.Millisecond))
	k := e.keyring()
	cur, _, err := k.SigningKeys(context.Background(), e.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := signer.Verify(signWith(t, cur, e.clock.Now()), k.KeySet(e.clock.Now(), true)); err != nil {
		t.Error(err)
	}
	if p := k.KeySet(e.clock.Now(), false).Keys[0]; !p.NotBefore.Equal(date("2026-02-10T08:30:00Z")) || !p.IssuedAt.Equal(p.NotBefore) {
		t.Errorf("first key nbf %s iat %s", p.NotBefore, p.IssuedAt)
	}
}

// TestRotateAndRevoke walks one quarter: emergency rotation, revocation of
// the current and of a grace key, and what verification makes of receipts
// signed around those times.
func TestRotateAndRevoke(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, date("2026-04-01T00:00:00Z"))
	k := e.keyring()
	first, _, err := k.SigningKeys(ctx, e.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	before := signWith(t, first, e.clock.Now())

	e.clock.Advance(10 * 24 * time.Hour)
	rotated, err := k.Rotate(ctx, "admin")
	if err != nil {
		t.Fatal(err)
	}
	// The new key is published at once and signs RotationDelay later.
	if got := setKIDs(k.KeySet(e.clock.Now(), false)); !slices.Equal(got, []string{rotated.KID, first.KID}) {
		t.Errorf("jwks right after rotate = %v", got)
	}
	if cur, _, err := k.SigningKeys(ctx, e.clock.Now()); err != nil || cur.KID != first.KID {
		t.Errorf("right after rotate signs with %s (%v), want %s", cur.KID, err, first.KID)
	}
	e.clock.Advance(RotationDelay)
	at := e.clock.Now()
	if !rotated.NotBefore.Equal(at) || !rotated.SignsUntil.Equal(date("2026-07-01T00:00:00Z")) || rotated.Status != signer.StatusNext {
		t.Errorf("rotated key = %+v", rotated)
	}
	cur, prev, err := k.SigningKeys(ctx, at)
	if err != nil {
		t.Fatal(err)
	}
	if cur.KID != rotated.KID || len(prev) != 1 || prev[0].KID != first.KID {
		t.Fatalf("signing keys = %s prev %v, want %s prev [%s]", cur.KID, kids(prev), rotated.KID, first.KID)
	}
	jwks := k.KeySet(at, false)
	if got := setKIDs(jwks); !slices.Equal(got, []string{rotated.KID, first.KID}) {
		t.Errorf("jwks after rotate = %v", got)
	}
	// The old key's window ends at the rotation: a receipt it signed before
	// verifies, one claiming a later signed_at does not.
	hist := k.KeySet(at, true)
	if _, err := signer.Verify(before, hist); err != nil {
		t.Errorf("receipt signed before rotation: %v", err)
	}
	if _, err := signer.Verify(signWith(t, first, at.Add(time.Second)), hist); !errors.Is(err, signer.ErrOutsideWindow) {
		t.Errorf("old key after rotation: err = %v, want outside window", err)
	}

	// Revoke the current (rotated) key: a replacement signs from now.
	e.clock.Advance(time.Hour)
	revAt := e.clock.Now()
	signedBefore := signWith(t, cur, revAt.Add(-time.Minute))
	revoked, err := k.Revoke(ctx, rotated.KID, "admin")
	if err != nil {
		t.Fatal(err)
	}
	if revoked.Status != signer.StatusRevoked || !revoked.RevokedAt.Equal(revAt) {
		t.Errorf("revoked = %+v", revoked)
	}
	repl, _, err := k.SigningKeys(ctx, revAt)
	if err != nil {
		t.Fatal(err)
	}
	if repl.KID == rotated.KID || repl.KID == first.KID {
		t.Fatalf("after revocation signs with %s", repl.KID)
	}
	if slices.Contains(setKIDs(k.KeySet(revAt, false)), rotated.KID) {
		t.Error("revoked key still in the jwks")
	}
	hist = k.KeySet(revAt, true)
	if _, err := signer.Verify(signedBefore, hist); err != nil {
		t.Errorf("receipt signed before revocation: %v", err)
	}
	if _, err := signer.Verify(signWith(t, cur, revAt), hist); err == nil {
		t.Error("receipt signed by the revoked key at the revocation time verifies")
	}
	// Revoking a grace key removes it from the JWKS too.
	if _, err := k.Revoke(ctx, first.KID, "admin"); err != nil {
		t.Fatal(err)
	}
	if got := setKIDs(k.KeySet(revAt, false)); !slices.Equal(got, []string{repl.KID}) {
		t.Errorf("jwks = %v, want only %s", got, repl.KID)
	}
	if _, err := k.Revoke(ctx, "nope", "admin"); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("unknown kid: err = %v", err)
	}
	want := []string{
		"key.rotate system success", "key.rotate admin success", "key.revoke admin success",
		"key.revoke admin success", "key.revoke admin failure",
	}
	if got := e.audit.actions(); !slices.Equal(got, want) {
		t.Errorf("audit = %q, want %q", got, want)
	}
}

func kids(keys []signer.PrivateKey) []string {
	var out []string
	for _, k := range keys {
		out = append(out, k.KID)
	}
	return out
}

func setKIDs(s *signer.KeySet) []string {
	var out []string
	for _, k := range s.Keys {
		out = append(out, k.KID)
	}
	return out
}

// TestGraceDualSignature follows a receiver that cached the JWKS before the
// next key was published: across the boundary the webhook carries a second
// v1a signature with the previous key, which the cached JWKS verifies, until
// the grace period ends.
func TestGraceDualSignature(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, date("2026-03-01T00:00:00Z"))
	k := e.keyring()
	cached := k.KeySet(e.clock.Now(), false) // the receiver's copy
	if len(cached.Keys) != 1 {
		t.Fatalf("cached jwks has %d keys", len(cached.Keys))
	}
	old := cached.Keys[0]
	for _, tc := range []struct {
		at         string
		wantPrev   int
		cachedOK   bool
		wantStatus string
	}{
		{"2026-03-31T23:59:59Z", 0, true, signer.StatusActive},
		{"2026-04-01T00:00:00Z", 1, true, signer.StatusGrace},
		{"2026-06-29T23:59:59Z", 1, true, signer.StatusGrace},
		{"2026-06-30T00:00:00Z", 0, false, signer.StatusExpired},
	} {
		now := date(tc.at)
		e.clock.Set(now)
		if _, err := k.sync(ctx); err != nil {
			t.Fatal(err)
		}
		cur, prev, err := k.SigningKeys(ctx, now)
		if err != nil {
			t.Fatal(err)
		}
		if len(prev) != tc.wantPrev {
			t.Fatalf("%s: %d previous keys, want %d", tc.at, len(prev), tc.wantPrev)
		}
		body := signWith(t, cur, now)
		header := signer.WebhookSignatureV1a(cur, "rcpt_1", now.Unix(), body)
		for _, p := range prev {
			header += " " + signer.WebhookSignatureV1a(p, "rcpt_1", now.Unix(), body)
		}
		err = signer.VerifyWebhookV1a(old.Key, "rcpt_1", now.Unix(), body, header)
		if (err == nil) != tc.cachedOK {
			t.Errorf("%s: receiver with the cached jwks: err = %v, want ok %v", tc.at, err, tc.cachedOK)
		}
		hist, _ := k.KeySet(now, true).Lookup(old.KID)
		if hist.Status != tc.wantStatus {
			t.Errorf("%s: old key status %s, want %s", tc.at, hist.Status, tc.wantStatus)
		}
	}
}

// TestRotateTwiceInOneSecond checks that a second rotation asked for in the
// same second as the first is refused rather than leaving a key with an
// empty window.
func TestRotateTwiceInOneSecond(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, date("2026-05-01T00:00:00Z"))
	k := e.keyring()
	if _, err := k.Rotate(ctx, "admin"); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Rotate(ctx, "admin"); !errors.Is(err, ErrRotationPending) {
		t.Fatalf("second rotation: err = %v, want ErrRotationPending", err)
	}
	e.clock.Advance(time.Second)
	second, err := k.Rotate(ctx, "admin")
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(RotationDelay)
	cur, prev, err := k.SigningKeys(ctx, e.clock.Now())
	if err != nil || cur.KID != second.KID {
		t.Fatalf("signs with %s (%v), want %s", cur.KID, err, second.KID)
	}
	// The first key and the one-second key are both in grace.
	if len(prev) != 2 {
		t.Errorf("%d keys in grace, want 2", len(prev))
	}
}

// TestSurvivesServerRestart stops the embedded NATS server and starts it
// again on the same data directory: the keys come back, none is created.
func TestSurvivesServerRestart(t *testing.T) {
	ctx := context.Background()
	dataDir, kmsDir := t.TempDir(), t.TempDir()
	clk := newClock(date("2026-03-20T00:00:00Z"))
	start := func() (*Keyring, func()) {
		c, err := queue.Open(ctx, queue.Config{DataDir: dataDir})
		if err != nil {
			t.Fatal(err)
		}
		k, err := New(ctx, Config{Store: kvStore(openKV(t, c)), Sealer: newSealer(t, kmsDir), Now: clk.Now})
		if err != nil {
			c.Close()
			t.Fatal(err)
		}
		return k, c.Close
	}
	k1, stop := start()
	before := k1.KeySet(clk.Now(), true)
	cur1, _, err := k1.SigningKeys(ctx, clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	stop()
	clk.Advance(time.Hour)
	k2, stop := start()
	defer stop()
	cur2, _, err := k2.SigningKeys(ctx, clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	if cur1.KID != cur2.KID || !slices.Equal(setKIDs(before), setKIDs(k2.KeySet(clk.Now(), true))) {
		t.Errorf("after restart: signing %s, keys %v; before: %s, %v", cur2.KID, setKIDs(k2.KeySet(clk.Now(), true)), cur1.KID, setKIDs(before))
	}
}
