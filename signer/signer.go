// Package signer defines the sealpost receipt envelope, canonicalizes it with
// JCS (RFC 8785), signs it with Ed25519 and verifies it.
//
// The package depends only on the standard library and github.com/gowebpki/jcs,
// so a receiver of sealpost webhooks can import it alone to verify receipts
// against the keys sealpost publishes at /.well-known/jwks.json or /v1/keys.
package signer

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gowebpki/jcs"
)

// Alg is the signature algorithm named in every envelope and published key.
const Alg = "Ed25519"

// Version is the receipt format version this package writes and verifies.
const Version = 1

// TimeLayout is the layout of every time in a receipt: UTC, microseconds,
// always six fractional digits, so that equal instants have equal text.
const TimeLayout = "2006-01-02T15:04:05.000000Z"

// MaxDocumentSize is the largest JSON document, in bytes, that Canonicalize,
// PayloadDigest, Sign and Verify accept (64 MiB).
const MaxDocumentSize = 64 << 20

// MaxEnvelopeSize is the largest envelope, in bytes, that Verify accepts.
const MaxEnvelopeSize = MaxDocumentSize

// ErrTooLarge reports an input above its size limit.
var ErrTooLarge = errors.New("document too large")

// FormatTime renders t in UTC with TimeLayout, truncated to microseconds.
func FormatTime(t time.Time) string {
	return t.UTC().Format(TimeLayout)
}

// ParseTime parses a receipt time written with TimeLayout. It accepts only the
// exact form FormatTime writes: six fractional digits and a literal "Z".
func ParseTime(s string) (time.Time, error) {
	t, err := time.Parse(TimeLayout, s)
	if err != nil || FormatTime(t) != s {
		return time.Time{}, fmt.Errorf("time %q is not in the form %s", Truncate(s, maxErrText), TimeLayout)
	}
	return t, nil
}

// Receipt is the signed member of the envelope. Field names and JSON names are
// the ones in the "Receipt envelope (v1)" section of the design.
type Receipt struct {
	V             int             `json:"v"`
	ID            string          `json:"id"`
	KID           string          `json:"kid"`
	Tenant        string          `json:"tenant"`
	Route         string          `json:"route"`
	Channel       string          `json:"channel"`
	ReceivedAt    string          `json:"received_at"`
	SignedAt      string          `json:"signed_at"`
	Source        json.RawMessage `json:"source"`
	PayloadSHA256 string          `json:"payload_sha256"`
	RawSHA256     string          `json:"raw_sha256"`
	RawSize       int64           `json:"raw_size"`
}

// Signature is the signature member of the envelope.
type Signature struct {
	Alg string `json:"alg"`
	KID string `json:"kid"`
	Sig string `json:"sig"`
}

// Envelope is the whole receipt document: the webhook body, the stored receipt
// and what verification reads. Payload is nil when the receipt is shared
// without its payload.
type Envelope struct {
	Receipt   Receipt         `json:"receipt"`
	Payload   json.RawMessage `json:"payload,omitempty"`
	Signature Signature       `json:"signature"`
}

// PrivateKey is an Ed25519 signing key with its key id, the RFC 7638
// thumbprint of its public key.
type PrivateKey struct {
	KID string
	Key ed25519.PrivateKey
}

// NewPrivateKey copies k, so the caller may zero its own copy, and computes
// the key id. A k of the wrong length gives a PrivateKey that Sign rejects.
func NewPrivateKey(k ed25519.PrivateKey) PrivateKey {
	if len(k) != ed25519.PrivateKeySize {
		return PrivateKey{}
	}
	c := make(ed25519.PrivateKey, len(k))
	copy(c, k)
	return PrivateKey{KID: Thumbprint(c.Public().(ed25519.PublicKey)), Key: c}
}

// NewPrivateKeyFromSeed derives the signing key from a 32-byte RFC 8032 seed.
func NewPrivateKeyFromSeed(seed []byte) (PrivateKey, error) {
	if len(seed) != ed25519.SeedSize {
		return PrivateKey{}, fmt.Errorf("ed25519 seed is %d bytes, want %d", len(seed), ed25519.SeedSize)
	}
	return NewPrivateKey(ed25519.NewKeyFromSeed(seed)), nil
}

// Public returns the public half of k.
func (k PrivateKey) Public() ed25519.PublicKey {
	if len(k.Key) != ed25519.PrivateKeySize {
		return nil
	}
	return k.Key.Public().(ed25519.PublicKey)
}

// Zero overwrites the key material held by k.
func (k *PrivateKey) Zero() {
	clear(k.Key)
	k.Key = nil
}

