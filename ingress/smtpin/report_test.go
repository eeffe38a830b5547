package smtpin

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/sealpost/sealpost/ingress"
)

// recordingSink keeps the reports it is given; err, when set, is returned.
type recordingSink struct {
	mu      sync.Mutex
	reports []MailedReport
	err     error
}

func (s *recordingSink) PutMailedReport(_ context.Context, r MailedReport) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return "", s.err
	}
	s.reports = append(s.reports, r)
	return "tlsrpt_test", nil
}

// reportMail is a TLS-RPT report by mail as RFC 8460 section 5.3 shows it.
func reportMail(t *testing.T, report []byte) string {
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(report)
	zw.Close()
	return "From: tls-reporting@reporter.example\r\nTo: tlsrpt@in.example.net\r\n" +
		"Subject: Report Domain: in.example.net Submitter: reporter.example Report-ID: <r1@reporter.example>\r\n" +
		"TLS-Report-Domain: in.example.net\r\nTLS-Report-Submitter: reporter.example\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/report; report-type=\"tlsrpt\"; boundary=\"RR\"\r\n\r\n" +
		"--RR\r\nContent-Type: text/plain\r\n\r\nThis is an aggregate TLS report from reporter.example\r\n" +
		"--RR\r\nContent-Type: application/tlsrpt+gzip\r\nContent-Transfer-Encoding: base64\r\n" +
		"Content-Disposition: attachment; filename=\"reporter.example!in.example.net!1!2!r1.json.gz\"\r\n\r\n" +
		base64.StdEncoding.EncodeToString(gz.Bytes()) + "\r\n--RR--\r\n"
}

func TestMailedTLSReport(t *testing.T) {
	sink := &recordingSink{}
	ts := startServer(t, func(c *Config) { c.ReportAddress = "TLSRPT@in.example.net"; c.Reports = sink })
	c := ts.dial(t, true)
	report := []byte(`{"organization-name":"Reporter"}`)
	msg := reportMail(t, report)

	reply, err := send(c, "noreply@reporter.example", []string{"tlsrpt@in.example.net"}, []byte(msg))
	if err != nil || reply != "2.0.0 tlsrpt_test" {
		t.Fatalf("got %q %v, want 250 with the report id", reply, err)
	}
	if n := len(ts.enq.all()); n != 0 {
		t.Errorf("%d submissions for a report: reports go to the sink only", n)
	}
	r := sink.reports[0]
	zr, err := gzip.NewReader(bytes.NewReader(r.Body))
	if err != nil || !r.Gzipped || r.MailFrom != "noreply@reporter.example" || !strings.Contains(string(r.Auth), `"spf"`) {
		t.Fatalf("report handed over as %+v (%v)", r, err)
	}
	var got bytes.Buffer
	got.ReadFrom(zr)
	if !bytes.Equal(got.Bytes(), report) {
		t.Errorf("report %q, want %q", got.Bytes(), report)
	}

	// With a route recipient too, both get the message.
	reply, err = send(c, "noreply@reporter.example", []string{"tlsrpt@in.example.net", "alerts@in.example.net"}, []byte(msg))
	if err != nil || !strings.HasPrefix(reply, "2.0.0 tlsrpt_test rcpt_") || len(ts.enq.all()) != 1 {
		t.Fatalf("got %q %v, %d submissions", reply, err, len(ts.enq.all()))
	}

	// No report in the message, a report the sink refuses, a sink that is down.
	for _, tt := range []struct {
		name    string
		msg     string
		sinkErr error
		code    int
	}{
		{"no report part", simpleMessage, nil, 554},
		{"refused", msg, errors.Join(ErrReportRefused, errors.New("bad json")), 554},
		{"store down", msg, ingress.Temporary(errors.New("queue down")), 451},
	} {
		sink.mu.Lock()
		sink.err = tt.sinkErr
		sink.mu.Unlock()
		_, err := send(c, "noreply@reporter.example", []string{"tlsrpt@in.example.net"}, []byte(tt.msg))
		if smtpCode(err) != tt.code {
			t.Errorf("%s: got %v, want %d", tt.name, err, tt.code)
		}
		c.Reset()
	}
}

func TestReportAddressValidation(t *testing.T) {
	cert := newTestCert(t)
	base := Config{Hostname: "mx.test", TLSConfig: cert.server, Routes: testRoutes(), Enqueuer: &recordingEnqueuer{}, Blobs: &memBlobs{}, Resolver: &fakeResolver{}}
	for _, tt := range []struct {
		addr string
		sink ReportSink
		want string
	}{
		{"tlsrpt@in.example.net", nil, "Reports is required"},
		{"tlsrpt", &recordingSink{}, "is not an address"},
		{"alerts@in.example.net", &recordingSink{}, "already served by route TLS reports"},
	} {
		c := base
		c.ReportAddress, c.Reports = tt.addr, tt.sink
		if _, err := New(c); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want %q", tt.addr, err, tt.want)
		}
	}
}
