package smtpin

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/textproto"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// rawTLS opens a connection, upgrades it with STARTTLS by hand and returns a
// textproto connection over TLS, for tests that need exact control of the
// bytes on the wire.
func (ts *testServer) rawTLS(t *testing.T) *textproto.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	tp := textproto.NewConn(conn)
	expect(t, tp, 220)
	tp.PrintfLine("EHLO client.test")
	expect(t, tp, 250)
	tp.PrintfLine("STARTTLS")
	expect(t, tp, 220)
	tc := tls.Client(conn, ts.clientTLS())
	tp = textproto.NewConn(tc)
	tp.PrintfLine("EHLO client.test")
	expect(t, tp, 250)
	return tp
}

// rawEnvelope is rawTLS with MAIL FROM and one RCPT TO accepted.
func (ts *testServer) rawEnvelope(t *testing.T) *textproto.Conn {
	t.Helper()
	tp := ts.rawTLS(t)
	tp.PrintfLine("MAIL FROM:<a@vendor.example>")
	expect(t, tp, 250)
	tp.PrintfLine("RCPT TO:<invoices@in.example.net>")
	expect(t, tp, 250)
	return tp
}

func expect(t *testing.T, tp *textproto.Conn, code int) string {
	t.Helper()
	got, msg, err := tp.ReadResponse(0)
	if err != nil && got == 0 {
		t.Fatalf("want %d, read error %v", code, err)
	}
	if got != code {
		t.Fatalf("got %d %s, want %d", got, msg, code)
	}
	return msg
}

func TestPipelining(t *testing.T) {
	ts := startServer(t, nil)
	tp := ts.rawTLS(t)
	// The whole envelope in one write, as a pipelining client sends it.
	fmt.Fprintf(tp.W, "MAIL FROM:<a@vendor.example>\r\nRCPT TO:<invoices@in.example.net>\r\n"+
		"RCPT TO:<nobody@in.example.net>\r\nRCPT TO:<alerts@in.example.net>\r\nDATA\r\n")
	tp.W.Flush()
	expect(t, tp, 250)
	expect(t, tp, 250)
	if msg := expect(t, tp, 550); !strings.HasPrefix(msg, "5.1.1") {
		t.Errorf("unknown recipient answer %q, want 5.1.1", msg)
	}
	expect(t, tp, 250)
	expect(t, tp, 354)
	fmt.Fprintf(tp.W, "%s.\r\nMAIL FROM:<b@vendor.example>\r\nRCPT TO:<alerts@in.example.net>\r\nDATA\r\n", simpleMessage)
	tp.W.Flush()
	expect(t, tp, 250)
	expect(t, tp, 250)
	expect(t, tp, 250)
	expect(t, tp, 354)
	fmt.Fprintf(tp.W, "%s.\r\nQUIT\r\n", simpleMessage)
	tp.W.Flush()
	expect(t, tp, 250)
	expect(t, tp, 221)
	if n := len(ts.enq.all()); n != 3 {
		t.Errorf("%d submissions, want 3 (two routes, then one)", n)
	}
}

