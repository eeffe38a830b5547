package keyring

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sealpost/sealpost/signer"
)

func TestPeriodBoundaries(t *testing.T) {
	for _, tc := range []struct {
		months     int
		at         string
		start, end string
	}{
		{3, "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z", "2026-04-01T00:00:00Z"},
		{3, "2026-03-31T23:59:59Z", "2026-01-01T00:00:00Z", "2026-04-01T00:00:00Z"},
		{3, "2026-04-01T00:00:00Z", "2026-04-01T00:00:00Z", "2026-07-01T00:00:00Z"},
		{3, "2026-12-31T23:59:59Z", "2026-10-01T00:00:00Z", "2027-01-01T00:00:00Z"},
		{1, "2028-02-29T12:00:00Z", "2028-02-01T00:00:00Z", "2028-03-01T00:00:00Z"},
		{6, "2026-07-01T00:00:00Z", "2026-07-01T00:00:00Z", "2027-01-01T00:00:00Z"},
		{12, "2026-06-15T00:00:00Z", "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z"},
		{4, "2026-09-01T00:00:00Z", "2026-09-01T00:00:00Z", "2027-01-01T00:00:00Z"},
	} {
		at := date(tc.at)
		if got := periodStart(at, tc.months); !got.Equal(date(tc.start)) {
			t.Errorf("periodStart(%s, %d) = %s, want %s", tc.at, tc.months, got, tc.start)
		}
		if got := nextBoundary(at, tc.months); !got.Equal(date(tc.end)) {
			t.Errorf("nextBoundary(%s, %d) = %s, want %s", tc.at, tc.months, got, tc.end)
		}
	}
	// A time in another zone is placed in its UTC period.
	ny := time.FixedZone("EST", -5*3600)
	if got := periodStart(time.Date(2026, 3, 31, 20, 0, 0, 0, ny), 3); !got.Equal(date("2026-04-01T00:00:00Z")) {
		t.Errorf("periodStart in EST = %s", got)
	}
}

