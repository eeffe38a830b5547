package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sealpost/sealpost/queue"
)

// tamperFixture is a genuine log on deny-delete/deny-purge streams, with
// checkpoints at sizes 10, 20, 30 and 33, one entry per message (so entry
// index i sits at stream sequence i+1).
type tamperFixture struct {
	c       *queue.Conn
	js      jetstream.JetStream
	keys    *testKeys
	entries *queue.Stream
	cps     *queue.Stream
	msgs    [][]byte
}

func newTamperFixture(t *testing.T) *tamperFixture {
	t.Helper()
	ctx := context.Background()
	c := openConn(t)
	nc, err := nats.Connect(c.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	f := &tamperFixture{c: c, js: js, keys: &testKeys{cur: newTestKey(t, "a")}}
	f.entries, err = c.Stream(ctx, queue.StreamConfig{Name: "GEN", Subjects: []string{"t.GEN"}, DenyDelete: true, DenyPurge: true})
	if err != nil {
		t.Fatal(err)
	}
	f.cps, err = c.Stream(ctx, queue.StreamConfig{Name: "GEN_CP", Subjects: []string{"t.GEN_cp"}, DenyDelete: true, DenyPurge: true})
	if err != nil {
		t.Fatal(err)
	}
	l := openLog(t, f.entries, f.cps, f.keys, func(c *Config) { c.Writers = 1 })
	l.writers[0].id = "00000000000000a1" // for the golden report
	for i := range 33 {
		if err := l.Append(ctx, testEntry(i, "acme")); err != nil {
			t.Fatal(err)
		}
		if i == 9 || i == 19 || i == 29 {
			if _, err := l.signCheckpoint(ctx, true); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	err = f.entries.Read(ctx, queue.ReadOptions{}, func(m *queue.Msg) error {
		f.msgs = append(f.msgs, m.Data)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(f.msgs) != 33 {
		t.Fatalf("%d messages, want one per entry", len(f.msgs))
	}
	return f
}

// copyLog stores msgs in a new stream without the deny flags and returns a
// read-only log over it and the genuine checkpoints.
func (f *tamperFixture) copyLog(t *testing.T, name string, msgs [][]byte, mods ...func(*Config)) (*Log, jetstream.Stream) {
	return f.copyLogFrom(t, name, 1, msgs, mods...)
}

// copyLogFrom is copyLog with the copy's first message at stream sequence
// first, as a log whose oldest messages expired keeps its sequences.
func (f *tamperFixture) copyLogFrom(t *testing.T, name string, first uint64, msgs [][]byte, mods ...func(*Config)) (*Log, jetstream.Stream) {
	t.Helper()
	ctx := context.Background()
	raw, err := f.js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{"t." + name}, FirstSeq: first})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if _, err := f.js.Publish(ctx, "t."+name, m); err != nil {
			t.Fatal(err)
		}
	}
	s, err := f.c.Stream(ctx, queue.StreamConfig{Name: name, Subjects: []string{"t." + name}})
	if err != nil {
		t.Fatal(err)
	}
	return openLog(t, s, f.cps, nil, func(c *Config) {
		c.CheckpointSubject = "t.GEN_cp"
		for _, m := range mods {
			m(c)
		}
	}), raw
}

// forge re-encodes a genuine record with another actor and the same chain
// data, as someone who knows the format (but not the signing key) would.
func forge(t *testing.T, rec []byte) []byte {
	t.Helper()
	r, err := DecodeRecord(rec)
	if err != nil {
		t.Fatal(err)
	}
	r.Actor = "admin"
	out, err := encodeRecord(r.Entry, r.head())
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func without(msgs [][]byte, i int) [][]byte {
	return append(append([][]byte{}, msgs[:i]...), msgs[i+1:]...)
}

func with(msgs [][]byte, i int, m []byte) [][]byte {
	out := append([][]byte{}, msgs[:i]...)
	out = append(out, m)
	return append(out, msgs[i:]...)
}

func TestVerifyDetectsTampering(t *testing.T) {
	ctx := context.Background()
	f := newTamperFixture(t)
	var text bytes.Buffer
	edit := func(i int, old, new string) [][]byte {
		out := append([][]byte{}, f.msgs...)
		if !bytes.Contains(out[i], []byte(old)) {
			t.Fatalf("message %d has no %q", i, old)
		}
		out[i] = bytes.Replace(out[i], []byte(old), []byte(new), 1)
		return out
	}
	// batch stores the records of messages i.. as one message, the way
	// concurrent appends are written, leaving out the ones in drop.
	batch := func(i, n int, drop ...int) [][]byte {
		var lines [][]byte
		for j := i; j < i+n; j++ {
			if !slices.Contains(drop, j) {
				lines = append(lines, f.msgs[j])
			}
		}
		out := append([][]byte{}, f.msgs[:i]...)
		out = append(out, bytes.Join(lines, []byte("\n")))
		return append(out, f.msgs[i+n:]...)
	}
	swapped := append([][]byte{}, f.msgs...)
	swapped[11], swapped[12] = swapped[12], swapped[11]
	tests := []struct {
		name     string
		msgs     [][]byte
		deleteAt uint64 // delete this sequence from the copy after storing
		kinds    []string
		firstBad uint64
	}{
		{name: "untouched", msgs: f.msgs},
		{name: "edited actor", msgs: edit(4, `"apikey:k4"`, `"apikey:k5"`), kinds: []string{KindModified}, firstBad: 5},
		{name: "edited outcome", msgs: edit(14, `"success"`, `"failure"`), kinds: []string{KindModified}, firstBad: 15},
		{name: "edited to invalid", msgs: edit(7, `"success"`, `"sucXess"`), kinds: []string{KindModified}, firstBad: 8},
		{name: "edited last before checkpoint", msgs: edit(9, `"req-0009"`, `"req-9999"`), kinds: []string{KindModified}, firstBad: 10},
		{name: "edited newest", msgs: edit(32, `"req-0032"`, `"req-9999"`), kinds: []string{KindModified}, firstBad: 31},
		{name: "deleted", msgs: f.msgs, deleteAt: 7, kinds: []string{KindDeleted}, firstBad: 7},
		{name: "left out", msgs: without(f.msgs, 20), kinds: []string{KindDeleted}, firstBad: 21},
		// Entries 5..7 in one message at seq 6; 6 is taken out of it.
		{name: "left out of a batch", msgs: batch(5, 3, 6), kinds: []string{KindDeleted}, firstBad: 6},
		{name: "oldest deleted", msgs: f.msgs, deleteAt: 1, kinds: []string{KindDeleted}, firstBad: 2},
		{name: "reordered", msgs: swapped, kinds: []string{KindReordered}, firstBad: 12},
		{name: "duplicated", msgs: with(f.msgs, 16, f.msgs[15]), kinds: []string{KindInserted}, firstBad: 17},
		{name: "forged after", msgs: with(f.msgs, 16, forge(t, f.msgs[15])), kinds: []string{KindInserted}, firstBad: 17},
		{name: "forged before", msgs: with(f.msgs, 15, forge(t, f.msgs[15])), kinds: []string{KindInserted, KindModified}, firstBad: 16},
		{name: "truncated", msgs: f.msgs[:25], kinds: []string{KindTruncated}, firstBad: 26},
		{name: "emptied", msgs: nil, kinds: []string{KindTruncated}, firstBad: 1},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, raw := f.copyLog(t, fmt.Sprintf("COPY%d", i), tt.msgs)
			if tt.deleteAt != 0 {
				if err := raw.DeleteMsg(ctx, tt.deleteAt); err != nil {
					t.Fatal(err)
				}
			}
			rep, err := l.Verify(ctx, f.keys.keySet())
			if err != nil {
				t.Fatal(err)
			}
			if len(tt.kinds) == 0 {
				if !rep.OK || rep.Verified != 33 || rep.Checkpoints != 4 {
					t.Fatalf("untouched copy: %+v", rep)
				}
				return
			}
			if rep.OK {
				t.Fatalf("tampering went unnoticed: %+v", rep)
			}
			got := map[string]bool{}
			for _, p := range rep.Problems {
				got[p.Kind] = true
			}
			for _, k := range tt.kinds {
				if !got[k] {
					t.Errorf("no %s problem in %+v", k, rep.Problems)
				}
			}
			if len(got) != len(tt.kinds) {
				t.Errorf("problems %+v, want only kinds %v", rep.Problems, tt.kinds)
			}
			if rep.FirstBadSeq != tt.firstBad {
				t.Errorf("first bad seq %d, want %d (%+v)", rep.FirstBadSeq, tt.firstBad, rep.Problems)
			}
			fmt.Fprintf(&text, "== %s\n", tt.name)
			if err := rep.WriteText(&text); err != nil {
				t.Fatal(err)
			}
			// A tampered log cannot be exported with proofs.
			var out bytes.Buffer
			if err := l.Export(ctx, &out, Filter{}); !errors.Is(err, ErrTampered) {
				t.Errorf("Export of a tampered log = %v, want ErrTampered", err)
			}
		})
	}
	golden(t, "verify.golden.txt", text.Bytes())
}

// golden compares got with testdata/name, rewriting it under -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (run with -update):\n%s", name, got)
	}
}