// valid reports whether k holds a usable key whose KID matches it. Checking
// the KID on every signature is cheap and keeps a mislabeled key from ever
// producing receipts that name the wrong verification key.
func (k PrivateKey) valid() error {
	if len(k.Key) != ed25519.PrivateKeySize {
		return errors.New("signing key is not an ed25519 private key")
	}
	if k.KID == "" || k.KID != Thumbprint(k.Public()) {
		return errors.New("signing key id does not match its public key")
	}
	return nil
}

// Thumbprint returns the RFC 7638 thumbprint of an Ed25519 public key: the
// base64url (no padding) SHA-256 of {"crv":"Ed25519","kty":"OKP","x":"..."},
// the required OKP members in lexicographic order, as RFC 8037 section 2 says.
func Thumbprint(pub ed25519.PublicKey) string {
	var b bytes.Buffer
	b.WriteString(`{"crv":"Ed25519","kty":"OKP","x":"`)
	b.WriteString(b64.EncodeToString(pub))
	b.WriteString(`"}`)
	sum := sha256.Sum256(b.Bytes())
	return b64.EncodeToString(sum[:])
}

// b64 is base64url without padding, strict about trailing bits, so that one
// value has exactly one accepted text.
var b64 = base64.RawURLEncoding.Strict()

// Canonicalize returns the JCS (RFC 8785) form of doc. It rejects documents
// larger than MaxDocumentSize, invalid JSON, duplicate object members,
// trailing data, and numbers whose value JCS would change (ErrLossyNumber):
// no document is ever signed or verified with a number other than the one
// it carries.
func Canonicalize(doc []byte) ([]byte, error) {
	if len(doc) > MaxDocumentSize {
		return nil, fmt.Errorf("canonicalize: %w: %d bytes, limit %d", ErrTooLarge, len(doc), MaxDocumentSize)
	}
	if doc == nil {
		doc = []byte{}
	}
	out, err := jcs.Transform(doc)
	if lossy := checkNumbers(doc); lossy != nil {
		// Also when jcs failed: it refuses a number beyond a double's
		// range, which is a lossy number too.
		return nil, fmt.Errorf("canonicalize: %w", lossy)
	}
	if err != nil {
		// The canonicalizer reports a syntax error in its own terms (a
		// stray letter is an "unexpected non-ASCII character");
		// encoding/json names the character and where it is.
		var se *json.SyntaxError
		if jerr := json.Unmarshal(doc, new(json.RawMessage)); errors.As(jerr, &se) {
			return nil, fmt.Errorf("canonicalize: not valid JSON: %s (byte %d)", se.Error(), se.Offset)
		}
		return nil, fmt.Errorf("canonicalize: %s", lowerFirst(err.Error()))
	}
	return out, nil
}

// PayloadDigest returns base64url(SHA-256(JCS(payload))), the value of
// payload_sha256.
func PayloadDigest(payload []byte) (string, error) {
	c, err := Canonicalize(payload)
	if err != nil {
		return "", fmt.Errorf("payload digest: %w", err)
	}
	sum := sha256.Sum256(c)
	return b64.EncodeToString(sum[:]), nil
}

// RawDigest returns base64url(SHA-256(raw)), the value of raw_sha256.
func RawDigest(raw []byte) string {
	sum := sha256.Sum256(raw)
	return b64.EncodeToString(sum[:])
}

// Sign sets r.V to 1, r.KID to the key id of key and, when payload is not nil,
// r.PayloadSHA256 to PayloadDigest(payload). It signs JCS(receipt) and returns
// JCS(envelope), the exact webhook body. With a nil payload the envelope has
// no payload member and r.PayloadSHA256 must already hold the digest.
func Sign(r Receipt, payload json.RawMessage, key PrivateKey) ([]byte, error) {
	var canonPayload []byte
	if payload != nil {
		var err error
		if canonPayload, err = Canonicalize(payload); err != nil {
			return nil, fmt.Errorf("sign receipt: payload: %w", err)
		}
	}
	return SignCanonical(r, canonPayload, key)
}

