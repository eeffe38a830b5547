package forwarder

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
)

// ErrBlockedAddress reports an endpoint address in a range the SSRF guard
// refuses: loopback, private, link-local, CGNAT, multicast, unspecified,
// reserved, documentation, cloud metadata, and every other block that the
// IANA special-purpose address registries mark as not globally reachable.
var ErrBlockedAddress = errors.New("forwarder: blocked address")

// ErrInvalidEndpoint reports an endpoint URL that is malformed or uses a
// scheme, user info or fragment sealpost does not send to.
var ErrInvalidEndpoint = errors.New("forwarder: invalid endpoint url")

// MaxURLLength is the longest endpoint URL accepted, in bytes.
const MaxURLLength = 2048

// blockedPrefixes are refused in addition to what netip's predicates catch.
// IPv4-mapped IPv6 addresses are refused (see Blocked), and IPv6 forms that
// embed an IPv4 address (NAT64, 6to4) are checked by their IPv4 part.
// The list covers every block of the IANA IPv4 and IPv6 special-purpose
// address registries whose "Globally Reachable" is False (checked against
// copies of the registries in testdata/), plus deprecated forms that some
// stacks still route somewhere local (IPv4-compatible ::/96, site-local).
var blockedPrefixes = mustPrefixes(
	"0.0.0.0/8",        // "this network"
	"10.0.0.0/8",       // private
	"100.64.0.0/10",    // CGNAT (includes Alibaba's metadata 100.100.100.200)
	"127.0.0.0/8",      // loopback
	"169.254.0.0/16",   // link-local (AWS, GCP, Azure metadata 169.254.169.254)
	"172.16.0.0/12",    // private
	"192.0.0.0/24",     // IETF protocol assignments
	"192.0.2.0/24",     // documentation
	"192.88.99.0/24",   // 6to4 relay anycast
	"192.168.0.0/16",   // private
	"198.18.0.0/15",    // benchmarking
	"198.51.100.0/24",  // documentation
	"203.0.113.0/24",   // documentation
	"224.0.0.0/4",      // multicast
	"240.0.0.0/4",      // reserved, broadcast
	"168.63.129.16/32", // Azure wire server
	"192.88.99.2/32",   // 6a44 relay anycast
	"::/96",            // IPv4-compatible (deprecated; ::a9fe:a9fe is 169.254.169.254 on some stacks), with :: and ::1
	"::/128",           // unspecified
	"::1/128",          // loopback
	"100::/64",         // discard
	"100:0:0:1::/64",   // dummy prefix
	"2001::/23",        // IETF protocol assignments (Teredo, ORCHID, ...)
	"2001:db8::/32",    // documentation
	"3fff::/20",        // documentation
	"5f00::/16",        // SRv6 segment identifiers
	"fc00::/7",         // unique local (AWS metadata fd00:ec2::254)
	"fe80::/10",        // link-local
	"fec0::/10",        // site-local (deprecated)
	"ff00::/8",         // multicast
	"::ffff:0:0:0/96",  // IPv4-translated
	"64:ff9b:1::/48",   // local-use NAT64
)

func mustPrefixes(ss ...string) []netip.Prefix {
	ps := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		ps[i] = netip.MustParsePrefix(s)
	}
	return ps
}

var (
	nat64     = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour = netip.MustParsePrefix("2002::/16")
)

