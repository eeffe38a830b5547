package smtpin

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-msgauth/dmarc"
)

var (
	rsaOnce sync.Once
	rsaKey  *rsa.PrivateKey
)

// dkimKey is a test signing key and the TXT record that publishes it.
func dkimKey(t *testing.T, alg string) (crypto.Signer, string) {
	t.Helper()
	switch alg {
	case "ed25519":
		pub, priv, _ := ed25519.GenerateKey(rand.Reader)
		return priv, "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub)
	default:
		rsaOnce.Do(func() {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			rsaKey = k
		})
		der, _ := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
		return rsaKey, "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)
	}
}

func dkimSign(t *testing.T, msg, domain, selector string, key crypto.Signer) string {
	t.Helper()
	var b bytes.Buffer
	err := dkim.Sign(&b, strings.NewReader(msg), &dkim.SignOptions{Domain: domain, Selector: selector, Signer: key})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestAuthResults(t *testing.T) {
	edKey, edTXT := dkimKey(t, "ed25519")
	rsaK, rsaTXT := dkimKey(t, "rsa")
	msg := simpleMessage // From: billing@vendor.example
	signedEd := dkimSign(t, msg, "vendor.example", "ed1", edKey)
	signedRSA := dkimSign(t, msg, "vendor.example", "rsa1", rsaK)
	signedOther := dkimSign(t, msg, "mailer.example", "m1", edKey)

	baseTXT := map[string][]string{
		"ed1._domainkey.vendor.example":  {edTXT},
		"rsa1._domainkey.vendor.example": {rsaTXT},
		"m1._domainkey.mailer.example":   {edTXT},
		"vendor.example":                 {"v=spf1 ip4:127.0.0.0/8 -all", "google-site-verification=x"},
		"_dmarc.vendor.example":          {"v=DMARC1; p=reject"},
		"elsewhere.example":              {"v=spf1 ip4:192.0.2.0/24 -all"},
	}
	tests := []struct {
		name      string
		from      string
		msg       string
		txt       map[string][]string
		fail      map[string]bool
		wantSPF   string
		wantDKIM  string // "domain/selector/result,..."
		wantDMARC string
	}{
		{"ed25519 pass", "billing@vendor.example", signedEd, baseTXT, nil, "pass", "vendor.example/ed1/pass", "pass"},
		{"rsa pass", "billing@vendor.example", signedRSA, baseTXT, nil, "pass", "vendor.example/rsa1/pass", "pass"},
		{"body changed after signing", "bounce@elsewhere.example", strings.Replace(signedEd, "Please find", "Please wire money for", 1), baseTXT, nil,
			"fail", "vendor.example/ed1/fail", "fail"},
		{"unaligned signature", "bounce@elsewhere.example", signedOther, baseTXT, nil, "fail", "mailer.example/m1/pass", "fail"},
		{"no key published", "billing@vendor.example", signedEd, map[string][]string{"vendor.example": {"v=spf1 -all"}}, nil,
			"fail", "vendor.example/ed1/permerror", "none"},
		{"dns down", "billing@vendor.example", signedEd, baseTXT, map[string]bool{"ed1._domainkey.vendor.example": true, "vendor.example": true, "_dmarc.vendor.example": true},
			"temperror", "vendor.example/ed1/temperror", "temperror"},
		{"unsigned, no records", "someone@unknown.example", msg, nil, nil, "none", "", "none"},
		{"unsigned, aligned spf", "billing@vendor.example", msg, baseTXT, nil, "pass", "", "pass"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, func(c *Config) { c.Resolver = &fakeResolver{txt: tt.txt, fail: tt.fail} })
			c := ts.dial(t, true)
			if _, err := send(c, tt.from, []string{"invoices@in.example.net"}, []byte(tt.msg)); err != nil {
				t.Fatalf("auth results must not block acceptance: %v", err)
			}
			var src struct {
				Auth authResults `json:"auth"`
			}
			if err := json.Unmarshal(ts.enq.all()[0].Source, &src); err != nil {
				t.Fatal(err)
			}
			var dk []string
			for _, d := range src.Auth.DKIM {
				dk = append(dk, d.Domain+"/"+d.Selector+"/"+d.Result)
			}
			want(t, "spf", src.Auth.SPF, tt.wantSPF)
			want(t, "dkim", strings.Join(dk, ","), tt.wantDKIM)
			want(t, "dmarc", src.Auth.DMARC, tt.wantDMARC)
		})
	}
}

