package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sealpost/sealpost/audit"
	"github.com/sealpost/sealpost/queue"
	"github.com/sealpost/sealpost/queue/backup"
	"github.com/sealpost/sealpost/signer"
)

// Data lifecycle: retention, deletion, backups. See docs/lifecycle.md.

// Audit actions of the data lifecycle.
const (
	actionTenantDeleted = "tenant.deleted"
	actionTenantExport  = "tenant.export"
	actionBackup        = "backup.created"
)

// lifecycleLeaseBucket holds the leases of the lifecycle jobs, so one
// instance of a cluster runs each.
var lifecycleLeaseBucket = queue.KVConfig{Bucket: "LIFECYCLE_LEASE"}

// Streams left out of backups: short-lived state rebuilt at start.
var backupSkip = []string{"KV_" + queue.InstancesBucket, "KV_" + audit.LeaseBucket, "KV_" + lifecycleLeaseBucket.Bucket}

// backupTargets returns the configured backup targets, primary first, and
// the write-once checkpoint store (nil when not configured).
func backupTargets(ctx context.Context, b BackupConfig) ([]*backup.Target, *backup.Checkpoints, error) {
	if b.S3.Bucket == "" {
		return nil, nil, nil
	}
	var ts []*backup.Target
	for _, c := range []S3Config{b.S3, b.Copy} {
		if c.Bucket == "" {
			continue
		}
		t, err := backup.NewTarget(ctx, targetConfig(c))
		if err != nil {
			return nil, nil, err
		}
		ts = append(ts, t)
	}
	var cps *backup.Checkpoints
	if b.Checkpoints.S3.Bucket != "" {
		t, err := backup.NewTarget(ctx, targetConfig(b.Checkpoints.S3))
		if err != nil {
			return nil, nil, err
		}
		if cps, err = backup.NewCheckpoints(backup.CheckpointsConfig{Target: t, Retain: time.Duration(b.Checkpoints.Retain), Mode: b.Checkpoints.Mode}); err != nil {
			return nil, nil, err
		}
	}
	return ts, cps, nil
}

func targetConfig(c S3Config) backup.TargetConfig {
	return backup.TargetConfig{Bucket: c.Bucket, Prefix: c.Prefix, Region: c.Region, Endpoint: c.Endpoint, PathStyle: c.PathStyle}
}

// lifecycle is the gateway's part that runs retention and backups.
type lifecycle struct {
	g           *gateway
	targets     []*backup.Target
	checkpoints *backup.Checkpoints
	leases      *queue.KV
	backups     *prometheus.CounterVec
	lastBackup  prometheus.Gauge
}

func (g *gateway) openLifecycle(ctx context.Context) error {
	ts, cps, err := backupTargets(ctx, g.cfg.Backup)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	kv, err := g.q.KV(ctx, lifecycleLeaseBucket)
	if err != nil {
		return err
	}
	l := &lifecycle{g: g, targets: ts, checkpoints: cps, leases: kv,
		backups: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sealpost_backups_total",
			Help: "Backups by outcome (ok, failed)."}, []string{"outcome"}),
		lastBackup: prometheus.NewGauge(prometheus.GaugeOpts{Name: "sealpost_backup_last_success_timestamp_seconds",
			Help: "When the last backup of this instance finished, unix seconds; 0 before the first."}),
	}
	if err := g.reg.Register(l.backups); err != nil {
		return err
	}
	if err := g.reg.Register(l.lastBackup); err != nil {
		return err
	}
	g.life = l
	return nil
}

// retentionEvery is how often expiry is counted: the window counted ahead.
const retentionEvery = 10 * time.Minute

// leaseTTL is how long a lifecycle lease lasts without renewal.
const lifecycleLeaseTTL = 30 * time.Second