func TestLimits(t *testing.T) {
	nested := func(depth int) string {
		var b strings.Builder
		b.WriteString("From: a@vendor.example\r\nSubject: deep\r\n")
		for i := 0; i < depth; i++ {
			fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n", i, i)
		}
		b.WriteString("Content-Type: text/plain\r\n\r\nleaf\r\n")
		for i := depth - 1; i >= 0; i-- {
			fmt.Fprintf(&b, "--b%d--\r\n", i)
		}
		return b.String()
	}
	manyParts := func(n int) string {
		var b strings.Builder
		b.WriteString("From: a@vendor.example\r\nContent-Type: multipart/mixed; boundary=P\r\n\r\n")
		for i := 0; i < n; i++ {
			fmt.Fprintf(&b, "--P\r\nContent-Type: text/plain\r\n\r\npart %d\r\n", i)
		}
		b.WriteString("--P--\r\n")
		return b.String()
	}
	bigBody := func(n int) string {
		return simpleMessage + strings.Repeat(strings.Repeat("x", 98)+"\r\n", n/100)
	}
	tests := []struct {
		name     string
		cfg      func(*Config)
		rcpts    int
		msg      string
		wantCode int
		wantEnh  string
	}{
		{"size under limit", func(c *Config) { c.MaxMessageBytes = 64 << 10 }, 1, bigBody(60 << 10), 0, ""},
		{"size over limit", func(c *Config) { c.MaxMessageBytes = 64 << 10 }, 1, bigBody(70 << 10), 552, "5.3.4"},
		{"recipients at limit", func(c *Config) { c.MaxRecipients = 2 }, 2, simpleMessage, 0, ""},
		{"recipients over limit", func(c *Config) { c.MaxRecipients = 2 }, 3, simpleMessage, 452, "4.5.3"},
		{"header under limit", func(c *Config) { c.MaxHeaderBytes = 2048 }, 1, "X-Pad: " + strings.Repeat("h", 1500) + "\r\n" + simpleMessage, 0, ""},
		{"header over limit", func(c *Config) { c.MaxHeaderBytes = 2048 }, 1, "X-Pad: " + strings.Repeat("h", 1000) + "\r\nX-Pad: " + strings.Repeat("h", 1000) + "\r\n" + simpleMessage, 552, "5.3.4"},
		{"mime depth at limit", func(c *Config) { c.MaxMIMEDepth = 3 }, 1, nested(3), 0, ""},
		{"mime depth over limit", func(c *Config) { c.MaxMIMEDepth = 3 }, 1, nested(4), 554, "5.6.0"},
		{"mime parts at limit", func(c *Config) { c.MaxMIMEParts = 5 }, 1, manyParts(4), 0, ""},
		{"mime parts over limit", func(c *Config) { c.MaxMIMEParts = 5 }, 1, manyParts(5), 554, "5.6.0"},
		{"payload over limit", func(c *Config) { c.MaxPayloadBytes = 4096; c.MaxHeaderBytes = 8192 }, 1, "X-Pad: " + strings.Repeat(strings.Repeat("h", 900)+"\r\n ", 6) + "x\r\n" + simpleMessage, 552, "5.3.4"},
	}
	rcpts := []string{"invoices@in.example.net", "alerts@in.example.net", "orders@globex.example.net"}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, tt.cfg)
			c := ts.dial(t, true)
			_, err := send(c, "a@vendor.example", rcpts[:tt.rcpts], []byte(tt.msg))
			if tt.wantCode == 0 {
				if err != nil {
					t.Fatalf("got %v, want acceptance", err)
				}
				return
			}
			if smtpCode(err) != tt.wantCode || enhCode(err) != tt.wantEnh {
				t.Fatalf("got %v, want %d %s", err, tt.wantCode, tt.wantEnh)
			}
			if n := len(ts.enq.all()); n != 0 {
				t.Errorf("%d submissions queued for a refused message", n)
			}
			// The connection stays usable after a refused message.
			if err := c.Reset(); err != nil {
				t.Fatal(err)
			}
			if _, err := send(c, "a@vendor.example", rcpts[:1], []byte(simpleMessage)); err != nil {
				t.Errorf("next message on the same connection: %v", err)
			}
		})
	}
}

func TestLongLine(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial(t, true)
	_, err := send(c, "a@vendor.example", []string{"invoices@in.example.net"}, []byte(simpleMessage+strings.Repeat("x", 3000)+"\r\n"))
	if smtpCode(err) != 554 || enhCode(err) != "5.6.0" {
		t.Fatalf("got %v, want 554 5.6.0", err)
	}
}

