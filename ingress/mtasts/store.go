package mtasts

import (
	"context"
	"crypto/sha256"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sealpost/sealpost/ingress"
	"github.com/sealpost/sealpost/keyring/kms"
	"github.com/sealpost/sealpost/queue"
)

// Sealing context of stored reports. Reports are the operator's, not a
// tenant's: their tenant is a name no tenant can have (tenant names start
// with a letter or digit).
const (
	ReportTenant  = "_operator"
	ReportPurpose = "tls-report"
)

// StreamConfig returns the stream that keeps reports for retention: one
// subject per report id, so that a report sent again replaces its copy.
func StreamConfig(retention time.Duration) queue.StreamConfig {
	return queue.StreamConfig{
		Name: "TLSRPT", Subjects: []string{"tlsrpt.>"},
		MaxAge: retention, MaxBytes: 1 << 30, MaxMsgsPerSubject: 1,
	}
}

// Log is the stream the reports are kept in; *queue.Stream satisfies it.
type Log interface {
	AppendOnce(ctx context.Context, subject, msgID string, header map[string]string, data []byte) (uint64, bool, error)
	Last(ctx context.Context, subject string) (*queue.Msg, error)
	Read(ctx context.Context, o queue.ReadOptions, fn func(*queue.Msg) error) error
}

// Sealer seals what is stored; *kms.Envelope satisfies it.
type Sealer interface {
	Seal(ctx context.Context, c kms.Context, plaintext []byte) ([]byte, error)
	Open(ctx context.Context, c kms.Context, sealed []byte) ([]byte, error)
}

// StoreConfig configures a Store.
type StoreConfig struct {
	// Log keeps the sealed reports. Required.
	Log Log
	// Sealer seals them. Required.
	Sealer Sealer
	// Domains are the policy domains served here; a report about none of
	// them (nor of MoreDomains) is refused (ErrForeignReport). Empty, with
	// MoreDomains nil, accepts any.
	Domains []string
	// MoreDomains, when set, reports whether a domain (lower case, no
	// final dot) is served too: domains that change while the store runs.
	MoreDomains func(domain string) bool
	// MaxReportBytes bounds a report's JSON, decompressed. Default 1 MiB.
	MaxReportBytes int64
	Logger         *slog.Logger
	Registerer     prometheus.Registerer
	// Now returns the current time. Default time.Now.
	Now func() time.Time
}

// DefaultMaxReportBytes bounds a report's JSON when StoreConfig does not.
const DefaultMaxReportBytes = 1 << 20

// Store validates, seals, keeps, counts and lists TLS-RPT reports.
type Store struct {
	cfg     StoreConfig
	log     *slog.Logger
	domains map[string]bool
	m       *storeMetrics
}

// Received says how a report arrived.
type Received struct {
	// Channel is "https" or "smtp".
	Channel string
	// RemoteAddr is the client's address.
	RemoteAddr string
	// MailFrom and Auth (the receipt's source.auth) are set for mail.
	MailFrom string
	Auth     json.RawMessage
}

// Stored is a kept report as the admin API shows it.
type Stored struct {
	ID         string          `json:"id"`
	ReceivedAt time.Time       `json:"received_at"`
	Channel    string          `json:"channel"`
	RemoteAddr string          `json:"remote_addr"`
	MailFrom   string          `json:"mail_from,omitempty"`
	Auth       json.RawMessage `json:"auth,omitempty"`
	Report     json.RawMessage `json:"report"`
}

// Summary is the listing entry of a report.
type Summary struct {
	ID               string    `json:"id"`
	ReceivedAt       time.Time `json:"received_at"`
	Channel          string    `json:"channel"`
	OrganizationName string    `json:"organization_name"`
	ReportID         string    `json:"report_id"`
	Start            time.Time `json:"start"`
	End              time.Time `json:"end"`
	Domains          []string  `json:"domains"`
	Successful       int64     `json:"successful_sessions"`
	Failed           int64     `json:"failed_sessions"`
}

type storeMetrics struct {
	reports  *prometheus.CounterVec
	sessions *prometheus.CounterVec
	failures *prometheus.CounterVec
}

