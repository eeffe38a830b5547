package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/sealpost/sealpost/forwarder"
)

// baseConfig is a valid configuration for `serve --dev --config`, with
// %s where more top-level YAML goes and where more forward keys go.
const baseConfig = `data_dir: %s
listen:
  https: 127.0.0.1:0
  smtp: 127.0.0.1:0
  admin: 127.0.0.1:0
forward:
  allow_networks: ["127.0.0.0/8"]
%s
%s
tenants:
  - name: acme
    api_keys:
      - id: k1
        sha256: 0000000000000000000000000000000000000000000000000000000000000000
    routes:
      - name: invoices
        endpoint: http://127.0.0.1:9/hook
        allow_http: true
        recipients: ["invoices@acme.test"]
%s
`

func writeConfig(t *testing.T, forward, top, routes string) string {
	t.Helper()
	dir := t.TempDir()
	f := filepath.Join(dir, "sealpost.yaml")
	must(t, os.WriteFile(f, []byte(fmt.Sprintf(baseConfig, dir, forward, top, routes)), 0o600))
	return f
}

// runCLI runs the command line and returns its exit status and output.
func runCLI(args ...string) (code int, stdout, stderr string) {
	var out, errs strings.Builder
	err := run(context.Background(), args, func(string) string { return "" }, &out, &errs)
	code, msg := exitStatus(err)
	if msg != "" {
		errs.WriteString("sealpost: " + msg + "\n")
	}
	return code, out.String(), errs.String()
}

// TestCheckConfigCatchesWhatServeRefuses checks both directions at the
// bounds. Configurations at the edge of every bound that check-config
// accepts start a real gateway; one step past any bound, check-config
// refuses and names the key. The bounds are those the components enforce
// when serve builds them (smtpin, kms, keyring, forwarder, queue), so a
// file that passes the check no longer stops serve at start-up.
func TestCheckConfigCatchesWhatServeRefuses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two gateways; skipped with -short")
	}
	edges := map[string]struct{ forward, top string }{
		"lowest": {
			forward: "  workers: 1\n  max_unacked: 1000\n  schedule: [\"0s\"]\n  breaker_failures: 1\n  timeout: 1s",
			top: `smtp: {max_message_bytes: 1024, max_header_bytes: 1024, command_timeout: 1s, data_timeout: 1s,
  max_recipients: 1, max_conns_per_ip: 1, max_conns: 1, max_mime_depth: 1, max_mime_parts: 1, inline_attachment_bytes: 1}
kms: {cache_max_age: 1s, cache_max_uses: 1}
keys: {period_months: 1, pre_publish: 2h, grace: 2h}
ingest: {max_body_bytes: 1, rate_per_second: 0.001, burst: 1}
audit: {retention: 24h}
nats: {sync_interval: 1ms}`,
		},
		"highest": {
			forward: "  workers: 1024\n  max_unacked: 10000000\n  breaker_failures: 1000\n  timeout: 30s\n  schedule: [" +
				strings.TrimSuffix(strings.Repeat(`"168h",`, forwarder.MaxScheduleLen), ",") + "]",
			top: `smtp: {max_message_bytes: 104857600, max_header_bytes: 1048576, command_timeout: 24h, data_timeout: 24h, max_session_time: 24h,
  max_mime_depth: 100, max_mime_parts: 10000, inline_attachment_bytes: 524288, max_junk_commands: 10000}
kms: {cache_max_age: 24h, cache_max_uses: 1073741824}
keys: {period_months: 12, pre_publish: 8063h, grace: 87600h}
ingest: {max_body_bytes: 4194304}
audit: {retention: 87600h}
nats: {sync_interval: 10m}`,
		},
	}
	for name, e := range edges {
		t.Run(name, func(t *testing.T) {
			file := writeConfig(t, e.forward, e.top, "")
			if code, out, errs := runCLI("check-config", "--dev", file); code != exitOK {
				t.Fatalf("check-config: exit %d\n%s%s", code, out, errs)
			}
			stdout := &syncBuffer{}
			stderr := &syncBuffer{}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() {
				done <- run(ctx, []string{"serve", "--dev", "--config", file}, func(string) string { return "" }, stdout, stderr)
			}()
			deadline := time.After(60 * time.Second)
			for !strings.Contains(stdout.String(), "admin  listening on") {
				select {
				case err := <-done:
					cancel()
					t.Fatalf("serve refused what check-config accepted: %v\n%s", err, stderr.String())
				case <-deadline:
					cancel()
					t.Fatalf("serve did not start:\n%s", stderr.String())
				case <-time.After(20 * time.Millisecond):
				}
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("serve: %v", err)
			}
		})
	}
}

