package kms

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func testLocal(t testing.TB) *Local {
	t.Helper()
	l, err := OpenLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestContextRequired(t *testing.T) {
	e := newEnvelope(t, Config{KEK: testLocal(t)})
	ctx := context.Background()
	good := Context{"acme", PurposeIngest, "1"}
	sealed := mustSeal(t, e, good, []byte("x"))
	long := strings.Repeat("a", MaxContextField+1)
	for _, tc := range []struct {
		name string
		c    Context
	}{
		{"no tenant", Context{"", PurposeIngest, "1"}},
		{"no purpose", Context{"acme", "", "1"}},
		{"no object id", Context{"acme", PurposeIngest, ""}},
		{"zero", Context{}},
		{"long tenant", Context{long, PurposeIngest, "1"}},
		{"long object id", Context{"acme", PurposeIngest, long}},
		{"invalid utf-8", Context{"ac\xffme", PurposeIngest, "1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if b, err := e.Seal(ctx, tc.c, []byte("x")); !errors.Is(err, ErrInvalidContext) || b != nil {
				t.Errorf("Seal = %q, %v; want ErrInvalidContext", b, err)
			}
			if b, err := e.Open(ctx, tc.c, sealed); !errors.Is(err, ErrInvalidContext) || b != nil {
				t.Errorf("Open = %q, %v; want ErrInvalidContext", b, err)
			}
		})
	}
	// The longest allowed fields work.
	max := strings.Repeat("z", MaxContextField)
	c := Context{max, max, max}
	mustOpen(t, e, c, mustSeal(t, e, c, []byte("x")), []byte("x"))
}

func TestSizeLimits(t *testing.T) {
	e := newEnvelope(t, Config{KEK: testLocal(t)})
	c := Context{"acme", PurposeAttachment, "big"}
	ctx := context.Background()
	big := make([]byte, MaxPlaintext+1)
	if b, err := e.Seal(ctx, c, big); !errors.Is(err, ErrTooLarge) || b != nil {
		t.Fatalf("Seal of %d bytes: %v; want ErrTooLarge", len(big), err)
	}
	sealed := mustSeal(t, e, c, big[:MaxPlaintext])
	if len(sealed) > MaxSealed {
		t.Fatalf("sealed %d bytes exceeds MaxSealed %d", len(sealed), MaxSealed)
	}
	mustOpen(t, e, c, sealed, big[:MaxPlaintext])
	tooBig := make([]byte, MaxSealed+1)
	copy(tooBig, sealed)
	if b, err := e.Open(ctx, c, tooBig); !errors.Is(err, ErrOpen) || !errors.Is(err, ErrTooLarge) || b != nil {
		t.Fatalf("Open of %d bytes: %v; want ErrOpen and ErrTooLarge", len(tooBig), err)
	}
}

func TestConfig(t *testing.T) {
	l := testLocal(t)
	for _, tc := range []struct {
		name string
		c    Config
		want string
	}{
		{"no kek", Config{}, "KEK is required"},
		{"negative age", Config{KEK: l, MaxAge: -time.Second}, "max age"},
		{"age above a day", Config{KEK: l, MaxAge: 25 * time.Hour}, "max age"},
		{"negative uses", Config{KEK: l, MaxUses: -1}, "max uses"},
		{"too many uses", Config{KEK: l, MaxUses: 1<<30 + 1}, "max uses"},
		{"negative open keys", Config{KEK: l, MaxOpenKeys: -1}, "max open keys"},
		{"bad provider id", Config{KEK: namedKEK{l, "has space"}}, "provider id"},
		{"empty provider id", Config{KEK: namedKEK{l, ""}}, "provider id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.c)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v; want an error about %q", err, tc.want)
			}
			// The settings alone, without a KEK, are judged the same.
			if tc.c.KEK != nil && strings.HasPrefix(tc.want, "max ") {
				if err := tc.c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("Validate: %v; want an error about %q", err, tc.want)
				}
			}
		})
	}
	if err := (Config{}).Validate(); err != nil {
		t.Errorf("zero Config: %v", err)
	}
	for _, tc := range []struct {
		c    AWSConfig
		want string
	}{
		{AWSConfig{KeyID: "alias/sealpost", Endpoint: "https://kms.example:4566"}, ""},
		{AWSConfig{}, "key id is required"},
		{AWSConfig{KeyID: "k", Endpoint: "kms.example"}, "endpoint must be an http(s) URL"},
		{AWSConfig{KeyID: "k", Timeout: -time.Second}, "timeout -1s is negative"},
	} {
		if err := tc.c.Validate(); (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%+v: Validate() = %v, want %q", tc.c, err, tc.want)
		}
	}
	// Two envelopes may share one registry.
	reg := prometheus.NewRegistry()
	newEnvelope(t, Config{KEK: l, Registerer: reg})
	newEnvelope(t, Config{KEK: l, Registerer: reg})
}

