package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sealpost/sealpost/keyring/kms"
)

// BenchmarkRestoreDrill measures the recovery time (RTO) of a gateway
// holding 100,000 delivered receipts (SEALPOST_DRILL_RECEIPTS changes the
// number): from an empty machine, with the backup in S3 (moto_server) and
// the master key at hand, to a restored gateway that has accepted a new
// message and delivered it. Set-up (ingesting and delivering the receipts,
// the backup) is not timed. As a reference from the same run it also
// times an empty gateway's start to its first delivery.
//
//	go test -run '^$' -bench RestoreDrill -benchtime 1x -timeout 60m ./cmd/sealpost/
//
// Metrics: rto-s (the whole drill), restore-s (the snapshot into the empty
// data dir), start-s (serve until it listens), deliver-s (first message
// accepted and delivered), ref-empty-s (the reference), backup-s and
// backup-MB (the set-up's backup).
func BenchmarkRestoreDrill(b *testing.B) {
	n := 100_000
	if v := os.Getenv("SEALPOST_DRILL_RECEIPTS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			b.Fatalf("SEALPOST_DRILL_RECEIPTS=%q", v)
		}
	}
	endpoint := startMoto(b)
	createBackupBuckets(b, endpoint)
	extra := backupYAML(endpoint) + "ingest:\n  rate_per_second: 1000000\n  burst: 1000000\n"
	rcvA := newReceiver(b)
	dir1 := b.TempDir()
	g := startGateway(b, gatewayOpts{dataDir: dir1, endpoint: rcvA.url(), logLevel: "warn", extra: extra})
	start := time.Now()
	ingestMany(b, g, n)
	rcvA.waitFor(b, n, 60*time.Minute)
	b.Logf("set-up: %d receipts accepted and delivered in %s", n, time.Since(start).Round(time.Second))
	bstart := time.Now()
	out, err := g.cli("backup", "now")
	if err != nil {
		b.Fatalf("backup: %v %s", err, out)
	}
	backupTook := time.Since(bstart)
	var bres struct {
		Snapshot string
		Bytes    int64
	}
	if err := json.Unmarshal([]byte(out), &bres); err != nil {
		b.Fatal(err)
	}
	cfgFile, token, admin := g.cfgFile, g.token, g.admin
	if err := g.stop(); err != nil {
		b.Fatal(err)
	}

	// Reference: an empty gateway's start and first delivery.
	rcvR := newReceiver(b)
	rstart := time.Now()
	gr := startGateway(b, gatewayOpts{endpoint: rcvR.url(), logLevel: "warn", extra: extra, token: token, admin: admin})
	deliverOne(b, gr, rcvR)
	refTook := time.Since(rstart)
	_ = gr.stop()

	var restoreTook, startTook, deliverTook time.Duration
	b.ResetTimer()
	for range b.N {
		dir2 := b.TempDir()
		t0 := time.Now()
		// The new machine gets the master key (kept apart from the
		// backups), then the restore.
		b.StopTimer()
		key, err := os.ReadFile(filepath.Join(dir1, kms.MasterKeyFile))
		if err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir2, kms.MasterKeyFile), key, 0o600); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		cfg, err := LoadConfig(cfgFile)
		if err != nil {
			b.Fatal(err)
		}
		cfg.DataDir = dir2
		if _, err := restoreSnapshot(context.Background(), cfg, bres.Snapshot, "primary", newLogger(io.Discard, "warn")); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		rcvB := newReceiver(b)
		g2 := startGateway(b, gatewayOpts{dataDir: dir2, endpoint: rcvB.url(), logLevel: "warn", extra: extra, token: token, admin: admin})
		t2 := time.Now()
		deliverOne(b, g2, rcvB)
		t3 := time.Now()
		restoreTook, startTook, deliverTook = restoreTook+t1.Sub(t0), startTook+t2.Sub(t1), deliverTook+t3.Sub(t2)
		b.StopTimer()
		// Not timed: the restored gateway is whole.
		if out, err := g2.cli("audit", "verify"); err != nil {
			b.Fatalf("audit verify after restore: %v %s", err, out)
		}
		_ = g2.stop()
		b.StartTimer()
	}
	b.StopTimer()
	per := func(d time.Duration) float64 { return d.Seconds() / float64(b.N) }
	b.ReportMetric(per(restoreTook+startTook+deliverTook), "rto-s")
	b.ReportMetric(per(restoreTook), "restore-s")
	b.ReportMetric(per(startTook), "start-s")
	b.ReportMetric(per(deliverTook), "deliver-s")
	b.ReportMetric(refTook.Seconds(), "ref-empty-s")
	b.ReportMetric(backupTook.Seconds(), "backup-s")
	b.ReportMetric(float64(bres.Bytes)/(1<<20), "backup-MB")
}

// ingestMany posts n small documents from 64 senders.
func ingestMany(b *testing.B, g *testGateway, n int) {
	work := make(chan int, n)
	for i := range n {
		work <- i
	}
	close(work)
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for i := range work {
				body := fmt.Sprintf(`{"invoice":%d,"amount":"12.50","pad":%q}`, i, strings.Repeat("x", 200))
				req, _ := http.NewRequest("POST", "https://"+g.https+"/v1/ingest/invoices", strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+g.token)
				req.Header.Set("Content-Type", "application/json")
				resp, err := g.client.Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusAccepted {
					b.Errorf("status %d", resp.StatusCode)
					return
				}
			}
		})
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
}

// deliverOne posts one message and waits until rcv got that very one.
func deliverOne(b *testing.B, g *testGateway, rcv *receiver) {
	code, doc, _ := g.ingest("invoices", `{"drill":true}`, nil)
	if code != http.StatusAccepted {
		b.Fatalf("ingest: %d %v", code, doc)
	}
	id, _ := doc["id"].(string)
	deadline := time.After(10 * time.Minute)
	for {
		rcv.mu.Lock()
		ok := rcv.ids[id]
		rcv.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-rcv.notify:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			b.Fatalf("message %s not delivered within 10 minutes", id)
		}
	}
}
