package smtpin

import (
	"context"
	"crypto/tls"
	"errors"
	"log"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sealpost/sealpost/ingress"
)

// Server is the SMTP ingress. Create it with New, run it with Serve or
// ListenAndServe, stop it with Shutdown.
type Server struct {
	cfg    Config
	log    *slog.Logger
	routes map[string]*Route // normalized recipient address -> route
	m      *metrics

	errLog  *log.Logger
	tlsConf *tls.Config

	mu      sync.Mutex
	closing bool
	ln      net.Listener
	conns   map[*trackedConn]struct{}
	perIP   map[netip.Prefix]int
	drained chan struct{} // closed when closing and the last connection ends
}

// New validates c and returns a server ready to Serve.
func New(c Config) (*Server, error) {
	c, err := c.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:     c,
		log:     c.Logger.With("component", "smtpin"),
		routes:  make(map[string]*Route),
		conns:   make(map[*trackedConn]struct{}),
		perIP:   make(map[netip.Prefix]int),
		drained: make(chan struct{}),
	}
	for i := range c.Routes {
		r := &s.cfg.Routes[i]
		for _, a := range r.Recipients {
			s.routes[normalizeAddr(a)] = r
		}
	}
	s.m, err = newMetrics(c.Registerer)
	if err != nil {
		return nil, err
	}

	s.errLog = log.New(slogWriter{s.log}, "", 0)
	s.tlsConf = serverTLSConfig(c.TLSConfig)
	// The STARTTLS handshake moves a session forward: it is no junk command.
	base := s.tlsConf.GetConfigForClient
	s.tlsConf.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		if tc, ok := hello.Conn.(*trackedConn); ok {
			tc.progress()
		}
		if base != nil {
			return base(hello)
		}
		return nil, nil
	}
	return s, nil
}

// newSMTPServer returns the go-smtp server of one connection. Each
// connection has its own, so that the size limit can follow the
// transaction (see setDataLimit).
func (s *Server) newSMTPServer(tc *trackedConn) *smtp.Server {
	srv := smtp.NewServer(backend{s: s, tc: tc})
	srv.Domain = s.cfg.Hostname
	srv.TLSConfig = s.tlsConf
	// go-smtp's limit makes SIZE advertise MaxMessageBytes and refuses
	// MAIL ... SIZE= above it. During a transaction it is one byte higher:
	// see setDataLimit.
	srv.MaxMessageBytes = s.cfg.MaxMessageBytes
	srv.MaxRecipients = s.cfg.MaxRecipients
	srv.ReadTimeout = s.cfg.CommandTimeout
	srv.WriteTimeout = s.cfg.CommandTimeout
	srv.EnableSMTPUTF8 = true
	// go-smtp advertises REQUIRETLS only on a TLS connection.
	srv.EnableREQUIRETLS = true
	srv.ErrorLog = s.errLog
	return srv
}

// setDataLimit sets the size limit go-smtp applies to the message of a
// connection. go-smtp's DATA reader stops once it has returned
// MaxMessageBytes bytes, before it can see whether the end-of-data line
// follows, so a message of exactly the limit would be refused. Once RCPT TO
// is accepted its limit is one byte higher, so that such a message ends
// normally; receive refuses anything above MaxMessageBytes itself. Outside
// a transaction (EHLO's SIZE, MAIL's SIZE=) the limit is the configured one.
func (s *Server) setDataLimit(tc *trackedConn, inTransaction bool) {
	if tc == nil || tc.srv == nil {
		return
	}
	tc.srv.MaxMessageBytes = s.cfg.MaxMessageBytes
	if inTransaction {
		tc.srv.MaxMessageBytes++
	}
}

// serverTLSConfig returns a clone of base that allows TLS 1.2 and 1.3 only,
// with ECDHE and AEAD cipher suites for TLS 1.2 (TLS 1.3 suites are all AEAD
// and not configurable). Go prefers TLS 1.3 when the client offers it.
func serverTLSConfig(base *tls.Config) *tls.Config {
	c := base.Clone()
	if c.MinVersion < tls.VersionTLS12 {
		c.MinVersion = tls.VersionTLS12
	}
	if c.MaxVersion != 0 && c.MaxVersion < tls.VersionTLS12 {
		c.MaxVersion = 0
	}
	c.CipherSuites = []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
		tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
	}
	return c
}

// ListenAndServe listens on Config.Addr and serves until Shutdown.
func (s *Server) ListenAndServe() error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return err
	}
	return s.Serve(ln)
}

// Serve accepts connections on ln until Shutdown. Connections above
// MaxConns or MaxConnsPerIP are answered 421 4.7.0 and closed.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.ln = ln
	s.mu.Unlock()
	var tempDelay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.isClosing() || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				tempDelay = min(max(2*tempDelay, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed, retrying", "err", err, "delay", tempDelay)
				time.Sleep(tempDelay)
				continue
			}
			return err
		}
		tempDelay = 0
		if tc := s.admit(c); tc != nil {
			go s.serveConn(tc)
		}
	}
}

