package signer

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

func TestWebhookV1a(t *testing.T) {
	k, o := testKey(t), otherKey(t)
	const msgID = "rcpt_01JD7Q8ZK3V4M5N6P7Q8R9S0TA"
	const ts = int64(1795341600)
	body := []byte(`{"receipt":{}}`)

	sig := WebhookSignatureV1a(k, msgID, ts, body)
	if !strings.HasPrefix(sig, "v1a,") {
		t.Fatalf("signature %q lacks the v1a prefix", sig)
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(sig, "v1a,"))
	if err != nil || len(raw) != ed25519.SignatureSize {
		t.Fatalf("signature is not 64 bytes of standard base64: %v", err)
	}
	// The signed content is exactly "{id}.{timestamp}.{body}".
	if !ed25519.Verify(k.Public(), []byte(msgID+".1795341600."+string(body)), raw) {
		t.Fatal("signature is not over id.timestamp.body")
	}
	otherSig := WebhookSignatureV1a(o, msgID, ts, body)
	hmac := "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4="

	for _, tc := range []struct {
		name   string
		pub    ed25519.PublicKey
		id     string
		ts     int64
		body   string
		header string
		ok     bool
	}{
		{"valid", k.Public(), msgID, ts, string(body), sig, true},
		{"valid among others", k.Public(), msgID, ts, string(body), hmac + " " + otherSig + "  " + sig, true},
		{"previous key during grace", o.Public(), msgID, ts, string(body), sig + " " + otherSig, true},
		{"other key only", k.Public(), msgID, ts, string(body), otherSig, false},
		{"changed body", k.Public(), msgID, ts, `{"receipt":{ }}`, sig, false},
		{"changed id", k.Public(), msgID + "x", ts, string(body), sig, false},
		{"changed timestamp", k.Public(), msgID, ts + 1, string(body), sig, false},
		{"v1 prefix", k.Public(), msgID, ts, string(body), "v1," + strings.TrimPrefix(sig, "v1a,"), false},
		{"empty header", k.Public(), msgID, ts, string(body), "", false},
		{"garbage", k.Public(), msgID, ts, string(body), "v1a,!!!! v1a v1a,", false},
		{"unpadded base64", k.Public(), msgID, ts, string(body), strings.TrimRight(sig, "="), false},
		{"header too long", k.Public(), msgID, ts, string(body), sig + strings.Repeat(" ", MaxWebhookSignatureHeader), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := VerifyWebhookV1a(tc.pub, tc.id, tc.ts, []byte(tc.body), tc.header)
			if tc.ok && err != nil {
				t.Fatalf("VerifyWebhookV1a: %v", err)
			}
			if !tc.ok && err == nil {
				t.Fatal("VerifyWebhookV1a succeeded")
			}
		})
	}
	if err := VerifyWebhookV1a(k.Public(), msgID, ts, body, otherSig); !errors.Is(err, ErrWebhookSignature) {
		t.Fatalf("error %v, want ErrWebhookSignature", err)
	}
	if err := VerifyWebhookV1a(k.Public()[:5], msgID, ts, body, sig); err == nil {
		t.Fatal("short public key accepted")
	}
	if got := WebhookSignatureV1a(PrivateKey{}, msgID, ts, body); got != "" {
		t.Fatalf("signature with no key = %q", got)
	}
}

// TestWebhookV1 checks the v1 HMAC signature against the Standard Webhooks
// reference library, which verifies it, and VerifyWebhookV1 against the
// usual ways a header can be wrong.
func TestWebhookV1(t *testing.T) {
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		t.Fatal(err)
	}
	const msgID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	ts := time.Now().Unix()
	body := []byte(`{"test": 2432232314}`)
	sig := WebhookSignatureV1(key, msgID, ts, body)
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	h.Set("webhook-id", msgID)
	h.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	h.Set("webhook-signature", sig)
	if err := wh.Verify(body, h); err != nil {
		t.Fatalf("the reference library refuses %q: %v", sig, err)
	}
	other := WebhookSignatureV1([]byte("another key of 16+ bytes"), msgID, ts, body)
	v1a := WebhookSignatureV1a(testKey(t), msgID, ts, body)
	for _, c := range []struct {
		name, header string
		body         []byte
		ok           bool
	}{
		{"valid", sig, body, true},
		{"among others", v1a + " " + other + " " + sig, body, true},
		{"other key", other, body, false},
		{"changed body", sig, []byte(`{"test": 2432232315}`), false},
		{"v1a prefix", "v1a," + strings.TrimPrefix(sig, "v1,"), body, false},
		{"empty", "", body, false},
		{"too long", sig + strings.Repeat(" ", MaxWebhookSignatureHeader), body, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := VerifyWebhookV1(key, msgID, ts, c.body, c.header)
			if c.ok != (err == nil) {
				t.Fatalf("VerifyWebhookV1 = %v, want ok %v", err, c.ok)
			}
		})
	}
}