// TestDeclaredSize: MAIL ... SIZE= is judged against the advertised limit
// before any byte of the message is sent.
func TestDeclaredSize(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.MaxMessageBytes = 4096 })
	tp := ts.rawTLS(t)
	tp.PrintfLine("EHLO client.test")
	if caps := expect(t, tp, 250); !strings.Contains(caps, "SIZE 4096\n") {
		t.Errorf("EHLO does not advertise SIZE 4096:\n%s", caps)
	}
	for _, tt := range []struct {
		size string
		code int
		enh  string
	}{
		{"4096", 250, "2.0.0"}, // exactly the limit: accepted, as is the message (TestSizeBoundary)
		{"4097", 552, "5.3.4"},
		{"5000", 552, "5.3.4"},
		{"4294967295", 552, "5.3.4"},
		// go-smtp parses SIZE as a 32-bit number before the session sees
		// it and answers 501 for anything larger; this pins that answer
		// (a permanent refusal all the same).
		{"999999999999", 501, "5.5.4"},
	} {
		tp.PrintfLine("MAIL FROM:<a@vendor.example> SIZE=%s", tt.size)
		if msg := expect(t, tp, tt.code); !strings.HasPrefix(msg, tt.enh) {
			t.Errorf("SIZE=%s: answer %q, want %d %s", tt.size, msg, tt.code, tt.enh)
		}
		tp.PrintfLine("RSET")
		expect(t, tp, 250)
	}
	// After an accepted RCPT (where the DATA limit is one byte higher), a
	// new EHLO still advertises the configured limit.
	tp.PrintfLine("MAIL FROM:<a@vendor.example>")
	expect(t, tp, 250)
	tp.PrintfLine("RCPT TO:<invoices@in.example.net>")
	expect(t, tp, 250)
	tp.PrintfLine("EHLO client.test")
	if caps := expect(t, tp, 250); !strings.Contains(caps, "SIZE 4096\n") {
		t.Errorf("EHLO inside a transaction advertises:\n%s", caps)
	}
}

