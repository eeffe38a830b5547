package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/sealpost/sealpost/ingress/mtasts"
	"github.com/sealpost/sealpost/ingress/smtpin"
	"github.com/sealpost/sealpost/ingress/smtpin/dnscache"
)

// mailParts are what the SMTP ingress adds around go-smtp: the DNS cache of
// mail authentication, the MTA-STS policy and the TLS-RPT report store.
type mailParts struct {
	dns     *dnscache.Cache       // nil when smtp.auth is off
	policy  *mtasts.PolicyHandler // nil without smtp.mta_sts
	reports *mtasts.Store         // nil without smtp.tls_rpt
	// reportHandler takes TLS-RPT reports over HTTPS (smtp.tls_rpt.https).
	reportHandler http.Handler
}

// mountMail builds the mail parts: the DNS cache, the MTA-STS policy and
// the TLS-RPT report store, whose handlers the API mounts. There are none
// when the SMTP listener is off.
func (g *gateway) mountMail() error {
	g.mail = &mailParts{}
	if g.cfg.Listen.SMTP == "off" {
		return nil
	}
	s := g.cfg.SMTP
	if s.Auth != "off" {
		addr := s.DNS.Resolver
		if addr == "" {
			var err error
			if addr, err = systemResolver("/etc/resolv.conf"); err != nil {
				return fmt.Errorf("smtp.dns.resolver: not set, and %w", err)
			}
		}
		cache, err := dnscache.New(dnscache.Config{
			Upstream: &dnscache.Client{Addr: addr}, MaxEntries: s.DNS.CacheEntries,
			Timeout: time.Duration(s.DNS.Timeout), Registerer: g.reg,
		})
		if err != nil {
			return fmt.Errorf("smtp.dns: %w", err)
		}
		g.mail.dns = cache
		g.log.Info("mail authentication on", "dns_resolver", addr)
	}
	if len(s.MTASTS.Domains) > 0 {
		p, err := mtasts.NewPolicyHandler(g.cfg.mtastsPolicy())
		if err != nil {
			return fmt.Errorf("smtp.mta_sts: %w", err)
		}
		g.mail.policy = p
		g.log.Info("serving MTA-STS policy", "domains", strings.Join(s.MTASTS.Domains, " "), "policy_id", p.Policy().ID())
	}
	if s.TLSRPT.HTTPS || s.TLSRPT.Address != "" {
		retention := time.Duration(s.TLSRPT.Retention)
		if retention == 0 {
			retention = 90 * 24 * time.Hour
		}
		stream, err := g.q.Stream(context.Background(), mtasts.StreamConfig(retention))
		if err != nil {
			return err
		}
		store, err := mtasts.NewStore(mtasts.StoreConfig{
			Log: stream, Sealer: g.sealer, Domains: g.mailDomains(), MoreDomains: g.cat.MailDomain, MaxReportBytes: s.TLSRPT.MaxReportBytes,
			Logger: g.log, Registerer: g.reg,
		})
		if err != nil {
			return fmt.Errorf("smtp.tls_rpt: %w", err)
		}
		g.mail.reports = store
		if s.TLSRPT.HTTPS {
			g.mail.reportHandler = mtasts.NewReportHandler(store)
		}
	}
	return nil
}

// mailDomains are the domains TLS-RPT reports may be about: the MTA-STS
// policy domains and the domains of the routes' recipients.
func (g *gateway) mailDomains() []string {
	seen := map[string]bool{}
	var out []string
	add := func(d string) {
		d = strings.ToLower(strings.TrimSuffix(d, "."))
		if d != "" && !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	for _, d := range g.cfg.SMTP.MTASTS.Domains {
		add(d)
	}
	for _, t := range g.cfg.Tenants {
		for _, r := range t.Routes {
			for _, rc := range r.Recipients {
				if at := strings.LastIndexByte(rc, '@'); at >= 0 {
					add(rc[at+1:])
				}
			}
		}
	}
	return out
}

// mailConfig sets what smtp.auth, smtp.dns, the session limits and
// smtp.tls_rpt.address give the SMTP ingress.
func (g *gateway) mailConfig(c *smtpin.Config) error {
	s := g.cfg.SMTP
	c.MaxJunkCommands = s.MaxJunkCommands
	c.MaxSessionTime = time.Duration(s.MaxSessionTime)
	if g.mail == nil {
		return errors.New("smtp: mail parts not built")
	}
	if g.mail.dns != nil {
		c.Resolver = g.mail.dns
	} else {
		c.AuthOff = true
	}
	if s.TLSRPT.Address != "" {
		c.ReportAddress = s.TLSRPT.Address
		c.Reports = mailedReports{g.mail.reports}
	}
	return nil
}

// mailedReports is the SMTP ingress' ReportSink on the report store.
type mailedReports struct{ s *mtasts.Store }

func (m mailedReports) PutMailedReport(ctx context.Context, r smtpin.MailedReport) (string, error) {
	id, err := m.s.Put(ctx, r.Body, r.Gzipped, mtasts.Received{Channel: "smtp", RemoteAddr: r.RemoteAddr, MailFrom: r.MailFrom, Auth: r.Auth})
	if errors.Is(err, mtasts.ErrInvalidReport) || errors.Is(err, mtasts.ErrReportTooLarge) || errors.Is(err, mtasts.ErrForeignReport) {
		return "", fmt.Errorf("%w: %w", smtpin.ErrReportRefused, err)
	}
	return id, err
}

var _ smtpin.ReportSink = mailedReports{}

// systemResolver returns the first nameserver of a resolv.conf file as
// host:port.
func systemResolver(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("the system resolver is unknown: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "nameserver" {
			host := strings.SplitN(fields[1], "%", 2)[0] // drop an IPv6 zone
			if net.ParseIP(host) != nil {
				return net.JoinHostPort(host, "53"), nil
			}
		}
	}
	return "", fmt.Errorf("%s names no nameserver", path)
}
