package signer

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/gowebpki/jcs"
)

// lossyExamples are the RFC 8785 examples with a number that JCS changes:
// values.in.json writes the double 333333333.3333333 with 17 digits,
// 333333333.33333329, a different decimal value. Canonicalize refuses it
// (ErrLossyNumber); the RFC 8785 algorithm itself is checked on jcs.
var lossyExamples = map[string]string{"values": "333333333.33333329"}

// TestJCSExamples canonicalizes the RFC 8785 example documents.
func TestJCSExamples(t *testing.T) {
	inputs, err := filepath.Glob("testdata/jcs/*.in.json")
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no JCS vectors found: %v", err)
	}
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".in.json")
		t.Run(name, func(t *testing.T) {
			input := readFile(t, in)
			want := readFile(t, strings.TrimSuffix(in, ".in.json")+".out.json")
			if number, lossy := lossyExamples[name]; lossy {
				_, err := Canonicalize(input)
				if !errors.Is(err, ErrLossyNumber) || !strings.Contains(err.Error(), number) {
					t.Fatalf("Canonicalize: %v, want ErrLossyNumber naming %s", err, number)
				}
				if got, err := jcs.Transform(input); err != nil || !bytes.Equal(got, want) {
					t.Fatalf("jcs.Transform:\n got %s (%v)\nwant %s", got, err, want)
				}
				return
			}
			got, err := Canonicalize(input)
			if err != nil {
				t.Fatalf("Canonicalize: %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("Canonicalize:\n got %s\nwant %s", got, want)
			}
			// Canonical output is a fixed point.
			again, err := Canonicalize(got)
			if err != nil || !bytes.Equal(again, got) {
				t.Fatalf("Canonicalize is not idempotent: %s, %v", again, err)
			}
		})
	}
}

// TestJCSNumbers checks the RFC 8785 appendix B number serializations: each
// double is written in its shortest round-trip form, canonicalized, and must
// come out as the RFC says.
func TestJCSNumbers(t *testing.T) {
	f, err := os.Open("testdata/jcs/numbers.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		hexBits, want, ok := strings.Cut(line, ",")
		if !ok {
			t.Fatalf("bad line %q", line)
		}
		n++
		t.Run(hexBits, func(t *testing.T) {
			raw, err := hex.DecodeString(hexBits)
			if err != nil || len(raw) != 8 {
				t.Fatalf("bad hex %q", hexBits)
			}
			v := math.Float64frombits(binary.BigEndian.Uint64(raw))
			if want == "" {
				// NaN and the infinities have no JSON form.
				if _, err := jcs.NumberToJSON(v); err == nil {
					t.Fatalf("NumberToJSON(%v) succeeded, want an error", v)
				}
				return
			}
			input := strconv.FormatFloat(v, 'g', -1, 64)
			got, err := Canonicalize([]byte("[" + input + "]"))
			if err != nil {
				t.Fatalf("Canonicalize(%s): %v", input, err)
			}
			if string(got) != "["+want+"]" {
				t.Fatalf("Canonicalize(%s) = %s, want [%s]", input, got, want)
			}
		})
	}
	if n < 20 {
		t.Fatalf("only %d number vectors read", n)
	}
}

func TestCanonicalizeRejects(t *testing.T) {
	for _, tc := range []struct{ name, doc string }{
		{"empty", ""},
		{"duplicate member", `{"a":1,"a":2}`},
		{"nested duplicate member", `{"x":{"a":1,"a":1}}`},
		{"trailing data", `{"a":1} {}`},
		{"trailing comma", `{"a":1,}`},
		{"invalid utf-8", "\"\xff\""},
		{"lone surrogate", `"\ud800"`},
		{"nan", `NaN`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if out, err := Canonicalize([]byte(tc.doc)); err == nil {
				t.Fatalf("Canonicalize(%q) = %q, want an error", tc.doc, out)
			}
		})
	}
}

type ed25519Vector struct {
	Name      string `json:"name"`
	SecretKey string `json:"secret_key"`
	PublicKey string `json:"public_key"`
	Message   string `json:"message"`
	Signature string `json:"signature"`
}

