package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sealpost/sealpost/keyring/kms"
)

// natsCluster is three JetStream servers clustered on loopback, each a
// nats-server process of its own (built from the module sealpost uses), so
// that a node can be killed as kill -9 kills it.
type natsCluster struct {
	t     testing.TB
	names []string
	procs []*exec.Cmd
	urls  []string
}

// natsServerBinary builds the nats-server of go.mod's version into a
// temporary directory.
func natsServerBinary(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "nats-server")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/nats-io/nats-server/v2")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build nats-server: %v\n%s", err, out)
	}
	return bin
}

func startCluster(t testing.TB) *natsCluster {
	t.Helper()
	bin := natsServerBinary(t)
	c := &natsCluster{t: t}
	ports := []int{freePort(t), freePort(t), freePort(t)}
	for i := range 3 {
		var routes []string
		for j, p := range ports {
			if j != i {
				routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
			}
		}
		name, dir, port := fmt.Sprintf("n%d", i+1), t.TempDir(), freePort(t)
		conf := fmt.Sprintf("server_name: %s\nlisten: 127.0.0.1:%d\nmax_payload: 8MB\n"+
			"jetstream { store_dir: %q }\n"+
			"cluster { name: sealpost-test, listen: 127.0.0.1:%d, routes: [%s] }\n",
			name, port, dir, ports[i], strings.Join(routes, ", "))
		path := filepath.Join(dir, "nats.conf")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "-c", path)
		logf, err := os.Create(filepath.Join(dir, "nats.log"))
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		t.Cleanup(func() {
			if t.Failed() {
				out, _ := os.ReadFile(logf.Name())
				t.Logf("%s log (tail):\n%s", name, tail(string(out), 40))
			}
		})
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		})
		c.names = append(c.names, name)
		c.procs = append(c.procs, cmd)
		c.urls = append(c.urls, fmt.Sprintf("nats://127.0.0.1:%d", port))
	}
	// Wait until a stream of three replicas can be placed: every node is
	// in the JetStream cluster.
	js := c.js()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "PROBE", Subjects: []string{"probe"}, Replicas: 3})
		if err == nil {
			err = js.DeleteStream(ctx, "PROBE")
		}
		cancel()
		if err == nil {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("JetStream cluster not ready: %v", err)
		}
	}
}

func (c *natsCluster) url() string { return strings.Join(c.urls, ",") }

// js connects to the cluster for inspection.
func (c *natsCluster) js() jetstream.JetStream {
	c.t.Helper()
	nc, err := nats.Connect(c.url(), nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		c.t.Fatal(err)
	}
	return js
}

// kill kills the node named name with SIGKILL (kill -9).
func (c *natsCluster) kill(name string) {
	for i, n := range c.names {
		if n == name {
			if err := c.procs[i].Process.Signal(syscall.SIGKILL); err != nil {
				c.t.Errorf("kill %s: %v", name, err)
			}
			return
		}
	}
	c.t.Fatalf("no node %q", name)
}

// load posts to the gateways in turn at rate per second for d and reports
// every answer.
type loadResult struct {
	mu       sync.Mutex
	accepted []string
	refused  map[int]int
	failed   int
	lastOK   atomic.Int64 // unix nanos of the newest 202
	lastBad  time.Time    // when the newest answer other than 202 (or error) came
	// when the newest request answered other than 202 (or failing) was sent
	lastBadSent time.Time
	// latency of every request, by when it was sent
	sent    []time.Time
	latency []time.Duration
}

// worst returns the longest answer time of requests sent at or after from.
func (r *loadResult) worst(from time.Time) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	var w time.Duration
	for i, at := range r.sent {
		if !at.Before(from) {
			w = max(w, r.latency[i])
		}
	}
	return w
}

// quantile returns the q-quantile of the answer times.
func (r *loadResult) quantile(q float64) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.latency) == 0 {
		return 0
	}
	l := slices.Clone(r.latency)
	slices.Sort(l)
	return l[min(len(l)-1, int(q*float64(len(l))))]
}

