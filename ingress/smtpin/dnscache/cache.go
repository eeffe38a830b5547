package dnscache

import (
	"container/list"
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/dns/dnsmessage"
)

// Defaults applied by New to zero-valued Config fields.
const (
	DefaultMaxEntries  = 10000
	DefaultTimeout     = 5 * time.Second
	DefaultMaxTTL      = time.Hour
	DefaultNegativeTTL = 5 * time.Minute
)

// Config configures a Cache.
type Config struct {
	// Upstream answers what the cache does not hold. Required: a *Client
	// for a resolver address in production.
	Upstream Upstream
	// MaxEntries bounds the answers kept (one per name and type); the least
	// recently used goes first. Default 10,000.
	MaxEntries int
	// Timeout bounds one question to the upstream. Default 5s.
	Timeout time.Duration
	// MaxTTL caps how long any answer is kept, whatever its TTL. Default 1h.
	MaxTTL time.Duration
	// NegativeTTL caps how long a negative answer is kept, and is used when
	// the answer carried no SOA record. Default 5m.
	NegativeTTL time.Duration
	// Now returns the current time. Default time.Now.
	Now func() time.Time
	// Registerer receives sealpost_smtp_dns_lookups_total. Optional.
	Registerer prometheus.Registerer
}

// Cache answers lookups from memory while an answer's TTL lasts, and asks
// the upstream otherwise. Concurrent lookups of the same name and type wait
// for one question. Failures are not kept: the next lookup asks again. It
// satisfies the resolvers of smtpin and blitiri.com.ar/go/spf.
type Cache struct {
	cfg     Config
	lookups *prometheus.CounterVec

	mu       sync.Mutex
	entries  map[key]*list.Element
	lru      *list.List // front: most recently used; values are *entry
	inflight map[key]*call
}

type key struct {
	name  string // lower case, with the trailing dot
	qtype dnsmessage.Type
}

type entry struct {
	key     key
	resp    Response
	expires time.Time
}

// call is one upstream question that concurrent lookups share.
type call struct {
	done chan struct{}
	resp Response
	err  error
}

// New returns a cache for c.
func New(c Config) (*Cache, error) {
	if c.Upstream == nil {
		return nil, errors.New("dnscache: Upstream is required")
	}
	if c.MaxEntries < 0 || c.Timeout < 0 || c.MaxTTL < 0 || c.NegativeTTL < 0 {
		return nil, errors.New("dnscache: limits must not be negative")
	}
	if c.MaxEntries == 0 {
		c.MaxEntries = DefaultMaxEntries
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.MaxTTL == 0 {
		c.MaxTTL = DefaultMaxTTL
	}
	if c.NegativeTTL == 0 {
		c.NegativeTTL = DefaultNegativeTTL
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	lookups := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sealpost_smtp_dns_lookups_total",
		Help: "DNS lookups of mail authentication, by result: hit (answered from the cache), miss (asked the resolver), error (the resolver failed).",
	}, []string{"result"})
	if c.Registerer != nil {
		if err := c.Registerer.Register(lookups); err != nil {
			return nil, err
		}
	}
	return &Cache{
		cfg: c, lookups: lookups,
		entries: make(map[key]*list.Element), lru: list.New(), inflight: make(map[key]*call),
	}, nil
}

// lookup returns the answer for name and qtype, from the cache while it is
// fresh, else from the upstream.
func (c *Cache) lookup(ctx context.Context, name string, qtype dnsmessage.Type) (Response, error) {
	k := key{name: strings.ToLower(fqdn(name)), qtype: qtype}
	now := c.cfg.Now()
	c.mu.Lock()
	if el, ok := c.entries[k]; ok {
		e := el.Value.(*entry)
		if now.Before(e.expires) {
			c.lru.MoveToFront(el)
			c.mu.Unlock()
			c.lookups.WithLabelValues("hit").Inc()
			return e.resp, nil
		}
		c.lru.Remove(el)
		delete(c.entries, k)
	}
	cl, shared := c.inflight[k]
	if !shared {
		cl = &call{done: make(chan struct{})}
		c.inflight[k] = cl
	}
	c.mu.Unlock()

	if shared {
		select {
		case <-cl.done:
			return cl.resp, cl.err
		case <-ctx.Done():
			return Response{}, ctx.Err()
		}
	}

	c.lookups.WithLabelValues("miss").Inc()
	qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.Timeout)
	cl.resp, cl.err = c.cfg.Upstream.Exchange(qctx, k.name, qtype)
	cancel()

	c.mu.Lock()
	delete(c.inflight, k)
	if cl.err == nil {
		c.store(k, cl.resp, c.cfg.Now())
	}
	c.mu.Unlock()
	close(cl.done)
	if cl.err != nil {
		c.lookups.WithLabelValues("error").Inc()
	}
	return cl.resp, cl.err
}

