package keyring

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sealpost/sealpost/queue"
	"github.com/sealpost/sealpost/signer"
)

// modelKey is a key as the schedule in the issue describes it, computed
// without the keyring's code: quarterly keys published 14 days ahead,
// emergency rotations and revocations.
type modelKey struct {
	nbf, until, exp, pub, revoked time.Time
}

type model struct{ keys []*modelKey }

func (m *model) signing(t time.Time) *modelKey {
	for _, k := range m.keys {
		end := k.until
		if !k.revoked.IsZero() && k.revoked.Before(end) {
			end = k.revoked
		}
		if !t.Before(k.nbf) && t.Before(end) {
			return k
		}
	}
	return nil
}

// jwks returns the windows of the keys published at t.
func (m *model) jwks(t time.Time) []string {
	var out []string
	for _, k := range m.keys {
		if !t.Before(k.pub) && t.Before(k.exp) && (k.revoked.IsZero() || t.Before(k.revoked)) {
			out = append(out, window(k.nbf, k.until, k.exp))
		}
	}
	sort.Strings(out)
	return out
}

func (m *model) grace(t time.Time) int {
	n := 0
	for _, k := range m.keys {
		if !t.Before(k.until) && t.Before(k.exp) && k.revoked.IsZero() {
			n++
		}
	}
	return n
}

func window(nbf, until, exp time.Time) string {
	return nbf.Format("2006-01-02T15:04:05") + "/" + until.Format("2006-01-02T15:04:05") + "/" + exp.Format("2006-01-02")
}

func realWindows(s *signer.KeySet) []string {
	var out []string
	for _, k := range s.Keys {
		out = append(out, window(k.NotBefore, k.SignsUntil, k.Expires))
	}
	sort.Strings(out)
	return out
}

