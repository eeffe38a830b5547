package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/sealpost/sealpost/audit"
	"github.com/sealpost/sealpost/forwarder"
	"github.com/sealpost/sealpost/queue"
	"github.com/sealpost/sealpost/signer"
)

// A tenant export is one tar archive, streamed:
//
//	receipts/<id>.json          every receipt envelope, as delivered
//	attempts/<nnnnnn>.jsonl     every attempt record ({"id":..., "attempt":{...}}), in parts of up to 4 MiB
//	attachments/<sha256>        every attachment and body stored by reference, opened
//	audit.jsonl                 the tenant's audit entries with inclusion proofs (audit.Export)
//	manifest.json               format, tenant, time, and the SHA-256 and size of every file above
//	manifest.sig                Ed25519 signature of manifest.json by a receipt signing key
//
// Memory stays bounded: each file is built on its own (the audit export in
// a temporary file), and the manifest, which comes last, holds only names
// and digests. `sealpost export verify` checks an archive offline: the
// signature against a JWKS or key history, every digest, that no file is
// missing or added, every receipt's signature, and the audit proofs.

const (
	exportFormat = "sealpost-tenant-export/1"
	// maxAttemptsPart bounds one attempts file of an export.
	maxAttemptsPart = 4 << 20
	// maxExportFile bounds one file an export verifier reads into memory.
	maxExportFile = 64 << 20
)

type exportManifest struct {
	Format  string       `json:"format"`
	Tenant  string       `json:"tenant"`
	Created time.Time    `json:"created"`
	Files   []exportFile `json:"files"`
}

type exportFile struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

type exportSig struct {
	Alg string `json:"alg"`
	KID string `json:"kid"`
	Sig string `json:"sig"`
}

// exportWriter writes files into the archive and remembers their digests.
type exportWriter struct {
	tw    *tar.Writer
	files []exportFile
	now   time.Time
}

func (x *exportWriter) add(name string, data []byte) error {
	return x.addReader(name, int64(len(data)), bytes.NewReader(data))
}

func (x *exportWriter) addReader(name string, size int64, r io.Reader) error {
	if err := x.tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: size, ModTime: x.now, Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
		return err
	}
	h := sha256.New()
	n, err := io.Copy(x.tw, io.TeeReader(r, h))
	if err != nil {
		return err
	}
	if n != size {
		return fmt.Errorf("export: %s: wrote %d of %d bytes", name, n, size)
	}
	x.files = append(x.files, exportFile{Name: name, Size: size, SHA256: hex.EncodeToString(h.Sum(nil))})
	return nil
}

