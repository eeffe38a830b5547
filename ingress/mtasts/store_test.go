package mtasts

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sealpost/sealpost/keyring/kms"
	"github.com/sealpost/sealpost/queue"
)

// sampleReport is the example of RFC 8460 section 4.8, for our domain.
const sampleReport = `{
  "organization-name": "Company-X",
  "date-range": {"start-datetime": "2026-11-21T00:00:00Z", "end-datetime": "2026-11-21T23:59:59Z"},
  "contact-info": "sts-reporting@company-x.example",
  "report-id": "5065427c-23d3-47ca-b6e0-946ea0e8c4be",
  "policies": [{
    "policy": {
      "policy-type": "sts",
      "policy-string": ["version: STSv1", "mode: enforce", "mx: mx1.in.example.net", "max_age: 604800"],
      "policy-domain": "in.example.net",
      "mx-host": ["mx1.in.example.net"]
    },
    "summary": {"total-successful-session-count": 5326, "total-failure-session-count": 303},
    "failure-details": [
      {"result-type": "certificate-expired", "sending-mta-ip": "2001:db8:abcd:0012::1",
       "receiving-mx-hostname": "mx1.in.example.net", "failed-session-count": 100},
      {"result-type": "starttls-not-supported", "sending-mta-ip": "2001:db8:abcd:0013::1",
       "receiving-mx-hostname": "mx1.in.example.net", "receiving-ip": "203.0.113.56",
       "failed-session-count": 200, "additional-information": "https://reports.company-x.example/report_info?id=5065427c"},
      {"result-type": "x-vendor-specific", "failed-session-count": 3}
    ]
  }]
}`

