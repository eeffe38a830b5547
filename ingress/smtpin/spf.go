package smtpin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// SPF (RFC 7208) limits.
const (
	spfMaxLookups = 10 // DNS-querying terms per check
	spfMaxVoids   = 2  // lookups answering no records
	spfMaxMX      = 10 // MX hosts looked at per mx mechanism
)

// ipResolver and mxResolver are the optional lookups of the SPF "a", "mx"
// and "exists" mechanisms; *net.Resolver has both.
type ipResolver interface {
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
}

type mxResolver interface {
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
}

// errSPFPerm and errSPFTemp end an evaluation with permerror or temperror.
var (
	errSPFPerm = errors.New("spf permerror")
	errSPFTemp = errors.New("spf temperror")
)

type spfCheck struct {
	ctx     context.Context
	res     Resolver
	ip      netip.Addr
	sender  string
	helo    string
	lookups int
	voids   int
}

// checkSPF evaluates the SPF policy of domain for a message from ip with
// envelope sender sender, and returns the result name.
func checkSPF(ctx context.Context, res Resolver, ip netip.Addr, domain, sender, helo string) string {
	c := &spfCheck{ctx: ctx, res: res, ip: ip.Unmap(), sender: sender, helo: helo}
	if !validDomain(domain) {
		return "none"
	}
	r, err := c.check(domain, 0)
	switch {
	case errors.Is(err, errSPFTemp):
		return "temperror"
	case err != nil:
		return "permerror"
	}
	return r
}

func validDomain(d string) bool {
	d = strings.TrimSuffix(d, ".")
	if d == "" || len(d) > 253 || !strings.Contains(d, ".") {
		return false
	}
	for _, l := range strings.Split(d, ".") {
		if l == "" || len(l) > 63 {
			return false
		}
	}
	return true
}

func (c *spfCheck) countLookup() error {
	c.lookups++
	if c.lookups > spfMaxLookups {
		return fmt.Errorf("%w: more than %d DNS lookups", errSPFPerm, spfMaxLookups)
	}
	return nil
}

// void records a lookup that found nothing.
func (c *spfCheck) void() error {
	c.voids++
	if c.voids > spfMaxVoids {
		return fmt.Errorf("%w: too many void lookups", errSPFPerm)
	}
	return nil
}

// record fetches the single SPF record of domain; "" means none.
func (c *spfCheck) record(domain string) (string, error) {
	txts, err := c.res.LookupTXT(c.ctx, domain)
	if err != nil {
		if isNotFound(err) {
			return "", nil
		}
		return "", errSPFTemp
	}
	var recs []string
	for _, t := range txts {
		if l := strings.ToLower(t); l == "v=spf1" || strings.HasPrefix(l, "v=spf1 ") {
			recs = append(recs, t)
		}
	}
	switch len(recs) {
	case 0:
		return "", nil
	case 1:
		return recs[0], nil
	}
	return "", fmt.Errorf("%w: several SPF records", errSPFPerm)
}

// check is check_host() of RFC 7208 section 4.
func (c *spfCheck) check(domain string, depth int) (string, error) {
	if depth > spfMaxLookups {
		return "", errSPFPerm
	}
	rec, err := c.record(domain)
	if err != nil {
		return "", err
	}
	if rec == "" {
		return "none", nil
	}
	redirect := ""
	for _, term := range strings.Fields(rec)[1:] {
		// A modifier is name=value with no ':' or '/' before the '='.
		if i := strings.IndexByte(term, '='); i > 0 && !strings.ContainsAny(term[:i], ":/") {
			name := strings.ToLower(term[:i])
			if name == "redirect" {
				if redirect != "" {
					return "", errSPFPerm
				}
				redirect = term[i+1:]
			}
			continue // exp= and unknown modifiers are ignored
		}
		result := "pass"
		switch term[0] {
		case '+':
			term = term[1:]
		case '-':
			result, term = "fail", term[1:]
		case '~':
			result, term = "softfail", term[1:]
		case '?':
			result, term = "neutral", term[1:]
		}
		match, err := c.mechanism(term, domain, depth)
		if err != nil {
			return "", err
		}
		if match {
			return result, nil
		}
	}
	if redirect != "" {
		if err := c.countLookup(); err != nil {
			return "", err
		}
		target, err := c.expand(redirect, domain)
		if err != nil {
			return "", err
		}
		r, err := c.check(target, depth+1)
		if err != nil {
			return "", err
		}
		if r == "none" {
			return "", errSPFPerm
		}
		return r, nil
	}
	return "neutral", nil
}

