package audit

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sealpost/sealpost/queue"
)

// copyStream stores the first n messages of src in a new plain stream, as
// a store put back from an older state would hold them.
func copyStream(t *testing.T, c *queue.Conn, src *queue.Stream, name string, n int) *queue.Stream {
	t.Helper()
	ctx := context.Background()
	dst, err := c.Stream(ctx, queue.StreamConfig{Name: name, Subjects: []string{subjectOf(name)}})
	if err != nil {
		t.Fatal(err)
	}
	i := 0
	err = src.Read(ctx, queue.ReadOptions{}, func(m *queue.Msg) error {
		if i >= n {
			return nil
		}
		i++
		_, err := dst.Append(ctx, subjectOf(name), "", nil, m.Data)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

func TestOutsideCopyCatchesRollback(t *testing.T) {
	ctx := context.Background()
	c := openConn(t)
	entries, cps := plainStreams(t, c, "ROLL")
	keys := &testKeys{cur: newTestKey(t, "a")}
	sink := &DirSink{Dir: filepath.Join(t.TempDir(), "outside")}
	l := openLog(t, entries, cps, keys, func(cfg *Config) { cfg.Outside = sink })
	for i := range 35 {
		if err := l.Append(ctx, testEntry(i, "acme")); err != nil {
			t.Fatal(err)
		}
		if i == 19 {
			if _, err := l.signCheckpoint(ctx, true); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := l.signCheckpoint(ctx, true); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	latest, err := sink.Latest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rec, err := decodeCheckpointBytes(latest); err != nil || rec.Size != 35 {
		t.Fatalf("newest outside checkpoint %+v, %v; want size 35", rec, err)
	}
	files := 0
	_ = filepath.WalkDir(sink.Dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files++
			if info, _ := d.Info(); info.Mode().Perm()&0o222 != 0 {
				t.Errorf("%s is writable: %v", p, info.Mode())
			}
		}
		return err
	})
	if files != 2 {
		t.Fatalf("%d outside files, want one per stored checkpoint (2)", files)
	}

	// Put back the store as it was at size 20: entries and checkpoints.
	oldEntries := copyStream(t, c, entries, "ROLL_E", 20)
	oldCPs := copyStream(t, c, cps, "ROLL_C", 1)
	open := func(outside CheckpointSink, k KeySource) *Log {
		return openLog(t, oldEntries, oldCPs, k, func(cfg *Config) {
			cfg.Subject, cfg.CheckpointSubject = subjectOf("ROLL_E"), subjectOf("ROLL_C")
			cfg.Outside = outside
		})
	}
	// Without the outside copy nothing shows: the issue this catches.
	rep, err := open(nil, nil).Verify(ctx, keys.keySet())
	if err != nil || !rep.OK || rep.Size != 20 {
		t.Fatalf("rolled back log without an outside copy: %+v %v", rep, err)
	}
	// With it, verify reports the rollback...
	rep, err = open(sink, nil).Verify(ctx, keys.keySet())
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK || rep.Outside != 35 || len(rep.Problems) != 1 || rep.Problems[0].Kind != KindRollback {
		t.Fatalf("report %+v, want one rollback problem", rep)
	}
	var text bytes.Buffer
	_ = rep.WriteText(&text)
	if !strings.Contains(text.String(), "rollback") || !strings.Contains(text.String(), "covers 35 entries") {
		t.Errorf("report text:\n%s", text.String())
	}
	// ...the checkpointer refuses to continue the tree...
	w := open(sink, keys)
	if _, err := w.Size(ctx); !errors.Is(err, ErrRollback) || !errors.Is(err, ErrTampered) {
		t.Fatalf("Size = %v, want ErrRollback", err)
	}
	if err := w.Consistent(); !errors.Is(err, ErrRollback) {
		t.Fatalf("Consistent = %v, want ErrRollback", err)
	}
	if _, err := w.signCheckpoint(ctx, true); !errors.Is(err, ErrTampered) {
		t.Fatalf("a checkpoint was signed over a rolled back log: %v", err)
	}
	// ...and another instance notices within its tail check.
	other := open(sink, keys)
	if err := other.Consistent(); err != nil {
		t.Fatalf("consistent before any check: %v", err)
	}
	if err := other.CheckTail(ctx); !errors.Is(err, ErrRollback) || other.Consistent() == nil {
		t.Fatalf("CheckTail = %v", err)
	}
	// The untouched log passes both checks.
	good := openLog(t, entries, cps, keys, func(cfg *Config) { cfg.Outside = sink })
	if err := good.CheckTail(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := good.Size(ctx); err != nil {
		t.Fatal(err)
	}
	rep, err = good.Verify(ctx, keys.keySet())
	if err != nil || !rep.OK || rep.Outside != 35 {
		t.Fatalf("untouched log: %+v %v", rep, err)
	}
}

func TestOutsideCopyCatchesFork(t *testing.T) {
	ctx := context.Background()
	c := openConn(t)
	keys := &testKeys{cur: newTestKey(t, "a")}
	sink := &DirSink{Dir: t.TempDir()}
	// Two logs with the same key and origin write different entries: the
	// outside copy holds the first one's checkpoint of size 10.
	e1, c1 := plainStreams(t, c, "FORKA")
	e2, c2 := plainStreams(t, c, "FORKB")
	a := openLog(t, e1, c1, keys, func(cfg *Config) { cfg.Outside = sink })
	b := openLog(t, e2, c2, keys, nil)
	appendN(t, a, 0, 10, "acme")
	appendN(t, b, 100, 10, "acme")
	if _, err := a.signCheckpoint(ctx, true); err != nil {
		t.Fatal(err)
	}
	if _, err := b.signCheckpoint(ctx, true); err != nil {
		t.Fatal(err)
	}
	// b's store, checked against the outside copy of a's tree.
	b = openLog(t, e2, c2, keys, func(cfg *Config) { cfg.Outside = sink })
	if _, err := b.Size(ctx); !errors.Is(err, ErrRollback) || !strings.Contains(err.Error(), "disagree on the root") {
		t.Fatalf("Size of the fork = %v", err)
	}
	rep, err := b.Verify(ctx, keys.keySet())
	if err != nil || rep.OK || rep.Problems[0].Kind != KindRollback {
		t.Fatalf("verify of the fork: %+v %v", rep, err)
	}
	// Writing the same checkpoint twice is fine; another root is not.
	latest, _ := sink.Latest(ctx)
	rec, _ := decodeCheckpointBytes(latest)
	root, _ := b64.DecodeString(rec.Root)
	cp := OutsideCheckpoint{Size: rec.Size, Root: root, Time: rec.Time, Record: latest}
	if err := sink.Put(ctx, cp); err != nil {
		t.Fatalf("same checkpoint again: %v", err)
	}
	cp.Root = bytes.Repeat([]byte{1}, 32)
	if err := sink.Put(ctx, cp); !errors.Is(err, ErrFork) {
		t.Fatalf("another root: %v, want ErrFork", err)
	}
}

func TestDirSinkIgnoresForeignFiles(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := &DirSink{Dir: dir}
	if _, err := s.Latest(ctx); !errors.Is(err, ErrNoCheckpoint) {
		t.Fatalf("empty sink: %v", err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(dir, "2026-11-23"), 0o700))
	must(os.WriteFile(filepath.Join(dir, "2026-11-23", "notes.txt"), []byte("x"), 0o600))
	must(os.WriteFile(filepath.Join(dir, "2026-11-23", "00000000000000000007.json"), []byte(`{"size":7}`), 0o400))
	must(os.MkdirAll(filepath.Join(dir, "lost+found"), 0o700))
	b, err := s.Latest(ctx)
	if err != nil || string(b) != `{"size":7}` {
		t.Fatalf("Latest = %q, %v", b, err)
	}
}
