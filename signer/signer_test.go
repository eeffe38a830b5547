package signer

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/golden")

// Fixed test material: a key derived from a fixed seed and fixed times, so
// the golden envelope is byte-for-byte reproducible (Ed25519 is deterministic).
var (
	testSeed       = sha256.Sum256([]byte("sealpost signer test key 2026Q4"))
	otherSeed      = sha256.Sum256([]byte("sealpost signer other key"))
	testReceivedAt = "2026-11-22T10:00:00.123456Z"
	testSignedAt   = "2026-11-22T10:00:00.130001Z"
	testPayload    = json.RawMessage(`{"invoice": "2026-0042", "amount": 1234.50, "currency": "EUR",
		"lines": [{"sku": "A-1", "qty": 2}, {"sku": "B-7", "qty": 1}], "note": "caf\u00e9 <b>&</b>"}`)
	testRaw = []byte("POST body as received, byte for byte")
)

func mustTime(t testing.TB, s string) time.Time {
	t.Helper()
	tm, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatal(err)
	}
	return tm
}

func testKey(t testing.TB) PrivateKey {
	t.Helper()
	k, err := NewPrivateKeyFromSeed(testSeed[:])
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func otherKey(t testing.TB) PrivateKey {
	t.Helper()
	k, err := NewPrivateKeyFromSeed(otherSeed[:])
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// testPublicKey is the public half of k with a quarterly window: published on
// 2026-09-17, signing 2026-10-01 to 2027-01-01, in the JWKS until 2027-04-01.
func testPublicKey(t testing.TB, k PrivateKey) PublicKey {
	return PublicKey{
		KID:        k.KID,
		Key:        k.Public(),
		Status:     StatusActive,
		IssuedAt:   mustTime(t, "2026-09-17T00:00:00Z"),
		NotBefore:  mustTime(t, "2026-10-01T00:00:00Z"),
		SignsUntil: mustTime(t, "2027-01-01T00:00:00Z"),
		Expires:    mustTime(t, "2027-04-01T00:00:00Z"),
	}
}

func testKeySet(t testing.TB) *KeySet {
	return &KeySet{Keys: []PublicKey{testPublicKey(t, testKey(t))}}
}

func testReceipt() Receipt {
	return Receipt{
		ID:         "rcpt_01JD7Q8ZK3V4M5N6P7Q8R9S0TA",
		Tenant:     "acme",
		Route:      "invoices",
		Channel:    "https",
		ReceivedAt: testReceivedAt,
		SignedAt:   testSignedAt,
		Source: json.RawMessage(`{"remote_addr":"192.0.2.10:51234",
			"tls":{"version":"TLS 1.3","cipher":"TLS_AES_128_GCM_SHA256"},
			"api_key_id":"ak_01JD7Q","idempotency_key":"inv-2026-0042"}`),
		RawSHA256: RawDigest(testRaw),
		RawSize:   int64(len(testRaw)),
	}
}

func signTest(t testing.TB, r Receipt, payload json.RawMessage, k PrivateKey) []byte {
	t.Helper()
	env, err := Sign(r, payload, k)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	return env
}

func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs from golden file (run with -update if the change is intended):\n got %s\nwant %s", name, got, want)
	}
}

// TestGolden pins the exact bytes of a signed envelope and of the JWKS and
// key history for its key. Ed25519 and JCS are deterministic, so any change
// here is a wire-format change that every verifier would notice.
func TestGolden(t *testing.T) {
	k := testKey(t)
	set := testKeySet(t)

	env := signTest(t, testReceipt(), testPayload, k)
	if c, err := Canonicalize(env); err != nil || !bytes.Equal(c, env) {
		t.Fatalf("Sign output is not JCS: %v", err)
	}
	checkGolden(t, "envelope.json", env)

	jwks, err := set.MarshalJWKS()
	if err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "jwks.json", jwks)

	hist, err := set.MarshalHistory()
	if err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "history.json", hist)

	// The golden files verify with the published keys, from either document.
	for _, doc := range [][]byte{jwks, hist} {
		parsed, err := ParseKeySet(doc)
		if err != nil {
			t.Fatalf("ParseKeySet(%s): %v", doc, err)
		}
		v, err := Verify(readFile(t, "testdata/golden/envelope.json"), parsed)
		if err != nil {
			t.Fatalf("Verify golden envelope: %v", err)
		}
		if v.KeyID != k.KID || !v.PayloadPresent || v.Receipt.ID != testReceipt().ID {
			t.Fatalf("Verify = %+v", v)
		}
	}
}

