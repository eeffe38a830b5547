package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sealpost/sealpost/audit"
	"github.com/sealpost/sealpost/forwarder"
	"github.com/sealpost/sealpost/ingress"
	"github.com/sealpost/sealpost/ingress/httpin"
	"github.com/sealpost/sealpost/ingress/smtpin"
	"github.com/sealpost/sealpost/keyring/kms"
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
}

func (a *keyringAuditor) Append(ctx context.Context, e audit.Entry) error {
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
	g.idempotency = &idempotencyStore{kv: idem}
	objects, err := g.q.Objects(ctx, queue.ObjectsConfig{Bucket: "ATTACHMENTS"})
	if err != nil {
		return err
	}
	g.blobs = &blobStore{objects: objects, sealer: g.sealer}
	var allow []netip.Prefix
	for _, n := range g.cfg.Forward.AllowNetworks {
		allow = append(allow, netip.MustParsePrefix(n))
	}
	g.fwd, err = forwarder.New(forwarder.Config{
		Routes: &forwarder2httpRoutes{g.tables}, Keys: g.keys, Sealer: g.sealer, Auditor: g.auditLog,
		Receipts: receipts, DeadLetters: dlq, Attempts: attempts, EndpointState: state,
		Attachments: objects, Retention: newRetentionPolicy(g.cfg),
		MaxMessageBytes: int(g.q.MaxPayload()),
		Schedule:        g.cfg.Forward.schedule(), Timeout: time.Duration(g.cfg.Forward.Timeout), AllowNets: allow,
		BreakerFailures: g.cfg.Forward.BreakerFailures, BreakerCooldown: time.Duration(g.cfg.Forward.BreakerCooldown),
		Logger: g.log, Registerer: g.reg,
	})
	if err != nil {
		return fmt.Errorf("forwarder: %w", err)
	}
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
	dedup := smtpDedup{&idempotencyStore{kv: kv}}
	host := g.cfg.SMTP.Hostname
	if host == "" {
		host, _ = os.Hostname()
	}
	cfg := smtpin.Config{
		Hostname: host, TLSConfig: g.certs.serverTLS(), Routes: g.tables.smtp,
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
// publisher, with message.received recorded before and message.queued once
// the queue acknowledged.
func (g *gateway) enqueuer() ingress.Enqueuer {
	return &auditedEnqueuer{next: g.pub, audit: g.auditLog, log: g.log}
}

type auditedEnqueuer struct {
	next  ingress.Enqueuer
	audit interface {
		Append(ctx context.Context, e audit.Entry) error
		AppendAsync(ctx context.Context, es ...audit.Entry) error
		Consistent() error
	}
	log *slog.Logger
}

func (a *auditedEnqueuer) Enqueue(ctx context.Context, s *ingress.Submission) error {
	// Nothing is accepted into a log that failed its integrity check:
	// senders retry (451, 503) until an operator has dealt with it.
	if a.audit.Consistent() != nil {
		return fmt.Errorf("%w: ingest suspended: the audit log failed its integrity check", ingress.ErrUnavailable)
	}
	details := map[string]string{"route": s.Route, "channel": s.Channel, "raw_size": strconv.FormatInt(s.RawSize, 10)}
	// No message is accepted without its "received" entry: when the audit
	// log cannot take it, the sender gets a temporary failure and retries.
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), requestAuditTimeout)
	err := a.audit.Append(actx, audit.Entry{Time: s.ReceivedAt, Actor: s.Channel, Action: audit.ActionReceived,
		Tenant: s.Tenant, Target: s.ID, Outcome: audit.OutcomeSuccess, Details: details})
	cancel()
	if err != nil {
		return ingress.Temporary(fmt.Errorf("audit: %w", err))
	}
	if err := a.next.Enqueue(ctx, s); err != nil {
		return err
	}
	// The message is durable now. Its "queued" entry is written without
	// holding up the answer; a failure is logged and counted, and does not
	// turn an accepted message into a retry (the worker's "signed" entry
	// follows in any case).
	actx, cancel = context.WithTimeout(context.WithoutCancel(ctx), requestAuditTimeout)
	defer cancel()
	if err := a.audit.AppendAsync(actx, audit.Entry{Actor: s.Channel, Action: audit.ActionQueued, Tenant: s.Tenant,
		Target: s.ID, Outcome: audit.OutcomeSuccess, Details: details}); err != nil {
		a.log.Error("audit append failed", "action", audit.ActionQueued, "id", s.ID, "err", err)
	}
	return nil
}

// blobStore seals attachments into the ATTACHMENTS object store under
// "<tenant>/<name>"; the ref in the payload is "attachments/<tenant>/<name>".
type blobStore struct {
	objects *queue.Objects
	sealer  *kms.Envelope
}