// TestRFC8032 signs and verifies the RFC 8032 section 7.1 Ed25519 vectors.
func TestRFC8032(t *testing.T) {
	var doc struct {
		Vectors []ed25519Vector `json:"vectors"`
	}
	if err := json.Unmarshal(readFile(t, "testdata/rfc8032-ed25519.json"), &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Vectors) < 4 {
		t.Fatalf("only %d vectors", len(doc.Vectors))
	}
	for _, v := range doc.Vectors {
		t.Run(v.Name, func(t *testing.T) {
			seed, pub, msg, sig := unhex(t, v.SecretKey), unhex(t, v.PublicKey), unhex(t, v.Message), unhex(t, v.Signature)
			k, err := NewPrivateKeyFromSeed(seed)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(k.Public(), pub) {
				t.Fatalf("public key %x, want %x", k.Public(), pub)
			}
			if got := ed25519.Sign(k.Key, msg); !bytes.Equal(got, sig) {
				t.Fatalf("signature %x, want %x", got, sig)
			}
			if !ed25519.Verify(pub, msg, sig) {
				t.Fatal("vector signature does not verify")
			}
			bad := bytes.Clone(msg)
			bad = append(bad, 0)
			if ed25519.Verify(pub, bad, sig) {
				t.Fatal("signature verifies over a changed message")
			}
		})
	}
}

// TestRFC8037 checks the RFC 8037 appendix A example: the JWK, its RFC 7638
// thumbprint (which is our kid) and the A.4 EdDSA JWS signature.
func TestRFC8037(t *testing.T) {
	var v struct {
		PrivateJWK struct{ D, X string } `json:"private_jwk"`
		PublicJWK  json.RawMessage       `json:"public_jwk"`
		Thumbprint string                `json:"thumbprint"`
		Protected  string                `json:"protected"`
		Payload    string                `json:"payload"`
		EncPayload string                `json:"encoded_payload"`
		Signature  string                `json:"signature"`
	}
	if err := json.Unmarshal(readFile(t, "testdata/rfc8037.json"), &v); err != nil {
		t.Fatal(err)
	}
	seed, err := b64.DecodeString(v.PrivateJWK.D)
	if err != nil {
		t.Fatal(err)
	}
	k, err := NewPrivateKeyFromSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("A.2 public key", func(t *testing.T) {
		if got := b64.EncodeToString(k.Public()); got != v.PrivateJWK.X {
			t.Fatalf("x = %s, want %s", got, v.PrivateJWK.X)
		}
	})
	t.Run("A.3 thumbprint", func(t *testing.T) {
		if k.KID != v.Thumbprint {
			t.Fatalf("kid = %s, want %s", k.KID, v.Thumbprint)
		}
		if got := Thumbprint(k.Public()); got != v.Thumbprint {
			t.Fatalf("Thumbprint = %s, want %s", got, v.Thumbprint)
		}
	})
	t.Run("A.4 signature", func(t *testing.T) {
		if got := b64.EncodeToString([]byte(v.Payload)); got != v.EncPayload {
			t.Fatalf("encoded payload %s, want %s", got, v.EncPayload)
		}
		input := []byte(v.Protected + "." + v.EncPayload)
		if got := b64.EncodeToString(ed25519.Sign(k.Key, input)); got != v.Signature {
			t.Fatalf("signature %s, want %s", got, v.Signature)
		}
	})
	t.Run("A.1 key parses with its thumbprint as kid", func(t *testing.T) {
		var m map[string]any
		if err := json.Unmarshal(v.PublicJWK, &m); err != nil {
			t.Fatal(err)
		}
		m["kid"] = v.Thumbprint
		doc, _ := json.Marshal(map[string]any{"keys": []any{m}})
		set, err := ParseKeySet(doc)
		if err != nil {
			t.Fatalf("ParseKeySet: %v", err)
		}
		if got, ok := set.Lookup(v.Thumbprint); !ok || !bytes.Equal(got.Key, k.Public()) {
			t.Fatalf("Lookup = %v, %v", got, ok)
		}
	})
	t.Run("A.1 private JWK is refused", func(t *testing.T) {
		doc := []byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"` + v.Thumbprint +
			`","d":"` + v.PrivateJWK.D + `","x":"` + v.PrivateJWK.X + `"}]}`)
		if _, err := ParseKeySet(doc); err == nil || !strings.Contains(err.Error(), "key 0") {
			t.Fatalf("ParseKeySet of a private key: %v, want an error naming key 0", err)
		}
	})
}

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