// TestCheckConfigRefusals: one step past each bound a component enforces
// at start-up, check-config fails (exit 1) and names the key.
func TestCheckConfigRefusals(t *testing.T) {
	cases := []struct {
		name, forward, top, routes, key string
	}{
		{"smtp message size", "", "smtp: {max_message_bytes: 1023}", "", "smtp.max_message_bytes"},
		{"smtp header size", "", "smtp: {max_header_bytes: 1023}", "", "smtp.max_header_bytes"},
		{"smtp command timeout", "", "smtp: {command_timeout: 999ms}", "", "smtp.command_timeout"},
		{"smtp data timeout", "", "smtp: {data_timeout: 500ms}", "", "smtp.data_timeout"},
		{"kms cache age", "", "kms: {cache_max_age: 25h}", "", "kms.cache_max_age"},
		{"kms cache uses", "", "kms: {cache_max_uses: 1073741825}", "", "kms.cache_max_uses"},
		{"pre-publication too short", "", "keys: {pre_publish: 1h}", "", "keys.pre_publish"},
		{"pre-publication as long as a period", "", "keys: {period_months: 12, pre_publish: 8064h}", "", "keys.pre_publish"},
		{"grace too short", "", "keys: {grace: 1h}", "", "keys.grace"},
		{"grace too long", "", "keys: {grace: 87601h}", "", "keys.grace"},
		{"retry delay", `  schedule: ["0s", "169h"]`, "", "", "forward.schedule[1]"},
		{"too many attempts", "  schedule: [" + strings.TrimSuffix(strings.Repeat(`"1s",`, forwarder.MaxScheduleLen+1), ",") + "]", "", "", "forward.schedule"},
		{"smtp session shorter than data", "", "smtp: {data_timeout: 10m, max_session_time: 5m}", "", "smtp.max_session_time"},
		{"smtp header size above 1 MiB", "", "smtp: {max_header_bytes: 1048577}", "", "smtp.max_header_bytes"},
		{"smtp junk commands", "", "smtp: {max_junk_commands: 10001}", "", "smtp.max_junk_commands"},
		{"ingest body", "", "ingest: {max_body_bytes: 4194305}", "", "ingest.max_body_bytes"},
		{"ingest burst", "", "ingest: {burst: -1}", "", "ingest.burst"},
		{"embedded NATS replicas", "", "nats: {replicas: 3}", "", "nats.replicas"},
		{"audit retention", "", "audit: {retention: 23h}", "", "audit.retention"},
		{"embedded NATS port name", "", "nats: {listen: \"127.0.0.1:nats\"}", "", "nats.listen"},
		{"recipient of two routes", "", "", "      - name: orders\n        endpoint: https://example.com/hook\n        recipients: [\"INVOICES@acme.test\"]", "tenants[0].routes[1].recipients[0]"},
		{"sender domain", "", "", "      - name: orders\n        endpoint: https://example.com/hook\n        recipients: [\"orders@acme.test\"]\n        allowed_sender_domains: [\"@vendor.test\"]", "tenants[0].routes[1].allowed_sender_domains[0]"},
		{"unknown key by its path", "", "", "        secrets: [\"whsec_x\"]", "tenants[0].routes[0].secrets"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			file := writeConfig(t, c.forward, c.top, c.routes)
			code, out, errs := runCLI("check-config", "--dev", file)
			if code != exitFailed || !strings.Contains(out, "  "+c.key+": ") {
				t.Fatalf("exit %d, want 1 naming %s:\n%s%s", code, c.key, out, errs)
			}
		})
	}
	// Routes without recipients: the SMTP ingress starts and takes mail
	// once routes get recipients through the API.
	dir := t.TempDir()
	noRcpt := filepath.Join(dir, "c.yaml")
	body := "data_dir: " + dir + "\ntenants:\n  - name: t\n    routes:\n      - name: r\n        endpoint: https://example.com/hook\n"
	must(t, os.WriteFile(noRcpt, []byte(body), 0o600))
	if code, out, _ := runCLI("check-config", "--dev", noRcpt); code != exitOK {
		t.Errorf("routes without recipients: exit %d\n%s", code, out)
	}
	must(t, os.WriteFile(noRcpt, []byte(body+"listen:\n  smtp: \"off\"\n"), 0o600))
	if code, out, _ := runCLI("check-config", "--dev", noRcpt); code != exitOK {
		t.Errorf("routes without recipients, SMTP off: exit %d\n%s", code, out)
	}
	// Without --dev a certificate is required, as serve --config requires it.
	if code, out, _ := runCLI("check-config", noRcpt); code != exitFailed || !strings.Contains(out, "tls:") {
		t.Errorf("no certificate without --dev: exit %d\n%s", code, out)
	}
	must(t, os.WriteFile(noRcpt, []byte(body+"listen:\n  smtp: \"off\"\ntls:\n  cert_file: "+dir+"/missing.pem\n  key_file: "+dir+"/missing.key\n"), 0o600))
	if code, out, _ := runCLI("check-config", noRcpt); code != exitFailed || !strings.Contains(out, "missing.pem") {
		t.Errorf("missing certificate file: exit %d\n%s", code, out)
	}
}

