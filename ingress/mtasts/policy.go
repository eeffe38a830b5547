// Package mtasts serves the MTA-STS policy of the domains whose mail
// sealpost receives (RFC 8461) and takes the TLS-RPT reports that sending
// servers make about them (RFC 8460), by HTTPS and by mail, keeping them
// sealed.
package mtasts

import (
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Policy modes (RFC 8461 section 5).
const (
	ModeEnforce = "enforce"
	ModeTesting = "testing"
	ModeNone    = "none"
)

// MaxMaxAge is the largest max_age RFC 8461 allows: 31557600 s (a year).
const MaxMaxAge = 31557600 * time.Second

// DefaultMaxAge is a week, what RFC 8461 suggests for a stable policy.
const DefaultMaxAge = 7 * 24 * time.Hour

// Policy is an MTA-STS policy.
type Policy struct {
	// Domains are the policy domains: the domains of the addresses mail is
	// sent to. The policy is served at https://mta-sts.<domain>/. At least
	// one is required.
	Domains []string
	// Mode is enforce (default), testing or none.
	Mode string
	// MX are the host names (or "*.domain" patterns) of the MX records,
	// which the server certificate must cover. At least one is required
	// unless Mode is none.
	MX []string
	// MaxAge is how long senders may cache the policy, whole seconds.
	// Default a week, at most a year.
	MaxAge time.Duration
}

// withDefaults returns p with defaults applied, or an error naming the
// first invalid field.
func (p Policy) withDefaults() (Policy, error) {
	if p.Mode == "" {
		p.Mode = ModeEnforce
	}
	if p.MaxAge == 0 {
		p.MaxAge = DefaultMaxAge
	}
	switch {
	case p.Mode != ModeEnforce && p.Mode != ModeTesting && p.Mode != ModeNone:
		return p, fmt.Errorf("mtasts: mode must be enforce, testing or none, got %q", p.Mode)
	case p.MaxAge < time.Second || p.MaxAge > MaxMaxAge || p.MaxAge%time.Second != 0:
		return p, fmt.Errorf("mtasts: max_age must be whole seconds from 1s to %s, got %s", MaxMaxAge, p.MaxAge)
	case len(p.Domains) == 0:
		return p, errors.New("mtasts: at least one policy domain is required")
	case len(p.MX) == 0 && p.Mode != ModeNone:
		return p, errors.New("mtasts: at least one mx is required")
	}
	for _, d := range p.Domains {
		if !hostName(d, false) {
			return p, fmt.Errorf("mtasts: domain %q is not a domain name", d)
		}
	}
	for _, mx := range p.MX {
		if !hostName(mx, true) {
			return p, fmt.Errorf("mtasts: mx %q is not a host name (or *.domain)", mx)
		}
	}
	return p, nil
}

// hostName reports whether s is a fully qualified host name without the
// trailing dot, with a leading "*." when wildcard is allowed.
func hostName(s string, wildcard bool) bool {
	if wildcard {
		s = strings.TrimPrefix(s, "*.")
	}
	if len(s) == 0 || len(s) > 253 || !strings.Contains(s, ".") || net.ParseIP(s) != nil {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, c := range l {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// Text is the policy file (RFC 8461 section 3.2): key: value lines ending
// in CRLF.
func (p Policy) Text() string {
	var b strings.Builder
	b.WriteString("version: STSv1\r\n")
	b.WriteString("mode: " + p.Mode + "\r\n")
	for _, mx := range p.MX {
		b.WriteString("mx: " + strings.ToLower(mx) + "\r\n")
	}
	b.WriteString("max_age: " + strconv.FormatInt(int64(p.MaxAge/time.Second), 10) + "\r\n")
	return b.String()
}

// ID is the policy id to publish in the _mta-sts TXT record: it changes
// whenever the policy text does, which is what tells senders to fetch the
// policy again (RFC 8461 section 3.1: 1 to 32 letters and digits).
func (p Policy) ID() string {
	sum := sha256.Sum256([]byte(p.Text()))
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:])[:20])
}

// PolicyHandler serves the policy at /.well-known/mta-sts.txt for the
// hosts mta-sts.<domain> of its domains, and 404 for any other host.
type PolicyHandler struct {
	policy Policy
	text   []byte
	hosts  map[string]bool
}

// NewPolicyHandler validates p and returns its handler.
func NewPolicyHandler(p Policy) (*PolicyHandler, error) {
	p, err := p.withDefaults()
	if err != nil {
		return nil, err
	}
	h := &PolicyHandler{policy: p, text: []byte(p.Text()), hosts: map[string]bool{}}
	for _, d := range p.Domains {
		h.hosts["mta-sts."+strings.ToLower(strings.TrimSuffix(d, "."))] = true
	}
	return h, nil
}

// Policy returns the policy served, defaults applied.
func (h *PolicyHandler) Policy() Policy { return h.policy }

// PolicyPath is where RFC 8461 section 3.3 puts the policy.
const PolicyPath = "/.well-known/mta-sts.txt"

func (h *PolicyHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	host := r.Host
	if hp, _, err := net.SplitHostPort(host); err == nil {
		host = hp
	}
	if r.URL.Path != PolicyPath || !h.hosts[strings.ToLower(strings.TrimSuffix(host, "."))] {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("Content-Length", strconv.Itoa(len(h.text)))
	w.Header().Set("Cache-Control", "max-age=300")
	if r.Method == http.MethodGet {
		_, _ = w.Write(h.text)
	}
}
