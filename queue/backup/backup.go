// Package backup writes sealed snapshots of sealpost's store to
// S3-compatible object storage and restores them.
//
// A snapshot is JetStream's own snapshot of every stream (the key-value
// buckets and object stores are streams too), taken through queue.Conn's
// snapshot API, so sequences, message times and consumer state come back
// exactly: the audit log verifies against its checkpoints after a restore,
// and the delivery consumer resumes where it was. Streams are taken one
// after the other, INGEST first: a message accepted before the snapshot
// started is either in INGEST's snapshot or was delivered, and then its
// receipt is in the later RECEIPTS snapshot. Nothing accepted before the
// snapshot is lost; a message handled while the snapshot ran may be
// delivered again after a restore (delivery is at least once).
//
// Everything written is sealed (kms purpose "backup", tenant "_system")
// in parts of at most PartSize bytes, each bound to its snapshot, stream
// and position by the encryption context. Layout under the target's
// prefix:
//
//	snapshots/<id>/<stream>/<part>.sps   sealed parts of a stream's snapshot
//	snapshots/<id>/manifest.sps          sealed manifest, written last
//	tenant-keys/<tenant>.sps             sealed tenant key records
//
// The manifest lists every part with its size and SHA-256, the streams'
// state, the tenant keys the snapshot needs, and the newest signed audit
// checkpoint at the time of the snapshot. A snapshot without a manifest is
// incomplete and never restored.
//
// Tenant keys are not in the snapshots: each tenant's key record is one
// object, replaced on every backup and erased (every version) when the
// tenant is deleted. Destroying a tenant key therefore makes the tenant's
// data unreadable in every snapshot ever taken (crypto-shredding).
package backup

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/sealpost/sealpost/keyring/kms"
	"github.com/sealpost/sealpost/queue"
)

// PurposeBackup is the kms purpose of backup objects.
const PurposeBackup = "backup"

// sealTenant is the encryption-context tenant of backup objects.
const sealTenant = "_system"

// PartSize is the most plaintext one sealed part holds.
const PartSize = 8 << 20

// maxManifest bounds a manifest, in bytes.
const maxManifest = 64 << 20

// manifestVersion is the manifest format.
const manifestVersion = 1

// Manifest describes one snapshot.
type Manifest struct {
	V       int       `json:"v"`
	ID      string    `json:"id"`
	Started time.Time `json:"started"`
	Done    time.Time `json:"done"`
	Streams []Stream  `json:"streams"`
	// TenantKeys maps each tenant to the id of the key its data in this
	// snapshot is sealed under.
	TenantKeys map[string]string `json:"tenant_keys,omitempty"`
	// AuditCheckpoint is the newest record of the audit checkpoints
	// stream when the snapshot started, as stored (a signed note and the
	// tree's compact range); null when there was none.
	AuditCheckpoint json.RawMessage `json:"audit_checkpoint,omitempty"`
}

// Stream is one stream of a snapshot.
type Stream struct {
	Name string             `json:"name"`
	Info queue.SnapshotInfo `json:"info"`
	// Msgs, FirstSeq and LastSeq repeat the state, for people.
	Msgs     uint64 `json:"msgs"`
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
	Parts    []Part `json:"parts"`
}