// NewStore validates c and returns a Store.
func NewStore(c StoreConfig) (*Store, error) {
	if c.Log == nil || c.Sealer == nil {
		return nil, errors.New("mtasts: Log and Sealer are required")
	}
	if c.MaxReportBytes == 0 {
		c.MaxReportBytes = DefaultMaxReportBytes
	}
	if c.MaxReportBytes < 1024 {
		return nil, fmt.Errorf("mtasts: MaxReportBytes %d is below 1024", c.MaxReportBytes)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	s := &Store{cfg: c, log: c.Logger.With("component", "tlsrpt"), domains: map[string]bool{}}
	for _, d := range c.Domains {
		s.domains[strings.ToLower(strings.TrimSuffix(d, "."))] = true
	}
	s.m = &storeMetrics{
		reports: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sealpost_tlsrpt_reports_total",
			Help: "TLS-RPT reports received, by channel (https, smtp) and result (stored, invalid, too_large, foreign, failed).",
		}, []string{"channel", "result"}),
		sessions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sealpost_tlsrpt_sessions_total",
			Help: "TLS sessions to our MX that stored TLS-RPT reports count, by result (successful, failure).",
		}, []string{"result"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sealpost_tlsrpt_failed_sessions_total",
			Help: "Failed TLS sessions that stored TLS-RPT reports count, by RFC 8460 result type (other for unknown types).",
		}, []string{"result_type"}),
	}
	if c.Registerer != nil {
		for _, col := range []prometheus.Collector{s.m.reports, s.m.sessions, s.m.failures} {
			if err := c.Registerer.Register(col); err != nil {
				return nil, err
			}
		}
	}
	return s, nil
}

// MaxReportBytes is the decompressed size limit of a report.
func (s *Store) MaxReportBytes() int64 { return s.cfg.MaxReportBytes }

// Put checks a report body (gzip or JSON), seals and keeps it, and returns
// its id. A report sent again (same organization and report-id) keeps its
// id and replaces the earlier copy. Errors wrap ErrInvalidReport,
// ErrReportTooLarge, ErrForeignReport, or are temporary (ingress.Temporary).
func (s *Store) Put(ctx context.Context, body []byte, gzipped bool, via Received) (string, error) {
	id, err := s.put(ctx, body, gzipped, via)
	result := "stored"
	switch {
	case errors.Is(err, ErrReportTooLarge):
		result = "too_large"
	case errors.Is(err, ErrInvalidReport):
		result = "invalid"
	case errors.Is(err, ErrForeignReport):
		result = "foreign"
	case err != nil:
		result = "failed"
	}
	s.m.reports.WithLabelValues(via.Channel, result).Inc()
	if err != nil {
		s.log.Warn("tls report refused", "channel", via.Channel, "remote_addr", via.RemoteAddr, "result", result, "err", err)
	} else {
		s.log.Info("tls report stored", "channel", via.Channel, "remote_addr", via.RemoteAddr, "id", id)
	}
	return id, err
}

func (s *Store) put(ctx context.Context, body []byte, gzipped bool, via Received) (string, error) {
	js, err := Decode(body, gzipped, s.cfg.MaxReportBytes)
	if err != nil {
		return "", err
	}
	rep, err := ParseReport(js)
	if err != nil {
		return "", err
	}
	served := func(d string) bool { return s.domains[d] || (s.cfg.MoreDomains != nil && s.cfg.MoreDomains(d)) }
	if (len(s.domains) > 0 || s.cfg.MoreDomains != nil) && !slices.ContainsFunc(rep.Domains(), served) {
		return "", ErrForeignReport
	}
	id := ReportID(rep.OrganizationName, rep.ReportID)
	// The report is stored as received, compacted: members sealpost does
	// not read are kept too.
	var compact json.RawMessage
	if compact, err = ingress.EncodeJSON(json.RawMessage(js)); err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalidReport, err)
	}
	rec, err := json.Marshal(Stored{ID: id, ReceivedAt: s.cfg.Now().UTC(), Channel: via.Channel, RemoteAddr: via.RemoteAddr,
		MailFrom: via.MailFrom, Auth: via.Auth, Report: json.RawMessage(strings.TrimSpace(string(compact)))})
	if err != nil {
		return "", err
	}
	sealed, err := s.cfg.Sealer.Seal(ctx, s.sealContext(id), rec)
	if err != nil {
		return "", ingress.Temporary(fmt.Errorf("seal tls report: %w", err))
	}
	_, dup, err := s.cfg.Log.AppendOnce(ctx, "tlsrpt."+id, id, nil, sealed)
	if err != nil {
		return "", ingress.Temporary(err)
	}
	if !dup {
		for _, p := range rep.Policies {
			s.m.sessions.WithLabelValues("successful").Add(float64(p.Summary.Successful))
			s.m.sessions.WithLabelValues("failure").Add(float64(p.Summary.Failure))
			for _, f := range p.FailureDetails {
				t := "other"
				if slices.Contains(ResultTypes, f.ResultType) {
					t = f.ResultType
				}
				s.m.failures.WithLabelValues(t).Add(float64(max(f.FailedSessionCount, 0)))
			}
		}
	}
	return id, nil
}

