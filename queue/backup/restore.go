package backup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/sealpost/sealpost/keyring/kms"
	"github.com/sealpost/sealpost/queue"
)

// ErrNoSnapshot reports a target without a complete snapshot (or without
// the one asked for).
var ErrNoSnapshot = errors.New("backup: no such snapshot")

// List returns the ids of the complete snapshots on t (those with a
// manifest), oldest first.
func List(ctx context.Context, t *Target) ([]string, error) {
	dirs, err := t.list(ctx, "snapshots/", "/")
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, d := range dirs {
		id := strings.TrimSuffix(strings.TrimPrefix(d, "snapshots/"), "/")
		if id == "" || strings.Contains(id, "/") {
			continue
		}
		names, err := t.list(ctx, "snapshots/"+id+"/manifest.sps", "")
		if err != nil {
			return nil, err
		}
		if len(names) > 0 {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids, nil
}

// ReadManifest reads and opens the manifest of snapshot id; an empty id
// reads the newest complete snapshot's.
func ReadManifest(ctx context.Context, t *Target, sealer queue.Sealer, id string) (*Manifest, error) {
	if id == "" {
		ids, err := List(ctx, t)
		if err != nil {
			return nil, err
		}
		if len(ids) == 0 {
			return nil, fmt.Errorf("%w on %s", ErrNoSnapshot, t)
		}
		id = ids[len(ids)-1]
	}
	if strings.ContainsAny(id, "/\\") || len(id) > 64 {
		return nil, fmt.Errorf("%w: %q is not a snapshot id", ErrNoSnapshot, id)
	}
	sealed, err := t.get(ctx, "snapshots/"+id+"/manifest.sps", maxManifest)
	if errors.Is(err, errNoObject) {
		return nil, fmt.Errorf("%w: %s on %s", ErrNoSnapshot, id, t)
	}
	if err != nil {
		return nil, err
	}
	doc, err := sealer.Open(ctx, kms.Context{Tenant: sealTenant, Purpose: PurposeBackup, ObjectID: id + "/manifest"}, sealed)
	if err != nil {
		return nil, fmt.Errorf("backup: open manifest of %s: %w", id, err)
	}
	var m Manifest
	if err := json.Unmarshal(doc, &m); err != nil {
		return nil, fmt.Errorf("backup: manifest of %s: %w", id, err)
	}
	if m.V != manifestVersion || m.ID != id {
		return nil, fmt.Errorf("backup: manifest of %s: version %d, id %q", id, m.V, m.ID)
	}
	return &m, nil
}

// RestoreConfig configures Restore.
type RestoreConfig struct {
	// Conn is the store to restore into, opened with queue.Config
	// NoDeclare: none of the snapshot's streams may exist. Required.
	Conn *queue.Conn
	// Sealer opens the backup (the same KEK that sealed it). Required.
	Sealer queue.Sealer
	// Target holds the snapshot. Required.
	Target *Target
	// ID names the snapshot; empty restores the newest.
	ID string
	// Replicas, when not 0, replaces every stream's replica count.
	Replicas int
	// TenantKeys receives the tenant keys kept beside the snapshots.
	// Optional: nil restores none.
	TenantKeys *queue.TenantKeys
	Logger     *slog.Logger
}

// RestoreResult is what Restore did.
type RestoreResult struct {
	Manifest *Manifest
	// TenantKeys is the number of tenant keys restored; Missing names the
	// tenants whose key the snapshot names but which no longer has one
	// (deleted since): their data stays unreadable.
	TenantKeys int
	Missing    []string
	Took       time.Duration
}

// Restore restores a snapshot and the tenant keys into an empty store.
func Restore(ctx context.Context, c RestoreConfig) (*RestoreResult, error) {
	if c.Conn == nil || c.Sealer == nil || c.Target == nil {
		return nil, errors.New("backup: restore: conn, sealer and target are required")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	start := time.Now()
	m, err := ReadManifest(ctx, c.Target, c.Sealer, c.ID)
	if err != nil {
		return nil, err
	}
	res := &RestoreResult{Manifest: m}
	for _, st := range m.Streams {
		r := &partReader{ctx: ctx, t: c.Target, sealer: c.Sealer, id: m.ID, st: st}
		if err := c.Conn.Restore(ctx, st.Info, c.Replicas, r); err != nil {
			return nil, fmt.Errorf("backup: restore %s of %s: %w", st.Name, m.ID, err)
		}
		c.Logger.Info("backup: stream restored", "stream", st.Name, "msgs", st.Msgs, "snapshot", m.ID)
	}
	if c.TenantKeys != nil {
		for tenant, id := range m.TenantKeys {
			sealed, err := c.Target.get(ctx, tenantKeyObject(tenant), 1<<20)
			if errors.Is(err, errNoObject) {
				res.Missing = append(res.Missing, tenant)
				continue
			}
			if err != nil {
				return nil, err
			}
			rec, err := c.Sealer.Open(ctx, kms.Context{Tenant: sealTenant, Purpose: PurposeBackup, ObjectID: "tenant-keys/" + tenant}, sealed)
			if err != nil {
				return nil, fmt.Errorf("backup: open tenant key of %s: %w", tenant, err)
			}
			if got, err := kms.TenantKeyRecordID(rec); err != nil || got != id {
				// Deleted and made again since: the snapshot's data of the
				// tenant was sealed under the destroyed key.
				res.Missing = append(res.Missing, tenant)
				continue
			}
			if _, err := c.TenantKeys.CreateTenantKey(ctx, tenant, rec); err != nil {
				return nil, fmt.Errorf("backup: restore tenant key of %s: %w", tenant, err)
			}
			res.TenantKeys++
		}
		slices.Sort(res.Missing)
	}
	res.Took = time.Since(start)
	return res, nil
}

// EraseTenantKey erases every version of tenant's key record on t: after
// it, no snapshot on t holds anything of the tenant that can be opened.
func EraseTenantKey(ctx context.Context, t *Target, tenant string) error {
	if tenant == "" || strings.ContainsAny(tenant, "/\\.") {
		return fmt.Errorf("backup: %q is not a tenant", tenant)
	}
	_, err := t.erase(ctx, tenantKeyObject(tenant))
	return err
}

// Prune deletes the snapshots on t older than keep, always keeping the
// newest minKeep, and returns the ids deleted. Incomplete snapshots (no
// manifest) older than keep are deleted too.
func Prune(ctx context.Context, t *Target, keep time.Duration, minKeep int, now time.Time) ([]string, error) {
	complete, err := List(ctx, t)
	if err != nil {
		return nil, err
	}
	dirs, err := t.list(ctx, "snapshots/", "/")
	if err != nil {
		return nil, err
	}
	protected := map[string]bool{}
	for i := len(complete) - 1; i >= 0 && len(complete)-i <= minKeep; i-- {
		protected[complete[i]] = true
	}
	cutoff := NewID(now.Add(-keep))
	var deleted []string
	for _, d := range dirs {
		id := strings.TrimSuffix(strings.TrimPrefix(d, "snapshots/"), "/")
		if id == "" || protected[id] || id >= cutoff {
			continue
		}
		if _, err := t.erase(ctx, "snapshots/"+id+"/"); err != nil {
			return deleted, err
		}
		deleted = append(deleted, id)
	}
	return deleted, nil
}