func TestVerifyDetectsBadCheckpoints(t *testing.T) {
	ctx := context.Background()
	f := newTamperFixture(t)
	var recs [][]byte
	err := f.cps.Read(ctx, queue.ReadOptions{}, func(m *queue.Msg) error { recs = append(recs, m.Data); return nil })
	if err != nil {
		t.Fatal(err)
	}
	// A checkpoint signed by a key the verifier does not trust, over a
	// tree of the attacker's choosing.
	other := &testKeys{cur: newTestKey(t, "attacker")}
	s, scp := plainStreams(t, f.c, "BADCP")
	ol := openLog(t, s, scp, other, nil)
	for i := range 20 {
		if err := ol.Append(ctx, testEntry(i, "evil")); err != nil {
			t.Fatal(err)
		}
	}
	forged, err := ol.signCheckpoint(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	var edited checkpointRecord
	if err := json.Unmarshal(recs[1], &edited); err != nil {
		t.Fatal(err)
	}
	edited.Note = strings.Replace(edited.Note, "\n20\n", "\n21\n", 1)
	editedJSON, _ := json.Marshal(edited)
	forgedJSON, _ := json.Marshal(forged)

	tests := []struct {
		name string
		cps  [][]byte
		keys *testKeys
	}{
		{"unknown signer", recs, other},
		{"edited note", [][]byte{recs[0], editedJSON, recs[2], recs[3]}, f.keys},
		{"foreign checkpoint", append(append([][]byte{}, recs...), forgedJSON), f.keys},
		{"garbage", append(append([][]byte{}, recs...), []byte("{")), f.keys},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := fmt.Sprintf("CPCOPY%d", i)
			cs, err := f.c.Stream(ctx, queue.StreamConfig{Name: name, Subjects: []string{"t." + name}})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range tt.cps {
				if _, err := cs.Append(ctx, "t."+name, "", nil, r); err != nil {
					t.Fatal(err)
				}
			}
			l := openLog(t, f.entries, cs, nil, nil)
			rep, err := l.Verify(ctx, tt.keys.keySet())
			if err != nil {
				t.Fatal(err)
			}
			if rep.OK || len(rep.Problems) == 0 || rep.Problems[0].Kind != KindBadSignature {
				t.Fatalf("report %+v, want a bad_signature problem", rep)
			}
		})
	}
}

