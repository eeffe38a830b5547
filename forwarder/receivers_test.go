package forwarder

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/sealpost/sealpost/audit/entry"
)

// TestReceivers drives one attempt against receivers that misbehave in
// different ways and checks the recorded class and the decision.
func TestReceivers(t *testing.T) {
	hang := make(chan struct{})
	t.Cleanup(func() { close(hang) })
	for _, tc := range []struct {
		name     string
		answer   func(w http.ResponseWriter, r *http.Request, n int)
		status   int
		class    string
		decision string
	}{
		{"204", func(w http.ResponseWriter, _ *http.Request, _ int) { w.WriteHeader(204) }, 204, "", "ack"},
		{"200 with a large body", func(w http.ResponseWriter, _ *http.Request, _ int) {
			w.Write(make([]byte, 1<<20))
		}, 200, "", "ack"},
		{"500", func(w http.ResponseWriter, _ *http.Request, _ int) { w.WriteHeader(500) }, 500, ClassStatus, "retry"},
		{"400", func(w http.ResponseWriter, _ *http.Request, _ int) { w.WriteHeader(400) }, 400, ClassStatus, "retry"},
		{"429", func(w http.ResponseWriter, _ *http.Request, _ int) { w.WriteHeader(429) }, 429, ClassStatus, "retry"},
		{"redirect", func(w http.ResponseWriter, r *http.Request, _ int) {
			http.Redirect(w, r, "/elsewhere", http.StatusTemporaryRedirect)
		}, 307, ClassRedirect, "retry"},
		{"hang", func(w http.ResponseWriter, r *http.Request, _ int) {
			select {
			case <-hang:
			case <-r.Context().Done():
			}
		}, 0, ClassTimeout, "retry"},
		{"reset", func(w http.ResponseWriter, _ *http.Request, _ int) {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err != nil {
				return
			}
			conn.(*tls.Conn).NetConn().(*net.TCPConn).SetLinger(0)
			conn.(*tls.Conn).NetConn().Close()
		}, 0, ClassConnect, "retry"},
		{"410 dead-letters", func(w http.ResponseWriter, _ *http.Request, _ int) { w.WriteHeader(410) }, 410, ClassStatus, "ack"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(c *Config) { c.Timeout = 500 * time.Millisecond })
			rc := newReceiverH1(t, tc.answer)
			e.route("invoices", rc, nil)
			s := submission(t, "invoices")
			d := &fakeDelivery{}
			e.handle(context.Background(), s, d)
			if d.decision() != tc.decision {
				t.Errorf("decision = %s, want %s", d.decision(), tc.decision)
			}
			as, err := e.w.Attempts(context.Background(), "acme", s.ID)
			if err != nil {
				t.Fatal(err)
			}
			if len(as) != 1 || as[0].Status != tc.status || as[0].Class != tc.class {
				t.Errorf("attempts = %+v, want one with status %d class %q", as, tc.status, tc.class)
			}
			if tc.name == "redirect" && len(rc.requests()) != 1 {
				t.Errorf("redirect was followed: %d requests", len(rc.requests()))
			}
		})
	}
}

// newReceiverH1 is a receiver speaking HTTP/1.1 only, so handlers can hijack.
func newReceiverH1(t testing.TB, answer func(w http.ResponseWriter, r *http.Request, n int)) *receiver {
	return newReceiverOpts(t, answer, false)
}

