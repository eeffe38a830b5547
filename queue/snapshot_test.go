package queue_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sealpost/sealpost/queue"
)

// TestSnapshotRestore snapshots a stream whose first messages were
// removed, restores it into an empty store and checks that every message
// comes back under its own sequence, and that the store refuses to restore
// over an existing stream.
func TestSnapshotRestore(t *testing.T) {
	ctx := context.Background()
	src := openConn(t, t.TempDir())
	s, err := src.Stream(ctx, queue.StreamConfig{Name: "LOG", Subjects: []string{"log.>"}})
	if err != nil {
		t.Fatal(err)
	}
	const n = 3000
	for i := range n {
		if _, err := s.Append(ctx, fmt.Sprintf("log.%d", i%7), "", map[string]string{"K": fmt.Sprint(i)}, bytes.Repeat([]byte{byte(i)}, 200)); err != nil {
			t.Fatal(err)
		}
	}
	for seq := uint64(1); seq <= 10; seq++ {
		if err := s.Erase(ctx, seq); err != nil {
			t.Fatal(err)
		}
	}
	var snap bytes.Buffer
	info, err := src.Snapshot(ctx, "LOG", &snap)
	if err != nil {
		t.Fatal(err)
	}
	st, err := info.StreamSummary()
	if err != nil {
		t.Fatal(err)
	}
	if st.Msgs != n-10 || st.FirstSeq != 11 || st.LastSeq != n {
		t.Fatalf("snapshot state %+v", st)
	}
	if err := src.Restore(ctx, info, 0, bytes.NewReader(snap.Bytes())); err == nil {
		t.Fatal("restore over an existing stream succeeded")
	}

	dst, err := queue.Open(ctx, queue.Config{DataDir: t.TempDir(), NoDeclare: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dst.Close)
	if err := dst.Restore(ctx, info, 0, bytes.NewReader(snap.Bytes())); err != nil {
		t.Fatal(err)
	}
	r, err := dst.Stream(ctx, queue.StreamConfig{Name: "LOG", Subjects: []string{"log.>"}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := r.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got.Msgs != st.Msgs || got.FirstSeq != st.FirstSeq || got.LastSeq != st.LastSeq {
		t.Fatalf("restored state %+v, snapshot %+v", got, st)
	}
	for _, seq := range []uint64{11, 1500, n} {
		m, err := r.Get(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		i := int(seq - 1)
		if m.Subject != fmt.Sprintf("log.%d", i%7) || m.Header["K"] != fmt.Sprint(i) || !bytes.Equal(m.Data, bytes.Repeat([]byte{byte(i)}, 200)) {
			t.Fatalf("seq %d restored as %s %v", seq, m.Subject, m.Header)
		}
	}
	if _, err := r.Get(ctx, 5); !errors.Is(err, queue.ErrNotFound) {
		t.Fatalf("an erased message came back: %v", err)
	}
}

// TestEraseLeavesNoBytes stores a marker, erases it and scans the store's
// files for it; a plain delete would leave it there.
func TestEraseLeavesNoBytes(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	c := openConn(t, dir)
	s, err := c.Stream(ctx, queue.StreamConfig{Name: "ER", Subjects: []string{"er.>"}})
	if err != nil {
		t.Fatal(err)
	}
	marker := []byte("erase-marker-7f3a9c")
	if _, err := s.Append(ctx, "er.a", "", nil, []byte("keep")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, "er.b", "", nil, marker); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, "er.c", "", nil, []byte("keep")); err != nil {
		t.Fatal(err)
	}
	if !dirContains(t, dir, marker) {
		t.Fatal("the marker is not on disk before the erase: the scan cannot see anything")
	}
	if n, err := s.EraseSubject(ctx, "er.b"); err != nil || n != 1 {
		t.Fatalf("erase: %d, %v", n, err)
	}
	if dirContains(t, dir, marker) {
		t.Fatal("the erased message's bytes are still in the store")
	}
	// AppendNew creates once.
	if _, err := s.AppendNew(ctx, "er.k", nil, []byte("1")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AppendNew(ctx, "er.k", nil, []byte("2")); !errors.Is(err, queue.ErrConflict) {
		t.Fatalf("second AppendNew: %v", err)
	}
}

// dirContains reports whether any file under dir holds b.
func dirContains(t *testing.T, dir string, b []byte) bool {
	t.Helper()
	found := false
	// The store writes asynchronously to its files for a moment.
	time.Sleep(100 * time.Millisecond)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || found {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		found = bytes.Contains(data, b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}