func TestRequireDKIM(t *testing.T) {
	edKey, edTXT := dkimKey(t, "ed25519")
	res := &fakeResolver{txt: map[string][]string{
		"ed1._domainkey.vendor.example": {edTXT},
		"m1._domainkey.mailer.example":  {edTXT},
	}}
	tests := []struct {
		name     string
		msg      string
		wantCode int
	}{
		{"aligned pass", dkimSign(t, simpleMessage, "vendor.example", "ed1", edKey), 0},
		{"unsigned", simpleMessage, 550},
		{"pass for another domain", dkimSign(t, simpleMessage, "mailer.example", "m1", edKey), 550},
		{"broken signature", strings.Replace(dkimSign(t, simpleMessage, "vendor.example", "ed1", edKey), "invoice", "INVOICE", 1), 550},
		// A genuine signature with a second, unsigned From placed above it:
		// the payload would show the forged one (RFC 7489 section 6.6.1).
		{"second From field", "From: CEO <ceo@vendor.example>\r\n" + dkimSign(t, simpleMessage, "vendor.example", "ed1", edKey), 550},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, func(c *Config) { c.Resolver = res })
			c := ts.dial(t, true)
			_, err := send(c, "billing@vendor.example", []string{"signed@in.example.net", "alerts@in.example.net"}, []byte(tt.msg))
			if tt.wantCode == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if smtpCode(err) != tt.wantCode || enhCode(err) != "5.7.20" {
				t.Fatalf("got %v, want %d 5.7.20", err, tt.wantCode)
			}
			if n := len(ts.enq.all()); n != 0 {
				t.Errorf("%d submissions queued for a refused message", n)
			}
		})
	}
}

