package dnscache

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// clock is a controllable time source.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// countingUpstream answers from a table and counts the questions asked.
type countingUpstream struct {
	mu      sync.Mutex
	answers map[string]Response // by "name type"
	fail    map[string]error
	asked   map[string]int
	block   chan struct{} // when set, every question waits for it
}

func (u *countingUpstream) Exchange(ctx context.Context, name string, t dnsmessage.Type) (Response, error) {
	k := name + " " + t.String()
	u.mu.Lock()
	if u.asked == nil {
		u.asked = map[string]int{}
	}
	u.asked[k]++
	block := u.block
	u.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return Response{}, ctx.Err()
		}
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if err := u.fail[k]; err != nil {
		return Response{}, err
	}
	if r, ok := u.answers[k]; ok {
		return r, nil
	}
	return Response{NotFound: true}, nil
}

func (u *countingUpstream) count(k string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.asked[k]
}

func newCache(t *testing.T, u Upstream, clk *clock, mutate func(*Config)) *Cache {
	t.Helper()
	cfg := Config{Upstream: u, Now: clk.Now}
	if mutate != nil {
		mutate(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCacheHonoursTTL(t *testing.T) {
	clk := &clock{now: time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)}
	u := &countingUpstream{answers: map[string]Response{
		"vendor.example. TypeTXT":        {TXT: []string{"v=spf1 -all"}, TTL: 300 * time.Second},
		"_dmarc.vendor.example. TypeTXT": {TXT: []string{"v=DMARC1; p=none"}, TTL: 10 * time.Second},
		"long.example. TypeTXT":          {TXT: []string{"v=spf1 ?all"}, TTL: 7 * 24 * time.Hour},
		"missing.example. TypeTXT":       {NotFound: true, TTL: 30 * time.Second},
		"nosoa.example. TypeTXT":         {NotFound: true},
		"bigneg.example. TypeTXT":        {NotFound: true, TTL: 24 * time.Hour},
		"zero.example. TypeTXT":          {TXT: []string{"x"}, TTL: 0},
	}}
	c := newCache(t, u, clk, func(c *Config) { c.MaxTTL = time.Hour; c.NegativeTTL = 5 * time.Minute })
	ctx := context.Background()

	type step struct {
		at    time.Duration // since the name's first lookup
		asked int           // upstream questions for the name so far
	}
	tests := []struct {
		name     string
		notFound bool
		steps    []step
	}{
		{"vendor.example", false, []step{{0, 1}, {299 * time.Second, 1}, {300 * time.Second, 2}, {599 * time.Second, 2}}},
		{"_dmarc.vendor.example", false, []step{{0, 1}, {9 * time.Second, 1}, {11 * time.Second, 2}}},
		// Negative answers are kept for the SOA's negative TTL (RFC 2308).
		{"missing.example", true, []step{{0, 1}, {29 * time.Second, 1}, {31 * time.Second, 2}}},
		// Without SOA, and above the cap, NegativeTTL applies.
		{"nosoa.example", true, []step{{0, 1}, {4 * time.Minute, 1}, {6 * time.Minute, 2}}},
		{"bigneg.example", true, []step{{0, 1}, {4 * time.Minute, 1}, {6 * time.Minute, 2}}},
		// A week-long TTL is capped at MaxTTL.
		{"long.example", false, []step{{0, 1}, {59 * time.Minute, 1}, {61 * time.Minute, 2}}},
		// TTL 0 is not kept.
		{"zero.example", false, []step{{0, 1}, {0, 2}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := clk.Now()
			for i, s := range tt.steps {
				clk.mu.Lock()
				clk.now = base.Add(s.at)
				clk.mu.Unlock()
				name := tt.name
				if i == 1 {
					name = strings.ToUpper(name) + "." // case and trailing dot do not matter
				}
				txt, err := c.LookupTXT(ctx, name)
				var de *net.DNSError
				switch {
				case tt.notFound && (!errors.As(err, &de) || !de.IsNotFound):
					t.Fatalf("step %d: got %v, want a not-found DNSError", i, err)
				case !tt.notFound && (err != nil || len(txt) != 1):
					t.Fatalf("step %d: %v %v", i, txt, err)
				}
				if got := u.count(tt.name + ". TypeTXT"); got != s.asked {
					t.Fatalf("step %d at +%s: upstream asked %d times, want %d", i, s.at, got, s.asked)
				}
			}
			clk.advance(24 * time.Hour)
		})
	}
}

func TestCacheFailuresNotKept(t *testing.T) {
	clk := &clock{now: time.Unix(1e9, 0)}
	u := &countingUpstream{fail: map[string]error{
		"down.example. TypeTXT": errTemporary,
		"slow.example. TypeTXT": context.DeadlineExceeded,
	}}
	c := newCache(t, u, clk, nil)
	for range 2 {
		_, err := c.LookupTXT(context.Background(), "down.example")
		var de *net.DNSError
		if !errors.As(err, &de) || !de.IsTemporary || de.IsNotFound {
			t.Fatalf("got %v, want a temporary DNSError", err)
		}
		_, err = c.LookupTXT(context.Background(), "slow.example")
		if !errors.As(err, &de) || !de.IsTimeout {
			t.Fatalf("got %v, want a timeout DNSError", err)
		}
	}
	if n := u.count("down.example. TypeTXT"); n != 2 {
		t.Errorf("a failure was answered from the cache: asked %d times, want 2", n)
	}
}

func TestCacheBounded(t *testing.T) {
	clk := &clock{now: time.Unix(1e9, 0)}
	u := &countingUpstream{answers: map[string]Response{}}
	names := []string{"a.example", "b.example", "c.example", "d.example"}
	for _, n := range names {
		u.answers[n+". TypeTXT"] = Response{TXT: []string{n}, TTL: time.Hour}
	}
	c := newCache(t, u, clk, func(c *Config) { c.MaxEntries = 3 })
	ctx := context.Background()
	for _, n := range names[:3] {
		c.LookupTXT(ctx, n)
	}
	c.LookupTXT(ctx, "a.example") // a is now the most recently used
	c.LookupTXT(ctx, "d.example") // evicts b, the least recently used
	if c.Len() != 3 {
		t.Fatalf("%d entries, want at most 3", c.Len())
	}
	c.LookupTXT(ctx, "a.example")
	c.LookupTXT(ctx, "b.example")
	if a, b := u.count("a.example. TypeTXT"), u.count("b.example. TypeTXT"); a != 1 || b != 2 {
		t.Errorf("asked a %d and b %d times, want 1 and 2 (b evicted)", a, b)
	}
}

func TestCacheSharesConcurrentQuestions(t *testing.T) {
	clk := &clock{now: time.Unix(1e9, 0)}
	u := &countingUpstream{answers: map[string]Response{"x.example. TypeTXT": {TXT: []string{"v"}, TTL: time.Minute}},
		block: make(chan struct{})}
	c := newCache(t, u, clk, nil)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.LookupTXT(context.Background(), "x.example")
			errs <- err
		}()
	}
	// Let the lookups reach the upstream, then answer them all at once.
	deadline := time.Now().Add(5 * time.Second)
	for u.count("x.example. TypeTXT") == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	close(u.block)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := u.count("x.example. TypeTXT"); n != 1 {
		t.Errorf("8 concurrent lookups asked the upstream %d times, want 1", n)
	}
}

