package forwarder

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/sealpost/sealpost/signer"
)

func TestGenerateSecret(t *testing.T) {
	a, err := GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := GenerateSecret()
	key, err := secretKey(a)
	if err != nil || len(key) != 24 || a == b || !strings.HasPrefix(a, "whsec_") {
		t.Errorf("GenerateSecret() = %q (key %d bytes, %v)", a, len(key), err)
	}
}

// TestV1InteropStandardWebhooks: the Standard Webhooks reference library
// verifies our v1 signatures, for both secrets during a rotation's overlap
// and only for the new one after it.
func TestV1InteropStandardWebhooks(t *testing.T) {
	e := newEnv(t, nil) // real clock: the library checks the timestamp against time.Now
	rc := newReceiver(t, nil)
	configured, _ := GenerateSecret()
	e.route("invoices", rc, func(r *Route) { r.Endpoint.Secrets = []Secret{{Value: configured}} })
	ctx := context.Background()
	rotated, err := e.w.RotateSecret(ctx, "acme", "invoices", DefaultEndpoint, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	rotatedAgain, err := e.w.RotateSecret(ctx, "acme", "invoices", DefaultEndpoint, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	e.handle(ctx, submission(t, "invoices"), &fakeDelivery{})
	r := rc.requests()[0]
	for name, secret := range map[string]string{"configured": configured, "rotated": rotated, "rotated again": rotatedAgain} {
		wh, err := standardwebhooks.NewWebhook(secret)
		if err != nil {
			t.Fatal(err)
		}
		if err := wh.Verify(r.body, r.header); err != nil {
			t.Errorf("%s secret: %v", name, err)
		}
	}
	other, _ := GenerateSecret()
	wh, _ := standardwebhooks.NewWebhook(other)
	if err := wh.Verify(r.body, r.header); err == nil {
		t.Error("an unrelated secret verified")
	}
	// After the overlap only the newest stored secret (and the configured
	// one, which has no end) sign.
	e.w.cfg.Now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	stored, err := e.w.secretsFor(ctx, "acme", "invoices", Endpoint{}, e.w.cfg.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(stored) != 1 || stored[0].Value != rotatedAgain {
		t.Errorf("after the overlap %d stored secrets sign, want only the newest", len(stored))
	}
}

func TestRotateSecretInput(t *testing.T) {
	e := newEnv(t, nil)
	e.routes.set(Route{Tenant: "acme", Name: "r", Endpoint: Endpoint{URL: "https://hooks.example.com/"}})
	ctx := context.Background()
	for _, tc := range []struct {
		tenant, route string
		overlap       time.Duration
		want          error
	}{
		{"acme", "nope", 0, ErrUnknownRoute},
		{"", "r", 0, ErrInvalidInput},
		{"acme", "r.x", 0, ErrInvalidInput},
		{"acme", "r", -time.Second, ErrInvalidInput},
		{"acme", "r", MaxSecretOverlap + time.Second, ErrInvalidInput},
	} {
		if _, err := e.w.RotateSecret(ctx, tc.tenant, tc.route, DefaultEndpoint, tc.overlap); !errors.Is(err, tc.want) {
			t.Errorf("RotateSecret(%q, %q, %s) = %v, want %v", tc.tenant, tc.route, tc.overlap, err, tc.want)
		}
	}
	// The secret is stored sealed: its bytes are not in the bucket.
	s, err := e.w.RotateSecret(ctx, "acme", "r", DefaultEndpoint, 0)
	if err != nil {
		t.Fatal(err)
	}
	raw, _, err := e.cfg.EndpointState.Get(ctx, secretsKey("acme", "r", DefaultEndpoint))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), strings.TrimPrefix(s, "whsec_")) {
		t.Error("secret stored in the clear")
	}
}

// TestV1aWithPreviousKey: during the grace period both keys sign.
func TestV1aWithPreviousKey(t *testing.T) {
	e := newEnv(t, nil)
	e.keys.previous = []signer.PrivateKey{testKey(t, "previous")}
	rc := newReceiver(t, nil)
	e.route("invoices", rc, nil)
	s := submission(t, "invoices")
	e.handle(context.Background(), s, &fakeDelivery{})
	r := rc.requests()[0]
	sig := r.header.Get("webhook-signature")
	if n := strings.Count(sig, "v1a,"); n != 2 || strings.Contains(sig, "v1,") {
		t.Fatalf("signature header %q: want two v1a and no v1", sig)
	}
	ts, _ := strconv.ParseInt(r.header.Get("webhook-timestamp"), 10, 64)
	for _, k := range []signer.PrivateKey{e.keys.current, e.keys.previous[0]} {
		if err := signer.VerifyWebhookV1a(k.Public(), s.ID, ts, r.body, sig); err != nil {
			t.Errorf("key %s: %v", k.KID, err)
		}
	}
}

// interop skips when a tool is missing, unless SEALPOST_REQUIRE_INTEROP=1.
func interop(t *testing.T, err error, what string) {
	t.Helper()
	if err == nil {
		return
	}
	if os.Getenv("SEALPOST_REQUIRE_INTEROP") == "1" {
		t.Fatalf("%s required (SEALPOST_REQUIRE_INTEROP=1): %v", what, err)
	}
	t.Skipf("%s not available: %v", what, err)
}

// v1aFixture makes one real webhook and writes what an outside verifier
// needs: the public key (PEM), the signed message and the raw signature.
func v1aFixture(t *testing.T) (dir string) {
	t.Helper()
	e := newEnv(t, nil)
	rc := newReceiver(t, nil)
	e.route("invoices", rc, nil)
	s := submission(t, "invoices")
	e.handle(context.Background(), s, &fakeDelivery{})
	r := rc.requests()[0]
	sig, ok := strings.CutPrefix(strings.Fields(r.header.Get("webhook-signature"))[0], "v1a,")
	if !ok {
		t.Fatal("no v1a signature")
	}
	raw, err := base64.StdEncoding.DecodeString(sig)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(ed25519.PublicKey(e.keys.current.Public()))
	if err != nil {
		t.Fatal(err)
	}
	dir = t.TempDir()
	msg := r.header.Get("webhook-id") + "." + r.header.Get("webhook-timestamp") + "." + string(r.body)
	for name, data := range map[string][]byte{
		"pub.pem": pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}),
		"msg":     []byte(msg),
		"sig":     raw,
		"bad":     []byte(msg + " "),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const pyVerify = `
import sys
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from cryptography.exceptions import InvalidSignature
d = sys.argv[1]
key = load_pem_public_key(open(d + "/pub.pem", "rb").read())
sig = open(d + "/sig", "rb").read()
key.verify(sig, open(d + "/msg", "rb").read())
try:
    key.verify(sig, open(d + "/bad", "rb").read())
    sys.exit("altered message verified")
except InvalidSignature:
    pass
print("ok")
`

func TestV1aInteropPython(t *testing.T) {
	if testing.Short() {
		t.Skip("interop test with an outside tool: skipped with -short")
	}
	_, err := exec.LookPath("python3")
	if err == nil {
		err = exec.Command("python3", "-c", "import cryptography").Run()
	}
	interop(t, err, "python3 with cryptography")
	dir := v1aFixture(t)
	out, err := exec.Command("python3", "-c", pyVerify, dir).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "ok" {
		t.Fatalf("python verification: %v: %s", err, out)
	}
}

func TestV1aInteropOpenSSL(t *testing.T) {
	if testing.Short() {
		t.Skip("interop test with an outside tool: skipped with -short")
	}
	_, err := exec.LookPath("openssl")
	interop(t, err, "openssl")
	dir := v1aFixture(t)
	verify := func(msg string) error {
		return exec.Command("openssl", "pkeyutl", "-verify", "-pubin", "-inkey", filepath.Join(dir, "pub.pem"),
			"-rawin", "-in", filepath.Join(dir, msg), "-sigfile", filepath.Join(dir, "sig")).Run()
	}
	if err := verify("msg"); err != nil {
		t.Fatalf("openssl did not verify the v1a signature: %v", err)
	}
	if err := verify("bad"); err == nil {
		t.Fatal("openssl verified an altered message")
	}
}

func TestValidateSecret(t *testing.T) {
	good, _ := GenerateSecret()
	for _, tc := range []struct {
		secret string
		ok     bool
	}{
		{good, true},
		{"whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 32)), true},
		{"whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 8)), false},
		{"whsec_not base64!", false},
		{strings.TrimPrefix(good, "whsec_"), false},
		{"", false},
	} {
		err := ValidateSecret(tc.secret)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateSecret(%q) = %v, want ok=%v", tc.secret, err, tc.ok)
		}
		if err != nil && tc.secret != "" && strings.Contains(err.Error(), tc.secret) {
			t.Errorf("error %q shows the secret", err)
		}
	}
}

// TestMalformedSecretSkipped: a malformed configured secret does not stop
// delivery; the good secrets still sign.
func TestMalformedSecretSkipped(t *testing.T) {
	e := newEnv(t, nil)
	rc := newReceiver(t, nil)
	good, _ := GenerateSecret()
	e.route("invoices", rc, func(r *Route) { r.Endpoint.Secrets = []Secret{{Value: "whsec_broken"}, {Value: good}} })
	d := &fakeDelivery{}
	e.handle(context.Background(), submission(t, "invoices"), d)
	if !d.acked {
		t.Fatalf("decision %s, want ack", d.decision())
	}
	wh, _ := standardwebhooks.NewWebhook(good)
	r := rc.requests()[0]
	if err := wh.Verify(r.body, r.header); err != nil {
		t.Error(err)
	}
}
