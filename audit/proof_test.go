package audit

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sealpost/sealpost/queue"
)

// refVerifyConsistency follows RFC 9162 section 2.1.4.2 directly and shares
// no code with the package or the libraries it uses.
func refVerifyConsistency(first, second uint64, proof [][]byte, firstRoot, secondRoot []byte) bool {
	switch {
	case first > second:
		return false
	case first == second:
		return len(proof) == 0 && bytes.Equal(firstRoot, secondRoot)
	case first == 0:
		return len(proof) == 0
	}
	if first&(first-1) == 0 {
		proof = append([][]byte{firstRoot}, proof...)
	}
	if len(proof) == 0 {
		return false
	}
	fn, sn := first-1, second-1
	for fn&1 == 1 {
		fn >>= 1
		sn >>= 1
	}
	fr, sr := proof[0], proof[0]
	for _, c := range proof[1:] {
		if sn == 0 {
			return false
		}
		if fn&1 == 1 || fn == sn {
			fr, sr = refNode(c, fr), refNode(c, sr)
			for fn&1 == 0 && fn != 0 {
				fn >>= 1
				sn >>= 1
			}
		} else {
			sr = refNode(sr, c)
		}
		fn >>= 1
		sn >>= 1
	}
	return sn == 0 && bytes.Equal(fr, firstRoot) && bytes.Equal(sr, secondRoot)
}

// proofStreams declares, next to plainStreams, the tiles bucket and index
// stream of a log named prefix.
func proofStreams(t testing.TB, c *queue.Conn, prefix string) func(*Config) {
	t.Helper()
	ctx := context.Background()
	kv, err := c.KV(ctx, queue.KVConfig{Bucket: prefix + "_TILES"})
	if err != nil {
		t.Fatal(err)
	}
	idx, err := c.Stream(ctx, queue.StreamConfig{Name: prefix + "_IDX", Subjects: []string{"t." + prefix + "_idx.>"}})
	if err != nil {
		t.Fatal(err)
	}
	return func(cfg *Config) { cfg.Tiles, cfg.Index, cfg.IndexSubject = kv, idx, "t."+prefix+"_idx" }
}

// newProofLog is newTestLog with proof stores.
func newProofLog(t *testing.T, c *queue.Conn, name string, mods ...func(*Config)) (*Log, *queue.Stream, *queue.Stream, *testKeys) {
	t.Helper()
	entries, cps := plainStreams(t, c, name)
	keys := &testKeys{cur: newTestKey(t, "a")}
	withProofs := proofStreams(t, c, name)
	l := openLog(t, entries, cps, keys, func(cfg *Config) {
		withProofs(cfg)
		for _, m := range mods {
			m(cfg)
		}
	})
	return l, entries, cps, keys
}

func appendN(t testing.TB, l *Log, from, n int, tenant string) {
	t.Helper()
	ctx := context.Background()
	for i := from; i < from+n; {
		k := min(256, from+n-i)
		es := make([]Entry, k)
		for j := range es {
			es[j] = testEntry(i+j, tenant)
		}
		if err := l.AppendAll(ctx, es...); err != nil {
			t.Fatal(err)
		}
		i += k
	}
}

type signedTree struct {
	size uint64
	root []byte
}

// growAndSign appends entries up to each size and signs a checkpoint
// there.
func growAndSign(t *testing.T, l *Log, sizes ...int) []signedTree {
	t.Helper()
	var trees []signedTree
	n := 0
	for _, size := range sizes {
		appendN(t, l, n, size-n, "acme")
		n = size
		rec, err := l.signCheckpoint(context.Background(), true)
		if err != nil {
			t.Fatal(err)
		}
		root, _ := base64.StdEncoding.DecodeString(rec.Root)
		trees = append(trees, signedTree{rec.Size, root})
	}
	return trees
}

