package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// kitsSkipOrFail skips an interop test whose outside tool is missing, or
// fails it when SEALPOST_REQUIRE_INTEROP=1.
func kitsSkipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("SEALPOST_REQUIRE_INTEROP") == "1" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// receiverKit is one of the receiver kits in signer/, run through its
// command-line verifier.
type receiverKit struct {
	name string
	cmd  func(ctx context.Context, args ...string) *exec.Cmd
}

// findKits returns the JavaScript kit (node >= 20) and the Python kit
// (python3 with cryptography), skipping the test when either is missing.
func findKits(t *testing.T, caFile string) []receiverKit {
	t.Helper()
	root, err := filepath.Abs("../../signer")
	if err != nil {
		t.Fatal(err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		kitsSkipOrFail(t, "node not found (the JavaScript receiver kit needs Node.js 20 or later): %v", err)
	}
	out, err := exec.Command(node, "--version").Output()
	m := regexp.MustCompile(`^v(\d+)\.`).FindSubmatch(out)
	if err != nil || m == nil {
		kitsSkipOrFail(t, "node --version: %q, %v", out, err)
	}
	if major, _ := strconv.Atoi(string(m[1])); major < 20 {
		kitsSkipOrFail(t, "node %s is older than 20, which the JavaScript receiver kit needs", bytes.TrimSpace(out))
	}
	python, err := exec.LookPath("python3")
	if err != nil {
		kitsSkipOrFail(t, "python3 not found (the Python receiver kit needs it): %v", err)
	}
	if out, err := exec.Command(python, "-c", "import cryptography.hazmat.primitives.asymmetric.ed25519").CombinedOutput(); err != nil {
		kitsSkipOrFail(t, "python3 lacks the cryptography package the Python receiver kit needs: %v\n%s", err, out)
	}
	env := func(extra ...string) []string {
		return append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, extra...)
	}
	return []receiverKit{
		{"javascript", func(ctx context.Context, args ...string) *exec.Cmd {
			c := exec.CommandContext(ctx, node, append([]string{filepath.Join(root, "js", "bin", "sealpost-verify.js")}, args...)...)
			// node's fetch trusts the gateway's development certificate through this.
			c.Env = env("NODE_EXTRA_CA_CERTS=" + caFile)
			return c
		}},
		{"python", func(ctx context.Context, args ...string) *exec.Cmd {
			if slices.Contains(args, "--jwks") {
				args = append(args, "--cacert", caFile)
			}
			c := exec.CommandContext(ctx, python, append([]string{"-m", "sealpost_verify"}, args...)...)
			c.Env = env("PYTHONPATH=" + filepath.Join(root, "python"))
			return c
		}},
	}
}

// runKit runs a kit's verifier with a deadline and returns its exit code
// and output.
func runKit(t *testing.T, k receiverKit, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := k.cmd(ctx, args...).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%s verifier did not finish within 60s: %s", k.name, out)
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s verifier: %v", k.name, err)
	}
	return code, string(out)
}

// TestReceiverKitsInterop has the JavaScript and Python receiver kits verify
// what a live gateway sends: a webhook delivery (v1a against the gateway's
// JWKS URL, v1 with the endpoint's secret), and the stored receipt offline
// against the saved JWKS and against the key-history URL. A tampered body
// and a tampered receipt must fail in both.
func TestReceiverKitsInterop(t *testing.T) {
	rcv := newReceiver(t)
	g := startGateway(t, gatewayOpts{endpoint: rcv.url()})
	kits := findKits(t, filepath.Join(g.dataDir, "dev-cert.pem"))

	// A secret for the endpoint, so that deliveries carry v1 besides v1a.
	out, err := g.cli("endpoint", "rotate-secret", "acme", "invoices", "--overlap", "1h")
	if err != nil {
		t.Fatalf("rotate-secret: %v\n%s", err, out)
	}
	var rotated struct{ Secret string }
	if err := json.Unmarshal([]byte(out), &rotated); err != nil || !strings.HasPrefix(rotated.Secret, "whsec_") {
		t.Fatalf("rotate-secret output %q: %v", out, err)
	}

	// Member names that sort differently by UTF-16 code units and by code
	// points, escapes, and numbers JCS rewrites without changing them.
	payload := `{"invoice":"INV-7","amount":12.50,"big":9007199254740992,"small":1E-7,"\ufb33":"dalet","\ud83d\ude02":"smiley","note":"caf\u00e9\n<b>&</b>"}`
	code, doc, _ := g.ingest("invoices", payload, nil)
	if code != http.StatusAccepted {
		t.Fatalf("ingest: %d %v", code, doc)
	}
	d := rcv.waitFor(t, 1, 30*time.Second)[0]
	if !strings.Contains(d.sig, "v1a,") || !strings.Contains(d.sig, "v1,") {
		t.Fatalf("webhook-signature %q lacks v1a or v1", d.sig)
	}
	id, _ := doc["id"].(string)
	status, stored := g.getAuth("/v1/receipts/" + id)
	if status != http.StatusOK {
		t.Fatalf("GET receipt: %d %s", status, stored)
	}
	_, jwks := g.get("/.well-known/jwks.json")

	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		must(t, os.WriteFile(p, b, 0o600))
		return p
	}
	body := write("body.json", d.body)
	tamperedBody := write("tampered-body.json", bytes.Replace(d.body, []byte("INV-7"), []byte("INV-8"), 1))
	envelope := write("receipt.json", stored)
	tamperedReceipt := write("tampered-receipt.json", bytes.Replace(stored, []byte(`"route":"invoices"`), []byte(`"route":"invoicez"`), 1))
	jwksFile := write("jwks.json", jwks)
	jwksURL := "https://" + g.https + "/.well-known/jwks.json"
	historyURL := "https://" + g.https + "/v1/keys"
	webhook := func(bodyFile string) []string {
		return []string{"webhook", "--body", bodyFile, "--id", d.id, "--timestamp", d.ts, "--signature", d.sig,
			"--jwks", jwksURL, "--secret", rotated.Secret}
	}

	for _, k := range kits {
		t.Run(k.name, func(t *testing.T) {
			for _, tc := range []struct {
				name string
				args []string
				ok   bool
				want string
			}{
				{"webhook", webhook(body), true, "OK " + id},
				{"webhook with a tampered body", webhook(tamperedBody), false, "FAILED verify webhook: v1a: bad_signature"},
				{"webhook with another secret", append(webhook(body)[:len(webhook(body))-1], "whsec_"+strings.Repeat("A", 32)), false, "FAILED verify webhook: v1: bad_signature"},
				{"stored receipt against the saved JWKS", []string{"receipt", envelope, "--jwks", jwksFile}, true, "OK " + id},
				{"stored receipt against the key history", []string{"receipt", envelope, "--jwks", historyURL}, true, "OK " + id},
				{"tampered receipt", []string{"receipt", tamperedReceipt, "--jwks", jwksFile}, false, "FAILED verify receipt: signature: bad_signature"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					code, out := runKit(t, k, tc.args...)
					if tc.ok && code != 0 {
						t.Fatalf("%s kit refused it (exit %d):\n%s", k.name, code, out)
					}
					if !tc.ok && code != 1 {
						t.Fatalf("%s kit exit %d, want 1:\n%s", k.name, code, out)
					}
					if !strings.HasPrefix(out, tc.want) {
						t.Fatalf("%s kit said %q, want %q...", k.name, out, tc.want)
					}
				})
			}
		})
	}
}