// Blocked reports whether the SSRF guard refuses addr, given the allow-list.
// An address inside an allowed prefix is let through.
//
// An IPv4-mapped address (::ffff:a.b.c.d) is refused whatever it carries,
// like the IPv4-compatible form (::a.b.c.d): the registry marks both blocks
// not globally reachable, and a public IPv4 address is dialed as itself.
// The allow-list is matched against the IPv4 address inside, so allowing
// 127.0.0.0/8 also allows ::ffff:127.0.0.1.
func Blocked(addr netip.Addr, allow []netip.Prefix) bool {
	mapped := addr.Is4In6()
	addr = addr.Unmap().WithZone("")
	for _, p := range allow {
		if p.Contains(addr) {
			return false
		}
	}
	if !addr.IsValid() || mapped {
		return true
	}
	if addr.Is6() {
		// Forms that carry an IPv4 address inside are judged by it.
		b := addr.As16()
		switch {
		case nat64.Contains(addr):
			return Blocked(netip.AddrFrom4([4]byte(b[12:16])), allow)
		case sixToFour.Contains(addr):
			if Blocked(netip.AddrFrom4([4]byte(b[2:6])), allow) {
				return true
			}
		}
	}
	if addr.IsLoopback() || addr.IsPrivate() || addr.IsUnspecified() || addr.IsMulticast() ||
		addr.IsLinkLocalUnicast() || addr.IsLinkLocalMulticast() || addr.IsInterfaceLocalMulticast() {
		return true
	}
	for _, p := range blockedPrefixes {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// guard checks every address the HTTP client dials. Because the check runs
// on the resolved address at connect time, a name that resolves to a blocked
// address is refused however it was resolved, and re-resolving (DNS
// rebinding) cannot get around it.
type guard struct {
	allow []netip.Prefix
}

// control is a net.Dialer Control function: it runs after resolution, just
// before connect, with the literal address being dialed.
func (g *guard) control(network, address string, _ syscall.RawConn) error {
	if network != "tcp" && network != "tcp4" && network != "tcp6" {
		return fmt.Errorf("%w: network %s", ErrBlockedAddress, network)
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: unparsable address", ErrBlockedAddress)
	}
	if Blocked(ap.Addr(), g.allow) {
		return fmt.Errorf("%w: %s", ErrBlockedAddress, ap.Addr())
	}
	return nil
}

// ValidateEndpoint checks an endpoint URL when it is configured: an absolute
// https URL (http only with allowHTTP), a host, no user info, no fragment, at
// most MaxURLLength bytes. A host that is an address literal in a blocked
// range, or "localhost", fails with ErrBlockedAddress; callers that run with
// an allow-list (development) may check such addresses with Blocked. Names
// are checked again on every connection, so passing here does not let a
// name that later resolves to a private address through.
func ValidateEndpoint(u string, allowHTTP bool) error {
	_, err := parseEndpoint(u, allowHTTP)
	if err != nil {
		return err
	}
	host := hostOf(u)
	if IsLocalhost(host) {
		return fmt.Errorf("%w: localhost", ErrBlockedAddress)
	}
	a, err := netip.ParseAddr(host)
	switch {
	case err == nil && Blocked(a, nil):
		return fmt.Errorf("%w: %s", ErrBlockedAddress, a)
	case err != nil && numericTLD(host):
		// "127.1", "0x7f.1", "2130706433": not a name, and some resolvers
		// read them as IPv4 addresses.
		return fmt.Errorf("%w: host is neither an IP address nor a name", ErrInvalidEndpoint)
	}
	return nil
}

// IsLocalhost reports whether host is "localhost" or a name under it
// (RFC 6761), in any case and with or without the trailing dot of a fully
// qualified name ("localhost." resolves like "localhost").
func IsLocalhost(host string) bool {
	h := strings.ToLower(strings.TrimRight(host, "."))
	return h == "localhost" || strings.HasSuffix(h, ".localhost")
}

// numericTLD reports whether the last label of host is a number (decimal,
// or hex with 0x): no real top-level domain is.
func numericTLD(host string) bool {
	host = strings.TrimSuffix(host, ".")
	label := host[strings.LastIndexByte(host, '.')+1:]
	if l := strings.ToLower(label); strings.HasPrefix(l, "0x") {
		label = l[2:]
		return label == "" || strings.Trim(label, "0123456789abcdef") == ""
	}
	return label == "" || strings.Trim(label, "0123456789") == ""
}

// parseEndpoint is the syntactic part of ValidateEndpoint, also checked
// before every attempt.
func parseEndpoint(u string, allowHTTP bool) (*url.URL, error) {
	if len(u) > MaxURLLength {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrInvalidEndpoint, MaxURLLength)
	}
	p, err := url.Parse(u)
	if err != nil {
		return nil, fmt.Errorf("%w: does not parse", ErrInvalidEndpoint)
	}
	switch {
	case p.Scheme == "https":
	case p.Scheme == "http" && allowHTTP:
	case p.Scheme == "http":
		return nil, fmt.Errorf("%w: http is allowed only where the route permits it", ErrInvalidEndpoint)
	default:
		return nil, fmt.Errorf("%w: scheme must be https", ErrInvalidEndpoint)
	}
	switch {
	case p.Opaque != "":
		return nil, fmt.Errorf("%w: not a hierarchical url", ErrInvalidEndpoint)
	case p.Host == "" || p.Hostname() == "":
		return nil, fmt.Errorf("%w: missing host", ErrInvalidEndpoint)
	case p.User != nil:
		return nil, fmt.Errorf("%w: user info is not allowed", ErrInvalidEndpoint)
	case p.Fragment != "" || strings.Contains(u, "#"):
		return nil, fmt.Errorf("%w: fragment is not allowed", ErrInvalidEndpoint)
	}
	if port := p.Port(); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("%w: bad port", ErrInvalidEndpoint)
		}
	}
	return p, nil
}

func hostOf(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return ""
	}
	return p.Hostname()
}