func TestStreamRefusesDeleteAndPurge(t *testing.T) {
	ctx := context.Background()
	f := newTamperFixture(t)
	raw, err := f.js.Stream(ctx, "GEN")
	if err != nil {
		t.Fatal(err)
	}
	if err := raw.DeleteMsg(ctx, 3); err == nil {
		t.Error("deleting from the audit stream succeeded")
	}
	if err := raw.Purge(ctx); err == nil {
		t.Error("purging the audit stream succeeded")
	}
	// OpenStreams declares the production streams with both flags.
	e, c, err := OpenStreams(ctx, f.c, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []*queue.Stream{e, c} {
		info, err := f.js.Stream(ctx, s.Name())
		if err != nil {
			t.Fatal(err)
		}
		cfg := info.CachedInfo().Config
		if !cfg.DenyDelete || !cfg.DenyPurge || cfg.MaxAge < DefaultRetention {
			t.Errorf("%s: deny delete %v, deny purge %v, max age %v", s.Name(), cfg.DenyDelete, cfg.DenyPurge, cfg.MaxAge)
		}
	}
}

// storedLog stores msgs in a new stream and opens a writable log over it
// and the fixture's checkpoints.
func (f *tamperFixture) storedLog(t *testing.T, name string, msgs [][]byte) *Log {
	t.Helper()
	ctx := context.Background()
	s, err := f.c.Stream(ctx, queue.StreamConfig{Name: name, Subjects: []string{"t." + name}})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if _, err := s.Append(ctx, "t."+name, "", nil, m); err != nil {
			t.Fatal(err)
		}
	}
	// Opening reads nothing: a gateway with a damaged log still starts.
	l, err := Open(ctx, Config{Stream: s, Checkpoints: f.cps, Subject: "t." + name, CheckpointSubject: "t.GEN_cp", Keys: f.keys, Origin: testOrigin})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close(ctx) })
	return l
}

