package signer

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// This file is the receiving end of a webhook, as the JavaScript and Python
// receiver kits (signer/js, signer/python) implement it too; the shared
// vectors in testdata/vectors hold all three to the same outcomes.

// DefaultWebhookTolerance is how far webhook-timestamp may lie from the
// receiver's clock, either way: the Standard Webhooks default.
const DefaultWebhookTolerance = 5 * time.Minute

// MaxWebhookIDLength is the longest webhook-id, in bytes, that VerifyWebhook
// accepts.
const MaxWebhookIDLength = 256

// Webhook verification outcomes. VerifyWebhook returns them in a
// *VerifyError, or the *VerifyError of Verify when the receipt in the body
// fails.
var (
	// ErrWebhookMalformed: a header is missing, too long or not in its form
	// (webhook-timestamp is 1 to 12 digits), or the body is too large.
	ErrWebhookMalformed = errors.New("malformed webhook request")
	// ErrWebhookTimestamp: webhook-timestamp is further from the clock than
	// the tolerance.
	ErrWebhookTimestamp = errors.New("webhook timestamp outside the tolerance")
	// ErrWebhookHMAC: no v1 entry is a valid HMAC with any of the secrets.
	ErrWebhookHMAC = errors.New("no valid v1 webhook signature")
	// ErrWebhookID: webhook-id differs from the id of the receipt in the body.
	ErrWebhookID = errors.New("webhook-id is not the receipt id")
)

// Webhook verification steps, as named in VerifyError.Step. Failures of the
// receipt in the body keep the steps of Verify.
const (
	StepHeaders   = "headers"
	StepTimestamp = "timestamp"
	StepV1a       = "v1a"
	StepV1        = "v1"
)

// webhookStep reports whether step belongs to the webhook, not the receipt.
func webhookStep(step string) bool {
	switch step {
	case StepHeaders, StepTimestamp, StepV1a, StepV1:
		return true
	}
	return false
}

// WebhookOptions says what VerifyWebhook requires of a request.
type WebhookOptions struct {
	// Keys are the published keys (the JWKS, or the key history). When set,
	// a v1a signature by one of them is required and the receipt in the
	// body is verified with Verify.
	Keys *KeySet
	// Secrets are the endpoint's whsec_ secrets. When any is set, a v1
	// signature by one of them is required.
	Secrets []string
	// Tolerance is how far webhook-timestamp may lie from Now, either way.
	// Default DefaultWebhookTolerance.
	Tolerance time.Duration
	// Now is the receiver's clock. Default time.Now().
	Now time.Time
}

// Webhook is a verified webhook request.
type Webhook struct {
	// ID is webhook-id: the receipt id, the same on every retry. Dedupe on it.
	ID string
	// Timestamp is webhook-timestamp: when this attempt was signed.
	Timestamp time.Time
	// Receipt is the verified receipt envelope of the body; nil when no
	// Keys were given.
	Receipt *Verified
}

// VerifyWebhook checks a Standard Webhooks request as sealpost sends it, in
// this order:
//
//  1. webhook-id is 1 to MaxWebhookIDLength bytes, webhook-timestamp 1 to 12
//     digits, webhook-signature present and at most
//     MaxWebhookSignatureHeader bytes, the body at most MaxEnvelopeSize;
//  2. webhook-timestamp lies within the tolerance of Now;
//  3. with Keys: a v1a entry is an Ed25519 signature over
//     "{id}.{timestamp}.{body}" by a key that could sign webhooks at the
//     timestamp: inside [nbf, exp) and before any revocation (the current
//     key and, in its grace period, the previous one);
//  4. with Secrets: a v1 entry is the HMAC-SHA256 of the same content with
//     one of the secrets (compared in constant time);
//  5. with Keys: the body verifies with Verify, and its receipt id is
//     webhook-id.
//
// A failure returns a *VerifyError. A bad option (no keys and no secrets, a
// secret not of the form whsec_<base64 of 16 to 64 bytes>) returns another
// error, which never contains the secret.
func VerifyWebhook(id, timestamp, signature string, body []byte, o WebhookOptions) (*Webhook, error) {
	if o.Keys == nil && len(o.Secrets) == 0 {
		return nil, errors.New("verify webhook: no keys and no secrets to verify with")
	}
	secrets := make([][]byte, 0, len(o.Secrets))
	defer func() {
		for _, k := range secrets {
			clear(k)
		}
	}()
	for i, s := range o.Secrets {
		k, err := webhookSecretKey(s)
		if err != nil {
			return nil, fmt.Errorf("verify webhook: secret %d: %w", i, err)
		}
		secrets = append(secrets, k)
	}
	if o.Tolerance <= 0 {
		o.Tolerance = DefaultWebhookTolerance
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}

	ts, err := parseWebhookHeaders(id, timestamp, signature, body)
	if err != nil {
		return nil, verr(StepHeaders, ErrWebhookMalformed, err)
	}
	at := time.Unix(ts, 0)
	if d := o.Now.Sub(at); d > o.Tolerance || d < -o.Tolerance {
		return nil, verr(StepTimestamp, ErrWebhookTimestamp,
			fmt.Errorf("webhook-timestamp %d is %s from the clock, tolerance %s", ts, d.Round(time.Second), o.Tolerance))
	}
	input := webhookSigningInput(id, ts, body)
	if o.Keys != nil && !verifyV1a(o.Keys, at, input, signature) {
		return nil, verr(StepV1a, ErrWebhookSignature, nil)
	}
	if len(secrets) > 0 && !verifyV1(secrets, input, signature) {
		return nil, verr(StepV1, ErrWebhookHMAC, nil)
	}
	w := &Webhook{ID: id, Timestamp: at.UTC()}
	if o.Keys == nil {
		return w, nil
	}
	if w.Receipt, err = Verify(body, o.Keys); err != nil {
		return nil, err
	}
	if w.Receipt.Receipt.ID != id {
		return nil, verr(StepHeaders, ErrWebhookID, nil)
	}
	return w, nil
}

