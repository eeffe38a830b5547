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
)

// MaxWebhookSignatureHeader is the longest webhook-signature header, in
// bytes, that VerifyWebhookV1a reads.
const MaxWebhookSignatureHeader = 8 << 10

// ErrWebhookSignature reports a webhook-signature header with no valid v1a
// signature for the given key.
var ErrWebhookSignature = errors.New("no valid v1a webhook signature")

// webhookSigningInput is the Standard Webhooks signed content:
// "{webhook-id}.{webhook-timestamp}.{body}".
func webhookSigningInput(msgID string, ts int64, body []byte) []byte {
	b := make([]byte, 0, len(msgID)+len(body)+22)
	b = append(b, msgID...)
	b = append(b, '.')
	b = strconv.AppendInt(b, ts, 10)
	b = append(b, '.')
	return append(b, body...)
}

// WebhookSignatureV1a returns one Standard Webhooks asymmetric signature,
// "v1a,<base64 std encoding of Ed25519 over msgID.ts.body>", for the
// webhook-signature header. It returns "" when key is not a valid key.
func WebhookSignatureV1a(key PrivateKey, msgID string, ts int64, body []byte) string {
	if len(key.Key) != ed25519.PrivateKeySize {
		return ""
	}
	sig := ed25519.Sign(key.Key, webhookSigningInput(msgID, ts, body))
	return "v1a," + base64.StdEncoding.EncodeToString(sig)
}

// VerifyWebhookV1a checks that header, a space-separated list of
// "<version>,<signature>" entries, holds at least one v1a signature by pub
// over msgID.ts.body. Entries of other versions (such as v1 HMAC) are
// skipped. Checking the timestamp's age is the caller's job.
func VerifyWebhookV1a(pub ed25519.PublicKey, msgID string, ts int64, body []byte, header string) error {
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("verify webhook signature: public key is %d bytes, want %d", len(pub), ed25519.PublicKeySize)
	}
	if len(header) > MaxWebhookSignatureHeader {
		return fmt.Errorf("verify webhook signature: %w: header is %d bytes, limit %d", ErrTooLarge, len(header), MaxWebhookSignatureHeader)
	}
	sigs := webhookSignatures(header, "v1a", ed25519.SignatureSize)
	if len(sigs) == 0 {
		return ErrWebhookSignature
	}
	input := webhookSigningInput(msgID, ts, body)
	for _, sig := range sigs {
		if ed25519.Verify(pub, input, sig) {
			return nil
		}
	}
	return ErrWebhookSignature
}

// webhookSignatures returns the decoded signatures of one version in a
// webhook-signature header: entries "<version>,<standard base64>" separated
// by ASCII whitespace (as the receiver kits split them). Entries of other
// versions, and entries that do not decode to size bytes, are skipped.
func webhookSignatures(header, version string, size int) [][]byte {
	var out [][]byte
	for _, entry := range strings.FieldsFunc(header, isASCIISpace) {
		v, sig64, ok := strings.Cut(entry, ",")
		if !ok || v != version {
			continue
		}
		sig, err := base64.StdEncoding.Strict().DecodeString(sig64)
		if err != nil || len(sig) != size {
			continue
		}
		out = append(out, sig)
	}
	return out
}

func isASCIISpace(r rune) bool {
	return r == ' ' || r == '\t' || r == '\n' || r == '\v' || r == '\f' || r == '\r'
}

// WebhookSignatureV1 returns one Standard Webhooks symmetric signature,
// "v1,<base64 std encoding of HMAC-SHA256 over msgID.ts.body>", keyed with
// the endpoint secret's key bytes (the base64 after "whsec_", decoded).
// HMAC-SHA256 with a random key of at least 16 bytes is a sound MAC;
// receivers must compare it in constant time (VerifyWebhookV1 does).
func WebhookSignatureV1(key []byte, msgID string, ts int64, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write(webhookSigningInput(msgID, ts, body))
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// ErrWebhookSignatureV1 reports a webhook-signature header with no valid v1
// signature for the given secret.
var ErrWebhookSignatureV1 = errors.New("no valid v1 webhook signature")

// VerifyWebhookV1 checks that header, a space-separated list of
// "<version>,<signature>" entries, holds at least one v1 signature made
// with key over msgID.ts.body. Entries of other versions (v1a) are skipped,
// and the comparison is constant-time. Checking the timestamp's age is the
// caller's job.
func VerifyWebhookV1(key []byte, msgID string, ts int64, body []byte, header string) error {
	if len(header) > MaxWebhookSignatureHeader {
		return fmt.Errorf("verify webhook signature: %w: header is %d bytes, limit %d", ErrTooLarge, len(header), MaxWebhookSignatureHeader)
	}
	want := []byte(WebhookSignatureV1(key, msgID, ts, body))
	for _, entry := range strings.Fields(header) {
		if hmac.Equal([]byte(entry), want) {
			return nil
		}
	}
	return ErrWebhookSignatureV1
}