func runLoad(t testing.TB, gs []*testGateway, rate int, d time.Duration, res *loadResult, onTick func(i int)) {
	t.Helper()
	if res.refused == nil {
		res.refused = map[int]int{}
	}
	body := `{"pad":"` + strings.Repeat("x", 1000) + `"}`
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	n := int(d.Seconds() * float64(rate))
	for i := range n {
		<-tick.C
		if onTick != nil {
			onTick(i)
		}
		g := gs[i%len(gs)]
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			req, _ := http.NewRequest("POST", "https://"+g.https+"/v1/ingest/invoices", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+g.token)
			req.Header.Set("Content-Type", "application/json")
			sent := time.Now()
			resp, err := g.client.Do(req)
			res.mu.Lock()
			defer res.mu.Unlock()
			res.sent, res.latency = append(res.sent, sent), append(res.latency, time.Since(sent))
			if err != nil {
				res.failed++
				res.lastBad, res.lastBadSent = time.Now(), later(res.lastBadSent, sent)
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusAccepted {
				res.refused[resp.StatusCode]++
				res.lastBad, res.lastBadSent = time.Now(), later(res.lastBadSent, sent)
				return
			}
			id := strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(string(b)), `{"id":"`), `"}`)
			res.accepted = append(res.accepted, id)
			res.lastOK.Store(time.Now().UnixNano())
		})
	}
	wg.Wait()
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// shareMasterKey gives every data dir the same local master key, as a
// shared KMS would: instances open what the others sealed.
func shareMasterKey(t testing.TB, dirs ...string) {
	t.Helper()
	if _, err := kms.OpenLocal(dirs[0]); err != nil {
		t.Fatal(err)
	}
	key, err := os.ReadFile(filepath.Join(dirs[0], kms.MasterKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs[1:] {
		if err := os.WriteFile(filepath.Join(d, kms.MasterKeyFile), key, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// clusterReport is what a scale-out run saw.
type clusterReport struct {
	steady, outage *loadResult
	leader         string        // the node killed: it led INGEST
	newLeader      string        // the INGEST leader after it
	election       time.Duration // from the kill until the cluster named newLeader
	elections      time.Duration // from the kill until INGEST and AUDIT both had a live leader
	refusingFor    time.Duration // from the kill until the last answer other than 202
	refusedSent    time.Duration // from the kill until the last refused request was sent
	killedAt       time.Time     // when it was killed
	worstAfterKill time.Duration // the longest answer to a request sent after the kill
	lost           []string      // accepted but never delivered
	maxConsumers   int           // the most consumers of any stream
	consumersOf    string        // that stream
	verify         string        // audit verify's output
	verifyErr      error
}

// awaitLeader polls until the cluster names a leader of stream other than
// dead, for at most 30 s, and answers it and the time since killedAt. A
// poll that times out makes the figure late, never early.
func awaitLeader(js jetstream.JetStream, stream, dead string, killedAt time.Time) (string, time.Duration) {
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		s, err := js.Stream(ctx, stream)
		cancel()
		if err == nil && s.CachedInfo().Cluster != nil && s.CachedInfo().Cluster.Leader != "" && s.CachedInfo().Cluster.Leader != dead {
			return s.CachedInfo().Cluster.Leader, time.Since(killedAt)
		}
	}
	return "", 30 * time.Second
}

// runScaleOut runs two gateways on a three-node JetStream cluster (three
// nats-server processes) with three replicas: they start at the same moment, take rate requests/s
// between them for steadyFor, then for outageFor more, killing the node
// that leads INGEST killAfter into it. It waits for every accepted message
// to be delivered, counts consumers and verifies the audit log. It fails
// tb only when the run cannot go on; the caller judges the report.
func runScaleOut(tb testing.TB, rate int, steadyFor, outageFor, killAfter time.Duration) clusterReport {
	c := startCluster(tb)
	rcv := newReceiver(tb)
	dirs := []string{tb.TempDir(), tb.TempDir()}
	shareMasterKey(tb, dirs...)
	o := gatewayOpts{natsURL: c.url(), natsReplicas: 3, endpoint: rcv.url(), logLevel: "warn",
		extra: "ingest:\n  rate_per_second: 100000\n  burst: 100000\n"}
	// Both start at the same moment on the fresh cluster.
	o.dataDir = dirs[0]
	g1 := launchGateway(tb, o)
	o.dataDir, o.token, o.admin = dirs[1], g1.token, g1.admin
	g2 := launchGateway(tb, o)
	g1.awaitListening()
	g2.awaitListening()
	gs := []*testGateway{g1, g2}
	// Each knows of the other, and enforces half the ingest rate limits.
	for deadline := time.Now().Add(30 * time.Second); g1.metric("sealpost_cluster_instances") != 2; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			tb.Fatalf("sealpost_cluster_instances = %v, want 2", g1.metric("sealpost_cluster_instances"))
		}
	}

	r := clusterReport{steady: &loadResult{}, outage: &loadResult{}}
	runLoad(tb, gs, rate, steadyFor, r.steady, nil)

	// The node leading INGEST dies under load.
	js := c.js()
	s, err := js.Stream(context.Background(), "INGEST")
	if err != nil {
		tb.Fatal(err)
	}
	r.leader = s.CachedInfo().Cluster.Leader
	killAt := int(killAfter.Seconds() * float64(rate))
	elected := make(chan struct{})
	runLoad(tb, gs, rate, outageFor, r.outage, func(i int) {
		if i == killAt {
			r.killedAt = time.Now()
			c.kill(r.leader)
			// How long the cluster takes to report a live leader of each
			// stream an acceptance writes to: INGEST, and AUDIT (which the
			// killed node may also have led; if not, it reports at once).
			go func() {
				defer close(elected)
				audit := make(chan time.Duration, 1)
				go func() {
					_, d := awaitLeader(js, "AUDIT", r.leader, r.killedAt)
					audit <- d
				}()
				r.newLeader, r.election = awaitLeader(js, "INGEST", r.leader, r.killedAt)
				r.elections = max(r.election, <-audit)
			}()
		}
	})
	r.worstAfterKill = r.outage.worst(r.killedAt)
	if !r.outage.lastBad.IsZero() {
		r.refusingFor = r.outage.lastBad.Sub(r.killedAt)
		r.refusedSent = r.outage.lastBadSent.Sub(r.killedAt)
	}
	select {
	case <-elected:
	case <-time.After(35 * time.Second):
		tb.Fatal("the node was not killed: the outage run was shorter than killAfter")
	}

	// Nothing accepted is lost.
	accepted := append(slices.Clone(r.steady.accepted), r.outage.accepted...)
	got := rcv.waitFor(tb, len(accepted), 3*time.Minute)
	ids := map[string]bool{}
	for _, d := range got {
		ids[d.id] = true
	}
	for _, id := range accepted {
		if !ids[id] {
			r.lost = append(r.lost, id)
		}
	}

	// Consumers stay bounded on every stream.
	ctx := context.Background()
	names := js.StreamNames(ctx)
	for name := range names.Name() {
		st, err := js.Stream(ctx, name)
		if err != nil {
			tb.Fatal(err)
		}
		if n := st.CachedInfo().State.Consumers; n > r.maxConsumers {
			r.maxConsumers, r.consumersOf = n, name
		}
	}
	if err := names.Err(); err != nil {
		tb.Fatal(err)
	}

	// The audit log, written by both instances.
	r.verify, r.verifyErr = g2.cli("audit", "verify")
	return r
}

// TestClusterScaleOut: two gateways on a three-node cluster start
// together, share steady load without refusing anything, lose the node
// that leads INGEST and accept again once another leads it, lose no
// accepted message, keep
// the consumer count of every stream bounded, and leave an audit log that
// verifies. The nodes are nats-server processes, and the node is killed
// with SIGKILL. BenchmarkClusterScaleOut runs the same at 200/s.
func TestClusterScaleOut(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster run takes about a minute")
	}
	r := runScaleOut(t, 60, 10*time.Second, 30*time.Second, 2*time.Second)
	if len(r.steady.refused) != 0 || r.steady.failed != 0 {
		t.Errorf("steady load: refused %v, failed %d, accepted %d", r.steady.refused, r.steady.failed, len(r.steady.accepted))
	}
	// While INGEST or AUDIT elects a leader (NATS waits 4 to 9 s before
	// a group campaigns, longer after a split vote, and each stream's group
	// elects on its own) nothing can be stored: requests get 503, and
	// acceptance resumes once both have a leader, not seconds after.
	for code := range r.outage.refused {
		if code != http.StatusServiceUnavailable {
			t.Errorf("during the election: answers %v, want only 503", r.outage.refused)
		}
	}
	// Judged by when the refused requests were sent: one sent into the
	// election can wait for its write's timeout and be answered later.
	if r.outage.failed != 0 || r.refusedSent > r.elections+3*time.Second || r.refusedSent > 30*time.Second ||
		!time.Unix(0, r.outage.lastOK.Load()).After(r.outage.lastBad) {
		t.Errorf("node %s died: refusing for %s (the last refused request sent %s after the kill), the new INGEST leader after %s, INGEST and AUDIT led after %s (refused %v, failed %d), newest 202 at %s",
			r.leader, r.refusingFor, r.refusedSent, r.election, r.elections, r.outage.refused, r.outage.failed, time.Unix(0, r.outage.lastOK.Load()).Sub(r.killedAt))
	}
	t.Logf("steady: p50 %s p99 %s; node %s (INGEST leader) killed, %s led after %s, INGEST and AUDIT led after %s, refusing for %s (last refused request sent after %s): %d accepted, refused %v, failed %d, longest answer after the kill %s",
		r.steady.quantile(0.5), r.steady.quantile(0.99), r.leader, r.newLeader, r.election, r.elections, r.refusingFor, r.refusedSent, len(r.outage.accepted), r.outage.refused, r.outage.failed, r.worstAfterKill)
	for _, id := range r.lost {
		t.Errorf("accepted %s was never delivered", id)
	}
	if r.maxConsumers > 50 {
		t.Errorf("stream %s has %d consumers", r.consumersOf, r.maxConsumers)
	}
	if r.verifyErr != nil || !strings.Contains(r.verify, "OK") {
		t.Errorf("audit verify: %v\n%s", r.verifyErr, r.verify)
	}
}

// BenchmarkClusterScaleOut measures two gateways on a three-node R3
// cluster at 200 requests/s: 30 s steady, then 30 s during which the INGEST
// leader is killed 5 s in. One run takes about two minutes; run it with
// -benchtime=1x. It reports refusals, losses, the longest answer after the
// kill, ingest latency and the most consumers of a stream.
func BenchmarkClusterScaleOut(b *testing.B) {
	for b.Loop() {
		r := runScaleOut(b, 200, 30*time.Second, 30*time.Second, 5*time.Second)
		refused := func(l *loadResult) int {
			n := l.failed
			for _, c := range l.refused {
				n += c
			}
			return n
		}
		b.ReportMetric(float64(len(r.steady.accepted)), "steady-accepted")
		b.ReportMetric(float64(refused(r.steady)), "steady-non2xx")
		b.ReportMetric(float64(r.steady.quantile(0.5).Microseconds())/1000, "steady-p50-ms")
		b.ReportMetric(float64(r.steady.quantile(0.99).Microseconds())/1000, "steady-p99-ms")
		b.ReportMetric(float64(len(r.outage.accepted)), "kill-accepted")
		b.ReportMetric(float64(refused(r.outage)), "kill-non2xx")
		b.ReportMetric(r.worstAfterKill.Seconds(), "kill-longest-answer-s")
		b.ReportMetric(r.election.Seconds(), "kill-election-s")
		b.ReportMetric(r.elections.Seconds(), "kill-elections-s")
		b.ReportMetric(r.refusingFor.Seconds(), "kill-refusing-s")
		b.ReportMetric(r.refusedSent.Seconds(), "kill-refused-sent-s")
		b.ReportMetric(float64(len(r.lost)), "lost")
		b.ReportMetric(float64(r.maxConsumers), "max-consumers")
		if r.verifyErr != nil || !strings.Contains(r.verify, "OK") {
			b.Errorf("audit verify: %v\n%s", r.verifyErr, r.verify)
		}
		b.Logf("killed %s (INGEST leader), then %s led; refused steady %v, during kill %v; kill-* count the %s run the kill came %s into",
			r.leader, r.newLeader, r.steady.refused, r.outage.refused, 30*time.Second, 5*time.Second)
	}
}
