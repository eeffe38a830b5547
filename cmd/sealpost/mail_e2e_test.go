package main

import (
	"bytes"
	"compress/gzip"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sealpost/sealpost/ingress/smtpin/dnscache/dnstest"
)

// mailZone is the DNS of the mail tests, served on loopback.
var mailZone = dnstest.Zone{TXT: map[string][]string{
	"vendor.test":        {"v=spf1 ip4:127.0.0.0/8 -all"},
	"_dmarc.vendor.test": {"v=DMARC1; p=reject"},
}}

// mailSMTPSection turns authentication on against the loopback resolver
// and enables MTA-STS and TLS-RPT for acme.test.
func mailSMTPSection(resolver string) string {
	return "smtp:\n  auth: \"on\"\n  dns:\n    resolver: " + resolver + "\n" +
		"  mta_sts:\n    domains: [acme.test]\n    mx: [mx.acme.test]\n" +
		"  tls_rpt:\n    https: true\n    address: tlsrpt@acme.test\n"
}

func (g *testGateway) smtpTLS(t testing.TB) *tls.Config {
	t.Helper()
	pool := x509.NewCertPool()
	pem, err := os.ReadFile(filepath.Join(g.dataDir, "dev-cert.pem"))
	if err != nil || !pool.AppendCertsFromPEM(pem) {
		t.Fatal("dev certificate", err)
	}
	return &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
}

func (g *testGateway) adminGet(t *testing.T, path string, v any) int {
	t.Helper()
	req, _ := http.NewRequest("GET", g.adminURL+path, nil)
	req.Header.Set("Authorization", "Bearer "+g.admin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
		}
	}
	return resp.StatusCode
}

const tlsReport = `{"organization-name": "%ORG%", "date-range": {"start-datetime": "2026-11-21T00:00:00Z",
 "end-datetime": "2026-11-21T23:59:59Z"}, "contact-info": "tlsrpt@reporter.test", "report-id": "%ID%",
 "policies": [{"policy": {"policy-type": "sts", "policy-string": ["version: STSv1", "mode: enforce", "mx: mx.acme.test", "max_age: 604800"],
 "policy-domain": "acme.test", "mx-host": ["mx.acme.test"]},
 "summary": {"total-successful-session-count": 10, "total-failure-session-count": 2},
 "failure-details": [{"result-type": "certificate-expired", "receiving-mx-hostname": "mx.acme.test", "failed-session-count": 2}]}]}`

