package main

import (
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/sealpost/sealpost/ingress/smtpin"

	"github.com/sealpost/sealpost/ingress/mtasts"
)

// SMTPDNSConfig configures the DNS lookups of SPF, DKIM and DMARC.
type SMTPDNSConfig struct {
	// Resolver is the recursive resolver asked, host:port (e.g.
	// "127.0.0.53:53"). Default: the first nameserver of /etc/resolv.conf,
	// port 53. Answers are cached in the process for their TTL.
	Resolver string `yaml:"resolver"`
	// Timeout bounds one lookup. Default 5s, at most 30s. A lookup that
	// times out makes the result temperror; the message is still accepted.
	Timeout Duration `yaml:"timeout"`
	// CacheEntries bounds the answers kept in memory (one per name and
	// record type). Default 10000, at most 1000000.
	CacheEntries int `yaml:"cache_entries"`
}

// SMTPMTASTSConfig publishes an MTA-STS policy (RFC 8461) for the domains
// whose mail sealpost receives.
type SMTPMTASTSConfig struct {
	// Domains are the policy domains: the policy is served at
	// https://mta-sts.<domain>/.well-known/mta-sts.txt on the HTTPS
	// listener, whose certificate must cover mta-sts.<domain>. Default
	// none: no policy is served.
	Domains []string `yaml:"domains"`
	// Mode: enforce (default), testing or none.
	Mode string `yaml:"mode"`
	// MX are the host names of the domains' MX records, or "*.domain"
	// patterns; the SMTP certificate must cover them. Required with domains.
	MX []string `yaml:"mx"`
	// MaxAge is how long senders cache the policy, whole seconds. Default
	// 168h (a week), at most 8766h (a year).
	MaxAge Duration `yaml:"max_age"`
}

// SMTPTLSRPTConfig takes the TLS-RPT reports (RFC 8460) that sending
// servers make about TLS to sealpost's MX. Reports are stored sealed in
// the TLSRPT stream and listed by GET /admin/tls-reports.
type SMTPTLSRPTConfig struct {
	// HTTPS accepts reports POSTed to /v1/tlsrpt on the HTTPS listener
	// (rua=https://<https host>/v1/tlsrpt). Default false.
	HTTPS bool `yaml:"https"`
	// Address accepts reports mailed to it (rua=mailto:<address>); it must
	// not be a route's recipient. Default none.
	Address string `yaml:"address"`
	// MaxReportBytes bounds a report, decompressed, in bytes. Default
	// 1048576 (1 MiB), at most 16777216.
	MaxReportBytes int64 `yaml:"max_report_bytes"`
	// Retention is how long reports are kept. Default 2160h (90 days),
	// at least 24h.
	Retention Duration `yaml:"retention"`
}

// validateMail checks the settings of the SMTP section added for mail
// authentication, MTA-STS, TLS-RPT and the session limits, naming each bad
// key by its YAML path.
func (c *Config) validateMail(bad func(key, format string, args ...any)) {
	s := &c.SMTP
	switch s.Auth {
	case "", "on":
	case "off":
		for i, t := range c.Tenants {
			for j, r := range t.Routes {
				if r.RequireDKIM {
					bad(fmt.Sprintf("tenants[%d].routes[%d].require_dkim", i, j), "needs smtp.auth on: with auth off no DKIM signature is checked")
				}
			}
		}
	default:
		bad("smtp.auth", "must be on or off, got %q", s.Auth)
	}
	if s.DNS.Resolver != "" {
		if host, port, err := net.SplitHostPort(s.DNS.Resolver); err != nil || host == "" || port == "" {
			bad("smtp.dns.resolver", "must be host:port, got %q", s.DNS.Resolver)
		}
	}
	if s.DNS.Timeout < 0 || time.Duration(s.DNS.Timeout) > 30*time.Second {
		bad("smtp.dns.timeout", "must be at most 30s")
	}
	if s.DNS.CacheEntries < 0 || s.DNS.CacheEntries > 1_000_000 {
		bad("smtp.dns.cache_entries", "must be between 0 (default 10000) and 1000000")
	}
	if s.MaxJunkCommands < 0 || s.MaxJunkCommands > 10000 {
		bad("smtp.max_junk_commands", "must be between 0 (default 20) and 10000")
	}
	if s.MaxSessionTime != 0 && (s.MaxSessionTime < Duration(time.Minute) || s.MaxSessionTime > Duration(24*time.Hour)) {
		bad("smtp.max_session_time", "must be between 1m and 24h")
	}
	session := s.MaxSessionTime
	if session == 0 {
		session = Duration(smtpin.DefaultMaxSessionTime)
	}
	if dt := s.DataTimeout; dt != 0 && session < dt {
		bad("smtp.max_session_time", "must be at least smtp.data_timeout (%s); it is %s", time.Duration(dt), time.Duration(session))
	}

	m := s.MTASTS
	if len(m.Domains) > 0 || len(m.MX) > 0 || m.Mode != "" || m.MaxAge != 0 {
		if _, err := mtasts.NewPolicyHandler(c.mtastsPolicy()); err != nil {
			bad("smtp.mta_sts", "%s", strings.TrimPrefix(err.Error(), "mtasts: "))
		}
	}

	r := s.TLSRPT
	if r.MaxReportBytes != 0 && (r.MaxReportBytes < 1024 || r.MaxReportBytes > 16<<20) {
		bad("smtp.tls_rpt.max_report_bytes", "must be between 1024 and 16777216")
	}
	if r.Retention != 0 && r.Retention < Duration(24*time.Hour) {
		bad("smtp.tls_rpt.retention", "must be at least 24h")
	}
	if r.Address != "" {
		addr := strings.ToLower(strings.TrimSpace(r.Address))
		if at := strings.LastIndexByte(addr, '@'); at < 1 || at == len(addr)-1 || len(addr) > 254 {
			bad("smtp.tls_rpt.address", "not a mail address")
		}
		for _, t := range c.Tenants {
			for _, rt := range t.Routes {
				for _, rc := range rt.Recipients {
					if strings.EqualFold(rc, addr) {
						bad("smtp.tls_rpt.address", "is a recipient of route %s/%s", t.Name, rt.Name)
					}
				}
			}
		}
	}
}

// mtastsPolicy maps smtp.mta_sts onto the policy.
func (c *Config) mtastsPolicy() mtasts.Policy {
	m := c.SMTP.MTASTS
	return mtasts.Policy{Domains: m.Domains, Mode: m.Mode, MX: m.MX, MaxAge: time.Duration(m.MaxAge)}
}
