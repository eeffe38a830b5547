package signer

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gowebpki/jcs"
)

// The shared vectors in testdata/vectors are what the Go package and the
// receiver kits in signer/js and signer/python must all agree on. They are
// made here, from this package, with fixed keys and times (Ed25519 is
// deterministic), and each says what its outcome must be; the expectations
// are written by hand, not read back from Verify. Rewrite them with
//
//	go test ./signer -run TestGenerateVectors -update
//
// and TestSharedVectors runs them through the Go code.

// vectorExpect is the outcome a vector requires. A failure names the step
// and the error code (see errorCode); Cause is "lossy_number" when the
// failure is a number that does not survive a double.
type vectorExpect struct {
	OK             bool   `json:"ok"`
	Step           string `json:"step,omitempty"`
	Error          string `json:"error,omitempty"`
	Cause          string `json:"cause,omitempty"`
	ReceiptID      string `json:"receipt_id,omitempty"`
	KeyID          string `json:"key_id,omitempty"`
	PayloadPresent *bool  `json:"payload_present,omitempty"`
	// Output is the canonical form, for JCS vectors.
	Output string `json:"output,omitempty"`
	// KIDs are the key ids in document order, for key-set vectors.
	KIDs []string `json:"kids,omitempty"`
}

type receiptVector struct {
	Name           string       `json:"name"`
	Envelope       string       `json:"envelope,omitempty"`
	EnvelopeBase64 string       `json:"envelope_base64,omitempty"`
	KeySet         string       `json:"key_set"`
	Expect         vectorExpect `json:"expect"`
}

type webhookVector struct {
	Name             string            `json:"name"`
	Headers          map[string]string `json:"headers"`
	Body             string            `json:"body"`
	Now              int64             `json:"now"`
	ToleranceSeconds int               `json:"tolerance_seconds,omitempty"`
	KeySet           string            `json:"key_set,omitempty"`
	Secrets          []string          `json:"secrets,omitempty"`
	Expect           vectorExpect      `json:"expect"`
}

type jcsVector struct {
	Name        string       `json:"name"`
	Input       string       `json:"input,omitempty"`
	InputBase64 string       `json:"input_base64,omitempty"`
	Expect      vectorExpect `json:"expect"`
}

type keySetVector struct {
	Name     string       `json:"name"`
	Document string       `json:"document"`
	Expect   vectorExpect `json:"expect"`
}

type vectorFile[T any] struct {
	Description string            `json:"description"`
	KeySets     map[string]string `json:"key_sets,omitempty"`
	Cases       []T               `json:"cases"`
	// Numbers are [IEEE-754 bits in hex, JCS text] pairs, in jcs.json.
	Numbers [][2]string `json:"numbers,omitempty"`
}

// vectorFiles returns every vector file by name.
func vectorFiles(t *testing.T) map[string]any {
	g := newVectorGen(t)
	return map[string]any{
		"receipts.json": g.receipts(),
		"webhooks.json": g.webhooks(),
		"jcs.json":      g.jcs(),
		"keysets.json":  g.keySetDocs(),
	}
}

// TestGenerateVectors writes the vectors with -update; without it, it
// checks that the files are what this generator makes, so that they never
// drift from the Go package.
func TestGenerateVectors(t *testing.T) {
	for name, doc := range vectorFiles(t) {
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		if err := enc.Encode(doc); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join("testdata", "vectors", name)
		if *update {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		have, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run go test ./signer -run TestGenerateVectors -update)", err)
		}
		if !bytes.Equal(have, b.Bytes()) {
			t.Errorf("%s is not what the generator makes (run go test ./signer -run TestGenerateVectors -update)", path)
		}
	}
}

// vectorGen holds the keys and times the vectors are made with.
type vectorGen struct {
	t *testing.T
	// a signs 2026-10-01 to 2027-01-01 (the test key of the golden files),
	// b the quarter after, r is revoked, x is never published.
	a, b, r, x PrivateKey
	pubA       PublicKey
	pubB       PublicKey
	pubR       PublicKey
	keySets    map[string]string
}

func seedKey(t *testing.T, label string) PrivateKey {
	seed := sha256.Sum256([]byte(label))
	k, err := NewPrivateKeyFromSeed(seed[:])
	if err != nil {
		t.Fatal(err)
	}
	return k
}

const (
	vecSignedAt  = "2026-11-22T10:00:00.130001Z"
	vecRevokedAt = "2026-11-22T10:00:00.130001500Z" // nanoseconds: half a microsecond after vecSignedAt
	vecTS        = int64(1795341600)                // 2026-11-22T10:00:00Z, the first attempt
	vecRetryTS   = int64(1798876800)                // 2027-01-02T08:00:00Z, a retry after the rotation
	vecLateTS    = int64(1806652800)                // 2027-04-02T08:00:00Z, after key a left the JWKS
)