// TestMailAuthMTASTSAndTLSRPT runs the gateway with authentication against
// a loopback DNS server: SPF and DMARC results reach the signed receipt and
// repeated lookups come from the cache. The MTA-STS policy is served on the
// HTTPS listener, and TLS-RPT reports sent by HTTPS and by mail are listed
// by the admin API.
func TestMailAuthMTASTSAndTLSRPT(t *testing.T) {
	dns := dnstest.Start(t, mailZone)
	rcv := newReceiver(t)
	g := startGateway(t, gatewayOpts{endpoint: rcv.url(), smtp: mailSMTPSection(dns.Addr)})

	c, err := smtp.DialStartTLS(g.smtp, g.smtpTLS(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 3 {
		msg := fmt.Sprintf("From: Billing <billing@vendor.test>\r\nTo: invoices@acme.test\r\nSubject: Invoice %d\r\n\r\nPlease pay.\r\n", i)
		if err := c.SendMail("billing@vendor.test", []string{"invoices@acme.test"}, strings.NewReader(msg)); err != nil {
			t.Fatal(err)
		}
	}
	afterMail := dns.Queries()
	got := rcv.waitFor(t, 3, 60*time.Second)
	receipt := checkDelivery(t, got[0], g.jwks())
	auth, _ := receipt["source"].(map[string]any)["auth"].(map[string]any)
	if auth["spf"] != "pass" || auth["dmarc"] != "pass" {
		t.Errorf("source.auth = %v, want spf and dmarc pass", auth)
	}
	// SPF for vendor.test and DMARC for _dmarc.vendor.test: the second and
	// third message asked nothing more.
	if afterMail > 2 {
		t.Errorf("%d DNS questions for three messages from one sender, want 2 (the rest from the cache)", afterMail)
	}

	// The MTA-STS policy, for its host only.
	req, _ := http.NewRequest("GET", "https://"+g.https+"/.well-known/mta-sts.txt", nil)
	req.Host = "mta-sts.acme.test"
	resp, err := g.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "version: STSv1\r\nmode: enforce\r\nmx: mx.acme.test\r\nmax_age: 604800\r\n" {
		t.Errorf("policy: %d %q", resp.StatusCode, body)
	}
	if code, _ := g.get("/.well-known/mta-sts.txt"); code != 404 {
		t.Errorf("policy for another host: %d, want 404", code)
	}

	// A report by HTTPS, one by mail.
	report := strings.NewReplacer("%ORG%", "Reporter", "%ID%", "r-https").Replace(tlsReport)
	resp, err = g.client.Post("https://"+g.https+"/v1/tlsrpt", "application/tlsrpt+json", strings.NewReader(report))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /v1/tlsrpt: %d", resp.StatusCode)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(strings.NewReplacer("%ORG%", "Reporter", "%ID%", "r-mail").Replace(tlsReport)))
	zw.Close()
	mail := "From: tlsrpt@reporter.test\r\nTo: tlsrpt@acme.test\r\nSubject: Report Domain: acme.test\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/report; report-type=tlsrpt; boundary=R\r\n\r\n--R\r\nContent-Type: text/plain\r\n\r\nreport\r\n" +
		"--R\r\nContent-Type: application/tlsrpt+gzip\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
		base64.StdEncoding.EncodeToString(gz.Bytes()) + "\r\n--R--\r\n"
	if err := c.SendMail("tlsrpt@reporter.test", []string{"tlsrpt@acme.test"}, strings.NewReader(mail)); err != nil {
		t.Fatalf("mailed report: %v", err)
	}

	var list struct {
		Reports []struct {
			ID, Channel, ReportID string
			Failed                int64 `json:"failed_sessions"`
		}
	}
	if code := g.adminGet(t, "/admin/tls-reports", &list); code != 200 || len(list.Reports) != 2 {
		t.Fatalf("GET /admin/tls-reports: %d %+v", code, list)
	}
	channels := map[string]bool{}
	for _, r := range list.Reports {
		channels[r.Channel] = r.Failed == 2
	}
	if !channels["https"] || !channels["smtp"] {
		t.Errorf("reports %+v, want one by https and one by smtp, 2 failed sessions each", list.Reports)
	}
	var one struct {
		Channel string
		Auth    map[string]any
		Report  map[string]any
	}
	for _, r := range list.Reports {
		if r.Channel == "smtp" {
			g.adminGet(t, "/admin/tls-reports/"+r.ID, &one)
		}
	}
	// reporter.test publishes no SPF record: the report records spf none.
	if one.Report["report-id"] != "r-mail" || one.Auth["spf"] != "none" {
		t.Errorf("mailed report %+v", one)
	}
	_, metrics := getMetrics(t, g)
	if !strings.Contains(metrics, `sealpost_tlsrpt_reports_total{channel="smtp",result="stored"} 1`) ||
		!strings.Contains(metrics, `sealpost_smtp_dns_lookups_total{result="hit"}`) {
		t.Errorf("metrics lack TLS-RPT or DNS cache counters")
	}
}

func getMetrics(t *testing.T, g *testGateway) (int, string) {
	t.Helper()
	resp, err := http.Get(g.adminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestMailConfigErrors(t *testing.T) {
	base := "tenants:\n  - name: acme\n    routes:\n      - name: r\n        endpoint: https://hooks.example.com/x\n        recipients: [\"in@acme.example\"]\n"
	tests := []struct {
		smtp string
		want string
	}{
		{"smtp:\n  auth: maybe\n", "smtp.auth: must be on or off"},
		{"smtp:\n  dns:\n    resolver: 127.0.0.1\n", "smtp.dns.resolver: must be host:port"},
		{"smtp:\n  dns:\n    timeout: 2m\n", "smtp.dns.timeout: must be at most 30s"},
		{"smtp:\n  max_session_time: 5m\n  data_timeout: 10m\n", "smtp.max_session_time: MaxSessionTime 5m0s is below DataTimeout 10m0s"},
		{"smtp:\n  mta_sts:\n    domains: [acme.example]\n", "smtp.mta_sts: at least one mx is required"},
		{"smtp:\n  mta_sts:\n    domains: [acme.example]\n    mx: [mx.acme.example]\n    max_age: 9000h\n", "smtp.mta_sts: max_age"},
		{"smtp:\n  tls_rpt:\n    address: in@acme.example\n", "smtp.tls_rpt.address: is a recipient of route acme/r"},
		{"smtp:\n  tls_rpt:\n    max_report_bytes: 10\n", "smtp.tls_rpt.max_report_bytes"},
	}
	for _, tt := range tests {
		_, err := ParseConfig([]byte(base + tt.smtp))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: got %v, want %q", tt.smtp, err, tt.want)
		}
	}
	ok := base + "smtp:\n  auth: \"off\"\n  max_junk_commands: 50\n  mta_sts:\n    domains: [acme.example]\n    mx: [\"*.mx.acme.example\"]\n    mode: testing\n  tls_rpt:\n    https: true\n    address: tlsrpt@acme.example\n"
	if _, err := ParseConfig([]byte(ok)); err != nil {
		t.Errorf("valid config: %v", err)
	}
	withDKIM := strings.Replace(base, "        recipients:", "        require_dkim: true\n        recipients:", 1) + "smtp:\n  auth: \"off\"\n"
	if _, err := ParseConfig([]byte(withDKIM)); err == nil || !strings.Contains(err.Error(), "tenants[0].routes[0].require_dkim: needs smtp.auth on") {
		t.Errorf("require_dkim with auth off: %v", err)
	}
}

func TestSystemResolver(t *testing.T) {
	p := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(p, []byte("# generated\nsearch example.com\nnameserver fe80::1%eth0\nnameserver 10.0.0.2\n"), 0o600)
	if got, err := systemResolver(p); err != nil || got != "[fe80::1]:53" {
		t.Errorf("got %q %v", got, err)
	}
	os.WriteFile(p, []byte("search example.com\n"), 0o600)
	if _, err := systemResolver(p); err == nil {
		t.Error("no nameserver: no error")
	}
}
