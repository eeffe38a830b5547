package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sealpost/sealpost/audit"
	"github.com/sealpost/sealpost/forwarder"
	"github.com/sealpost/sealpost/ingress"
	"github.com/sealpost/sealpost/ingress/smtpin"
	"github.com/sealpost/sealpost/queue"
	"github.com/sealpost/sealpost/signer"
)

func (g *gateway) openAudit(ctx, bgCtx context.Context) error {
	policy, err := g.cfg.witnessPolicy()
	if err != nil {
		return fmt.Errorf("audit.witnesses: %w", err)
	}
	var outside audit.CheckpointSink
	if d := g.cfg.Audit.Outside.Dir; d != "" {
		outside = &audit.DirSink{Dir: d}
	}
	l, err := audit.Open(ctx, audit.Config{
		Conn: g.q, Keys: g.keys, Origin: g.cfg.Audit.Origin,
		Retention:       time.Duration(g.cfg.Audit.Retention),
		CheckpointEvery: time.Duration(g.cfg.Audit.CheckpointEvery),
		Outside:         outside, Witnesses: policy, WitnessTimeout: time.Duration(g.cfg.Audit.Witnesses.Timeout),
		Logger: g.log, Registerer: g.reg,
	})
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	g.auditLog = l
	g.checkAudit(ctx)
	g.goBackground(func() { l.Run(bgCtx) })
	if err := g.keyAudit.attach(ctx, l); err != nil {
		return fmt.Errorf("audit: key entries of start-up: %w", err)
	}
	return nil
}

// maxEarlyKeyEntries bounds the keyring entries held before the audit log
// opens: at most a first key and the next period's key are made at start-up.
const maxEarlyKeyEntries = 16

// keyringAuditor is the keyring's Auditor. Until the audit log is open it
// holds the entries of start-up (a first or overdue key, made while the
// keyring loads) and appends them when attached.
type keyringAuditor struct {
	mu    sync.Mutex
	log   *audit.Log
	early []audit.Entry
	// rotated is told the kid of each new signing key (operational
	// webhooks' signing_key.rotated), once the worker exists.
	rotated func(kid string)
}

func (a *keyringAuditor) Append(ctx context.Context, e audit.Entry) error {
	if e.Action == audit.ActionKeyRotate && e.Outcome == audit.OutcomeSuccess {
		a.mu.Lock()
		rotated := a.rotated
		a.mu.Unlock()
		if rotated != nil {
			rotated(e.Target)
		}
	}
	a.mu.Lock()
	l := a.log
	if l == nil {
		defer a.mu.Unlock()
		if len(a.early) >= maxEarlyKeyEntries {
			return errors.New("audit log not open yet")
		}
		a.early = append(a.early, e)
		return nil
	}
	a.mu.Unlock()
	return l.Append(ctx, e)
}

func (a *keyringAuditor) attach(ctx context.Context, l *audit.Log) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.log = l
	early := a.early
	a.early = nil
	if len(early) == 0 {
		return nil
	}
	return l.AppendAll(ctx, early...)
}

func (g *gateway) openForwarder(ctx context.Context) error {
	receipts, err := g.q.Stream(ctx, forwarder.ReceiptsStream)
	if err != nil {
		return err
	}
	dlq, err := g.q.Stream(ctx, forwarder.DeadLetterStream)
	if err != nil {
		return err
	}
	attempts, err := g.q.Stream(ctx, forwarder.AttemptsStream)
	if err != nil {
		return err
	}
	state, err := g.q.KV(ctx, forwarder.EndpointStateBucket)
	if err != nil {
		return err
	}
	idem, err := g.q.KV(ctx, queue.KVConfig{Bucket: "IDEMPOTENCY", TTL: 24 * time.Hour})
	if err != nil {
		return err
	}
	g.idempotency = queue.NewIdempotency(idem)
	objects, err := g.q.Objects(ctx, queue.ObjectsConfig{Bucket: "ATTACHMENTS"})
	if err != nil {
		return err
	}
	g.blobs, g.objects = queue.NewBlobs(objects, g.sealer), objects
	opCfg := forwarder.OpEventsQueue
	opCfg.Logger = g.log
	opEvents, err := g.q.WorkQueue(ctx, opCfg)
	if err != nil {
		return err
	}
	routes := g.cat.ForwarderRoutes()
	g.fwd, err = forwarder.New(forwarder.Config{
		Routes: routes, OpWebhooks: routes.(forwarder.OpWebhooks), OpEvents: opEvents, Keys: g.keys, Sealer: g.sealer, Auditor: g.auditLog,
		Receipts: receipts, DeadLetters: dlq, Attempts: attempts, EndpointState: state,
		Attachments: objects, Retention: g.cat,
		MaxMessageBytes: int(g.q.MaxPayload()),
		Schedule:        g.cfg.Forward.schedule(), Timeout: time.Duration(g.cfg.Forward.Timeout), AllowNets: g.cfg.allowNets(),
		BreakerFailures: g.cfg.Forward.BreakerFailures, BreakerCooldown: time.Duration(g.cfg.Forward.BreakerCooldown),
		Logger: g.log, Registerer: g.reg,
	})
	if err != nil {
		return fmt.Errorf("forwarder: %w", err)
	}
	if err := g.fwd.Watch(g.bgCtx); err != nil {
		return err
	}
	g.fwd.RunOpEvents(g.bgCtx)
	g.closers = append(g.closers, g.fwd.StopOpEvents)
	g.keyAudit.mu.Lock()
	g.keyAudit.rotated = g.fwd.KeyRotated
	g.keyAudit.mu.Unlock()
	return nil
}