func TestProofsAgainstReference(t *testing.T) {
	ctx := context.Background()
	c := openConn(t)
	l, entries, _, _ := newProofLog(t, c, "PROOF")
	trees := growAndSign(t, l, 1, 2, 3, 7, 255, 256, 257, 300, 511, 512, 513, 1000)
	leaves := storedLeaves(t, entries)
	for _, tr := range trees {
		if !bytes.Equal(refMTH(leaves[:tr.size]), tr.root) {
			t.Fatalf("size %d: root differs from the reference", tr.size)
		}
		for _, idx := range []uint64{0, 1, tr.size / 2, 254, 255, 256, 257, tr.size - 2, tr.size - 1} {
			if idx >= tr.size {
				continue
			}
			p, err := proveInclusion(ctx, l.tiles, idx, tr.size, tr.root)
			if err != nil {
				t.Fatalf("inclusion %d in %d: %v", idx, tr.size, err)
			}
			if !refVerifyInclusion(idx, tr.size, leaves[idx], p, tr.root) {
				t.Fatalf("inclusion proof of %d in %d fails the reference check", idx, tr.size)
			}
		}
	}
	for i, a := range trees {
		for _, b := range trees[i:] {
			p, err := proveConsistency(ctx, l.tiles, a.size, b.size, b.root)
			if err != nil {
				t.Fatalf("consistency %d..%d: %v", a.size, b.size, err)
			}
			if !refVerifyConsistency(a.size, b.size, p, a.root, b.root) {
				t.Fatalf("consistency proof %d..%d fails the reference check", a.size, b.size)
			}
			if err := CheckConsistency(Checkpoint{Size: a.size, Root: a.root}, Checkpoint{Size: b.size, Root: b.root}, p); err != nil {
				t.Fatalf("consistency %d..%d: %v", a.size, b.size, err)
			}
		}
	}
	// A proof against a root the tiles do not support is refused, never
	// wrong.
	bad := bytes.Clone(trees[len(trees)-1].root)
	bad[0] ^= 1
	if _, err := proveInclusion(ctx, l.tiles, 3, trees[len(trees)-1].size, bad); err == nil {
		t.Fatal("a proof against a wrong root was built")
	}
}

// TestProofsAcrossUpperTiles crosses the first complete tile of level 1
// (65,536 leaves).
func TestProofsAcrossUpperTiles(t *testing.T) {
	if testing.Short() {
		t.Skip("appends 65,600 entries")
	}
	ctx := context.Background()
	c := openConn(t)
	l, entries, _, _ := newProofLog(t, c, "UPPER")
	trees := growAndSign(t, l, 65535, 65536, 65600)
	leaves := storedLeaves(t, entries)
	for _, tr := range trees {
		for _, idx := range []uint64{0, 65535, tr.size - 1, 40000} {
			if idx >= tr.size {
				continue
			}
			p, err := proveInclusion(ctx, l.tiles, idx, tr.size, tr.root)
			if err != nil || !refVerifyInclusion(idx, tr.size, leaves[idx], p, tr.root) {
				t.Fatalf("inclusion %d in %d: %v", idx, tr.size, err)
			}
		}
	}
	for i, a := range trees {
		for _, b := range trees[i:] {
			p, err := proveConsistency(ctx, l.tiles, a.size, b.size, b.root)
			if err != nil || !refVerifyConsistency(a.size, b.size, p, a.root, b.root) {
				t.Fatalf("consistency %d..%d: %v", a.size, b.size, err)
			}
		}
	}
}

// testReceiptID returns a receipt id of group g (0..9) and number n.
func testReceiptID(g, n int) string {
	const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
	return "rcpt_01JD7QZX3M5K8B2N4P6R9T" + string(crockford[g%32]) + "0" + string(crockford[n>>5%32]) + string(crockford[n&31])
}

func stepEntry(action, tenant, id string) Entry {
	return Entry{Actor: "system", Action: action, Tenant: tenant, Target: id, Outcome: OutcomeSuccess,
		Details: map[string]string{"route": "invoices", "target": "decoy", "n": "1", "note": "<a & b>\u2028"}}
}

