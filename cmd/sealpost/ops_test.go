package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"gopkg.in/yaml.v3"
)

// opsGateway is a gateway that has accepted one HTTPS and one SMTP
// message and delivered both after its endpoint failed often enough to
// open the circuit breaker once, for the tests that look at it the way an
// operator does: its answers, metrics, logs and audit entries.
type opsGateway struct {
	*testGateway
	rcv *receiver
}

func startOpsGateway(t *testing.T) *opsGateway {
	t.Helper()
	rcv := newReceiver(t)
	rcv.failFirst.Store(5) // forward.breaker_failures' default
	g := startGateway(t, gatewayOpts{endpoint: rcv.url(), logLevel: "info"})
	if code, doc, _ := g.ingest("invoices", `{"invoice":"INV-1"}`, nil); code != http.StatusAccepted {
		t.Fatalf("ingest: %d %v", code, doc)
	}
	pool := x509.NewCertPool()
	pem, err := os.ReadFile(filepath.Join(g.dataDir, "dev-cert.pem"))
	if err != nil || !pool.AppendCertsFromPEM(pem) {
		t.Fatal("dev certificate", err)
	}
	c, err := smtp.DialStartTLS(g.smtp, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	msg := "From: billing@vendor.test\r\nTo: invoices@acme.test\r\nSubject: Invoice 8\r\n\r\nInvoice 8.\r\n"
	if err := c.SendMail("billing@vendor.test", []string{"invoices@acme.test"}, strings.NewReader(msg)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	rcv.waitFor(t, 2, 30*time.Second)
	return &opsGateway{testGateway: g, rcv: rcv}
}

// metrics scrapes the admin listener's /metrics.
func (g *opsGateway) metrics(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(g.adminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// TestOperations checks a running gateway as an operator sees it.
func TestOperations(t *testing.T) {
	g := startOpsGateway(t)

	t.Run("answer headers", func(t *testing.T) {
		const hsts = "max-age=31536000; includeSubDomains"
		cases := []struct {
			name, method, url, auth string
			body                    string
			status                  int
			hsts                    bool
			cache                   string // "" means no-store
		}{
			{"ingest 202", "POST", "https://" + g.https + "/v1/ingest/invoices", g.token, `{"n":2}`, 202, true, ""},
			{"ingest problem", "POST", "https://" + g.https + "/v1/ingest/invoices", "", `{}`, 401, true, ""},
			{"ingest wrong method", "GET", "https://" + g.https + "/v1/ingest/invoices", g.token, ``, 405, true, ""},
			{"unknown path", "GET", "https://" + g.https + "/nope", "", ``, 404, true, ""},
			{"jwks keeps its caching", "GET", "https://" + g.https + "/.well-known/jwks.json", "", ``, 200, true, "max-age="},
			{"checkpoint keeps its caching", "GET", "https://" + g.https + "/v1/audit/checkpoint", "", ``, 200, true, "no-cache"},
			{"receipt API", "GET", "https://" + g.https + "/v1/receipts/rcpt_00000000000000000000000000", g.token, ``, 404, true, ""},
			{"admin healthz", "GET", g.adminURL + "/healthz", "", ``, 200, false, ""},
			{"admin api", "GET", g.adminURL + "/admin/keys", g.admin, ``, 200, false, ""},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				req, _ := http.NewRequest(c.method, c.url, strings.NewReader(c.body))
				if c.auth != "" {
					req.Header.Set("Authorization", "Bearer "+c.auth)
				}
				resp, err := g.client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				h := resp.Header
				if resp.StatusCode != c.status {
					t.Fatalf("status %d, want %d", resp.StatusCode, c.status)
				}
				if got := h.Get("X-Content-Type-Options"); got != "nosniff" {
					t.Errorf("X-Content-Type-Options %q", got)
				}
				if got := h.Get("Cache-Control"); c.cache == "" && got != "no-store" || c.cache != "" && !strings.Contains(got, c.cache) {
					t.Errorf("Cache-Control %q", got)
				}
				if got := h.Get("Strict-Transport-Security"); c.hsts && got != hsts || !c.hsts && got != "" {
					t.Errorf("Strict-Transport-Security %q", got)
				}
			})
		}
	})

	t.Run("metrics", func(t *testing.T) {
		fams := g.metrics(t)
		if _, ok := fams["sealpost_http_ingest_requests_total"]; ok {
			t.Error("sealpost_http_ingest_requests_total counts ingest requests a second time")
		}
		for _, want := range []struct{ family, label, value string }{
			{"sealpost_http_requests_total", "pattern", "POST /v1/ingest/{route}"},
			{"sealpost_http_request_duration_seconds", "pattern", "POST /v1/ingest/{route}"},
			{"sealpost_smtp_data_duration_seconds", "result", "accepted"},
			{"sealpost_build_info", "goversion", strings.TrimSpace(readBuildInfo().goVersion)},
		} {
			f := fams[want.family]
			if f == nil {
				t.Errorf("%s missing", want.family)
				continue
			}
			found := false
			for _, m := range f.Metric {
				for _, l := range m.Label {
					found = found || l.GetName() == want.label && l.GetValue() == want.value
				}
			}
			if !found {
				t.Errorf("%s has no series with %s=%q", want.family, want.label, want.value)
			}
		}
		// Every pattern label names its method, or is "unmatched".
		for _, name := range []string{"sealpost_http_requests_total", "sealpost_http_request_duration_seconds"} {
			for _, m := range fams[name].GetMetric() {
				for _, l := range m.Label {
					if l.GetName() == "pattern" && l.GetValue() != "unmatched" && !regexp.MustCompile(`^[A-Z]+ /`).MatchString(l.GetValue()) {
						t.Errorf("%s pattern %q names no method", name, l.GetValue())
					}
				}
			}
		}
	})

	t.Run("dashboard", func(t *testing.T) {
		checkDashboard(t, "../../configs/grafana-dashboard.json", g.metrics(t))
	})

	t.Run("alert rules", func(t *testing.T) {
		checkAlertRules(t, "../../configs/alerts.yml", g.metrics(t))
	})

	t.Run("audit targets name the method", func(t *testing.T) {
		out, err := g.cli("audit", "export", "--tenant", "acme")
		if err != nil {
			t.Fatal(err)
		}
		ingestCalls := 0
		sc := bufio.NewScanner(strings.NewReader(out))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var line struct {
				Record struct{ Action, Target string }
			}
			if json.Unmarshal(sc.Bytes(), &line) != nil {
				continue
			}
			e := line.Record
			switch e.Action {
			case "api.call", "auth.success", "auth.failure":
			default:
				continue
			}
			if e.Target != "unmatched" && !regexp.MustCompile(`^[A-Z]+ /`).MatchString(e.Target) {
				t.Errorf("%s target %q names no method", e.Action, e.Target)
			}
			if e.Action == "api.call" && e.Target == "POST /v1/ingest/{route}" {
				ingestCalls++
			}
		}
		if ingestCalls == 0 {
			t.Errorf("no api.call entry with target POST /v1/ingest/{route} in:\n%s", out)
		}
	})

	t.Run("logs", func(t *testing.T) {
		logs := g.stderr.String()
		var started, accepted bool
		sc := bufio.NewScanner(strings.NewReader(logs))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var rec map[string]any
			if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
				t.Errorf("log line is not JSON: %q", sc.Text())
				continue
			}
			for k, v := range rec {
				if n, ok := v.(float64); ok && (k == "duration" || strings.HasSuffix(k, "_duration") || k == "after" || k == "delay") && n > 1e6 {
					t.Errorf("%s logged as bare nanoseconds: %s", k, sc.Text())
				}
			}
			switch rec["msg"] {
			case "sealpost started":
				started = rec["https"] == g.https && rec["admin"] == strings.TrimPrefix(g.adminURL, "http://") && rec["version"] != ""
			case "ingest accepted":
				accepted = rec["level"] == "INFO" && strings.HasPrefix(rec["id"].(string), "rcpt_") && rec["tenant"] == "acme" && rec["route"] == "invoices"
				if strings.Contains(sc.Text(), "INV-") {
					t.Errorf("payload content logged: %s", sc.Text())
				}
			case "message accepted":
				if _, isString := rec["duration"].(string); !isString {
					t.Errorf("smtp duration not a duration string: %s", sc.Text())
				}
			}
		}
		if !started {
			t.Error("no \"sealpost started\" line with the listeners and version")
		}
		if !accepted {
			t.Error("no info \"ingest accepted\" line with id, tenant and route")
		}
		if strings.Contains(logs, g.token) {
			t.Error("the API key was logged")
		}
	})

	t.Run("health", func(t *testing.T) {
		env := map[string]string{"SEALPOST_ADMIN_URL": g.adminURL}
		for _, args := range [][]string{{"health"}, {"health", "--ready"}} {
			var out strings.Builder
			err := run(context.Background(), args, func(k string) string { return env[k] }, &out, io.Discard)
			if code, msg := exitStatus(err); code != exitOK {
				t.Errorf("%v: exit %d %s", args, code, msg)
			}
		}
	})
}

