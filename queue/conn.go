// Package queue is sealpost's only door to NATS: it starts the embedded
// server (or connects to an external cluster), declares the streams, key-value
// buckets and object stores sealpost uses, and offers small typed operations
// on them. No other package imports nats.go.
package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Config configures the connection. The zero value (with DataDir set) runs an
// embedded JetStream server with no client port.
type Config struct {
	// URL of an external NATS cluster (e.g. "nats://n1:4222,nats://n2:4222"):
	// a comma-separated list of nats://, tls://, ws:// or wss:// URLs.
	// Empty (the default) starts an embedded server.
	URL string
	// CredsFile is an optional NATS credentials file for URL.
	CredsFile string
	// DataDir holds the embedded server's file store (<DataDir>/jetstream).
	// Required when URL is empty.
	DataDir string
	// ListenAddr opens a client port on the embedded server (e.g.
	// "127.0.0.1:4222"; port -1 picks a free one) so other sealpost
	// instances or tools can connect. Empty (the default) opens none. Only
	// without URL.
	ListenAddr string
	// Replicas is the JetStream replica count for every stream and bucket.
	// Default 1, at most 5; use 3 on a 3+ node cluster. Above 1 only with
	// URL: the embedded server is a single node.
	Replicas int
	// MaxPayload is the largest message, in bytes, the embedded server
	// accepts. Default 8 MiB. An external server has its own setting; the
	// smaller of the two applies.
	MaxPayload int32
	// SyncInterval is how often the embedded server flushes its file store
	// to disk. Zero (the default) flushes every write before it is
	// acknowledged, so an accepted message survives a power loss. A positive
	// interval is faster but loses up to that much acknowledged data when
	// the machine (not only the process) fails. At most 10 minutes; only
	// without URL (an external server has its own setting).
	SyncInterval time.Duration
	// ConnectTimeout bounds the initial connection. Default 10s.
	ConnectTimeout time.Duration
	// Name identifies this instance to NATS. Default "sealpost".
	Name string
	// NoDeclare opens the connection without declaring INGEST and
	// QUARANTINE, for restoring streams into an empty store (a restore
	// refuses a stream that exists). Default false.
	NoDeclare bool
	Logger    *slog.Logger
}

// Conn is a connection to JetStream, owning the embedded server if any.
type Conn struct {
	cfg Config
	log *slog.Logger
	srv *server.Server
	nc  *nats.Conn
	js  jetstream.JetStream
	// quarantined counts messages moved to QUARANTINE by this process.
	quarantined atomic.Int64
	// closed is closed by the client library once the connection is
	// closed for good (after Drain).
	closed chan struct{}
}

// Bounds of Config.
const (
	MaxReplicas     = 5
	MaxSyncInterval = 10 * time.Minute
)

// Validate checks cfg's settings: URL, ListenAddr, Replicas, MaxPayload
// and SyncInterval, a zero value standing for its default. It does not
// look at DataDir, which Open requires for the embedded server. Its errors
// name the setting; Open's add "queue:".
func (cfg Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if cfg.URL != "" {
		for one := range strings.SplitSeq(cfg.URL, ",") {
			u, err := url.Parse(strings.TrimSpace(one))
			if err != nil || u.Host == "" || (u.Scheme != "nats" && u.Scheme != "tls" && u.Scheme != "ws" && u.Scheme != "wss") {
				bad("url must be a comma-separated list of nats:// (or tls://) URLs, got %q", one)
				break
			}
		}
		if cfg.ListenAddr != "" {
			bad("listen address only applies to the embedded server, not with a url")
		}
		if cfg.SyncInterval != 0 {
			bad("sync interval only applies to the embedded server; an external server has its own sync setting")
		}
	}
	if cfg.ListenAddr != "" {
		if _, port, err := net.SplitHostPort(cfg.ListenAddr); err != nil {
			bad("listen address must be host:port, got %q", cfg.ListenAddr)
		} else if n, err := strconv.Atoi(port); err != nil || n < -1 || n > 65535 {
			bad("listen port must be a number from 0 to 65535 (or -1 for any), got %q", port)
		}
	}
	switch {
	case cfg.Replicas < 0 || cfg.Replicas > MaxReplicas:
		bad("replicas must be between 1 and %d, got %d", MaxReplicas, cfg.Replicas)
	case cfg.Replicas > 1 && cfg.URL == "":
		bad("replicas above 1 need a url: the embedded server is a single node")
	}
	if cfg.MaxPayload < 0 {
		bad("max payload must not be negative, got %d", cfg.MaxPayload)
	}
	if cfg.SyncInterval < 0 || cfg.SyncInterval > MaxSyncInterval {
		bad("sync interval must be 0 (every write) up to %s, got %s", MaxSyncInterval, cfg.SyncInterval)
	}
	return errors.Join(errs...)
}