// TestCheckpointerRefusesTamperedTail: entries stored after the newest
// checkpoint that do not continue their writer's chain are never signed.
func TestCheckpointerRefusesTamperedTail(t *testing.T) {
	ctx := context.Background()
	f := newTamperFixture(t)
	last := f.msgs[32]
	tails := map[string][][]byte{
		"forged repeat": {forge(t, last)},
		"gap":           {nextRecord(t, last, 2)},
		"bad link":      {nextRecord(t, forge(t, last), 1)},
		"not a record":  {[]byte(`{"hello":"world"}`)},
	}
	i := 0
	for name, tail := range tails {
		t.Run(name, func(t *testing.T) {
			i++
			l := f.storedLog(t, fmt.Sprintf("TAIL%d", i), append(append([][]byte{}, f.msgs...), tail...))
			if _, err := l.signCheckpoint(ctx, true); !errors.Is(err, ErrTampered) {
				t.Fatalf("signCheckpoint = %v, want ErrTampered", err)
			}
			if l.Consistent() == nil {
				t.Fatal("Consistent() = nil after an inconsistency")
			}
			// Appends still work: the log stays append-only.
			if err := l.Append(ctx, testEntry(99, "acme")); err != nil {
				t.Fatal(err)
			}
		})
	}
	// A genuine continuation is signed.
	l := f.storedLog(t, "TAILOK", append(append([][]byte{}, f.msgs...), nextRecord(t, last, 1)))
	if rec, err := l.signCheckpoint(ctx, true); err != nil || rec.Size != 34 {
		t.Fatalf("signCheckpoint = %+v, %v; want size 34", rec, err)
	}
}

// nextRecord returns a record that follows rec in its writer's chain after
// skip-1 missing ones.
func nextRecord(t *testing.T, rec []byte, skip uint64) []byte {
	t.Helper()
	r, err := DecodeRecord(rec)
	if err != nil {
		t.Fatal(err)
	}
	h := r.head()
	h.n += skip
	h.prev = leafHash(rec)
	r.RequestID = "req-next"
	out, err := encodeRecord(r.Entry, h)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestCheckpointerRefusesTruncatedOrEditedCheckpointedTail(t *testing.T) {
	ctx := context.Background()
	f := newTamperFixture(t)
	edited := append([][]byte{}, f.msgs...)
	edited[32] = bytes.Replace(edited[32], []byte(`"req-0032"`), []byte(`"req-9999"`), 1)
	for i, msgs := range [][][]byte{f.msgs[:30], edited} {
		l := f.storedLog(t, fmt.Sprintf("CPTAIL%d", i), msgs)
		if _, err := l.Size(ctx); !errors.Is(err, ErrTampered) {
			t.Fatalf("case %d: Size = %v, want ErrTampered", i, err)
		}
	}
}

func TestVerifyReportsMissingEntries(t *testing.T) {
	ctx := context.Background()
	f := newTamperFixture(t)
	l, _ := f.copyLog(t, "MISSING", without(without(f.msgs, 12), 12))
	rep, err := l.Verify(ctx, f.keys.keySet())
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK || rep.FirstBadSeq != 13 || len(rep.Problems) != 1 || rep.Problems[0].Kind != KindDeleted || rep.Size != 31 {
		t.Fatalf("report %+v, want records 12..13 deleted at seq 13 and the rest read", rep)
	}
	if !strings.Contains(rep.Problems[0].Detail, "12..13") {
		t.Errorf("detail %q does not name records 12..13", rep.Problems[0].Detail)
	}
}
