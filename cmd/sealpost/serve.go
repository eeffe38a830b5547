package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/sealpost/sealpost/audit"
	"github.com/sealpost/sealpost/forwarder"
	"github.com/sealpost/sealpost/ingress"
	"github.com/sealpost/sealpost/ingress/catalog"
	"github.com/sealpost/sealpost/ingress/httpapi"
	"github.com/sealpost/sealpost/ingress/smtpin"
	"github.com/sealpost/sealpost/keyring"
	"github.com/sealpost/sealpost/keyring/kms"
	"github.com/sealpost/sealpost/queue"
)

// serveFlags are the flags of `sealpost serve`.
type serveFlags struct {
	config  string
	dev     bool
	webhook string
	dataDir string
}

func runServe(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f serveFlags
	fs.StringVar(&f.config, "config", getenv("SEALPOST_CONFIG"), "configuration `file` (env SEALPOST_CONFIG)")
	fs.BoolVar(&f.dev, "dev", false, "development mode: zero configuration, self-signed certificate, demo tenant and API key")
	fs.StringVar(&f.webhook, "webhook", "", "with --dev: the demo route's webhook `URL` (default: the built-in receiver on the admin listener)")
	fs.StringVar(&f.dataDir, "data", getenv("SEALPOST_DATA"), "data `dir` (overrides data_dir; env SEALPOST_DATA)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: sealpost serve [--config FILE] [--dev] [--webhook URL] [--data DIR]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitError{code: 0}
		}
		return exitError{code: 2}
	}
	if fs.NArg() > 0 {
		return usageError("serve: unexpected argument %q", fs.Arg(0))
	}
	var (
		cfg *Config
		dev *devSetup
		err error
	)
	switch {
	case f.config != "":
		if cfg, err = LoadConfig(f.config); err != nil {
			return err
		}
		if f.dataDir != "" {
			cfg.DataDir = f.dataDir
		}
	case f.dev:
		if cfg, dev, err = devConfig(f); err != nil {
			return err
		}
	default:
		return usageError("serve: pass --config FILE, or --dev for a zero-configuration gateway")
	}
	// Take SIGHUP before the (possibly long) start-up, so a reload signal
	// sent meanwhile does not end the process.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	g, err := newGateway(ctx, cfg, f.dev, dev, stderr)
	if err != nil {
		return err
	}
	return g.serve(ctx, stdout, hup)
}

// gateway is every running component, built in order by newGateway and
// stopped in reverse by shutdown.
type gateway struct {
	cfg    *Config
	log    *slog.Logger
	reg    *prometheus.Registry
	dev    *devSetup
	certs  *certStore
	sealer *kms.Envelope
	q      *queue.Conn
	// pub bundles accepted submissions into INGEST; ids mints their
	// receipt ids in groups.
	pub      *queue.Publisher
	ids      ingress.IDs
	keys     *keyring.Keyring
	auditLog *audit.Log
	blobs    *queue.Blobs // attachments and large bodies of mail
	objects  *queue.Objects
	mail     *mailParts // DNS cache, MTA-STS policy, TLS-RPT store (mail_wiring.go)
	// keyAudit passes the keyring's key.rotate and key.revoke entries to
	// auditLog, which is opened after the keyring (its checkpoints are
	// signed with keyring keys).
	keyAudit *keyringAuditor
	fwd      *forwarder.Worker
	consumer *queue.Consumer
	// tenantKeys holds each tenant's key (crypto-shredding); life runs
	// retention and backups.
	tenantKeys *queue.TenantKeys
	life       *lifecycle
	smtp       *smtpin.Server
	httpsSrv   *http.Server
	adminSrv   *http.Server
	// cat is the catalog of tenants, routes, endpoints, keys and
	// operators; api the HTTP API on it.
	cat *catalog.Catalog
	api *httpapi.API
	// idempotency remembers Idempotency-Key uses of the ingest API.
	idempotency *queue.Idempotency
	draining    atomic.Bool
	bg          sync.WaitGroup
	bgCtx       context.Context // ends when the gateway closes
	bgCancel    context.CancelFunc
	closers     []func()
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l, ReplaceAttr: logAttr}))
}

