package audit

import (
	"context"
	"errors"
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

// BenchmarkMessageSteps measures what auditing adds per message on the
// ingest→webhook path: 32 messages in flight, each appending the six
// entries the pipeline writes (auth, api call, received, queued, signed,
// delivered), either one Append after another as the steps happen, or with
// the four ingress entries in one AppendAll. ns/op is per message.
func BenchmarkMessageSteps(b *testing.B) {
	for _, mode := range []string{"sequential", "grouped"} {
		b.Run(mode, func(b *testing.B) {
			ctx := context.Background()
			c := openConn(b)
			entries, cps := plainStreams(b, c, "STEPS")
			l := openLog(b, entries, cps, &testKeys{cur: newTestKey(b, "a")}, func(c *Config) { c.Now = time.Now })
			steps := []string{ActionAuthSuccess, ActionAPICall, ActionReceived, ActionQueued, ActionSigned, ActionDelivered}
			const inFlight = 32
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for w := range inFlight {
				wg.Go(func() {
					for i := w; i < b.N; i += inFlight {
						es := make([]Entry, len(steps))
						for j, a := range steps {
							es[j] = Entry{Actor: "apikey:k1", Action: a, Tenant: "acme", Target: fmt.Sprintf("rcpt_%08d", i),
								Outcome: OutcomeSuccess, Details: map[string]string{"route": "invoices"}}
						}
						var err error
						if mode == "grouped" {
							// received+queued at enqueue, the rest one by one.
							err = l.AppendAll(ctx, es[:4]...)
							for _, e := range es[4:] {
								err = errors.Join(err, l.Append(ctx, e))
							}
						} else {
							for _, e := range es {
								err = errors.Join(err, l.Append(ctx, e))
							}
						}
						if err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "messages/s")
		})
	}
}

// BenchmarkVerify measures Verify over a log of 20,000 entries in batches
// of up to 64, with a checkpoint every 1,000; it reports entries per second.
func BenchmarkVerify(b *testing.B) {
	ctx := context.Background()
	c := openConn(b)
	entries, cps := plainStreams(b, c, "VERIFY")
	keys := &testKeys{cur: newTestKey(b, "a")}
	l := openLog(b, entries, cps, keys, nil)
	const n = 20000
	for i := 0; i < n; i += 64 {
		es := make([]Entry, 0, 64)
		for j := i; j < min(i+64, n); j++ {
			es = append(es, testEntry(j, "acme"))
		}
		if err := l.AppendAll(ctx, es...); err != nil {
			b.Fatal(err)
		}
		if (i/64)%16 == 15 {
			if _, err := l.signCheckpoint(ctx, true); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := l.Close(ctx); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		rep, err := l.Verify(ctx, keys.keySet())
		if err != nil || !rep.OK {
			b.Fatalf("%+v %v", rep, err)
		}
	}
	b.ReportMetric(float64(n*b.N)/time.Since(start).Seconds(), "entries/s")
}
