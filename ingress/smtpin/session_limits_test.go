package smtpin

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"
)

// expectClosed reads until the server closes the connection, failing on any
// further answer.
func expectClosed(t *testing.T, tp *textproto.Conn) {
	t.Helper()
	code, msg, err := tp.ReadResponse(0)
	if err == nil || code != 0 {
		t.Fatalf("got %d %s after the final answer, want the connection closed", code, msg)
	}
	if !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "reset") && !strings.Contains(err.Error(), "closed") {
		t.Fatalf("read after the final answer: %v, want EOF", err)
	}
}

// TestCommandWithoutCRLF: a command whose CRLF never comes is not executed
// when the command timeout expires; the connection is answered 421 and
// closed, before and after STARTTLS.
func TestCommandWithoutCRLF(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.CommandTimeout = time.Second })
	t.Run("tls", func(t *testing.T) {
		tp := ts.rawTLS(t)
		fmt.Fprint(tp.W, "MAIL FROM:<a@vendor.example>")
		tp.W.Flush()
		if msg := expect(t, tp, 421); !strings.HasPrefix(msg, "4.4.2") {
			t.Errorf("answer %q, want 421 4.4.2 (the MAIL must not be answered 250)", msg)
		}
		expectClosed(t, tp)
	})
	t.Run("plain", func(t *testing.T) {
		conn, err := net.Dial("tcp", ts.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		tp := textproto.NewConn(conn)
		expect(t, tp, 220)
		fmt.Fprint(tp.W, "NOOP")
		tp.W.Flush()
		if msg := expect(t, tp, 421); !strings.HasPrefix(msg, "4.4.2") {
			t.Errorf("answer %q, want 421 4.4.2", msg)
		}
		expectClosed(t, tp)
	})
}

// TestJunkCommands: commands that move no message forward are limited; an
// accepted message starts the count again.
func TestJunkCommands(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.MaxJunkCommands = 5 })
	tp := ts.rawTLS(t)
	junk := []struct {
		cmd  string
		code int
	}{
		{"NOOP", 250},
		{"RSET", 250},
		{"VRFY postmaster", 252},
		{"XYZZ", 500},
		{"MAIL FROM:<a@vendor.example>", 250}, // moves forward: not junk
		{"RCPT TO:<nobody@in.example.net>", 550},
	}
	for _, j := range junk {
		tp.PrintfLine("%s", j.cmd)
		expect(t, tp, j.code)
	}
	// Four junk commands and a MAIL so far; a message restarts the count.
	tp.PrintfLine("RCPT TO:<invoices@in.example.net>")
	expect(t, tp, 250)
	tp.PrintfLine("DATA")
	expect(t, tp, 354)
	fmt.Fprintf(tp.W, "%s.\r\n", simpleMessage)
	tp.W.Flush()
	expect(t, tp, 250)
	for i := 0; i < 5; i++ {
		tp.PrintfLine("NOOP")
		expect(t, tp, 250)
	}
	// The sixth junk command in a row is answered, and the connection is
	// then closed at the next read.
	tp.PrintfLine("NOOP")
	expect(t, tp, 250)
	tp.PrintfLine("NOOP")
	if msg := expect(t, tp, 421); !strings.HasPrefix(msg, "4.7.0") {
		t.Errorf("answer %q, want 421 4.7.0", msg)
	}
	expectClosed(t, tp)
	if n := len(ts.enq.all()); n != 1 {
		t.Errorf("%d messages, want 1", n)
	}
}

// TestFailedRecipientsLimited: a dictionary attack on recipients ends at
// the junk limit, not at MaxRecipients or never.
func TestFailedRecipientsLimited(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.MaxJunkCommands = 10 })
	tp := ts.rawEnvelope(t)
	for i := 0; i < 1000; i++ {
		tp.PrintfLine("RCPT TO:<guess%d@in.example.net>", i)
		code, msg, err := tp.ReadResponse(0)
		if code == 421 {
			if !strings.HasPrefix(msg, "4.7.0") || i != 11 {
				t.Errorf("closed after %d refused recipients with %d %s, want 421 4.7.0 after 11", i, code, msg)
			}
			return
		}
		if code != 550 {
			t.Fatalf("RCPT %d: %d %s %v", i, code, msg, err)
		}
	}
	t.Fatal("1000 unknown recipients and the connection is still open")
}

