package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestKillBeforeDelivery runs the real binary, kills it with SIGKILL right
// after a 202 (the receiver was down, so nothing was delivered), starts it
// again on the same data dir and checks the message arrives.
func TestKillBeforeDelivery(t *testing.T) {
	if testing.Short() {
		t.Skip("long end-to-end test: skipped with -short")
	}
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "sealpost")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	rcv := newReceiver(t)
	rcv.failFirst.Store(1 << 40)
	dataDir := t.TempDir()
	// Write the config through the in-process harness's generator, then
	// stop that gateway: only its config file and tokens are reused.
	g := startGateway(t, gatewayOpts{dataDir: dataDir, endpoint: rcv.url()})
	if err := g.stop(); err != nil {
		t.Fatal(err)
	}

	logs := &syncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("gateway logs:\n%s", grepLines(logs.String(), `"level":"`))
		}
	})
	start := func() (*exec.Cmd, string) {
		cmd := exec.Command(bin, "serve", "--dev", "--config", g.cfgFile)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		addr := make(chan string, 1)
		go func() {
			re := regexp.MustCompile(`https\s+listening on (\S+)`)
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				if m := re.FindStringSubmatch(sc.Text()); m != nil {
					addr <- m[1]
				}
			}
		}()
		select {
		case a := <-addr:
			return cmd, a
		case <-time.After(60 * time.Second):
			t.Fatal("binary did not start")
			return nil, ""
		}
	}
	pool := x509.NewCertPool()
	pem, _ := os.ReadFile(filepath.Join(dataDir, "dev-cert.pem"))
	pool.AppendCertsFromPEM(pem)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}

	cmd, addr := start()
	req, _ := http.NewRequest("POST", "https://"+addr+"/v1/ingest/invoices", strings.NewReader(`{"kill":9}`))
	req.Header.Set("Authorization", "Bearer "+g.token)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct{ ID string }
	_ = json.NewDecoder(resp.Body).Decode(&doc)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || doc.ID == "" {
		t.Fatalf("ingest: %d %+v", resp.StatusCode, doc)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	rcv.mu.Lock()
	n := len(rcv.got)
	rcv.mu.Unlock()
	if n != 0 {
		t.Fatal("a delivery was recorded although the receiver refused every request")
	}

	rcv.failFirst.Store(0)
	start()
	got := rcv.waitFor(t, 1, 90*time.Second)
	if got[0].id != doc.ID {
		t.Fatalf("delivered %s, want %s", got[0].id, doc.ID)
	}
}
