package keyring

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// eventually polls cond until it holds or a generous deadline passes. The
// deadline only bounds a hung test; nothing asserts on how long it took.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRunConverges runs two instances on one NATS server with Run: one
// creates the next key by itself when it is due, the other, which never
// checks on its own (CheckInterval 1h), learns of it and of an emergency
// rotation through its watch.
func TestRunConverges(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	clk := newClock(date("2026-03-01T00:00:00Z"))
	first := openConn(t, t.TempDir(), true)
	second := dialConn(t, first)
	kmsDir := t.TempDir()
	rnd := &detRand{label: t.Name()}
	regA := prometheus.NewRegistry()
	a, err := New(ctx, Config{Store: kvStore(openKV(t, first)), Sealer: newSealer(t, kmsDir), Now: clk.Now, Rand: rnd,
		CheckInterval: 10 * time.Millisecond, Registerer: regA})
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(ctx, Config{Store: kvStore(openKV(t, second)), Sealer: newSealer(t, kmsDir), Now: clk.Now, Rand: rnd,
		CheckInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	go a.Run(ctx)
	go b.Run(ctx)

	if n := len(b.KeySet(clk.Now(), false).Keys); n != 1 {
		t.Fatalf("jwks has %d keys before the next is due", n)
	}
	// The next quarter's key becomes due: a creates it by itself, b sees it.
	clk.Set(date("2026-03-18T00:00:00Z"))
	eventually(t, "the second instance publishes the next key", func() bool {
		return len(b.KeySet(clk.Now(), false).Keys) == 2
	})
	if got := metricValue(t, a.m.created.WithLabelValues(originSchedule)); got != 1 {
		t.Errorf("scheduled keys created by the running instance = %v, want 1", got)
	}
	if got := metricValue(t, a.m.created.WithLabelValues(originSchedule)) + metricValue(t, b.m.created.WithLabelValues(originSchedule)); got != 1 {
		t.Errorf("scheduled keys created in all = %v, want 1", got)
	}
	// An emergency rotation on b reaches a before it takes effect.
	rot, err := b.Rotate(ctx, "admin")
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the first instance sees the rotated key", func() bool {
		return slices.Contains(setKIDs(a.KeySet(clk.Now(), false)), rot.KID)
	})
	clk.Advance(RotationDelay)
	cur, _, err := a.SigningKeys(ctx, clk.Now())
	if err != nil || cur.KID != rot.KID {
		t.Fatalf("after the rotation takes effect a signs with %s (%v), want %s", cur.KID, err, rot.KID)
	}
	if got := gathered(t, regA, "sealpost_keyring_next_key_published"); got != 1 {
		t.Errorf("next_key_published = %v, want 1", got)
	}
	if got := gathered(t, regA, "sealpost_keyring_current_key_signs_until_timestamp_seconds"); got != float64(date("2026-04-01T00:00:00Z").Unix()) {
		t.Errorf("current_key_signs_until = %v", got)
	}
}

func metricValue(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	return d.GetCounter().GetValue()
}

// gathered returns the value of a single-series gauge from reg.
func gathered(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.Metric) == 1 {
			return mf.Metric[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}
