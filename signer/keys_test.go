package signer

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseKeySetRoundTrip(t *testing.T) {
	k, o := testKey(t), otherKey(t)
	revoked := testPublicKey(t, o)
	revoked.Status = StatusRevoked
	revoked.RevokedAt = mustTime(t, "2026-11-02T08:30:00.25Z")
	revoked.SignsUntil = mustTime(t, "2026-11-02T08:30:00.5Z")
	set := &KeySet{Keys: []PublicKey{testPublicKey(t, k), revoked}}

	hist, err := set.MarshalHistory()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(hist, []byte(`"revoked_at":1793608200.25`)) || !bytes.Contains(hist, []byte(`"status":"revoked"`)) {
		t.Fatalf("history = %s", hist)
	}
	got, err := ParseKeySet(hist)
	if err != nil {
		t.Fatalf("ParseKeySet: %v", err)
	}
	if len(got.Keys) != 2 {
		t.Fatalf("%d keys", len(got.Keys))
	}
	for i, want := range set.Keys {
		g := got.Keys[i]
		if g.KID != want.KID || !bytes.Equal(g.Key, want.Key) || g.Status != want.Status ||
			!g.IssuedAt.Equal(want.IssuedAt) || !g.NotBefore.Equal(want.NotBefore) ||
			!g.SignsUntil.Equal(want.SignsUntil) || !g.Expires.Equal(want.Expires) || !g.RevokedAt.Equal(want.RevokedAt) {
			t.Fatalf("key %d = %+v\nwant %+v", i, g, want)
		}
	}
	if _, ok := got.Lookup(o.KID); !ok {
		t.Fatal("Lookup of the second key failed")
	}
	if _, ok := got.Lookup("nope"); ok {
		t.Fatal("Lookup of an unknown kid succeeded")
	}

	jwks, err := set.MarshalJWKS()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(jwks, []byte(`"status"`)) {
		t.Fatalf("JWKS carries status: %s", jwks)
	}
}

func TestMarshalKeySetRejectsBadKeys(t *testing.T) {
	k := testPublicKey(t, testKey(t))
	wrongKID := k
	wrongKID.KID = "x"
	short := k
	short.Key = k.Key[:31]
	for name, p := range map[string]PublicKey{"wrong kid": wrongKID, "short key": short} {
		t.Run(name, func(t *testing.T) {
			if _, err := (&KeySet{Keys: []PublicKey{p}}).MarshalJWKS(); err == nil {
				t.Fatal("MarshalJWKS succeeded")
			}
		})
	}
	empty, err := (*KeySet)(nil).MarshalJWKS()
	if err != nil || string(empty) != `{"keys":[]}` {
		t.Fatalf("nil set: %s, %v", empty, err)
	}
}

