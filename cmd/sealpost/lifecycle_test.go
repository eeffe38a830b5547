package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/sealpost/sealpost/keyring/kms"
	"github.com/sealpost/sealpost/queue"
	"github.com/sealpost/sealpost/queue/backup"
)

// TestLifecycle runs the data lifecycle through a live gateway on moto's
// S3: a tenant export verifies offline and a tampered one fails; one
// receipt's payload is deleted, its receipt still verifies and its stored
// record is gone from the data dir and from later backups; a backup
// taken while deliveries are pending is restored into an empty data dir
// from the second region, after which the audit log verifies, receipts
// verify, every message accepted before the backup is delivered (to the
// first gateway's receiver or the restored one's) and new ones are
// accepted and delivered; finally the tenant is deleted and a scan of the
// data dir and of a restore of the backup finds nothing of it readable.
func TestLifecycle(t *testing.T) {
	if testing.Short() {
		t.Skip("long: runs two gateways and a restore")
	}
	endpoint := startMoto(t)
	createBackupBuckets(t, endpoint)
	ctx := context.Background()
	marker := "MARKER-" + rand.Text()
	rcvA := newReceiver(t)
	dir1 := t.TempDir()
	natsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	g := startGateway(t, gatewayOpts{dataDir: dir1, endpoint: rcvA.url(), logLevel: "info",
		extra: backupYAML(endpoint) + "nats:\n  listen: " + natsAddr + "\n"})

	accepted := map[string]bool{}
	ingest := func(g *testGateway, body string) string {
		t.Helper()
		code, doc, _ := g.ingest("invoices", body, nil)
		if code != http.StatusAccepted {
			t.Fatalf("ingest: %d %v", code, doc)
		}
		id := doc["id"].(string)
		accepted[id] = true
		return id
	}
	var delivered []string
	for i := range 5 {
		delivered = append(delivered, ingest(g, fmt.Sprintf(`{"invoice":%d,"note":%q}`, i, marker)))
	}
	rcvA.waitFor(t, 5, 30*time.Second)
	keysFile := filepath.Join(t.TempDir(), "keys.json")
	_, history := g.get("/v1/keys")
	must(t, os.WriteFile(keysFile, history, 0o600))

	t.Run("export", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "acme.tar")
		if out, err := g.cli("tenant", "export", "acme", "-o", file); err != nil {
			t.Fatalf("export: %v %s", err, out)
		}
		out, err := g.cli("export", "verify", file, "--jwks", keysFile)
		if err != nil || !strings.HasPrefix(out, "OK ") || !strings.Contains(out, "5 receipts verified") {
			t.Fatalf("export verify: %v %s", err, out)
		}
		for name, tamper := range map[string]func(name string, b []byte) []byte{
			"receipt payload": func(name string, b []byte) []byte {
				if strings.HasPrefix(name, "receipts/") {
					return bytes.Replace(b, []byte(`"invoice":0`), []byte(`"invoice":9`), 1)
				}
				return b
			},
			"attempt record": func(name string, b []byte) []byte {
				if strings.HasPrefix(name, "attempts/") {
					return bytes.Replace(b, []byte(`"delivered"`), []byte(`"failed"`), 1)
				}
				return b
			},
			"manifest": func(name string, b []byte) []byte {
				if name == "manifest.json" {
					return bytes.Replace(b, []byte(`"acme"`), []byte(`"acmf"`), 1)
				}
				return b
			},
		} {
			bad := filepath.Join(t.TempDir(), "bad.tar")
			rewriteTar(t, file, bad, tamper)
			out, err := g.cli("export", "verify", bad, "--jwks", keysFile)
			var ee exitError
			if !errors.As(err, &ee) || ee.code != 1 || !strings.HasPrefix(out, "FAILED ") {
				t.Errorf("tampered %s: %v %s", name, err, out)
			}
		}
	})

	deletedID := delivered[0]
	var sealedRecord []byte // the deleted receipt's record as it was stored
	t.Run("delete one receipt", func(t *testing.T) {
		// The receipt's stored (sealed) record, read through the
		// embedded server's client port, must be gone from the data dir
		// afterwards, not only from the stream.
		q, err := queue.Open(ctx, queue.Config{URL: "nats://" + natsAddr, NoDeclare: true})
		must(t, err)
		defer q.Close()
		receipts, err := q.LookupStream(ctx, "RECEIPTS")
		must(t, err)
		must(t, receipts.Read(ctx, queue.ReadOptions{Filter: "receipt.acme.>"}, func(m *queue.Msg) error {
			return queue.EachRecord(m.Data, func(f []string, blob []byte) error {
				if f[0] == deletedID {
					sealedRecord = bytes.Clone(blob)
				}
				return nil
			})
		}))
		if sealedRecord == nil || !dirContains(t, dir1, sealedRecord) {
			t.Fatal("the receipt's sealed record is not in the data dir before the deletion: the scan sees nothing")
		}
		if out, err := g.cli("receipts", "delete", "acme", deletedID); err != nil {
			t.Fatalf("delete: %v %s", err, out)
		}
		checkReceipt(t, g, deletedID, keysFile, false)
		checkReceipt(t, g, delivered[1], keysFile, true)
		if dirContains(t, dir1, sealedRecord) {
			t.Error("the deleted receipt's sealed record is still in the data dir")
		}
	})

	// Messages accepted while the endpoint fails stay pending: the
	// breaker rests the endpoint, so they keep most of their attempts.
	rcvA.failFirst.Store(1 << 40)
	calls := rcvA.calls.Load()
	var pending []string
	for i := range 10 {
		pending = append(pending, ingest(g, fmt.Sprintf(`{"pending":%d}`, i)))
	}
	deadline := time.Now().Add(30 * time.Second)
	for rcvA.calls.Load() < calls+5 {
		if time.Now().After(deadline) {
			t.Fatal("the failing endpoint was not called")
		}
		time.Sleep(50 * time.Millisecond)
	}
	out, err := g.cli("backup", "now")
	if err != nil {
		t.Fatalf("backup: %v %s", err, out)
	}
	var bres struct{ Snapshot string }
	must(t, json.Unmarshal([]byte(out), &bres))
	if out, err := g.cli("backup", "list"); err != nil || !strings.Contains(out, bres.Snapshot) {
		t.Fatalf("backup list: %v %s", err, out)
	}
	kek, err := kms.OpenLocal(dir1)
	must(t, err)
	sealer, err := kms.New(kms.Config{KEK: kek})
	must(t, err)
	copyTarget, err := backup.NewTarget(ctx, backup.TargetConfig{Bucket: "sp-backups-copy", Prefix: "gw/", Region: "eu-west-1", Endpoint: endpoint, PathStyle: true})
	must(t, err)
	m, err := backup.ReadManifest(ctx, copyTarget, sealer, "")
	must(t, err)
	if m.ID != bres.Snapshot || len(m.AuditCheckpoint) == 0 || m.TenantKeys["acme"] == "" {
		t.Fatalf("manifest %s: checkpoint %q, tenant keys %v", m.ID, m.AuditCheckpoint, m.TenantKeys)
	}
	wormTarget, err := backup.NewTarget(ctx, backup.TargetConfig{Bucket: "sp-worm", Region: "eu-central-1", Endpoint: endpoint, PathStyle: true})
	must(t, err)
	worm, err := backup.NewCheckpoints(backup.CheckpointsConfig{Target: wormTarget})
	must(t, err)
	if _, note, err := worm.LatestCheckpoint(ctx); err != nil || !bytes.HasPrefix(note, []byte("sealpost/audit\n")) {
		t.Fatalf("write-once checkpoint: %q %v", note, err)
	}
	cfgFile := g.cfgFile
	must(t, g.stop())

	// A new machine: an empty data dir with the master key, restored from
	// the copy in the second region.
	dir2 := t.TempDir()
	copyFile(t, filepath.Join(dir1, kms.MasterKeyFile), filepath.Join(dir2, kms.MasterKeyFile))
	var rout bytes.Buffer
	if err := run(ctx, []string{"restore", "--config", cfgFile, "--data", dir2, "--from", "copy"}, func(string) string { return "" }, &rout, io.Discard); err != nil {
		t.Fatalf("restore: %v %s", err, rout.String())
	}
	if !strings.Contains(rout.String(), "restored snapshot "+bres.Snapshot) {
		t.Fatalf("restore said %q", rout.String())
	}
	rcvB := newReceiver(t)
	g2 := startGateway(t, gatewayOpts{dataDir: dir2, endpoint: rcvB.url(), extra: backupYAML(endpoint), token: g.token, admin: g.admin, logLevel: "info"})
	if out, err := g2.cli("audit", "verify"); err != nil {
		t.Fatalf("audit verify after restore: %v\n%s", err, out)
	}
	checkReceipt(t, g2, delivered[1], keysFile, true)
	checkReceipt(t, g2, deletedID, keysFile, false)
	fresh := ingest(g2, `{"after":"restore"}`)
	rcvB.waitFor(t, len(pending)+1, 120*time.Second)
	got := map[string]bool{}
	for _, d := range append(rcvA.snapshot(), rcvB.snapshot()...) {
		got[d.id] = true
	}
	for id := range accepted {
		if !got[id] {
			t.Errorf("accepted message %s was never delivered", id)
		}
	}
	if !got[fresh] {
		t.Error("a message accepted after the restore was not delivered")
	}

	t.Run("delete tenant", func(t *testing.T) {
		cli := s3Client(t, endpoint, "eu-central-1")
		obj, err := cli.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("sp-backups"), Key: aws.String("gw/tenant-keys/acme.sps")})
		must(t, err)
		sealedRec, _ := io.ReadAll(obj.Body)
		obj.Body.Close()
		rec, err := sealer.Open(ctx, kms.Context{Tenant: "_system", Purpose: backup.PurposeBackup, ObjectID: "tenant-keys/acme"}, sealedRec)
		must(t, err)
		if !dirContains(t, dir2, rec) {
			t.Fatal("the tenant key record is not in the data dir before the deletion: the scan sees nothing")
		}
		if out, err := g2.cli("tenant", "delete", "acme"); err == nil {
			t.Fatalf("tenant delete without --confirm: %s", out)
		}
		if out, err := g2.cli("tenant", "delete", "acme", "--confirm", "acme"); err != nil {
			t.Fatalf("tenant delete: %v %s", err, out)
		}
		if code, _ := g2.getAuth("/v1/receipts/" + delivered[1]); code == http.StatusOK {
			t.Fatal("a deleted tenant's receipt is still served")
		}
		if dirContains(t, dir2, rec) {
			t.Error("the destroyed tenant key is still in the data dir")
		}
		if dirContains(t, dir2, []byte(marker)) {
			t.Error("the payload marker is in the data dir in plaintext")
		}
		for _, b := range []struct{ bucket, region string }{{"sp-backups", "eu-central-1"}, {"sp-backups-copy", "eu-west-1"}} {
			vs, err := s3Client(t, endpoint, b.region).ListObjectVersions(ctx, &s3.ListObjectVersionsInput{Bucket: aws.String(b.bucket), Prefix: aws.String("gw/tenant-keys/acme")})
			must(t, err)
			if len(vs.Versions)+len(vs.DeleteMarkers) != 0 {
				t.Errorf("%s still holds %d versions of the tenant key", b.bucket, len(vs.Versions))
			}
		}
		// The backup taken before the deletion, restored: everything of
		// the tenant is there, and none of it opens.
		dir3 := t.TempDir()
		q, err := queue.Open(ctx, queue.Config{DataDir: dir3, NoDeclare: true})
		must(t, err)
		defer q.Close()
		tks, err := q.TenantKeys(ctx)
		must(t, err)
		rr, err := backup.Restore(ctx, backup.RestoreConfig{Conn: q, Sealer: sealer, Target: copyTarget, ID: bres.Snapshot, TenantKeys: tks})
		must(t, err)
		if len(rr.Missing) != 1 || rr.Missing[0] != "acme" {
			t.Fatalf("restore of the old backup: missing %v", rr.Missing)
		}
		env, err := kms.New(kms.Config{KEK: kek, TenantKeys: tks})
		must(t, err)
		receipts, err := q.LookupStream(ctx, "RECEIPTS")
		must(t, err)
		records := 0
		err = receipts.Read(ctx, queue.ReadOptions{Filter: "receipt.acme.>"}, func(msg *queue.Msg) error {
			return queue.EachRecord(msg.Data, func(f []string, blob []byte) error {
				records++
				if _, err := env.Open(ctx, kms.Context{Tenant: "acme", Purpose: kms.PurposeReceipt, ObjectID: f[0]}, blob); !errors.Is(err, kms.ErrTenantDestroyed) {
					t.Errorf("receipt %s from the backup: %v, want it unreadable", f[0], err)
				}
				return nil
			})
		})
		must(t, err)
		if records < len(delivered) {
			t.Fatalf("the restored backup holds %d receipt records of the tenant, want at least %d", records, len(delivered))
		}
		if dirContains(t, dir3, []byte(marker)) || dirContains(t, dir3, rec) {
			t.Error("the restored backup holds the marker or the tenant key")
		}
		// The backup was taken after the one-receipt deletion: it never
		// had that receipt's payload.
		if dirContains(t, dir3, sealedRecord) {
			t.Error("the backup holds the deleted receipt's sealed record")
		}
	})
}