func TestSignFillsReceipt(t *testing.T) {
	k := testKey(t)
	r := testReceipt()
	r.V = 7
	r.KID = "someone else"
	v, err := Verify(signTest(t, r, testPayload, k), testKeySet(t))
	if err != nil {
		t.Fatal(err)
	}
	want := testReceipt()
	want.V = 1
	want.KID = k.KID
	want.PayloadSHA256, _ = PayloadDigest(testPayload)
	got := v.Receipt
	if string(compact(t, got.Source)) != string(compact(t, want.Source)) {
		t.Fatalf("source = %s, want %s", got.Source, want.Source)
	}
	got.Source, want.Source = nil, nil
	if !receiptEqual(got, want) {
		t.Fatalf("receipt = %+v\nwant %+v", got, want)
	}
	if !v.SignedAt().Equal(mustTime(t, "2026-11-22T10:00:00.130001Z")) {
		t.Fatalf("SignedAt = %v", v.SignedAt())
	}
}

func receiptEqual(a, b Receipt) bool {
	return a.V == b.V && a.ID == b.ID && a.KID == b.KID && a.Tenant == b.Tenant && a.Route == b.Route &&
		a.Channel == b.Channel && a.ReceivedAt == b.ReceivedAt && a.SignedAt == b.SignedAt &&
		bytes.Equal(a.Source, b.Source) && a.PayloadSHA256 == b.PayloadSHA256 &&
		a.RawSHA256 == b.RawSHA256 && a.RawSize == b.RawSize
}

func compact(t *testing.T, b []byte) []byte {
	t.Helper()
	c, err := Canonicalize(b)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSignRejects(t *testing.T) {
	k := testKey(t)
	badKID := k
	badKID.KID = otherKey(t).KID
	for _, tc := range []struct {
		name    string
		mutate  func(*Receipt)
		payload json.RawMessage
		key     PrivateKey
	}{
		{"zero key", nil, testPayload, PrivateKey{}},
		{"kid not the key's thumbprint", nil, testPayload, badKID},
		{"short key", nil, testPayload, NewPrivateKey(k.Key[:32])},
		{"invalid payload", nil, json.RawMessage(`{"a":`), k},
		{"duplicate payload member", nil, json.RawMessage(`{"a":1,"a":2}`), k},
		{"no payload and no digest", nil, nil, k},
		{"empty id", func(r *Receipt) { r.ID = "" }, testPayload, k},
		{"signed_at without microseconds", func(r *Receipt) { r.SignedAt = "2026-11-22T10:00:00Z" }, testPayload, k},
		{"signed_at with offset", func(r *Receipt) { r.SignedAt = "2026-11-22T10:00:00.000000+01:00" }, testPayload, k},
		{"received_at empty", func(r *Receipt) { r.ReceivedAt = "" }, testPayload, k},
		{"raw digest hex", func(r *Receipt) { r.RawSHA256 = strings.Repeat("ab", 32) }, testPayload, k},
		{"negative raw size", func(r *Receipt) { r.RawSize = -1 }, testPayload, k},
		{"invalid source", func(r *Receipt) { r.Source = json.RawMessage(`{`) }, testPayload, k},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := testReceipt()
			if tc.mutate != nil {
				tc.mutate(&r)
			}
			if env, err := Sign(r, tc.payload, tc.key); err == nil {
				t.Fatalf("Sign succeeded: %s", env)
			}
		})
	}
}

func TestFormatTime(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"2026-11-22T10:00:00Z", "2026-11-22T10:00:00.000000Z"},
		{"2026-11-22T11:00:00.1234567+01:00", "2026-11-22T10:00:00.123456Z"},
		{"2026-11-22T10:00:00.000001Z", "2026-11-22T10:00:00.000001Z"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got := FormatTime(mustTime(t, tc.in))
			if got != tc.want {
				t.Fatalf("FormatTime = %s, want %s", got, tc.want)
			}
			if _, err := ParseTime(got); err != nil {
				t.Fatalf("ParseTime(%s): %v", got, err)
			}
		})
	}
	for _, bad := range []string{"", "2026-11-22T10:00:00Z", "2026-11-22T10:00:00.12345Z",
		"2026-11-22T10:00:00.1234567Z", "2026-11-22T10:00:00.123456+00:00", "2026-11-22 10:00:00.123456Z",
		"2026-02-30T10:00:00.123456Z", "2026-11-22T24:00:00.000000Z"} {
		if _, err := ParseTime(bad); err == nil {
			t.Errorf("ParseTime(%q) succeeded", bad)
		}
	}
}