// namedKEK is a KEK under another provider id.
type namedKEK struct {
	KEK
	id string
}

func (n namedKEK) ID() string { return n.id }

func TestProviderMismatch(t *testing.T) {
	l := testLocal(t)
	c := Context{"acme", PurposeReceipt, "r1"}
	sealed := mustSeal(t, newEnvelope(t, Config{KEK: namedKEK{l, "aws"}}), c, []byte("r"))
	got, err := newEnvelope(t, Config{KEK: l}).Open(context.Background(), c, sealed)
	if !errors.Is(err, ErrOpen) || got != nil || !strings.Contains(err.Error(), `"aws"`) {
		t.Fatalf("Open of an aws blob with the local provider = %q, %v; want ErrOpen naming the provider", got, err)
	}
}

// failingKEK fails every call with err.
type failingKEK struct{ err error }

func (f failingKEK) GenerateDataKey(context.Context, map[string]string) ([]byte, []byte, error) {
	return nil, nil, f.err
}
func (f failingKEK) Decrypt(context.Context, []byte, map[string]string) ([]byte, error) {
	return nil, f.err
}
func (f failingKEK) ID() string { return "local" }

func TestErrorClassesAndMetrics(t *testing.T) {
	ctx := context.Background()
	c := Context{"acme", PurposeIngest, "m1"}
	sealed := mustSeal(t, newEnvelope(t, Config{KEK: testLocal(t)}), c, []byte("x"))
	network := errors.New("dial tcp 10.0.0.1:443: connection refused")
	for _, tc := range []struct {
		name     string
		err      error
		wantOpen error
		outcome  string
	}{
		{"unreachable", network, ErrUnavailable, outcomeUnavailable},
		{"canceled", context.Canceled, ErrUnavailable, outcomeUnavailable},
		{"rejected", fmt.Errorf("%w: invalid ciphertext", ErrOpen), ErrOpen, outcomeRejected},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			e := newEnvelope(t, Config{KEK: failingKEK{tc.err}, Registerer: reg})
			if b, err := e.Seal(ctx, c, []byte("x")); !errors.Is(err, ErrUnavailable) || !errors.Is(err, tc.err) || b != nil {
				t.Errorf("Seal: %v; want ErrUnavailable wrapping the provider error", err)
			}
			b, err := e.Open(ctx, c, sealed)
			if !errors.Is(err, tc.wantOpen) || !errors.Is(err, tc.err) || b != nil {
				t.Errorf("Open: %v; want %v wrapping the provider error", err, tc.wantOpen)
			}
			if errors.Is(err, ErrOpen) && errors.Is(err, ErrUnavailable) {
				t.Errorf("Open: %v is both permanent and temporary", err)
			}
			if got := counterValue(t, reg, "sealpost_kms_calls_total", map[string]string{"op": opGenerate, "outcome": outcomeUnavailable}); got != 1 {
				t.Errorf("generate calls unavailable = %v, want 1", got)
			}
			if got := counterValue(t, reg, "sealpost_kms_calls_total", map[string]string{"op": opDecrypt, "outcome": tc.outcome}); got != 1 {
				t.Errorf("decrypt calls %s = %v, want 1", tc.outcome, got)
			}
		})
	}
}

func TestOpenCacheBounded(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)}
	l := testLocal(t)
	sealer := newEnvelope(t, Config{KEK: l, MaxUses: 1})
	var blobs [][]byte
	for i := range 10 {
		blobs = append(blobs, mustSeal(t, sealer, Context{"acme", PurposeIngest, fmt.Sprint(i)}, []byte{byte(i)}))
	}
	kek := &countingKEK{KEK: l}
	e := newEnvelope(t, Config{KEK: kek, MaxOpenKeys: 4, MaxAge: time.Minute, Now: clock.Now})
	open := func(i int) {
		t.Helper()
		mustOpen(t, e, Context{"acme", PurposeIngest, fmt.Sprint(i)}, blobs[i], []byte{byte(i)})
	}
	for i := range 10 {
		open(i)
	}
	if n := e.open.len(); n != 4 {
		t.Fatalf("open cache holds %d keys, want at most 4", n)
	}
	open(9) // most recent: cached
	if _, d := kek.counts(); d != 10 {
		t.Fatalf("%d unwraps, want 10", d)
	}
	open(0) // evicted: unwrapped again
	if _, d := kek.counts(); d != 11 {
		t.Fatalf("%d unwraps, want 11", d)
	}
	clock.Advance(time.Minute)
	open(0) // expired: unwrapped again
	if _, d := kek.counts(); d != 12 {
		t.Fatalf("after MaxAge: %d unwraps, want 12", d)
	}
}

