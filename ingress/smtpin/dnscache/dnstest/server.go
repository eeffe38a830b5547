// Package dnstest runs a small authoritative-style DNS server on the
// loopback interface for tests and benchmarks, so that mail authentication
// can be exercised with real DNS messages and no query leaves the machine.
package dnstest

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// Zone holds the records the server answers with, by lower-case name
// without the trailing dot. A name in no map is NXDOMAIN; a name present in
// one map only answers NODATA for the other types.
type Zone struct {
	TXT   map[string][]string
	A     map[string][]string // IPv4 and IPv6 literals; AAAA questions get the IPv6 ones
	MX    map[string][]string
	PTR   map[string][]string // by reverse name ("7.2.0.192.in-addr.arpa")
	CNAME map[string]string
	// Fail answers SERVFAIL for these names.
	Fail map[string]bool
	// TTL of every record, in seconds. Default 300.
	TTL uint32
	// NegativeTTL is the SOA MINIMUM of negative answers. Default 60.
	NegativeTTL uint32
	// TruncateUDP answers every UDP question with an empty truncated reply,
	// so that clients must ask again over TCP.
	TruncateUDP bool
}

// Server answers DNS questions over UDP and TCP on 127.0.0.1.
type Server struct {
	// Addr is host:port of both listeners.
	Addr string

	mu      sync.RWMutex
	zone    Zone
	queries atomic.Int64
	udp     net.PacketConn
	tcp     net.Listener
	wg      sync.WaitGroup
}

// TB is the part of testing.TB the server uses.
type TB interface {
	Helper()
	Fatal(args ...any)
	Cleanup(func())
}

// Start serves z on 127.0.0.1 (UDP and TCP on one port) until the test ends.
func Start(t TB, z Zone) *Server {
	t.Helper()
	s := &Server{zone: z}
	var err error
	for range 20 {
		if s.udp, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		s.tcp, err = net.Listen("tcp", s.udp.LocalAddr().String())
		if err == nil {
			break
		}
		s.udp.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	s.Addr = s.udp.LocalAddr().String()
	s.wg.Add(2)
	go s.serveUDP()
	go s.serveTCP()
	t.Cleanup(s.Close)
	return s
}

// SetZone replaces the records served.
func (s *Server) SetZone(z Zone) {
	s.mu.Lock()
	s.zone = z
	s.mu.Unlock()
}

// Queries returns how many questions the server received.
func (s *Server) Queries() int64 { return s.queries.Load() }

// Close stops the server.
func (s *Server) Close() {
	s.udp.Close()
	s.tcp.Close()
	s.wg.Wait()
}

func (s *Server) serveUDP() {
	defer s.wg.Done()
	buf := make([]byte, 65535)
	for {
		n, from, err := s.udp.ReadFrom(buf)
		if err != nil {
			return
		}
		s.mu.RLock()
		truncate := s.zone.TruncateUDP
		s.mu.RUnlock()
		if reply := s.answer(buf[:n], truncate); reply != nil {
			_, _ = s.udp.WriteTo(reply, from)
		}
	}
}

func (s *Server) serveTCP() {
	defer s.wg.Done()
	for {
		c, err := s.tcp.Accept()
		if err != nil {
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			var n [2]byte
			for {
				if _, err := io.ReadFull(c, n[:]); err != nil {
					return
				}
				q := make([]byte, binary.BigEndian.Uint16(n[:]))
				if _, err := io.ReadFull(c, q); err != nil {
					return
				}
				reply := s.answer(q, false)
				if reply == nil {
					return
				}
				out := binary.BigEndian.AppendUint16(nil, uint16(len(reply)))
				if _, err := c.Write(append(out, reply...)); err != nil {
					return
				}
			}
		}()
	}
}

// answer builds the reply to one query, or nil for a malformed one.
func (s *Server) answer(query []byte, truncate bool) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		return nil
	}
	q, err := p.Question()
	if err != nil {
		return nil
	}
	s.queries.Add(1)
	s.mu.RLock()
	z := s.zone
	s.mu.RUnlock()
	ttl, negTTL := z.TTL, z.NegativeTTL
	if ttl == 0 {
		ttl = 300
	}
	if negTTL == 0 {
		negTTL = 60
	}

	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired, RecursionAvailable: true}
	name := strings.ToLower(strings.TrimSuffix(q.Name.String(), "."))
	if truncate {
		rh.Truncated = true
		return build(rh, q, nil)
	}
	if z.Fail[name] {
		rh.RCode = dnsmessage.RCodeServerFailure
		return build(rh, q, nil)
	}
	var answers []func(*dnsmessage.Builder) error
	hdr := func(n dnsmessage.Name, t dnsmessage.Type) dnsmessage.ResourceHeader {
		return dnsmessage.ResourceHeader{Name: n, Type: t, Class: dnsmessage.ClassINET, TTL: ttl}
	}
	owner := q.Name
	if target, ok := z.CNAME[name]; ok && q.Type != dnsmessage.TypeCNAME {
		tn, alias := dnsmessage.MustNewName(target+"."), owner
		answers = append(answers, func(b *dnsmessage.Builder) error {
			return b.CNAMEResource(hdr(alias, dnsmessage.TypeCNAME), dnsmessage.CNAMEResource{CNAME: tn})
		})
		owner, name = tn, strings.ToLower(target)
	}
	exists := z.TXT[name] != nil || z.A[name] != nil || z.MX[name] != nil || z.PTR[name] != nil
	switch q.Type {
	case dnsmessage.TypeTXT:
		for _, t := range z.TXT[name] {
			answers = append(answers, func(b *dnsmessage.Builder) error {
				return b.TXTResource(hdr(owner, q.Type), dnsmessage.TXTResource{TXT: split255(t)})
			})
		}
	case dnsmessage.TypeA, dnsmessage.TypeAAAA:
		for _, a := range z.A[name] {
			ip, err := netip.ParseAddr(a)
			if err != nil || ip.Is4() != (q.Type == dnsmessage.TypeA) {
				continue
			}
			answers = append(answers, func(b *dnsmessage.Builder) error {
				if ip.Is4() {
					return b.AResource(hdr(owner, q.Type), dnsmessage.AResource{A: ip.As4()})
				}
				return b.AAAAResource(hdr(owner, q.Type), dnsmessage.AAAAResource{AAAA: ip.As16()})
			})
		}
	case dnsmessage.TypeMX:
		for i, m := range z.MX[name] {
			mx := dnsmessage.MustNewName(strings.TrimSuffix(m, ".") + ".")
			answers = append(answers, func(b *dnsmessage.Builder) error {
				return b.MXResource(hdr(owner, q.Type), dnsmessage.MXResource{Pref: uint16(10 * (i + 1)), MX: mx})
			})
		}
	case dnsmessage.TypePTR:
		for _, t := range z.PTR[name] {
			ptr := dnsmessage.MustNewName(strings.TrimSuffix(t, ".") + ".")
			answers = append(answers, func(b *dnsmessage.Builder) error {
				return b.PTRResource(hdr(owner, q.Type), dnsmessage.PTRResource{PTR: ptr})
			})
		}
	}
	data := len(answers)
	if _, aliased := z.CNAME[strings.ToLower(strings.TrimSuffix(q.Name.String(), "."))]; aliased && q.Type != dnsmessage.TypeCNAME {
		data-- // the CNAME record itself
	}
	if data > 0 {
		return build(rh, q, answers)
	}
	if !exists {
		rh.RCode = dnsmessage.RCodeNameError
	}
	return buildNegative(rh, q, answers, negTTL)
}