func TestSPF(t *testing.T) {
	res := &fakeResolver{
		txt: map[string][]string{
			"pass.example":      {"v=spf1 ip4:192.0.2.0/24 -all"},
			"fail.example":      {"v=spf1 -all"},
			"soft.example":      {"v=spf1 ~all"},
			"neutral.example":   {"v=spf1 ?all"},
			"default.example":   {"v=spf1 ip4:198.51.100.1"},
			"include.example":   {"v=spf1 include:pass.example -all"},
			"redirect.example":  {"v=spf1 redirect=pass.example"},
			"a.example":         {"v=spf1 a -all"},
			"acidr.example":     {"v=spf1 a:hosts.example/24 -all"},
			"mx.example":        {"v=spf1 mx -all"},
			"ip6.example":       {"v=spf1 ip6:2001:db8::/32 -all"},
			"two.example":       {"v=spf1 -all", "v=spf1 +all"},
			"bad.example":       {"v=spf1 ip4:not-an-ip -all"},
			"unknown.example":   {"v=spf1 frobnicate -all"},
			"exists.example":    {"v=spf1 exists:%{i}.allow.example -all"},
			"macro.example":     {"v=spf1 exists:%{l}.%{o}._spf.%{d2} -all"},
			"loop.example":      {"v=spf1 include:loop.example -all"},
			"voids.example":     {"v=spf1 a:v1.example a:v2.example a:v3.example -all"},
			"incnone.example":   {"v=spf1 include:nothing.example -all"},
			"temp.example":      {"v=spf1 include:broken.example -all"},
			"nospf.example":     {"some other record"},
			"upper.example":     {"V=SPF1 IP4:192.0.2.1 -ALL"},
			"redirnone.example": {"v=spf1 redirect=nothing.example"},
			"ptr.example":       {"v=spf1 ptr -all"},
		},
		ip: map[string][]string{
			"a.example":               {"192.0.2.7"},
			"hosts.example":           {"192.0.2.200"},
			"mx1.example":             {"192.0.2.9"},
			"192.0.2.7.allow.example": {"127.0.0.2"},
			"billing.macro.example._spf.macro.example": {"127.0.0.2"},
			"mail.ptr.example":                         {"192.0.2.7"},
			"spoof.ptr.example":                        {"198.51.100.99"},
		},
		// 192.0.2.7 names a host of ptr.example that resolves back to it;
		// 192.0.2.8 claims one that does not (the forward check fails).
		ptr:  map[string][]string{"192.0.2.7": {"mail.ptr.example."}, "192.0.2.8": {"spoof.ptr.example."}},
		mx:   map[string][]string{"mx.example": {"mx1.example"}},
		fail: map[string]bool{"broken.example": true},
	}
	tests := []struct {
		domain, ip, want string
	}{
		{"pass.example", "192.0.2.7", "pass"},
		{"pass.example", "203.0.113.1", "fail"},
		{"fail.example", "192.0.2.7", "fail"},
		{"soft.example", "192.0.2.7", "softfail"},
		{"neutral.example", "192.0.2.7", "neutral"},
		{"default.example", "192.0.2.7", "neutral"},
		{"include.example", "192.0.2.7", "pass"},
		{"include.example", "203.0.113.1", "fail"},
		{"redirect.example", "192.0.2.7", "pass"},
		{"a.example", "192.0.2.7", "pass"},
		{"a.example", "192.0.2.8", "fail"},
		{"acidr.example", "192.0.2.8", "pass"},
		{"mx.example", "192.0.2.9", "pass"},
		{"ip6.example", "2001:db8::1", "pass"},
		{"ip6.example", "192.0.2.7", "fail"},
		{"two.example", "192.0.2.7", "permerror"},
		{"bad.example", "192.0.2.7", "permerror"},
		{"unknown.example", "192.0.2.7", "permerror"},
		{"exists.example", "192.0.2.7", "pass"},
		{"exists.example", "192.0.2.8", "fail"},
		{"macro.example", "192.0.2.8", "pass"},
		{"loop.example", "192.0.2.7", "permerror"},
		{"voids.example", "192.0.2.7", "permerror"},
		{"incnone.example", "192.0.2.7", "permerror"},
		{"redirnone.example", "192.0.2.7", "permerror"},
		{"temp.example", "192.0.2.7", "temperror"},
		{"nospf.example", "192.0.2.7", "none"},
		{"missing.example", "192.0.2.7", "none"},
		{"upper.example", "192.0.2.1", "pass"},
		{"localhost", "192.0.2.1", "none"},
		// RFC 7208 section 5.5: ptr matches a validated name in the domain
		// (the hand-written evaluator never matched it).
		{"ptr.example", "192.0.2.7", "pass"},
		{"ptr.example", "192.0.2.8", "fail"},
		{"ptr.example", "192.0.2.9", "fail"},
	}
	for _, tt := range tests {
		t.Run(tt.domain+"/"+tt.ip, func(t *testing.T) {
			got := checkSPF(context.Background(), res, netip.MustParseAddr(tt.ip), tt.domain, "billing@"+tt.domain, "mta.example")
			want(t, "spf", got, tt.want)
		})
	}
}

func TestAlignment(t *testing.T) {
	tests := []struct {
		d, from string
		strict  bool
		want    bool
	}{
		{"vendor.example", "vendor.example", true, true},
		{"mail.vendor.example", "vendor.example", false, true},
		{"mail.vendor.example", "vendor.example", true, false},
		{"vendor.co.uk", "other.co.uk", false, false},
		{"mail.vendor.co.uk", "vendor.co.uk", false, true},
		{"", "vendor.example", false, false},
		// Suffixes of the full Public Suffix List, not only common ones.
		{"attacker.com.pl", "vendor.com.pl", false, false},
		{"mail.vendor.com.pl", "vendor.com.pl", false, true},
		{"evil.github.io", "victim.github.io", false, false},
		{"attacker.gov.in", "vendor.gov.in", false, false},
		// A public suffix aligns only with itself.
		{"com.pl", "vendor.com.pl", false, false},
		{"MAIL.Vendor.Example.", "vendor.example", false, true},
	}
	for _, tt := range tests {
		mode := "r"
		if tt.strict {
			mode = "s"
		}
		if got := aligned(tt.d, tt.from, dmarc.AlignmentMode(mode)); got != tt.want {
			t.Errorf("aligned(%q, %q, %s) = %v, want %v", tt.d, tt.from, mode, got, tt.want)
		}
	}
}
