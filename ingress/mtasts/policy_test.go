package mtasts

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sealpost/sealpost/ingress/smtpin/dnscache/dnstest"
)

var testPolicy = Policy{Domains: []string{"in.example.net"}, MX: []string{"mx1.in.example.net", "*.mx.in.example.net"}}

func TestPolicyText(t *testing.T) {
	h, err := NewPolicyHandler(testPolicy)
	if err != nil {
		t.Fatal(err)
	}
	want := "version: STSv1\r\nmode: enforce\r\nmx: mx1.in.example.net\r\nmx: *.mx.in.example.net\r\nmax_age: 604800\r\n"
	if got := h.Policy().Text(); got != want {
		t.Errorf("policy text:\n%q\nwant\n%q", got, want)
	}
	id := h.Policy().ID()
	if len(id) < 1 || len(id) > 32 || strings.Trim(id, "abcdefghijklmnopqrstuvwxyz234567") != "" {
		t.Errorf("id %q is not 1-32 letters and digits", id)
	}
	other := h.Policy()
	other.MaxAge = 86400 * time.Second
	if other.ID() == id {
		t.Error("the id does not change with the policy")
	}
}

func TestPolicyValidation(t *testing.T) {
	tests := []struct {
		name string
		p    Policy
		want string
	}{
		{"no domain", Policy{MX: []string{"mx.example.net"}}, "at least one policy domain"},
		{"no mx", Policy{Domains: []string{"example.net"}}, "at least one mx"},
		{"bad mode", Policy{Domains: []string{"example.net"}, MX: []string{"mx.example.net"}, Mode: "strict"}, "mode must be"},
		{"max_age too long", Policy{Domains: []string{"example.net"}, MX: []string{"mx.example.net"}, MaxAge: 400 * 24 * time.Hour}, "max_age"},
		{"fractional max_age", Policy{Domains: []string{"example.net"}, MX: []string{"mx.example.net"}, MaxAge: 1500 * time.Millisecond}, "max_age"},
		{"mx with port", Policy{Domains: []string{"example.net"}, MX: []string{"mx.example.net:25"}}, "not a host name"},
		{"mx address", Policy{Domains: []string{"example.net"}, MX: []string{"192.0.2.1"}}, "not a host name"},
		{"wildcard domain", Policy{Domains: []string{"*.example.net"}, MX: []string{"mx.example.net"}}, "not a domain name"},
		{"none without mx", Policy{Domains: []string{"example.net"}, Mode: ModeNone}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewPolicyHandler(tt.p)
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("got %v, want %q", err, tt.want)
			}
		})
	}
}

func TestPolicyHandlerHosts(t *testing.T) {
	h, err := NewPolicyHandler(testPolicy)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		method, host, path string
		code               int
	}{
		{"GET", "mta-sts.in.example.net", PolicyPath, 200},
		{"GET", "MTA-STS.In.Example.Net:443", PolicyPath, 200},
		{"HEAD", "mta-sts.in.example.net", PolicyPath, 200},
		{"GET", "in.example.net", PolicyPath, 404},
		{"GET", "mta-sts.other.example", PolicyPath, 404},
		{"GET", "mta-sts.in.example.net", "/.well-known/mta-sts.txt.bak", 404},
		{"POST", "mta-sts.in.example.net", PolicyPath, 405},
	}
	for _, tt := range tests {
		r := httptest.NewRequest(tt.method, "https://"+tt.host+tt.path, nil)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != tt.code {
			t.Errorf("%s %s%s: %d, want %d", tt.method, tt.host, tt.path, w.Code, tt.code)
		}
		if w.Code == 200 && w.Header().Get("Content-Type") != "text/plain" {
			t.Errorf("Content-Type %q, want text/plain", w.Header().Get("Content-Type"))
		}
	}
}

// certFor makes a self-signed certificate for host and writes its PEM.
func certFor(t *testing.T, host string) (tls.Certificate, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, p
}

