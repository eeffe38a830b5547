package audit

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sealpost/sealpost/queue"
	"github.com/sealpost/sealpost/signer"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

// The reference below follows RFC 9162 section 2.1 directly and shares no
// code with the package: MTH by recursion on the largest power of two
// smaller than n, and the inclusion verification algorithm of 2.1.3.2.

func refLeaf(d []byte) []byte {
	s := sha256.Sum256(append([]byte{0}, d...))
	return s[:]
}

func refNode(l, r []byte) []byte {
	s := sha256.Sum256(append(append([]byte{1}, l...), r...))
	return s[:]
}

func refMTH(leaves [][]byte) []byte {
	switch n := len(leaves); n {
	case 0:
		s := sha256.Sum256(nil)
		return s[:]
	case 1:
		return leaves[0]
	default:
		k := 1
		for k*2 < n {
			k *= 2
		}
		return refNode(refMTH(leaves[:k]), refMTH(leaves[k:]))
	}
}

func refVerifyInclusion(index, size uint64, leaf []byte, proof [][]byte, root []byte) bool {
	if index >= size {
		return false
	}
	fn, sn := index, size-1
	r := leaf
	for _, p := range proof {
		if sn == 0 {
			return false
		}
		if fn&1 == 1 || fn == sn {
			r = refNode(p, r)
			for fn&1 == 0 && fn != 0 {
				fn >>= 1
				sn >>= 1
			}
		} else {
			r = refNode(r, p)
		}
		fn >>= 1
		sn >>= 1
	}
	return sn == 0 && bytes.Equal(r, root)
}

// storedLeaves returns the leaf hashes of every stored record, in order.
func storedLeaves(t *testing.T, s *queue.Stream) [][]byte {
	t.Helper()
	var out [][]byte
	err := s.Read(context.Background(), queue.ReadOptions{}, func(m *queue.Msg) error {
		for _, line := range bytes.Split(m.Data, []byte("\n")) {
			out = append(out, refLeaf(line))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

type parsedExport struct {
	cp      exportCheckpoint
	entries []exportEntry
	end     exportEnd
}

func parseExport(t *testing.T, b []byte) parsedExport {
	t.Helper()
	var p parsedExport
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) < 2 {
		t.Fatalf("export has %d lines", len(lines))
	}
	if err := json.Unmarshal([]byte(lines[0]), &p.cp); err != nil {
		t.Fatal(err)
	}
	for _, l := range lines[1 : len(lines)-1] {
		var e exportEntry
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatal(err)
		}
		p.entries = append(p.entries, e)
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &p.end); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestExportProofsAgainstReference(t *testing.T) {
	ctx := context.Background()
	c := openConn(t)
	keys := &testKeys{cur: newTestKey(t, "a")}
	for _, n := range []int{1, 2, 3, 5, 8, 13, 64, 100} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			entries, cps := plainStreams(t, c, fmt.Sprintf("EXP%d", n))
			l := openLog(t, entries, cps, keys, func(c *Config) { c.BatchMax = 3 })
			for i := range n {
				tenant := "acme"
				if i%3 == 1 {
					tenant = "beta"
				}
				if err := l.Append(ctx, testEntry(i, tenant)); err != nil {
					t.Fatal(err)
				}
				if i == n/2 {
					if _, err := l.signCheckpoint(ctx, true); err != nil {
						t.Fatal(err)
					}
				}
			}
			for _, tenant := range []string{"", "acme", "beta"} {
				var buf bytes.Buffer
				if err := l.Export(ctx, &buf, Filter{Tenant: tenant}); err != nil {
					t.Fatal(err)
				}
				if err := VerifyExport(bytes.NewReader(buf.Bytes()), keys.keySet()); err != nil {
					t.Fatalf("VerifyExport(tenant %q): %v", tenant, err)
				}
				p := parseExport(t, buf.Bytes())
				leaves := storedLeaves(t, entries)
				if p.cp.Size != uint64(n) || uint64(len(leaves)) != p.cp.Size {
					t.Fatalf("checkpoint size %d, %d stored, want %d", p.cp.Size, len(leaves), n)
				}
				root, _ := base64.StdEncoding.DecodeString(p.cp.Root)
				if !bytes.Equal(refMTH(leaves), root) {
					t.Fatal("checkpoint root differs from the reference MTH of the stored leaves")
				}
				want := 0
				for i := range n {
					if tenant == "" || (tenant == "beta") == (i%3 == 1) {
						want++
					}
				}
				if len(p.entries) != want || p.end.Entries != want {
					t.Fatalf("tenant %q: %d entries, end says %d, want %d", tenant, len(p.entries), p.end.Entries, want)
				}
				for _, e := range p.entries {
					r, err := DecodeRecord(e.Record)
					if err != nil {
						t.Fatal(err)
					}
					if tenant != "" && r.Tenant != tenant {
						t.Fatalf("tenant %q export holds an entry of %q", tenant, r.Tenant)
					}
					proof := make([][]byte, len(e.Proof))
					for i, s := range e.Proof {
						proof[i], _ = base64.StdEncoding.DecodeString(s)
					}
					if !refVerifyInclusion(e.Index, p.cp.Size, refLeaf(e.Record), proof, root) {
						t.Fatalf("entry %d: proof fails the reference check", e.Index)
					}
					if e.Index+1 < p.cp.Size && refVerifyInclusion(e.Index+1, p.cp.Size, refLeaf(e.Record), proof, root) {
						t.Fatalf("entry %d: proof also verifies at another index", e.Index)
					}
				}
			}
		})
	}
}