// mechanism reports whether one mechanism matches the client IP.
func (c *spfCheck) mechanism(term, domain string, depth int) (bool, error) {
	name, arg := term, ""
	if i := strings.IndexAny(term, ":/"); i >= 0 {
		name, arg = term[:i], term[i:]
	}
	switch strings.ToLower(name) {
	case "all":
		return arg == "", nil
	case "ip4", "ip6":
		if !strings.HasPrefix(arg, ":") {
			return false, errSPFPerm
		}
		s := arg[1:]
		if !strings.Contains(s, "/") {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return false, errSPFPerm
			}
			s = netip.PrefixFrom(a, a.BitLen()).String()
		}
		p, err := netip.ParsePrefix(s)
		if err != nil || (strings.EqualFold(name, "ip4") != p.Addr().Is4()) {
			return false, errSPFPerm
		}
		return p.Contains(c.ip), nil
	case "include":
		target, err := c.lookupTarget(arg, domain)
		if err != nil {
			return false, err
		}
		r, err := c.check(target, depth+1)
		if err != nil {
			return false, err
		}
		switch r {
		case "pass":
			return true, nil
		case "none":
			return false, errSPFPerm
		}
		return false, nil
	case "a", "mx":
		if err := c.countLookup(); err != nil {
			return false, err
		}
		target, v4, v6, err := c.domainCIDR(arg, domain)
		if err != nil {
			return false, err
		}
		hosts := []string{target}
		if strings.EqualFold(name, "mx") {
			mr, ok := c.res.(mxResolver)
			if !ok {
				return false, errSPFTemp
			}
			mxs, err := mr.LookupMX(c.ctx, target)
			if err != nil && !isNotFound(err) {
				return false, errSPFTemp
			}
			if len(mxs) == 0 {
				return false, c.void()
			}
			hosts = hosts[:0]
			for i, mx := range mxs {
				if i == spfMaxMX {
					break
				}
				hosts = append(hosts, mx.Host)
			}
		}
		for _, h := range hosts {
			addrs, err := c.lookupIP(h)
			if err != nil {
				return false, err
			}
			for _, a := range addrs {
				bits := v4
				if a.Is6() {
					bits = v6
				}
				if p, err := a.Prefix(bits); err == nil && p.Contains(c.ip) {
					return true, nil
				}
			}
		}
		return false, nil
	case "exists":
		target, err := c.lookupTarget(arg, domain)
		if err != nil {
			return false, err
		}
		addrs, err := c.lookupIP(target)
		if err != nil {
			return false, err
		}
		for _, a := range addrs {
			if a.Is4() {
				return true, nil
			}
		}
		return false, nil
	case "ptr":
		// Deprecated by RFC 7208 and not evaluated: never matches.
		return false, c.countLookup()
	}
	return false, fmt.Errorf("%w: unknown mechanism", errSPFPerm)
}

// lookupIP resolves a host name, counting void answers.
// lookupTarget counts a DNS-querying mechanism and expands its required
// ":domain-spec" argument (include and exists).
func (c *spfCheck) lookupTarget(arg, domain string) (string, error) {
	if err := c.countLookup(); err != nil {
		return "", err
	}
	if !strings.HasPrefix(arg, ":") {
		return "", errSPFPerm
	}
	return c.expand(arg[1:], domain)
}

func (c *spfCheck) lookupIP(host string) ([]netip.Addr, error) {
	ir, ok := c.res.(ipResolver)
	if !ok {
		return nil, errSPFTemp
	}
	ips, err := ir.LookupIPAddr(c.ctx, host)
	if err != nil && !isNotFound(err) {
		return nil, errSPFTemp
	}
	if len(ips) == 0 {
		return nil, c.void()
	}
	out := make([]netip.Addr, 0, len(ips))
	for _, ip := range ips {
		if a, ok := netip.AddrFromSlice(ip.IP); ok {
			out = append(out, a.Unmap())
		}
	}
	return out, nil
}

