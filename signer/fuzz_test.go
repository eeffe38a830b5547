package signer

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzSignVerify signs receipts built from fuzz input, checks that they
// verify and say what was signed, then flips one byte of the envelope: the
// result must fail to verify unless it is the same canonical document.
func FuzzSignVerify(f *testing.F) {
	f.Add("acme", "invoices", []byte(testPayload), int64(0), uint32(10), byte(1))
	f.Add("t\u00e9nant", "r\n", []byte(`"just a string"`), int64(1234567), uint32(900), byte(0x20))
	f.Add("", "", []byte(`[1,2.5e10,{"\u20ac":null}]`), int64(-5), uint32(0), byte(0xff))
	f.Add("acme", "mail", []byte(`{"text":"\u000f\ud83d\ude02"}`), int64(7_000_000), uint32(77), byte(0x20))
	k := testKey(f)
	keys := testKeySet(f)
	windowStart := keys.Keys[0].NotBefore

	f.Fuzz(func(t *testing.T, tenant, route string, payload []byte, offsetMicros int64, pos uint32, flip byte) {
		if !json.Valid(payload) {
			return
		}
		r := testReceipt()
		r.Tenant, r.Route = tenant, route
		if offsetMicros < 0 {
			offsetMicros = -offsetMicros
		}
		offset := time.Duration(offsetMicros%int64(90*24*time.Hour/time.Microsecond)) * time.Microsecond
		r.SignedAt = FormatTime(windowStart.Add(offset))
		env, err := Sign(r, payload, k)
		if err != nil {
			if _, cerr := Canonicalize(payload); cerr != nil {
				return // json.Valid is laxer than JCS, e.g. about lone surrogates
			}
			if !utf8.ValidString(tenant) || !utf8.ValidString(route) {
				return
			}
			t.Fatalf("Sign: %v", err)
		}
		if c, err := Canonicalize(env); err != nil || !bytes.Equal(c, env) {
			t.Fatalf("Sign output is not JCS: %v\n got %s\nwant %s", err, env, c)
		}
		v, err := Verify(env, keys)
		if err != nil {
			t.Fatalf("Verify of a fresh envelope: %v\n%s", err, env)
		}
		if v.Receipt.Tenant != tenant || v.Receipt.Route != route {
			t.Fatalf("tenant = %q, want %q", v.Receipt.Tenant, tenant)
		}
		if v.Receipt.SignedAt != r.SignedAt || !v.PayloadPresent || v.KeyID != k.KID {
			t.Fatalf("Verify = %+v", v)
		}

		if flip == 0 {
			flip = 1
		}
		mut := bytes.Clone(env)
		mut[int(pos)%len(mut)] ^= flip
		if _, err := Verify(mut, keys); err == nil {
			c, cerr := Canonicalize(mut)
			if cerr != nil || !bytes.Equal(c, env) {
				t.Fatalf("envelope with byte %d flipped by %#x verifies:\n%s", int(pos)%len(mut), flip, mut)
			}
		}
	})
}

// FuzzVerify feeds arbitrary documents to Verify: it must not panic, and
// anything it accepts must be signed by the test key.
func FuzzVerify(f *testing.F) {
	k := testKey(f)
	keys := testKeySet(f)
	good, err := Sign(testReceipt(), testPayload, k)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(readFile(f, "testdata/golden/envelope.json"))
	f.Add([]byte(`{"receipt":{},"signature":{"alg":"Ed25519","kid":"","sig":""}}`))
	f.Add([]byte(`{"receipt":[],"signature":null,"payload":1}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, env []byte) {
		v, err := Verify(env, keys)
		if err == nil && (v.KeyID != k.KID || v.Receipt.KID != k.KID) {
			t.Fatalf("Verify accepted a receipt not by the test key: %+v", v)
		}
	})
}

// FuzzParseKeySet feeds arbitrary documents to ParseKeySet and ParseJWK:
// they must not panic, and any set it accepts must survive a marshal/parse round trip.
func FuzzParseKeySet(f *testing.F) {
	for _, name := range []string{"testdata/golden/jwks.json", "testdata/golden/history.json"} {
		f.Add(readFile(f, name))
	}
	f.Add([]byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k","nbf":1.5,"revoked_at":2}]}`))
	f.Add([]byte(`{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k","status":"grace"}`))
	f.Add([]byte(`{"keys":[{}]}`))
	f.Add([]byte(`{"keys":null}`))
	f.Fuzz(func(t *testing.T, doc []byte) {
		if k, err := ParseJWK(doc); err == nil && k.KID != Thumbprint(k.Key) {
			t.Fatalf("ParseJWK accepted kid %q for another key", k.KID)
		}
		set, err := ParseKeySet(doc)
		if err != nil {
			return
		}
		out, err := set.MarshalHistory()
		if err != nil {
			t.Fatalf("MarshalHistory of a parsed set: %v", err)
		}
		again, err := ParseKeySet(out)
		if err != nil {
			t.Fatalf("ParseKeySet(MarshalHistory()): %v\n%s", err, out)
		}
		if len(again.Keys) != len(set.Keys) {
			t.Fatalf("round trip changed the key count: %d != %d", len(again.Keys), len(set.Keys))
		}
		for i, k := range set.Keys {
			g := again.Keys[i]
			if g.KID != k.KID || !bytes.Equal(g.Key, k.Key) || g.Status != k.Status ||
				!g.NotBefore.Equal(k.NotBefore.Truncate(time.Microsecond)) ||
				!g.SignsUntil.Equal(k.SignsUntil.Truncate(time.Microsecond)) ||
				!g.RevokedAt.Equal(k.RevokedAt.Truncate(time.Microsecond)) {
				t.Fatalf("key %d changed in round trip: %+v != %+v", i, g, k)
			}
		}
	})
}
