package smtpin

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sealpost/sealpost/ingress"
)

// discardBlobs stores nothing, so that benchmarks measure the ingress only.
type discardBlobs struct{}

func (discardBlobs) PutBlob(_ context.Context, tenant, name string, _ []byte) (string, error) {
	return "blob:" + tenant + "/" + name, nil
}

// countingEnqueuer counts submissions without keeping them.
type countingEnqueuer struct{ n atomic.Int64 }

func (e *countingEnqueuer) Enqueue(context.Context, *ingress.Submission) error {
	e.n.Add(1)
	return nil
}

func messageOfSize(n int) []byte {
	var b strings.Builder
	b.WriteString(simpleMessage)
	line := strings.Repeat("lorem ipsum ", 6) + "\r\n"
	for b.Len() < n {
		b.WriteString(line)
	}
	return []byte(b.String()[:n-2] + "\r\n")
}

// BenchmarkThroughput sends messages over one persistent STARTTLS
// connection and reports messages per second.
func BenchmarkThroughput(b *testing.B) {
	for _, size := range []int{4 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			enq := &countingEnqueuer{}
			ts := startServer(b, func(c *Config) { c.Enqueuer = enq; c.Blobs = discardBlobs{} })
			c := ts.dial(b, true)
			msg := messageOfSize(size)
			b.SetBytes(int64(size))
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				if _, err := send(c, "billing@vendor.example", []string{"invoices@in.example.net"}, msg); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}

// sealingBlobs allocates what sealing a blob allocates (a ciphertext as
// large as the data) and drops it, so that memory benchmarks count it.
type sealingBlobs struct{}

func (sealingBlobs) PutBlob(_ context.Context, tenant, name string, data []byte) (string, error) {
	sealed := make([]byte, len(data)+64)
	copy(sealed, data)
	runtime.KeepAlive(sealed)
	return "blob:" + tenant + "/" + name, nil
}

// BenchmarkPeakMemory25MiB accepts one message just under the 25 MiB limit
// and reports the peak heap in use while the server receives, parses, seals
// and queues it, relative to the message size: one with an 18 MiB
// attachment (base64), one with a 24 MiB plain-text body.
func BenchmarkPeakMemory25MiB(b *testing.B) {
	b.Run("attachment", func(b *testing.B) { benchPeakMemory(b, mimeWithAttachment(bigAttachment(18<<20))) })
	b.Run("text", func(b *testing.B) { benchPeakMemory(b, messageOfSize(24<<20)) })
}

func benchPeakMemory(b *testing.B, msg []byte) {
	enq := &countingEnqueuer{}
	ts := startServer(b, func(c *Config) { c.Enqueuer = enq; c.Blobs = sealingBlobs{} })
	if int64(len(msg)) >= DefaultMaxMessageBytes {
		b.Fatalf("message of %d bytes is over the limit", len(msg))
	}
	for i := 0; i < b.N; i++ {
		c := ts.dial(b, true)
		runtime.GC()
		var base runtime.MemStats
		runtime.ReadMemStats(&base)

		var peak atomic.Uint64
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			var m runtime.MemStats
			t := time.NewTicker(2 * time.Millisecond)
			defer t.Stop()
			for {
				runtime.ReadMemStats(&m)
				if m.HeapInuse > peak.Load() {
					peak.Store(m.HeapInuse)
				}
				select {
				case <-stop:
					return
				case <-t.C:
				}
			}
		}()
		if _, err := send(c, "billing@vendor.example", []string{"invoices@in.example.net"}, msg); err != nil {
			b.Fatal(err)
		}
		close(stop)
		wg.Wait()
		grow := float64(peak.Load()-base.HeapInuse) / (1 << 20)
		b.ReportMetric(float64(len(msg))/(1<<20), "msg_MiB")
		b.ReportMetric(grow, "peak_heap_growth_MiB")
		b.ReportMetric(grow/(float64(len(msg))/(1<<20)), "x_msg_size")
		c.Close()
	}
}