func encodeProof(t *testing.T, v any) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := EncodeProof(&b, v); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestReceiptProof(t *testing.T) {
	ctx := context.Background()
	c := openConn(t)
	l, _, _, keys := newProofLog(t, c, "RPROOF")
	a, b := testReceiptID(1, 1), testReceiptID(1, 2)
	if !ValidReceiptID(a) {
		t.Fatalf("%s is not a receipt id", a)
	}
	appendN(t, l, 0, 300, "acme")
	if err := l.AppendAll(ctx, stepEntry(ActionReceived, "acme", a), stepEntry(ActionQueued, "acme", a), stepEntry(ActionReceived, "beta", b)); err != nil {
		t.Fatal(err)
	}
	appendN(t, l, 300, 10, "acme")
	if err := l.Append(ctx, stepEntry(ActionSigned, "acme", a)); err != nil {
		t.Fatal(err)
	}
	// Not covered by a checkpoint yet: pending, with a time to come back.
	if _, err := l.signCheckpoint(ctx, true); err != nil {
		t.Fatal(err)
	}
	if err := l.Append(ctx, stepEntry(ActionDelivered, "acme", a)); err != nil {
		t.Fatal(err)
	}
	p, err := l.ReceiptProof(ctx, "acme", a)
	if err != nil {
		t.Fatal(err)
	}
	// The delivery is neither checkpointed nor indexed yet (the index is
	// written with the next checkpoint).
	if len(p.Entries) != 3 || p.Pending != 0 {
		t.Fatalf("%d entries, %d pending; want the 3 checkpointed ones", len(p.Entries), p.Pending)
	}
	// Encoded as the API does: the records' bytes unchanged, even their
	// <, & and U+2028.
	doc := encodeProof(t, p)
	if !bytes.Contains(doc, []byte("<a & b>\u2028")) {
		t.Fatalf("proof document changed the records: %s", doc)
	}
	got, cp, err := VerifyReceiptProof(doc, keys.keySet(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.ReceiptID != a || cp.Size != p.Size || cp.Time.IsZero() {
		t.Fatalf("verified %s at size %d time %v", got.ReceiptID, cp.Size, cp.Time)
	}
	for _, e := range p.Entries {
		proof := make([][]byte, len(e.Proof))
		for i, s := range e.Proof {
			proof[i], _ = base64.StdEncoding.DecodeString(s)
		}
		if !refVerifyInclusion(e.Index, cp.Size, refLeaf(e.Record), proof, cp.Root) {
			t.Fatalf("entry %d fails the reference check", e.Index)
		}
	}
	// Another tenant's receipt, an unknown one and a malformed id: not found.
	for _, tc := range []struct{ tenant, id string }{{"beta", a}, {"acme", b}, {"acme", testReceiptID(2, 5)}, {"acme", "rcpt_x"}} {
		if _, err := l.ReceiptProof(ctx, tc.tenant, tc.id); !errors.Is(err, ErrNotFound) {
			t.Errorf("ReceiptProof(%s, %s) = %v, want ErrNotFound", tc.tenant, tc.id, err)
		}
	}
	if _, err := l.ReceiptProof(ctx, "beta", b); err != nil {
		t.Errorf("beta's own receipt: %v", err)
	}
	// Only pending entries: a *PendingError with a time to ask again.
	fresh := testReceiptID(3, 1)
	if err := l.Append(ctx, stepEntry(ActionReceived, "acme", fresh)); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Size(ctx); err != nil {
		t.Fatal(err)
	}
	// The index is written with the next checkpoint; before it the
	// receipt is unknown to the index.
	if _, err := l.ReceiptProof(ctx, "acme", fresh); !errors.Is(err, ErrNotFound) {
		t.Errorf("unindexed receipt: %v", err)
	}
	if _, err := l.signCheckpoint(ctx, true); err != nil {
		t.Fatal(err)
	}
	if err := l.Append(ctx, stepEntry(ActionReceived, "acme", testReceiptID(3, 2))); err != nil {
		t.Fatal(err)
	}
	l.tmu.Lock()
	if err := l.integrateLocked(ctx); err != nil {
		t.Fatal(err)
	}
	if err := l.writeProofsLocked(ctx, false); err != nil {
		t.Fatal(err)
	}
	l.tmu.Unlock()
	var pe *PendingError
	if _, err := l.ReceiptProof(ctx, "acme", testReceiptID(3, 2)); !errors.As(err, &pe) || pe.RetryAfter <= 0 {
		t.Errorf("receipt indexed but not checkpointed: %v, want a PendingError", err)
	}

	// Tampered documents fail.
	for name, edit := range map[string]func(string) string{
		"record": func(s string) string { return strings.Replace(s, `"actor":"system"`, `"actor":"admin"`, 1) },
		"action": func(s string) string { return strings.Replace(s, "message.queued", "message.qeueud", 1) },
		"index": func(s string) string {
			return strings.Replace(s, fmt.Sprintf(`"index":%d`, p.Entries[0].Index), `"index":1`, 1)
		},
		"receipt":   func(s string) string { return strings.Replace(s, `"receipt_id":"`+a, `"receipt_id":"`+b, 1) },
		"unknown":   func(s string) string { return strings.Replace(s, `"type"`, `"extra":1,"type"`, 1) },
		"size":      func(s string) string { return strings.Replace(s, fmt.Sprintf(`"size":%d`, p.Size), `"size":1`, 1) },
		"signature": func(s string) string { return strings.Replace(s, `\n— `, `\n— x`, 1) },
	} {
		bad := edit(string(doc))
		if bad == string(doc) {
			t.Fatalf("%s: edit did not apply", name)
		}
		if _, _, err := VerifyReceiptProof([]byte(bad), keys.keySet(), nil); err == nil {
			t.Errorf("%s: tampered proof verified", name)
		}
	}
	other := &testKeys{cur: newTestKey(t, "other")}
	if _, _, err := VerifyReceiptProof(doc, other.keySet(), nil); err == nil {
		t.Error("proof verified with another log's key")
	}
}

func TestConsistencyProofAPI(t *testing.T) {
	ctx := context.Background()
	c := openConn(t)
	l, _, _, keys := newProofLog(t, c, "CPROOF")
	var sizes []uint64
	for i := range 6 {
		appendN(t, l, i*40, 40+i, "acme")
		rec, err := l.signCheckpoint(ctx, true)
		if err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, rec.Size)
	}
	for i, from := range append([]uint64{0}, sizes...) {
		for _, to := range sizes[max(i-1, 0):] {
			if to < from {
				continue
			}
			p, err := l.ConsistencyProof(ctx, from, to, false)
			if err != nil {
				t.Fatalf("%d..%d: %v", from, to, err)
			}
			doc, _ := json.Marshal(p)
			_, f, tt, err := VerifyConsistencyProof(doc, keys.keySet(), nil)
			if err != nil || f.Size != from || tt.Size != to {
				t.Fatalf("%d..%d: verified %d..%d, %v", from, to, f.Size, tt.Size, err)
			}
		}
	}
	if p, err := l.ConsistencyProof(ctx, sizes[0], 0, true); err != nil || p.To != sizes[len(sizes)-1] {
		t.Fatalf("to the newest: %+v %v", p, err)
	}
	for _, tc := range []struct {
		from, to uint64
		want     error
	}{
		{sizes[2], sizes[1], ErrBadRange},
		{sizes[0], sizes[5] + 1, ErrBadRange},
		{sizes[0] + 1, sizes[3], ErrNotFound},
		{sizes[0], sizes[3] - 1, ErrNotFound},
	} {
		if _, err := l.ConsistencyProof(ctx, tc.from, tc.to, false); !errors.Is(err, tc.want) {
			t.Errorf("%d..%d: %v, want %v", tc.from, tc.to, err, tc.want)
		}
	}
	// A document whose proof was edited, or whose checkpoints were swapped,
	// does not verify.
	p, _ := l.ConsistencyProof(ctx, sizes[1], sizes[4], false)
	p.Proof[0] = base64.StdEncoding.EncodeToString(make([]byte, 32))
	doc, _ := json.Marshal(p)
	if _, _, _, err := VerifyConsistencyProof(doc, keys.keySet(), nil); !errors.Is(err, ErrFork) {
		t.Errorf("edited proof: %v, want ErrFork", err)
	}
	p, _ = l.ConsistencyProof(ctx, sizes[1], sizes[4], false)
	p.From, p.To, p.FromCheckpoint, p.ToCheckpoint = p.To, p.From, p.ToCheckpoint, p.FromCheckpoint
	doc, _ = json.Marshal(p)
	if _, _, _, err := VerifyConsistencyProof(doc, keys.keySet(), nil); !errors.Is(err, ErrRollback) {
		t.Errorf("swapped checkpoints: %v, want ErrRollback", err)
	}
}

// TestProofTilesRebuiltAndTakenOver covers a log that kept no tiles (an
// older version) and a checkpointer that takes over from another one.
func TestProofTilesRebuiltAndTakenOver(t *testing.T) {
	ctx := context.Background()
	c := openConn(t)
	entries, cps := plainStreams(t, c, "REBUILD")
	keys := &testKeys{cur: newTestKey(t, "a")}
	old := openLog(t, entries, cps, keys, nil) // no proof stores
	id := testReceiptID(4, 4)
	appendN(t, old, 0, 700, "acme")
	if err := old.Append(ctx, stepEntry(ActionSigned, "acme", id)); err != nil {
		t.Fatal(err)
	}
	if _, err := old.signCheckpoint(ctx, true); err != nil {
		t.Fatal(err)
	}
	if err := old.Close(ctx); err != nil {
		t.Fatal(err)
	}
	withProofs := proofStreams(t, c, "REBUILD")
	l1 := openLog(t, entries, cps, keys, withProofs)
	appendN(t, l1, 700, 5, "acme")
	rec, err := l1.signCheckpoint(ctx, true) // rebuilds tiles and index for the first 701
	if err != nil {
		t.Fatal(err)
	}
	if p, err := l1.ReceiptProof(ctx, "acme", id); err != nil || len(p.Entries) != 1 || p.Size != rec.Size {
		t.Fatalf("proof after the rebuild: %+v %v", p, err)
	}
	// A second checkpointer takes over from the tiles l1 wrote.
	appendN(t, l1, 705, 100, "acme")
	l2 := openLog(t, entries, cps, keys, withProofs)
	if err := l2.Append(ctx, stepEntry(ActionDelivered, "acme", id)); err != nil {
		t.Fatal(err)
	}
	rec2, err := l2.signCheckpoint(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	p, err := l2.ReceiptProof(ctx, "acme", id)
	if err != nil || len(p.Entries) != 2 || p.Size != rec2.Size {
		t.Fatalf("proof after the takeover: %+v %v", p, err)
	}
	if _, _, err := VerifyReceiptProof(encodeProof(t, p), keys.keySet(), nil); err != nil {
		t.Fatal(err)
	}
	leaves := storedLeaves(t, entries)
	root, _ := base64.StdEncoding.DecodeString(rec2.Root)
	for _, idx := range []uint64{0, 700, 799, rec2.Size - 1} {
		pr, err := proveInclusion(ctx, l2.tiles, idx, rec2.Size, root)
		if err != nil || !refVerifyInclusion(idx, rec2.Size, leaves[idx], pr, root) {
			t.Fatalf("inclusion of %d after the takeover: %v", idx, err)
		}
	}
}

func TestIndexerReadsOnlyTheTarget(t *testing.T) {
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	id := testReceiptID(5, 7)
	ix := newIndexer()
	cases := []struct {
		e    Entry
		want bool
	}{
		{stepEntry(ActionSigned, "acme", id), true},
		// A details member named target, with a receipt id, does not count.
		{Entry{Actor: "a", Action: ActionSigned, Outcome: OutcomeSuccess, Target: "x", Details: map[string]string{"a": "1", "target": id}}, false},
		{Entry{Actor: "a", Action: ActionAPICall, Outcome: OutcomeSuccess, Target: id}, false},
		{Entry{Actor: "a", Action: ActionSigned, Outcome: OutcomeSuccess, Target: id + "0"}, false},
		{Entry{Actor: "a", Action: ActionSigned, Outcome: OutcomeSuccess, RequestID: `,"target":"` + id + `"`}, false},
	}
	for i, tc := range cases {
		rec, err := encodeRecord(normalize(tc.e, now), head{v: recordV2, writer: "0123456789abcdef", n: uint64(i)})
		if err != nil {
			t.Fatal(err)
		}
		before := ix.n
		ix.add(rec, uint64(i), 1, 0)
		if got := ix.n > before; got != tc.want {
			t.Errorf("case %d: indexed %v, want %v (%s)", i, got, tc.want, rec)
		}
	}
}

func TestValidReceiptID(t *testing.T) {
	for id, want := range map[string]bool{
		"rcpt_01JD7QZX3M5K8B2N4P6R9T1000": true,
		"rcpt_7ZZZZZZZZZZZZZZZZZZZZZZZZZ": true,
		"rcpt_8ZZZZZZZZZZZZZZZZZZZZZZZZZ": false, // beyond 128 bits
		"rcpt_01JD7QZX3M5K8B2N4P6R9T100I": false, // I is not Crockford
		"rcpt_01jd7qzx3m5k8b2n4p6r9t1000": false,
		"rcpt_01JD7QZX3M5K8B2N4P6R9T100":  false,
		"rcpx_01JD7QZX3M5K8B2N4P6R9T1000": false,
		"":                                false,
	} {
		if got := ValidReceiptID(id); got != want {
			t.Errorf("ValidReceiptID(%q) = %v, want %v", id, got, want)
		}
	}
}