func newVectorGen(t *testing.T) *vectorGen {
	g := &vectorGen{t: t, a: testKey(t), x: otherKey(t),
		b: seedKey(t, "sealpost vectors key 2027Q1"), r: seedKey(t, "sealpost vectors revoked key")}
	g.pubA = testPublicKey(t, g.a)
	g.pubB = PublicKey{KID: g.b.KID, Key: g.b.Public(), Status: StatusNext,
		IssuedAt:   mustTime(t, "2026-12-18T00:00:00Z"),
		NotBefore:  mustTime(t, "2027-01-01T00:00:00Z"),
		SignsUntil: mustTime(t, "2027-04-01T00:00:00Z"),
		Expires:    mustTime(t, "2027-07-01T00:00:00Z"),
	}
	// r was revoked inside its window, as a key history that keeps the
	// scheduled window shows it.
	g.pubR = PublicKey{KID: g.r.KID, Key: g.r.Public(), Status: StatusRevoked,
		IssuedAt:   mustTime(t, "2026-09-17T00:00:00Z"),
		NotBefore:  mustTime(t, "2026-10-01T00:00:00Z"),
		SignsUntil: mustTime(t, "2027-01-01T00:00:00Z"),
		Expires:    mustTime(t, "2027-04-01T00:00:00Z"),
		RevokedAt:  mustTime(t, "2026-11-23T00:00:00Z"),
	}
	with := func(p PublicKey, status string) PublicKey { p.Status = status; return p }
	jwks := func(keys ...PublicKey) string {
		b, err := (&KeySet{Keys: keys}).MarshalJWKS()
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	history := func(keys ...PublicKey) string {
		b, err := (&KeySet{Keys: keys}).MarshalHistory()
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	revokedNow := g.pubR
	revokedNow.RevokedAt = mustTime(t, "2026-11-22T10:00:01Z")
	untimed := g.pubR
	untimed.RevokedAt = time.Time{}
	// NumericDate writes microseconds; the nanosecond revocation time is
	// spelled by hand, as a key history written elsewhere could.
	nsHistory := strings.Replace(history(revokedNow), `"revoked_at":1795341601`, `"revoked_at":1795341600.130001500`, 1)
	if !strings.Contains(nsHistory, "1795341600.130001500") {
		t.Fatal("no revoked_at to rewrite in the history")
	}
	g.keySets = map[string]string{
		// The JWKS in 2026Q4: a signs, b is published ahead.
		"jwks_2026q4": jwks(with(g.pubA, ""), with(g.pubB, "")),
		// The JWKS in 2027Q1: b signs, a is in its grace period.
		"jwks_2027q1": jwks(with(g.pubB, ""), with(g.pubA, "")),
		// A JWKS cached before b was published.
		"jwks_a_only": jwks(with(g.pubA, "")),
		// A JWKS fetched after a left it.
		"jwks_b_only": jwks(with(g.pubB, "")),
		// A JWKS with only the key that sealpost never published.
		"jwks_x_only": jwks(PublicKey{KID: g.x.KID, Key: g.x.Public()}),
		// The key history in 2027Q3: a expired, b in grace, r revoked.
		"history_2027q3": history(with(g.pubB, StatusGrace), with(g.pubA, StatusExpired), g.pubR),
		// The history with r revoked at 2026-11-22T10:00:00.1300015Z.
		"history_revoked_ns": nsHistory,
		// The history with r marked revoked but no revocation time.
		"history_revoked_untimed": history(untimed),
	}
	return g
}

// sign returns JCS of an envelope signed by k at signedAt.
func (g *vectorGen) sign(k PrivateKey, signedAt string, payload string, mutate func(*Receipt)) string {
	r := testReceipt()
	r.SignedAt = signedAt
	if mutate != nil {
		mutate(&r)
	}
	var p json.RawMessage
	if payload != "" {
		p = json.RawMessage(payload)
	}
	env, err := Sign(r, p, k)
	if err != nil {
		g.t.Fatalf("Sign: %v", err)
	}
	return string(env)
}

// edit replaces the first old in s with new, which must be there.
func (g *vectorGen) edit(s, old, new string) string {
	if !strings.Contains(s, old) {
		g.t.Fatalf("%q not found in %s", old, s)
	}
	return strings.Replace(s, old, new, 1)
}

func ok(receiptID, keyID string, payload bool) vectorExpect {
	return vectorExpect{OK: true, ReceiptID: receiptID, KeyID: keyID, PayloadPresent: &payload}
}

func fails(step, code string) vectorExpect { return vectorExpect{Step: step, Error: code} }

func lossy(step string) vectorExpect {
	return vectorExpect{Step: step, Error: "malformed", Cause: "lossy_number"}
}

// vectorPayload has what JCS implementations get wrong: members sorted by
// UTF-16 code units (U+1F602 before U+FB33), escapes, and numbers in ES6
// form.
const vectorPayload = `{"invoice": "2026-0042", "amount": 1234.50, "currency": "EUR",
	"lines": [{"sku": "A-1", "qty": 2}, {"sku": "B-7", "qty": 1}], "note": "caf\u00e9 <b>&</b>",
	"\ufb33": "dalet", "\ud83d\ude02": "smiley", "\u20ac": "euro", "\u0080": "control \u007f \u001f \u2028",
	"numbers": [9007199254740992, -0, 1e21, 1E-7, 0.000001, 4.50, 2e-3, 1e30, 5e-324, 1.7976931348623157e308]}`

func (g *vectorGen) receipts() vectorFile[receiptVector] {
	id := testReceipt().ID
	a, b, r, x := g.a, g.b, g.r, g.x
	good := g.sign(a, vecSignedAt, vectorPayload, nil)
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, []byte(good), "", "    "); err != nil {
		g.t.Fatal(err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal([]byte(good), &top); err != nil {
		g.t.Fatal(err)
	}
	withoutPayload := `{"receipt":` + string(top["receipt"]) + `,"signature":` + string(top["signature"]) + `}`
	var sig Signature
	if err := json.Unmarshal(top["signature"], &sig); err != nil {
		g.t.Fatal(err)
	}
	flipped := []byte(sig.Sig)
	if flipped[10] = 'A'; sig.Sig[10] == 'A' {
		flipped[10] = 'B'
	}
	if !strings.ContainsAny(sig.Sig, "-_") {
		g.t.Fatal("the signature has no base64url-only character; pick another payload")
	}
	byX := g.sign(x, vecSignedAt, vectorPayload, nil)
	var topX map[string]json.RawMessage
	_ = json.Unmarshal([]byte(byX), &topX)
	var sigX Signature
	_ = json.Unmarshal(topX["signature"], &sigX)
	wrongKey := g.edit(good, sig.Sig, sigX.Sig)

	cases := []receiptVector{
		{"valid", good, "", "jwks_2026q4", ok(id, a.KID, true)},
		{"valid, pretty-printed, with a member value escaped", g.edit(pretty.String(), `"tenant": "acme"`, `"tenant": "\u0061cme"`), "", "jwks_2026q4", ok(id, a.KID, true)},
		{"valid, members in another order", `{"signature":` + string(top["signature"]) + `,"receipt":` + string(top["receipt"]) + `,"payload":` + string(top["payload"]) + `}`, "", "jwks_2026q4", ok(id, a.KID, true)},
		{"valid without the payload", withoutPayload, "", "jwks_2026q4", ok(id, a.KID, false)},
		{"valid with a null source", g.sign(a, vecSignedAt, `{"n":1}`, func(r *Receipt) { r.Source = nil }), "", "jwks_2026q4", ok(id, a.KID, true)},
		{"valid with a string payload", g.sign(a, vecSignedAt, `"just text"`, nil), "", "jwks_2026q4", ok(id, a.KID, true)},
		{"valid during grace: the signing key left the active slot", good, "", "jwks_2027q1", ok(id, a.KID, true)},
		{"valid from the key history after the key left the JWKS", good, "", "history_2027q3", ok(id, a.KID, true)},
		{"valid at the window start", g.sign(a, "2026-10-01T00:00:00.000000Z", `{"n":1}`, nil), "", "jwks_2026q4", ok(id, a.KID, true)},
		{"valid just before the window end", g.sign(a, "2026-12-31T23:59:59.999999Z", `{"n":1}`, nil), "", "jwks_2026q4", ok(id, a.KID, true)},
		{"valid from a key signing in the next quarter", g.sign(b, "2027-02-01T12:00:00.000000Z", `{"n":1}`, nil), "", "jwks_2027q1", ok(id, b.KID, true)},
		{"valid: signed before its key was revoked", g.sign(r, vecSignedAt, `{"n":1}`, nil), "", "history_2027q3", ok(id, r.KID, true)},
		{"valid: signed 500ns before a revocation given in nanoseconds", g.sign(r, vecSignedAt, `{"n":1}`, nil), "", "history_revoked_ns", ok(id, r.KID, true)},

		{"tampered receipt", g.edit(good, `"tenant":"acme"`, `"tenant":"acmf"`), "", "jwks_2026q4", fails(StepSignature, "bad_signature")},
		{"tampered receipt time", g.edit(good, vecSignedAt, "2026-11-22T10:00:00.130002Z"), "", "jwks_2026q4", fails(StepSignature, "bad_signature")},
		{"tampered raw size", g.edit(good, `"raw_size":36`, `"raw_size":37`), "", "jwks_2026q4", fails(StepSignature, "bad_signature")},
		{"tampered signature", g.edit(good, sig.Sig, string(flipped)), "", "jwks_2026q4", fails(StepSignature, "bad_signature")},
		{"tampered payload", g.edit(good, `"qty":2`, `"qty":3`), "", "jwks_2026q4", fails(StepPayload, "payload_digest")},
		{"tampered payload key", g.edit(good, "\"\ufb33\"", "\"\ufb34\""), "", "jwks_2026q4", fails(StepPayload, "payload_digest")},
		{"payload null", `{"payload":null,` + good[len(`{"payload":`)+len(top["payload"])+1:], "", "jwks_2026q4", fails(StepPayload, "payload_digest")},
		{"wrong key: signed by a key that is not the kid's", wrongKey, "", "jwks_2026q4", fails(StepSignature, "bad_signature")},
		{"unknown key", byX, "", "jwks_2026q4", fails(StepKey, "unknown_key")},
		{"unknown key: the key set has left the key", good, "", "jwks_b_only", fails(StepKey, "unknown_key")},
		{"kid of the signature differs", g.edit(good, `"signature":{"alg":"Ed25519","kid":"`+a.KID, `"signature":{"alg":"Ed25519","kid":"`+b.KID), "", "jwks_2026q4", fails(StepKey, "key_mismatch")},
		{"outside the window: before nbf", g.sign(a, "2026-09-30T23:59:59.999999Z", `{"n":1}`, nil), "", "jwks_2026q4", fails(StepWindow, "outside_window")},
		{"outside the window: at signs_until", g.sign(a, "2027-01-01T00:00:00.000000Z", `{"n":1}`, nil), "", "jwks_2026q4", fails(StepWindow, "outside_window")},
		{"outside the window: during grace", g.sign(a, "2027-01-15T00:00:00.000000Z", `{"n":1}`, nil), "", "jwks_2027q1", fails(StepWindow, "outside_window")},
		{"outside the window: after exp", g.sign(a, "2027-05-01T00:00:00.000000Z", `{"n":1}`, nil), "", "history_2027q3", fails(StepWindow, "outside_window")},
		{"revoked: signed after the revocation", g.sign(r, "2026-11-23T01:00:00.000000Z", `{"n":1}`, nil), "", "history_2027q3", fails(StepRevoked, "revoked")},
		{"revoked: signed 500ns after a revocation given in nanoseconds", g.sign(r, "2026-11-22T10:00:00.130002Z", `{"n":1}`, nil), "", "history_revoked_ns", fails(StepRevoked, "revoked")},
		{"revoked: a key marked revoked without a time", g.sign(r, vecSignedAt, `{"n":1}`, nil), "", "history_revoked_untimed", fails(StepRevoked, "revoked")},

		{"malformed: not json", "receipt", "", "jwks_2026q4", fails(StepEnvelope, "malformed")},
		{"malformed: trailing data", good + " x", "", "jwks_2026q4", fails(StepEnvelope, "malformed")},
		{"malformed: two documents", good + good, "", "jwks_2026q4", fails(StepEnvelope, "malformed")},
		{"malformed: an array", "[" + good + "]", "", "jwks_2026q4", fails(StepEnvelope, "malformed")},
		{"malformed: duplicate receipt member", g.edit(good, `"tenant":"acme"`, `"tenant":"acme","tenant":"evil"`), "", "jwks_2026q4", fails(StepEnvelope, "malformed")},
		{"malformed: duplicate member after unescaping", g.edit(good, `"tenant":"acme"`, `"tenant":"acme","\u0074enant":"acme"`), "", "jwks_2026q4", fails(StepEnvelope, "malformed")},
		{"malformed: duplicate payload member", g.edit(good, `"qty":2`, `"qty":2,"qty":2`), "", "jwks_2026q4", fails(StepEnvelope, "malformed")},
		{"malformed: unknown envelope member", g.edit(good, `{"payload"`, `{"extra":1,"payload"`), "", "jwks_2026q4", fails(StepEnvelope, "malformed")},
		{"malformed: no signature", withoutPayload[:strings.Index(withoutPayload, `,"signature"`)] + "}", "", "jwks_2026q4", fails(StepEnvelope, "malformed")},
		{"malformed: lone surrogate in the payload", g.edit(good, `"note":"café`, `"note":"\ud800café`), "", "jwks_2026q4", fails(StepEnvelope, "malformed")},
		{"malformed: invalid utf-8 in the payload", "", base64.StdEncoding.EncodeToString([]byte(g.edit(good, "café", "caf\xe9"))), "jwks_2026q4", fails(StepEnvelope, "malformed")},
		{"malformed: control character in a string", g.edit(good, "café", "caf\t"), "", "jwks_2026q4", fails(StepEnvelope, "malformed")},
		{"malformed: lossy integer in the payload", g.edit(good, `"qty":2`, `"qty":12345678901234567890`), "", "jwks_2026q4", lossy(StepEnvelope)},
		{"malformed: the signed integer respelled with its lost digits", g.edit(g.sign(a, vecSignedAt, `{"order":12345678901234567000}`, nil), "12345678901234567000", "12345678901234567890"), "", "jwks_2026q4", lossy(StepEnvelope)},
		{"malformed: a double written with 17 digits", g.edit(good, `"amount":1234.5`, `"amount":1234.5000000000001`), "", "jwks_2026q4", lossy(StepEnvelope)},
		{"malformed: a number out of range", g.edit(good, `"qty":2`, `"qty":1e400`), "", "jwks_2026q4", lossy(StepEnvelope)},
		{"malformed: receipt is a string", `{"receipt":"{}","signature":` + string(top["signature"]) + `}`, "", "jwks_2026q4", fails(StepReceipt, "malformed")},
		{"malformed: receipt member in another case", g.edit(good, `"tenant":"acme"`, `"Tenant":"acme"`), "", "jwks_2026q4", fails(StepReceipt, "malformed")},
		{"malformed: extra receipt member", g.edit(good, `"tenant":"acme"`, `"tenant":"acme","tenant2":"x"`), "", "jwks_2026q4", fails(StepReceipt, "malformed")},
		{"malformed: missing receipt member", g.edit(good, `"route":"invoices",`, ``), "", "jwks_2026q4", fails(StepReceipt, "malformed")},
		{"malformed: null receipt member", g.edit(good, `"route":"invoices"`, `"route":null`), "", "jwks_2026q4", fails(StepReceipt, "malformed")},
		{"malformed: raw_size as a string", g.edit(good, `"raw_size":36`, `"raw_size":"36"`), "", "jwks_2026q4", fails(StepReceipt, "malformed")},
		{"malformed: raw_size with a fraction", g.edit(good, `"raw_size":36`, `"raw_size":36.0`), "", "jwks_2026q4", fails(StepReceipt, "malformed")},
		{"malformed: raw_size with an exponent", g.edit(good, `"raw_size":36`, `"raw_size":3.6e1`), "", "jwks_2026q4", fails(StepReceipt, "malformed")},
		{"malformed: raw_size beyond int64", g.edit(good, `"raw_size":36`, `"raw_size":10000000000000000000`), "", "jwks_2026q4", fails(StepReceipt, "malformed")},
		{"malformed: version 2", g.edit(good, `"v":1`, `"v":2`), "", "jwks_2026q4", fails(StepReceipt, "malformed")},
		{"malformed: version 1.0", g.edit(good, `"v":1`, `"v":1.0`), "", "jwks_2026q4", fails(StepReceipt, "malformed")},
		{"malformed: signed_at without microseconds", g.edit(good, vecSignedAt, "2026-11-22T10:00:00Z"), "", "jwks_2026q4", fails(StepReceipt, "malformed")},
		{"malformed: signed_at with an offset", g.edit(good, vecSignedAt, "2026-11-22T10:00:00.130001+00:00"), "", "jwks_2026q4", fails(StepReceipt, "malformed")},
		{"malformed: received_at on February 30", g.edit(good, "2026-11-22T10:00:00.123456Z", "2026-02-30T10:00:00.123456Z"), "", "jwks_2026q4", fails(StepReceipt, "malformed")},
		{"malformed: signed_at at second 60", g.edit(good, vecSignedAt, "2026-11-22T10:00:60.130001Z"), "", "jwks_2026q4", fails(StepReceipt, "malformed")},
		{"malformed: signature alg EdDSA", g.edit(good, `"alg":"Ed25519"`, `"alg":"EdDSA"`), "", "jwks_2026q4", fails(StepSignature, "malformed")},
		{"malformed: signature with padding", g.edit(good, sig.Sig, sig.Sig+"=="), "", "jwks_2026q4", fails(StepSignature, "malformed")},
		{"malformed: signature in standard base64", g.edit(good, sig.Sig, strings.NewReplacer("-", "+", "_", "/").Replace(sig.Sig)), "", "jwks_2026q4", fails(StepSignature, "malformed")},
		{"malformed: signature with a line break", g.edit(good, sig.Sig, sig.Sig[:40]+`\n`+sig.Sig[40:]), "", "jwks_2026q4", fails(StepSignature, "malformed")},
		{"malformed: signature truncated", g.edit(good, sig.Sig, sig.Sig[:80]), "", "jwks_2026q4", fails(StepSignature, "malformed")},
		{"malformed: signature kid null", g.edit(good, `"kid":"`+a.KID+`","sig"`, `"kid":null,"sig"`), "", "jwks_2026q4", fails(StepSignature, "malformed")},
		{"malformed: signature extra member", g.edit(good, `"alg":"Ed25519"`, `"alg":"Ed25519","x5c":[]`), "", "jwks_2026q4", fails(StepSignature, "malformed")},
	}
	return vectorFile[receiptVector]{
		Description: "Receipt envelopes to verify offline against key_sets[key_set]. expect.ok, or the failing step and error code.",
		KeySets:     g.keySets,
		Cases:       cases,
	}
}

// v1 is the Standard Webhooks symmetric signature, as the forwarder makes it.
func v1(t *testing.T, secret, id string, ts int64, body string) string {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		t.Fatal(err)
	}
	m := hmac.New(sha256.New, key)
	m.Write(webhookSigningInput(id, ts, []byte(body)))
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

func vecSecret(label string) string {
	sum := sha256.Sum256([]byte(label))
	return "whsec_" + base64.StdEncoding.EncodeToString(sum[:24])
}

func (g *vectorGen) webhooks() vectorFile[webhookVector] {
	t := g.t
	id := testReceipt().ID
	a, b, x := g.a, g.b, g.x
	s1, s2, s3 := vecSecret("vector secret 1"), vecSecret("vector secret 2"), vecSecret("vector secret 3")
	body := g.sign(a, vecSignedAt, vectorPayload, nil)
	ts := strconv.FormatInt(vecTS, 10)
	hdr := func(id, ts, sig string) map[string]string {
		return map[string]string{"webhook-id": id, "webhook-timestamp": ts, "webhook-signature": sig}
	}
	sigA := WebhookSignatureV1a(a, id, vecTS, []byte(body))
	sigX := WebhookSignatureV1a(x, id, vecTS, []byte(body))
	sig1 := v1(t, s1, id, vecTS, body)
	sig2 := v1(t, s2, id, vecTS, body)

	// A retry after the rotation: the receipt was signed by a in its
	// window, the attempt is signed by b (current) and a (grace).
	late := g.sign(a, "2026-12-31T23:59:59.500000Z", `{"n":1}`, nil)
	retryTS := strconv.FormatInt(vecRetryTS, 10)
	retrySig := WebhookSignatureV1a(b, id, vecRetryTS, []byte(late)) + " " + WebhookSignatureV1a(a, id, vecRetryTS, []byte(late))
	lateTS := strconv.FormatInt(vecLateTS, 10)
	lateOnlyA := WebhookSignatureV1a(a, id, vecLateTS, []byte(late))

	otherID := "rcpt_01JD7Q8ZK3V4M5N6P7Q8R9S0TB"
	byX := g.sign(x, vecSignedAt, `{"n":1}`, nil)
	lossyBody := g.edit(body, `"qty":2`, `"qty":12345678901234567890`)
	tampered := g.edit(body, `"qty":2`, `"qty":3`)
	// HTTP trims the spaces around a header value, so the long header is
	// long with entries.
	long := strings.Repeat(sigX+" ", MaxWebhookSignatureHeader/len(sigX)) + sigA

	okA := ok(id, a.KID, true)
	okHMAC := vectorExpect{OK: true}
	cases := []webhookVector{
		{"valid v1a", hdr(id, ts, sigA), body, vecTS + 10, 0, "jwks_2026q4", nil, okA},
		{"valid v1a and v1", hdr(id, ts, sigA+" "+sig1), body, vecTS + 10, 0, "jwks_2026q4", []string{s1}, okA},
		{"valid v1 only, without keys", hdr(id, ts, sig1), body, vecTS + 10, 0, "", []string{s1}, okHMAC},
		{"valid v1 by the second of two secrets (rotation overlap)", hdr(id, ts, sigA+" "+sig2+" "+sig1), body, vecTS + 10, 0, "", []string{s3, s2}, okHMAC},
		{"valid v1a among garbage and other keys' entries", hdr(id, ts, "v1a,!!!! v2,abc "+sigX+" v1a  "+sigA), body, vecTS + 10, 0, "jwks_2026q4", nil, okA},
		{"valid at the tolerance edge in the past", hdr(id, ts, sigA), body, vecTS + 300, 0, "jwks_2026q4", nil, okA},
		{"valid at the tolerance edge in the future", hdr(id, ts, sigA), body, vecTS - 300, 0, "jwks_2026q4", nil, okA},
		{"valid with a custom tolerance", hdr(id, ts, sigA), body, vecTS + 3000, 3600, "jwks_2026q4", nil, okA},
		{"during grace: a receiver with the JWKS from before the rotation", hdr(id, retryTS, retrySig), late, vecRetryTS + 1, 0, "jwks_a_only", nil, ok(id, a.KID, true)},
		{"during grace: a receiver with the current JWKS", hdr(id, retryTS, retrySig), late, vecRetryTS + 1, 0, "jwks_2027q1", nil, ok(id, a.KID, true)},
		{"during grace: the receipt's key left the receiver's key set", hdr(id, retryTS, retrySig), late, vecRetryTS + 1, 0, "jwks_b_only", nil, fails(StepKey, "unknown_key")},

		{"stale timestamp", hdr(id, ts, sigA), body, vecTS + 301, 0, "jwks_2026q4", nil, fails(StepTimestamp, "outside_tolerance")},
		{"timestamp in the future", hdr(id, ts, sigA), body, vecTS - 301, 0, "jwks_2026q4", nil, fails(StepTimestamp, "outside_tolerance")},
		{"tampered body", hdr(id, ts, sigA), tampered, vecTS + 10, 0, "jwks_2026q4", nil, fails(StepV1a, "bad_signature")},
		{"tampered body, v1 only", hdr(id, ts, sig1), tampered, vecTS + 10, 0, "", []string{s1}, fails(StepV1, "bad_signature")},
		{"tampered webhook-id", hdr(otherID, ts, sigA), body, vecTS + 10, 0, "jwks_2026q4", nil, fails(StepV1a, "bad_signature")},
		{"tampered webhook-timestamp", hdr(id, strconv.FormatInt(vecTS+1, 10), sigA), body, vecTS + 10, 0, "jwks_2026q4", nil, fails(StepV1a, "bad_signature")},
		{"v1a by a key not in the key set", hdr(id, ts, sigX), body, vecTS + 10, 0, "jwks_2026q4", nil, fails(StepV1a, "bad_signature")},
		{"no v1a where keys are given", hdr(id, ts, sig1), body, vecTS + 10, 0, "jwks_2026q4", []string{s1}, fails(StepV1a, "bad_signature")},
		{"no v1 where a secret is given", hdr(id, ts, sigA), body, vecTS + 10, 0, "jwks_2026q4", []string{s1}, fails(StepV1, "bad_signature")},
		{"v1 by another secret", hdr(id, ts, sigA+" "+sig2), body, vecTS + 10, 0, "jwks_2026q4", []string{s1}, fails(StepV1, "bad_signature")},
		{"v1a as v1", hdr(id, ts, "v1,"+strings.TrimPrefix(sigA, "v1a,")), body, vecTS + 10, 0, "jwks_2026q4", nil, fails(StepV1a, "bad_signature")},
		{"v1a without padding", hdr(id, ts, strings.TrimRight(sigA, "=")), body, vecTS + 10, 0, "jwks_2026q4", nil, fails(StepV1a, "bad_signature")},
		{"v1a by a key after its exp", hdr(id, lateTS, lateOnlyA), late, vecLateTS + 1, 0, "jwks_2026q4", nil, fails(StepV1a, "bad_signature")},
		{"v1a by a key before its nbf", hdr(id, ts, WebhookSignatureV1a(b, id, vecTS, []byte(body))), body, vecTS + 10, 0, "jwks_2026q4", nil, fails(StepV1a, "bad_signature")},
		{"webhook-id is not the receipt id", hdr(otherID, ts, WebhookSignatureV1a(a, otherID, vecTS, []byte(body))), body, vecTS + 10, 0, "jwks_2026q4", nil, fails(StepHeaders, "id_mismatch")},
		{"signed delivery of a receipt by an unknown key", hdr(id, ts, WebhookSignatureV1a(a, id, vecTS, []byte(byX))), byX, vecTS + 10, 0, "jwks_2026q4", nil, fails(StepKey, "unknown_key")},
		{"signed delivery of a body with a lossy number", hdr(id, ts, WebhookSignatureV1a(a, id, vecTS, []byte(lossyBody))), lossyBody, vecTS + 10, 0, "jwks_2026q4", nil, lossy(StepEnvelope)},
		{"no webhook-id", map[string]string{"webhook-timestamp": ts, "webhook-signature": sigA}, body, vecTS + 10, 0, "jwks_2026q4", nil, fails(StepHeaders, "malformed")},
		{"no webhook-signature", map[string]string{"webhook-id": id, "webhook-timestamp": ts}, body, vecTS + 10, 0, "jwks_2026q4", nil, fails(StepHeaders, "malformed")},
		{"timestamp with a sign", hdr(id, "+"+ts, sigA), body, vecTS + 10, 0, "jwks_2026q4", nil, fails(StepHeaders, "malformed")},
		{"timestamp in milliseconds", hdr(id, ts+"000", sigA), body, vecTS + 10, 0, "jwks_2026q4", nil, fails(StepHeaders, "malformed")},
		{"timestamp not a number", hdr(id, "yesterday", sigA), body, vecTS + 10, 0, "jwks_2026q4", nil, fails(StepHeaders, "malformed")},
		{"webhook-signature too long", hdr(id, ts, long), body, vecTS + 10, 0, "jwks_2026q4", nil, fails(StepHeaders, "malformed")},
		{"webhook-id too long", hdr(strings.Repeat("r", MaxWebhookIDLength+1), ts, sigA), body, vecTS + 10, 0, "jwks_2026q4", nil, fails(StepHeaders, "malformed")},
	}
	return vectorFile[webhookVector]{
		Description: "Webhook requests: headers (a missing header is absent), body, the receiver's clock now (unix seconds), " +
			"tolerance_seconds (default 300), the key set (v1a and the receipt are verified when given) and secrets (v1 is required when given).",
		KeySets: g.keySets,
		Cases:   cases,
	}
}

func (g *vectorGen) jcs() vectorFile[jcsVector] {
	canon := func(name, in, out string) jcsVector {
		return jcsVector{Name: name, Input: in, Expect: vectorExpect{OK: true, Output: out}}
	}
	bad := func(name, in string) jcsVector {
		return jcsVector{Name: name, Input: in, Expect: vectorExpect{Error: "malformed"}}
	}
	lossy := func(in string) jcsVector {
		return jcsVector{Name: "lossy " + in, Input: `{"n":` + in + `}`, Expect: vectorExpect{Error: "lossy_number"}}
	}
	cases := []jcsVector{
		canon("members sorted by UTF-16 code units", `{"\ufb33":1,"\ud83d\ude02":2,"\u20ac":3,"\u0080":4,"z":5,"":6,"A":7,"a":8}`,
			"{\"\":6,\"A\":7,\"a\":8,\"z\":5,\"\u0080\":4,\"\u20ac\":3,\"\U0001F602\":2,\"\ufb33\":1}"),
		canon("nested members sorted, arrays kept", `{"b":[3,1,{"d":1,"c":2}],"a":{"y":null,"x":true}}`, `{"a":{"x":true,"y":null},"b":[3,1,{"c":2,"d":1}]}`),
		canon("string escapes", `["\u0000\u001f\u007f\u2028\"\\\/\b\f\n\r\t\u00e9\uD83D\uDE02"]`,
			"[\"\\u0000\\u001f\u007f\u2028\\\"\\\\/\\b\\f\\n\\r\\t\u00e9\U0001F602\"]"),
		canon("literal utf-8 kept", "{\"caf\u00e9\":\"\u00e9\U0001F602\"}", "{\"caf\u00e9\":\"\u00e9\U0001F602\"}"),
		canon("whitespace dropped", " \t\r\n{ \"a\" : [ 1 , 2 ] }\n ", `{"a":[1,2]}`),
		canon("top-level string", `"x"`, `"x"`),
		canon("top-level number", `4.50`, `4.5`),
		canon("top-level literal", `null`, `null`),
		canon("empty containers", `[{},[],""]`, `[{},[],""]`),
		canon("deep nesting", strings.Repeat("[", 100)+strings.Repeat("]", 100), strings.Repeat("[", 100)+strings.Repeat("]", 100)),
		canon("numbers in ES6 form", `[1.0,-0,0.0,1e3,1E+2,4.50,2e-3,1e-7,0.000001,1e21,1e20,123456789012345680000,9007199254740992,-9007199254740992,5e-324,1.7976931348623157e308,0.30000000000000004,1E30,100000000000000000000000000000.000,1e0000000000000000001]`,
			`[1,0,0,1000,100,4.5,0.002,1e-7,0.000001,1e+21,100000000000000000000,123456789012345680000,9007199254740992,-9007199254740992,5e-324,1.7976931348623157e+308,0.30000000000000004,1e+30,1e+29,10]`),
		canon("digits in strings are text", `{"12345678901234567890":"12345678901234567890 1e400"}`, `{"12345678901234567890":"12345678901234567890 1e400"}`),

		lossy("12345678901234567890"), lossy("9007199254740993"), lossy("-9007199254740993"),
		lossy("12345678901234567890.0"), lossy("1.2345678901234567890e19"), lossy("0.10000000000000001"),
		lossy("333333333.33333329"), lossy("123456789012345678.9"), lossy("4e-324"), lossy("1e-400"),
		lossy("1e400"), lossy("-1E+309"), lossy("1e99999999999"),

		bad("empty", ``), bad("only whitespace", " \n"), bad("duplicate member", `{"a":1,"a":2}`),
		bad("duplicate member after unescaping", `{"a":1,"\u0061":2}`), bad("nested duplicate member", `[{"x":{"a":1,"a":1}}]`),
		bad("lone high surrogate", `"\ud800"`), bad("lone low surrogate", `"\udc00x"`), bad("reversed surrogates", `"\udc00\ud800"`),
		bad("control character in a string", "\"a\tb\""), bad("unknown escape", `"\x41"`), bad("short unicode escape", `"\u12"`),
		bad("trailing comma in an array", `[1,]`), bad("trailing comma in an object", `{"a":1,}`), bad("leading comma", `[,1]`),
		bad("trailing data", `{} {}`), bad("unterminated", `{"a":[1`), bad("single quotes", `{'a':1}`),
		bad("leading zero", `[01]`), bad("bare minus", `[-]`), bad("leading dot", `[.5]`), bad("trailing dot", `[1.]`),
		bad("plus sign", `[+1]`), bad("empty exponent", `[1e]`), bad("hex", `[0x10]`), bad("NaN", `[NaN]`), bad("Infinity", `[Infinity]`),
		bad("True", `[True]`), bad("byte order mark", "\ufeff{}"), bad("key not a string", `{1:2}`),
		{Name: "invalid utf-8", InputBase64: base64.StdEncoding.EncodeToString([]byte("[\"\xff\"]")), Expect: vectorExpect{Error: "malformed"}},
		{Name: "utf-8 encoded surrogate", InputBase64: base64.StdEncoding.EncodeToString([]byte("[\"\xed\xa0\x80\"]")), Expect: vectorExpect{Error: "malformed"}},
		{Name: "overlong utf-8", InputBase64: base64.StdEncoding.EncodeToString([]byte("[\"\xc0\xaf\"]")), Expect: vectorExpect{Error: "malformed"}},
	}
	return vectorFile[jcsVector]{
		Description: "JCS (RFC 8785) as sealpost applies it: input (or input_base64, bytes that are not UTF-8), and the canonical output " +
			"or the error: malformed, or lossy_number for a number whose value JCS would change. numbers: IEEE-754 doubles (hex bits) " +
			"and their JCS text, which must both format from and parse back to those bits.",
		Cases:   cases,
		Numbers: vectorNumbers(g.t),
	}
}

// vectorNumbers returns doubles and their JCS text: random bit patterns,
// which are mostly very large or very small, and random decimals of 1 to
// 17 digits, the numbers people write.
func vectorNumbers(t *testing.T) [][2]string {
	rnd := rand.New(rand.NewPCG(8785, 2026))
	var out [][2]string
	add := func(f float64) {
		s, err := jcs.NumberToJSON(f)
		if err != nil {
			return
		}
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], math.Float64bits(f))
		out = append(out, [2]string{hex.EncodeToString(b[:]), s})
	}
	for len(out) < 400 {
		add(math.Float64frombits(rnd.Uint64()))
	}
	for range 400 {
		digits := 1 + rnd.IntN(17)
		mant := strconv.FormatUint(rnd.Uint64N(uint64(math.Pow10(digits))), 10)
		f, err := strconv.ParseFloat(fmt.Sprintf("%se%d", mant, rnd.IntN(50)-25), 64)
		if err != nil {
			t.Fatal(err)
		}
		if rnd.IntN(2) == 0 {
			f = -f
		}
		add(f)
	}
	return out
}

func (g *vectorGen) keySetDocs() vectorFile[keySetVector] {
	a := g.a
	x := b64.EncodeToString(a.Public())
	base := `"kty":"OKP","crv":"Ed25519","x":"` + x + `","kid":"` + a.KID + `"`
	doc := func(members string) string { return `{"keys":[{` + base + members + `}]}` }
	good := func(name, document string, kids ...string) keySetVector {
		return keySetVector{Name: name, Document: document, Expect: vectorExpect{OK: true, KIDs: kids}}
	}
	bad := func(name, document string) keySetVector {
		return keySetVector{Name: name, Document: document, Expect: vectorExpect{Error: "invalid_key_set"}}
	}
	cases := []keySetVector{}
	for _, name := range []string{"jwks_2026q4", "jwks_2027q1", "history_2027q3", "history_revoked_ns"} {
		ks, err := ParseKeySet([]byte(g.keySets[name]))
		if err != nil {
			g.t.Fatal(err)
		}
		var kids []string
		for _, k := range ks.Keys {
			kids = append(kids, k.KID)
		}
		cases = append(cases, good(name, g.keySets[name], kids...))
	}
	cases = append(cases,
		good("minimal", doc(""), a.KID),
		good("empty", `{"keys":[]}`),
		good("RFC 8037 alg name", doc(`,"alg":"EdDSA"`), a.KID),
		good("unknown members ignored", `{"keys":[{`+base+`,"x5t":"abc","key_ops":["verify"]}],"issuer":"sealpost"}`, a.KID),
		good("empty use", doc(`,"use":""`), a.KID),
		good("dates with nine fractional digits", doc(`,"nbf":1.123456789,"revoked_at":1790812801.5`), a.KID),
		good("date zero", doc(`,"nbf":0`), a.KID),
		good("status grace", doc(`,"status":"grace"`), a.KID),
		bad("not json", `keys`),
		bad("trailing data", `{"keys":[]} x`),
		bad("duplicate member", `{"keys":[],"keys":[]}`),
		bad("duplicate member in a key", doc(`,"kid":"`+a.KID+`"`)),
		bad("no keys", `{"kty":"OKP"}`),
		bad("keys null", `{"keys":null}`),
		bad("keys an object", `{"keys":{}}`),
		bad("an array", `[{`+base+`}]`),
		bad("key not an object", `{"keys":[1]}`),
		bad("key null", `{"keys":[null]}`),
		bad("private key", doc(`,"d":"AAAA"`)),
		bad("wrong kty", strings.Replace(doc(""), `"OKP"`, `"EC"`, 1)),
		bad("wrong crv", strings.Replace(doc(""), `"Ed25519"`, `"X25519"`, 1)),
		bad("kty in another case", strings.Replace(doc(""), `"kty"`, `"KTY"`, 1)),
		bad("kid not the thumbprint", strings.Replace(doc(""), a.KID, g.x.KID, 1)),
		bad("kid a number", strings.Replace(doc(""), `"`+a.KID+`"`, `7`, 1)),
		bad("x padded", strings.Replace(doc(""), x, x+"=", 1)),
		bad("x short", strings.Replace(doc(""), x, x[:40], 1)),
		bad("x with a line break", strings.Replace(doc(""), x, x[:20]+`\n`+x[20:], 1)),
		bad("x in standard base64", strings.Replace(doc(""), x, strings.NewReplacer("-", "+", "_", "/").Replace(x)+"/", 1)),
		bad("wrong use", doc(`,"use":"enc"`)),
		bad("use null", doc(`,"use":null`)),
		bad("wrong alg", doc(`,"alg":"ES256"`)),
		bad("empty alg", doc(`,"alg":""`)),
		bad("unknown status", doc(`,"status":"retired"`)),
		bad("status null", doc(`,"status":null`)),
		bad("negative date", doc(`,"nbf":-1`)),
		bad("date with an exponent", doc(`,"exp":1.8e9`)),
		bad("date as a string", doc(`,"iat":"1789603200"`)),
		bad("date with ten fractional digits", doc(`,"nbf":1.0000000001`)),
		bad("date past 9999", doc(`,"signs_until":253402300800`)),
		bad("date with a lossy number", doc(`,"nbf":1790812800.12345678901`)),
		bad("window inverted", doc(`,"nbf":1790812800,"signs_until":1790812799`)),
		bad("duplicate kid", `{"keys":[{`+base+`},{`+base+`}]}`),
	)
	return vectorFile[keySetVector]{
		Description: "JWKS and key-history documents: the kids in order, or invalid_key_set.",
		Cases:       cases,
	}
}