// SignCanonical is Sign for a payload already in its JCS form, as
// Canonicalize returned it: it is not canonicalized again. The caller
// vouches for the form (sealpost canonicalizes a body when it accepts it
// and keeps it sealed until it signs); a payload that is not canonical
// yields an envelope that does not verify.
func SignCanonical(r Receipt, canonPayload []byte, key PrivateKey) ([]byte, error) {
	if err := key.valid(); err != nil {
		return nil, fmt.Errorf("sign receipt: %w", err)
	}
	r.V = Version
	r.KID = key.KID
	if canonPayload != nil {
		sum := sha256.Sum256(canonPayload)
		r.PayloadSHA256 = b64.EncodeToString(sum[:])
	}
	if err := checkReceipt(&r); err != nil {
		return nil, fmt.Errorf("sign receipt: %w", err)
	}
	source, err := Canonicalize(r.Source)
	if err != nil {
		return nil, fmt.Errorf("sign receipt: source: %w", err)
	}
	rc := appendReceiptJCS(make([]byte, 0, 512+len(source)), &r, source)
	sig := b64.EncodeToString(ed25519.Sign(key.Key, rc))

	// JCS of the envelope, assembled from canonical parts: its members sort
	// as payload < receipt < signature, every member value is already
	// canonical, and the signature's strings are base64url and a thumbprint,
	// which need no escaping. This spares a second parse of the payload;
	// TestGolden and the fuzz tests check it equals Canonicalize(envelope).
	var b bytes.Buffer
	b.Grow(len(canonPayload) + len(rc) + len(sig) + len(key.KID) + 64)
	b.WriteByte('{')
	if canonPayload != nil {
		b.WriteString(`"payload":`)
		b.Write(canonPayload)
		b.WriteByte(',')
	}
	b.WriteString(`"receipt":`)
	b.Write(rc)
	b.WriteString(`,"signature":{"alg":"` + Alg + `","kid":"` + key.KID + `","sig":"` + sig + `"}}`)
	return b.Bytes(), nil
}

// checkReceipt rejects receipts that Verify would refuse, so that sealpost
// never sends a receipt its customers cannot verify.
func checkReceipt(r *Receipt) error {
	if r.ID == "" {
		return errors.New("receipt id is empty")
	}
	for _, f := range []struct{ name, value string }{
		{"id", r.ID}, {"tenant", r.Tenant}, {"route", r.Route}, {"channel", r.Channel},
	} {
		// encoding/json would replace invalid bytes with U+FFFD and sign
		// something other than what the caller passed.
		if !utf8.ValidString(f.value) {
			return fmt.Errorf("%s is not valid utf-8", f.name)
		}
	}
	if _, err := ParseTime(r.SignedAt); err != nil {
		return fmt.Errorf("signed_at: %w", err)
	}
	if _, err := ParseTime(r.ReceivedAt); err != nil {
		return fmt.Errorf("received_at: %w", err)
	}
	if !isDigest(r.PayloadSHA256) {
		return errors.New("payload_sha256 is not a base64url sha-256 digest")
	}
	if !isDigest(r.RawSHA256) {
		return errors.New("raw_sha256 is not a base64url sha-256 digest")
	}
	if r.RawSize < 0 {
		return errors.New("raw_size is negative")
	}
	if len(r.Source) == 0 {
		r.Source = json.RawMessage("null")
	}
	if !json.Valid(r.Source) {
		return errors.New("source is not valid json")
	}
	return nil
}

// isDigest reports whether s is the base64url text of 32 bytes.
func isDigest(s string) bool {
	if len(s) != 43 {
		return false
	}
	b, err := decodeB64(s)
	return err == nil && len(b) == sha256.Size
}

// decodeB64 decodes base64url without padding. encoding/base64 skips CR and
// LF even in strict mode; they are refused here, so that one value has
// exactly one accepted text, as receivers in other languages expect.
func decodeB64(s string) ([]byte, error) {
	if strings.ContainsAny(s, "\r\n") {
		return nil, errors.New("base64url text contains a line break")
	}
	return b64.DecodeString(s)
}

// jsonString decodes raw, a JSON value, as a string. Unlike json.Unmarshal
// into a string it refuses null, which would otherwise read as "".
func jsonString(raw json.RawMessage) (string, bool) {
	t := bytes.TrimLeft(raw, " \t\r\n")
	if len(t) == 0 || t[0] != '"' {
		return "", false
	}
	var s string
	if err := json.Unmarshal(t, &s); err != nil {
		return "", false
	}
	return s, true
}

// Truncate returns s cut to at most n bytes, at a UTF-8 character
// boundary, with "..." added when it was cut (within the n bytes). It
// bounds untrusted text before it goes into error messages, logs and
// records; sealpost's packages share it.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const more = "..."
	suffix := more
	if n < len(more) {
		suffix = "" // no room to say it was cut
	}
	cut := max(n-len(suffix), 0)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + suffix
}

// maxErrText bounds untrusted text quoted in an error message.
const maxErrText = 43

// lowerFirst lowercases the first byte of an error text from jcs, which
// capitalizes its messages.
func lowerFirst(s string) string {
	if s != "" && s[0] >= 'A' && s[0] <= 'Z' {
		return string(s[0]+'a'-'A') + s[1:]
	}
	return s
}