// build serialises a reply with the question and the answers.
func build(h dnsmessage.Header, q dnsmessage.Question, answers []func(*dnsmessage.Builder) error) []byte {
	b := dnsmessage.NewBuilder(nil, h)
	b.EnableCompression()
	err := errors.Join(b.StartQuestions(), b.Question(q), b.StartAnswers())
	for _, a := range answers {
		err = errors.Join(err, a(&b))
	}
	out, ferr := b.Finish()
	if err != nil || ferr != nil {
		return nil
	}
	return out
}

// buildNegative is build with the zone's SOA record in the authority
// section, which carries the negative TTL (RFC 2308).
func buildNegative(h dnsmessage.Header, q dnsmessage.Question, answers []func(*dnsmessage.Builder) error, negTTL uint32) []byte {
	b := dnsmessage.NewBuilder(nil, h)
	b.EnableCompression()
	err := errors.Join(b.StartQuestions(), b.Question(q), b.StartAnswers())
	for _, a := range answers {
		err = errors.Join(err, a(&b))
	}
	zone := dnsmessage.MustNewName("test.")
	err = errors.Join(err, b.StartAuthorities(), b.SOAResource(
		dnsmessage.ResourceHeader{Name: zone, Type: dnsmessage.TypeSOA, Class: dnsmessage.ClassINET, TTL: 3600},
		dnsmessage.SOAResource{NS: dnsmessage.MustNewName("ns.test."), MBox: dnsmessage.MustNewName("hostmaster.test."),
			Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, MinTTL: negTTL}))
	out, ferr := b.Finish()
	if err != nil || ferr != nil {
		return nil
	}
	return out
}

// split255 splits a TXT value into character-strings of at most 255 bytes.
func split255(s string) []string {
	var out []string
	for len(s) > 255 {
		out = append(out, s[:255])
		s = s[255:]
	}
	return append(out, s)
}