func TestConnectionsPerIP(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.MaxConnsPerIP = 2 })
	var open []*textproto.Conn
	for i := 0; i < 2; i++ {
		conn, err := net.Dial("tcp", ts.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		tp := textproto.NewConn(conn)
		expect(t, tp, 220)
		open = append(open, tp)
	}
	conn, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	tp := textproto.NewConn(conn)
	if msg := expect(t, tp, 421); !strings.HasPrefix(msg, "4.7.0") {
		t.Errorf("answer %q, want 4.7.0", msg)
	}
	conn.Close()

	// Once a connection ends, its slot is free again.
	open[0].PrintfLine("QUIT")
	expect(t, open[0], 221)
	for i := 0; ; i++ {
		conn, err := net.Dial("tcp", ts.addr)
		if err != nil {
			t.Fatal(err)
		}
		code, _, _ := textproto.NewConn(conn).ReadResponse(0)
		conn.Close()
		if code == 220 {
			break
		}
		if i == 100 {
			t.Fatalf("slot not released: still %d", code)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestTimeouts(t *testing.T) {
	t.Run("command", func(t *testing.T) {
		ts := startServer(t, func(c *Config) { c.CommandTimeout = time.Second })
		tp := ts.rawTLS(t)
		// Say nothing: the server gives up on the idle client.
		if msg := expect(t, tp, 421); !strings.HasPrefix(msg, "4.4.2") {
			t.Errorf("answer %q, want 4.4.2", msg)
		}
	})
	t.Run("data", func(t *testing.T) {
		ts := startServer(t, func(c *Config) { c.DataTimeout = time.Second })
		tp := ts.rawEnvelope(t)
		tp.PrintfLine("DATA")
		expect(t, tp, 354)
		// Half a message, then silence.
		fmt.Fprint(tp.W, "From: a@vendor.example\r\n")
		tp.W.Flush()
		if msg := expect(t, tp, 451); !strings.HasPrefix(msg, "4.4.2") {
			t.Errorf("answer %q, want 4.4.2", msg)
		}
		if n := len(ts.enq.all()); n != 0 {
			t.Errorf("%d submissions for a message that never ended", n)
		}
	})
}

func TestShutdownLetsDataFinish(t *testing.T) {
	ts := startServer(t, nil)
	idle := ts.rawTLS(t)
	busy := ts.rawTLS(t)
	busy.PrintfLine("MAIL FROM:<a@vendor.example>")
	expect(t, busy, 250)
	busy.PrintfLine("RCPT TO:<invoices@in.example.net>")
	expect(t, busy, 250)
	busy.PrintfLine("DATA")
	expect(t, busy, 354)
	fmt.Fprint(busy.W, "From: a@vendor.example\r\n")
	busy.W.Flush()
	// Wait until the server is inside DATA.
	for i := 0; ; i++ {
		ts.srv.mu.Lock()
		n := 0
		for c := range ts.srv.conns {
			if c.busy {
				n++
			}
		}
		ts.srv.mu.Unlock()
		if n == 1 {
			break
		}
		if i == 500 {
			t.Fatal("server never entered DATA")
		}
		time.Sleep(10 * time.Millisecond)
	}

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- ts.srv.Shutdown(ctx)
	}()

	// The idle connection is closed.
	if _, err := idle.ReadLine(); err == nil {
		t.Error("idle connection still open during shutdown")
	}
	// The message in flight completes and is queued.
	fmt.Fprint(busy.W, "Subject: last\r\n\r\nbody\r\n.\r\n")
	busy.W.Flush()
	expect(t, busy, 250)
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if n := len(ts.enq.all()); n != 1 {
		t.Errorf("%d submissions, want 1", n)
	}
	// No new connections.
	if conn, err := net.Dial("tcp", ts.addr); err == nil {
		code, _, _ := textproto.NewConn(conn).ReadResponse(0)
		conn.Close()
		if code == 220 {
			t.Error("new connection greeted after shutdown")
		}
	}
}

func TestBDAT(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.MaxMessageBytes = 4096 })
	tp := ts.rawTLS(t)
	msg := simpleMessage
	half := len(msg) / 2
	tp.PrintfLine("MAIL FROM:<a@vendor.example>")
	expect(t, tp, 250)
	tp.PrintfLine("RCPT TO:<invoices@in.example.net>")
	expect(t, tp, 250)
	fmt.Fprintf(tp.W, "BDAT %d\r\n%s", half, msg[:half])
	tp.W.Flush()
	expect(t, tp, 250)
	fmt.Fprintf(tp.W, "BDAT %d LAST\r\n%s", len(msg)-half, msg[half:])
	tp.W.Flush()
	if text := expect(t, tp, 250); !strings.Contains(text, "rcpt_") {
		t.Errorf("answer %q has no receipt id", text)
	}
	subs := ts.enq.all()
	if len(subs) != 1 || subs[0].RawSHA256 != sha256Digest([]byte(msg)) {
		t.Fatalf("BDAT message not queued intact")
	}

	// A chunk over the size limit is refused.
	tp.PrintfLine("MAIL FROM:<a@vendor.example>")
	expect(t, tp, 250)
	tp.PrintfLine("RCPT TO:<invoices@in.example.net>")
	expect(t, tp, 250)
	big := strings.Repeat(strings.Repeat("x", 98)+"\r\n", 50)
	fmt.Fprintf(tp.W, "BDAT %d LAST\r\n%s", len(big), big)
	tp.W.Flush()
	if text := expect(t, tp, 552); !strings.HasPrefix(text, "5.3.4") {
		t.Errorf("answer %q, want 5.3.4", text)
	}
}

func TestConnectionsTotal(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.MaxConns = 1 })
	first, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	expect(t, textproto.NewConn(first), 220)
	second, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	if msg := expect(t, textproto.NewConn(second), 421); !strings.HasPrefix(msg, "4.7.0") {
		t.Errorf("answer %q, want 4.7.0", msg)
	}
}