func TestConfigValidation(t *testing.T) {
	e := newEnv(t, date("2026-05-01T00:00:00Z"))
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string // substring of the error; empty: valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"monthly", func(c *Config) { c.PeriodMonths = 1; c.PrePublish = 7 * 24 * time.Hour }, ""},
		{"period does not divide 12", func(c *Config) { c.PeriodMonths = 5 }, "period must divide 12"},
		{"negative period", func(c *Config) { c.PeriodMonths = -3 }, "period must divide 12"},
		{"period of two years", func(c *Config) { c.PeriodMonths = 24 }, "period must divide 12"},
		{"pre-publication longer than a month", func(c *Config) { c.PeriodMonths = 1; c.PrePublish = 30 * 24 * time.Hour }, "pre-publication"},
		{"negative pre-publication", func(c *Config) { c.PrePublish = -time.Hour }, "pre-publication"},
		{"pre-publication shorter than jwks caching", func(c *Config) { c.PrePublish = time.Hour }, "pre-publication"},
		{"grace too short", func(c *Config) { c.Grace = time.Minute }, "grace"},
		{"grace too long", func(c *Config) { c.Grace = 20 * 365 * 24 * time.Hour }, "grace"},
		{"check interval", func(c *Config) { c.CheckInterval = 2 * time.Hour }, "check interval"},
		{"no store", func(c *Config) { c.Store = nil }, "store is required"},
		{"no sealer", func(c *Config) { c.Sealer = nil }, "sealer is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := e.config()
			tc.mod(&c)
			_, err := c.withDefaults()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("error = %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

// TestParseStateRejects checks that a damaged or hand-edited key state is
// refused instead of being signed with.
func TestParseStateRejects(t *testing.T) {
	e := newEnv(t, date("2026-03-20T00:00:00Z"))
	k := e.keyring()
	raw, _, err := e.kv.Get(context.Background(), StateKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parseState(raw); err != nil {
		t.Fatalf("valid state: %v", err)
	}
	st := k.st.clone()
	if len(st.Keys) != 2 {
		t.Fatalf("state has %d keys, want current and next", len(st.Keys))
	}
	other := ed25519.NewKeyFromSeed(make([]byte, 32)).Public().(ed25519.PublicKey)
	for _, tc := range []struct {
		name string
		mod  func(*state)
		want string
	}{
		{"gap between windows", func(s *state) { s.Keys[1].NotBefore = s.Keys[1].NotBefore.Add(time.Second) }, "not contiguous"},
		{"overlapping windows", func(s *state) { s.Keys[0].SignsUntil = s.Keys[0].SignsUntil.Add(time.Hour) }, "not contiguous"},
		{"kid of another key", func(s *state) { s.Keys[0].Public = other }, "thumbprint"},
		{"repeated kid", func(s *state) { s.Keys[1] = s.Keys[0] }, "repeats"},
		{"window ends before it starts", func(s *state) { s.Keys[1].SignsUntil = s.Keys[1].NotBefore.Add(-time.Hour) }, "out of order"},
		{"expires before it stops signing", func(s *state) { s.Keys[1].Expires = s.Keys[1].SignsUntil.Add(-time.Hour) }, "out of order"},
		{"short public key", func(s *state) { s.Keys[0].Public = s.Keys[0].Public[:31] }, "public key"},
		{"version", func(s *state) { s.V = 2 }, "version"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := st.clone()
			tc.mod(s)
			b, err := json.Marshal(s)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := parseState(b); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("parseState: %v, want an error mentioning %q", err, tc.want)
			}
			if _, err := s.marshal(); err == nil {
				t.Error("marshal accepted the broken state")
			}
		})
	}
	// Members from a later version are ignored; a later format version is
	// refused.
	if _, err := parseState([]byte(`{"v":1,"keys":[],"added_later":true}`)); err != nil {
		t.Errorf("unknown member: %v", err)
	}
	for _, doc := range []string{``, `{`, `[]`, `{"keys":[]}`, `{"v":2,"keys":[]}`, `{"v":1,"keys":[]} {}`, strings.Repeat(" ", MaxStateSize+1)} {
		if _, err := parseState([]byte(doc)); !errors.Is(err, errState) {
			t.Errorf("parseState(%.20q) = %v, want errState", doc, err)
		}
	}
}

// TestStoreUnavailable checks that signing fails, rather than using a stale
// key, when the state cannot be read.
func TestStoreUnavailable(t *testing.T) {
	e := newEnv(t, date("2026-03-20T00:00:00Z"))
	k := e.keyring()
	e.clock.Advance(time.Minute)
	e.conn.Close()
	if _, _, err := k.SigningKeys(context.Background(), e.clock.Now()); err == nil {
		t.Fatal("signing keys with the store gone: no error")
	}
	if _, err := k.Rotate(context.Background(), "admin"); err == nil {
		t.Fatal("rotate with the store gone: no error")
	}
}

// TestSigningKeysNeverOutsideWindow asks for keys at instants around a
// boundary, from a cache loaded before it, and checks that the returned key
// always signs at the requested instant.
func TestSigningKeysNeverOutsideWindow(t *testing.T) {
	e := newEnv(t, date("2026-03-31T23:59:58Z"))
	k := e.keyring(func(c *Config) { c.CheckInterval = time.Hour })
	hist := func() *signer.KeySet { return k.KeySet(e.clock.Now(), true) }
	for _, at := range []string{"2026-03-31T23:59:58Z", "2026-03-31T23:59:59.999999Z", "2026-04-01T00:00:00Z", "2026-04-01T00:00:01Z"} {
		now := date(at)
		cur, _, err := k.SigningKeys(context.Background(), now)
		if err != nil {
			t.Fatal(err)
		}
		p, ok := hist().Lookup(cur.KID)
		if !ok || now.Before(p.NotBefore) || !now.Before(p.SignsUntil) {
			t.Errorf("%s: signing with %s whose window is [%s, %s)", at, cur.KID, p.NotBefore, p.SignsUntil)
		}
		if _, err := signer.Verify(signWith(t, cur, now), hist()); err != nil {
			t.Errorf("%s: %v", at, err)
		}
	}
}

// seedState builds a valid state of n consecutive quarterly keys without a
// store, for fuzz seeds.
func seedState(n int) []byte {
	st := &state{V: stateVersion}
	nbf := date("2026-01-01T00:00:00Z")
	for i := range n {
		seed := make([]byte, ed25519.SeedSize)
		seed[0] = byte(i)
		pub := ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)
		until := nextBoundary(nbf, 3)
		st.Keys = append(st.Keys, keyRecord{
			KID: signer.Thumbprint(pub), Public: pub, Sealed: []byte("sealed"), Origin: originSchedule,
			IssuedAt: nbf.Add(-DefaultPrePublish), NotBefore: nbf, SignsUntil: until, Expires: until.Add(DefaultGrace),
		})
		nbf = until
	}
	st.Keys[0].RevokedAt = st.Keys[0].SignsUntil
	b, err := st.marshal()
	if err != nil {
		panic(err)
	}
	return b
}

func FuzzParseState(f *testing.F) {
	f.Add(seedState(1))
	f.Add(seedState(3))
	f.Add([]byte(`{"v":1,"keys":[]}`))
	f.Add([]byte(`{"v":1,"keys":[{"kid":"x","pub":"AAAA"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := parseState(b)
		if err != nil {
			return
		}
		// A state that parses keeps the invariants, survives a round trip,
		// and has at most one signing key at any of its window edges.
		out, err := st.marshal()
		if err != nil {
			t.Fatalf("parsed state does not marshal: %v", err)
		}
		if _, err := parseState(out); err != nil {
			t.Fatalf("round trip: %v", err)
		}
		for _, r := range st.Keys {
			for _, at := range []time.Time{r.NotBefore, r.SignsUntil, r.Expires} {
				n := 0
				for i := range st.Keys {
					if st.Keys[i].signsAt(at) {
						n++
					}
				}
				if n > 1 {
					t.Fatalf("%d keys sign at %s", n, at)
				}
			}
		}
	})
}

// TestConfigValidateSettingsOnly checks that Validate judges the settings
// without the store and sealer New needs, a zero value standing for the
// default.
func TestConfigValidateSettingsOnly(t *testing.T) {
	if err := (Config{}).Validate(); err != nil {
		t.Errorf("zero Config: %v", err)
	}
	for _, tc := range []struct {
		c    Config
		want string
	}{
		{Config{PeriodMonths: 5}, "period must divide 12"},
		{Config{PeriodMonths: 1, PrePublish: 28 * 24 * time.Hour}, "pre-publication"},
		{Config{Grace: time.Hour}, "grace"},
		{Config{CheckInterval: time.Millisecond}, "check interval"},
	} {
		if err := tc.c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: Validate() = %v, want one mentioning %q", tc.c, err, tc.want)
		}
	}
}
