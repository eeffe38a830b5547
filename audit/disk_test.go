package audit

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sealpost/sealpost/queue"
)

// TestVerifyDetectsEditedFileStore edits an entry's bytes in the JetStream
// file store on disk, under the real deny-delete/deny-purge streams, while
// the server is down; after the restart verify must report it.
func TestVerifyDetectsEditedFileStore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	keys := &testKeys{cur: newTestKey(t, "a")}
	c, err := queue.Open(ctx, queue.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	l, err := Open(ctx, Config{Conn: c, Keys: keys, Origin: testOrigin})
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	for i := range 20 {
		if err := l.Append(ctx, testEntry(i, "acme")); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	c.Close()

	edited := 0
	err = filepath.WalkDir(filepath.Join(dir, "jetstream"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".blk") || !strings.Contains(path, string(filepath.Separator)+EntriesStream+string(filepath.Separator)) {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if i := bytes.Index(b, []byte(`"req-0007"`)); i >= 0 {
			copy(b[i:], `"req-7777"`)
			edited++
			return os.WriteFile(path, b, 0o600)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if edited != 1 {
		t.Fatalf("edited %d block files, want 1", edited)
	}

	c, err = queue.Open(ctx, queue.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ro, err := Open(ctx, Config{Conn: c, Origin: testOrigin})
	if err != nil {
		t.Fatal(err)
	}
	vctx, cancel := context.WithTimeout(ctx, time.Minute) // guards against a hang only
	defer cancel()
	rep, err := ro.Verify(vctx, keys.keySet())
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK {
		t.Fatalf("an entry edited on disk went unnoticed: %+v", rep)
	}
	var text bytes.Buffer
	_ = rep.WriteText(&text)
	t.Logf("%s", text.String())
	// Whether the store hands out the edited bytes or drops the message
	// whose checksum no longer matches, the problem is at entry 7 (seq 8).
	if rep.FirstBadSeq != 8 {
		t.Errorf("first bad seq %d, want 8", rep.FirstBadSeq)
	}
}