// newGateway builds every component in dependency order. On error it
// closes what it opened.
func newGateway(ctx context.Context, cfg *Config, devMode bool, dev *devSetup, stderr io.Writer) (_ *gateway, err error) {
	g := &gateway{cfg: cfg, dev: dev, log: newLogger(stderr, cfg.LogLevel)}
	defer func() {
		if err != nil {
			g.close()
		}
	}()
	g.reg = prometheus.NewRegistry()
	g.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), buildInfoGauge(readBuildInfo()))
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	if dev != nil {
		if err := writeFileAtomic(dev.adminTokenFile, []byte(dev.adminToken+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("admin token: %w", err)
		}
	}
	if err := g.openTLS(devMode); err != nil {
		return nil, err
	}
	if cfg.NATS.URL == "" {
		unlock, err := lockDataDir(cfg.DataDir, false)
		if err != nil {
			return nil, fmt.Errorf("data dir %s: %w", cfg.DataDir, err)
		}
		g.closers = append(g.closers, unlock)
	}
	g.q, err = queue.Open(ctx, queue.Config{
		URL: cfg.NATS.URL, CredsFile: cfg.NATS.CredsFile, DataDir: cfg.DataDir,
		ListenAddr: cfg.NATS.Listen, Replicas: cfg.NATS.Replicas, Logger: g.log,
		SyncInterval: time.Duration(cfg.NATS.SyncInterval),
	})
	if err != nil {
		return nil, err
	}
	g.closers = append(g.closers, g.q.Close)
	if err := g.openKMS(ctx); err != nil {
		return nil, err
	}
	if err := g.reg.Register(g.q.Collector("")); err != nil {
		return nil, err
	}
	if g.pub, err = g.q.Publisher(g.sealer, queue.PublisherConfig{Logger: g.log, Registerer: g.reg}); err != nil {
		return nil, err
	}
	g.closers = append(g.closers, g.pub.Close)
	if need := requiredMaxPayload(cfg); need > g.q.MaxPayload() {
		return nil, fmt.Errorf("ingest.max_body_bytes %d needs queue messages of %d bytes, but the NATS server allows %d: raise max_payload on the NATS servers (max_payload: %s in nats-server.conf) or lower ingest.max_body_bytes",
			cfg.Ingest.MaxBodyBytes, need, g.q.MaxPayload(), payloadSetting(need))
	}
	bgCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	g.bgCtx, g.bgCancel = bgCtx, cancel
	if err := g.openKeyring(ctx, bgCtx); err != nil {
		return nil, err
	}
	if err := g.openAudit(ctx, bgCtx); err != nil {
		return nil, err
	}
	if err := g.auditConfig(ctx); err != nil {
		return nil, fmt.Errorf("audit: configuration changes: %w", err)
	}
	if err := g.openCatalog(ctx, bgCtx); err != nil {
		return nil, err
	}
	if err := g.openForwarder(ctx); err != nil {
		return nil, err
	}
	if err := g.openLifecycle(ctx); err != nil {
		return nil, err
	}
	g.goBackground(func() { g.life.run(bgCtx) })
	return g, nil
}

func (g *gateway) openTLS(devMode bool) error {
	certFile, keyFile := g.cfg.TLS.CertFile, g.cfg.TLS.KeyFile
	if certFile == "" {
		if !devMode {
			return errors.New("tls.cert_file and tls.key_file are required (or run with --dev for a self-signed certificate)")
		}
		var err error
		if certFile, keyFile, err = ensureDevCert(g.cfg.DataDir, time.Now()); err != nil {
			return fmt.Errorf("dev certificate: %w", err)
		}
		if g.dev != nil {
			g.dev.certFile = certFile
		}
	}
	var err error
	g.certs, err = newCertStore(certFile, keyFile)
	return err
}

