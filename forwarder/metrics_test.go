package forwarder

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func gauge(t *testing.T, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return -1
}

func histogramCount(t *testing.T, g prometheus.Gatherer, name, class string) uint64 {
	t.Helper()
	mfs, _ := g.Gather()
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == class {
				return m.GetHistogram().GetSampleCount()
			}
		}
	}
	return 0
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnv(t, func(c *Config) { c.Registerer = reg; c.BreakerFailures = 1 })
	status := 200
	rc := newReceiver(t, func(w http.ResponseWriter, _ *http.Request, _ int) { w.WriteHeader(status) })
	e.route("ok", rc, nil)
	e.route("gone", rc, nil)
	e.route("down", rc, nil)
	ctx := context.Background()
	e.handle(ctx, submission(t, "ok"), &fakeDelivery{})
	status = 410
	e.handle(ctx, submission(t, "gone"), &fakeDelivery{})
	status = 500
	e.handle(ctx, submission(t, "down"), &fakeDelivery{})
	for _, tc := range []struct {
		name string
		got  float64
		want float64
	}{
		{"delivered", counter(t, reg, "sealpost_forwarder_deliveries_total", ResultDelivered), 1},
		{"dead_lettered", counter(t, reg, "sealpost_forwarder_deliveries_total", ResultDeadLettered), 1},
		{"failed", counter(t, reg, "sealpost_forwarder_deliveries_total", ResultFailed), 1},
		{"disabled total", counter(t, reg, "sealpost_forwarder_endpoint_disabled_total", "gone"), 1},
		{"disabled now", gauge(t, reg, "sealpost_forwarder_endpoints_disabled"), 1},
		{"attempts ok", float64(histogramCount(t, reg, "sealpost_forwarder_attempt_duration_seconds", "ok")), 1},
		{"attempts status", float64(histogramCount(t, reg, "sealpost_forwarder_attempt_duration_seconds", ClassStatus)), 2},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %g, want %g", tc.name, tc.got, tc.want)
		}
	}
	// The "down" route's circuit opened after one failure.
	mfs, _ := reg.Gather()
	found := false
	for _, mf := range mfs {
		if mf.GetName() != "sealpost_forwarder_breaker_state" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == "down" || m.GetLabel()[1].GetValue() == "down" {
				found = m.GetGauge().GetValue() == breakerOpen
			}
		}
	}
	if !found {
		t.Error("breaker_state of route down is not open")
	}
	if _, err := New(e.cfg); err == nil {
		t.Error("registering the metrics twice succeeded")
	}
}

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestLogsHoldNoSecrets runs failing, refused and dead-lettered deliveries
// with debug logging and checks that no payload, URL, secret or answer body
// reaches the log.
func TestLogsHoldNoSecrets(t *testing.T) {
	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e := newEnv(t, func(c *Config) {
		c.Logger = logger
		c.Schedule = []time.Duration{0, time.Second}
	})
	secret, _ := GenerateSecret()
	rc := newReceiver(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
		w.WriteHeader(500)
		w.Write([]byte("answer-body-marker"))
	})
	e.route("invoices", rc, func(r *Route) {
		r.Endpoint.URL += "?token=url-token-marker"
		r.Endpoint.Secrets = []Secret{{Value: secret}, {Value: "whsec_malformed-secret-marker"}}
	})
	e.routes.set(Route{Tenant: "acme", Name: "internal", Endpoint: Endpoint{URL: "https://10.0.0.1/?token=url-token-marker"}})
	ctx := context.Background()
	for _, route := range []string{"invoices", "invoices", "internal", "gone-route"} {
		s := submission(t, route)
		for range 2 {
			e.handle(ctx, s, &fakeDelivery{})
		}
	}
	e.w.Redeliver(ctx, "acme", "rcpt_unknown", "")
	out := logs.String()
	if out == "" {
		t.Fatal("nothing was logged")
	}
	for _, marker := range []string{"url-token-marker", "answer-body-marker", "secret-marker",
		strings.TrimPrefix(secret, "whsec_"), "invoice\"", "héllo", "12.50", rc.srv.URL} {
		if strings.Contains(out, marker) {
			t.Errorf("log contains %q", marker)
		}
	}
}
