package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/sealpost/sealpost/audit"
	"github.com/sealpost/sealpost/ingress/httpapi"
	"github.com/sealpost/sealpost/ingress/httpin"
	"github.com/sealpost/sealpost/queue/backup"
)

// Limits of the HTTP servers.
const (
	maxHeaderBytes    = 32 << 10
	readHeaderTimeout = 10 * time.Second
	readTimeout       = 60 * time.Second
	writeTimeout      = 60 * time.Second
	idleTimeout       = 120 * time.Second
)

// buildServers makes the HTTPS (ingest and tenant API), admin and SMTP
// servers on the HTTP API. Listeners are bound by the caller.
func (g *gateway) buildServers() error {
	if err := g.mountMail(); err != nil {
		return err
	}
	var api *httpapi.API
	ingest, err := httpin.New(httpin.Config{
		Enqueuer: g.enqueuer(), Keys: g.cat, Routes: g.cat, NewID: g.ids.New,
		Auditor:     auditorFunc(func(ctx context.Context, e audit.Entry) error { return api.RequestAuditor().Append(ctx, e) }),
		Idempotency: g.idempotency,
		Authenticated: func(r *http.Request, key *httpin.APIKey) {
			httpapi.NoteCaller(r, "apikey:"+key.ID, key.Tenant)
		},
		MaxBodyBytes: g.cfg.Ingest.MaxBodyBytes, RatePerSecond: g.cfg.Ingest.RatePerSecond, Burst: g.cfg.Ingest.Burst,
		Logger: g.log,
	})
	if err != nil {
		return err
	}
	if err := g.shareLimits(ingest, g.fwd); err != nil {
		return err
	}
	opt := httpapi.Optional{Metrics: metricsHandler(g.reg)}
	if g.mail.policy != nil {
		opt.MTASTSPolicy = g.mail.policy
	}
	if g.mail.reports != nil {
		if g.cfg.SMTP.TLSRPT.HTTPS {
			opt.TLSReport = g.mail.reportHandler
		}
		opt.TLSReports, opt.TLSReportGet = g.mail.reports.ListHandler(), g.mail.reports.GetHandler()
	}
	if g.dev != nil {
		opt.DevReceiver = devReceiver(g.log, g.devKeySet)
	}
	sso, err := g.cfg.ssoConfig()
	if err != nil {
		return err
	}
	api, err = httpapi.New(httpapi.Config{
		Catalog: g.cat, Forwarder: g.fwd, Audit: g.auditLog, Keys: g.keys, Ingest: ingest, Blobs: g.blobs,
		Ops: gatewayOps{g}, Optional: opt, AdminTokenSHA256: g.cfg.Admin.TokenSHA256, SSO: sso,
		AllowNets: g.cfg.allowNets(), CheckpointEvery: time.Duration(g.cfg.Audit.CheckpointEvery),
		Logger: g.log, Registerer: g.reg,
	})
	if err != nil {
		return err
	}
	g.api = api
	g.httpsSrv = &http.Server{
		Handler:           api.HTTPS(),
		TLSConfig:         g.certs.serverTLS(),
		ReadHeaderTimeout: readHeaderTimeout, ReadTimeout: readTimeout, WriteTimeout: writeTimeout,
		IdleTimeout: idleTimeout, MaxHeaderBytes: maxHeaderBytes,
		ErrorLog: slogErrorLog(g.log),
	}
	g.adminSrv = &http.Server{
		Handler:           api.Admin(),
		ReadHeaderTimeout: readHeaderTimeout, ReadTimeout: readTimeout, WriteTimeout: 10 * time.Minute,
		IdleTimeout: idleTimeout, MaxHeaderBytes: maxHeaderBytes,
		ErrorLog: slogErrorLog(g.log),
	}
	return g.buildSMTP()
}

// auditorFunc adapts a function to httpin.Auditor.
type auditorFunc func(ctx context.Context, e audit.Entry) error

func (f auditorFunc) Append(ctx context.Context, e audit.Entry) error { return f(ctx, e) }

// gatewayOps are the whole-gateway operations of the API.
type gatewayOps struct{ g *gateway }

var _ httpapi.Operations = gatewayOps{}

func (o gatewayOps) DeleteTenant(ctx context.Context, actor, tenant string) error {
	return o.g.deleteTenant(ctx, actor, tenant)
}

func (o gatewayOps) ExportTenant(ctx context.Context, tenant string, w io.Writer) error {
	return o.g.exportTenant(ctx, tenant, w)
}

func (o gatewayOps) Backup(ctx context.Context) (any, error) {
	res, err := o.g.life.backup(ctx)
	if err != nil {
		return nil, err
	}
	return map[string]any{"snapshot": res.ID, "streams": res.Streams, "parts": res.Parts, "bytes": res.Bytes}, nil
}

func (o gatewayOps) Backups(ctx context.Context) ([]string, error) {
	if len(o.g.life.targets) == 0 {
		return nil, errors.Join(httpapi.ErrNotConfigured, errors.New("no backup location: set backup.s3.bucket"))
	}
	return backup.List(ctx, o.g.life.targets[0])
}

func (o gatewayOps) Ready(ctx context.Context) error {
	g := o.g
	if g.draining.Load() {
		return errors.New("shutting down")
	}
	if g.consumer != nil && !g.consumer.Alive() {
		return errors.New("delivery worker not consuming")
	}
	return g.q.Ready(ctx)
}