func TestCacheTimeout(t *testing.T) {
	u := &countingUpstream{block: make(chan struct{})}
	defer close(u.block)
	c := newCache(t, u, &clock{now: time.Unix(1e9, 0)}, func(c *Config) { c.Timeout = 50 * time.Millisecond })
	_, err := c.LookupTXT(context.Background(), "hang.example")
	var de *net.DNSError
	if !errors.As(err, &de) || !de.IsTimeout {
		t.Fatalf("got %v, want a timeout after the per-lookup timeout", err)
	}
}

func TestReverseName(t *testing.T) {
	c := newCache(t, &countingUpstream{answers: map[string]Response{
		"7.2.0.192.in-addr.arpa. TypePTR": {PTR: []string{"mail.example."}, TTL: time.Minute},
		"1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa. TypePTR": {PTR: []string{"v6.example."}, TTL: time.Minute},
	}}, &clock{now: time.Unix(1e9, 0)}, nil)
	for addr, want := range map[string]string{"192.0.2.7": "mail.example.", "2001:db8::1": "v6.example."} {
		names, err := c.LookupAddr(context.Background(), addr)
		if err != nil || len(names) != 1 || names[0] != want {
			t.Errorf("LookupAddr(%s) = %v, %v; want %s", addr, names, err, want)
		}
	}
}
