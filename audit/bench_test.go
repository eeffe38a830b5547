package audit

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// BenchmarkAppend measures durable appends with 1, 16 and 128 concurrent
// appenders against an embedded JetStream file store, and reports entries
// per second and JetStream publishes per entry (group commit).
func BenchmarkAppend(b *testing.B) {
	for _, delay := range []time.Duration{0, time.Millisecond} {
		for _, n := range []int{1, 16, 128} {
			b.Run(fmt.Sprintf("appenders=%d/delay=%v", n, delay), func(b *testing.B) {
				ctx := context.Background()
				c := openConn(b)
				entries, cps := plainStreams(b, c, "BENCH")
				l := openLog(b, entries, cps, &testKeys{cur: newTestKey(b, "a")}, func(c *Config) {
					c.BatchDelay = delay
					c.Now = time.Now
				})
				e := testEntry(1, "acme")
				b.ResetTimer()
				start := time.Now()
				var wg sync.WaitGroup
				for w := range n {
					wg.Go(func() {
						for i := w; i < b.N; i += n {
							if err := l.Append(ctx, e); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				wg.Wait()
				elapsed := time.Since(start)
				b.StopTimer()
				st, err := entries.State(ctx)
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(b.N)/elapsed.Seconds(), "entries/s")
				b.ReportMetric(float64(st.Msgs)/float64(b.N), "publishes/entry")
			})
		}
	}
}