// serveConn runs one connection's SMTP dialogue until it ends.
func (s *Server) serveConn(tc *trackedConn) {
	tc.srv = s.newSMTPServer(tc)
	err := tc.srv.Serve(&oneConnListener{conn: tc})
	if err != nil && !errors.Is(err, net.ErrClosed) {
		s.log.Warn("connection ended with an error", "remote_ip", tc.ip.String(), "err", err)
	}
	tc.Close()
}

// Shutdown stops accepting connections, closes idle ones and lets messages
// being received finish (each connection is closed once its answer is sent).
// When ctx ends first, the remaining connections are closed and ctx's error
// is returned.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	ln := s.ln
	var idle, all []*trackedConn
	for c := range s.conns {
		all = append(all, c)
		if !c.busy {
			idle = append(idle, c)
		}
	}
	if len(s.conns) == 0 {
		s.closeDrained()
	}
	s.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
	for _, c := range idle {
		c.Close()
	}
	select {
	case <-s.drained:
		return nil
	case <-ctx.Done():
		for _, c := range all {
			c.Close()
		}
		return ctx.Err()
	}
}

// closeDrained signals Shutdown that no connection is left. s.mu is held.
func (s *Server) closeDrained() {
	select {
	case <-s.drained:
	default:
		close(s.drained)
	}
}

// setBusy marks the connection under a session as receiving a message, so
// that Shutdown lets it finish. Clearing it on a closing server closes the
// connection, after its answer was written.
func (s *Server) setBusy(c *trackedConn, busy bool) (closing bool) {
	if c == nil {
		return false
	}
	s.mu.Lock()
	c.busy = busy
	closing = s.closing
	s.mu.Unlock()
	if closing && !busy {
		c.Close()
	}
	return closing
}

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// admit counts a new connection in total and per client network, or
// answers it 421 and returns nil when a limit is reached.
func (s *Server) admit(c net.Conn) *trackedConn {
	ip := remoteIP(c.RemoteAddr())
	key := clientNetwork(ip)
	s.mu.Lock()
	tooMany := len(s.conns) >= s.cfg.MaxConns || s.perIP[key] >= s.cfg.MaxConnsPerIP
	var tc *trackedConn
	if !tooMany && !s.closing {
		now := time.Now()
		tc = &trackedConn{Conn: c, s: s, ip: ip, key: key, sessionEnd: now.Add(s.cfg.MaxSessionTime), closed: make(chan struct{})}
		s.conns[tc] = struct{}{}
		s.perIP[key]++
	}
	s.mu.Unlock()
	if tc != nil {
		s.m.conns.WithLabelValues("accepted").Inc()
		return tc
	}
	s.m.conns.WithLabelValues("refused").Inc()
	s.log.Warn("connection refused: too many connections", "remote_ip", ip.String(), "network", key.String())
	go refuse(c)
	return nil
}

// clientNetwork is what MaxConnsPerIP counts: an IPv4 address, or the /64 of
// an IPv6 address (one subscriber or host usually holds a whole /64, so
// counting single addresses would let it fill every slot).
func clientNetwork(ip netip.Addr) netip.Prefix {
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p
	}
	p, _ := ip.Prefix(ip.BitLen())
	return p
}

// oneConnListener hands one connection to a go-smtp server, then blocks
// until that connection is closed.
type oneConnListener struct {
	conn   *trackedConn
	handed bool
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	if !l.handed {
		l.handed = true
		return l.conn, nil
	}
	<-l.conn.closed
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error   { return nil }
func (l *oneConnListener) Addr() net.Addr { return l.conn.LocalAddr() }

// refuse answers a connection over the limits and closes it.
func refuse(c net.Conn) {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte("421 4.7.0 Too many connections, try again later\r\n"))
	c.Close()
}

// trackedConn is one client connection. It releases its slot in the
// connection counts when closed, and enforces the limits of a session that
// go-smtp does not know: the junk command limit, the session time, and the
// end of a connection whose command read timed out.
type trackedConn struct {
	net.Conn
	s          *Server
	ip         netip.Addr
	key        netip.Prefix
	sessionEnd time.Time
	srv        *smtp.Server // this connection's go-smtp server
	closed     chan struct{}
	closeOnce  sync.Once

	busy bool // guarded by s.mu

	// go-smtp reads commands and calls the session from the connection's
	// goroutine; only Data of a BDAT transfer runs in another, hence the
	// atomics.
	smtpConn  *smtp.Conn // set by the first session; Conn() is the current (TLS) connection
	commands  int        // commands read so far
	moved     atomic.Bool
	junk      atomic.Int32 // commands in a row that moved no message forward
	finishing atomic.Bool  // a final 421 was written; the connection is closing
}

// progress records that the current command moved the session forward
// (HELO/EHLO, STARTTLS, MAIL, an accepted RCPT, DATA or BDAT).
func (c *trackedConn) progress() { c.moved.Store(true) }

// delivered starts the junk count again after an accepted message.
func (c *trackedConn) delivered() { c.junk.Store(0) }

