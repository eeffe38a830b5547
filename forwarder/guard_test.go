package forwarder

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestBlocked(t *testing.T) {
	for _, tc := range []struct {
		addr    string
		blocked bool
	}{
		{"127.0.0.1", true},
		{"127.8.9.10", true},
		{"10.0.0.1", true},
		{"172.16.5.4", true},
		{"192.168.1.1", true},
		{"100.64.0.1", true},
		{"100.100.100.200", true},
		{"169.254.169.254", true},
		{"168.63.129.16", true},
		{"0.0.0.0", true},
		{"224.0.0.1", true},
		{"255.255.255.255", true},
		{"198.18.0.1", true},
		{"::1", true},
		{"::", true},
		{"fe80::1", true},
		{"fe80::1%eth0", true},
		{"fc00::1", true},
		{"fd00:ec2::254", true},
		{"ff02::1", true},
		{"::ffff:127.0.0.1", true},
		{"::ffff:10.0.0.1", true},
		{"::ffff:0:127.0.0.1", true},
		{"64:ff9b::a00:1", true},    // NAT64 of 10.0.0.1
		{"64:ff9b::808:808", false}, // NAT64 of 8.8.8.8
		{"2002:7f00:1::1", true},    // 6to4 of 127.0.0.1
		{"2001:db8::1", true},
		{"::a9fe:a9fe", true}, // IPv4-compatible 169.254.169.254
		{"::127.0.0.1", true},
		{"::8.8.8.8", true}, // IPv4-compatible is deprecated: refused whatever it carries
		{"3fff::1", true},
		{"3fff:fff:ffff::1", true},
		{"4000::1", false},
		{"8.8.8.8", false},
		{"1.1.1.1", false},
		{"93.184.216.34", false},
		{"::ffff:8.8.8.8", true}, // IPv4-mapped: refused whatever it carries
		{"2606:4700:4700::1111", false},
	} {
		t.Run(tc.addr, func(t *testing.T) {
			a := netip.MustParseAddr(tc.addr)
			if got := Blocked(a, nil); got != tc.blocked {
				t.Errorf("Blocked(%s) = %v, want %v", a, got, tc.blocked)
			}
		})
	}
	allow := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	if Blocked(netip.MustParseAddr("127.0.0.1"), allow) || Blocked(netip.MustParseAddr("::ffff:127.0.0.1"), allow) {
		t.Error("allow-listed loopback is blocked")
	}
	if !Blocked(netip.MustParseAddr("10.0.0.1"), allow) {
		t.Error("allow-list opened more than its prefix")
	}
}

func TestValidateEndpoint(t *testing.T) {
	for _, tc := range []struct {
		url       string
		allowHTTP bool
		want      error
	}{
		{"https://hooks.example.com/sealpost", false, nil},
		{"https://hooks.example.com:8443/x?y=1", false, nil},
		{"http://hooks.example.com/", true, nil},
		{"http://hooks.example.com/", false, ErrInvalidEndpoint},
		{"ftp://hooks.example.com/", true, ErrInvalidEndpoint},
		{"https:///nohost", false, ErrInvalidEndpoint},
		{"https://user:pw@hooks.example.com/", false, ErrInvalidEndpoint},
		{"https://hooks.example.com/#frag", false, ErrInvalidEndpoint},
		{"https://hooks.example.com:0/", false, ErrInvalidEndpoint},
		{"https://hooks.example.com:99999/", false, ErrInvalidEndpoint},
		{"https://hooks.example.com/" + strings.Repeat("a", MaxURLLength), false, ErrInvalidEndpoint},
		{"hooks.example.com/x", false, ErrInvalidEndpoint},
		{"https:opaque", false, ErrInvalidEndpoint},
		{"https://127.0.0.1/hook", false, ErrBlockedAddress},
		{"https://10.0.0.1/hook", false, ErrBlockedAddress},
		{"https://169.254.169.254/latest/meta-data/", false, ErrBlockedAddress},
		{"https://[::1]/hook", false, ErrBlockedAddress},
		{"https://[::ffff:127.0.0.1]/hook", false, ErrBlockedAddress},
		{"https://localhost/hook", false, ErrBlockedAddress},
		{"https://api.localhost/hook", false, ErrBlockedAddress},
		{"http://localhost.:8080/hook", true, ErrBlockedAddress},
		{"https://LocalHost./hook", false, ErrBlockedAddress},
		{"https://api.localhost./hook", false, ErrBlockedAddress},
		{"http://[::a9fe:a9fe]/", true, ErrBlockedAddress},
		{"http://[::127.0.0.1]/", true, ErrBlockedAddress},
		{"https://[::8.8.8.8]/", false, ErrBlockedAddress},
		{"https://[3fff::1]/hook", false, ErrBlockedAddress},
		{"https://[5f00::1]/hook", false, ErrBlockedAddress},
		{"https://[100:0:0:1::1]/hook", false, ErrBlockedAddress},
		{"https://127.1/hook", false, ErrInvalidEndpoint},
		{"https://0x7f.1/hook", false, ErrInvalidEndpoint},
		{"https://2130706433/hook", false, ErrInvalidEndpoint},
		{"hTtPs://Hooks.Example.COM./x", false, nil},
	} {
		t.Run(tc.url[:min(len(tc.url), 60)], func(t *testing.T) {
			err := ValidateEndpoint(tc.url, tc.allowHTTP)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("ValidateEndpoint(%q) = %v, want %v", tc.url, err, tc.want)
			}
		})
	}
}

