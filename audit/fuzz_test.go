package audit

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gowebpki/jcs"
)

// FuzzDecodeRecord checks that the record decoder never panics, and that
// whatever it accepts is exactly the encoding of what it returns (one record,
// one byte string, one leaf hash).
func FuzzDecodeRecord(f *testing.F) {
	e := normalize(testEntry(1, "acme"), time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC))
	const w = "0123456789abcdef"
	first, err := encodeRecord(e, head{v: recordV2, writer: w})
	if err != nil {
		f.Fatal(err)
	}
	second, err := encodeRecord(e, head{v: recordV2, writer: w, n: 1, prev: leafHash(first)})
	if err != nil {
		f.Fatal(err)
	}
	v1, err := encodeRecord(e, head{v: recordV1, n: 1, prev: leafHash(first), prevTime: e.Time})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(first)
	f.Add(second)
	f.Add(v1)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"v":1,"index":0,"action":"a","actor":"b","outcome":"success","time":"2026-11-23T10:00:00Z"}`))
	f.Add([]byte(`{"V":1,"index":0,"action":"a","actor":"b","outcome":"success","time":"2026-11-23T10:00:00Z"}`))
	f.Add([]byte(`{"action":"a","actor":"b","index":1e0,"outcome":"success","time":"2026-11-23T10:00:00Z","v":1}`))
	// Seeds from the golden export.
	if b, err := os.ReadFile(filepath.Join("testdata", "export.golden.jsonl")); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if i := strings.Index(line, `"record":`); i >= 0 {
				f.Add([]byte(strings.TrimSuffix(line[i+len(`"record":`):], "}")))
			}
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRecord(b)
		if err != nil {
			return
		}
		again, err := encodeRecord(r.Entry, r.head())
		if err != nil {
			t.Fatalf("accepted record does not re-encode: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("accepted %q, re-encodes as %q", b, again)
		}
		if err := validate(&r.Entry); err != nil {
			t.Fatalf("accepted an invalid entry: %v", err)
		}
		if canon, err := jcs.Transform(b); err != nil || !bytes.Equal(canon, b) {
			t.Fatalf("accepted %q, which a generic JCS implementation writes as %q (%v)", b, canon, err)
		}
	})
}

// FuzzVerifyExport checks that the export verifier never panics on
// arbitrary input.
func FuzzVerifyExport(f *testing.F) {
	if b, err := os.ReadFile(filepath.Join("testdata", "export.golden.jsonl")); err == nil {
		f.Add(b)
	}
	f.Add([]byte("{\"type\":\"checkpoint\"}\n{\"type\":\"end\",\"entries\":0}\n"))
	keys := &testKeys{cur: newTestKey(f, "a"), prev: nil}
	ks := keys.keySet()
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = VerifyExport(bytes.NewReader(b), ks)
	})
}

func FuzzParseCheckpoint(f *testing.F) {
	f.Add("sealpost.test/audit\n5\nfUNH+n2sy5tBjxZji86GLsHYoIkwhON9A/BhL2Lj5W0=\n")
	f.Add("o\n0\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\next\n")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCheckpoint(s)
		if err != nil {
			return
		}
		if got := formatCheckpoint(c.Origin, c.Size, c.Root); !strings.HasPrefix(s, got) {
			t.Fatalf("parsed %q as %+v, which formats as %q", s, c, got)
		}
	})
}

// FuzzCanonicalEncoding holds the record encoder equal to encoding/json plus
// a generic JCS implementation, for any valid entry.
func FuzzCanonicalEncoding(f *testing.F) {
	f.Add("apikey:k1", "POST /v1/ingest/{route}", "status", "202", "acme", int64(1763892000123456000), uint64(0))
	f.Add("a\"b\\c\x01\x1f\x7f", "\u2028\u2029<>&", "é", "😀", "日本", int64(0), uint64(7))
	f.Add("x", "y", "\U0001F600", "\uFFFF", "t", int64(-62135596800000000000/1000), uint64(maxIndex))
	f.Fuzz(func(t *testing.T, actor, target, dk, dv, tenant string, nanos int64, index uint64) {
		e := Entry{Time: time.Unix(0, nanos).UTC().Truncate(time.Microsecond), Actor: actor, Action: ActionAPICall,
			Tenant: tenant, Target: target, Outcome: OutcomeDenied, Details: map[string]string{dk: dv, "z" + dk: dv + dk}}
		if validate(&e) != nil || index > maxIndex {
			return
		}
		h := head{v: recordV2, writer: "0123456789abcdef", n: index}
		if nanos%3 == 0 {
			h = head{v: recordV1, n: index}
		}
		if index > 0 {
			h.prev = leafHash([]byte(actor))
			if h.v == recordV1 && nanos%2 == 0 {
				h.prevTime = e.Time.Add(-time.Second)
			}
		}
		got, err1 := encodeRecord(e, h)
		want, err2 := encodeRecordGeneric(e, h)
		if err1 != nil || err2 != nil {
			if len(want) <= MaxEntrySize || err2 != nil {
				t.Fatalf("encode errors: %v, %v", err1, err2)
			}
			return
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("record encoder differs from JCS:\n got %s\nwant %s", got, want)
		}
		if _, err := DecodeRecord(got); err != nil {
			t.Fatalf("encoded record does not decode: %v", err)
		}
	})
}

// FuzzValidAction holds validAction equal to the action pattern it
// replaces, and maxRecordSize above the size of the record it bounds.
func FuzzValidAction(f *testing.F) {
	re := regexp.MustCompile(`^[a-z0-9_]+(\.[a-z0-9_-]+)*$`)
	for _, s := range []string{"api.call", "message.dead_lettered", "a.b-c", "a-b.c", "", ".", "a.", ".a", "A", "a..b", "a.b.c_d-e"} {
		f.Add(s, "x")
	}
	f.Fuzz(func(t *testing.T, action, v string) {
		if got, want := validAction(action), re.MatchString(action); got != want {
			t.Fatalf("validAction(%q) = %v, pattern says %v", action, got, want)
		}
		e := Entry{Time: time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC), Action: "a", Actor: v, Outcome: OutcomeSuccess,
			Target: v, Tenant: v, RequestID: v, Details: map[string]string{v: v, "k": v}}
		if validate(&e) != nil {
			return
		}
		rec := appendRecordJCS(nil, &e, head{v: recordV2, writer: "0123456789abcdef", n: maxIndex, prev: make([]byte, 32)})
		if len(rec) > maxRecordSize(&e) {
			t.Fatalf("record of %d bytes above its bound %d", len(rec), maxRecordSize(&e))
		}
	})
}

// FuzzParseCosignerKey checks that an accepted verifier key is exactly the
// encoding of what it parses to.
func FuzzParseCosignerKey(f *testing.F) {
	k := newTestKey(f, "w")
	f.Add(FormatCosignerKey("witness.test/w1", k.Public()))
	f.Add("witness.test/w1+00000000+BAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Add("a+b+c")
	f.Fuzz(func(t *testing.T, s string) {
		name, key, err := ParseCosignerKey(s)
		if err != nil {
			return
		}
		if got := FormatCosignerKey(name, key); got != s {
			t.Fatalf("accepted %q, which formats as %q", s, got)
		}
	})
}

// FuzzIndexer checks the receipt index against the record decoder: a
// record that decodes is indexed exactly when it is a message step whose
// target is a receipt id, under that id.
func FuzzIndexer(f *testing.F) {
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	for i, e := range []Entry{
		stepEntry(ActionSigned, "acme", testReceiptID(1, 2)),
		{Actor: "a", Action: ActionSigned, Outcome: OutcomeSuccess, Target: "x", Details: map[string]string{"z": "1", "target": testReceiptID(1, 3)}},
		{Actor: "a", Action: ActionAPICall, Outcome: OutcomeSuccess, Target: testReceiptID(1, 4)},
	} {
		rec, err := encodeRecord(normalize(e, now), head{v: recordV2, writer: "0123456789abcdef", n: uint64(i)})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(rec)
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		ix := newIndexer()
		ix.add(line, 7, 1, 0)
		r, err := DecodeRecord(line)
		if err != nil {
			return
		}
		want := strings.HasPrefix(r.Action, "message.") && ValidReceiptID(r.Target)
		if (ix.n == 1) != want {
			t.Fatalf("indexed %v, want %v: %s", ix.n == 1, want, line)
		}
		if want {
			g := r.Target[groupStart:groupEnd]
			if n := ix.groups[g]; len(n) != 1 || n[0].suffix != r.Target[groupEnd:] || n[0].action != r.Action {
				t.Fatalf("indexed %+v for %s %s", ix.groups, r.Action, r.Target)
			}
		}
	})
}

// FuzzVerifyProofDocuments checks that the proof verifiers never panic,
// and that whatever they accept holds only canonical records of the
// receipt.
func FuzzVerifyProofDocuments(f *testing.F) {
	ctx := context.Background()
	c := openConn(f)
	entries, cps := plainStreams(f, c, "FUZZPROOF")
	keys := &testKeys{cur: newTestKey(f, "a")}
	l := openLog(f, entries, cps, keys, proofStreams(f, c, "FUZZPROOF"))
	id := testReceiptID(1, 1)
	if err := l.AppendAll(ctx, testEntry(0, "acme"), stepEntry(ActionSigned, "acme", id), testEntry(1, "acme")); err != nil {
		f.Fatal(err)
	}
	if _, err := l.signCheckpoint(ctx, true); err != nil {
		f.Fatal(err)
	}
	p, err := l.ReceiptProof(ctx, "acme", id)
	if err != nil {
		f.Fatal(err)
	}
	var b bytes.Buffer
	_ = EncodeProof(&b, p)
	f.Add(b.Bytes())
	cp, err := l.ConsistencyProof(ctx, 0, 0, true)
	if err != nil {
		f.Fatal(err)
	}
	b.Reset()
	_ = EncodeProof(&b, cp)
	f.Add(b.Bytes())
	f.Add([]byte(`{"type":"sealpost.receipt-proof/v1","entries":[{}]}`))
	ks := keys.keySet()
	f.Fuzz(func(t *testing.T, doc []byte) {
		if rp, _, err := VerifyReceiptProof(doc, ks, nil); err == nil {
			for _, e := range rp.Entries {
				if r, err := DecodeRecord(e.Record); err != nil || r.Target != rp.ReceiptID {
					t.Fatalf("accepted entry %s of %s", e.Record, rp.ReceiptID)
				}
			}
		}
		_, _, _, _ = VerifyConsistencyProof(doc, ks, nil)
	})
}
