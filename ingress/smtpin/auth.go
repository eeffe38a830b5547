package smtpin

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-msgauth/dmarc"
	"golang.org/x/net/publicsuffix"
)

// authTimeout bounds all DNS work of SPF, DKIM and DMARC for one message.
const authTimeout = 20 * time.Second

// maxDKIMSignatures is how many DKIM signatures are verified per message.
const maxDKIMSignatures = 5

// authResults is receipt.source.auth.
type authResults struct {
	// SPF is pass, fail, softfail, neutral, none, temperror or permerror;
	// skipped when authentication is off (Config.AuthOff).
	SPF string `json:"spf"`
	// DKIM holds one result per DKIM-Signature (at most 5), top to bottom.
	DKIM []dkimResult `json:"dkim"`
	// DMARC is pass, fail, none (no policy or no single From domain) or
	// temperror; skipped when authentication is off.
	DMARC string `json:"dmarc"`
}

type dkimResult struct {
	Domain   string `json:"domain"`
	Selector string `json:"selector"`
	// Result is pass, fail, temperror or permerror.
	Result string `json:"result"`
}

type authOutcome struct {
	results authResults
	// dkimAligned is true when a DKIM signature passed for a domain aligned
	// (relaxed) with the From header domain.
	dkimAligned bool
}

// authenticate evaluates SPF for the client IP and envelope sender, every
// DKIM signature, and DMARC alignment. DNS failures become temperror
// results, never errors: authentication is recorded, and only enforced by
// routes that ask for it.
func (s *Server) authenticate(ctx context.Context, raw *chunks, ip netip.Addr, mailFrom, helo string) authOutcome {
	if s.cfg.AuthOff {
		return authOutcome{results: authResults{SPF: "skipped", DKIM: []dkimResult{}, DMARC: "skipped"}}
	}
	ctx, cancel := context.WithTimeout(ctx, authTimeout)
	defer cancel()
	res := s.cfg.Resolver
	out := authOutcome{results: authResults{DKIM: []dkimResult{}}}

	// SPF checks MAIL FROM, or the HELO name for the null sender.
	spfDomain, sender := addrDomain(mailFrom), mailFrom
	if mailFrom == "" {
		spfDomain, sender = strings.ToLower(strings.TrimSuffix(helo, ".")), "postmaster@"+helo
	}
	out.results.SPF = checkSPF(ctx, res, ip, spfDomain, sender, helo)

	// The header, for the From domain and the DKIM selectors.
	hdr, _, _ := readHeader(bufio.NewReader(io.LimitReader(raw.reader(), int64(s.cfg.MaxHeaderBytes))))
	// DMARC needs exactly one From field with exactly one address (RFC 7489
	// section 6.6.1). With several fields, DKIM may have signed one while
	// the payload shows another, so nothing is aligned.
	fromDomain := ""
	if len(hdr.Values("From")) == 1 {
		if list, err := (&mail.Header{Header: message.Header{Header: hdr}}).AddressList("From"); err == nil && len(list) == 1 {
			fromDomain = addrDomain(list[0].Address)
		}
	}
	var selectors []string
	fields := hdr.Fields()
	for fields.Next() {
		if strings.EqualFold(fields.Key(), "Dkim-Signature") {
			selectors = append(selectors, dkimTag(fields.Value(), "s"))
		}
	}

	dkimPassAligned := false
	if len(selectors) > 0 {
		verifs, _ := dkim.VerifyWithOptions(raw.reader(), &dkim.VerifyOptions{
			LookupTXT:        func(name string) ([]string, error) { return res.LookupTXT(ctx, name) },
			MaxVerifications: maxDKIMSignatures,
		})
		for i, v := range verifs {
			if v == nil {
				continue
			}
			r := dkimResult{Domain: strings.ToLower(v.Domain), Result: "pass"}
			if i < len(selectors) {
				r.Selector = selectors[i]
			}
			switch {
			case v.Err == nil:
				if fromDomain != "" && aligned(r.Domain, fromDomain, dmarc.AlignmentRelaxed) {
					dkimPassAligned = true
				}
			case dkim.IsTempFail(v.Err):
				r.Result = "temperror"
			case dkim.IsPermFail(v.Err):
				r.Result = "permerror"
			default:
				r.Result = "fail"
			}
			out.results.DKIM = append(out.results.DKIM, r)
		}
	}
	out.dkimAligned = dkimPassAligned

	out.results.DMARC = checkDMARC(ctx, res, fromDomain, spfDomain, out.results)
	return out
}

// checkDMARC looks up the DMARC policy of the From domain (or of its
// organizational domain) and reports whether SPF or DKIM passed for an
// aligned domain.
func checkDMARC(ctx context.Context, res Resolver, fromDomain, spfDomain string, r authResults) string {
	if fromDomain == "" {
		return "none"
	}
	lookup := func(d string) (*dmarc.Record, error) {
		return dmarc.LookupWithOptions(d, &dmarc.LookupOptions{
			LookupTXT: func(name string) ([]string, error) {
				txts, err := res.LookupTXT(ctx, name)
				if isNotFound(err) {
					return nil, nil
				}
				return txts, err
			},
		})
	}
	rec, err := lookup(fromDomain)
	if errors.Is(err, dmarc.ErrNoPolicy) {
		if org := orgDomain(fromDomain); org != fromDomain {
			rec, err = lookup(org)
		}
	}
	switch {
	case errors.Is(err, dmarc.ErrNoPolicy):
		return "none"
	case err != nil && isTemporaryDNS(err):
		return "temperror"
	case err != nil:
		return "none"
	}
	if r.SPF == "pass" && aligned(spfDomain, fromDomain, rec.SPFAlignment) {
		return "pass"
	}
	for _, d := range r.DKIM {
		if d.Result == "pass" && aligned(d.Domain, fromDomain, rec.DKIMAlignment) {
			return "pass"
		}
	}
	return "fail"
}

// aligned reports whether domain d aligns with the From domain under mode
// (RFC 7489 section 3.1): equal for strict, same organizational domain for
// relaxed (the default).
func aligned(d, from string, mode dmarc.AlignmentMode) bool {
	d, from = strings.ToLower(strings.TrimSuffix(d, ".")), strings.ToLower(strings.TrimSuffix(from, "."))
	if d == "" || from == "" {
		return false
	}
	if mode == dmarc.AlignmentStrict {
		return d == from
	}
	return orgDomain(d) == orgDomain(from)
}

// orgDomain returns the organizational domain of d (RFC 7489 section 3.2):
// the public suffix, from the Public Suffix List compiled into
// golang.org/x/net/publicsuffix, plus one label. A name that is itself a
// public suffix is its own organizational domain.
func orgDomain(d string) string {
	d = strings.ToLower(strings.TrimSuffix(d, "."))
	if org, err := publicsuffix.EffectiveTLDPlusOne(d); err == nil {
		return org
	}
	return d
}

// dkimTag returns the value of tag in a DKIM-Signature field value.
func dkimTag(v, tag string) string {
	for _, kv := range strings.Split(v, ";") {
		k, val, ok := strings.Cut(kv, "=")
		if ok && strings.TrimSpace(k) == tag {
			return strings.Join(strings.Fields(val), "")
		}
	}
	return ""
}

func isNotFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}

func isTemporaryDNS(err error) bool {
	var de *net.DNSError
	if errors.As(err, &de) {
		return !de.IsNotFound
	}
	return dmarc.IsTempFail(err) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}