// run holds the lifecycle leases and runs the jobs until ctx ends: the
// expiry count every 10 minutes, backups every backup.every.
func (l *lifecycle) run(ctx context.Context) {
	self := instanceName()
	retLease := l.leases.Lease("retention", self, lifecycleLeaseTTL, nil)
	bakLease := l.leases.Lease("backup", self, lifecycleLeaseTTL, nil)
	defer retLease.Release(context.Background())
	defer bakLease.Release(context.Background())
	every := time.Duration(*l.g.cfg.Backup.Every)
	var nextRet, nextBak time.Time
	tick := time.NewTicker(lifecycleLeaseTTL / 3)
	defer tick.Stop()
	for {
		now := time.Now()
		if held, _ := retLease.Hold(ctx); held && !now.Before(nextRet) {
			if err := l.g.fwd.CountExpiry(ctx, now.Add(retentionEvery)); err != nil {
				l.g.log.Error("retention: counting expiry failed", "err", err)
			}
			nextRet = now.Add(retentionEvery)
		}
		if len(l.targets) > 0 && every > 0 {
			if held, _ := bakLease.Hold(ctx); held {
				if nextBak.IsZero() {
					nextBak = now.Add(every)
				}
				if !now.Before(nextBak) {
					if _, err := l.backup(ctx); err != nil {
						l.g.log.Error("backup failed", "err", err)
					}
					nextBak = time.Now().Add(every)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// backup writes one snapshot to every target, stores its audit checkpoint
// write-once, prunes old snapshots and audits the result.
func (l *lifecycle) backup(ctx context.Context) (*backup.Result, error) {
	if len(l.targets) == 0 {
		return nil, errors.New("no backup location: set backup.s3.bucket")
	}
	g := l.g
	res, err := backup.Backup(ctx, backup.Config{Conn: g.q, Sealer: g.sealer, Targets: l.targets, TenantKeys: g.tenantKeys,
		Skip: backupSkip, Logger: g.log})
	if err == nil && l.checkpoints != nil && len(res.Manifest.AuditCheckpoint) > 0 {
		err = l.storeCheckpoint(ctx, res.Manifest.AuditCheckpoint)
	}
	details := map[string]string{}
	if res != nil {
		details = map[string]string{"snapshot": res.ID, "streams": strconv.Itoa(res.Streams), "bytes": strconv.FormatInt(res.Bytes, 10)}
	}
	if err != nil {
		l.backups.WithLabelValues("failed").Inc()
		details["error"] = signer.Truncate(err.Error(), 200)
		g.appendAudit(ctx, audit.Entry{Actor: "system", Action: actionBackup, Target: "backup", Outcome: audit.OutcomeFailure, Details: details})
		return nil, err
	}
	for _, t := range l.targets {
		deleted, err := backup.Prune(ctx, t, time.Duration(g.cfg.Backup.Keep), g.cfg.Backup.MinKeep, time.Now())
		if err != nil {
			g.log.Error("backup: pruning old snapshots failed", "target", t.String(), "err", err)
		}
		details["pruned"] = strconv.Itoa(len(deleted))
	}
	l.backups.WithLabelValues("ok").Inc()
	l.lastBackup.SetToCurrentTime()
	if err := g.auditLog.Append(ctx, audit.Entry{Actor: "system", Action: actionBackup, Target: "backup", Outcome: audit.OutcomeSuccess, Details: details}); err != nil {
		g.log.Error("audit append failed", "action", actionBackup, "err", err)
	}
	g.log.Info("backup written", "snapshot", res.ID, "streams", res.Streams, "bytes", res.Bytes)
	return res, nil
}

// storeCheckpoint puts a checkpoint record's signed note in the write-once
// bucket under its tree size, zero-padded so names sort by size.
func (l *lifecycle) storeCheckpoint(ctx context.Context, rec json.RawMessage) error {
	var r struct {
		Note string `json:"note"`
		Size uint64 `json:"size"`
	}
	if err := json.Unmarshal(rec, &r); err != nil || r.Note == "" {
		return fmt.Errorf("backup: audit checkpoint record: %v", err)
	}
	return l.checkpoints.PutCheckpoint(ctx, fmt.Sprintf("%020d", r.Size), []byte(r.Note))
}

// deleteTenant deletes a tenant on request: the deletion is recorded,
// the tenant's key is destroyed (everything sealed for it, in the store
// and in every backup, is unreadable from then on), its key is erased from
// the backup locations, and its data is removed from the store.
func (g *gateway) deleteTenant(ctx context.Context, actor, tenant string) error {
	if err := g.auditLog.Append(ctx, audit.Entry{Actor: actor, Action: actionTenantDeleted, Tenant: tenant, Target: tenant,
		Outcome: audit.OutcomeSuccess}); err != nil {
		return err
	}
	if err := g.sealer.DestroyTenant(ctx, tenant); err != nil {
		return err
	}
	if g.life != nil {
		for _, t := range g.life.targets {
			if err := backup.EraseTenantKey(ctx, t, tenant); err != nil {
				return err
			}
		}
	}
	return g.fwd.DeleteTenantData(ctx, tenant)
}
