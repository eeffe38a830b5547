package audit

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/sealpost/sealpost/queue"
)

// benchID returns receipt id j, in groups of 32 ids.
func benchID(j int) string {
	const c = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
	return "rcpt_01JD7QZX3M5K8B2N4P6R" + string([]byte{c[(j>>15)&31], c[(j>>10)&31], c[(j>>5)&31], '0', '0', c[j&31]})
}

// benchSteps appends n receipts' worth of entries (received, queued,
// signed, delivered and an api.call each), in batches as concurrent
// messages share publishes, and returns the receipt ids.
func benchSteps(b *testing.B, l *Log, from, n int) []string {
	b.Helper()
	ctx := context.Background()
	var ids []string
	for i := from; i < from+n; i += 64 {
		var es []Entry
		for j := i; j < min(i+64, from+n); j++ {
			id := benchID(j)
			ids = append(ids, id)
			for _, a := range []string{ActionReceived, ActionQueued, ActionSigned, ActionDelivered} {
				es = append(es, stepEntry(a, "acme", id))
			}
			es = append(es, testEntry(j, "acme"))
		}
		if err := l.AppendAll(ctx, es...); err != nil {
			b.Fatal(err)
		}
	}
	return ids
}

// BenchmarkCheckpointerProofData measures what keeping proof data adds to
// the checkpointer: integrating 10,000 receipts (50,000 entries) and
// signing one checkpoint, with and without tiles and the receipt index.
// It reports ns per entry and the writes the index and tiles cost.
func BenchmarkCheckpointerProofData(b *testing.B) {
	for _, proofs := range []bool{false, true} {
		b.Run(fmt.Sprintf("proofs=%v", proofs), func(b *testing.B) {
			ctx := context.Background()
			c := openConn(b)
			name := fmt.Sprintf("CPBENCH%v", proofs)
			entries, cps := plainStreams(b, c, name)
			keys := &testKeys{cur: newTestKey(b, "a")}
			var mod func(*Config)
			if proofs {
				mod = proofStreams(b, c, name)
			}
			w := openLog(b, entries, cps, keys, mod)
			benchSteps(b, w, 0, 10000)
			n := 0
			_ = entries.Read(ctx, queue.ReadOptions{}, func(m *queue.Msg) error { n += len(splitBatch(m.Data)); return nil })
			b.ResetTimer()
			start := time.Now()
			for range b.N {
				// A fresh checkpointer over the same entries each time:
				// it integrates all of them and writes their proof data.
				l := openLog(b, entries, cps, keys, mod)
				l.tmu.Lock()
				l.keepProofs = proofs && l.tiles != nil
				l.tmu.Unlock()
				if _, err := l.Size(ctx); err != nil {
					b.Fatal(err)
				}
				l.tmu.Lock()
				if err := l.writeProofsLocked(ctx, true); err != nil {
					b.Fatal(err)
				}
				l.tmu.Unlock()
			}
			elapsed := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(elapsed.Nanoseconds())/float64(b.N*n), "ns/entry")
			if proofs {
				l := openLog(b, entries, cps, keys, mod)
				ist, _ := l.index.(*queue.Stream).State(ctx)
				// Every pass writes the same notes under the same message
				// ids, so the stream holds one pass's messages.
				b.ReportMetric(float64(ist.Msgs)/float64(n), "index-msgs/entry")
			}
		})
	}
}

// BenchmarkProofs measures a receipt proof and a consistency proof in a
// log of 50,000 entries.
func BenchmarkProofs(b *testing.B) {
	ctx := context.Background()
	c := openConn(b)
	entries, cps := plainStreams(b, c, "PBENCH")
	keys := &testKeys{cur: newTestKey(b, "a")}
	l := openLog(b, entries, cps, keys, proofStreams(b, c, "PBENCH"))
	ids := benchSteps(b, l, 0, 5000)
	first, err := l.signCheckpoint(ctx, true)
	if err != nil {
		b.Fatal(err)
	}
	ids = append(ids, benchSteps(b, l, 5000, 5000)...)
	if _, err := l.signCheckpoint(ctx, true); err != nil {
		b.Fatal(err)
	}
	b.Run("receipt", func(b *testing.B) {
		for i := range b.N {
			p, err := l.ReceiptProof(ctx, "acme", ids[(i*7919)%len(ids)])
			if err != nil || len(p.Entries) != 4 {
				b.Fatalf("%d entries, %v", len(p.Entries), err)
			}
		}
	})
	b.Run("consistency", func(b *testing.B) {
		for range b.N {
			if _, err := l.ConsistencyProof(ctx, first.Size, 0, true); err != nil {
				b.Fatal(err)
			}
		}
	})
}