// TestSessionTimeLimit: a client that keeps a connection busy with NOOPs
// within the command timeout is still cut off at MaxSessionTime.
func TestSessionTimeLimit(t *testing.T) {
	ts := startServer(t, func(c *Config) {
		c.MaxSessionTime, c.DataTimeout, c.CommandTimeout = 2*time.Second, time.Second, 5*time.Second
		c.MaxJunkCommands = 1000
	})
	tp := ts.rawTLS(t)
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; ; i++ {
		if time.Now().After(deadline) {
			t.Fatal("the connection outlived its session time by far")
		}
		tp.PrintfLine("NOOP")
		code, msg, err := tp.ReadResponse(0)
		if code == 421 {
			if !strings.HasPrefix(msg, "4.4.2") || !strings.Contains(msg, "Session time") {
				t.Errorf("answer %d %s, want 421 4.4.2 session time", code, msg)
			}
			break
		}
		if code != 250 {
			t.Fatalf("NOOP %d: %d %s %v", i, code, msg, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	expectClosed(t, tp)
}

// pipeListener hands the server in-memory connections that claim any
// client address, for the per-network limits of IPv6 clients.
type pipeListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv6loopback, Port: 25} }

// dial connects a client that appears to come from addr.
func (l *pipeListener) dial(t *testing.T, addr string) *textproto.Conn {
	t.Helper()
	server, client := net.Pipe()
	ap := netip.MustParseAddrPort(addr)
	l.conns <- addrConn{Conn: server, remote: net.TCPAddrFromAddrPort(ap)}
	t.Cleanup(func() { client.Close() })
	client.SetDeadline(time.Now().Add(10 * time.Second))
	return textproto.NewConn(client)
}

type addrConn struct {
	net.Conn
	remote net.Addr
}

func (c addrConn) RemoteAddr() net.Addr { return c.remote }

// TestConnectionsPerIPv6Network: MaxConnsPerIP counts an IPv6 client by its
// /64, so one host cannot take every slot by changing addresses.
func TestConnectionsPerIPv6Network(t *testing.T) {
	cert := newTestCert(t)
	srv, err := New(Config{Hostname: "mx.test", TLSConfig: cert.server, Routes: testRoutes(), Enqueuer: &recordingEnqueuer{},
		Blobs: &memBlobs{}, Resolver: &fakeResolver{}, MaxConnsPerIP: 2})
	if err != nil {
		t.Fatal(err)
	}
	ln := newPipeListener()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Shutdown(t.Context())
		<-done
	})
	for _, tt := range []struct {
		addr string
		code int
	}{
		{"[2001:db8:1:2::1]:1000", 220},
		{"[2001:db8:1:2:ffff::9]:1001", 220},
		{"[2001:db8:1:2::3]:1002", 421}, // third in the same /64
		{"[2001:db8:1:3::1]:1003", 220}, // the next /64
		{"192.0.2.1:1004", 220},
		{"192.0.2.2:1005", 220}, // IPv4 counts single addresses
		{"192.0.2.1:1006", 220},
		{"192.0.2.1:1007", 421},
	} {
		tp := ln.dial(t, tt.addr)
		if code, msg, err := tp.ReadResponse(0); code != tt.code {
			t.Errorf("%s: %d %s %v, want %d", tt.addr, code, msg, err, tt.code)
		} else if code == 421 && !strings.HasPrefix(msg, "4.7.0") {
			t.Errorf("%s: answer %q, want 4.7.0", tt.addr, msg)
		}
	}
}

func TestClientNetwork(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.7":                 "192.0.2.7/32",
		"::ffff:192.0.2.7":          "192.0.2.7/32",
		"2001:db8:1:2:3:4:5:6":      "2001:db8:1:2::/64",
		"2001:db8:1:2:ffff:ffff::1": "2001:db8:1:2::/64",
	} {
		if got := clientNetwork(netip.MustParseAddr(in)).String(); got != want {
			t.Errorf("clientNetwork(%s) = %s, want %s", in, got, want)
		}
	}
}