func TestPrivateKeyCopiesAndZeroes(t *testing.T) {
	k := testKey(t)
	src := bytes.Clone(k.Key)
	c := NewPrivateKey(src)
	clear(src)
	if c.KID != k.KID || !bytes.Equal(c.Key, k.Key) {
		t.Fatal("NewPrivateKey did not copy the key")
	}
	c.Zero()
	if c.Key != nil {
		t.Fatal("Zero left key material")
	}
	if _, err := Sign(testReceipt(), testPayload, c); err == nil {
		t.Fatal("Sign with a zeroed key succeeded")
	}
}

// TestVerify covers each verification outcome: windows, revocation, unknown
// and mismatched keys, tampering and malformed envelopes.
func TestVerify(t *testing.T) {
	k := testKey(t)
	other := otherKey(t)
	pub := testPublicKey(t, k)
	set := func(mod func(*PublicKey)) *KeySet {
		p := pub
		if mod != nil {
			mod(&p)
		}
		return &KeySet{Keys: []PublicKey{p}}
	}
	signedAt := func(ts string) []byte {
		r := testReceipt()
		r.SignedAt = ts
		return signTest(t, r, testPayload, k)
	}
	good := signTest(t, testReceipt(), testPayload, k)
	replace := func(old, new string) []byte {
		if !bytes.Contains(good, []byte(old)) {
			t.Fatalf("envelope does not contain %s", old)
		}
		return bytes.Replace(good, []byte(old), []byte(new), 1)
	}
	withoutPayload := func() []byte {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(good, &m); err != nil {
			t.Fatal(err)
		}
		delete(m, "payload")
		b, _ := json.Marshal(m)
		return b
	}()
	pretty := func() []byte {
		var b bytes.Buffer
		if err := json.Indent(&b, good, "", "    "); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}()
	// A receipt with its members in another order and escaped differently
	// is the same JCS document and keeps verifying.
	reordered := bytes.Replace(pretty, []byte(`"tenant": "acme"`), []byte(`"tenant": "\u0061cme"`), 1)
	huge := append(bytes.Repeat([]byte(" "), MaxEnvelopeSize), good...)

	for _, tc := range []struct {
		name     string
		env      []byte
		keys     *KeySet
		want     error
		step     string
		noPaylod bool
	}{
		{name: "valid", env: good, keys: set(nil)},
		{name: "valid pretty-printed", env: pretty, keys: set(nil)},
		{name: "valid with escaped member value", env: reordered, keys: set(nil)},
		{name: "valid without payload", env: withoutPayload, keys: set(nil), noPaylod: true},
		{name: "valid signed without payload", env: func() []byte {
			r := testReceipt()
			r.PayloadSHA256, _ = PayloadDigest(testPayload)
			return signTest(t, r, nil, k)
		}(), keys: set(nil), noPaylod: true},
		{name: "valid from key history with other keys", env: good, keys: &KeySet{Keys: []PublicKey{testPublicKey(t, other), pub}}},
		{name: "signed at window start", env: signedAt("2026-10-01T00:00:00.000000Z"), keys: set(nil)},
		{name: "signed just before window end", env: signedAt("2026-12-31T23:59:59.999999Z"), keys: set(nil)},
		{name: "open window", env: signedAt("2031-01-01T00:00:00.000000Z"), keys: set(func(p *PublicKey) { p.SignsUntil = time.Time{} })},
		{name: "no lower bound", env: signedAt("2020-01-01T00:00:00.000000Z"), keys: set(func(p *PublicKey) { p.NotBefore = time.Time{} })},
		{name: "expired from the jwks still verifies", env: good, keys: set(func(p *PublicKey) { p.Status = StatusExpired })},
		{name: "revoked after signing", env: good, keys: set(func(p *PublicKey) {
			p.Status, p.RevokedAt = StatusRevoked, mustTime(t, "2026-11-22T10:00:00.130002Z")
		})},

		{name: "signed before window", env: signedAt("2026-09-30T23:59:59.999999Z"), keys: set(nil), want: ErrOutsideWindow, step: StepWindow},
		{name: "signed after window", env: signedAt("2027-01-01T00:00:00.000001Z"), keys: set(nil), want: ErrOutsideWindow, step: StepWindow},
		// [nbf, signs_until): at signs_until the next key signs.
		{name: "signed at window end", env: signedAt("2027-01-01T00:00:00.000000Z"), keys: set(nil), want: ErrOutsideWindow, step: StepWindow},
		{name: "revoked before signing", env: good, keys: set(func(p *PublicKey) {
			p.Status, p.RevokedAt = StatusRevoked, mustTime(t, "2026-11-01T00:00:00Z")
		}), want: ErrRevoked, step: StepRevoked},
		{name: "revoked at signing instant", env: good, keys: set(func(p *PublicKey) {
			p.RevokedAt = mustTime(t, "2026-11-22T10:00:00.130001Z")
		}), want: ErrRevoked, step: StepRevoked},
		{name: "revoked without time", env: good, keys: set(func(p *PublicKey) { p.Status = StatusRevoked }), want: ErrRevoked, step: StepRevoked},
		{name: "unknown kid", env: good, keys: &KeySet{Keys: []PublicKey{testPublicKey(t, other)}}, want: ErrUnknownKey, step: StepKey},
		{name: "empty key set", env: good, keys: &KeySet{}, want: ErrUnknownKey, step: StepKey},
		{name: "nil key set", env: good, keys: nil, want: ErrUnknownKey, step: StepKey},
		{name: "signature kid differs", env: replace(`"signature":{"alg":"Ed25519","kid":"`+k.KID, `"signature":{"alg":"Ed25519","kid":"`+other.KID),
			keys: &KeySet{Keys: []PublicKey{pub, testPublicKey(t, other)}}, want: ErrKeyMismatch, step: StepKey},
		{name: "wrong key under the kid", env: good, keys: set(func(p *PublicKey) { p.Key = other.Public() }), want: ErrBadSignature, step: StepSignature},
		{name: "receipt value changed", env: replace(`"tenant":"acme"`, `"tenant":"acmf"`), keys: set(nil), want: ErrBadSignature, step: StepSignature},
		{name: "raw size changed", env: replace(`"raw_size":36`, `"raw_size":37`), keys: set(nil), want: ErrBadSignature, step: StepSignature},
		{name: "signed_at moved inside window", env: replace(testSignedAt, "2026-11-22T10:00:00.130002Z"), keys: set(nil), want: ErrBadSignature, step: StepSignature},
		{name: "signature from another key", env: func() []byte {
			bad := signTest(t, testReceipt(), testPayload, other)
			var m map[string]json.RawMessage
			_ = json.Unmarshal(bad, &m)
			var g map[string]json.RawMessage
			_ = json.Unmarshal(good, &g)
			sig := strings.Replace(string(m["signature"]), other.KID, k.KID, 1)
			g["signature"] = json.RawMessage(sig)
			b, _ := json.Marshal(g)
			return b
		}(), keys: set(nil), want: ErrBadSignature, step: StepSignature},
		{name: "payload changed", env: replace(`"amount":1234.5`, `"amount":1234.6`), keys: set(nil), want: ErrPayloadDigest, step: StepPayload},
		{name: "payload replaced by null", env: func() []byte {
			var m map[string]json.RawMessage
			_ = json.Unmarshal(good, &m)
			m["payload"] = json.RawMessage("null")
			b, _ := json.Marshal(m)
			return b
		}(), keys: set(nil), want: ErrPayloadDigest, step: StepPayload},

		{name: "too large", env: huge, keys: set(nil), want: ErrMalformed, step: StepEnvelope},
		{name: "not json", env: []byte("receipt"), keys: set(nil), want: ErrMalformed, step: StepEnvelope},
		{name: "trailing garbage", env: append(bytes.Clone(good), "x"...), keys: set(nil), want: ErrMalformed, step: StepEnvelope},
		{name: "second document", env: append(bytes.Clone(good), good...), keys: set(nil), want: ErrMalformed, step: StepEnvelope},
		{name: "envelope is an array", env: []byte(`[` + string(good) + `]`), keys: set(nil), want: ErrMalformed, step: StepEnvelope},
		{name: "duplicate receipt member", env: replace(`"tenant":"acme"`, `"tenant":"acme","tenant":"evil"`), keys: set(nil), want: ErrMalformed, step: StepEnvelope},
		{name: "duplicate envelope member", env: replace(`{"payload"`, `{"payload":1,"payload"`), keys: set(nil), want: ErrMalformed, step: StepEnvelope},
		{name: "unknown envelope member", env: replace(`{"payload"`, `{"extra":1,"payload"`), keys: set(nil), want: ErrMalformed, step: StepEnvelope},
		{name: "no receipt", env: []byte(`{"signature":{"alg":"Ed25519","kid":"x","sig":"x"}}`), keys: set(nil), want: ErrMalformed, step: StepEnvelope},
		{name: "no signature", env: []byte(`{"receipt":{}}`), keys: set(nil), want: ErrMalformed, step: StepEnvelope},
		{name: "receipt is a string", env: []byte(`{"receipt":"{}","signature":{"alg":"Ed25519","kid":"x","sig":"x"}}`), keys: set(nil), want: ErrMalformed, step: StepReceipt},
		{name: "receipt is an array", env: []byte(`{"receipt":[],"signature":{"alg":"Ed25519","kid":"x","sig":"x"}}`), keys: set(nil), want: ErrMalformed, step: StepReceipt},
		{name: "receipt is null", env: []byte(`{"receipt":null,"signature":{"alg":"Ed25519","kid":"x","sig":"x"}}`), keys: set(nil), want: ErrMalformed, step: StepReceipt},
		{name: "receipt member in other case", env: replace(`"tenant":"acme"`, `"Tenant":"acme"`), keys: set(nil), want: ErrMalformed, step: StepReceipt},
		{name: "receipt member and case variant", env: replace(`"tenant":"acme"`, `"tenant":"acme","TENANT":"evil"`), keys: set(nil), want: ErrMalformed, step: StepReceipt},
		{name: "extra receipt member", env: replace(`"tenant":"acme"`, `"tenant":"acme","tenant2":"x"`), keys: set(nil), want: ErrMalformed, step: StepReceipt},
		{name: "missing receipt member", env: replace(`"route":"invoices",`, ``), keys: set(nil), want: ErrMalformed, step: StepReceipt},
		{name: "null receipt member", env: replace(`"route":"invoices"`, `"route":null`), keys: set(nil), want: ErrMalformed, step: StepReceipt},
		{name: "raw size as string", env: replace(`"raw_size":36`, `"raw_size":"36"`), keys: set(nil), want: ErrMalformed, step: StepReceipt},
		{name: "raw size fractional", env: replace(`"raw_size":36`, `"raw_size":36.5`), keys: set(nil), want: ErrMalformed, step: StepReceipt},
		{name: "version 2", env: replace(`"v":1`, `"v":2`), keys: set(nil), want: ErrMalformed, step: StepReceipt},
		{name: "signed_at without microseconds", env: replace(testSignedAt, "2026-11-22T10:00:00Z"), keys: set(nil), want: ErrMalformed, step: StepReceipt},
		{name: "received_at garbage", env: replace(testReceivedAt, "yesterday"), keys: set(nil), want: ErrMalformed, step: StepReceipt},
		{name: "signature alg EdDSA", env: replace(`"alg":"Ed25519"`, `"alg":"EdDSA"`), keys: set(nil), want: ErrMalformed, step: StepSignature},
		{name: "signature with padding", env: func() []byte {
			var m map[string]json.RawMessage
			_ = json.Unmarshal(good, &m)
			var s Signature
			_ = json.Unmarshal(m["signature"], &s)
			return replace(s.Sig, s.Sig+"==")
		}(), keys: set(nil), want: ErrMalformed, step: StepSignature},
		{name: "signature truncated", env: replace(`","kid":"`+k.KID+`","sig":"`, `","kid":"`+k.KID+`","sig":"AA`), keys: set(nil), want: ErrMalformed, step: StepSignature},
		{name: "signature kid null", env: replace(`"kid":"`+k.KID+`","sig"`, `"kid":null,"sig"`), keys: set(nil), want: ErrMalformed, step: StepSignature},
		{name: "signature with a line break", env: func() []byte {
			var m map[string]json.RawMessage
			_ = json.Unmarshal(good, &m)
			var s Signature
			_ = json.Unmarshal(m["signature"], &s)
			return replace(s.Sig, s.Sig[:40]+`\r\n`+s.Sig[40:])
		}(), keys: set(nil), want: ErrMalformed, step: StepSignature},
		{name: "payload with a lossy number", env: replace(`"qty":2`, `"qty":2.0000000000000001`), keys: set(nil), want: ErrMalformed, step: StepEnvelope},
		{name: "signature extra member", env: replace(`"alg":"Ed25519"`, `"alg":"Ed25519","x5c":[]`), keys: set(nil), want: ErrMalformed, step: StepSignature},
		{name: "signature member in other case", env: replace(`"alg":"Ed25519"`, `"ALG":"Ed25519"`), keys: set(nil), want: ErrMalformed, step: StepSignature},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := Verify(tc.env, tc.keys)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if v.KeyID != k.KID || v.PayloadPresent == tc.noPaylod || v.Receipt.Tenant != "acme" {
					t.Fatalf("Verify = %+v", v)
				}
				return
			}
			if err == nil {
				t.Fatalf("Verify succeeded, want %v", tc.want)
			}
			var ve *VerifyError
			if !errors.As(err, &ve) {
				t.Fatalf("error %v is not a *VerifyError", err)
			}
			if ve.Err != tc.want || !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			if ve.Step != tc.step {
				t.Fatalf("step %q, want %q (%v)", ve.Step, tc.step, err)
			}
			if !strings.HasPrefix(err.Error(), "verify receipt: ") {
				t.Fatalf("error text %q", err)
			}
		})
	}
}