func TestParseKeySetRejects(t *testing.T) {
	k := testKey(t)
	x := b64.EncodeToString(k.Public())
	good := `{"kty":"OKP","crv":"Ed25519","x":"` + x + `","kid":"` + k.KID + `","use":"sig","alg":"Ed25519"}`
	other := otherKey(t)
	otherJWK := `{"kty":"OKP","crv":"Ed25519","x":"` + b64.EncodeToString(other.Public()) + `","kid":"` + other.KID + `"}`
	with := func(old, new string) string {
		if !strings.Contains(good, old) {
			t.Fatalf("%s not in %s", old, good)
		}
		return `{"keys":[` + otherJWK + `,` + strings.Replace(good, old, new, 1) + `]}`
	}
	for _, tc := range []struct {
		name, doc, want string
	}{
		{"not json", `keys`, ""},
		{"trailing data", `{"keys":[]} x`, ""},
		{"duplicate member", `{"keys":[],"keys":[]}`, ""},
		{"no keys", `{"kty":"OKP"}`, `no "keys"`},
		{"keys not an array", `{"keys":{}}`, "not an array"},
		{"keys null", `{"keys":null}`, "not an array"},
		{"array", `[` + good + `]`, "not a json object"},
		{"key not an object", `{"keys":[1]}`, "key 0"},
		{"wrong kty", with(`"kty":"OKP"`, `"kty":"EC"`), "key 1: kty"},
		{"kty in other case", with(`"kty":"OKP"`, `"KTY":"OKP"`), `key 1: no "kty"`},
		{"wrong crv", with(`"crv":"Ed25519"`, `"crv":"X25519"`), "key 1: crv"},
		{"wrong alg", with(`"alg":"Ed25519"`, `"alg":"ES256"`), "key 1: alg"},
		{"empty alg", with(`"alg":"Ed25519"`, `"alg":""`), "key 1: alg"},
		{"wrong use", with(`"use":"sig"`, `"use":"enc"`), "key 1: use"},
		{"short x", with(x, x[:40]), "key 1: x"},
		{"x with padding", with(x, x+"="), "key 1: x"},
		{"x standard base64", with(x, strings.NewReplacer("-", "+", "_", "/").Replace(x)+"+"), "key 1: x"},
		{"no kid", with(`,"kid":"`+k.KID+`"`, ``), `key 1: no "kid"`},
		{"kid not thumbprint", with(k.KID, other.KID), "key 1: kid"},
		{"kid as number", with(`"`+k.KID+`"`, `7`), "key 1: \"kid\" is not a string"},
		{"use null", with(`"use":"sig"`, `"use":null`), "key 1: \"use\" is not a string"},
		{"status null", with(`"use":"sig"`, `"use":"sig","status":null`), "key 1: \"status\" is not a string"},
		{"x with a line break", with(x, x[:20]+"\\n"+x[20:]), "key 1: x"},
		{"date with more precision than a double", with(`"use":"sig"`, `"use":"sig","nbf":1790812800.12345678901`), "round trip"},
		{"private key", with(`"use":"sig"`, `"use":"sig","d":"AAAA"`), "key 1: holds private key"},
		{"unknown status", with(`"use":"sig"`, `"use":"sig","status":"retired"`), "key 1: status"},
		{"negative date", with(`"use":"sig"`, `"use":"sig","nbf":-1`), "key 1: \"nbf\""},
		{"exponent date", with(`"use":"sig"`, `"use":"sig","exp":1.8e9`), "key 1: \"exp\""},
		{"string date", with(`"use":"sig"`, `"use":"sig","iat":"1789603200"`), "key 1: \"iat\""},
		{"date out of range", with(`"use":"sig"`, `"use":"sig","signs_until":999999999999`), "key 1: \"signs_until\""},
		{"window inverted", with(`"use":"sig"`, `"use":"sig","nbf":1790812800,"signs_until":1790812799`), "key 1: signs_until"},
		{"duplicate kid", `{"keys":[` + good + `,` + otherJWK + `,` + good + `]}`, "key 2: kid"},
		{"too large", `{"keys":[],"pad":"` + strings.Repeat("a", MaxKeySetSize) + `"}`, "too large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			set, err := ParseKeySet([]byte(tc.doc))
			if err == nil {
				t.Fatalf("ParseKeySet succeeded: %+v", set)
			}
			if !errors.Is(err, ErrInvalidKeySet) {
				t.Fatalf("error %v is not ErrInvalidKeySet", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

func TestParseKeySetAccepts(t *testing.T) {
	k := testKey(t)
	x := b64.EncodeToString(k.Public())
	base := `"kty":"OKP","crv":"Ed25519","x":"` + x + `","kid":"` + k.KID + `"`
	for _, tc := range []struct {
		name, doc string
		check     func(PublicKey) bool
	}{
		{"minimal", `{"keys":[{` + base + `}]}`, func(p PublicKey) bool { return p.NotBefore.IsZero() && p.SignsUntil.IsZero() }},
		{"rfc 8037 alg name", `{"keys":[{` + base + `,"alg":"EdDSA"}]}`, nil},
		{"unknown members ignored", `{"keys":[{` + base + `,"x5t":"abc"}],"issuer":"sealpost"}`, nil},
		{"fractional dates", `{"keys":[{` + base + `,"nbf":1790812800.5,"revoked_at":1790812801.000001}]}`, func(p PublicKey) bool {
			return p.NotBefore.Equal(time.Unix(1790812800, 5e8)) && p.RevokedAt.Equal(time.Unix(1790812801, 1000))
		}},
		{"empty set", `{"keys":[]}`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			set, err := ParseKeySet([]byte(tc.doc))
			if err != nil {
				t.Fatalf("ParseKeySet: %v", err)
			}
			if tc.check != nil && !tc.check(set.Keys[0]) {
				t.Fatalf("key = %+v", set.Keys[0])
			}
		})
	}
}

func TestNumericDateJSON(t *testing.T) {
	for _, tc := range []struct {
		t    time.Time
		want string
	}{
		{time.Unix(1790812800, 0), "1790812800"},
		{time.Unix(1790812800, 500_000_000), "1790812800.5"},
		{time.Unix(1790812800, 123_456_789), "1790812800.123456"},
		{time.Unix(0, 1000), "0.000001"},
	} {
		got, err := NumericDate(tc.t).MarshalJSON()
		if err != nil || string(got) != tc.want {
			t.Errorf("MarshalJSON(%v) = %s, %v; want %s", tc.t, got, err, tc.want)
		}
	}
	if _, err := NumericDate(time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)).MarshalJSON(); err == nil {
		t.Error("MarshalJSON of year 10000 succeeded")
	}
}

func TestParseJWK(t *testing.T) {
	want := testPublicKey(t, testKey(t))
	doc, err := json.Marshal(want.JWK())
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseJWK(doc)
	if err != nil {
		t.Fatalf("ParseJWK(%s): %v", doc, err)
	}
	if got.KID != want.KID || got.Status != StatusActive || !got.SignsUntil.Equal(want.SignsUntil) {
		t.Fatalf("ParseJWK = %+v", got)
	}
	for _, bad := range []string{`{"keys":[]}`, `[]`, strings.Replace(string(doc), `"OKP"`, `"RSA"`, 1), string(doc) + "x"} {
		if _, err := ParseJWK([]byte(bad)); !errors.Is(err, ErrInvalidKeySet) {
			t.Errorf("ParseJWK(%s) = %v, want ErrInvalidKeySet", bad, err)
		}
	}
}