// exportTenant writes tenant's export to w.
func (g *gateway) exportTenant(ctx context.Context, tenant string, w io.Writer) error {
	now := time.Now().UTC()
	x := &exportWriter{tw: tar.NewWriter(w), now: now}
	err := g.fwd.EachReceipt(ctx, tenant, func(id string, env []byte) error {
		return x.add("receipts/"+id+".json", env)
	})
	if err != nil {
		return fmt.Errorf("export: receipts: %w", err)
	}
	var part bytes.Buffer
	parts := 0
	flush := func() error {
		if part.Len() == 0 {
			return nil
		}
		parts++
		err := x.add(fmt.Sprintf("attempts/%06d.jsonl", parts), part.Bytes())
		part.Reset()
		return err
	}
	err = g.fwd.EachAttempt(ctx, tenant, func(id string, a forwarder.Attempt) error {
		line, err := json.Marshal(struct {
			ID      string            `json:"id"`
			Attempt forwarder.Attempt `json:"attempt"`
		}{id, a})
		if err != nil {
			return err
		}
		if part.Len()+len(line)+1 > maxAttemptsPart {
			if err := flush(); err != nil {
				return err
			}
		}
		part.Write(line)
		part.WriteByte('\n')
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return fmt.Errorf("export: attempts: %w", err)
	}
	objs, err := g.objects.List(ctx, tenant+"/")
	if err != nil {
		return fmt.Errorf("export: attachments: %w", err)
	}
	for _, o := range objs {
		name := strings.TrimPrefix(o.Name, tenant+"/")
		data, err := g.blobs.GetBlob(ctx, tenant, name)
		if errors.Is(err, queue.ErrNotFound) {
			continue // expired or deleted meanwhile
		}
		if err != nil {
			return fmt.Errorf("export: attachment: %w", err)
		}
		if err := x.add("attachments/"+name, data); err != nil {
			return err
		}
	}
	// The audit export goes through a temporary file: its size must be
	// known before it is written to the archive.
	tmp, err := os.CreateTemp("", "sealpost-export-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if err := g.auditLog.Export(ctx, tmp, audit.Filter{Tenant: tenant}); err != nil {
		return fmt.Errorf("export: audit: %w", err)
	}
	size, err := tmp.Seek(0, io.SeekCurrent)
	if err != nil {
		return err
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if err := x.addReader("audit.jsonl", size, tmp); err != nil {
		return err
	}
	m, err := json.Marshal(exportManifest{Format: exportFormat, Tenant: tenant, Created: now, Files: x.files})
	if err != nil {
		return err
	}
	key, _, err := g.keys.SigningKeys(ctx, now)
	if err != nil {
		return fmt.Errorf("export: signing key: %w", err)
	}
	sig, err := json.Marshal(exportSig{Alg: "Ed25519", KID: key.KID, Sig: base64.RawURLEncoding.EncodeToString(ed25519.Sign(key.Key, m))})
	if err != nil {
		return err
	}
	if err := x.add("manifest.json", m); err != nil {
		return err
	}
	// The signature is not a manifest entry: it covers the manifest.
	if err := x.tw.WriteHeader(&tar.Header{Name: "manifest.sig", Mode: 0o600, Size: int64(len(sig)), ModTime: now, Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
		return err
	}
	if _, err := x.tw.Write(sig); err != nil {
		return err
	}
	return x.tw.Close()
}

// ExportReport is what verifyExport found.
type ExportReport struct {
	Tenant       string
	Files        int
	Receipts     int
	AuditEntries bool
}

// verifyExport checks a tenant export read from r against keys.
func verifyExport(r io.Reader, keys *signer.KeySet) (*ExportReport, error) {
	tr := tar.NewReader(r)
	got := map[string]exportFile{}
	var order []string
	var manifest, sig []byte
	rep := &ExportReport{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("export: %w", err)
		}
		name := h.Name
		if h.Typeflag != tar.TypeReg || path.Clean(name) != name || strings.HasPrefix(name, "/") || strings.Contains(name, "..") {
			return nil, fmt.Errorf("export: unexpected entry %q", name)
		}
		if _, dup := got[name]; dup || (name == "manifest.sig" && sig != nil) {
			return nil, fmt.Errorf("export: %s appears twice", name)
		}
		if h.Size < 0 || h.Size > maxExportFile {
			return nil, fmt.Errorf("export: %s is %d bytes, limit %d", name, h.Size, maxExportFile)
		}
		data, err := io.ReadAll(io.LimitReader(tr, maxExportFile+1))
		if err != nil {
			return nil, fmt.Errorf("export: %s: %w", name, err)
		}
		if name == "manifest.sig" {
			sig = data
			continue
		}
		sum := sha256.Sum256(data)
		got[name] = exportFile{Name: name, Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}
		order = append(order, name)
		switch {
		case name == "manifest.json":
			manifest = data
		case strings.HasPrefix(name, "receipts/"):
			if _, err := signer.Verify(data, keys); err != nil {
				return nil, fmt.Errorf("export: %s: %w", name, err)
			}
			rep.Receipts++
		case name == "audit.jsonl":
			if err := audit.VerifyExport(bytes.NewReader(data), keys); err != nil {
				return nil, fmt.Errorf("export: %s: %w", name, err)
			}
			rep.AuditEntries = true
		}
	}
	if manifest == nil || sig == nil {
		return nil, errors.New("export: no manifest.json or manifest.sig: incomplete archive")
	}
	var s exportSig
	if err := json.Unmarshal(sig, &s); err != nil {
		return nil, fmt.Errorf("export: manifest.sig: %w", err)
	}
	k, ok := keys.Lookup(s.KID)
	raw, err := base64.RawURLEncoding.DecodeString(s.Sig)
	if !ok || err != nil || s.Alg != "Ed25519" || !ed25519.Verify(k.Key, manifest, raw) {
		return nil, errors.New("export: the manifest's signature does not verify against the keys")
	}
	var m exportManifest
	if err := json.Unmarshal(manifest, &m); err != nil {
		return nil, fmt.Errorf("export: manifest.json: %w", err)
	}
	if m.Format != exportFormat {
		return nil, fmt.Errorf("export: format %q", m.Format)
	}
	listed := map[string]bool{}
	for _, f := range m.Files {
		listed[f.Name] = true
		if got[f.Name] != f {
			return nil, fmt.Errorf("export: %s is missing or differs from the manifest", f.Name)
		}
	}
	for _, name := range order {
		if name != "manifest.json" && !listed[name] {
			return nil, fmt.Errorf("export: %s is not in the manifest", name)
		}
	}
	if !slices.ContainsFunc(m.Files, func(f exportFile) bool { return f.Name == "audit.jsonl" }) {
		return nil, errors.New("export: no audit entries")
	}
	rep.Tenant, rep.Files = m.Tenant, len(m.Files)
	return rep, nil
}
