// Package mototest starts moto_server, the AWS mock (S3 with Object Lock,
// KMS), for tests of sealpost's backups on loopback.
package mototest

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// Start starts moto_server on a free 127.0.0.1 port, waits until it
// answers, points the standard AWS credential chain at fake credentials
// (through the test's environment) and returns the endpoint URL. The
// server is killed when the test ends. Without moto_server the test is
// skipped, or fails when SEALPOST_REQUIRE_INTEROP=1.
func Start(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("moto_server")
	if err != nil {
		if os.Getenv("SEALPOST_REQUIRE_INTEROP") == "1" {
			t.Fatal("moto_server not found and SEALPOST_REQUIRE_INTEROP=1")
		}
		t.Skip("moto_server not found: skipping (install moto[server] to run it)")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command(bin, "-H", "127.0.0.1", "-p", fmt.Sprint(port))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	logPath := filepath.Join(t.TempDir(), "moto.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		logf.Close()
	})
	endpoint := fmt.Sprintf("http://127.0.0.1:%d", port)
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(endpoint + "/moto-api/")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(logPath)
			t.Fatalf("moto_server did not answer on %s: %v\n%s", endpoint, err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	dir := t.TempDir()
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "",
		"AWS_PROFILE": "", "AWS_REGION": "", "AWS_CONFIG_FILE": filepath.Join(dir, "config"),
		"AWS_SHARED_CREDENTIALS_FILE": filepath.Join(dir, "credentials"), "AWS_EC2_METADATA_DISABLED": "true",
	} {
		if tb, ok := t.(interface{ Setenv(k, v string) }); ok {
			tb.Setenv(k, v)
		} else {
			os.Setenv(k, v)
		}
	}
	return endpoint
}
