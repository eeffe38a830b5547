package signer

import (
	"bytes"
	"crypto/ed25519"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Verification outcomes. A failed Verify returns a *VerifyError whose Err is
// exactly one of these.
var (
	// ErrMalformed: the envelope is not a well-formed v1 receipt envelope
	// (bad JSON, duplicate members, trailing data, missing or extra members,
	// wrong types, bad times or encodings, too large).
	ErrMalformed = errors.New("malformed envelope")
	// ErrUnknownKey: no key with the receipt's kid is in the key set.
	ErrUnknownKey = errors.New("unknown signing key")
	// ErrKeyMismatch: the kid in the receipt differs from the kid in the
	// signature.
	ErrKeyMismatch = errors.New("receipt and signature name different keys")
	// ErrOutsideWindow: signed_at lies outside the key's signing window.
	ErrOutsideWindow = errors.New("signed outside the key's signing window")
	// ErrRevoked: the key was revoked at or before signed_at.
	ErrRevoked = errors.New("signing key revoked")
	// ErrBadSignature: the Ed25519 signature over JCS(receipt) is invalid.
	ErrBadSignature = errors.New("bad signature")
	// ErrPayloadDigest: the payload does not match payload_sha256.
	ErrPayloadDigest = errors.New("payload does not match payload_sha256")
)

// VerifyError says which step of verification failed. Err is one of the
// sentinel errors above; Cause, when set, carries the detail.
type VerifyError struct {
	Step  string
	Err   error
	Cause error
}

func (e *VerifyError) Error() string {
	what := "verify receipt"
	if webhookStep(e.Step) {
		what = "verify webhook"
	}
	if e.Cause != nil {
		return fmt.Sprintf("%s: %s: %v: %v", what, e.Step, e.Err, e.Cause)
	}
	return fmt.Sprintf("%s: %s: %v", what, e.Step, e.Err)
}

// Unwrap returns the sentinel and the cause, for errors.Is and errors.As.
func (e *VerifyError) Unwrap() []error {
	if e.Cause != nil {
		return []error{e.Err, e.Cause}
	}
	return []error{e.Err}
}

// Verification steps, as named in VerifyError.Step.
const (
	StepEnvelope  = "envelope"
	StepReceipt   = "receipt"
	StepSignature = "signature"
	StepKey       = "key"
	StepWindow    = "window"
	StepRevoked   = "revocation"
	StepPayload   = "payload"
)

// Verified is the outcome of a successful Verify.
type Verified struct {
	Receipt Receipt
	// KeyID is the kid of the key that verified the signature.
	KeyID string
	// PayloadPresent is true when the envelope carried a payload and it
	// matched payload_sha256. When false, only the receipt was verified.
	PayloadPresent bool
}

func verr(step string, sentinel error, cause error) error {
	return &VerifyError{Step: step, Err: sentinel, Cause: cause}
}

// Verify checks a receipt envelope, in this order:
//
//  1. the envelope is at most MaxEnvelopeSize bytes of JSON without duplicate
//     members or trailing data, an object with exactly the members
//     "receipt", "signature" and optionally "payload";
//  2. the receipt is an object with exactly the v1 members and types, v is 1,
//     signed_at and received_at use TimeLayout;
//  3. the signature has alg "Ed25519" and a 64-byte base64url sig;
//  4. the kid in the receipt equals the kid in the signature;
//  5. the kid is in keys;
//  6. signed_at lies inside the key's signing window [NotBefore, SignsUntil]
//     (a zero SignsUntil leaves the window open);
//  7. the key was not revoked at or before signed_at;
//  8. the Ed25519 signature is valid over JCS of the receipt member exactly
//     as received (never re-marshaled);
//  9. when a payload is present, payload_sha256 equals
//     base64url(SHA-256(JCS(payload))).
//
// A failure returns a *VerifyError.
func Verify(envelope []byte, keys *KeySet) (*Verified, error) {
	if len(envelope) > MaxEnvelopeSize {
		return nil, verr(StepEnvelope, ErrMalformed,
			fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(envelope), MaxEnvelopeSize))
	}
	// One pass through the canonicalizer validates the whole document:
	// JSON syntax, UTF-8, duplicate members at any depth, trailing data.
	if _, err := Canonicalize(envelope); err != nil {
		return nil, verr(StepEnvelope, ErrMalformed, err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(envelope, &top); err != nil || top == nil {
		return nil, verr(StepEnvelope, ErrMalformed, errors.New("envelope is not a json object"))
	}
	rawReceipt, ok := top["receipt"]
	if !ok {
		return nil, verr(StepEnvelope, ErrMalformed, errors.New("no \"receipt\" member"))
	}
	rawSig, ok := top["signature"]
	if !ok {
		return nil, verr(StepEnvelope, ErrMalformed, errors.New("no \"signature\" member"))
	}
	payload, hasPayload := top["payload"]
	for name := range top {
		switch name {
		case "receipt", "signature", "payload":
		default:
			return nil, verr(StepEnvelope, ErrMalformed, fmt.Errorf("unknown member %q", Truncate(name, maxErrText)))
		}
	}

	receiptJCS, r, err := parseReceipt(rawReceipt)
	if err != nil {
		return nil, verr(StepReceipt, ErrMalformed, err)
	}
	signedAt, err := ParseTime(r.SignedAt)
	if err != nil {
		return nil, verr(StepReceipt, ErrMalformed, fmt.Errorf("signed_at: %w", err))
	}

	sigObj, sig, err := parseSignature(rawSig)
	if err != nil {
		return nil, verr(StepSignature, ErrMalformed, err)
	}
	if r.KID != sigObj.KID {
		return nil, verr(StepKey, ErrKeyMismatch, nil)
	}
	key, ok := keys.Lookup(r.KID)
	if !ok || len(key.Key) != ed25519.PublicKeySize {
		return nil, verr(StepKey, ErrUnknownKey, fmt.Errorf("kid %q", Truncate(r.KID, maxErrText)))
	}
	if !key.NotBefore.IsZero() && signedAt.Before(key.NotBefore) {
		return nil, verr(StepWindow, ErrOutsideWindow,
			fmt.Errorf("signed_at %s is before the key's window opens at %s", r.SignedAt, FormatTime(key.NotBefore)))
	}
	if !key.SignsUntil.IsZero() && !signedAt.Before(key.SignsUntil) {
		// The window is [nbf, signs_until): at signs_until the next key signs.
		return nil, verr(StepWindow, ErrOutsideWindow,
			fmt.Errorf("signed_at %s is not before the key's window closed at %s", r.SignedAt, FormatTime(key.SignsUntil)))
	}
	if !key.RevokedAt.IsZero() && !signedAt.Before(key.RevokedAt) {
		return nil, verr(StepRevoked, ErrRevoked,
			fmt.Errorf("key revoked at %s, receipt signed at %s", FormatTime(key.RevokedAt), r.SignedAt))
	}
	if key.RevokedAt.IsZero() && key.Status == StatusRevoked {
		// A key marked revoked without a time cannot vouch for anything.
		return nil, verr(StepRevoked, ErrRevoked, errors.New("key is revoked and its revocation time is unknown"))
	}
	if !ed25519.Verify(key.Key, receiptJCS, sig) {
		return nil, verr(StepSignature, ErrBadSignature, nil)
	}
	if hasPayload {
		d, err := PayloadDigest(payload)
		if err != nil {
			return nil, verr(StepPayload, ErrMalformed, err)
		}
		if subtle.ConstantTimeCompare([]byte(d), []byte(r.PayloadSHA256)) != 1 {
			return nil, verr(StepPayload, ErrPayloadDigest, nil)
		}
	}
	return &Verified{Receipt: r, KeyID: key.KID, PayloadPresent: hasPayload}, nil
}

// parseReceipt returns JCS of the receipt member as received and its decoded
// form. It checks that the decoded Receipt says exactly what the signed bytes
// say: re-encoding it must give the same canonical document, which rules out
// missing, extra or differently spelled members (encoding/json matches names
// case-insensitively) and values that do not fit their types.
func parseReceipt(raw json.RawMessage) ([]byte, Receipt, error) {
	var r Receipt
	if t := bytes.TrimLeft(raw, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return nil, r, errors.New("receipt is not a json object")
	}
	canon, err := Canonicalize(raw)
	if err != nil {
		return nil, r, err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return nil, r, fmt.Errorf("receipt does not match the v1 format: %w", err)
	}
	again, err := json.Marshal(r)
	if err != nil {
		return nil, r, err
	}
	againCanon, err := Canonicalize(again)
	if err != nil {
		return nil, r, err
	}
	if !bytes.Equal(canon, againCanon) {
		return nil, r, errors.New("receipt members do not match the v1 format")
	}
	if r.V != Version {
		return nil, r, fmt.Errorf("receipt version %d is not %d", r.V, Version)
	}
	if _, err := ParseTime(r.ReceivedAt); err != nil {
		return nil, r, fmt.Errorf("received_at: %w", err)
	}
	r.Source = bytes.Clone(r.Source)
	return canon, r, nil
}

// parseSignature decodes the signature member by exact member names.
func parseSignature(raw json.RawMessage) (Signature, []byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return Signature{}, nil, errors.New("signature is not a json object")
	}
	var s Signature
	for name, dst := range map[string]*string{"alg": &s.Alg, "kid": &s.KID, "sig": &s.Sig} {
		v, ok := m[name]
		if !ok {
			return Signature{}, nil, fmt.Errorf("signature has no %q member", name)
		}
		if *dst, ok = jsonString(v); !ok {
			return Signature{}, nil, fmt.Errorf("signature %q is not a string", name)
		}
	}
	if len(m) != 3 {
		return Signature{}, nil, errors.New("signature has unknown members")
	}
	if s.Alg != Alg {
		return Signature{}, nil, fmt.Errorf("signature alg %q is not %q", Truncate(s.Alg, maxErrText), Alg)
	}
	sig, err := decodeB64(s.Sig)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return Signature{}, nil, errors.New("sig is not 64 bytes of base64url without padding")
	}
	return s, sig, nil
}

// SignedAt returns the signing time of the verified receipt.
func (v *Verified) SignedAt() time.Time {
	t, _ := ParseTime(v.Receipt.SignedAt)
	return t
}