func (s *Store) sealContext(id string) kms.Context {
	return kms.Context{Tenant: ReportTenant, Purpose: ReportPurpose, ObjectID: id}
}

// ReportID is the id sealpost gives a report: "tlsrpt_" and 26 base32
// characters of the SHA-256 of the organization name and its report-id.
func ReportID(org, reportID string) string {
	sum := sha256.Sum256([]byte(org + "\x00" + reportID))
	return "tlsrpt_" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:])[:26])
}

// ErrNotFound: no report has that id.
var ErrNotFound = errors.New("mtasts: no such TLS report")

// Get returns one stored report.
func (s *Store) Get(ctx context.Context, id string) (*Stored, error) {
	if !validID(id) {
		return nil, ErrNotFound
	}
	m, err := s.cfg.Log.Last(ctx, "tlsrpt."+id)
	if errors.Is(err, queue.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return s.open(ctx, id, m.Data)
}

func (s *Store) open(ctx context.Context, id string, sealed []byte) (*Stored, error) {
	plain, err := s.cfg.Sealer.Open(ctx, s.sealContext(id), sealed)
	if err != nil {
		return nil, fmt.Errorf("open tls report %s: %w", id, err)
	}
	var st Stored
	if err := json.Unmarshal(plain, &st); err != nil {
		return nil, fmt.Errorf("tls report %s: %w", id, err)
	}
	return &st, nil
}

func validID(id string) bool {
	rest, ok := strings.CutPrefix(id, "tlsrpt_")
	if !ok || len(rest) != 26 {
		return false
	}
	for _, c := range rest {
		if !(c >= 'a' && c <= 'z' || c >= '2' && c <= '7') {
			return false
		}
	}
	return true
}

// List returns summaries of the reports received since the given time,
// newest first, at most limit of them.
func (s *Store) List(ctx context.Context, since time.Time, limit int) ([]Summary, error) {
	var ids []string
	var sealed [][]byte
	err := s.cfg.Log.Read(ctx, queue.ReadOptions{StartTime: since}, func(m *queue.Msg) error {
		ids = append(ids, strings.TrimPrefix(m.Subject, "tlsrpt."))
		sealed = append(sealed, m.Data)
		if len(ids) > limit { // keep only the newest limit
			ids, sealed = ids[1:], sealed[1:]
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]Summary, 0, len(ids))
	for i := len(ids) - 1; i >= 0; i-- {
		st, err := s.open(ctx, ids[i], sealed[i])
		if err != nil {
			return nil, err
		}
		rep, err := ParseReport(st.Report)
		if err != nil {
			return nil, fmt.Errorf("tls report %s: %w", ids[i], err)
		}
		sum := Summary{ID: st.ID, ReceivedAt: st.ReceivedAt, Channel: st.Channel, OrganizationName: rep.OrganizationName,
			ReportID: rep.ReportID, Start: rep.DateRange.Start, End: rep.DateRange.End, Domains: rep.Domains()}
		for _, p := range rep.Policies {
			sum.Successful += p.Summary.Successful
			sum.Failed += p.Summary.Failure
		}
		out = append(out, sum)
	}
	return out, nil
}
