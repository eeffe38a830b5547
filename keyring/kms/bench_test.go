package kms

import (
	"context"
	"fmt"
	"testing"
	"time"
)

var benchSizes = []struct {
	name string
	size int
}{{"1KiB", 1 << 10}, {"64KiB", 64 << 10}}

func BenchmarkSeal(b *testing.B) {
	e := newEnvelope(b, Config{KEK: testLocal(b)})
	for _, s := range benchSizes {
		b.Run(s.name, func(b *testing.B) {
			pt := payload(s.size)
			c := Context{"acme", PurposeIngest, "01JD7Z8Q4K2M3N5P6R7S8T9V0W"}
			b.SetBytes(int64(s.size))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := e.Seal(context.Background(), c, pt); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkOpen(b *testing.B) {
	e := newEnvelope(b, Config{KEK: testLocal(b)})
	for _, s := range benchSizes {
		b.Run(s.name, func(b *testing.B) {
			c := Context{"acme", PurposeIngest, "01JD7Z8Q4K2M3N5P6R7S8T9V0W"}
			sealed := mustSeal(b, e, c, payload(s.size))
			b.SetBytes(int64(s.size))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := e.Open(context.Background(), c, sealed); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkKMSCalls seals 100,000 messages for 10 tenants spread over a
// simulated period, opens them in a second process (a fresh Envelope, as a
// forwarder on another instance would), and reports the provider calls
// that took. Without the cache it would be 200,000.
func BenchmarkKMSCalls(b *testing.B) {
	const messages, tenants = 100_000, 10
	for _, period := range []time.Duration{time.Hour, 6 * time.Minute} {
		b.Run(fmt.Sprintf("100k-msgs-over-%s", period), func(b *testing.B) {
			var generate, decrypts int
			for b.Loop() {
				clock := &fakeClock{t: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)}
				l := testLocal(b)
				sealKEK, openKEK := &countingKEK{KEK: l}, &countingKEK{KEK: l}
				sealer := newEnvelope(b, Config{KEK: sealKEK, Now: clock.Now})
				opener := newEnvelope(b, Config{KEK: openKEK, Now: clock.Now})
				step := period / messages
				for i := range messages {
					c := Context{fmt.Sprint("tenant-", i%tenants), PurposeIngest, fmt.Sprint(i)}
					s := mustSeal(b, sealer, c, []byte("m"))
					if _, err := opener.Open(context.Background(), c, s); err != nil {
						b.Fatal(err)
					}
					clock.Advance(step)
				}
				generate, _ = sealKEK.counts()
				_, decrypts = openKEK.counts()
			}
			b.ReportMetric(float64(generate+decrypts), "kms-calls/100k-msgs")
			b.ReportMetric(float64(generate+decrypts)/period.Seconds(), "kms-calls/s")
			b.ReportMetric(float64(messages)/period.Seconds(), "msgs/s")
		})
	}
}

// BenchmarkAWS measures seal and open through moto_server with the cache
// on, and the provider calls per 100,000 messages.
func BenchmarkAWS(b *testing.B) {
	endpoint := startMoto(b)
	admin := motoAdmin(b, endpoint)
	createKey(b, admin, "alias/bench")
	kek := &countingKEK{KEK: newAWS(b, AWSConfig{KeyID: "alias/bench", Region: motoRegion, Endpoint: endpoint})}
	e := newEnvelope(b, Config{KEK: kek})
	for _, s := range benchSizes {
		b.Run("seal-open-"+s.name, func(b *testing.B) {
			pt := payload(s.size)
			c := Context{"acme", PurposeIngest, "01JD7Z8Q4K2M3N5P6R7S8T9V0W"}
			b.SetBytes(int64(s.size))
			for b.Loop() {
				sealed := mustSeal(b, e, c, pt)
				if _, err := e.Open(context.Background(), c, sealed); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("100k-msgs", func(b *testing.B) {
		var calls int
		for b.Loop() {
			k := &countingKEK{KEK: kek.KEK}
			sealer, opener := newEnvelope(b, Config{KEK: k}), newEnvelope(b, Config{KEK: k})
			for i := range 100_000 {
				c := Context{fmt.Sprint("tenant-", i%10), PurposeIngest, fmt.Sprint(i)}
				if _, err := opener.Open(context.Background(), c, mustSeal(b, sealer, c, []byte("m"))); err != nil {
					b.Fatal(err)
				}
			}
			g, d := k.counts()
			calls = g + d
		}
		b.ReportMetric(float64(calls), "kms-calls/100k-msgs")
	})
}