func (g *gateway) openKMS(ctx context.Context) error {
	var kek kms.KEK
	switch g.cfg.KMS.Provider {
	case "local":
		l, err := kms.OpenLocal(g.cfg.DataDir)
		if err != nil {
			return err
		}
		kek = l
	case "aws":
		a, err := kms.NewAWS(ctx, kms.AWSConfig{KeyID: g.cfg.KMS.AWS.KeyID, Region: g.cfg.KMS.AWS.Region, Endpoint: g.cfg.KMS.AWS.Endpoint})
		if err != nil {
			return err
		}
		kek = a
	}
	tks, err := g.q.TenantKeys(ctx)
	if err != nil {
		return err
	}
	g.tenantKeys = tks
	env, err := kms.New(kms.Config{
		KEK: kek, Logger: g.log, Registerer: g.reg, TenantKeys: tks,
		MaxAge: time.Duration(g.cfg.KMS.CacheMaxAge), MaxUses: g.cfg.KMS.CacheMaxUses,
	})
	if err != nil {
		return err
	}
	g.sealer = env
	return nil
}

func (g *gateway) openKeyring(ctx, bgCtx context.Context) error {
	kv, err := g.q.KV(ctx, queue.KVConfig{Bucket: "KEYRING", History: 16})
	if err != nil {
		return err
	}
	g.keyAudit = &keyringAuditor{}
	g.keys, err = keyring.New(ctx, keyring.Config{
		Store:  keyring.MapStoreErrors(kv, queue.ErrNotFound, queue.ErrConflict),
		Sealer: g.sealer, Logger: g.log, Registerer: g.reg, Auditor: g.keyAudit,
		PeriodMonths: g.cfg.Keys.PeriodMonths,
		PrePublish:   time.Duration(g.cfg.Keys.PrePublish),
		Grace:        time.Duration(g.cfg.Keys.Grace),
	})
	if err != nil {
		return fmt.Errorf("keyring: %w", err)
	}
	g.goBackground(func() { g.keys.Run(bgCtx) })
	return nil
}

// appendAudit records an entry of the gateway's own (a reload, a backup)
// without holding the caller up; a failure is logged.
func (g *gateway) appendAudit(ctx context.Context, e audit.Entry) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), httpapi.RequestAuditTimeout)
	defer cancel()
	if err := g.auditLog.AppendAsync(ctx, e); err != nil {
		g.log.Error("audit append failed", "action", e.Action, "err", err)
	}
}

func (g *gateway) goBackground(fn func()) {
	g.bg.Add(1)
	go func() {
		defer g.bg.Done()
		fn()
	}()
}

func (g *gateway) serve(ctx context.Context, stdout io.Writer, hup <-chan os.Signal) error {
	lns, err := g.listen()
	if err != nil {
		g.close()
		return err
	}
	g.consumer, err = g.q.Consume(ctx, queue.ConsumerConfig{
		Workers: g.cfg.Forward.Workers, MaxAckPending: g.cfg.Forward.MaxUnacked, Logger: g.log, Registerer: g.reg,
		Quarantined: func(ctx context.Context, tenant, id, class string) error {
			return g.auditLog.Append(ctx, audit.Entry{Actor: "system", Action: audit.ActionQuarantined, Tenant: tenant, Target: id,
				Outcome: audit.OutcomeFailure, Details: map[string]string{"class": class}})
		},
	}, g.sealer, g.fwd.Handle)
	if err != nil {
		for _, ln := range []net.Listener{lns.https, lns.smtp, lns.admin} {
			if ln != nil {
				ln.Close()
			}
		}
		g.close()
		return err
	}
	errc := make(chan error, 3)
	go func() { errc <- serveHTTP(g.adminSrv, lns.admin) }()
	go func() { errc <- serveHTTPS(g.httpsSrv, lns.https) }()
	if lns.smtp != nil {
		go func() { errc <- g.smtp.Serve(lns.smtp) }()
	}
	g.announce(stdout, lns)
	for {
		select {
		case <-hup:
			err := g.certs.reload()
			if err != nil {
				g.log.Error("certificate reload failed; keeping the previous one", "err", err)
			} else {
				g.log.Info("certificate reloaded")
			}
			g.appendAudit(ctx, audit.Entry{Actor: "signal", Action: audit.ActionConfigReload, Target: "tls", Outcome: outcomeOf(err)})
			continue
		case err = <-errc:
			g.log.Error("listener failed", "err", err)
		case <-ctx.Done():
			g.log.Info("shutting down")
		}
		break
	}
	g.shutdown()
	return err
}

