package forwarder

import (
	"context"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sealpost/sealpost/ingress"
	"github.com/sealpost/sealpost/queue"
)

// benchDeliver queues messages spread over endpoints healthy local
// receivers (plus, with hang, messages to one receiver that never answers),
// then measures how fast a consumer with workers workers delivers the
// healthy ones:
// the whole path of sign, seal, store, POST, record, audit (in memory) and
// ack on an embedded JetStream.
func benchDeliver(b *testing.B, endpoints, limit, workers int, hang bool, mods ...func(*Config)) {
	const healthy = 3000
	for range b.N {
		b.StopTimer()
		reg := prometheus.NewRegistry()
		e := newEnv(b, func(c *Config) {
			c.Timeout = 5 * time.Second
			c.Registerer = reg
			for _, m := range mods {
				m(c)
			}
		})
		var delivered atomic.Int64
		for i := range endpoints {
			rc := newReceiver(b, func(w http.ResponseWriter, _ *http.Request, _ int) {
				delivered.Add(1)
				w.WriteHeader(http.StatusNoContent)
			})
			e.route("r"+strconv.Itoa(i), rc, func(r *Route) { r.MaxConcurrency = limit })
		}
		var subs []*ingress.Submission
		if hang {
			stop := make(chan struct{})
			b.Cleanup(func() { close(stop) })
			rc := newReceiver(b, func(w http.ResponseWriter, r *http.Request, _ int) {
				select {
				case <-stop:
				case <-r.Context().Done():
				}
			})
			e.route("hang", rc, nil)
		}
		for i := range healthy {
			subs = append(subs, submission(b, "r"+strconv.Itoa(i%endpoints)))
			if hang && i%5 == 0 {
				subs = append(subs, submission(b, "hang"))
			}
		}
		ctx := context.Background()
		pub := e.publisher()
		for _, s := range subs {
			if err := pub.Enqueue(ctx, s); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		start := time.Now()
		cons, err := e.conn.Consume(ctx, queue.ConsumerConfig{Workers: workers}, e.sealer, e.w.Handle)
		if err != nil {
			b.Fatal(err)
		}
		for delivered.Load() < healthy {
			time.Sleep(time.Millisecond)
		}
		elapsed := time.Since(start)
		b.ReportMetric(counter(b, reg, "sealpost_forwarder_deliveries_total", "deferred")/healthy, "deferrals/delivery")
		b.StopTimer()
		b.ReportMetric(float64(healthy)/elapsed.Seconds(), "deliveries/s")
		stopCtx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		cons.Stop(stopCtx)
		cancel()
	}
}

func BenchmarkDeliver(b *testing.B) {
	b.Run("endpoints=1", func(b *testing.B) { benchDeliver(b, 1, 16, 16, false) })
	b.Run("endpoints=1/limit=4", func(b *testing.B) { benchDeliver(b, 1, 4, 16, false) })
	b.Run("endpoints=100", func(b *testing.B) { benchDeliver(b, 100, 4, 16, false) })
	b.Run("endpoints=10/none-hang", func(b *testing.B) { benchDeliver(b, 10, 4, 16, false) })
	b.Run("endpoints=10/one-hangs", func(b *testing.B) { benchDeliver(b, 10, 4, 16, true) })
	b.Run("endpoints=10/none-hang/workers=64", func(b *testing.B) { benchDeliver(b, 10, 4, 64, false) })
	b.Run("endpoints=10/one-hangs/workers=64", func(b *testing.B) { benchDeliver(b, 10, 4, 64, true) })
}

// BenchmarkDeliverRetention measures what retention costs on the hot
// path: none (no time to live), one retention for every route (each
// message carries a Nats-TTL header on the write it makes anyway), and a
// different retention per route (records of different routes in one batch
// go to different messages).
func BenchmarkDeliverRetention(b *testing.B) {
	b.Run("retention=none", func(b *testing.B) { benchDeliver(b, 10, 4, 16, false) })
	b.Run("retention=30d", func(b *testing.B) {
		benchDeliver(b, 10, 4, 16, false, func(c *Config) { c.Retention = benchRetention{same: true} })
	})
	b.Run("retention=per-route", func(b *testing.B) {
		benchDeliver(b, 10, 4, 16, false, func(c *Config) { c.Retention = benchRetention{} })
	})
}

// benchRetention keeps every route 30 days, or with same unset route rN
// N+1 days.
type benchRetention struct{ same bool }

func (r benchRetention) Retention(_, route string) time.Duration {
	if r.same {
		return 30 * 24 * time.Hour
	}
	n, _ := strconv.Atoi(route[1:])
	return time.Duration(n+1) * 24 * time.Hour
}
func (benchRetention) TenantRetention(string) time.Duration { return 30 * 24 * time.Hour }
func (benchRetention) Durations() []time.Duration           { return nil }

// counter reads the value of a counter with the given label value.
func counter(t testing.TB, g prometheus.Gatherer, name, label string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetValue() == label {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
