// Package dnscache answers the DNS questions of mail authentication (SPF,
// DKIM and DMARC: TXT, A, AAAA, MX and PTR) from an in-process cache that
// honours the TTLs of the answers, keeps negative answers (RFC 2308) and is
// bounded in size. Misses go to one configured recursive resolver through
// Client, or to any other Upstream.
package dnscache

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// Response is the part of a DNS answer that lookups use and the cache keeps.
type Response struct {
	// Exactly one of these is filled, by the question's type.
	TXT []string     // one string per record, its character-strings joined
	IPs []netip.Addr // A or AAAA
	MX  []*net.MX    // host names with the trailing dot
	PTR []string     // host names with the trailing dot
	// NotFound is a name that does not exist (NXDOMAIN) or has no record of
	// the type asked for (NODATA).
	NotFound bool
	// TTL is how long the answer may be kept: the smallest TTL of the
	// records used (CNAMEs included) or, for NotFound, the negative TTL of
	// the zone's SOA record. Zero when the answer did not say.
	TTL time.Duration
}

// Upstream answers one DNS question. Client is the real one; tests may
// pass their own. An error is a failure to get an answer (timeout, SERVFAIL,
// REFUSED, a malformed reply): the cache never keeps it.
type Upstream interface {
	Exchange(ctx context.Context, name string, qtype dnsmessage.Type) (Response, error)
}

// maxUDPSize is the EDNS0 buffer size announced, the value DNS flag day 2020
// recommends: answers larger than this come truncated and are asked again
// over TCP.
const maxUDPSize = 1232

// Client sends questions to one recursive resolver over UDP, and again over
// TCP when the answer is truncated. It keeps no state between questions and
// is safe for concurrent use.
type Client struct {
	// Addr is the resolver's host:port, e.g. "127.0.0.53:53". Required.
	Addr string
}

// errTemporary marks failures worth trying again later.
var errTemporary = errors.New("dns: temporary failure")

// Exchange asks the resolver one question and returns the answer. ctx bounds
// the whole exchange, TCP fallback included.
func (c *Client) Exchange(ctx context.Context, name string, qtype dnsmessage.Type) (Response, error) {
	qname, err := dnsmessage.NewName(fqdn(name))
	if err != nil {
		return Response{}, fmt.Errorf("dns: name %q: %w", name, err)
	}
	id, query, err := buildQuery(qname, qtype)
	if err != nil {
		return Response{}, err
	}
	reply, err := c.roundTrip(ctx, "udp", id, query)
	if err != nil {
		return Response{}, err
	}
	var p dnsmessage.Parser
	h, err := p.Start(reply)
	if err != nil {
		return Response{}, fmt.Errorf("%w: malformed reply: %v", errTemporary, err)
	}
	if h.Truncated {
		if reply, err = c.roundTrip(ctx, "tcp", id, query); err != nil {
			return Response{}, err
		}
	}
	return parseReply(reply, id, qname, qtype)
}

// buildQuery builds a recursive query for one question with an EDNS0 OPT
// record, under a random id.
func buildQuery(name dnsmessage.Name, qtype dnsmessage.Type) (uint16, []byte, error) {
	var idb [2]byte
	_, _ = rand.Read(idb[:])
	id := binary.BigEndian.Uint16(idb[:])
	b := dnsmessage.NewBuilder(make([]byte, 0, 512), dnsmessage.Header{ID: id, RecursionDesired: true})
	b.EnableCompression()
	var opt dnsmessage.ResourceHeader
	err := errors.Join(
		b.StartQuestions(),
		b.Question(dnsmessage.Question{Name: name, Type: qtype, Class: dnsmessage.ClassINET}),
		b.StartAdditionals(),
		opt.SetEDNS0(maxUDPSize, dnsmessage.RCodeSuccess, false),
	)
	if err == nil {
		err = b.OPTResource(opt, dnsmessage.OPTResource{})
	}
	if err != nil {
		return 0, nil, fmt.Errorf("dns: build query: %w", err)
	}
	msg, err := b.Finish()
	return id, msg, err
}

// roundTrip sends query over network ("udp" or "tcp") and returns the first
// reply carrying id.
func (c *Client) roundTrip(ctx context.Context, network string, id uint16, query []byte) ([]byte, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, c.Addr)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errTemporary, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	// Close the connection when ctx ends without a deadline (cancellation).
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	if network == "tcp" {
		msg := make([]byte, 2+len(query))
		binary.BigEndian.PutUint16(msg, uint16(len(query)))
		copy(msg[2:], query)
		if _, err := conn.Write(msg); err != nil {
			return nil, fmt.Errorf("%w: %w", errTemporary, err)
		}
		var n [2]byte
		if _, err := io.ReadFull(conn, n[:]); err != nil {
			return nil, fmt.Errorf("%w: %w", errTemporary, err)
		}
		reply := make([]byte, binary.BigEndian.Uint16(n[:]))
		if _, err := io.ReadFull(conn, reply); err != nil {
			return nil, fmt.Errorf("%w: %w", errTemporary, err)
		}
		return reply, nil
	}
	if _, err := conn.Write(query); err != nil {
		return nil, fmt.Errorf("%w: %w", errTemporary, err)
	}
	buf := make([]byte, maxUDPSize)
	// A connected UDP socket only takes datagrams from the resolver; one
	// with another id (a late answer, a spoof attempt) is skipped. The
	// deadline bounds the loop.
	for range 16 {
		n, err := conn.Read(buf)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errTemporary, err)
		}
		if n >= 2 && binary.BigEndian.Uint16(buf) == id {
			return buf[:n:n], nil
		}
	}
	return nil, fmt.Errorf("%w: no reply with the query's id", errTemporary)
}