// TestExitCodes checks the documented exit statuses: 0 ok, 1 a check
// failed, 2 usage, 3 could not run.
func TestExitCodes(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	must(t, os.WriteFile(bad, []byte("log_level: loud\n"), 0o600))
	receipt := filepath.Join(dir, "receipt.json")
	must(t, os.WriteFile(receipt, []byte(`{"receipt":{},"signature":{}}`), 0o600))
	jwks := filepath.Join(dir, "jwks.json")
	must(t, os.WriteFile(jwks, []byte(`{"keys":[]}`), 0o600))
	for _, c := range []struct {
		args []string
		code int
	}{
		{[]string{"version"}, exitOK},
		{[]string{"help"}, exitOK},
		{[]string{"check-config", "-h"}, exitOK},
		{[]string{"check-config", bad}, exitFailed},
		{[]string{"verify", receipt, "--jwks", jwks}, exitFailed},
		{[]string{"health", "--admin", "http://127.0.0.1:1", "--timeout", "2s"}, exitFailed},
		{nil, exitUsage},
		{[]string{"frobnicate"}, exitUsage},
		{[]string{"check-config"}, exitUsage},
		{[]string{"check-config", "a", "b"}, exitUsage},
		{[]string{"check-config", "--bogus", bad}, exitUsage},
		{[]string{"serve"}, exitUsage},
		{[]string{"version", "extra"}, exitUsage},
		{[]string{"check-config", filepath.Join(dir, "missing.yaml")}, exitCannotRun},
		{[]string{"verify", filepath.Join(dir, "missing.json"), "--jwks", jwks}, exitCannotRun},
		{[]string{"serve", "--config", filepath.Join(dir, "missing.yaml")}, exitCannotRun},
		{[]string{"keys", "list", "--admin", "http://127.0.0.1:1", "--token-file", filepath.Join(dir, "missing.token")}, exitCannotRun},
	} {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			if code, out, errs := runCLI(c.args...); code != c.code {
				t.Errorf("exit %d, want %d\n%s%s", code, c.code, out, errs)
			}
		})
	}
}