// checkReceipt fetches a stored receipt and verifies it offline with
// `sealpost verify`; withPayload says whether the payload must be there.
func checkReceipt(t *testing.T, g *testGateway, id, keysFile string, withPayload bool) {
	t.Helper()
	code, env := g.getAuth("/v1/receipts/" + id)
	if code != http.StatusOK {
		t.Fatalf("receipt %s: %d %s", id, code, env)
	}
	file := filepath.Join(t.TempDir(), "r.json")
	must(t, os.WriteFile(file, env, 0o600))
	var out bytes.Buffer
	if err := run(context.Background(), []string{"verify", file, "--jwks", keysFile}, os.Getenv, &out, io.Discard); err != nil {
		t.Fatalf("verify %s: %v %s", id, err, out.String())
	}
	if has := strings.Contains(out.String(), "payload matches"); has != withPayload {
		t.Fatalf("receipt %s: payload present %v, want %v: %s", id, has, withPayload, out.String())
	}
}

// snapshot returns the deliveries so far.
func (r *receiver) snapshot() []delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]delivery(nil), r.got...)
}

// rewriteTar copies a tar archive, passing each file's content through f.
func rewriteTar(t *testing.T, src, dst string, f func(name string, b []byte) []byte) {
	t.Helper()
	in, err := os.Open(src)
	must(t, err)
	defer in.Close()
	var out bytes.Buffer
	tr, tw := tar.NewReader(in), tar.NewWriter(&out)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		must(t, err)
		b, err := io.ReadAll(tr)
		must(t, err)
		b = f(h.Name, b)
		h.Size = int64(len(b))
		must(t, tw.WriteHeader(h))
		_, err = tw.Write(b)
		must(t, err)
	}
	must(t, tw.Close())
	must(t, os.WriteFile(dst, out.Bytes(), 0o600))
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	must(t, err)
	must(t, os.WriteFile(dst, b, 0o600))
}

// dirContains reports whether any file under dir holds b.
func dirContains(t *testing.T, dir string, b []byte) bool {
	t.Helper()
	found := false
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || found || !d.Type().IsRegular() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		found = bytes.Contains(data, b)
		return nil
	})
	must(t, err)
	return found
}