// domainCIDR parses the [":" domain-spec] [ip4-cidr] ["//" ip6-cidr] argument
// of a and mx.
func (c *spfCheck) domainCIDR(arg, domain string) (target string, v4, v6 int, err error) {
	v4, v6 = 32, 128
	if i := strings.Index(arg, "//"); i >= 0 {
		if v6, err = strconv.Atoi(arg[i+2:]); err != nil || v6 < 0 || v6 > 128 {
			return "", 0, 0, errSPFPerm
		}
		arg = arg[:i]
	}
	if i := strings.LastIndexByte(arg, '/'); i >= 0 {
		if v4, err = strconv.Atoi(arg[i+1:]); err != nil || v4 < 0 || v4 > 32 {
			return "", 0, 0, errSPFPerm
		}
		arg = arg[:i]
	}
	target = domain
	if strings.HasPrefix(arg, ":") {
		if target, err = c.expand(arg[1:], domain); err != nil {
			return "", 0, 0, err
		}
	} else if arg != "" {
		return "", 0, 0, errSPFPerm
	}
	return target, v4, v6, nil
}

// expand expands the macros of a domain-spec (RFC 7208 section 7).
func (c *spfCheck) expand(spec, domain string) (string, error) {
	if !strings.Contains(spec, "%") {
		return spec, nil
	}
	var b strings.Builder
	for i := 0; i < len(spec); i++ {
		if spec[i] != '%' {
			b.WriteByte(spec[i])
			continue
		}
		if i+1 >= len(spec) {
			return "", errSPFPerm
		}
		i++
		switch spec[i] {
		case '%':
			b.WriteByte('%')
			continue
		case '_':
			b.WriteByte(' ')
			continue
		case '-':
			b.WriteString("%20")
			continue
		case '{':
		default:
			return "", errSPFPerm
		}
		end := strings.IndexByte(spec[i:], '}')
		if end < 2 {
			return "", errSPFPerm
		}
		body := spec[i+1 : i+end]
		i += end
		v, err := c.macro(body, domain)
		if err != nil {
			return "", err
		}
		b.WriteString(v)
	}
	return b.String(), nil
}

// macro expands the body of one %{...} macro.
func (c *spfCheck) macro(body, domain string) (string, error) {
	letter := body[0] | 0x20
	rest := body[1:]
	local, senderDomain, _ := splitAddr(c.sender)
	if local == "" {
		local = "postmaster"
	}
	var v string
	switch letter {
	case 's':
		v = c.sender
	case 'l':
		v = local
	case 'o':
		v = senderDomain
	case 'd':
		v = domain
	case 'h':
		v = c.helo
	case 'i':
		if c.ip.Is4() {
			v = c.ip.String()
		} else {
			x := c.ip.As16()
			nibbles := make([]string, 0, 32)
			for _, by := range x {
				nibbles = append(nibbles, strconv.FormatUint(uint64(by>>4), 16), strconv.FormatUint(uint64(by&0xf), 16))
			}
			v = strings.Join(nibbles, ".")
		}
	case 'v':
		v = "in-addr"
		if c.ip.Is6() {
			v = "ip6"
		}
	case 'p':
		v = "unknown"
	default:
		return "", errSPFPerm
	}
	digits := 0
	for len(rest) > 0 && rest[0] >= '0' && rest[0] <= '9' {
		digits = digits*10 + int(rest[0]-'0')
		if digits > 128 {
			return "", errSPFPerm
		}
		rest = rest[1:]
	}
	reverse := false
	if len(rest) > 0 && (rest[0] == 'r' || rest[0] == 'R') {
		reverse, rest = true, rest[1:]
	}
	delims := "."
	if rest != "" {
		if strings.Trim(rest, ".-+,/_=") != "" {
			return "", errSPFPerm
		}
		delims = rest
	}
	parts := strings.FieldsFunc(v, func(r rune) bool { return strings.ContainsRune(delims, r) })
	if reverse {
		for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
			parts[i], parts[j] = parts[j], parts[i]
		}
	}
	if digits > 0 && digits < len(parts) {
		parts = parts[len(parts)-digits:]
	}
	return strings.Join(parts, "."), nil
}
