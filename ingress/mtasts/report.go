package mtasts

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Media types of TLS-RPT reports (RFC 8460 section 6).
const (
	MediaTypeJSON = "application/tlsrpt+json"
	MediaTypeGzip = "application/tlsrpt+gzip"
)

// Outcomes of taking a report. Callers branch on them with errors.Is.
var (
	// ErrInvalidReport: not a TLS-RPT report (bad gzip, bad JSON, a
	// required member missing).
	ErrInvalidReport = errors.New("mtasts: invalid TLS-RPT report")
	// ErrReportTooLarge: the report, decompressed, is over the size limit.
	ErrReportTooLarge = errors.New("mtasts: TLS-RPT report too large")
	// ErrForeignReport: the report is about no domain served here.
	ErrForeignReport = errors.New("mtasts: TLS-RPT report is about no domain served here")
)

// Report is a TLS-RPT report (RFC 8460 section 4), the members sealpost
// reads. The stored report keeps every member as received.
type Report struct {
	OrganizationName string `json:"organization-name"`
	DateRange        struct {
		Start time.Time `json:"start-datetime"`
		End   time.Time `json:"end-datetime"`
	} `json:"date-range"`
	ContactInfo string         `json:"contact-info"`
	ReportID    string         `json:"report-id"`
	Policies    []PolicyResult `json:"policies"`
}

// PolicyResult is the outcome of sessions under one policy.
type PolicyResult struct {
	Policy struct {
		Type   string     `json:"policy-type"`
		String stringList `json:"policy-string"`
		Domain string     `json:"policy-domain"`
		MXHost stringList `json:"mx-host"`
	} `json:"policy"`
	Summary struct {
		Successful int64 `json:"total-successful-session-count"`
		Failure    int64 `json:"total-failure-session-count"`
	} `json:"summary"`
	FailureDetails []FailureDetail `json:"failure-details"`
}

// FailureDetail is one kind of failed session.
type FailureDetail struct {
	ResultType          string `json:"result-type"`
	SendingMTAIP        string `json:"sending-mta-ip"`
	ReceivingMXHostname string `json:"receiving-mx-hostname"`
	ReceivingIP         string `json:"receiving-ip"`
	FailedSessionCount  int64  `json:"failed-session-count"`
}

// stringList is a JSON array of strings that also accepts a single string:
// reporters differ on policy-string and mx-host.
type stringList []string

func (l *stringList) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*l = []string{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return err
	}
	*l = many
	return nil
}

// ResultTypes are the failure result types of RFC 8460 section 4.3;
// metrics count any other as "other".
var ResultTypes = []string{
	"starttls-not-supported", "certificate-host-mismatch", "certificate-expired", "certificate-not-trusted",
	"validation-failure", "tlsa-invalid", "dnssec-invalid", "dane-required",
	"sts-policy-fetch-error", "sts-policy-invalid", "sts-webpki-invalid",
}

// Decode returns the JSON of a report body, gunzipping it when gzipped,
// and fails with ErrReportTooLarge past max bytes of JSON (a small gzip
// body can expand a thousandfold).
func Decode(body []byte, gzipped bool, max int64) ([]byte, error) {
	if !gzipped {
		if int64(len(body)) > max {
			return nil, ErrReportTooLarge
		}
		return body, nil
	}
	zr, err := gzip.NewReader(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("%w: gzip: %v", ErrInvalidReport, err)
	}
	out, err := io.ReadAll(io.LimitReader(zr, max+1))
	if err != nil {
		return nil, fmt.Errorf("%w: gzip: %v", ErrInvalidReport, err)
	}
	if int64(len(out)) > max {
		return nil, ErrReportTooLarge
	}
	return out, nil
}

// maxReportMembers bounds the policies and failure details read.
const maxReportMembers = 10000

// ParseReport parses and checks a report's JSON: one JSON object with the
// required members of RFC 8460 section 4.
func ParseReport(b []byte) (*Report, error) {
	var r Report
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidReport, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: more than one JSON value", ErrInvalidReport)
	}
	var missing []string
	if strings.TrimSpace(r.OrganizationName) == "" {
		missing = append(missing, "organization-name")
	}
	if strings.TrimSpace(r.ReportID) == "" {
		missing = append(missing, "report-id")
	}
	if r.DateRange.Start.IsZero() || r.DateRange.End.IsZero() {
		missing = append(missing, "date-range")
	}
	if len(r.Policies) == 0 {
		missing = append(missing, "policies")
	}
	details := 0
	for i, p := range r.Policies {
		if p.Policy.Domain == "" || p.Policy.Type == "" {
			missing = append(missing, fmt.Sprintf("policies[%d].policy", i))
		}
		if p.Summary.Successful < 0 || p.Summary.Failure < 0 {
			return nil, fmt.Errorf("%w: policies[%d].summary: negative count", ErrInvalidReport, i)
		}
		details += len(p.FailureDetails)
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%w: missing %s", ErrInvalidReport, strings.Join(missing, ", "))
	}
	if len(r.Policies)+details > maxReportMembers {
		return nil, fmt.Errorf("%w: more than %d policies and failure details", ErrInvalidReport, maxReportMembers)
	}
	if len(r.OrganizationName) > 1024 || len(r.ReportID) > 1024 {
		return nil, fmt.Errorf("%w: organization-name or report-id longer than 1024 bytes", ErrInvalidReport)
	}
	return &r, nil
}

// Domains returns the policy domains of the report, lower case.
func (r *Report) Domains() []string {
	var out []string
	seen := map[string]bool{}
	for _, p := range r.Policies {
		d := strings.ToLower(strings.TrimSuffix(p.Policy.Domain, "."))
		if !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	return out
}