func (g *gateway) buildSMTP() error {
	if g.cfg.Listen.SMTP == "off" {
		return nil
	}
	kv, err := g.q.KV(context.Background(), smtpDedupBucket)
	if err != nil {
		return err
	}
	dedup := queue.NewIdempotency(kv)
	host := g.cfg.SMTP.Hostname
	if host == "" {
		host, _ = os.Hostname()
	}
	cfg := smtpin.Config{
		Hostname: host, TLSConfig: g.certs.serverTLS(), Routes: g.cfg.smtpRoutes(), MoreRoutes: g.cat,
		Enqueuer: g.enqueuer(), Blobs: g.blobs, Dedup: dedup, NewID: g.ids.New,
		Logger: g.log, Registerer: g.reg,
		MaxMessageBytes: g.cfg.SMTP.MaxMessageBytes, MaxRecipients: g.cfg.SMTP.MaxRecipients,
		MaxConnsPerIP:  g.cfg.SMTP.MaxConnsPerIP,
		CommandTimeout: time.Duration(g.cfg.SMTP.CommandTimeout), DataTimeout: time.Duration(g.cfg.SMTP.DataTimeout),
		MaxConns: g.cfg.SMTP.MaxConns, MaxHeaderBytes: g.cfg.SMTP.MaxHeaderBytes,
		MaxMIMEDepth: g.cfg.SMTP.MaxMIMEDepth, MaxMIMEParts: g.cfg.SMTP.MaxMIMEParts,
		InlineAttachmentMax: g.cfg.SMTP.InlineAttachmentBytes,
		// Payloads above this go to the object store in parts; it must
		// leave room for the submission around it in one queue message.
		MaxPayloadBytes: min(smtpin.DefaultMaxPayloadBytes, int(g.q.MaxPayload())-64<<10),
	}
	if err := g.mailConfig(&cfg); err != nil {
		return err
	}
	g.smtp, err = smtpin.New(cfg)
	return err
}

// enqueuer is what both ingresses hand submissions to: the sealing
// publisher with the message's audit entries around it.
func (g *gateway) enqueuer() ingress.Enqueuer {
	return &audit.Enqueuer{Next: g.pub, Log: g.auditLog, Logger: g.log}
}

// smtpDedupBucket remembers the receipt ids of mail for a week, longer than
// sending servers retry (RFC 5321 suggests 4-5 days).
var smtpDedupBucket = queue.KVConfig{Bucket: "SMTP_DEDUP", TTL: 7 * 24 * time.Hour}

func (g *gateway) devKeySet() *signer.KeySet { return g.keys.KeySet(time.Now(), true) }

func metricsHandler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg, MaxRequestsInFlight: 4})
}

// slogErrorLog routes net/http's internal errors (TLS handshake failures,
// bad requests) to the structured log at debug level.
func slogErrorLog(l *slog.Logger) *log.Logger {
	return slog.NewLogLogger(l.Handler(), slog.LevelDebug)
}

func outcomeOf(err error) string {
	if err != nil {
		return audit.OutcomeFailure
	}
	return audit.OutcomeSuccess
}