func TestVerifyTooLargeSaysSo(t *testing.T) {
	_, err := Verify(make([]byte, MaxEnvelopeSize+1), testKeySet(t))
	if !errors.Is(err, ErrTooLarge) || !errors.Is(err, ErrMalformed) {
		t.Fatalf("Verify of an oversized envelope: %v", err)
	}
	if _, err := Canonicalize(make([]byte, MaxDocumentSize+1)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Canonicalize of an oversized document: %v", err)
	}
}

func TestDigests(t *testing.T) {
	// SHA-256 of "" and of "abc" (FIPS 180-2), base64url without padding.
	if got := RawDigest(nil); got != "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU" {
		t.Errorf("RawDigest(empty) = %s", got)
	}
	if got := RawDigest([]byte("abc")); got != "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0" {
		t.Errorf("RawDigest(abc) = %s", got)
	}
	// The payload digest is taken over the canonical form, so formatting does
	// not change it.
	a, err := PayloadDigest([]byte(`{ "b": 1.0, "a": "x" }`))
	if err != nil {
		t.Fatal(err)
	}
	if b := RawDigest([]byte(`{"a":"x","b":1}`)); a != b {
		t.Errorf("PayloadDigest = %s, want %s", a, b)
	}
	if _, err := PayloadDigest(nil); err == nil {
		t.Error("PayloadDigest(nil) succeeded")
	}
}

