package smtpin

import (
	"context"
	"net"
	"net/netip"
	"strings"

	"blitiri.com.ar/go/spf"
)

// spfResolver is what SPF evaluation asks of the DNS (blitiri.com.ar/go/spf's
// DNSResolver): TXT for the records, A/AAAA and MX for the "a", "mx" and
// "exists" mechanisms, PTR for "ptr". *net.Resolver and *dnscache.Cache have
// all four.
type spfResolver interface {
	Resolver
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
	LookupAddr(ctx context.Context, addr string) ([]string, error)
}

// checkSPF evaluates the SPF policy (RFC 7208) of domain for a message from
// ip with envelope sender sender and HELO name helo, and returns the result
// name: pass, fail, softfail, neutral, none, temperror or permerror.
// Evaluation is blitiri.com.ar/go/spf's; a resolver without the MX, address
// and PTR lookups answers those with a temporary failure.
func checkSPF(ctx context.Context, res Resolver, ip netip.Addr, domain, sender, helo string) string {
	if !validDomain(domain) {
		return "none"
	}
	r, ok := res.(spfResolver)
	if !ok {
		r = txtOnly{res}
	}
	if _, d, found := strings.Cut(sender, "@"); !found || d == "" {
		sender = "postmaster@" + domain
	}
	result, _ := spf.CheckHostWithSender(net.IP(ip.Unmap().AsSlice()), helo, sender,
		spf.WithContext(ctx), spf.WithResolver(r))
	return string(result)
}

// validDomain reports whether d can name an SPF policy: a name with at
// least two labels, none empty or longer than 63 bytes. Anything else (a
// bare HELO word such as "localhost", an address literal) has no policy.
func validDomain(d string) bool {
	d = strings.TrimSuffix(d, ".")
	if d == "" || len(d) > 253 || !strings.Contains(d, ".") || strings.HasPrefix(d, "[") {
		return false
	}
	for _, l := range strings.Split(d, ".") {
		if l == "" || len(l) > 63 {
			return false
		}
	}
	return true
}

// txtOnly gives a TXT-only Resolver the other lookups of SPF, each failing
// temporarily: an "a" or "mx" mechanism then yields temperror, never a
// false pass or fail.
type txtOnly struct{ Resolver }

func unsupported(name string) error {
	return &net.DNSError{Err: "lookup not supported by the configured resolver", Name: name, IsTemporary: true}
}

func (txtOnly) LookupMX(_ context.Context, name string) ([]*net.MX, error) {
	return nil, unsupported(name)
}

func (txtOnly) LookupIPAddr(_ context.Context, host string) ([]net.IPAddr, error) {
	return nil, unsupported(host)
}

func (txtOnly) LookupAddr(_ context.Context, addr string) ([]string, error) {
	return nil, unsupported(addr)
}
