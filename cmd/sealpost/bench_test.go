package main

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// BenchmarkIngestToWebhook measures the whole path: HTTPS POST of a 1 KiB
// JSON document, sealing, JetStream, the worker (open, receipt, JCS,
// Ed25519, seal and store the receipt, audit) and the webhook POST to a
// local receiver. It reports delivered messages per second.
func BenchmarkIngestToWebhook(b *testing.B) {
	// sync=always is the default: every JetStream write is on disk before
	// it is acknowledged. sync=1s shows what that costs.
	b.Run("sync=always", func(b *testing.B) { benchIngestToWebhook(b, "") })
	b.Run("sync=1s", func(b *testing.B) { benchIngestToWebhook(b, "nats:\n  sync_interval: 1s\n") })
}

func benchIngestToWebhook(b *testing.B, extra string) {
	rcv := newReceiver(b)
	g := startGateway(b, gatewayOpts{endpoint: rcv.url(), logLevel: "warn", extra: extra + "ingest:\n  rate_per_second: 1000000\n  burst: 1000000\n"})
	body := `{"pad":"` + strings.Repeat("x", 1024-10) + `"}`
	const senders = 32
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	work := make(chan struct{}, b.N)
	for range b.N {
		work <- struct{}{}
	}
	close(work)
	for range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range work {
				req, _ := http.NewRequest("POST", "https://"+g.https+"/v1/ingest/invoices", strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+g.token)
				req.Header.Set("Content-Type", "application/json")
				resp, err := g.client.Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body) // so the connection is reused
				resp.Body.Close()
				if resp.StatusCode != http.StatusAccepted {
					b.Errorf("status %d", resp.StatusCode)
					return
				}
			}
		}()
	}
	wg.Wait()
	accepted := time.Since(start)
	rcv.waitFor(b, b.N, 10*time.Minute)
	total := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/accepted.Seconds(), "accepted/s")
	b.ReportMetric(float64(b.N)/total.Seconds(), "delivered/s")
}