// TestSimulateTwoYears runs two sealpost instances on one NATS server
// through two simulated years with a controllable clock: eight quarter
// boundaries, restarts, three weeks in which no instance runs, an emergency
// rotation, revocations of the current and of the next key. At every
// instant it checks that both instances sign with the same key, the one the
// schedule says, that the JWKS holds exactly the keys the schedule says,
// that receipts signed by one instance verify against the other's key set,
// and that retired private keys are destroyed. At the end it checks that
// exactly one key was created per quarter and that the history has exactly
// one signing key at every instant.
func TestSimulateTwoYears(t *testing.T) {
	if testing.Short() {
		t.Skip("long simulation")
	}
	ctx := context.Background()
	start := date("2026-01-20T00:00:00Z")
	end := start.AddDate(2, 0, 0)
	clk := newClock(start)
	first := openConn(t, t.TempDir(), true)
	second := dialConn(t, first)
	kmsDir := t.TempDir()
	aud := &memAuditor{}
	rnd := &detRand{label: "simulation"}
	stores := []*struct {
		cfg Config
		k   *Keyring
	}{{}, {}}
	for i, conn := range []*queue.Conn{first, second} {
		stores[i].cfg = Config{
			Store: kvStore(openKV(t, conn)), Sealer: newSealer(t, kmsDir), Auditor: aud,
			Now: clk.Now, Rand: rnd,
		}
	}
	start1 := func(i int) {
		t.Helper()
		k, err := New(ctx, stores[i].cfg)
		if err != nil {
			t.Fatalf("start instance %d at %s: %v", i, clk.Now().Format(time.RFC3339), err)
		}
		stores[i].k = k
	}

	// Instants: every 12 hours, and around each boundary and expiry.
	const pre, grace = DefaultPrePublish, DefaultGrace
	var instants []time.Time
	for t := start; t.Before(end); t = t.Add(12 * time.Hour) {
		instants = append(instants, t)
	}
	var boundaries []time.Time
	for b := nextBoundary(start, 3); b.Before(end); b = nextBoundary(b, 3) {
		boundaries = append(boundaries, b)
		for _, d := range []time.Duration{-pre - time.Second, -pre, -time.Second, 0, time.Second, grace - time.Second, grace} {
			if x := b.Add(d); x.Before(end) {
				instants = append(instants, x)
			}
		}
	}
	if len(boundaries) != 8 {
		t.Fatalf("simulation crosses %d boundaries, want 8", len(boundaries))
	}
	rotateAt := date("2026-11-15T12:00:00Z")
	revokeCurrentAt := date("2026-11-20T00:00:00Z")
	downFrom, downUntil := date("2027-06-10T00:00:00Z"), date("2027-07-01T06:00:00Z")
	revokeNextAt := date("2027-12-20T00:00:00Z")
	instants = append(instants, rotateAt, rotateAt.Add(RotationDelay-time.Second), rotateAt.Add(RotationDelay), revokeCurrentAt, downFrom, downUntil, revokeNextAt)
	slices.SortFunc(instants, func(a, b time.Time) int { return a.Compare(b) })
	instants = slices.Compact(instants)

	// deliver hands instance i the stored state, as its watch would.
	deliver := func(i int) {
		t.Helper()
		raw, rev, err := stores[i].cfg.Store.Get(ctx, StateKey)
		if err != nil {
			t.Fatal(err)
		}
		stores[i].k.observe(raw, rev)
	}
	m := &model{}
	// quarters holds the scheduled keys the model has published.
	published := map[time.Time]bool{}
	var rotatedKID string
	var beforeRevocation []byte
	down := false
	for step, now := range instants {
		clk.Set(now)
		switch {
		case !now.Before(downFrom) && now.Before(downUntil):
			if !down {
				stores[0].k, stores[1].k = nil, nil
				down = true
			}
			continue
		case down:
			down = false
			start1(0)
			start1(1)
		case stores[0].k == nil:
			start1(0)
			start1(1)
		case step%97 == 0:
			start1(step / 97 % 2) // a restart of one instance
		}

		// Both instances run their periodic check at the same moment and
		// race for the compare-and-set.
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i := range stores {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = stores[i].k.sync(ctx)
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatalf("%s: sync: %v", now.Format(time.RFC3339), err)
		}

		// The model: the first key, then a key per quarter published 14 days
		// ahead (or as soon as an instance runs again).
		if len(m.keys) == 0 {
			m.keys = append(m.keys, &modelKey{nbf: now, until: nextBoundary(now, 3), exp: nextBoundary(now, 3).Add(grace), pub: now})
		}
		for q := nextBoundary(start, 3); !q.Add(-pre).After(now); q = nextBoundary(q, 3) {
			if !published[q] {
				published[q] = true
				m.keys = append(m.keys, &modelKey{nbf: q, until: nextBoundary(q, 3), exp: nextBoundary(q, 3).Add(grace), pub: now})
			}
		}

		a, b := stores[0].k, stores[1].k
		switch now {
		case rotateAt:
			pk, err := b.Rotate(ctx, "admin")
			if err != nil {
				t.Fatal(err)
			}
			rotatedKID = pk.KID
			// Until the watch delivers the change, the other instance signs
			// with the key that signs until the rotation takes effect.
			curA, _, errA := a.SigningKeys(ctx, now)
			curB, _, errB := b.SigningKeys(ctx, now)
			if errA != nil || errB != nil || curA.KID != curB.KID || curA.KID == pk.KID {
				t.Fatalf("right after rotation: instances sign with %s (%v) and %s (%v)", curA.KID, errA, curB.KID, errB)
			}
			deliver(0)
			at := now.Add(RotationDelay)
			old := m.signing(at)
			m.keys = append(m.keys, &modelKey{nbf: at, until: old.until, exp: old.exp, pub: now})
			old.until, old.exp = at, at.Add(grace)
		case revokeCurrentAt:
			cur, _, err := a.SigningKeys(ctx, now.Add(-time.Second))
			if err != nil || cur.KID != rotatedKID {
				t.Fatalf("before revocation signing with %s (%v), want the rotated key %s", cur.KID, err, rotatedKID)
			}
			beforeRevocation = signWith(t, cur, now.Add(-time.Second))
			if _, err := a.Revoke(ctx, rotatedKID, "admin"); err != nil {
				t.Fatal(err)
			}
			deliver(1)
			old := m.signing(now)
			m.keys = append(m.keys, &modelKey{nbf: now, until: old.until, exp: old.exp, pub: now})
			old.until, old.exp, old.revoked = now, now, now
			if _, err := signer.Verify(beforeRevocation, b.KeySet(now, true)); err != nil {
				t.Errorf("receipt signed before the revocation: %v", err)
			}
			if _, err := signer.Verify(signWith(t, cur, now), b.KeySet(now, true)); !errors.Is(err, signer.ErrRevoked) && !errors.Is(err, signer.ErrOutsideWindow) {
				t.Errorf("receipt signed at the revocation: err = %v, want revoked or outside window", err)
			}
		case revokeNextAt:
			next := b.KeySet(now, false).Keys[0]
			if next.Status != signer.StatusNext {
				t.Fatalf("newest published key is %s, want next", next.Status)
			}
			if _, err := b.Revoke(ctx, next.KID, "admin"); err != nil {
				t.Fatal(err)
			}
			deliver(0)
			var old *modelKey
			for _, k := range m.keys {
				if k.nbf.Equal(next.NotBefore) && k.revoked.IsZero() {
					old = k
				}
			}
			m.keys = append(m.keys, &modelKey{nbf: old.nbf, until: old.until, exp: old.exp, pub: now})
			old.revoked = now
		}

		// Both instances sign with the same key, the one the model says.
		want := m.signing(now)
		envA, curA, prevA := signAt(t, a, now)
		_, curB, prevB := signAt(t, b, now)
		if curA.KID != curB.KID {
			t.Fatalf("%s: instances sign with %s and %s", now.Format(time.RFC3339), curA.KID, curB.KID)
		}
		pk, _ := a.KeySet(now, true).Lookup(curA.KID)
		if got := window(pk.NotBefore, pk.SignsUntil, pk.Expires); want == nil || got != window(want.nbf, want.until, want.exp) {
			t.Fatalf("%s: signing key window %s, model %+v", now.Format(time.RFC3339), got, want)
		}
		if len(prevA) != m.grace(now) || len(prevB) != len(prevA) {
			t.Errorf("%s: grace keys %d and %d, model %d", now.Format(time.RFC3339), len(prevA), len(prevB), m.grace(now))
		}
		// The JWKS holds exactly the next, current and grace keys.
		jwksA, jwksB := a.KeySet(now, false), b.KeySet(now, false)
		if got, want := realWindows(jwksA), m.jwks(now); !slices.Equal(got, want) {
			t.Fatalf("%s: jwks windows\n got %s\nwant %s", now.Format(time.RFC3339), strings.Join(got, " "), strings.Join(want, " "))
		}
		bodyA, _ := jwksA.MarshalJWKS()
		bodyB, _ := jwksB.MarshalJWKS()
		if string(bodyA) != string(bodyB) {
			t.Fatalf("%s: instances publish different JWKS", now.Format(time.RFC3339))
		}
		// A receipt signed by one instance verifies against the other's JWKS.
		if _, err := signer.Verify(envA, jwksB); err != nil {
			t.Fatalf("%s: verify against the other instance's jwks: %v", now.Format(time.RFC3339), err)
		}
		// Retired private keys are destroyed.
		raw, _, err := stores[0].cfg.Store.Get(ctx, StateKey)
		if err != nil {
			t.Fatal(err)
		}
		st, err := parseState(raw)
		if err != nil {
			t.Fatalf("%s: stored state: %v", now.Format(time.RFC3339), err)
		}
		for _, r := range st.Keys {
			if s := r.status(now); (s == signer.StatusExpired || s == signer.StatusRevoked) != (r.Sealed == nil) {
				t.Fatalf("%s: key %s is %s and has sealed private key: %v", now.Format(time.RFC3339), r.KID, s, r.Sealed != nil)
			}
		}
	}

	// Every receipt stays verifiable from the history: the receipt signed
	// before the revocation still verifies two years on.
	final := stores[0].k
	if _, err := signer.Verify(beforeRevocation, final.KeySet(end, true)); err != nil {
		t.Errorf("old receipt against the final history: %v", err)
	}
	raw, _, err := stores[0].cfg.Store.Get(ctx, StateKey)
	if err != nil {
		t.Fatal(err)
	}
	st, err := parseState(raw)
	if err != nil {
		t.Fatal(err)
	}
	// Exactly one key per quarter (plus the first key, the rotation and the
	// two replacements), and one audit entry per scheduled creation.
	origins := map[string]int{}
	perQuarter := map[time.Time]int{}
	for _, r := range st.Keys {
		origins[r.Origin]++
		if r.Origin == originSchedule {
			perQuarter[r.NotBefore]++
		}
	}
	wantOrigins := map[string]int{originInitial: 1, originSchedule: 8, originRotate: 1, originReplace: 2}
	if fmt.Sprint(origins) != fmt.Sprint(wantOrigins) {
		t.Errorf("keys by origin = %v, want %v", origins, wantOrigins)
	}
	for _, b := range boundaries {
		if perQuarter[b] != 1 {
			t.Errorf("quarter %s has %d scheduled keys, want 1", b.Format("2006-01-02"), perQuarter[b])
		}
	}
	systemEntries := 0
	for _, a := range aud.actions() {
		if a == "key.rotate system success" {
			systemEntries++
		}
	}
	if systemEntries != 9 {
		t.Errorf("scheduled key creations audited %d times, want 9", systemEntries)
	}
	// Exactly one signing key at every second boundary of the history, and
	// none before the first.
	for _, now := range instants {
		n := 0
		for i := range st.Keys {
			if st.Keys[i].signsAt(now) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%s: %d keys sign in the final history, want 1", now.Format(time.RFC3339), n)
		}
	}
	if st.signing(start.Add(-time.Second)) >= 0 {
		t.Error("a key signs before the first start")
	}
}