func TestVerifyExportRejects(t *testing.T) {
	ctx := context.Background()
	c := openConn(t)
	keys := &testKeys{cur: newTestKey(t, "a")}
	entries, cps := plainStreams(t, c, "EXPBAD")
	l := openLog(t, entries, cps, keys, nil)
	for i := range 10 {
		if err := l.Append(ctx, testEntry(i, "acme")); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := l.Export(ctx, &buf, Filter{Tenant: "acme"}); err != nil {
		t.Fatal(err)
	}
	good := buf.String()
	lines := strings.SplitAfter(good, "\n")
	other := &testKeys{cur: newTestKey(t, "other")}
	tests := []struct {
		name string
		data string
		keys *testKeys
		want string
	}{
		{"edited record", strings.Replace(good, `"req-0003"`, `"req-0004"`, 1), keys, "not in the signed tree"},
		{"no end line", strings.Join(lines[:len(lines)-2], ""), keys, "incomplete"},
		{"entry dropped", lines[0] + strings.Join(lines[2:], ""), keys, "end line counts"},
		{"unknown key", good, other, "signature"},
		{"empty", "", keys, "empty"},
		{"entries swapped", lines[0] + lines[2] + lines[1] + strings.Join(lines[3:], ""), keys, "is not after"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := VerifyExport(strings.NewReader(tt.data), tt.keys.keySet())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("VerifyExport = %v, want an error mentioning %q", err, tt.want)
			}
		})
	}
	if err := VerifyExport(strings.NewReader(good), keys.keySet()); err != nil {
		t.Fatalf("untouched export: %v", err)
	}
}

func TestHandlerExportsOwnTenant(t *testing.T) {
	ctx := context.Background()
	c := openConn(t)
	keys := &testKeys{cur: newTestKey(t, "a")}
	entries, cps := plainStreams(t, c, "HTTPEXP")
	l := openLog(t, entries, cps, keys, nil)
	for i := range 12 {
		tenant := "acme"
		if i%2 == 0 {
			tenant = "beta"
		}
		if err := l.Append(ctx, testEntry(i, tenant)); err != nil {
			t.Fatal(err)
		}
	}
	h := l.Handler()
	day := "since=2026-11-23T00:00:00Z&until=2026-11-24T00:00:00Z"
	tests := []struct {
		name   string
		tenant string
		query  string
		status int
	}{
		{"ok", "acme", day, 200},
		{"no tenant", "", day, 401},
		{"bad time", "acme", "since=yesterday&until=2026-11-24T00:00:00Z", 400},
		{"reversed", "acme", "since=2026-11-24T00:00:00Z&until=2026-11-23T00:00:00Z", 400},
		{"too long", "acme", "since=2026-01-01T00:00:00Z&until=2026-11-24T00:00:00Z", 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest("GET", "/v1/audit?"+tt.query, nil)
			if tt.tenant != "" {
				req = req.WithContext(WithTenant(req.Context(), tt.tenant))
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.status, rec.Body)
			}
			if tt.status != 200 {
				return
			}
			if err := VerifyExport(bytes.NewReader(rec.Body.Bytes()), keys.keySet()); err != nil {
				t.Fatal(err)
			}
			p := parseExport(t, rec.Body.Bytes())
			if len(p.entries) != 6 {
				t.Fatalf("%d entries, want the tenant's 6", len(p.entries))
			}
			for _, e := range p.entries {
				if !strings.Contains(string(e.Record), `"tenant":"acme"`) {
					t.Fatalf("export for acme holds %s", e.Record)
				}
			}
		})
	}
	// The export was itself audited.
	if got, _ := l.Size(ctx); got != 13 {
		t.Fatalf("size %d after one export, want 13", got)
	}
	// While the export slots are taken, another export waits its turn.
	for range maxTenantExports {
		l.exportSlots <- struct{}{}
	}
	req := httptest.NewRequest("GET", "/v1/audit?"+day, nil).WithContext(WithTenant(ctx, "acme"))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("export with every slot taken: %d %q", rec.Code, rec.Header().Get("Retry-After"))
	}
}

