package dnscache_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/sealpost/sealpost/ingress/smtpin/dnscache"
	"github.com/sealpost/sealpost/ingress/smtpin/dnscache/dnstest"
)

var zone = dnstest.Zone{
	TXT: map[string][]string{
		"vendor.example":                {"v=spf1 ip4:192.0.2.0/24 -all", "google-site-verification=x"},
		"s1._domainkey.vendor.example":  {"v=DKIM1; k=rsa; p=" + strings.Repeat("A", 400)}, // two character-strings
		"alias-target.example":          {"v=spf1 -all"},
		"_dmarc.vendor.example":         {"v=DMARC1; p=reject"},
		"nodata.example":                {},
		"mx.vendor.example":             {"not an spf record"},
		"4.3.2.1.in-addr.arpa.nonsense": {"x"},
	},
	A: map[string][]string{
		"mx.vendor.example":  {"192.0.2.25", "2001:db8::25"},
		"mx2.vendor.example": {"192.0.2.26"},
	},
	MX:    map[string][]string{"vendor.example": {"mx.vendor.example", "mx2.vendor.example"}},
	PTR:   map[string][]string{"25.2.0.192.in-addr.arpa": {"mx.vendor.example"}},
	CNAME: map[string]string{"alias.example": "alias-target.example"},
	Fail:  map[string]bool{"broken.example": true},
	TTL:   120, NegativeTTL: 45,
}

func TestClientAgainstLoopbackServer(t *testing.T) {
	srv := dnstest.Start(t, zone)
	c := &dnscache.Client{Addr: srv.Addr}
	ctx := context.Background()
	cache, err := dnscache.New(dnscache.Config{Upstream: c})
	if err != nil {
		t.Fatal(err)
	}

	txt, err := cache.LookupTXT(ctx, "vendor.example")
	if err != nil || len(txt) != 2 || txt[0] != "v=spf1 ip4:192.0.2.0/24 -all" {
		t.Fatalf("TXT: %q %v", txt, err)
	}
	txt, err = cache.LookupTXT(ctx, "s1._domainkey.vendor.example")
	if err != nil || len(txt) != 1 || len(txt[0]) != len("v=DKIM1; k=rsa; p=")+400 {
		t.Fatalf("long TXT not joined: %d records %v", len(txt), err)
	}
	txt, err = cache.LookupTXT(ctx, "alias.example")
	if err != nil || len(txt) != 1 || txt[0] != "v=spf1 -all" {
		t.Fatalf("TXT through CNAME: %q %v", txt, err)
	}
	ips, err := cache.LookupIPAddr(ctx, "mx.vendor.example")
	if err != nil || len(ips) != 2 || ips[0].IP.String() != "192.0.2.25" || ips[1].IP.String() != "2001:db8::25" {
		t.Fatalf("A+AAAA: %v %v", ips, err)
	}
	mxs, err := cache.LookupMX(ctx, "vendor.example")
	if err != nil || len(mxs) != 2 || mxs[0].Host != "mx.vendor.example." {
		t.Fatalf("MX: %v %v", mxs, err)
	}
	names, err := cache.LookupAddr(ctx, "192.0.2.25")
	if err != nil || len(names) != 1 || names[0] != "mx.vendor.example." {
		t.Fatalf("PTR: %v %v", names, err)
	}

	for _, name := range []string{"nxdomain.example", "nodata.example"} {
		_, err = cache.LookupTXT(ctx, name)
		var de *net.DNSError
		if !errors.As(err, &de) || !de.IsNotFound {
			t.Errorf("%s: got %v, want not found", name, err)
		}
	}
	_, err = cache.LookupTXT(ctx, "broken.example")
	var de *net.DNSError
	if !errors.As(err, &de) || !de.IsTemporary || de.IsNotFound {
		t.Errorf("SERVFAIL: got %v, want a temporary error", err)
	}

	// Everything asked again comes from the cache.
	before := srv.Queries()
	cache.LookupTXT(ctx, "vendor.example")
	cache.LookupTXT(ctx, "nxdomain.example")
	cache.LookupMX(ctx, "vendor.example")
	if n := srv.Queries() - before; n != 0 {
		t.Errorf("%d questions reached the server for cached answers", n)
	}
	cache.LookupTXT(ctx, "broken.example")
	if n := srv.Queries() - before; n != 1 {
		t.Errorf("a failed lookup was cached (%d questions)", n)
	}
}

func TestClientTTLs(t *testing.T) {
	srv := dnstest.Start(t, zone)
	c := &dnscache.Client{Addr: srv.Addr}
	r, err := c.Exchange(context.Background(), "vendor.example", 16 /* TXT */)
	if err != nil || r.TTL != 120*time.Second {
		t.Fatalf("TTL %s %v, want 120s", r.TTL, err)
	}
	r, err = c.Exchange(context.Background(), "nxdomain.example", 16)
	if err != nil || !r.NotFound || r.TTL != 45*time.Second {
		t.Fatalf("negative TTL %s %+v %v, want 45s from the SOA", r.TTL, r, err)
	}
}

func TestClientTruncatedFallsBackToTCP(t *testing.T) {
	z := zone
	z.TruncateUDP = true
	srv := dnstest.Start(t, z)
	c := &dnscache.Client{Addr: srv.Addr}
	r, err := c.Exchange(context.Background(), "vendor.example", 16)
	if err != nil || len(r.TXT) != 2 {
		t.Fatalf("after TC: %+v %v", r, err)
	}
}

func TestClientTimeout(t *testing.T) {
	// A UDP socket that never answers.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	cache, err := dnscache.New(dnscache.Config{Upstream: &dnscache.Client{Addr: pc.LocalAddr().String()}, Timeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	_, err = cache.LookupTXT(context.Background(), "vendor.example")
	var de *net.DNSError
	if !errors.As(err, &de) || !de.IsTimeout {
		t.Fatalf("got %v, want a timeout", err)
	}
}
