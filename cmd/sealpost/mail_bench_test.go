package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sealpost/sealpost/ingress"
	"github.com/sealpost/sealpost/ingress/smtpin"
	"github.com/sealpost/sealpost/ingress/smtpin/dnscache"
	"github.com/sealpost/sealpost/ingress/smtpin/dnscache/dnstest"
)

// benchConns is how many persistent STARTTLS connections send at once.
var benchConns = 64

// mail4KiB returns message i: 4096 bytes, unique (so that no message is
// taken for a retry of another), from billing@vendor.test.
func mail4KiB(i int) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "From: Billing <billing@vendor.test>\r\nTo: invoices@acme.test\r\nSubject: Invoice %d\r\n"+
		"Message-ID: <%d@vendor.test>\r\nDate: Sun, 22 Nov 2026 10:00:00 +0000\r\n\r\n", i, i)
	line := strings.Repeat("lorem ipsum ", 6) + "\r\n"
	for b.Len() < 4096 {
		b.WriteString(line)
	}
	return []byte(b.String()[:4094] + "\r\n")
}

// sendAll sends n messages over benchConns persistent STARTTLS connections
// to addr and returns when every one was answered 250. seq numbers the
// messages across calls, so that each is new to the gateway.
func sendAll(b *testing.B, addr string, cfg *tls.Config, seq *atomic.Int64, n int) {
	b.Helper()
	var sent atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, benchConns)
	for range benchConns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := smtp.DialStartTLS(addr, cfg)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			for sent.Add(1) <= int64(n) {
				i := int(seq.Add(1))
				if err := c.SendMail("billing@vendor.test", []string{"invoices@acme.test"}, strings.NewReader(string(mail4KiB(i)))); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}

// BenchmarkMail4KiB sends 4 KiB mails over 64 (SEALPOST_BENCH_CONNS) persistent STARTTLS
// connections, with SPF, DKIM and DMARC answered by the DNS cache (in front
// of a DNS server on loopback), and reports mails per second:
//
//   - end-to-end: the whole gateway: SMTP ingress, sealing, JetStream (every
//     write synced), the worker (receipt, JCS, Ed25519 signature, sealed
//     receipt, audit) and the webhook POST to a local receiver. accepted/s
//     counts 250 answers (each one durable), delivered/s webhooks.
//     end-to-end-sync=1s is the same with nats.sync_interval: 1s.
//   - queue-left-out: the same SMTP ingress and DNS cache in the same
//     process, handing submissions to a counter: the reference measured in
//     the same run, since the machine is shared.
func BenchmarkMail4KiB(b *testing.B) {
	if v := os.Getenv("SEALPOST_BENCH_CONNS"); v != "" {
		benchConns, _ = strconv.Atoi(v)
	}
	dns := dnstest.Start(b, mailZone)
	endToEnd := func(b *testing.B, extra string) {
		rcv := newReceiver(b)
		g := startGateway(b, gatewayOpts{endpoint: rcv.url(), logLevel: "warn", extra: extra,
			smtp: "smtp:\n  max_conns_per_ip: 1000\n  dns:\n    resolver: " + dns.Addr + "\n"})
		cfg := g.smtpTLS(b)
		var seq atomic.Int64
		sendAll(b, g.smtp, cfg, &seq, 20) // warm up: connections, data keys, DNS cache
		rcv.waitFor(b, 20, time.Minute)
		b.ResetTimer()
		start := time.Now()
		sendAll(b, g.smtp, cfg, &seq, b.N)
		accepted := time.Since(start)
		rcv.waitFor(b, 20+b.N, 10*time.Minute)
		total := time.Since(start)
		b.StopTimer()
		b.ReportMetric(float64(b.N)/accepted.Seconds(), "accepted/s")
		b.ReportMetric(float64(b.N)/total.Seconds(), "delivered/s")
	}
	// sync=always is the default: every JetStream write is on disk before
	// the 250. sync=1s shows what those flushes cost.
	b.Run("end-to-end", func(b *testing.B) { endToEnd(b, "") })
	b.Run("end-to-end-sync=1s", func(b *testing.B) { endToEnd(b, "nats:\n  sync_interval: 1s\n") })
	b.Run("queue-left-out", func(b *testing.B) {
		certFile, keyFile, err := ensureDevCert(b.TempDir(), time.Now())
		if err != nil {
			b.Fatal(err)
		}
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			b.Fatal(err)
		}
		cache, err := dnscache.New(dnscache.Config{Upstream: &dnscache.Client{Addr: dns.Addr}})
		if err != nil {
			b.Fatal(err)
		}
		enq := &benchEnqueuer{}
		srv, err := smtpin.New(smtpin.Config{
			Hostname: "mx.acme.test", TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
			Routes:   []smtpin.Route{{Tenant: "acme", Name: "invoices", Recipients: []string{"invoices@acme.test"}}},
			Enqueuer: enq, Blobs: benchBlobs{}, Resolver: cache, MaxConnsPerIP: 1000,
		})
		if err != nil {
			b.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		go srv.Serve(ln)
		defer srv.Shutdown(context.Background())
		cfg := &tls.Config{InsecureSkipVerify: true} // the server is in this process
		var seq atomic.Int64
		sendAll(b, ln.Addr().String(), cfg, &seq, 20)
		b.ResetTimer()
		start := time.Now()
		sendAll(b, ln.Addr().String(), cfg, &seq, b.N)
		elapsed := time.Since(start)
		b.StopTimer()
		b.ReportMetric(float64(b.N)/elapsed.Seconds(), "accepted/s")
		if got := enq.n.Load(); got != int64(20+b.N) {
			b.Fatalf("%d submissions, want %d", got, 20+b.N)
		}
	})
}

type benchEnqueuer struct{ n atomic.Int64 }

func (e *benchEnqueuer) Enqueue(context.Context, *ingress.Submission) error {
	e.n.Add(1)
	return nil
}

type benchBlobs struct{}

func (benchBlobs) PutBlob(_ context.Context, tenant, name string, _ []byte) (string, error) {
	return "attachments/" + tenant + "/" + name, nil
}