// TestHelpOnEveryCommand: "-h" (and "--help") prints a command's usage
// and exits 0 for every command the top-level usage lists; it is never
// taken for an argument.
func TestHelpOnEveryCommand(t *testing.T) {
	cmds := regexp.MustCompile(`(?m)^  ([a-z-]+) {2,}`).FindAllStringSubmatch(usage, -1)
	if len(cmds) < 10 {
		t.Fatalf("found %d commands in the usage text", len(cmds))
	}
	for _, m := range cmds {
		for _, flag := range []string{"-h", "--help"} {
			t.Run(m[1]+" "+flag, func(t *testing.T) {
				code, out, errs := runCLI(m[1], flag)
				if code != exitOK || !strings.Contains(out+errs, "usage: sealpost "+m[1]) {
					t.Errorf("exit %d, want 0 with the usage of %s:\n%s%s", code, m[1], out, errs)
				}
			})
		}
	}
}

// TestVersionFromBuildInfo checks which version `sealpost version` and
// sealpost_build_info report for the builds the Go toolchain makes.
func TestVersionFromBuildInfo(t *testing.T) {
	rev := []debug.BuildSetting{{Key: "vcs.revision", Value: "8d1581f0c2ab4f6e9d3b1a2c3d4e5f60718293a4"}}
	dirty := append(rev, debug.BuildSetting{Key: "vcs.modified", Value: "true"})
	for _, c := range []struct {
		name     string
		bi       *debug.BuildInfo
		override string
		want     string
	}{
		{"tagged module", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.4.0"}, Settings: rev}, "", "sealpost v1.4.0 revision 8d1581f0c2ab4f6e9d3b1a2c3d4e5f60718293a4 go1.26.8"},
		{"go build in a checkout", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.0.0-20261202213200-8d1581f0c2ab+dirty"}, Settings: dirty}, "", "sealpost v0.0.0-20261202213200-8d1581f0c2ab+dirty revision 8d1581f0c2ab4f6e9d3b1a2c3d4e5f60718293a4 (modified) go1.26.8"},
		{"devel with a revision", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Settings: dirty}, "", "sealpost 8d1581f0c2ab-dirty revision 8d1581f0c2ab4f6e9d3b1a2c3d4e5f60718293a4 (modified) go1.26.8"},
		{"no VCS information", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}}, "", "sealpost (devel) go1.26.8"},
		{"ldflags override", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Settings: rev}, "v2.0.0-rc1", "sealpost v2.0.0-rc1 revision 8d1581f0c2ab4f6e9d3b1a2c3d4e5f60718293a4 go1.26.8"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := buildInfoFrom(c.bi, c.override).String(); got != c.want {
				t.Errorf("got  %q\nwant %q", got, c.want)
			}
		})
	}
	// The test binary itself: the line names the Go version it was built
	// with, never the old placeholder "dev".
	_, out, _ := runCLI("version")
	if bi, ok := debug.ReadBuildInfo(); !ok || !strings.Contains(out, bi.GoVersion) || strings.Contains(out, " dev") {
		t.Errorf("version: %q", out)
	}
}

// TestFatalErrorIsLogged: an error that stops serve is one JSON log line
// on stderr (the log format), printed once.
func TestFatalErrorIsLogged(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "c.yaml")
	must(t, os.WriteFile(cfg, []byte("data_dir: "+dir+"\nlisten:\n  smtp: \"off\"\n"+
		"tenants:\n  - name: t\n    routes:\n      - name: r\n        endpoint: https://example.com/hook\n"), 0o600))
	var stderr strings.Builder
	err := run(context.Background(), []string{"serve", "--config", cfg}, func(string) string { return "" }, io.Discard, &stderr)
	code, msg := exitStatus(err)
	if code != exitCannotRun || msg != "" {
		t.Fatalf("exit %d, message %q: want 3 and nothing more for main to print", code, msg)
	}
	var rec struct{ Level, Msg, Err string }
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &rec); err != nil {
		t.Fatalf("last stderr line is not JSON: %q", stderr.String())
	}
	if rec.Level != "ERROR" || !strings.Contains(rec.Err, "tls.cert_file") {
		t.Errorf("fatal log line %+v", rec)
	}
	var ee exitError
	if !errors.As(err, &ee) || !strings.Contains(err.Error(), "tls.cert_file") {
		t.Errorf("error %v", err)
	}
}