// store keeps resp for its TTL, capped, evicting the least recently used
// entry when full. c.mu is held.
func (c *Cache) store(k key, resp Response, now time.Time) {
	ttl := min(resp.TTL, c.cfg.MaxTTL)
	if resp.NotFound && (resp.TTL == 0 || resp.TTL > c.cfg.NegativeTTL) {
		ttl = c.cfg.NegativeTTL
	}
	if ttl <= 0 {
		return
	}
	for c.lru.Len() >= c.cfg.MaxEntries {
		old := c.lru.Back()
		c.lru.Remove(old)
		delete(c.entries, old.Value.(*entry).key)
	}
	c.entries[k] = c.lru.PushFront(&entry{key: k, resp: resp, expires: now.Add(ttl)})
}

// Len returns the number of answers held, fresh or not yet evicted.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}

// dnsError turns a lookup failure or a negative answer into the error that
// net.Resolver would return, which the SPF, DKIM and DMARC code classify:
// IsNotFound for a negative answer, IsTimeout or IsTemporary otherwise.
func dnsError(name string, resp Response, err error) error {
	switch {
	case err == nil && resp.NotFound:
		return &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
	case err == nil:
		return nil
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return &net.DNSError{Err: "timeout", Name: name, IsTimeout: true, IsTemporary: true}
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return &net.DNSError{Err: "timeout", Name: name, IsTimeout: true, IsTemporary: true}
	}
	return &net.DNSError{Err: "server misbehaving", Name: name, IsTemporary: true}
}

// LookupTXT returns the TXT records of name.
func (c *Cache) LookupTXT(ctx context.Context, name string) ([]string, error) {
	resp, err := c.lookup(ctx, name, dnsmessage.TypeTXT)
	if err := dnsError(name, resp, err); err != nil {
		return nil, err
	}
	return append([]string(nil), resp.TXT...), nil
}

// LookupMX returns the MX records of name, in the order received.
func (c *Cache) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	resp, err := c.lookup(ctx, name, dnsmessage.TypeMX)
	if err := dnsError(name, resp, err); err != nil {
		return nil, err
	}
	out := make([]*net.MX, len(resp.MX))
	for i, m := range resp.MX {
		mx := *m
		out[i] = &mx
	}
	return out, nil
}

// LookupIPAddr returns the A and AAAA records of host. It fails only when
// neither question was answered.
func (c *Cache) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	var out []net.IPAddr
	var firstErr error
	for _, t := range []dnsmessage.Type{dnsmessage.TypeA, dnsmessage.TypeAAAA} {
		resp, err := c.lookup(ctx, host, t)
		if err := dnsError(host, resp, err); err != nil {
			if firstErr == nil || isNotFound(firstErr) {
				firstErr = err
			}
			continue
		}
		for _, a := range resp.IPs {
			out = append(out, net.IPAddr{IP: a.AsSlice()})
		}
	}
	if len(out) == 0 {
		return nil, firstErr
	}
	return out, nil
}

// LookupAddr returns the PTR names of an IP address.
func (c *Cache) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return nil, &net.DNSError{Err: "unrecognized address", Name: addr}
	}
	resp, err := c.lookup(ctx, reverseName(ip.Unmap()), dnsmessage.TypePTR)
	if err := dnsError(addr, resp, err); err != nil {
		return nil, err
	}
	return append([]string(nil), resp.PTR...), nil
}

func isNotFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}

// reverseName is the in-addr.arpa or ip6.arpa name of ip.
func reverseName(ip netip.Addr) string {
	var b strings.Builder
	s := ip.AsSlice()
	if ip.Is4() {
		for i := len(s) - 1; i >= 0; i-- {
			b.WriteString(strconv.Itoa(int(s[i])))
			b.WriteByte('.')
		}
		b.WriteString("in-addr.arpa.")
		return b.String()
	}
	const hex = "0123456789abcdef"
	for i := len(s) - 1; i >= 0; i-- {
		b.WriteByte(hex[s[i]&0xf])
		b.WriteByte('.')
		b.WriteByte(hex[s[i]>>4])
		b.WriteByte('.')
	}
	b.WriteString("ip6.arpa.")
	return b.String()
}
