package signer

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// skipOrFail skips an interop test whose outside tool is missing, or fails
// it when SEALPOST_REQUIRE_INTEROP=1.
func skipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("SEALPOST_REQUIRE_INTEROP") == "1" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// receiptParts returns JCS(receipt) and the raw signature of an envelope.
func receiptParts(t *testing.T, env []byte) ([]byte, []byte) {
	t.Helper()
	var m struct {
		Receipt   json.RawMessage `json:"receipt"`
		Signature Signature       `json:"signature"`
	}
	if err := json.Unmarshal(env, &m); err != nil {
		t.Fatal(err)
	}
	msg, err := Canonicalize(m.Receipt)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := b64.DecodeString(m.Signature.Sig)
	if err != nil {
		t.Fatal(err)
	}
	return msg, sig
}

// TestInteropOpenSSL has OpenSSL 3 verify the Ed25519 signature over
// JCS(receipt) with the public key in SPKI PEM form.
func TestInteropOpenSSL(t *testing.T) {
	if testing.Short() {
		t.Skip("interop test with an outside tool: skipped with -short")
	}
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		skipOrFail(t, "openssl not found: %v", err)
	}
	if out, err := exec.Command(openssl, "version").Output(); err != nil || !bytes.HasPrefix(out, []byte("OpenSSL 3")) {
		skipOrFail(t, "openssl pkeyutl -rawin needs OpenSSL 3, have %q (%v)", out, err)
	}
	k := testKey(t)
	msg, sig := receiptParts(t, signTest(t, testReceipt(), testPayload, k))
	der, err := x509.MarshalPKIXPublicKey(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pub := write("pub.pem", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	sigFile := write("sig.bin", sig)
	tampered := bytes.Replace(msg, []byte(`"tenant":"acme"`), []byte(`"tenant":"acmf"`), 1)
	for _, tc := range []struct {
		name string
		msg  []byte
		ok   bool
	}{
		{"receipt", msg, true},
		{"tampered receipt", tampered, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := write(strings.ReplaceAll(tc.name, " ", "_")+".json", tc.msg)
			out, err := exec.Command(openssl, "pkeyutl", "-verify", "-pubin", "-inkey", pub,
				"-rawin", "-in", in, "-sigfile", sigFile).CombinedOutput()
			if tc.ok && err != nil {
				t.Fatalf("openssl rejected the signature: %v\n%s", err, out)
			}
			if !tc.ok && err == nil {
				t.Fatalf("openssl accepted a tampered receipt:\n%s", out)
			}
		})
	}
}

// interopPy verifies an envelope with only the Python standard library and
// the cryptography package: it finds the key in the JWKS, checks that the
// kid is the RFC 7638 thumbprint, canonicalizes the receipt itself (the
// receipt has ASCII member names and integer numbers only, where sorted
// compact JSON is JCS), verifies Ed25519 and the payload digest.
const interopPy = `
import base64, hashlib, json, sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

def b64u(b): return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
def unb64u(s): return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
def jcs(v): return json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

env = json.load(open(sys.argv[1], encoding="utf-8"))
jwks = json.load(open(sys.argv[2], encoding="utf-8"))
r, sig = env["receipt"], env["signature"]
assert sig["alg"] == "Ed25519" and sig["kid"] == r["kid"], "kid mismatch"
key = [k for k in jwks["keys"] if k["kid"] == r["kid"]][0]
tp = b64u(hashlib.sha256(jcs({"crv": key["crv"], "kty": key["kty"], "x": key["x"]})).digest())
assert tp == key["kid"], "kid is not the thumbprint"
Ed25519PublicKey.from_public_bytes(unb64u(key["x"])).verify(unb64u(sig["sig"]), jcs(r))
if "payload" in env:
    assert b64u(hashlib.sha256(jcs(env["payload"])).digest()) == r["payload_sha256"], "payload digest"
print("verified", r["id"])
`

// TestInteropPython verifies the golden envelope and a fresh one with Python.
func TestInteropPython(t *testing.T) {
	if testing.Short() {
		t.Skip("interop test with an outside tool: skipped with -short")
	}
	python, err := exec.LookPath("python3")
	if err != nil {
		skipOrFail(t, "python3 not found: %v", err)
	}
	if out, err := exec.Command(python, "-c", "import cryptography.hazmat.primitives.asymmetric.ed25519").CombinedOutput(); err != nil {
		skipOrFail(t, "python3 lacks the cryptography package: %v\n%s", err, out)
	}
	dir := t.TempDir()
	script := filepath.Join(dir, "verify.py")
	if err := os.WriteFile(script, []byte(interopPy), 0o600); err != nil {
		t.Fatal(err)
	}
	jwks, err := testKeySet(t).MarshalJWKS()
	if err != nil {
		t.Fatal(err)
	}
	jwksFile := filepath.Join(dir, "jwks.json")
	if err := os.WriteFile(jwksFile, jwks, 0o600); err != nil {
		t.Fatal(err)
	}
	good := signTest(t, testReceipt(), testPayload, testKey(t))
	for _, tc := range []struct {
		name string
		env  []byte
		ok   bool
	}{
		{"golden", readFile(t, "testdata/golden/envelope.json"), true},
		{"fresh", good, true},
		{"tampered receipt", bytes.Replace(good, []byte(`"route":"invoices"`), []byte(`"route":"invoicez"`), 1), false},
		{"tampered payload", bytes.Replace(good, []byte(`"qty":2`), []byte(`"qty":3`), 1), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			envFile := filepath.Join(dir, "envelope.json")
			if err := os.WriteFile(envFile, tc.env, 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(python, script, envFile, jwksFile).CombinedOutput()
			if tc.ok && err != nil {
				t.Fatalf("python rejected the envelope: %v\n%s", err, out)
			}
			if !tc.ok && err == nil {
				t.Fatalf("python accepted a tampered envelope:\n%s", out)
			}
		})
	}
}
