package keyring

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sealpost/sealpost/signer"
)

// requireInterop skips, or fails when SEALPOST_REQUIRE_INTEROP=1, when an
// outside tool is missing.
func requireInterop(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("SEALPOST_REQUIRE_INTEROP") == "1" {
		t.Fatalf("interop tool missing: %s (SEALPOST_REQUIRE_INTEROP=1)", why)
	}
	t.Skipf("skipping interop test: %s", why)
}

// jwsCompact signs payload as a JWS compact serialization with alg Ed25519
// (RFC 9864, the fully specified name the JWKS publishes; JOSE libraries
// match it against the key's "alg") and the key's kid.
func jwsCompact(t *testing.T, key signer.PrivateKey, payload []byte) string {
	t.Helper()
	hdr, _ := json.Marshal(map[string]string{"alg": "Ed25519", "kid": key.KID})
	in := base64.RawURLEncoding.EncodeToString(hdr) + "." + base64.RawURLEncoding.EncodeToString(payload)
	return in + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(key.Key, []byte(in)))
}

// receiptJCS returns JCS(receipt) of an envelope.
func receiptJCS(t *testing.T, env []byte) []byte {
	t.Helper()
	var e struct{ Receipt json.RawMessage }
	if err := json.Unmarshal(env, &e); err != nil {
		t.Fatal(err)
	}
	c, err := signer.Canonicalize(e.Receipt)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestJoserfcInterop has Python's joserfc fetch the JWKS from the handler,
// recompute every kid as an RFC 7638 thumbprint, and verify receipt
// signatures of the current and the grace-period key, raw and as JWS
// compact. A tampered receipt and a key outside the JWKS must fail.
func TestJoserfcInterop(t *testing.T) {
	if testing.Short() {
		t.Skip("interop test with an outside tool: skipped with -short")
	}
	py, err := exec.LookPath("python3")
	if err != nil {
		requireInterop(t, "python3 not found")
	}
	if err := exec.Command(py, "-c", "import joserfc").Run(); err != nil {
		requireInterop(t, "python module joserfc not installed (pip install joserfc)")
	}
	ctx := context.Background()
	e, k := quarterEnv(t, date("2026-06-20T00:00:00Z"))
	now := e.clock.Now()
	cur, prev, err := k.SigningKeys(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(prev) != 1 {
		t.Fatalf("%d grace keys, want 1", len(prev))
	}
	_, stranger, _ := ed25519.GenerateKey(nil)
	outsider := signer.NewPrivateKey(stranger)

	type tcase struct {
		Name     string `json:"name"`
		Envelope string `json:"envelope"`
		JWS      string `json:"jws"`
		wantOK   bool
	}
	current := signWith(t, cur, now)
	grace := signWith(t, prev[0], date("2026-03-20T00:00:00Z"))
	tampered := bytes.Replace(current, []byte(`"route":"invoices"`), []byte(`"route":"payroll"`), 1)
	if bytes.Equal(tampered, current) {
		t.Fatal("tampering did not change the envelope")
	}
	foreign := signWith(t, outsider, now)
	cases := []tcase{
		{"current", string(current), jwsCompact(t, cur, receiptJCS(t, current)), true},
		{"grace", string(grace), jwsCompact(t, prev[0], receiptJCS(t, grace)), true},
		{"tampered", string(tampered), strings.Replace(jwsCompact(t, cur, receiptJCS(t, current)), ".", ".e30", 1), false},
		{"key outside the jwks", string(foreign), jwsCompact(t, outsider, receiptJCS(t, foreign)), false},
	}
	raw, _ := json.Marshal(cases)
	path := filepath.Join(t.TempDir(), "cases.json")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(serve(t, k))
	defer srv.Close()

	cmdCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(cmdCtx, py, filepath.Join("testdata", "joserfc_verify.py"), srv.URL+"/.well-known/jwks.json", path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("joserfc: %v\n%s", err, stderr.String())
	}
	var res struct {
		KIDs             []string `json:"kids"`
		ThumbprintsMatch bool     `json:"thumbprints_match"`
		Cases            []struct {
			Name string `json:"name"`
			Raw  bool   `json:"raw"`
			JWS  bool   `json:"jws"`
		} `json:"cases"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("joserfc output %q: %v", out, err)
	}
	if !res.ThumbprintsMatch {
		t.Error("joserfc computes other RFC 7638 thumbprints than the published kids")
	}
	if want := setKIDs(k.KeySet(now, false)); !slices.Equal(res.KIDs, want) {
		t.Errorf("joserfc loaded kids %v, want %v", res.KIDs, want)
	}
	for i, c := range res.Cases {
		if c.Name != cases[i].Name || c.Raw != cases[i].wantOK || c.JWS != cases[i].wantOK {
			t.Errorf("%s: joserfc raw=%v jws=%v, want %v", cases[i].Name, c.Raw, c.JWS, cases[i].wantOK)
		}
	}
	if len(res.Cases) != len(cases) {
		t.Errorf("joserfc reported %d cases, want %d", len(res.Cases), len(cases))
	}
}
