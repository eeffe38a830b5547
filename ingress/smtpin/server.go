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
	"time"

	"github.com/emersion/go-smtp"
	"github.com/prometheus/client_golang/prometheus"
)

// Server is the SMTP ingress. Create it with New, run it with Serve or
// ListenAndServe, stop it with Shutdown.
type Server struct {
	cfg    Config
	log    *slog.Logger
	smtp   *smtp.Server
	routes map[string]*Route // normalized recipient address -> route
	m      *metrics

	mu      sync.Mutex
	closing bool
	conns   map[*trackedConn]struct{}
	perIP   map[netip.Addr]int
}

// New validates c and returns a server ready to Serve.
func New(c Config) (*Server, error) {
	c, err := c.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:    c,
		log:    c.Logger.With("component", "smtpin"),
		routes: make(map[string]*Route),
		conns:  make(map[*trackedConn]struct{}),
		perIP:  make(map[netip.Addr]int),
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

	srv := smtp.NewServer(backend{s})
	srv.Addr = c.Addr
	srv.Domain = c.Hostname
	srv.TLSConfig = serverTLSConfig(c.TLSConfig)
	// go-smtp's own limit makes SIZE advertise c.MaxMessageBytes and refuses
	// MAIL ... SIZE= above it; Data enforces the same limit on its own.
	srv.MaxMessageBytes = c.MaxMessageBytes
	srv.MaxRecipients = c.MaxRecipients
	srv.ReadTimeout = c.CommandTimeout
	srv.WriteTimeout = c.CommandTimeout
	srv.EnableSMTPUTF8 = true
	// go-smtp advertises REQUIRETLS only on a TLS connection.
	srv.EnableREQUIRETLS = true
	srv.ErrorLog = log.New(slogWriter{s.log}, "", 0)
	s.smtp = srv
	return s, nil
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
	err := s.smtp.Serve(&limitListener{Listener: ln, s: s})
	if errors.Is(err, smtp.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting connections, closes idle ones and lets messages
// being received finish (each connection is closed once its answer is sent).
// When ctx ends first, the remaining connections are closed and ctx's error
// is returned.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	var idle []*trackedConn
	for c := range s.conns {
		if !c.busy {
			idle = append(idle, c)
		}
	}
	s.mu.Unlock()

	done := make(chan error, 1)
	go func() { done <- s.smtp.Shutdown(ctx) }()
	for _, c := range idle {
		c.Close()
	}
	select {
	case err := <-done:
		if errors.Is(err, smtp.ErrServerClosed) {
			err = nil
		}
		if err != nil {
			s.smtp.Close()
		}
		return err
	case <-ctx.Done():
		s.smtp.Close()
		return ctx.Err()
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

// limitListener counts connections in total and per client IP.
type limitListener struct {
	net.Listener
	s *Server
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := remoteIP(c.RemoteAddr())
		s := l.s
		s.mu.Lock()
		tooMany := len(s.conns) >= s.cfg.MaxConns || s.perIP[ip] >= s.cfg.MaxConnsPerIP
		var tc *trackedConn
		if !tooMany && !s.closing {
			tc = &trackedConn{Conn: c, s: s, ip: ip}
			s.conns[tc] = struct{}{}
			s.perIP[ip]++
		}
		s.mu.Unlock()
		if tc != nil {
			s.m.conns.WithLabelValues("accepted").Inc()
			return tc, nil
		}
		s.m.conns.WithLabelValues("refused").Inc()
		s.log.Warn("connection refused: too many connections", "remote_ip", ip.String())
		go refuse(c)
	}
}

// refuse answers a connection over the limits and closes it.
func refuse(c net.Conn) {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte("421 4.7.0 Too many connections, try again later\r\n"))
	c.Close()
}

// trackedConn releases its slot in the connection counts when closed.
type trackedConn struct {
	net.Conn
	s    *Server
	ip   netip.Addr
	busy bool // guarded by s.mu
	once sync.Once
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.s.mu.Lock()
		delete(c.s.conns, c)
		if c.s.perIP[c.ip]--; c.s.perIP[c.ip] <= 0 {
			delete(c.s.perIP, c.ip)
		}
		c.s.mu.Unlock()
	})
	return err
}

// tracked finds the trackedConn under a (possibly TLS) connection.
func tracked(c net.Conn) *trackedConn {
	if t, ok := c.(*tls.Conn); ok {
		c = t.NetConn()
	}
	tc, _ := c.(*trackedConn)
	return tc
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
	conns    *prometheus.CounterVec
	messages *prometheus.CounterVec
	bytes    prometheus.Histogram
	seconds  *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
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
		for _, c := range []prometheus.Collector{m.conns, m.messages, m.bytes, m.seconds} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