// parseReply checks that reply answers the question (id, question section)
// and collects the records of qtype owned by name or by a name it is an
// alias of.
func parseReply(reply []byte, id uint16, name dnsmessage.Name, qtype dnsmessage.Type) (Response, error) {
	var p dnsmessage.Parser
	h, err := p.Start(reply)
	if err != nil {
		return Response{}, fmt.Errorf("%w: malformed reply: %v", errTemporary, err)
	}
	if h.ID != id || !h.Response {
		return Response{}, fmt.Errorf("%w: reply does not match the query", errTemporary)
	}
	q, err := p.Question()
	if err != nil || q.Type != qtype || !strings.EqualFold(q.Name.String(), name.String()) {
		return Response{}, fmt.Errorf("%w: reply is for another question", errTemporary)
	}
	if err := p.SkipAllQuestions(); err != nil {
		return Response{}, fmt.Errorf("%w: malformed reply: %v", errTemporary, err)
	}
	switch h.RCode {
	case dnsmessage.RCodeSuccess:
	case dnsmessage.RCodeNameError:
		return negative(&p)
	default:
		return Response{}, fmt.Errorf("%w: resolver answered %v", errTemporary, h.RCode)
	}

	var r Response
	owners := map[string]bool{strings.ToLower(name.String()): true}
	ttl := uint32(0)
	minTTL := func(t uint32) {
		if ttl == 0 || t < ttl {
			ttl = t
		}
	}
	found := false
	for {
		rh, err := p.AnswerHeader()
		if errors.Is(err, dnsmessage.ErrSectionDone) {
			break
		}
		if err != nil {
			return Response{}, fmt.Errorf("%w: malformed answer: %v", errTemporary, err)
		}
		owner := strings.ToLower(rh.Name.String())
		if !owners[owner] || rh.Class != dnsmessage.ClassINET {
			if err := p.SkipAnswer(); err != nil {
				return Response{}, fmt.Errorf("%w: malformed answer: %v", errTemporary, err)
			}
			continue
		}
		if rh.Type == dnsmessage.TypeCNAME && qtype != dnsmessage.TypeCNAME {
			c, err := p.CNAMEResource()
			if err != nil {
				return Response{}, fmt.Errorf("%w: malformed CNAME: %v", errTemporary, err)
			}
			owners[strings.ToLower(c.CNAME.String())] = true
			minTTL(rh.TTL)
			continue
		}
		if rh.Type != qtype {
			if err := p.SkipAnswer(); err != nil {
				return Response{}, fmt.Errorf("%w: malformed answer: %v", errTemporary, err)
			}
			continue
		}
		if err := collect(&p, qtype, &r); err != nil {
			return Response{}, fmt.Errorf("%w: malformed %v record: %v", errTemporary, qtype, err)
		}
		found = true
		minTTL(rh.TTL)
	}
	if !found {
		return negative(&p)
	}
	r.TTL = time.Duration(ttl) * time.Second
	return r, nil
}

// collect appends one record of qtype, the parser being at its body.
func collect(p *dnsmessage.Parser, qtype dnsmessage.Type, r *Response) error {
	switch qtype {
	case dnsmessage.TypeTXT:
		t, err := p.TXTResource()
		if err != nil {
			return err
		}
		r.TXT = append(r.TXT, strings.Join(t.TXT, ""))
	case dnsmessage.TypeA:
		a, err := p.AResource()
		if err != nil {
			return err
		}
		r.IPs = append(r.IPs, netip.AddrFrom4(a.A))
	case dnsmessage.TypeAAAA:
		a, err := p.AAAAResource()
		if err != nil {
			return err
		}
		r.IPs = append(r.IPs, netip.AddrFrom16(a.AAAA))
	case dnsmessage.TypeMX:
		m, err := p.MXResource()
		if err != nil {
			return err
		}
		r.MX = append(r.MX, &net.MX{Host: m.MX.String(), Pref: m.Pref})
	case dnsmessage.TypePTR:
		t, err := p.PTRResource()
		if err != nil {
			return err
		}
		r.PTR = append(r.PTR, t.PTR.String())
	default:
		return p.SkipAnswer()
	}
	return nil
}

// negative is a NotFound response whose TTL comes from the SOA record of
// the authority section (RFC 2308 section 5: the smaller of the record's TTL
// and its MINIMUM field).
func negative(p *dnsmessage.Parser) (Response, error) {
	r := Response{NotFound: true}
	if err := p.SkipAllAnswers(); err != nil {
		return r, nil
	}
	for {
		h, err := p.AuthorityHeader()
		if err != nil {
			return r, nil
		}
		if h.Type != dnsmessage.TypeSOA {
			if p.SkipAuthority() != nil {
				return r, nil
			}
			continue
		}
		soa, err := p.SOAResource()
		if err != nil {
			return r, nil
		}
		r.TTL = time.Duration(min(h.TTL, soa.MinTTL)) * time.Second
		return r, nil
	}
}

// fqdn returns name with one trailing dot.
func fqdn(name string) string {
	if strings.HasSuffix(name, ".") {
		return name
	}
	return name + "."
}
