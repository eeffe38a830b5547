package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sealpost/sealpost/ingress/httpin"
)

// benchProcess is a gateway (or the bare reference pipeline) that `sealpost
// bench` started as a process of its own, so that its CPU time and memory
// are its own and not the load generator's.
type benchProcess struct {
	cmd     *exec.Cmd
	dataDir string
	https   string // host:port
	done    chan error
	out     *lockedBuffer
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len() < 1<<20 {
		b.buf.Write(p)
	}
	return len(p), nil
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// selfGatewayConfig is the configuration `sealpost bench --self` runs the
// gateway with: one tenant and route whose endpoint is the bench's
// receiver, everything else at its default.
func selfGatewayConfig(dataDir, webhook, keyHash, adminHash, logLevel string, syncInterval time.Duration) string {
	nats := ""
	if syncInterval > 0 {
		nats = "nats:\n  sync_interval: " + syncInterval.String() + "\n"
	}
	return fmt.Sprintf(`data_dir: %s
log_level: %s
listen:
  https: 127.0.0.1:0
  smtp: "off"
  admin: 127.0.0.1:0
%singest:
  rate_per_second: 1000000
  burst: 1000000
forward:
  allow_networks: ["127.0.0.0/8"]
admin:
  token_sha256: %s
tenants:
  - name: bench
    api_keys:
      - id: bench
        sha256: %s
    routes:
      - name: bench
        endpoint: %s
        allow_http: true
`, dataDir, logLevel, nats, adminHash, keyHash, webhook)
}

// startSelfGateway starts `sealpost serve --dev --config` of this binary
// on a new data dir.
func startSelfGateway(ctx context.Context, webhook, logLevel string, syncInterval time.Duration) (*benchProcess, benchTarget, error) {
	dir, err := os.MkdirTemp("", "sealpost-bench-")
	if err != nil {
		return nil, benchTarget{}, err
	}
	token, keyHash, err := httpin.NewToken("bench")
	if err != nil {
		return nil, benchTarget{}, err
	}
	adminToken, adminHash, err := httpin.NewToken("admin")
	if err != nil {
		return nil, benchTarget{}, err
	}
	// The admin token, for a look at the gateway (metrics, profiles) while
	// the bench runs.
	if err := os.WriteFile(filepath.Join(dir, "admin.token"), []byte(adminToken+"\n"), 0o600); err != nil {
		return nil, benchTarget{}, err
	}
	cfgFile := filepath.Join(dir, "sealpost.yaml")
	if err := os.WriteFile(cfgFile, []byte(selfGatewayConfig(dir, webhook, keyHash, adminHash, logLevel, syncInterval)), 0o600); err != nil {
		return nil, benchTarget{}, err
	}
	p, err := startBenchProcess(ctx, dir, "serve", "--dev", "--config", cfgFile)
	if err != nil {
		return nil, benchTarget{}, err
	}
	t, err := p.target("/v1/ingest/bench", token)
	return p, t, err
}

// startBareProcess starts the bare reference pipeline of this binary.
func startBareProcess(ctx context.Context, webhook string, syncInterval time.Duration) (*benchProcess, benchTarget, error) {
	dir, err := os.MkdirTemp("", "sealpost-bench-bare-")
	if err != nil {
		return nil, benchTarget{}, err
	}
	p, err := startBenchProcess(ctx, dir, "bench", "serve-bare", "--data", dir, "--webhook", webhook, "--sync-interval", syncInterval.String())
	if err != nil {
		return nil, benchTarget{}, err
	}
	t, err := p.target("/ingest", "bare")
	return p, t, err
}

func startBenchProcess(ctx context.Context, dir string, args ...string) (*benchProcess, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	p := &benchProcess{dataDir: dir, done: make(chan error, 1), out: &lockedBuffer{}}
	p.cmd = exec.CommandContext(ctx, exe, args...)
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	p.cmd.Stderr = p.out
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			if f := strings.Fields(line); len(f) == 4 && f[0] == "https" && f[1] == "listening" {
				select {
				case found <- f[3]:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	go func() { p.done <- p.cmd.Wait() }()
	select {
	case p.https = <-found:
		return p, nil
	case err := <-p.done:
		return nil, fmt.Errorf("%s exited: %v\n%s", args[0], err, tail(p.out.String(), 20))
	case <-time.After(2 * time.Minute):
		p.stop()
		return nil, fmt.Errorf("%s did not start in 2 minutes\n%s", args[0], tail(p.out.String(), 20))
	}
}

// target is how the load reaches the process: its HTTPS listener, trusting
// the self-signed certificate it wrote into its data dir.
func (p *benchProcess) target(path, token string) (benchTarget, error) {
	pemBytes, err := os.ReadFile(filepath.Join(p.dataDir, "dev-cert.pem"))
	if err != nil {
		return benchTarget{}, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		return benchTarget{}, errors.New("the process's certificate does not parse")
	}
	return benchTarget{ingestURL: "https://" + p.https + path, token: token, tls: &tls.Config{RootCAs: pool}}, nil
}

// stop ends the process gracefully and removes its data dir.
func (p *benchProcess) stop() {
	if p.cmd.Process != nil {
		_ = p.cmd.Process.Signal(os.Interrupt)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	_ = os.RemoveAll(p.dataDir)
}

// usage is the process's CPU time so far and its peak resident memory,
// from /proc (Linux).
func (p *benchProcess) usage() (cpu time.Duration, peakRSS int64, err error) {
	pid := strconv.Itoa(p.cmd.Process.Pid)
	stat, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, 0, err
	}
	// Fields after the command name, which is in parentheses.
	i := strings.LastIndexByte(string(stat), ')')
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return 0, 0, errors.New("short /proc stat")
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	const clockTicks = 100 // USER_HZ on Linux
	cpu = time.Duration(utime+stime) * time.Second / clockTicks
	status, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return cpu, 0, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			peakRSS = kb << 10
		}
	}
	return cpu, peakRSS, nil
}

// scrapeUsage reads process_cpu_seconds_total and
// process_resident_memory_bytes from a gateway's /metrics.
func scrapeUsage(ctx context.Context, metricsURL string) (cpu time.Duration, rss int64, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, metricsURL, nil)
	if err != nil {
		return 0, 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 16<<20))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			continue
		}
		switch name {
		case "process_cpu_seconds_total":
			cpu = time.Duration(v * float64(time.Second))
		case "process_resident_memory_bytes":
			rss = int64(v)
		}
	}
	return cpu, rss, sc.Err()
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