// TestSizeBoundary pins where the size limit falls: a message of exactly
// MaxMessageBytes is accepted (go-smtp's reader alone would stop one byte
// early, before the end-of-data line), one byte more is refused, with DATA
// and with BDAT.
func TestSizeBoundary(t *testing.T) {
	const limit = 4096
	ts := startServer(t, func(c *Config) { c.MaxMessageBytes = limit })
	c := ts.dial(t, true)
	for _, tt := range []struct {
		size int
		ok   bool
	}{{limit - 1, true}, {limit, true}, {limit + 1, false}} {
		msg := messageOfSize(tt.size)
		_, err := send(c, "a@vendor.example", []string{"invoices@in.example.net"}, msg)
		if (err == nil) != tt.ok || (err != nil && smtpCode(err) != 552) {
			t.Errorf("DATA of %d bytes: got %v, want accepted=%v (else 552)", tt.size, err, tt.ok)
		}
		c.Reset()
	}
	tp := ts.rawTLS(t)
	for _, tt := range []struct {
		size int
		code int
	}{{limit, 250}, {limit + 1, 552}} {
		tp.PrintfLine("MAIL FROM:<a@vendor.example>")
		expect(t, tp, 250)
		tp.PrintfLine("RCPT TO:<invoices@in.example.net>")
		expect(t, tp, 250)
		msg := messageOfSize(tt.size)
		fmt.Fprintf(tp.W, "BDAT %d\r\n%s", tt.size-100, msg[:tt.size-100])
		tp.W.Flush()
		expect(t, tp, 250)
		fmt.Fprintf(tp.W, "BDAT 100 LAST\r\n%s", msg[tt.size-100:])
		tp.W.Flush()
		expect(t, tp, tt.code)
	}
	if n := len(ts.enq.all()); n != 3 {
		t.Errorf("%d messages queued, want 3", n)
	}
}

// TestConnectionLostDuringData: a message whose connection ends before the
// terminating "." was never accepted by the sender's view and must not be
// queued; the sender will retry it whole.
func TestConnectionLostDuringData(t *testing.T) {
	ts := startServer(t, nil)
	tp := ts.rawEnvelope(t)
	tp.PrintfLine("DATA")
	expect(t, tp, 354)
	fmt.Fprint(tp.W, "From: a@vendor.example\r\nSubject: cut off\r\n\r\nfirst half of the body")
	tp.W.Flush()
	tp.Close()

	// Wait until the server has answered the DATA, whatever the answer.
	answered := func() float64 {
		var sum float64
		for _, class := range []string{"accepted", "temporary", "rejected"} {
			var m dto.Metric
			if err := ts.srv.m.messages.WithLabelValues(class).Write(&m); err != nil {
				t.Fatal(err)
			}
			sum += m.GetCounter().GetValue()
		}
		return sum
	}
	for deadline := time.Now().Add(5 * time.Second); answered() == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the server never finished the interrupted DATA")
		}
	}
	if n := len(ts.enq.all()); n != 0 {
		t.Fatalf("%d submissions queued for a message cut off before the final dot", n)
	}
}

// TestBDATDataTimeout: go-smtp gives every BDAT chunk a fresh command
// deadline; the whole transfer is still bounded by DataTimeout.
func TestBDATDataTimeout(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.DataTimeout = time.Second; c.CommandTimeout = 5 * time.Second })
	tp := ts.rawEnvelope(t)
	for i := 0; ; i++ {
		if i == 6 {
			t.Fatal("six slow chunks, 3s in all, were all accepted with a 1s data timeout")
		}
		fmt.Fprintf(tp.W, "BDAT 5\r\nX: y\n")
		tp.W.Flush()
		code, msg, err := tp.ReadResponse(0)
		if code == 451 && strings.HasPrefix(msg, "4.4.2") {
			break
		}
		if code != 250 {
			t.Fatalf("chunk %d: %d %s %v", i, code, msg, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if n := len(ts.enq.all()); n != 0 {
		t.Fatalf("%d submissions", n)
	}
}