// blobNamePattern is a blob's name: base64url (unpadded) SHA-256.
var blobNamePattern = regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`)

// getBlob opens a tenant's stored attachment or body. An unknown name, a
// name of another tenant and a malformed name are all queue.ErrNotFound.
func (b *blobStore) getBlob(ctx context.Context, tenant, name string) ([]byte, error) {
	if !blobNamePattern.MatchString(name) {
		return nil, queue.ErrNotFound
	}
	obj := tenant + "/" + name
	sealed, err := b.objects.Get(ctx, obj)
	if err != nil {
		return nil, err
	}
	return b.sealer.Open(ctx, kms.Context{Tenant: tenant, Purpose: kms.PurposeAttachment, ObjectID: obj}, sealed)
}

// getAttachment serves GET /v1/attachments/{tenant}/{name}, the path of a
// payload's "ref" under /v1/: the stored bytes, opened, for the tenant that
// owns them.
func (g *gateway) getAttachment(w http.ResponseWriter, r *http.Request) {
	tenant := tenantFrom(r.Context())
	name := r.PathValue("name")
	if r.PathValue("tenant") != tenant {
		name = "" // another tenant's: not found, like an unknown name
	}
	data, err := g.blobs.getBlob(r.Context(), tenant, name)
	if errors.Is(err, queue.ErrNotFound) {
		httpin.WriteProblem(w, httpin.Problem{Status: http.StatusNotFound, Type: "https://sealpost.dev/problems/not-found", Title: "Not found", Detail: "no such attachment"})
		return
	}
	if err != nil {
		g.writeAPIError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", "attachment")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	_, _ = w.Write(data)
}

func (b *blobStore) PutBlob(ctx context.Context, tenant, name string, data []byte) (string, error) {
	obj := tenant + "/" + name
	sealed, err := b.sealer.Seal(ctx, kms.Context{Tenant: tenant, Purpose: kms.PurposeAttachment, ObjectID: obj}, data)
	switch {
	case errors.Is(err, kms.ErrTooLarge):
		return "", fmt.Errorf("%w: %w", ingress.ErrTooLarge, err)
	case err != nil:
		// KMS unavailable or failing: the sender retries (451), the mail
		// must not bounce.
		return "", ingress.Temporary(err)
	}
	if err := b.objects.Put(ctx, obj, sealed); err != nil {
		return "", ingress.Temporary(err)
	}
	return "attachments/" + obj, nil
}

// smtpDedupBucket remembers the receipt ids of mail for a week, longer than
// sending servers retry (RFC 5321 suggests 4-5 days).
var smtpDedupBucket = queue.KVConfig{Bucket: "SMTP_DEDUP", TTL: 7 * 24 * time.Hour}

// smtpDedup is smtpin.Dedup on a KV bucket: a compare-and-set create.
type smtpDedup struct{ s *idempotencyStore }

func (d smtpDedup) Claim(ctx context.Context, key, id string) (string, error) {
	existing, err := d.s.Reserve(ctx, key, []byte(id))
	return string(existing), err
}

// idempotencyStore keeps Idempotency-Key records in a KV bucket with a 24h
// TTL; Reserve is a compare-and-set create.
type idempotencyStore struct{ kv *queue.KV }

func (s *idempotencyStore) Reserve(ctx context.Context, key string, rec []byte) ([]byte, error) {
	for range 3 {
		_, err := s.kv.Create(ctx, key, rec)
		if err == nil {
			return nil, nil
		}
		if !errors.Is(err, queue.ErrConflict) {
			return nil, err
		}
		existing, _, err := s.kv.Get(ctx, key)
		if errors.Is(err, queue.ErrNotFound) {
			continue // expired meanwhile
		}
		return existing, err
	}
	return nil, errors.New("idempotency record keeps changing")
}

func (s *idempotencyStore) Complete(ctx context.Context, key string, rec []byte) error {
	_, err := s.kv.Put(ctx, key, rec)
	return err
}

func (s *idempotencyStore) Release(ctx context.Context, key string) error {
	return s.kv.Delete(ctx, key)
}

func (g *gateway) devKeySet() *signer.KeySet { return g.keys.KeySet(time.Now(), true) }

func metricsHandler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg, MaxRequestsInFlight: 4})
}

// slogErrorLog routes net/http's internal errors (TLS handshake failures,
// bad requests) to the structured log at debug level.
func slogErrorLog(l *slog.Logger) *log.Logger {
	return slog.NewLogLogger(l.Handler(), slog.LevelDebug)
}

// receipt API: a tenant reads its receipts and attempts and asks for a
// redelivery.

func (g *gateway) getReceipt(w http.ResponseWriter, r *http.Request) {
	env, err := g.fwd.Receipt(r.Context(), tenantFrom(r.Context()), r.PathValue("id"))
	if err != nil {
		g.writeAPIError(w, notFoundAs(err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(env)
}

func notFoundAs(err error) error {
	if errors.Is(err, forwarder.ErrNotFound) {
		return fmt.Errorf("%w: %w", queue.ErrNotFound, err)
	}
	return err
}

func outcomeOf(err error) string {
	if err != nil {
		return audit.OutcomeFailure
	}
	return audit.OutcomeSuccess
}
