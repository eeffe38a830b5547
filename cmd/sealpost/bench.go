package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"
)

// benchFlags are the flags of `sealpost bench`.
type benchFlags struct {
	url, token, route, receiver, metrics, cacert, logLevel string
	n, size, concurrency                                   int
	rate                                                   float64
	self, bare                                             bool
	syncInterval, wait                                     time.Duration
}

const benchUsage = `usage: sealpost bench [flags]

Sends N JSON payloads of a given size to a gateway's ingest API at a rate or
concurrency, receives the webhooks on a receiver of its own, and prints
accepted/s, delivered/s, ingest and end-to-end latency percentiles and the
gateway's CPU time per message and peak memory.

  sealpost bench --self [--bare] [--sync-interval 1s]
      starts a gateway of its own (this binary, embedded defaults, a data dir
      in the temporary directory) whose route posts to the bench's receiver;
      --bare also measures the bare reference pipeline (HTTPS -> JetStream ->
      JCS + Ed25519 -> POST, one write per step, nothing else) in the same run
  sealpost bench --url https://gateway:443 --token TOKEN --route R \
                 --receiver 0.0.0.0:8099 [--metrics http://gateway:9090/metrics]
      measures your own gateway; its route R must post to the receiver's
      address (http, so the route needs allow_http and forward.allow_networks)

flags:
`

func runBench(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "serve-bare" {
		return runServeBare(ctx, args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, benchUsage); fs.PrintDefaults() }
	var f benchFlags
	fs.StringVar(&f.url, "url", "", "the gateway's HTTPS `URL` (with --token and --route)")
	fs.StringVar(&f.token, "token", getenv("SEALPOST_BENCH_TOKEN"), "ingest API key (env SEALPOST_BENCH_TOKEN)")
	fs.StringVar(&f.route, "route", "", "ingest `route`")
	fs.StringVar(&f.receiver, "receiver", "127.0.0.1:0", "`address` the webhook receiver listens on")
	fs.StringVar(&f.metrics, "metrics", "", "the gateway's /metrics `URL`, for its CPU time and memory")
	fs.StringVar(&f.cacert, "cacert", "", "PEM `file` of the CA that signed the gateway's certificate (default: the system roots)")
	fs.StringVar(&f.logLevel, "log-level", "info", "with --self: the gateway's log level")
	fs.IntVar(&f.n, "n", 20000, "number of payloads")
	fs.IntVar(&f.size, "size", 1024, "payload size in `bytes`")
	fs.IntVar(&f.concurrency, "concurrency", 32, "senders with a keep-alive connection each")
	fs.Float64Var(&f.rate, "rate", 0, "payloads per second (0: as fast as the senders go)")
	fs.BoolVar(&f.self, "self", false, "start a gateway of its own")
	fs.BoolVar(&f.bare, "bare", false, "with --self: also measure the bare reference pipeline")
	fs.DurationVar(&f.syncInterval, "sync-interval", 0, "with --self: nats.sync_interval of the gateway (0: every write flushed)")
	fs.DurationVar(&f.wait, "wait", 10*time.Minute, "how long to wait for the deliveries once sending ended")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitError{code: 0}
		}
		return exitError{code: 2}
	}
	switch {
	case fs.NArg() > 0:
		return usageError("bench: unexpected argument %q", fs.Arg(0))
	case f.n < 1 || f.n > 10_000_000, f.size < 64 || f.size > 8<<20, f.concurrency < 1 || f.concurrency > 4096, f.rate < 0:
		return usageError("bench: --n 1..10000000, --size 64..8388608, --concurrency 1..4096, --rate >= 0")
	case f.self && f.url != "":
		return usageError("bench: --self or --url, not both")
	case !f.self && (f.url == "" || f.token == "" || f.route == ""):
		return usageError("bench: --url, --token and --route are needed without --self")
	case f.bare && !f.self:
		return usageError("bench: --bare needs --self, so that both run on this machine")
	}
	rcv, err := startBenchReceiver(f.receiver)
	if err != nil {
		return err
	}
	defer rcv.close()
	spec := loadSpec{n: f.n, size: f.size, concurrency: f.concurrency, rate: f.rate}
	fmt.Fprintf(stdout, "sealpost bench: %d payloads of %d bytes, %d senders, rate %s; receiver %s\n",
		f.n, f.size, f.concurrency, rateText(f.rate), rcv.url())
	var rows []benchRow
	if f.self {
		row, err := benchSelf(ctx, rcv, spec, f, false)
		if err != nil {
			return err
		}
		rows = append(rows, row)
		if f.bare {
			row, err := benchSelf(ctx, rcv, spec, f, true)
			if err != nil {
				return err
			}
			rows = append(rows, row)
		}
	} else {
		row, err := benchRemote(ctx, rcv, spec, f)
		if err != nil {
			return err
		}
		rows = append(rows, row)
	}
	printBench(stdout, rows)
	for _, r := range rows {
		if r.stats.delivered < r.stats.accepted {
			return exitError{code: 1, msg: fmt.Sprintf("bench: %s: %d accepted, %d delivered: %v", r.name, r.stats.accepted, r.stats.delivered, errIncomplete)}
		}
	}
	return nil
}

func rateText(r float64) string {
	if r == 0 {
		return "unbounded"
	}
	return fmt.Sprintf("%g/s", r)
}

