package kms

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// provider describes one KEK provider to the conformance suite.
type provider struct {
	// kek returns the KEK under test; every call returns a KEK for the
	// same key.
	kek func(t *testing.T) KEK
	// other returns a KEK of the same provider with a different key.
	other func(t *testing.T) KEK
	// broken returns a KEK of the same provider whose backend cannot be
	// reached.
	broken func(t *testing.T) KEK
	// brokenStillOpens says the broken KEK still unwraps keys it holds in
	// memory (the local provider after its file vanished).
	brokenStillOpens bool
	// rotate rotates the key behind kek.
	rotate func(t *testing.T)
	// strictWrapped says the provider reports every damaged wrapped key or
	// foreign key as ErrOpen. Remote providers may report some of them
	// as access errors, which the envelope treats as temporary.
	strictWrapped bool
}

// countingKEK counts the calls that reach the wrapped KEK.
type countingKEK struct {
	KEK
	mu                 sync.Mutex
	generate, decrypts int
}

func (c *countingKEK) GenerateDataKey(ctx context.Context, ec map[string]string) ([]byte, []byte, error) {
	c.mu.Lock()
	c.generate++
	c.mu.Unlock()
	return c.KEK.GenerateDataKey(ctx, ec)
}

func (c *countingKEK) Decrypt(ctx context.Context, wrapped []byte, ec map[string]string) ([]byte, error) {
	c.mu.Lock()
	c.decrypts++
	c.mu.Unlock()
	return c.KEK.Decrypt(ctx, wrapped, ec)
}

func (c *countingKEK) counts() (generate, decrypts int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.generate, c.decrypts
}

// fakeClock is a settable Config.Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newEnvelope(t testing.TB, c Config) *Envelope {
	t.Helper()
	e, err := New(c)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return e
}

func mustSeal(t testing.TB, e *Envelope, c Context, pt []byte) []byte {
	t.Helper()
	b, err := e.Seal(context.Background(), c, pt)
	if err != nil {
		t.Fatalf("Seal(%+v): %v", c, err)
	}
	return b
}

func mustOpen(t testing.TB, e *Envelope, c Context, b, want []byte) {
	t.Helper()
	got, err := e.Open(context.Background(), c, b)
	if err != nil {
		t.Fatalf("Open(%+v): %v", c, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Open(%+v) = %d bytes, want the %d sealed bytes", c, len(got), len(want))
	}
}

func payload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + 3)
	}
	return b
}