// TestSlowReader: a receiver that reads the request body slowly runs into
// the total timeout.
func TestSlowReader(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Timeout = 300 * time.Millisecond })
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, _ int) { w.WriteHeader(204) })
	// Replace the handler: read 1 byte every 50ms.
	rc.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 1)
		for {
			if _, err := r.Body.Read(buf); err != nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
	e.route("invoices", rc, nil)
	s := submission(t, "invoices")
	d := &fakeDelivery{}
	e.handle(context.Background(), s, d)
	as, err := e.w.Attempts(context.Background(), "acme", s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if d.decision() != "retry" || as[0].Class != ClassTimeout {
		t.Errorf("decision %s class %q, want retry timeout", d.decision(), as[0].Class)
	}
}

// TestUntrustedCertificate: TLS verification stays on.
func TestUntrustedCertificate(t *testing.T) {
	e := newEnv(t, nil)
	rc := newReceiver(t, nil)
	e.routes.set(Route{Tenant: "acme", Name: "invoices", Endpoint: Endpoint{URL: rc.srv.URL}})
	s := submission(t, "invoices")
	d := &fakeDelivery{}
	e.handle(context.Background(), s, d)
	as, _ := e.w.Attempts(context.Background(), "acme", s.ID)
	if d.decision() != "retry" || len(as) != 1 || as[0].Class != ClassTLS {
		t.Errorf("decision %s attempts %+v, want retry with class tls", d.decision(), as)
	}
	if len(rc.requests()) != 0 {
		t.Error("request reached an untrusted server")
	}
}

// TestConnectRefused: nothing listens.
func TestConnectRefused(t *testing.T) {
	e := newEnv(t, nil)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	e.routes.set(Route{Tenant: "acme", Name: "invoices", Endpoint: Endpoint{URL: "https://" + addr + "/hook"}})
	s := submission(t, "invoices")
	d := &fakeDelivery{}
	e.handle(context.Background(), s, d)
	as, _ := e.w.Attempts(context.Background(), "acme", s.ID)
	if d.decision() != "retry" || len(as) != 1 || as[0].Class != ClassConnect {
		t.Errorf("decision %s attempts %+v, want retry with class connect", d.decision(), as)
	}
}

// TestGoneDisablesEndpoint: a 410 disables the endpoint; later messages are
// dead-lettered without a request until it is re-enabled, and replay then
// delivers them.
func TestGoneDisablesEndpoint(t *testing.T) {
	gone := true
	e := newEnv(t, nil)
	rc := newReceiver(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
		if gone {
			w.WriteHeader(http.StatusGone)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	e.route("invoices", rc, nil)
	ctx := context.Background()
	first, second := submission(t, "invoices"), submission(t, "invoices")
	for _, s := range []struct {
		sub   string
		class string
	}{{first.ID, ClassStatus}, {second.ID, ClassDisabled}} {
		sub := first
		if s.sub == second.ID {
			sub = second
		}
		d := &fakeDelivery{}
		e.handle(ctx, sub, d)
		if !d.acked || !slices.Contains(e.audit.actions(sub.ID), entry.ActionDeadLettered) {
			t.Fatalf("%s: decision %s, audit %v; want ack after dead-lettering", s.sub, d.decision(), e.audit.actions(sub.ID))
		}
		as, err := e.w.Attempts(ctx, "acme", sub.ID)
		if err != nil || len(as) != 1 || as[0].Class != s.class || as[0].Result != ResultDeadLettered {
			t.Errorf("attempts = %+v, %v; want one %s, dead_lettered", as, err, s.class)
		}
	}
	if n := len(rc.requests()); n != 1 {
		t.Errorf("receiver got %d requests, want 1 (the disabled endpoint is not called)", n)
	}
	if dis, _ := e.w.EndpointDisabled(ctx, "acme", "invoices", DefaultEndpoint); !dis {
		t.Error("endpoint not disabled")
	}
	if !slices.ContainsFunc(e.audit.entries, func(a entry.Entry) bool { return a.Action == "endpoint.disable" }) {
		t.Error("disabling was not audited")
	}
	if err := e.w.Redeliver(ctx, "acme", first.ID, ""); !errors.Is(err, ErrEndpointDisabled) {
		t.Errorf("redeliver to a disabled endpoint = %v, want ErrEndpointDisabled", err)
	}
	if n, err := e.w.ReplayDeadLetters(ctx, ReplayFilter{Tenant: "acme"}); n != 0 || !errors.Is(err, ErrEndpointDisabled) || !errors.Is(err, ErrDeliveryFailed) {
		t.Errorf("replay to a disabled endpoint = %d, %v; want 0 and ErrEndpointDisabled", n, err)
	}
	gone = false
	if err := e.w.EnableEndpoint(ctx, "acme", "invoices", DefaultEndpoint); err != nil {
		t.Fatal(err)
	}
	n, err := e.w.ReplayDeadLetters(ctx, ReplayFilter{Tenant: "acme"})
	if err != nil || n != 2 {
		t.Fatalf("replay = %d, %v; want 2 delivered", n, err)
	}
	// A changed URL is a new endpoint: the marker of the old one does not apply.
	gone = true
	third := submission(t, "invoices")
	e.handle(ctx, third, &fakeDelivery{})
	e.route("invoices", rc, func(r *Route) { r.Endpoint.URL += "?v=2" })
	if dis, _ := e.w.EndpointDisabled(ctx, "acme", "invoices", DefaultEndpoint); dis {
		t.Error("a new URL is still disabled")
	}
}

// TestReplayMixedFailures: a replay whose failures are not all for a
// disabled endpoint reports a delivery failure, not a disabled endpoint
// (the API answers the latter with 409).
func TestReplayMixedFailures(t *testing.T) {
	e := newEnv(t, func(cfg *Config) { cfg.Schedule = []time.Duration{0} }) // one attempt, then a dead letter
	gone := newReceiver(t, func(w http.ResponseWriter, _ *http.Request, _ int) { w.WriteHeader(http.StatusGone) })
	failing := newReceiver(t, func(w http.ResponseWriter, _ *http.Request, _ int) { w.WriteHeader(http.StatusBadRequest) })
	e.route("invoices", gone, nil)
	e.route("orders", failing, nil)
	ctx := context.Background()
	for _, route := range []string{"invoices", "orders"} {
		s := submission(t, route)
		e.handle(ctx, s, &fakeDelivery{})
		if !slices.Contains(e.audit.actions(s.ID), entry.ActionDeadLettered) {
			t.Fatalf("%s: not dead-lettered: %v", route, e.audit.actions(s.ID))
		}
	}
	n, err := e.w.ReplayDeadLetters(ctx, ReplayFilter{Tenant: "acme"})
	if n != 0 || !errors.Is(err, ErrDeliveryFailed) || errors.Is(err, ErrEndpointDisabled) {
		t.Errorf("replay = %d, %v; want 0 and ErrDeliveryFailed without ErrEndpointDisabled", n, err)
	}
	n, err = e.w.ReplayDeadLetters(ctx, ReplayFilter{Tenant: "acme", Route: "invoices"})
	if n != 0 || !errors.Is(err, ErrEndpointDisabled) {
		t.Errorf("replay of the disabled route = %d, %v; want 0 and ErrEndpointDisabled", n, err)
	}
}

// TestShutdownDoesNotCountAttempt: an attempt cut short because the worker
// stops is not recorded as a failure; the message is handed back.
func TestShutdownDoesNotCountAttempt(t *testing.T) {
	e := newEnv(t, nil)
	arrived := make(chan struct{}, 1)
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		arrived <- struct{}{}
		<-r.Context().Done()
	})
	e.route("invoices", rc, nil)
	s := submission(t, "invoices")
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-arrived; cancel() }()
	d := &fakeDelivery{}
	e.handle(ctx, s, d)
	if d.decision() != "retry" {
		t.Errorf("decision %s, want retry", d.decision())
	}
	if as, err := e.w.Attempts(context.Background(), "acme", s.ID); err == nil {
		t.Errorf("abandoned attempt recorded: %+v", as)
	}
}