func FuzzValidateEndpoint(f *testing.F) {
	for _, s := range []string{"https://hooks.example.com/x", "http://[::ffff:127.0.0.1]:80/", "https://u@h/#f", "https://%zz"} {
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, u string, allowHTTP bool) {
		if ValidateEndpoint(u, allowHTTP) != nil {
			return
		}
		l := strings.ToLower(u)
		if !strings.HasPrefix(l, "https://") && !(allowHTTP && strings.HasPrefix(l, "http://")) {
			t.Fatalf("accepted %q", u)
		}
		if len(u) > MaxURLLength || strings.Contains(u, "#") {
			t.Fatalf("accepted %q", u)
		}
	})
}

// fakeDNS answers every A query with ip and every other query with no
// records. It stands in for an attacker's DNS server that points a public
// looking name at an internal address.
func fakeDNS(t *testing.T, ip netip.Addr) *net.Resolver {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			q := buf[:n]
			if len(q) < 12 {
				continue
			}
			// Question: name labels up to a zero byte, then type and class.
			i := 12
			for i < len(q) && q[i] != 0 {
				i += int(q[i]) + 1
			}
			if i+5 > len(q) {
				continue
			}
			qtype := binary.BigEndian.Uint16(q[i+1:])
			question := q[12 : i+5]
			resp := append([]byte(nil), q[:2]...)
			resp = append(resp, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0)
			resp = append(resp, question...)
			if qtype == 1 {
				resp[7] = 1 // one answer
				a := ip.As4()
				resp = append(resp, 0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4)
				resp = append(resp, a[:]...)
			}
			pc.WriteTo(resp, from)
		}
	}()
	addr := pc.LocalAddr().String()
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", addr)
	}}
}

// TestSSRFWhenDialing sends to internal addresses with no allow-list: every
// attempt is refused when dialing, including a name that resolves to
// loopback, and no request reaches the receiver listening there.
func TestSSRFWhenDialing(t *testing.T) {
	rc := newReceiver(t, nil)
	port := rc.srv.Listener.Addr().(*net.TCPAddr).Port
	p := ":" + strconv.Itoa(port)
	for _, tc := range []struct {
		name, url string
		allowHTTP bool
	}{
		{"loopback", "https://127.0.0.1" + p + "/hook", false},
		{"private", "https://10.0.0.1/hook", false},
		{"metadata", "http://169.254.169.254/latest/meta-data/", true},
		{"ipv6 loopback", "https://[::1]" + p + "/hook", false},
		{"ipv4-mapped", "https://[::ffff:127.0.0.1]" + p + "/hook", false},
		{"localhost name", "https://localhost" + p + "/hook", false},
		{"name resolving to private", "https://example.com" + p + "/hook", false},
		{"http not allowed", "http://127.0.0.1" + p + "/hook", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(c *Config) { c.AllowNets = nil })
			e.w.client = newClient(e.w.cfg, e.w.guard, fakeDNS(t, netip.MustParseAddr("127.0.0.1")))
			e.routes.set(Route{Tenant: "acme", Name: "r", Endpoint: Endpoint{URL: tc.url, AllowHTTP: tc.allowHTTP}})
			s := submission(t, "r")
			d := &fakeDelivery{}
			e.handle(context.Background(), s, d)
			as, err := e.w.Attempts(context.Background(), "acme", s.ID)
			if err != nil {
				t.Fatal(err)
			}
			if d.decision() != "retry" || as[0].Class != ClassSSRF {
				t.Errorf("decision %s class %q, want retry ssrf", d.decision(), as[0].Class)
			}
		})
	}
	if n := len(rc.requests()); n != 0 {
		t.Errorf("%d requests reached the internal receiver", n)
	}
	// The same name with loopback on the allow-list reaches the receiver:
	// the guard judged the resolved address, not the name.
	e := newEnv(t, nil)
	e.trust(rc)
	e.w.client = newClient(e.w.cfg, e.w.guard, fakeDNS(t, netip.MustParseAddr("127.0.0.1")))
	e.routes.set(Route{Tenant: "acme", Name: "r", Endpoint: Endpoint{URL: "https://example.com" + p + "/hook"}})
	d := &fakeDelivery{}
	e.handle(context.Background(), submission(t, "r"), d)
	if n := len(rc.requests()); n != 1 || !d.acked {
		t.Errorf("allow-listed resolution: %d requests, decision %s; want 1, ack", n, d.decision())
	}
}