// TestCanonicalizeSyntaxErrors: a document that is not JSON is refused
// with a message that names what is wrong and where, not the
// canonicalizer's internal terms.
func TestCanonicalizeSyntaxErrors(t *testing.T) {
	for _, c := range []struct{ doc, want string }{
		{`z"receipt":{}}`, `invalid character 'z' looking for beginning of value (byte 1)`},
		{`{"receipt":z}`, `invalid character 'z' looking for beginning of value (byte 12)`},
		{`{"a":1,}`, `invalid character '}' looking for beginning of object key string (byte 8)`},
		{`{"a":1`, `unexpected end of JSON input`},
	} {
		_, err := Canonicalize([]byte(c.doc))
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "non-ASCII") {
			t.Errorf("Canonicalize(%q) = %v, want an error saying %q", c.doc, err, c.want)
		}
	}
}

func TestTruncate(t *testing.T) {
	for _, c := range []struct {
		s    string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exactly10!", 10, "exactly10!"},
		{"abcdefghijk", 10, "abcdefg..."},
		{"ab", 2, "ab"},
		{"abc", 2, "ab"},
		{"héllo wörld", 8, "héll..."}, // "é" is 2 bytes: 5 bytes then "..."
		{"ééééé", 6, "é..."},          // never half a character
		{"abc", 0, ""},
	} {
		got := Truncate(c.s, c.n)
		if got != c.want || len(got) > max(c.n, 0) || !utf8.ValidString(got) {
			t.Errorf("Truncate(%q, %d) = %q, want %q", c.s, c.n, got, c.want)
		}
	}
}