// Open connects to NATS, starting the embedded server when cfg.URL is empty,
// and declares the INGEST stream.
func Open(ctx context.Context, cfg Config) (*Conn, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	if cfg.MaxPayload == 0 {
		cfg.MaxPayload = 8 << 20
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	if cfg.Name == "" {
		cfg.Name = "sealpost"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Conn{cfg: cfg, log: cfg.Logger, closed: make(chan struct{})}
	opts := []nats.Option{
		nats.ClosedHandler(func(*nats.Conn) { close(c.closed) }),
		nats.Name(cfg.Name),
		nats.Timeout(cfg.ConnectTimeout),
		nats.MaxReconnects(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				c.log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(*nats.Conn) { c.log.Info("nats reconnected") }),
	}
	if cfg.URL == "" {
		if cfg.DataDir == "" {
			return nil, errors.New("queue: data dir is required for the embedded server")
		}
		srv, err := startEmbedded(cfg)
		if err != nil {
			return nil, err
		}
		c.srv = srv
		opts = append(opts, nats.InProcessServer(srv))
	} else if cfg.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	}
	url := cfg.URL
	if url == "" {
		url = nats.DefaultURL // ignored: the in-process provider is used
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		c.shutdownServer()
		return nil, fmt.Errorf("queue: connect: %w", err)
	}
	c.nc = nc
	// An asynchronous publish that gets no answer fails after this, so
	// its caller's wait ends.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(publishTimeout))
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("queue: jetstream: %w", err)
	}
	c.js = js
	if cfg.NoDeclare {
		return c, nil
	}
	if err := c.ensureIngest(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func startEmbedded(cfg Config) (*server.Server, error) {
	o := &server.Options{
		ServerName:         cfg.Name,
		JetStream:          true,
		StoreDir:           filepath.Join(cfg.DataDir, "jetstream"),
		JetStreamMaxMemory: 256 << 20,
		MaxPayload:         cfg.MaxPayload,
		NoSigs:             true,
		DontListen:         cfg.ListenAddr == "",
	}
	if cfg.SyncInterval > 0 {
		o.SyncInterval = cfg.SyncInterval
	} else {
		o.SyncAlways = true
	}
	if cfg.ListenAddr != "" {
		host, port, err := net.SplitHostPort(cfg.ListenAddr)
		if err != nil {
			return nil, fmt.Errorf("queue: listen address %q: %w", cfg.ListenAddr, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, fmt.Errorf("queue: listen port %q: %w", port, err)
		}
		o.Host, o.Port = host, p
	}
	srv, err := server.NewServer(o)
	if err != nil {
		return nil, fmt.Errorf("queue: embedded server: %w", err)
	}
	srv.SetLoggerV2(serverLog{cfg.Logger}, false, false, false)
	srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		return nil, errors.New("queue: embedded server did not become ready in 30s")
	}
	return srv, nil
}

// ClientURL is the embedded server's client URL when it listens on a port,
// or the configured external URL.
func (c *Conn) ClientURL() string {
	if c.srv != nil && c.cfg.ListenAddr != "" {
		return c.srv.ClientURL()
	}
	return c.cfg.URL
}

// MaxPayload is the largest message the connected server accepts.
func (c *Conn) MaxPayload() int64 { return c.nc.MaxPayload() }

// Ready reports whether JetStream answers. It is what /readyz checks.
func (c *Conn) Ready(ctx context.Context) error {
	if c.nc == nil || !c.nc.IsConnected() {
		return errors.New("queue: not connected")
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := c.js.AccountInfo(ctx); err != nil {
		return fmt.Errorf("queue: jetstream: %w", err)
	}
	return nil
}

// drainTimeout bounds how long Close waits for pending messages to be
// flushed and subscriptions to drain.
const drainTimeout = 5 * time.Second

// Close drains the connection and shuts the embedded server down.
func (c *Conn) Close() {
	if c.nc != nil {
		if err := c.nc.Drain(); err == nil {
			t := time.NewTimer(drainTimeout)
			select {
			case <-c.closed:
			case <-t.C:
			}
			t.Stop()
		}
		c.nc.Close()
	}
	c.shutdownServer()
}

func (c *Conn) shutdownServer() {
	if c.srv != nil {
		c.srv.Shutdown()
		c.srv.WaitForShutdown()
		c.srv = nil
	}
}

func (c *Conn) replicas() int { return c.cfg.Replicas }

// serverLog passes the embedded server's warnings and errors (disk full,
// store corruption, resource limits) to the structured log; notices and
// debug output are dropped.
type serverLog struct{ l *slog.Logger }

func (s serverLog) Noticef(string, ...any) {}
func (s serverLog) Debugf(string, ...any)  {}
func (s serverLog) Tracef(string, ...any)  {}
func (s serverLog) Warnf(format string, v ...any) {
	s.l.Warn("nats-server: " + fmt.Sprintf(format, v...))
}
func (s serverLog) Errorf(format string, v ...any) {
	s.l.Error("nats-server: " + fmt.Sprintf(format, v...))
}
func (s serverLog) Fatalf(format string, v ...any) {
	s.l.Error("nats-server: fatal: " + fmt.Sprintf(format, v...))
}