func gz(t testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

type testStore struct {
	store  *Store
	stream *queue.Stream
	reg    *prometheus.Registry
	srv    *httptest.Server
	client *http.Client
}

// newTestStore runs a Store on an embedded JetStream with a local KMS, and
// its HTTPS endpoint on a loopback TLS server.
func newTestStore(t *testing.T, mutate func(*StoreConfig)) *testStore {
	t.Helper()
	ctx := context.Background()
	conn, err := queue.Open(ctx, queue.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	stream, err := conn.Stream(ctx, StreamConfig(90*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	kek, err := kms.OpenLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	env, err := kms.New(kms.Config{KEK: kek})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	cfg := StoreConfig{Log: stream, Sealer: env, Domains: []string{"in.example.net"}, Registerer: reg}
	if mutate != nil {
		mutate(&cfg)
	}
	store, err := NewStore(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(ReportPath, NewReportHandler(store))
	mux.Handle("GET /admin/tls-reports", store.ListHandler())
	mux.Handle("GET /admin/tls-reports/{id}", store.GetHandler())
	srv := httptest.NewTLSServer(mux)
	t.Cleanup(srv.Close)
	return &testStore{store: store, stream: stream, reg: reg, srv: srv, client: srv.Client()}
}

func (ts *testStore) post(t *testing.T, contentType string, body []byte) (int, map[string]any) {
	t.Helper()
	resp, err := ts.client.Post(ts.srv.URL+ReportPath, contentType, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&doc)
	return resp.StatusCode, doc
}

func (ts *testStore) get(t *testing.T, path string, v any) int {
	t.Helper()
	resp, err := ts.client.Get(ts.srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil && resp.StatusCode == 200 {
		t.Fatal(err)
	}
	return resp.StatusCode
}

// TestReportRoundTrip: a report posted gzipped over HTTPS is stored sealed,
// counted, listed and read back as received.
func TestReportRoundTrip(t *testing.T) {
	ts := newTestStore(t, nil)
	code, doc := ts.post(t, MediaTypeGzip, gz(t, []byte(sampleReport)))
	if code != http.StatusCreated {
		t.Fatalf("POST: %d %v", code, doc)
	}
	id, _ := doc["id"].(string)
	if id != ReportID("Company-X", "5065427c-23d3-47ca-b6e0-946ea0e8c4be") {
		t.Fatalf("id %q", id)
	}
	// The same report as JSON, sent again, keeps its id and one copy.
	if code, doc := ts.post(t, MediaTypeJSON, []byte(sampleReport)); code != http.StatusCreated || doc["id"] != id {
		t.Fatalf("second POST: %d %v", code, doc)
	}

	var list struct{ Reports []Summary }
	if code := ts.get(t, "/admin/tls-reports", &list); code != 200 || len(list.Reports) != 1 {
		t.Fatalf("list: %d %+v", code, list)
	}
	s := list.Reports[0]
	if s.ID != id || s.OrganizationName != "Company-X" || s.Successful != 5326 || s.Failed != 303 ||
		len(s.Domains) != 1 || s.Domains[0] != "in.example.net" || s.Channel != "https" {
		t.Errorf("summary %+v", s)
	}
	var got Stored
	if code := ts.get(t, "/admin/tls-reports/"+id, &got); code != 200 {
		t.Fatalf("get: %d", code)
	}
	var want, have any
	json.Unmarshal([]byte(sampleReport), &want)
	json.Unmarshal(got.Report, &have)
	wb, _ := json.Marshal(want)
	hb, _ := json.Marshal(have)
	if !bytes.Equal(wb, hb) {
		t.Errorf("stored report differs from the one sent:\n%s", got.Report)
	}
	if code := ts.get(t, "/admin/tls-reports/tlsrpt_aaaaaaaaaaaaaaaaaaaaaaaaaa", &got); code != 404 {
		t.Errorf("unknown id: %d, want 404", code)
	}

	// Sealed at rest: the stream holds no plaintext of the report.
	m, err := ts.stream.Last(context.Background(), "tlsrpt."+id)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(m.Data, []byte("Company-X")) || bytes.Contains(m.Data, []byte("certificate-expired")) {
		t.Error("the stored report is not sealed")
	}

	// Counted once, though sent twice within the duplicate window.
	if v := testutil.ToFloat64(ts.store.m.reports.WithLabelValues("https", "stored")); v != 2 {
		t.Errorf("reports stored %v, want 2", v)
	}
	if v := testutil.ToFloat64(ts.store.m.sessions.WithLabelValues("failure")); v != 303 {
		t.Errorf("failure sessions %v, want 303", v)
	}
	for typ, n := range map[string]float64{"certificate-expired": 100, "starttls-not-supported": 200, "other": 3} {
		if v := testutil.ToFloat64(ts.store.m.failures.WithLabelValues(typ)); v != n {
			t.Errorf("failed sessions %s = %v, want %v", typ, v, n)
		}
	}
}

func TestReportRefused(t *testing.T) {
	ts := newTestStore(t, func(c *StoreConfig) { c.MaxReportBytes = 4096 })
	bomb := gz(t, bytes.Repeat([]byte(" "), 1<<20)) // 1 MiB of JSON whitespace, a few KiB gzipped
	foreign := strings.ReplaceAll(sampleReport, `"policy-domain": "in.example.net"`, `"policy-domain": "elsewhere.example"`)
	tests := []struct {
		name        string
		contentType string
		body        []byte
		code        int
	}{
		{"not gzip", MediaTypeGzip, []byte(sampleReport), 400},
		{"not json", MediaTypeJSON, []byte("hello"), 400},
		{"missing members", MediaTypeJSON, []byte(`{"organization-name": "x"}`), 400},
		{"two values", MediaTypeJSON, []byte(sampleReport + sampleReport), 400},
		{"gzip bomb", MediaTypeGzip, bomb, 413},
		{"too large", MediaTypeJSON, bytes.Repeat([]byte(" "), 5000), 413},
		{"foreign domain", MediaTypeJSON, []byte(foreign), 422},
		{"wrong media type", "text/plain", []byte(sampleReport), 415},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if code, doc := ts.post(t, tt.contentType, tt.body); code != tt.code {
				t.Fatalf("got %d %v, want %d", code, doc, tt.code)
			}
		})
	}
	var list struct{ Reports []Summary }
	if ts.get(t, "/admin/tls-reports", &list); len(list.Reports) != 0 {
		t.Errorf("%d refused reports were stored", len(list.Reports))
	}
}

func TestReportRateLimited(t *testing.T) {
	ts := newTestStore(t, nil)
	codes := map[int]int{}
	for range 15 {
		code, _ := ts.post(t, MediaTypeJSON, []byte("{}"))
		codes[code]++
	}
	if codes[http.StatusTooManyRequests] == 0 {
		t.Errorf("15 posts at once from one address were never limited: %v", codes)
	}
}

func TestParseReportAcceptsVariants(t *testing.T) {
	// Some reporters send policy-string and mx-host as single strings.
	variant := strings.Replace(sampleReport, `"mx-host": ["mx1.in.example.net"]`, `"mx-host": "mx1.in.example.net"`, 1)
	r, err := ParseReport([]byte(variant))
	if err != nil || len(r.Policies[0].Policy.MXHost) != 1 {
		t.Fatalf("%v %+v", err, r)
	}
	if _, err := ParseReport([]byte(`[]`)); !errors.Is(err, ErrInvalidReport) {
		t.Errorf("array: %v", err)
	}
}

// TestMoreDomains: a report about a domain MoreDomains serves is taken;
// one about a domain neither list serves is refused, also when the static
// list is empty.
func TestMoreDomains(t *testing.T) {
	about := func(d string) []byte {
		r := strings.ReplaceAll(sampleReport, `"policy-domain": "in.example.net"`, `"policy-domain": "`+d+`"`)
		return []byte(strings.ReplaceAll(r, `"report-id": "`, `"report-id": "`+d+`-`))
	}
	more := func(d string) bool { return d == "api.example.org" }
	ts := newTestStore(t, func(c *StoreConfig) { c.Domains, c.MoreDomains = nil, more })
	for _, tc := range []struct {
		domain string
		want   int
	}{
		{"api.example.org", http.StatusCreated},
		{"in.example.net", http.StatusUnprocessableEntity},
		{"elsewhere.example", http.StatusUnprocessableEntity},
	} {
		if code, doc := ts.post(t, MediaTypeJSON, about(tc.domain)); code != tc.want {
			t.Errorf("report about %s: %d %v, want %d", tc.domain, code, doc, tc.want)
		}
	}
	both := newTestStore(t, func(c *StoreConfig) { c.MoreDomains = more })
	for _, d := range []string{"api.example.org", "in.example.net"} {
		if code, doc := both.post(t, MediaTypeJSON, about(d)); code != http.StatusCreated {
			t.Errorf("report about %s with both lists: %d %v", d, code, doc)
		}
	}
}