// checkDashboard checks that a Grafana dashboard parses and that every
// sealpost metric its queries use is one the gateway exposes (fams, from a
// real gateway's /metrics), so a renamed metric cannot silently empty a
// panel.
func checkDashboard(t *testing.T, file string, fams map[string]*dto.MetricFamily) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title, UID string
		Panels     []json.RawMessage
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatal(err)
	}
	if dash.Title == "" || dash.UID == "" || len(dash.Panels) == 0 {
		t.Fatalf("not a dashboard: title %q uid %q, %d panels", dash.Title, dash.UID, len(dash.Panels))
	}
	// Every "expr" anywhere in the document (panels, nested rows,
	// template variables' queries are checked by name below too).
	var exprs []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && (k == "expr" || k == "query") {
					exprs = append(exprs, s)
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	var doc any
	_ = json.Unmarshal(data, &doc)
	walk(doc)
	if used := checkNames(t, "the dashboard", exprs, fams); used < 10 {
		t.Fatalf("the dashboard uses %d sealpost metrics; a parse problem?", used)
	}
}

// checkNames reports every sealpost metric in exprs that fams lacks
// (a histogram's _bucket, _sum and _count count as the histogram) and
// returns how many names it checked.
func checkNames(t *testing.T, what string, exprs []string, fams map[string]*dto.MetricFamily) int {
	t.Helper()
	exposed := func(name string) bool {
		if fams[name] != nil {
			return true
		}
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(name, suffix); ok && fams[base] != nil && fams[base].GetType() == dto.MetricType_HISTOGRAM {
				return true
			}
		}
		return false
	}
	used := 0
	for _, e := range exprs {
		for _, name := range regexp.MustCompile(`\bsealpost_[a-z0-9_]+`).FindAllString(e, -1) {
			used++
			if !exposed(name) {
				t.Errorf("%s uses %s, which the gateway does not expose (%q)", what, name, e)
			}
		}
	}
	return used
}

// checkAlertRules checks that the Prometheus rules parse and use only
// metrics a real gateway exposes.
func checkAlertRules(t *testing.T, file string, fams map[string]*dto.MetricFamily) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Groups []struct {
			Rules []struct{ Alert, Expr string }
		}
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	var exprs []string
	for _, g := range doc.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || r.Expr == "" {
				t.Errorf("rule without alert or expr: %+v", r)
			}
			if strings.Contains(r.Expr, `job="`) {
				t.Errorf("alert %s names a scrape job: operators choose theirs", r.Alert)
			}
			exprs = append(exprs, r.Expr)
		}
	}
	if used := checkNames(t, "the alert rules", exprs, fams); used < 10 {
		t.Fatalf("the alert rules use %d sealpost metrics; a parse problem?", used)
	}
}
