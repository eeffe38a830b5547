package backup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/sealpost/sealpost/keyring/kms"
	"github.com/sealpost/sealpost/queue"
)

func openStore(t *testing.T, dir string, noDeclare bool) *queue.Conn {
	t.Helper()
	c, err := queue.Open(context.Background(), queue.Config{DataDir: dir, NoDeclare: noDeclare})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// TestBackupRestore backs a store up to two buckets in two regions,
// restores the copy into an empty store, and checks every stream, the
// manifest's audit checkpoint and the tenant keys; a tampered part, a
// missing tenant key and pruning are checked on the way.
func TestBackupRestore(t *testing.T) {
	ctx := context.Background()
	endpoint := startMoto(t)
	primary := newBucket(t, endpoint, "eu-central-1", "backups-a", false)
	secondary := newBucket(t, endpoint, "eu-west-1", "backups-b", false)

	keyDir := t.TempDir()
	kek, err := kms.OpenLocal(keyDir)
	if err != nil {
		t.Fatal(err)
	}
	src := openStore(t, t.TempDir(), false)
	tks, err := src.TenantKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	env, err := kms.New(kms.Config{KEK: kek, TenantKeys: tks})
	if err != nil {
		t.Fatal(err)
	}
	data, err := src.Stream(ctx, queue.StreamConfig{Name: "RECEIPTS", Subjects: []string{"receipt.>"}})
	if err != nil {
		t.Fatal(err)
	}
	cps, err := src.Stream(ctx, queue.StreamConfig{Name: "AUDIT_CHECKPOINTS", Subjects: []string{"audit.checkpoints"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cps.Append(ctx, "audit.checkpoints", "", nil, []byte(`{"v":1,"size":1}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := cps.Append(ctx, "audit.checkpoints", "", nil, []byte(`{"v":1,"size":2}`)); err != nil {
		t.Fatal(err)
	}
	sealedOf := map[string][]byte{}
	for _, tenant := range []string{"acme", "globex"} {
		for i := range 50 {
			id := fmt.Sprintf("r%d", i)
			s, err := env.Seal(ctx, kms.Context{Tenant: tenant, Purpose: kms.PurposeReceipt, ObjectID: id}, []byte(tenant+" payload "+id))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := data.Append(ctx, "receipt."+tenant+"."+id, "", nil, s); err != nil {
				t.Fatal(err)
			}
			sealedOf[tenant+"/"+id] = s
		}
	}
	res, err := Backup(ctx, Config{Conn: src, Sealer: env, Targets: []*Target{primary, secondary}, TenantKeys: tks})
	if err != nil {
		t.Fatal(err)
	}
	if string(res.Manifest.AuditCheckpoint) != `{"v":1,"size":2}` {
		t.Fatalf("manifest checkpoint %s, want the newest", res.Manifest.AuditCheckpoint)
	}
	if len(res.Manifest.TenantKeys) != 2 || res.Manifest.Streams[0].Name != queue.IngestStream {
		t.Fatalf("manifest: tenant keys %v, first stream %s", res.Manifest.TenantKeys, res.Manifest.Streams[0].Name)
	}
	for _, tg := range []*Target{primary, secondary} {
		ids, err := List(ctx, tg)
		if err != nil || len(ids) != 1 || ids[0] != res.ID {
			t.Fatalf("%s lists %v, %v", tg, ids, err)
		}
	}

	restore := func(t *testing.T, tg *Target) (*queue.Conn, *RestoreResult, error) {
		dst := openStore(t, t.TempDir(), true)
		dtks, err := dst.TenantKeys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		rr, err := Restore(ctx, RestoreConfig{Conn: dst, Sealer: env, Target: tg, TenantKeys: dtks})
		return dst, rr, err
	}

	t.Run("restore from the second region", func(t *testing.T) {
		dst, rr, err := restore(t, secondary)
		if err != nil {
			t.Fatal(err)
		}
		if rr.TenantKeys != 2 || len(rr.Missing) != 0 {
			t.Fatalf("tenant keys restored %d, missing %v", rr.TenantKeys, rr.Missing)
		}
		dtks, _ := dst.TenantKeys(ctx)
		denv, err := kms.New(kms.Config{KEK: kek, TenantKeys: dtks})
		if err != nil {
			t.Fatal(err)
		}
		s, err := dst.LookupStream(ctx, "RECEIPTS")
		if err != nil {
			t.Fatal(err)
		}
		st, _ := s.State(ctx)
		if st.Msgs != 100 {
			t.Fatalf("restored %d receipts, want 100", st.Msgs)
		}
		m, err := s.Last(ctx, "receipt.globex.r7")
		if err != nil {
			t.Fatal(err)
		}
		got, err := denv.Open(ctx, kms.Context{Tenant: "globex", Purpose: kms.PurposeReceipt, ObjectID: "r7"}, m.Data)
		if err != nil || string(got) != "globex payload r7" {
			t.Fatalf("restored object: %q %v", got, err)
		}
		if _, err := dst.LookupStream(ctx, queue.IngestStream); err != nil {
			t.Fatalf("INGEST not restored: %v", err)
		}
	})

	t.Run("tampered part", func(t *testing.T) {
		part := res.Manifest.Streams[len(res.Manifest.Streams)-1].Parts[0]
		body, err := primary.get(ctx, part.Name, part.Size)
		if err != nil {
			t.Fatal(err)
		}
		body[len(body)/2] ^= 1
		if err := primary.put(ctx, part.Name, body); err != nil {
			t.Fatal(err)
		}
		if _, _, err := restore(t, primary); err == nil {
			t.Fatal("a tampered snapshot restored")
		}
		body[len(body)/2] ^= 1
		if err := primary.put(ctx, part.Name, body); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("erased tenant key", func(t *testing.T) {
		for _, tg := range []*Target{primary, secondary} {
			if err := EraseTenantKey(ctx, tg, "acme"); err != nil {
				t.Fatal(err)
			}
		}
		dst, rr, err := restore(t, primary)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(rr.Missing, []string{"acme"}) || rr.TenantKeys != 1 {
			t.Fatalf("missing %v, restored %d", rr.Missing, rr.TenantKeys)
		}
		dtks, _ := dst.TenantKeys(ctx)
		denv, _ := kms.New(kms.Config{KEK: kek, TenantKeys: dtks})
		if _, err := denv.Open(ctx, kms.Context{Tenant: "acme", Purpose: kms.PurposeReceipt, ObjectID: "r1"}, sealedOf["acme/r1"]); !errors.Is(err, kms.ErrTenantDestroyed) {
			t.Fatalf("a shredded tenant's object opened after restore: %v", err)
		}
		if _, err := denv.Open(ctx, kms.Context{Tenant: "globex", Purpose: kms.PurposeReceipt, ObjectID: "r1"}, sealedOf["globex/r1"]); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("prune", func(t *testing.T) {
		later := time.Now().Add(48 * time.Hour)
		res2, err := Backup(ctx, Config{Conn: src, Sealer: env, Targets: []*Target{primary}, Now: func() time.Time { return later }})
		if err != nil {
			t.Fatal(err)
		}
		deleted, err := Prune(ctx, primary, 24*time.Hour, 1, later)
		if err != nil {
			t.Fatal(err)
		}
		ids, _ := List(ctx, primary)
		if !slices.Equal(deleted, []string{res.ID}) || !slices.Equal(ids, []string{res2.ID}) {
			t.Fatalf("deleted %v, left %v", deleted, ids)
		}
	})
}

// TestCheckpointsObjectLock stores checkpoints in a bucket with Object
// Lock and checks that the newest is found and that a locked version
// cannot be deleted.
func TestCheckpointsObjectLock(t *testing.T) {
	ctx := context.Background()
	endpoint := startMoto(t)
	tg := newBucket(t, endpoint, "eu-central-1", "worm", true)
	cs, err := NewCheckpoints(CheckpointsConfig{Target: tg, Retain: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"00000000000000000010", "00000000000000000200", "00000000000000000030"} {
		if err := cs.PutCheckpoint(ctx, n, []byte("note "+n)); err != nil {
			t.Fatal(err)
		}
	}
	name, data, err := cs.LatestCheckpoint(ctx)
	if err != nil || name != "00000000000000000200" || !bytes.Equal(data, []byte("note 00000000000000000200")) {
		t.Fatalf("latest: %q %q %v", name, data, err)
	}
	vs, err := tg.client.ListObjectVersions(ctx, &s3.ListObjectVersionsInput{Bucket: aws.String("worm"), Prefix: aws.String("sp/checkpoints/")})
	if err != nil || len(vs.Versions) != 3 {
		t.Fatalf("versions: %v %v", vs, err)
	}
	v := vs.Versions[0]
	if _, err := tg.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String("worm"), Key: v.Key, VersionId: v.VersionId}); err == nil {
		t.Fatal("a locked checkpoint version was deleted")
	}
	if _, err := cs.GetCheckpoint(ctx, "../x"); err == nil {
		t.Fatal("a name with a slash was accepted")
	}
}