// runConformance is the suite every KEK provider passes.
func runConformance(t *testing.T, p provider) {
	ctx := context.Background()
	base := Context{Tenant: "acme", Purpose: PurposeIngest, ObjectID: "obj-1"}

	t.Run("RoundTrip", func(t *testing.T) {
		e := newEnvelope(t, Config{KEK: p.kek(t)})
		fresh := newEnvelope(t, Config{KEK: p.kek(t)}) // empty caches: unwraps through the provider
		for _, tc := range []struct {
			name string
			c    Context
			size int
		}{
			{"empty", base, 0},
			{"one byte", base, 1},
			{"1KiB receipt", Context{"acme", PurposeReceipt, "rcpt_01"}, 1 << 10},
			{"64KiB attachment", Context{"globex", PurposeAttachment, "att/2"}, 64 << 10},
			{"unicode tenant", Context{"zürich-ß", PurposeAPIKey, "key 3"}, 100},
		} {
			t.Run(tc.name, func(t *testing.T) {
				pt := payload(tc.size)
				b := mustSeal(t, e, tc.c, pt)
				if tc.size >= 16 && bytes.Contains(b, pt[:16]) {
					t.Fatal("sealed blob contains plaintext")
				}
				mustOpen(t, e, tc.c, b, pt)
				mustOpen(t, fresh, tc.c, b, pt)
			})
		}
	})

	t.Run("SameInputDiffersEachTime", func(t *testing.T) {
		e := newEnvelope(t, Config{KEK: p.kek(t)})
		a := mustSeal(t, e, base, []byte("same"))
		b := mustSeal(t, e, base, []byte("same"))
		if bytes.Equal(a, b) {
			t.Fatal("two seals of the same plaintext are identical: nonce reused")
		}
	})

	t.Run("ContextChangeFails", func(t *testing.T) {
		e := newEnvelope(t, Config{KEK: p.kek(t)})
		pt := []byte("invoice 42")
		b := mustSeal(t, e, base, pt)
		for _, tc := range []struct {
			name string
			c    Context
		}{
			{"tenant", Context{"acme2", base.Purpose, base.ObjectID}},
			{"tenant case", Context{"Acme", base.Purpose, base.ObjectID}},
			{"purpose", Context{base.Tenant, PurposeReceipt, base.ObjectID}},
			{"object id", Context{base.Tenant, base.Purpose, "obj-2"}},
			{"object id prefix", Context{base.Tenant, base.Purpose, "obj-"}},
			{"shifted boundary", Context{"acmei", "ngest", base.ObjectID}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				for _, env := range []*Envelope{e, newEnvelope(t, Config{KEK: p.kek(t)})} {
					got, err := env.Open(ctx, tc.c, b)
					if !errors.Is(err, ErrOpen) || got != nil {
						t.Fatalf("Open with changed %s = %q, %v; want ErrOpen and no plaintext", tc.name, got, err)
					}
				}
			})
		}
		mustOpen(t, e, base, b, pt)
	})

	t.Run("BitFlipFails", func(t *testing.T) {
		pt := []byte("pay 100 to account 7")
		b := mustSeal(t, newEnvelope(t, Config{KEK: p.kek(t)}), base, pt)
		s, err := parseSealed(b)
		if err != nil {
			t.Fatal(err)
		}
		wrappedStart := len(s.header) - len(s.wrapped)
		// One envelope for all flips: flips outside the wrapped key hit
		// the open cache, so this also checks that a cached key never
		// opens a tampered blob.
		e := newEnvelope(t, Config{KEK: p.kek(t)})
		mustOpen(t, e, base, b, pt)
		for i := range len(b) * 8 {
			m := bytes.Clone(b)
			m[i/8] ^= 1 << (i % 8)
			got, err := e.Open(ctx, base, m)
			if got != nil || err == nil {
				t.Fatalf("bit %d flipped: Open = %q, %v; want an error and no plaintext", i, got, err)
			}
			inWrapped := i/8 >= wrappedStart && i/8 < len(s.header)
			if (!inWrapped || p.strictWrapped) && !errors.Is(err, ErrOpen) {
				t.Fatalf("bit %d flipped: Open error %v; want ErrOpen", i, err)
			}
		}
	})

	t.Run("TruncatedOrExtendedFails", func(t *testing.T) {
		e := newEnvelope(t, Config{KEK: p.kek(t)})
		b := mustSeal(t, e, base, []byte("hello"))
		for _, m := range [][]byte{nil, b[:4], b[:len(b)-1], b[:len(b)-16], append(bytes.Clone(b), 0)} {
			if got, err := e.Open(ctx, base, m); !errors.Is(err, ErrOpen) || got != nil {
				t.Fatalf("Open(%d of %d bytes) = %q, %v; want ErrOpen", len(m), len(b), got, err)
			}
		}
	})

	t.Run("WrongKeyFails", func(t *testing.T) {
		b := mustSeal(t, newEnvelope(t, Config{KEK: p.kek(t)}), base, []byte("secret"))
		other := newEnvelope(t, Config{KEK: p.other(t)})
		got, err := other.Open(ctx, base, b)
		if got != nil || err == nil {
			t.Fatalf("Open with another key = %q, %v; want an error", got, err)
		}
		if p.strictWrapped && !errors.Is(err, ErrOpen) {
			t.Fatalf("Open with another key: %v; want ErrOpen", err)
		}
	})

	t.Run("UnavailableIsTemporary", func(t *testing.T) {
		b := mustSeal(t, newEnvelope(t, Config{KEK: p.kek(t)}), base, []byte("secret"))
		e := newEnvelope(t, Config{KEK: p.broken(t)})
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if got, err := e.Seal(ctx, base, []byte("x")); !errors.Is(err, ErrUnavailable) || got != nil {
			t.Fatalf("Seal with unreachable provider = %q, %v; want ErrUnavailable", got, err)
		}
		if p.brokenStillOpens {
			return
		}
		if got, err := e.Open(ctx, base, b); !errors.Is(err, ErrUnavailable) || got != nil {
			t.Fatalf("Open with unreachable provider = %q, %v; want ErrUnavailable", got, err)
		}
	})

	t.Run("CacheBoundsProviderCalls", func(t *testing.T) {
		clock := &fakeClock{t: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)}
		kek := &countingKEK{KEK: p.kek(t)}
		reg := prometheus.NewRegistry()
		e := newEnvelope(t, Config{KEK: kek, MaxAge: time.Minute, MaxUses: 50, Now: clock.Now, Registerer: reg})
		var blobs [][]byte
		for i := range 120 {
			blobs = append(blobs, mustSeal(t, e, Context{"acme", PurposeIngest, fmt.Sprint(i)}, []byte("m")))
		}
		if g, _ := kek.counts(); g != 3 {
			t.Fatalf("120 seals with MaxUses 50: %d data keys generated, want 3", g)
		}
		// Opening in the sealing process needs no unwrap at all.
		for i, b := range blobs[100:] {
			mustOpen(t, e, Context{"acme", PurposeIngest, fmt.Sprint(100 + i)}, b, []byte("m"))
		}
		if _, d := kek.counts(); d != 0 {
			t.Fatalf("opening in the sealing process: %d unwraps, want 0", d)
		}
		mustSeal(t, e, Context{"globex", PurposeIngest, "x"}, []byte("m"))
		if g, _ := kek.counts(); g != 4 {
			t.Fatalf("new tenant: %d data keys generated, want 4", g)
		}
		clock.Advance(time.Minute)
		mustSeal(t, e, Context{"acme", PurposeIngest, "late"}, []byte("m"))
		if g, _ := kek.counts(); g != 5 {
			t.Fatalf("after MaxAge: %d data keys generated, want 5", g)
		}
		// Opening in another process: one unwrap per data key.
		kek2 := &countingKEK{KEK: p.kek(t)}
		e2 := newEnvelope(t, Config{KEK: kek2, MaxAge: time.Minute, Now: clock.Now})
		for i, b := range blobs {
			mustOpen(t, e2, Context{"acme", PurposeIngest, fmt.Sprint(i)}, b, []byte("m"))
		}
		if _, d := kek2.counts(); d != 3 {
			t.Fatalf("opening 120 objects under 3 data keys: %d unwraps, want 3", d)
		}
		if got := counterValue(t, reg, "sealpost_kms_calls_total", map[string]string{"op": "generate_data_key", "outcome": "ok"}); got != 5 {
			t.Errorf("sealpost_kms_calls_total{generate_data_key,ok} = %v, want 5", got)
		}
		if got := counterValue(t, reg, "sealpost_kms_cache_hits_total", map[string]string{"op": "seal"}); got != 122-5 {
			t.Errorf("sealpost_kms_cache_hits_total{seal} = %v, want %d", got, 122-5)
		}
		if got := counterValue(t, reg, "sealpost_kms_cache_hits_total", map[string]string{"op": "open"}); got != 20 {
			t.Errorf("sealpost_kms_cache_hits_total{open} = %v, want 20", got)
		}
	})

	t.Run("ConcurrentSealOneDataKey", func(t *testing.T) {
		kek := &countingKEK{KEK: p.kek(t)}
		e := newEnvelope(t, Config{KEK: kek})
		var wg sync.WaitGroup
		errs := make(chan error, 64)
		for i := range 64 {
			wg.Go(func() {
				c := Context{"acme", PurposeReceipt, fmt.Sprint(i)}
				b, err := e.Seal(ctx, c, []byte("r"))
				if err == nil {
					_, err = e.Open(ctx, c, b)
				}
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if g, d := kek.counts(); g != 1 || d != 0 {
			t.Fatalf("64 concurrent seals and opens: %d generate and %d decrypt calls, want 1 and 0", g, d)
		}
	})

	t.Run("RotationIsTransparent", func(t *testing.T) {
		before := mustSeal(t, newEnvelope(t, Config{KEK: p.kek(t)}), base, []byte("before"))
		p.rotate(t)
		e := newEnvelope(t, Config{KEK: p.kek(t)})
		after := mustSeal(t, e, base, []byte("after"))
		fresh := newEnvelope(t, Config{KEK: p.kek(t)})
		mustOpen(t, fresh, base, before, []byte("before"))
		mustOpen(t, fresh, base, after, []byte("after"))
	})
}
