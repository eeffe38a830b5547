package mtasts

import (
	"errors"
	"testing"
)

// FuzzParseReport checks that any input is a report or ErrInvalidReport,
// without panicking.
func FuzzParseReport(f *testing.F) {
	f.Add([]byte(sampleReport))
	f.Add([]byte(`{"organization-name":"x","report-id":"y","date-range":{"start-datetime":"2026-01-01T00:00:00Z","end-datetime":"2026-01-02T00:00:00Z"},"policies":[{"policy":{"policy-type":"sts","policy-domain":"a.example","mx-host":"mx.a.example"}}]}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseReport(b)
		if err != nil {
			if !errors.Is(err, ErrInvalidReport) {
				t.Fatalf("undocumented error %v", err)
			}
			return
		}
		if r.OrganizationName == "" || r.ReportID == "" || len(r.Policies) == 0 || len(r.Domains()) == 0 {
			t.Fatalf("accepted a report without its required members: %+v", r)
		}
	})
}