// SetReadDeadline is called by go-smtp (directly or through the TLS
// connection) before it reads each command: the previous command is
// judged then. It also keeps every deadline inside the session time.
func (c *trackedConn) SetReadDeadline(t time.Time) error {
	if c.finishing.Load() {
		return net.ErrClosed
	}
	if !c.isBusy() {
		if c.commands > 0 && !c.moved.Swap(false) {
			c.junk.Add(1)
		}
		c.commands++
		if n := c.junk.Load(); int(n) > c.s.cfg.MaxJunkCommands {
			c.s.m.limits.WithLabelValues("junk_commands").Inc()
			c.s.log.Warn("connection closed: too many commands without a message", "remote_ip", c.ip.String(), "junk", n)
			c.finish("421 4.7.0 Too many commands without a message, closing connection")
			return net.ErrClosed
		}
	}
	return c.Conn.SetReadDeadline(c.clamp(t))
}

// setDataDeadline bounds the message transfer; it is no command read.
func (c *trackedConn) setDataDeadline(t time.Time) {
	_ = c.Conn.SetReadDeadline(c.clamp(t))
}

func (c *trackedConn) SetDeadline(t time.Time) error {
	return c.Conn.SetDeadline(c.clamp(t))
}

func (c *trackedConn) clamp(t time.Time) time.Time {
	if t.IsZero() || t.After(c.sessionEnd) {
		return c.sessionEnd
	}
	return t
}

// Read passes reads through. When a command read times out, it answers
// 421 and closes the connection itself: go-smtp's line reader would
// otherwise hand a command that came without its CRLF to the dialogue as
// if it were complete. The session methods refuse to act once finishing is
// set, and go-smtp's answers go nowhere.
func (c *trackedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	var ne net.Error
	if err != nil && errors.As(err, &ne) && ne.Timeout() && !c.finishing.Load() && !c.isBusy() {
		if !time.Now().Before(c.sessionEnd) {
			c.s.m.limits.WithLabelValues("session_time").Inc()
			c.s.log.Warn("connection closed: session time limit", "remote_ip", c.ip.String())
			c.finish("421 4.4.2 Session time limit reached, closing connection")
		} else {
			c.s.m.limits.WithLabelValues("command_timeout").Inc()
			c.finish("421 4.4.2 Idle timeout, closing connection")
		}
	}
	return n, err
}

// finish writes a last answer on the connection as the client sees it (TLS
// once STARTTLS completed) and closes it.
func (c *trackedConn) finish(reply string) {
	c.finishing.Store(true)
	var top net.Conn = c
	if c.smtpConn != nil {
		top = c.smtpConn.Conn()
	}
	_ = c.Conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, _ = top.Write([]byte(reply + "\r\n"))
	c.Close()
}

func (c *trackedConn) isBusy() bool {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	return c.busy
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() {
		close(c.closed)
		s := c.s
		s.mu.Lock()
		delete(s.conns, c)
		if s.perIP[c.key]--; s.perIP[c.key] <= 0 {
			delete(s.perIP, c.key)
		}
		if s.closing && len(s.conns) == 0 {
			s.closeDrained()
		}
		s.mu.Unlock()
	})
	return err
}

func remoteIP(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(ta.IP)
		return ip.Unmap()
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// slogWriter sends go-smtp's internal error log to slog.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.l.Warn("smtp server", "detail", string(p))
	return len(p), nil
}

type metrics struct {
	limits   *prometheus.CounterVec
	conns    *prometheus.CounterVec
	messages *prometheus.CounterVec
	bytes    prometheus.Histogram
	seconds  *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		limits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sealpost_smtp_limit_closes_total",
			Help: "SMTP connections closed by a limit: command_timeout, session_time, junk_commands.",
		}, []string{"limit"}),
		conns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sealpost_smtp_connections_total",
			Help: "SMTP connections, by result (accepted, refused over the connection limits).",
		}, []string{"result"}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sealpost_smtp_messages_total",
			Help: "SMTP messages, by SMTP answer class (accepted, temporary, rejected).",
		}, []string{"result"}),
		bytes: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sealpost_smtp_message_bytes",
			Help:    "Size of accepted SMTP messages in bytes.",
			Buckets: prometheus.ExponentialBuckets(1024, 4, 9),
		}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sealpost_smtp_data_duration_seconds",
			Help:    "Time from DATA (or the first BDAT) to the answer, by result as in sealpost_smtp_messages_total: the sender's transfer, parsing and the durable queueing.",
			Buckets: []float64{.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 600},
		}, []string{"result"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.limits, m.conns, m.messages, m.bytes, m.seconds} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// route finds the route of a recipient: the configured ones first, then
// MoreRoutes.
func (s *Server) route(addr string) (*Route, bool) {
	if r, ok := s.routes[normalizeAddr(addr)]; ok {
		return r, true
	}
	if s.cfg.MoreRoutes == nil {
		return nil, false
	}
	r, ok := s.cfg.MoreRoutes.MailRoute(addr)
	if !ok || !ingress.ValidName(r.Tenant) || !ingress.ValidRoute(r.Name) {
		return nil, false
	}
	return &r, true
}
