package forwarder

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
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
		{"8.8.8.8", false},
		{"1.1.1.1", false},
		{"93.184.216.34", false},
		{"::ffff:8.8.8.8", false},
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