func TestSealSlotsBounded(t *testing.T) {
	kek := &countingKEK{KEK: testLocal(t)}
	e := newEnvelope(t, Config{KEK: kek})
	for i := range maxSealSlots + 10 {
		mustSeal(t, e, Context{fmt.Sprint("tenant-", i), PurposeIngest, "1"}, nil)
	}
	e.seal.mu.Lock()
	n := len(e.seal.slots)
	e.seal.mu.Unlock()
	if n > maxSealSlots {
		t.Fatalf("seal cache holds %d slots, want at most %d", n, maxSealSlots)
	}
	// The most recent tenant is still cached.
	g, _ := kek.counts()
	mustSeal(t, e, Context{fmt.Sprint("tenant-", maxSealSlots+9), PurposeIngest, "2"}, nil)
	if g2, _ := kek.counts(); g2 != g {
		t.Fatalf("recent tenant generated a new data key")
	}
}

func TestSealDoesNotAliasInput(t *testing.T) {
	e := newEnvelope(t, Config{KEK: testLocal(t)})
	c := Context{"acme", PurposeIngest, "1"}
	pt := []byte("hello world")
	sealed := mustSeal(t, e, c, pt)
	copy(pt, "XXXXXXXXXXX")
	mustOpen(t, e, c, sealed, []byte("hello world"))
	got, err := e.Open(context.Background(), c, sealed)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(got, sealed[len(sealed)-len(got)-tagSize:len(sealed)-tagSize]) {
		t.Fatal("Open returned the ciphertext")
	}
}

func TestSealBacksOffAfterFailure(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)}
	kek := &countingKEK{KEK: failingKEK{errors.New("connection refused")}}
	e := newEnvelope(t, Config{KEK: kek, Now: clock.Now})
	c := Context{"acme", PurposeIngest, "1"}
	for range 5 {
		if _, err := e.Seal(context.Background(), c, nil); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Seal: %v; want ErrUnavailable", err)
		}
	}
	if g, _ := kek.counts(); g != 1 {
		t.Fatalf("5 seals during an outage: %d provider calls, want 1", g)
	}
	clock.Advance(retryAfterFailure)
	e.Seal(context.Background(), c, nil)
	if g, _ := kek.counts(); g != 2 {
		t.Fatalf("after %s: %d provider calls, want 2", retryAfterFailure, g)
	}
	// Another tenant is not held back by this one's failure.
	e.Seal(context.Background(), Context{"globex", PurposeIngest, "1"}, nil)
	if g, _ := kek.counts(); g != 3 {
		t.Fatalf("other tenant: %d provider calls, want 3", g)
	}
	// A recovered provider is used again once the back-off has passed.
	kek.KEK = testLocal(t)
	clock.Advance(retryAfterFailure)
	mustSeal(t, e, c, nil)
}

func TestCheck(t *testing.T) {
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	if err := newEnvelope(t, Config{KEK: testLocal(t), Registerer: reg}).Check(ctx); err != nil {
		t.Fatalf("Check: %v", err)
	}
	if got := counterValue(t, reg, "sealpost_kms_calls_total", map[string]string{"op": opDecrypt, "outcome": outcomeOK}); got != 1 {
		t.Errorf("Check made %v decrypt calls, want 1", got)
	}
	down := errors.New("connection refused")
	if err := newEnvelope(t, Config{KEK: failingKEK{down}}).Check(ctx); !errors.Is(err, ErrUnavailable) || !errors.Is(err, down) {
		t.Fatalf("Check with a failing provider: %v; want ErrUnavailable", err)
	}
	// A provider that generates but cannot unwrap its own keys fails the check.
	l := testLocal(t)
	broken := brokenDecrypt{l}
	if err := newEnvelope(t, Config{KEK: broken}).Check(ctx); !errors.Is(err, ErrOpen) {
		t.Fatalf("Check with a provider that cannot unwrap: %v; want ErrOpen", err)
	}
}

// brokenDecrypt generates data keys but corrupts them before unwrapping.
type brokenDecrypt struct{ *Local }

func (b brokenDecrypt) Decrypt(ctx context.Context, wrapped []byte, ec map[string]string) ([]byte, error) {
	w := bytes.Clone(wrapped)
	w[len(w)-1] ^= 1
	return b.Local.Decrypt(ctx, w, ec)
}