// mtaSTSClient drives the MTA-STS resolver of postfix-mta-sts-resolver
// (Debian package of the same name): it looks up _mta-sts.<domain> in DNS,
// fetches https://mta-sts.<domain>/.well-known/mta-sts.txt and validates
// the policy as an MTA would. DNS and HTTPS are pointed at loopback.
const mtaSTSClient = `
import asyncio, socket, ssl, sys
import aiodns, aiohttp
import postfix_mta_sts_resolver.resolver as res
dns_host, dns_port, https_port, cafile, domain = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]

class Loopback(aiohttp.abc.AbstractResolver):
    async def resolve(self, host, port=0, family=socket.AF_INET):
        return [{"hostname": host, "host": "127.0.0.1", "port": https_port, "family": socket.AF_INET,
                 "proto": 0, "flags": socket.AI_NUMERICHOST}]
    async def close(self):
        pass

session = aiohttp.ClientSession
ctx = ssl.create_default_context(cafile=cafile)
def loopback_session(*args, **kwargs):
    kwargs["connector"] = aiohttp.TCPConnector(resolver=Loopback(), ssl=ctx)
    return session(*args, **kwargs)
res.aiohttp.ClientSession = loopback_session

async def main():
    loop = asyncio.get_running_loop()
    r = res.STSResolver(loop=loop, timeout=10)
    r._resolver = aiodns.DNSResolver(nameservers=[dns_host], loop=loop, udp_port=dns_port, tcp_port=dns_port, timeout=5, tries=1)
    status, result = await r.resolve(domain)
    print(status.name, result)
    return status == res.STSFetchResult.VALID
sys.exit(0 if asyncio.run(main()) else 1)
`

// python3WithModule finds a Python that imports module, skipping the test
// when there is none unless SEALPOST_REQUIRE_INTEROP=1.
func python3WithModule(t *testing.T, module, pkg string) string {
	t.Helper()
	for _, py := range []string{"python3", "/usr/bin/python3"} {
		p, err := exec.LookPath(py)
		if err != nil {
			continue
		}
		if exec.Command(p, "-c", "import "+module).Run() == nil {
			return p
		}
	}
	if os.Getenv("SEALPOST_REQUIRE_INTEROP") == "1" {
		t.Fatalf("no python3 imports %s and SEALPOST_REQUIRE_INTEROP=1 (apt-get install %s)", module, pkg)
	}
	t.Skipf("no python3 imports %s (apt-get install %s); set SEALPOST_REQUIRE_INTEROP=1 to make this a failure", module, pkg)
	return ""
}

// TestPolicyAcceptedByMTASTSResolver: an MTA-STS implementation used by
// real MTAs (Postfix's) finds the policy through DNS and HTTPS and accepts
// it, with the id of the published TXT record.
func TestPolicyAcceptedByMTASTSResolver(t *testing.T) {
	py := python3WithModule(t, "postfix_mta_sts_resolver.resolver", "postfix-mta-sts-resolver")
	h, err := NewPolicyHandler(testPolicy)
	if err != nil {
		t.Fatal(err)
	}
	dns := dnstest.Start(t, dnstest.Zone{TXT: map[string][]string{
		"_mta-sts.in.example.net": {"v=STSv1; id=" + h.Policy().ID()},
	}})
	cert, ca := certFor(t, "mta-sts.in.example.net")
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	defer srv.Close()

	dnsHost, dnsPort, _ := net.SplitHostPort(dns.Addr)
	_, httpsPort, _ := net.SplitHostPort(srv.Listener.Addr().String())
	script := filepath.Join(t.TempDir(), "mtasts.py")
	if err := os.WriteFile(script, []byte(mtaSTSClient), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, py, script, dnsHost, dnsPort, httpsPort, ca, "in.example.net").CombinedOutput()
	if err != nil {
		t.Fatalf("the resolver refused the policy: %v\n%s", err, out)
	}
	got := string(out)
	for _, want := range []string{"VALID", "'" + h.Policy().ID() + "'", "'mode': 'enforce'", "'max_age': 604800",
		"'mx': ['mx1.in.example.net', '*.mx.in.example.net']"} {
		if !strings.Contains(got, want) {
			t.Errorf("resolver output lacks %s:\n%s", want, got)
		}
	}
}
