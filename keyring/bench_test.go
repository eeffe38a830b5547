package keyring

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// BenchmarkSigningKeys measures the forwarder's per-message call with a
// fresh cache: no store or KMS round trip.
func BenchmarkSigningKeys(b *testing.B) {
	e := newEnv(b, date("2026-04-20T00:00:00Z"))
	k := e.keyring()
	if _, err := k.Rotate(context.Background(), "admin"); err != nil {
		b.Fatal(err)
	}
	e.clock.Advance(RotationDelay)
	now := e.clock.Now()
	b.ReportAllocs()
	for b.Loop() {
		if _, prev, err := k.SigningKeys(context.Background(), now); err != nil || len(prev) != 1 {
			b.Fatal(err)
		}
	}
}

// BenchmarkSigningKeysReload measures the call when the cached state is
// older than its refresh bound: one key-value read and parse.
func BenchmarkSigningKeysReload(b *testing.B) {
	e := newEnv(b, date("2026-04-20T00:00:00Z"))
	k := e.keyring()
	b.ReportAllocs()
	for b.Loop() {
		e.clock.Advance(maxRefreshAfter)
		if _, _, err := k.SigningKeys(context.Background(), e.clock.Now()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkJWKS measures serving the JWKS (three keys).
func BenchmarkJWKS(b *testing.B) {
	e := newEnv(b, date("2026-03-10T00:00:00Z"))
	k := e.keyring()
	e.clock.Set(date("2026-06-20T00:00:00Z"))
	if _, err := k.sync(context.Background()); err != nil {
		b.Fatal(err)
	}
	h := k.JWKSHandler()
	r := httptest.NewRequest(http.MethodGet, "/.well-known/jwks.json", nil)
	b.ReportAllocs()
	for b.Loop() {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusOK {
			b.Fatal(w.Code)
		}
	}
}

// BenchmarkCheck measures one periodic check of Run when nothing is due.
func BenchmarkCheck(b *testing.B) {
	e := newEnv(b, date("2026-04-20T00:00:00Z"))
	k := e.keyring()
	b.ReportAllocs()
	for b.Loop() {
		e.clock.Advance(time.Second)
		if _, err := k.sync(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}