// Part is one sealed part of a stream's snapshot.
type Part struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Config configures Backup.
type Config struct {
	// Conn is the store to snapshot. Required.
	Conn *queue.Conn
	// Sealer seals every object written. Required.
	Sealer queue.Sealer
	// Targets get every object, in order; the first is the primary and
	// the others copies (another bucket or region). At least one.
	Targets []*Target
	// TenantKeys holds the tenant keys to back up apart from the
	// snapshots. Optional: nil backs up none.
	TenantKeys *queue.TenantKeys
	// Skip names streams left out besides TENANT_KEYS (short-lived state
	// such as the instance registry and leases).
	Skip []string
	// CheckpointStream and CheckpointSubject locate the audit
	// checkpoints. Default "AUDIT_CHECKPOINTS" and "audit.checkpoints".
	CheckpointStream, CheckpointSubject string
	Logger                              *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Result is what Backup wrote.
type Result struct {
	ID       string
	Streams  int
	Parts    int
	Bytes    int64
	Manifest *Manifest
}

// Backup takes a snapshot of every stream and writes it, sealed, to every
// target, with the tenant keys beside it. The manifest is written last, so
// a backup that fails part-way leaves no restorable snapshot.
func Backup(ctx context.Context, c Config) (*Result, error) {
	if c.Conn == nil || c.Sealer == nil || len(c.Targets) == 0 {
		return nil, errors.New("backup: conn, sealer and a target are required")
	}
	if c.CheckpointStream == "" {
		c.CheckpointStream = "AUDIT_CHECKPOINTS"
	}
	if c.CheckpointSubject == "" {
		c.CheckpointSubject = "audit.checkpoints"
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	started := c.Now().UTC()
	m := &Manifest{V: manifestVersion, ID: NewID(started), Started: started}
	res := &Result{ID: m.ID, Manifest: m}
	names, err := c.Conn.StreamNames(ctx)
	if err != nil {
		return nil, err
	}
	skip := append([]string{queue.TenantKeysStream}, c.Skip...)
	names = slices.DeleteFunc(names, func(n string) bool { return slices.Contains(skip, n) })
	slices.SortFunc(names, func(a, b string) int {
		// INGEST first (see the package comment), the rest by name.
		switch {
		case a == queue.IngestStream:
			return -1
		case b == queue.IngestStream:
			return 1
		}
		return strings.Compare(a, b)
	})
	// The checkpoint is read before any stream is taken, so every entry it
	// covers is in the AUDIT snapshot.
	if slices.Contains(names, c.CheckpointStream) {
		cps, err := c.Conn.LookupStream(ctx, c.CheckpointStream)
		if err == nil {
			var last *queue.Msg
			last, err = cps.Last(ctx, c.CheckpointSubject)
			if err == nil {
				m.AuditCheckpoint = json.RawMessage(last.Data)
			}
		}
		if err != nil && !errors.Is(err, queue.ErrNotFound) {
			return nil, fmt.Errorf("backup: audit checkpoint: %w", err)
		}
	}
	if c.TenantKeys != nil {
		if m.TenantKeys, err = writeTenantKeys(ctx, c); err != nil {
			return nil, err
		}
	}
	for _, name := range names {
		st, err := snapshotStream(ctx, c, m.ID, name)
		if err != nil {
			return nil, err
		}
		m.Streams = append(m.Streams, *st)
		res.Streams++
		for _, p := range st.Parts {
			res.Parts++
			res.Bytes += p.Size
		}
		c.Logger.Debug("backup: stream written", "stream", name, "msgs", st.Msgs, "parts", len(st.Parts))
	}
	m.Done = c.Now().UTC()
	doc, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	if err := putSealed(ctx, c, "snapshots/"+m.ID+"/manifest.sps", m.ID+"/manifest", doc); err != nil {
		return nil, err
	}
	return res, nil
}

// NewID names a snapshot taken at t: its UTC time to the millisecond, so
// that names sort by time.
func NewID(t time.Time) string { return t.UTC().Format("20060102T150405.000Z") }

// putSealed seals data with object id oid and writes it to every target.
func putSealed(ctx context.Context, c Config, name, oid string, data []byte) error {
	sealed, err := c.Sealer.Seal(ctx, kms.Context{Tenant: sealTenant, Purpose: PurposeBackup, ObjectID: oid}, data)
	if err != nil {
		return fmt.Errorf("backup: seal %s: %w", name, err)
	}
	for _, t := range c.Targets {
		if err := t.put(ctx, name, sealed); err != nil {
			return err
		}
	}
	return nil
}

// writeTenantKeys writes each tenant's key record and returns the key ids.
func writeTenantKeys(ctx context.Context, c Config) (map[string]string, error) {
	recs, err := c.TenantKeys.All(ctx)
	if err != nil {
		return nil, fmt.Errorf("backup: tenant keys: %w", err)
	}
	ids := map[string]string{}
	for tenant, rec := range recs {
		id, err := kms.TenantKeyRecordID(rec)
		if err != nil {
			return nil, fmt.Errorf("backup: tenant key of %s: %w", tenant, err)
		}
		if err := putSealed(ctx, c, tenantKeyObject(tenant), "tenant-keys/"+tenant, rec); err != nil {
			return nil, err
		}
		ids[tenant] = id
	}
	return ids, nil
}

func tenantKeyObject(tenant string) string { return "tenant-keys/" + tenant + ".sps" }

// partWriter cuts a snapshot into sealed parts and writes each to every
// target as it fills.
type partWriter struct {
	ctx   context.Context
	c     Config
	id    string
	name  string
	buf   []byte
	parts []Part
}

func (w *partWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := min(len(p), PartSize-len(w.buf))
		w.buf = append(w.buf, p[:k]...)
		p = p[k:]
		if len(w.buf) == PartSize {
			if err := w.flush(); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

func (w *partWriter) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	idx := len(w.parts) + 1
	oid := partOID(w.id, w.name, idx)
	sealed, err := w.c.Sealer.Seal(w.ctx, kms.Context{Tenant: sealTenant, Purpose: PurposeBackup, ObjectID: oid}, w.buf)
	if err != nil {
		return fmt.Errorf("backup: seal %s: %w", oid, err)
	}
	name := "snapshots/" + oid + ".sps"
	for _, t := range w.c.Targets {
		if err := t.put(w.ctx, name, sealed); err != nil {
			return err
		}
	}
	sum := sha256.Sum256(sealed)
	w.parts = append(w.parts, Part{Name: name, Size: int64(len(sealed)), SHA256: hex.EncodeToString(sum[:])})
	w.buf = w.buf[:0]
	return nil
}

func partOID(id, stream string, idx int) string {
	return id + "/" + stream + "/" + fmt.Sprintf("%06d", idx)
}

func snapshotStream(ctx context.Context, c Config, id, name string) (*Stream, error) {
	w := &partWriter{ctx: ctx, c: c, id: id, name: name, buf: make([]byte, 0, PartSize)}
	info, err := c.Conn.Snapshot(ctx, name, w)
	if err == nil {
		err = w.flush()
	}
	if err != nil {
		return nil, fmt.Errorf("backup: stream %s: %w", name, err)
	}
	st, err := info.StreamSummary()
	if err != nil {
		return nil, err
	}
	return &Stream{Name: name, Info: info, Msgs: st.Msgs, FirstSeq: st.FirstSeq, LastSeq: st.LastSeq, Parts: w.parts}, nil
}

// partReader reads a stream's parts from a target in order, checking each
// against the manifest and opening it.
type partReader struct {
	ctx    context.Context
	t      *Target
	sealer queue.Sealer
	id     string
	st     Stream
	next   int
	cur    []byte
}

func (r *partReader) Read(p []byte) (int, error) {
	for len(r.cur) == 0 {
		if r.next >= len(r.st.Parts) {
			return 0, io.EOF
		}
		part := r.st.Parts[r.next]
		r.next++
		sealed, err := r.t.get(r.ctx, part.Name, part.Size)
		if err != nil {
			return 0, err
		}
		sum := sha256.Sum256(sealed)
		if int64(len(sealed)) != part.Size || hex.EncodeToString(sum[:]) != part.SHA256 {
			return 0, fmt.Errorf("backup: %s does not match the manifest", part.Name)
		}
		oid := partOID(r.id, r.st.Name, r.next)
		if r.cur, err = r.sealer.Open(r.ctx, kms.Context{Tenant: sealTenant, Purpose: PurposeBackup, ObjectID: oid}, sealed); err != nil {
			return 0, fmt.Errorf("backup: open %s: %w", part.Name, err)
		}
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}