// benchRow is one measured target.
type benchRow struct {
	name    string
	stats   benchStats
	cpu     time.Duration // the target's CPU time during the run; 0 unknown
	peakRSS int64
}

// warmup is how many payloads are sent before measuring, so connection
// set-up and first-use costs are not counted.
func warmup(spec loadSpec) loadSpec {
	spec.n = min(spec.n/10+1, 500)
	spec.rate = 0
	return spec
}

// benchSelf measures a gateway (or the bare pipeline) this command starts.
func benchSelf(ctx context.Context, rcv *benchReceiver, spec loadSpec, f benchFlags, bare bool) (benchRow, error) {
	var (
		p   *benchProcess
		t   benchTarget
		err error
	)
	name := "sealpost"
	if f.syncInterval > 0 {
		name += " (sync " + f.syncInterval.String() + ")"
	}
	if bare {
		name = "bare pipeline"
		p, t, err = startBareProcess(ctx, rcv.url(), f.syncInterval)
	} else {
		p, t, err = startSelfGateway(ctx, rcv.url(), f.logLevel, f.syncInterval)
	}
	if err != nil {
		return benchRow{}, err
	}
	defer p.stop()
	row, err := measure(ctx, rcv, t, spec, f.wait, p.usage)
	row.name = name
	return row, err
}

// benchRemote measures a gateway the user runs.
func benchRemote(ctx context.Context, rcv *benchReceiver, spec loadSpec, f benchFlags) (benchRow, error) {
	t := benchTarget{ingestURL: strings.TrimSuffix(f.url, "/") + "/v1/ingest/" + f.route, token: f.token, tls: &tls.Config{}}
	if f.cacert != "" {
		pemBytes, err := os.ReadFile(f.cacert)
		if err != nil {
			return benchRow{}, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemBytes) {
			return benchRow{}, fmt.Errorf("bench: no certificate in %s", f.cacert)
		}
		t.tls.RootCAs = pool
	}
	var usage func() (time.Duration, int64, error)
	if f.metrics != "" {
		usage = func() (time.Duration, int64, error) { return scrapeUsage(ctx, f.metrics) }
	}
	row, err := measure(ctx, rcv, t, spec, f.wait, usage)
	row.name = "gateway"
	return row, err
}

// measure warms up, then sends the load, waits for the deliveries and
// reads the target's usage before and after.
func measure(ctx context.Context, rcv *benchReceiver, t benchTarget, spec loadSpec, wait time.Duration, usage func() (time.Duration, int64, error)) (benchRow, error) {
	w := sendLoad(ctx, t, warmup(spec))
	rcv.await(ctx, acceptedIDs(w), time.Minute)
	var cpu0 time.Duration
	if usage != nil {
		var err error
		if cpu0, _, err = usage(); err != nil {
			return benchRow{}, fmt.Errorf("bench: target usage: %w", err)
		}
	}
	peak := int64(0)
	stopPeak := make(chan struct{})
	peakDone := make(chan struct{})
	go func() {
		// Sample memory while the run lasts (/proc keeps a peak itself;
		// /metrics does not).
		defer close(peakDone)
		tk := time.NewTicker(250 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stopPeak:
				return
			case <-tk.C:
				if usage != nil {
					if _, rss, err := usage(); err == nil {
						peak = max(peak, rss)
					}
				}
			}
		}
	}()
	reqs := sendLoad(ctx, t, spec)
	arrivals := rcv.await(ctx, acceptedIDs(reqs), wait)
	close(stopPeak)
	<-peakDone
	row := benchRow{stats: summarise(reqs, arrivals)}
	if usage != nil {
		cpu1, rss, err := usage()
		if err != nil {
			return row, fmt.Errorf("bench: target usage: %w", err)
		}
		row.cpu, row.peakRSS = cpu1-cpu0, max(peak, rss)
	}
	return row, nil
}

func acceptedIDs(reqs []sent) []string {
	var ids []string
	for _, r := range reqs {
		if r.id != "" && r.status == 202 {
			ids = append(ids, r.id)
		}
	}
	return ids
}

func printBench(w io.Writer, rows []benchRow) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\ttarget\taccepted/s\tdelivered/s\tingest p50 / p99 / max\tend to end p50 / p99 / max\tCPU/msg\tpeak RSS\trefused\tfailed\t")
	for _, r := range rows {
		s := r.stats
		cpu, rss := "-", "-"
		if r.cpu > 0 && s.delivered > 0 {
			cpu = (r.cpu / time.Duration(s.delivered)).Round(time.Microsecond).String()
		}
		if r.peakRSS > 0 {
			rss = fmt.Sprintf("%d MiB", r.peakRSS>>20)
		}
		fmt.Fprintf(tw, "\t%s\t%.0f\t%.0f\t%s / %s / %s\t%s / %s / %s\t%s\t%s\t%d\t%d\t\n", r.name, s.acceptedPerSec, s.deliveredPerSec,
			ms(quantile(s.ingest, 0.5)), ms(quantile(s.ingest, 0.99)), ms(quantile(s.ingest, 1)),
			ms(quantile(s.endToEnd, 0.5)), ms(quantile(s.endToEnd, 0.99)), ms(quantile(s.endToEnd, 1)),
			cpu, rss, s.refused, s.failed)
	}
	_ = tw.Flush()
}

func ms(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return d.Round(time.Second).String()
	case d >= 10*time.Millisecond:
		return d.Round(time.Millisecond).String()
	}
	return d.Round(10 * time.Microsecond).String()
}