// registryBlock is one entry of an IANA special-purpose address registry.
type registryBlock struct {
	prefix    netip.Prefix
	reachable string // the "Globally Reachable" column: True, False, N/A or "-"
	name      string
}

// readRegistry reads a copy of an IANA special-purpose address registry
// from testdata: one block a line, tab-separated address block, globally
// reachable, name.
func readRegistry(t *testing.T, name string) []registryBlock {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	var out []registryBlock
	for i, line := range strings.Split(string(data), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, "\t")
		if len(f) != 3 {
			t.Fatalf("%s:%d: want 3 tab-separated fields, got %q", name, i+1, line)
		}
		p, err := netip.ParsePrefix(f[0])
		if err != nil || p != p.Masked() {
			t.Fatalf("%s:%d: bad block %q: %v", name, i+1, f[0], err)
		}
		switch f[1] {
		case "True", "False", "N/A", "-":
		default:
			t.Fatalf("%s:%d: globally reachable %q", name, i+1, f[1])
		}
		out = append(out, registryBlock{prefix: p, reachable: f[1], name: f[2]})
	}
	return out
}

// samples returns the first, a middle and the last address of p.
func samples(p netip.Prefix) []netip.Addr {
	first := p.Addr()
	b := first.AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	last, _ := netip.AddrFromSlice(b)
	out := []netip.Addr{first}
	if p.Bits() < first.BitLen() {
		m := first.AsSlice()
		m[p.Bits()/8] |= 0x80 >> (p.Bits() % 8)
		mid, _ := netip.AddrFromSlice(m)
		out = append(out, mid, last)
	}
	return out
}

// urlHost writes a as the host of a URL.
func urlHost(a netip.Addr) string {
	if a.Is6() {
		return "[" + a.String() + "]"
	}
	return a.String()
}

// TestGuardCoversIANARegistries checks the guard against the IANA IPv4 and
// IPv6 special-purpose address registries: every address of every block
// that is not globally reachable is refused, when dialing (Blocked) and in
// a configured URL (ValidateEndpoint). IPv4 blocks are also tried in the
// IPv6 forms that carry an IPv4 address: IPv4-mapped, IPv4-compatible and
// NAT64. Blocks that are globally reachable, or whose reachability depends
// on an embedded address (N/A: Teredo, 6to4), are not required either way.
func TestGuardCoversIANARegistries(t *testing.T) {
	nat64 := netip.MustParseAddr("64:ff9b::").As16()
	for _, file := range []string{"iana-ipv4-special-registry.tsv", "iana-ipv6-special-registry.tsv"} {
		blocks := readRegistry(t, file)
		if len(blocks) < 20 {
			t.Fatalf("%s: %d blocks, the registry has more than 20", file, len(blocks))
		}
		for _, b := range blocks {
			if b.reachable != "False" {
				continue
			}
			t.Run(b.prefix.String(), func(t *testing.T) {
				for _, a := range samples(b.prefix) {
					forms := []netip.Addr{a}
					if a.Is4() {
						v4 := a.As4()
						compat, mapped, translated := [16]byte{}, netip.AddrFrom4(v4).As16(), nat64
						copy(compat[12:], v4[:])
						copy(translated[12:], v4[:])
						mapped = netip.AddrFrom16(mapped).As16()
						forms = append(forms, netip.AddrFrom16(compat), netip.AddrFrom16(mapped), netip.AddrFrom16(translated))
					}
					for _, f := range forms {
						if !Blocked(f, nil) {
							t.Errorf("%s (%s): Blocked(%s) = false", b.prefix, b.name, f)
						}
						u := "https://" + urlHost(f) + "/hook"
						if err := ValidateEndpoint(u, false); !errors.Is(err, ErrBlockedAddress) {
							t.Errorf("%s (%s): ValidateEndpoint(%s) = %v, want ErrBlockedAddress", b.prefix, b.name, u, err)
						}
					}
				}
			})
		}
	}
}