// parseWebhookHeaders checks the forms of the headers and the body size and
// returns the timestamp.
func parseWebhookHeaders(id, timestamp, signature string, body []byte) (int64, error) {
	switch {
	case id == "":
		return 0, errors.New("no webhook-id")
	case len(id) > MaxWebhookIDLength:
		return 0, fmt.Errorf("webhook-id is longer than %d bytes", MaxWebhookIDLength)
	case timestamp == "" || len(timestamp) > 12 || !allDigits(timestamp):
		return 0, fmt.Errorf("webhook-timestamp %q is not 1 to 12 digits", Truncate(timestamp, maxErrText))
	case signature == "":
		return 0, errors.New("no webhook-signature")
	case len(signature) > MaxWebhookSignatureHeader:
		return 0, fmt.Errorf("%w: webhook-signature is %d bytes, limit %d", ErrTooLarge, len(signature), MaxWebhookSignatureHeader)
	case len(body) > MaxEnvelopeSize:
		return 0, fmt.Errorf("%w: body is %d bytes, limit %d", ErrTooLarge, len(body), MaxEnvelopeSize)
	}
	return strconv.ParseInt(timestamp, 10, 64)
}

// verifyV1a reports whether a v1a entry of header verifies over input with
// a key of keys that could sign webhooks at t.
func verifyV1a(keys *KeySet, t time.Time, input []byte, header string) bool {
	for _, sig := range webhookSignatures(header, "v1a", ed25519.SignatureSize) {
		for _, k := range keys.Keys {
			if len(k.Key) == ed25519.PublicKeySize && k.signsWebhooksAt(t) && ed25519.Verify(k.Key, input, sig) {
				return true
			}
		}
	}
	return false
}

// signsWebhooksAt reports whether k may have signed a webhook at t: sealpost
// signs with the current key and, during its grace period, with the
// previous key too, so from nbf until exp, and never from its revocation.
func (k PublicKey) signsWebhooksAt(t time.Time) bool {
	switch {
	case !k.NotBefore.IsZero() && t.Before(k.NotBefore),
		!k.Expires.IsZero() && !t.Before(k.Expires),
		!k.RevokedAt.IsZero() && !t.Before(k.RevokedAt),
		k.RevokedAt.IsZero() && k.Status == StatusRevoked:
		return false
	}
	return true
}

// verifyV1 reports whether a v1 entry of header is the HMAC-SHA256 of input
// under one of the keys. hmac.Equal compares in constant time, so the
// comparison tells an attacker nothing about the expected value.
func verifyV1(keys [][]byte, input []byte, header string) bool {
	sigs := webhookSignatures(header, "v1", sha256.Size)
	ok := false
	for _, key := range keys {
		m := hmac.New(sha256.New, key)
		m.Write(input)
		want := m.Sum(nil)
		for _, sig := range sigs {
			if hmac.Equal(sig, want) {
				ok = true
			}
		}
	}
	return ok
}

// webhookSecretKey decodes a Standard Webhooks secret, "whsec_" and the
// standard base64 of its key, as sealpost makes them: 16 to 64 bytes.
func webhookSecretKey(secret string) ([]byte, error) {
	enc, ok := strings.CutPrefix(secret, "whsec_")
	if !ok {
		return nil, errors.New("secret does not start with whsec_")
	}
	// Not Strict: sealpost's forwarder and the Standard Webhooks libraries
	// accept any padded standard base64.
	key, err := base64.StdEncoding.DecodeString(enc)
	if err != nil || strings.ContainsAny(enc, "\r\n") || len(key) < 16 || len(key) > 64 {
		clear(key)
		return nil, errors.New("secret is not whsec_ and the base64 of 16 to 64 bytes")
	}
	return key, nil
}
