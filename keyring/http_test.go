package keyring

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"flag"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sealpost/sealpost/signer"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (run with -update after checking):\n got %s\nwant %s", name, got, want)
	}
}

func indent(t *testing.T, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		t.Fatal(err)
	}
	out.WriteByte('\n')
	return out.Bytes()
}

// quarterEnv is a deployment started on 2026-03-10 and checked on the day
// each next key is due, up to at: deterministic keys and windows.
func quarterEnv(t *testing.T, at time.Time) (*env, *Keyring) {
	t.Helper()
	e := newEnv(t, date("2026-03-10T00:00:00Z"))
	e.rand = &detRand{label: "golden"}
	k := e.keyring()
	for _, d := range []string{"2026-03-18T00:00:00Z", "2026-06-17T00:00:00Z", "2026-09-17T00:00:00Z", "2026-12-18T00:00:00Z"} {
		if date(d).After(at) {
			break
		}
		e.clock.Set(date(d))
		if _, err := k.sync(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	e.clock.Set(at)
	if _, err := k.sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	return e, k
}

func serve(t *testing.T, k *Keyring) *http.ServeMux {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("GET /.well-known/jwks.json", k.JWKSHandler())
	mux.Handle("GET /v1/keys", k.HistoryHandler())
	mux.Handle("GET /v1/keys/{kid}", k.HistoryHandler())
	return mux
}

func get(h http.Handler, method, target string, hdr map[string]string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, nil)
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// TestJWKSGolden pins the JWKS document a customer fetches on 2026-06-20:
// the grace-period key of the first weeks, the current Q2 key and the Q3 key
// published on 2026-06-17, newest first, each with its validity members.
func TestJWKSGolden(t *testing.T) {
	_, k := quarterEnv(t, date("2026-06-20T00:00:00Z"))
	w := get(serve(t, k), http.MethodGet, "/.well-known/jwks.json", nil)
	if w.Code != http.StatusOK || w.Header().Get("Content-Type") != "application/jwk-set+json" {
		t.Fatalf("status %d, content type %q", w.Code, w.Header().Get("Content-Type"))
	}
	golden(t, "jwks.golden.json", indent(t, w.Body.Bytes()))
	set, err := signer.ParseKeySet(w.Body.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Keys) != 3 {
		t.Fatalf("jwks has %d keys, want grace, current and next", len(set.Keys))
	}
	// Every kid is the RFC 7638 thumbprint of its x, computed here from the
	// RFC's recipe rather than by the signer package.
	var doc struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	for _, j := range doc.Keys {
		in, _ := json.Marshal(map[string]string{"crv": j["crv"].(string), "kty": j["kty"].(string), "x": j["x"].(string)})
		sum := sha256.Sum256(in)
		if want := base64.RawURLEncoding.EncodeToString(sum[:]); j["kid"] != want {
			t.Errorf("kid %v, RFC 7638 thumbprint %s", j["kid"], want)
		}
		if j["use"] != "sig" || j["alg"] != "Ed25519" || j["kty"] != "OKP" || j["crv"] != "Ed25519" {
			t.Errorf("key members %v", j)
		}
		for _, m := range []string{"iat", "nbf", "exp"} {
			if _, ok := j[m].(float64); !ok {
				t.Errorf("%s is %v, want a NumericDate", m, j[m])
			}
		}
	}
}

// TestHistoryGolden pins the key history on 2027-01-05 after the Q4 key was
// revoked: every key, its status, and the revocation time.
func TestHistoryGolden(t *testing.T) {
	e, k := quarterEnv(t, date("2026-12-20T00:00:00Z"))
	set := k.KeySet(e.clock.Now(), false)
	var q4 string
	for _, p := range set.Keys {
		if p.Status == signer.StatusActive {
			q4 = p.KID
		}
	}
	if _, err := k.Revoke(context.Background(), q4, "admin"); err != nil {
		t.Fatal(err)
	}
	e.clock.Set(date("2027-01-05T00:00:00Z"))
	h := serve(t, k)
	w := get(h, http.MethodGet, "/v1/keys", nil)
	if w.Code != http.StatusOK || w.Header().Get("Cache-Control") != "no-cache" {
		t.Fatalf("status %d, cache control %q", w.Code, w.Header().Get("Cache-Control"))
	}
	golden(t, "history.golden.json", indent(t, w.Body.Bytes()))
	hist, err := signer.ParseKeySet(w.Body.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	revoked, ok := hist.Lookup(q4)
	if !ok || revoked.Status != signer.StatusRevoked || !revoked.RevokedAt.Equal(date("2026-12-20T00:00:00Z")) {
		t.Errorf("revoked key in history = %+v", revoked)
	}

	list, err := k.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var table bytes.Buffer
	if err := FormatTable(&table, list); err != nil {
		t.Fatal(err)
	}
	golden(t, "keys-list.golden.txt", table.Bytes())

	one := get(h, http.MethodGet, "/v1/keys/"+q4, nil)
	var j signer.JWK
	if err := json.Unmarshal(one.Body.Bytes(), &j); err != nil || one.Code != http.StatusOK || j.KID != q4 || j.Status != signer.StatusRevoked {
		t.Errorf("GET /v1/keys/{kid}: %d %s", one.Code, one.Body)
	}
	for _, kid := range []string{"unknown", string(bytes.Repeat([]byte("a"), 500))} {
		w := get(h, http.MethodGet, "/v1/keys/"+kid, nil)
		if w.Code != http.StatusNotFound || w.Header().Get("Content-Type") != "application/problem+json" {
			t.Errorf("unknown kid: %d %q", w.Code, w.Header().Get("Content-Type"))
		}
	}
}

// TestJWKSCaching checks the Cache-Control max-age against the next change
// of the key set, and ETag revalidation.
func TestJWKSCaching(t *testing.T) {
	for _, tc := range []struct {
		name string
		at   string
		want string
	}{
		{"far from any change", "2026-03-10T00:00:00Z", "public, max-age=3600"},
		{"30 minutes before the next key is published", "2026-03-17T23:30:00Z", "public, max-age=1800"},
		{"next key due but not yet created", "2026-03-18T00:00:00Z", "no-cache"},
		{"10 seconds before a grace key leaves", "2026-06-29T23:59:50Z", "public, max-age=10"},
		{"one second before a key is published", "2026-06-16T23:59:59Z", "public, max-age=1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			at := date(tc.at)
			_, k := quarterEnv(t, at.Add(-time.Second))
			k.c.Now = func() time.Time { return at }
			w := get(k.JWKSHandler(), http.MethodGet, "/.well-known/jwks.json", nil)
			if got := w.Header().Get("Cache-Control"); got != tc.want {
				t.Errorf("Cache-Control = %q, want %q", got, tc.want)
			}
		})
	}

	e, k := quarterEnv(t, date("2026-04-10T00:00:00Z"))
	h := serve(t, k)
	w := get(h, http.MethodGet, "/.well-known/jwks.json", nil)
	etag := w.Header().Get("ETag")
	if w.Code != http.StatusOK || len(etag) < 10 {
		t.Fatalf("status %d etag %q", w.Code, etag)
	}
	for _, inm := range []string{etag, `"other", ` + etag, "W/" + etag, "*"} {
		if w := get(h, http.MethodGet, "/.well-known/jwks.json", map[string]string{"If-None-Match": inm}); w.Code != http.StatusNotModified || w.Body.Len() != 0 {
			t.Errorf("If-None-Match %s: status %d", inm, w.Code)
		}
	}
	if w := get(h, http.MethodHead, "/.well-known/jwks.json", nil); w.Code != http.StatusOK || w.Body.Len() != 0 || w.Header().Get("ETag") != etag {
		t.Errorf("HEAD: status %d, body %d bytes", w.Code, w.Body.Len())
	}
	if w := get(k.JWKSHandler(), http.MethodPost, "/.well-known/jwks.json", nil); w.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST: status %d", w.Code)
	}
	// A rotation publishes a new key: the old ETag no longer matches.
	if _, err := k.Rotate(context.Background(), "admin"); err != nil {
		t.Fatal(err)
	}
	w = get(h, http.MethodGet, "/.well-known/jwks.json", map[string]string{"If-None-Match": etag})
	if w.Code != http.StatusOK || w.Header().Get("ETag") == etag {
		t.Errorf("after rotation: status %d, etag unchanged %v", w.Code, w.Header().Get("ETag") == etag)
	}
	_ = e
}

// TestRFC8037Key runs the keyring with the RFC 8037 appendix A.1 key as its
// first key and checks that the JWKS publishes the RFC's x and, as kid, the
// RFC 7638 thumbprint from appendix A.3.
func TestRFC8037Key(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata", "rfc8037.json"))
	if err != nil {
		t.Fatal(err)
	}
	var v struct{ D, X, KID string }
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	seed, err := base64.RawURLEncoding.DecodeString(v.D)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, date("2026-05-01T00:00:00Z"))
	k := e.keyring(func(c *Config) { c.Rand = &fixedSeeds{seeds: [][]byte{seed}} })
	body, err := k.KeySet(e.clock.Now(), false).MarshalJWKS()
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Keys []signer.JWK `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Keys) != 1 || doc.Keys[0].X != v.X || doc.Keys[0].KID != v.KID {
		t.Fatalf("jwks = %s, want x %s kid %s", body, v.X, v.KID)
	}
	cur, _, err := k.SigningKeys(context.Background(), e.clock.Now())
	if err != nil || cur.KID != v.KID {
		t.Fatalf("signing key %s (%v), want %s", cur.KID, err, v.KID)
	}
}