func TestCheckpointHandlerAndGolden(t *testing.T) {
	ctx := context.Background()
	c := openConn(t)
	keys := &testKeys{cur: newTestKey(t, "a"), prev: []signer.PrivateKey{newTestKey(t, "b")}}
	entries, cps := plainStreams(t, c, "GOLDEN")
	l := openLog(t, entries, cps, keys, func(c *Config) { c.Writers = 1 })
	l.writers[0].id = "00000000000000a1" // for the golden export
	rec := httptest.NewRecorder()
	l.CheckpointHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/v1/audit/checkpoint", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("status %d before any checkpoint, want 503", rec.Code)
	}
	for i := range 5 {
		e := testEntry(i, "acme")
		e.Time = time.Date(2026, 11, 23, 9, 0, i, 0, time.UTC)
		if err := l.Append(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := l.Export(ctx, &buf, Filter{Tenant: "acme"}); err != nil {
		t.Fatal(err)
	}
	rec = httptest.NewRecorder()
	l.CheckpointHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/v1/audit/checkpoint", nil))
	if rec.Code != 200 || rec.Header().Get("Content-Type") != "text/plain; charset=utf-8" {
		t.Fatalf("status %d, content-type %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	if want := keys.cur.KID + "," + keys.prev[0].KID; rec.Header().Get("Audit-Key-Ids") != want {
		t.Errorf("Audit-Key-Ids %q, want %q", rec.Header().Get("Audit-Key-Ids"), want)
	}
	for _, g := range []struct {
		file string
		got  []byte
	}{{"checkpoint.golden", rec.Body.Bytes()}, {"export.golden.jsonl", buf.Bytes()}} {
		path := filepath.Join("testdata", g.file)
		if *update {
			if err := os.WriteFile(path, g.got, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(g.got, want) {
			t.Errorf("%s differs (run with -update):\n%s", g.file, g.got)
		}
	}
	// Each of the note's signatures verifies with its own key alone.
	for _, k := range []signer.PrivateKey{keys.cur, keys.prev[0]} {
		one := &testKeys{cur: k}
		if _, err := OpenCheckpoint(rec.Body.Bytes(), testOrigin, one.keySet()); err != nil {
			t.Errorf("checkpoint does not verify with %s: %v", k.KID, err)
		}
	}
	sc := bufio.NewScanner(bytes.NewReader(rec.Body.Bytes()))
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	// Three body lines, a blank line, two log signatures and the log's
	// timestamped cosignature.
	if len(lines) != 7 || lines[0] != testOrigin || lines[1] != "5" || lines[3] != "" || !strings.HasPrefix(lines[4], "— "+testOrigin+" ") {
		t.Fatalf("checkpoint is not in the C2SP form:\n%s", rec.Body)
	}
	cp, err := OpenCheckpoint(rec.Body.Bytes(), testOrigin, keys.keySet())
	if err != nil || !cp.Time.Equal(time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)) {
		t.Fatalf("signed time %v (%v), want the log's clock", cp.Time, err)
	}
	// A checkpoint signed before checkpoints carried a time still verifies,
	// without one.
	old, err := os.ReadFile(filepath.Join("testdata", "checkpoint-notime.golden"))
	if err != nil {
		t.Fatal(err)
	}
	if cp, err := OpenCheckpoint(old, testOrigin, keys.keySet()); err != nil || !cp.Time.IsZero() || cp.Size != 5 {
		t.Fatalf("checkpoint without a time: %+v, %v", cp, err)
	}
}