// serveHTTPS serves TLS with the server's TLSConfig (certificate from the
// reloadable store).
func serveHTTPS(s *http.Server, ln net.Listener) error {
	if err := s.ServeTLS(ln, "", ""); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func serveHTTP(s *http.Server, ln net.Listener) error {
	if err := s.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Budgets of the graceful shutdown: listeners drain first, then in-flight
// deliveries finish (a webhook attempt takes at most forward.timeout).
const (
	drainTimeout   = 20 * time.Second
	deliverTimeout = 30 * time.Second
)

// shutdown stops accepting, lets in-flight requests and deliveries finish,
// flushes the audit log and closes NATS.
func (g *gateway) shutdown() {
	g.draining.Store(true) // /readyz answers 503 from now on
	drain, cancel := context.WithTimeout(context.Background(), drainTimeout)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = g.httpsSrv.Shutdown(drain) }()
	go func() {
		defer wg.Done()
		if g.smtp != nil {
			_ = g.smtp.Shutdown(drain)
		}
	}()
	wg.Wait()
	cancel()
	if g.consumer != nil {
		deliver, cancel := context.WithTimeout(context.Background(), deliverTimeout)
		g.consumer.Stop(deliver)
		cancel()
	}
	adm, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_ = g.adminSrv.Shutdown(adm)
	cancel()
	g.close()
	g.log.Info("stopped")
}

// close releases everything in reverse order of opening: background loops
// (key rotation, checkpoints) first, then the audit log is flushed, then
// NATS closes.
func (g *gateway) close() {
	if g.bgCancel != nil {
		g.bgCancel()
		g.bg.Wait()
		g.bgCancel = nil
	}
	if g.auditLog != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := g.auditLog.Close(ctx); err != nil {
			g.log.Error("audit flush", "err", err)
		}
		cancel()
		g.auditLog = nil
	}
	for i := len(g.closers) - 1; i >= 0; i-- {
		g.closers[i]()
	}
	g.closers = nil
}

type listeners struct {
	https, smtp, admin net.Listener
}

func (g *gateway) listen() (l listeners, err error) {
	defer func() {
		if err != nil {
			for _, ln := range []net.Listener{l.https, l.smtp, l.admin} {
				if ln != nil {
					ln.Close()
				}
			}
		}
	}()
	if l.admin, err = net.Listen("tcp", g.cfg.Listen.Admin); err != nil {
		return l, fmt.Errorf("listen.admin: %w", err)
	}
	if g.dev != nil && g.dev.defaultWebhook {
		g.cat.SetDeclaredURL(devTenant, devRoute, catalog.DefaultEndpoint, "http://"+l.admin.Addr().String()+httpapi.DevReceiverPath)
	}
	if l.https, err = net.Listen("tcp", g.cfg.Listen.HTTPS); err != nil {
		return l, fmt.Errorf("listen.https: %w", err)
	}
	if g.cfg.Listen.SMTP != "off" {
		if l.smtp, err = net.Listen("tcp", g.cfg.Listen.SMTP); err != nil {
			return l, fmt.Errorf("listen.smtp: %w", err)
		}
	}
	if err := g.buildServers(); err != nil {
		return l, err
	}
	return l, nil
}

func (g *gateway) announce(w io.Writer, l listeners) {
	g.logStarted(l)
	fmt.Fprintf(w, "sealpost %s\n", readBuildInfo().version)
	fmt.Fprintf(w, "  https  listening on %s\n", l.https.Addr())
	if l.smtp != nil {
		fmt.Fprintf(w, "  smtp   listening on %s (STARTTLS required)\n", l.smtp.Addr())
	}
	fmt.Fprintf(w, "  admin  listening on %s (/healthz /readyz /metrics /admin/)\n", l.admin.Addr())
	fmt.Fprintf(w, "  data   %s\n", absPath(g.cfg.DataDir))
	if g.dev != nil {
		g.dev.announce(w, l)
	}
}

func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}
