package witness

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/sealpost/sealpost/audit"
	"github.com/sealpost/sealpost/signer"
)

const origin = "sealpost.test/audit"

func seedKey(t testing.TB, name string) signer.PrivateKey {
	t.Helper()
	seed := sha256.Sum256([]byte("witness test key " + name))
	k, err := signer.NewPrivateKeyFromSeed(seed[:])
	if err != nil {
		t.Fatal(err)
	}
	return k
}

type staticKeys struct{ set *signer.KeySet }

func (s staticKeys) KeySet(context.Context) (*signer.KeySet, error) { return s.set, nil }

func keySet(ks ...signer.PrivateKey) *signer.KeySet {
	set := &signer.KeySet{}
	for _, k := range ks {
		set.Keys = append(set.Keys, signer.PublicKey{KID: k.KID, Key: k.Public()})
	}
	return set
}

// memState is a StateStore in memory that can be made to fail.
type memState struct {
	mu   sync.Mutex
	doc  []byte
	fail bool
}

func (m *memState) Load() ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return bytes.Clone(m.doc), nil
}

func (m *memState) Save(doc []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail {
		return errors.New("disk full")
	}
	m.doc = bytes.Clone(doc)
	return nil
}

// edSigner signs notes as a log: Ed25519 under the origin name.
type edSigner struct {
	name string
	hash uint32
	key  ed25519.PrivateKey
}

func newEdSigner(t testing.TB, name string, k signer.PrivateKey) *edSigner {
	t.Helper()
	vkey, err := note.NewEd25519VerifierKey(name, k.Public())
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return &edSigner{name: name, hash: v.KeyHash(), key: k.Key}
}

func (s *edSigner) Name() string                    { return s.name }
func (s *edSigner) KeyHash() uint32                 { return s.hash }
func (s *edSigner) Sign(msg []byte) ([]byte, error) { return ed25519.Sign(s.key, msg), nil }

// memTree is a Merkle tree in memory, built with x/mod's tlog.
type memTree struct {
	hashes []tlog.Hash
	n      int64
}

func (m *memTree) ReadHashes(idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		out[i] = m.hashes[x]
	}
	return out, nil
}

func newTree(t testing.TB, prefix string, n int) *memTree {
	m := &memTree{}
	for i := range n {
		hs, err := tlog.StoredHashes(m.n, []byte(fmt.Sprintf("%s %d", prefix, i)), m)
		if err != nil {
			t.Fatal(err)
		}
		m.hashes = append(m.hashes, hs...)
		m.n++
	}
	return m
}

func (m *memTree) root(t testing.TB, size int64) []byte {
	h, err := tlog.TreeHash(size, m)
	if err != nil {
		t.Fatal(err)
	}
	return h[:]
}

func (m *memTree) proof(t testing.TB, from, to int64) [][]byte {
	if from == 0 || from == to {
		return nil
	}
	p, err := tlog.ProveTree(to, from, m)
	if err != nil {
		t.Fatal(err)
	}
	out := make([][]byte, len(p))
	for i := range p {
		out[i] = p[i][:]
	}
	return out
}

func signedCheckpoint(t testing.TB, s note.Signer, origin string, size int64, root []byte) []byte {
	t.Helper()
	text := origin + "\n" + strconv.FormatInt(size, 10) + "\n" + base64.StdEncoding.EncodeToString(root) + "\n"
	b, err := note.Sign(&note.Note{Text: text}, s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func addBody(old int64, proof [][]byte, cp []byte) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "old %d\n", old)
	for _, h := range proof {
		b.WriteString(base64.StdEncoding.EncodeToString(h) + "\n")
	}
	b.WriteString("\n")
	b.Write(cp)
	return b.Bytes()
}

type testWitness struct {
	w     *Witness
	srv   *httptest.Server
	key   signer.PrivateKey
	state *memState
}

func startWitness(t testing.TB, name string, logKeys *signer.KeySet, state *memState) *testWitness {
	t.Helper()
	k := seedKey(t, name)
	if state == nil {
		state = &memState{}
	}
	w, err := New(Config{Name: name, Key: k.Key, State: state, Logs: []Log{{Origin: origin, Keys: staticKeys{logKeys}}},
		Now: func() time.Time { return time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC) }})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/w/add-checkpoint", w.Handler())
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &testWitness{w: w, srv: srv, key: k, state: state}
}

func (tw *testWitness) post(t testing.TB, body []byte) (int, string, string) {
	t.Helper()
	resp, err := http.Post(tw.srv.URL+"/w/add-checkpoint", "text/plain", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
}

func (tw *testWitness) policy() *audit.WitnessPolicy {
	return &audit.WitnessPolicy{Quorum: 1, Witnesses: []audit.Witness{{Name: tw.w.cfg.Name, Key: tw.key.Public(), URL: tw.srv.URL + "/w"}}}
}

func TestWitnessCosignsAndRefuses(t *testing.T) {
	logKey := seedKey(t, "log")
	logSigner := newEdSigner(t, origin, logKey)
	tw := startWitness(t, "witness.test/w1", keySet(logKey), nil)
	a := newTree(t, "a", 40)
	b := newTree(t, "b", 40) // another tree under the same key: a fork
	cp := func(tr *memTree, size int64) []byte {
		return signedCheckpoint(t, logSigner, origin, size, tr.root(t, size))
	}

	// The first checkpoint, with old size 0, is cosigned.
	status, _, body := tw.post(t, addBody(0, nil, cp(a, 10)))
	if status != http.StatusOK {
		t.Fatalf("first checkpoint: %d %s", status, body)
	}
	cosigned := append(cp(a, 10), body...)
	got, err := audit.VerifyCheckpoint(cosigned, origin, keySet(logKey), tw.policy())
	if err != nil || got.Cosigned["witness.test/w1"].IsZero() {
		t.Fatalf("cosigned checkpoint: %+v, %v", got, err)
	}
	// The cosignature is the C2SP tlog-cosignature/v1 over the body, checked
	// here with crypto/ed25519 alone.
	raw, _ := base64.StdEncoding.DecodeString(strings.Fields(body)[2])
	ts := binary.BigEndian.Uint64(raw[4:12])
	msg := fmt.Sprintf("cosignature/v1\ntime %d\n%s\n%d\n%s\n", ts, origin, 10, base64.StdEncoding.EncodeToString(a.root(t, 10)))
	if !ed25519.Verify(tw.key.Public(), []byte(msg), raw[12:]) || ts != uint64(time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC).Unix()) {
		t.Fatal("the cosignature does not verify as tlog-cosignature/v1")
	}
	// A larger tree with a consistency proof from the witness's size.
	if status, _, body := tw.post(t, addBody(10, a.proof(t, 10, 20), cp(a, 20))); status != http.StatusOK {
		t.Fatalf("size 20: %d %s", status, body)
	}
	// The same tree again (an idle checkpoint) is cosigned again.
	if status, _, body := tw.post(t, addBody(20, nil, cp(a, 20))); status != http.StatusOK {
		t.Fatalf("size 20 again: %d %s", status, body)
	}

	tests := []struct {
		name   string
		body   []byte
		status int
		size   string // body of a 409 with text/x.tlog.size
	}{
		{"rollback, old size of the witness", addBody(20, nil, cp(a, 15)), http.StatusBadRequest, ""},
		{"rollback, old size of the checkpoint", addBody(15, nil, cp(a, 15)), http.StatusConflict, "20\n"},
		{"rollback from scratch", addBody(0, nil, cp(a, 15)), http.StatusConflict, "20\n"},
		{"fork, same size", addBody(20, nil, cp(b, 20)), http.StatusConflict, "20\n"},
		{"fork, larger tree", addBody(20, b.proof(t, 20, 30), cp(b, 30)), http.StatusUnprocessableEntity, ""},
		{"bad proof", addBody(20, a.proof(t, 10, 30), cp(a, 30)), http.StatusUnprocessableEntity, ""},
		{"unknown origin", addBody(0, nil, signedCheckpoint(t, newEdSigner(t, "other.test/log", logKey), "other.test/log", 5, a.root(t, 5))), http.StatusNotFound, ""},
		{"unknown key", addBody(20, a.proof(t, 20, 30), signedCheckpoint(t, newEdSigner(t, origin, seedKey(t, "x")), origin, 30, a.root(t, 30))), http.StatusForbidden, ""},
		{"no old line", cp(a, 30), http.StatusBadRequest, ""},
		{"leading zero", append([]byte("old 020\n\n"), cp(a, 30)...), http.StatusBadRequest, ""},
		{"proof from 0", addBody(0, a.proof(t, 10, 30), cp(a, 30)), http.StatusBadRequest, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, ctype, body := tw.post(t, tt.body)
			if status != tt.status {
				t.Fatalf("status %d, want %d: %s", status, tt.status, body)
			}
			if tt.size != "" && (ctype != "text/x.tlog.size" || body != tt.size) {
				t.Fatalf("409 answer %q %q, want text/x.tlog.size %q", ctype, body, tt.size)
			}
		})
	}
	if size, root := tw.w.Latest(origin); size != 20 || root != base64.StdEncoding.EncodeToString(a.root(t, 20)) {
		t.Fatalf("witness state %d %s after refusals, want a's size 20", size, root)
	}

	// The state survives a restart; a save that fails cosigns nothing.
	again := startWitness(t, "witness.test/w1", keySet(logKey), tw.state)
	if size, _ := again.w.Latest(origin); size != 20 {
		t.Fatalf("restarted witness holds size %d", size)
	}
	again.state.fail = true
	if status, _, _ := again.post(t, addBody(20, a.proof(t, 20, 40), cp(a, 40))); status != http.StatusInternalServerError {
		t.Fatalf("unsaved state: %d", status)
	}
	if size, _ := again.w.Latest(origin); size != 20 {
		t.Fatalf("witness moved to %d without saving", size)
	}
}

func FuzzParseRequest(f *testing.F) {
	f.Add([]byte("old 0\n\nsealpost.test/audit\n1\nAAAA\n\n— x AAAA\n"))
	f.Add([]byte("old 20852014\nPlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=\n\n"))
	f.Add([]byte("old 01\n\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseRequest(b)
		if err != nil {
			return
		}
		if len(r.proof) > maxProofLines {
			t.Fatalf("%d proof lines accepted", len(r.proof))
		}
		if !bytes.HasPrefix(b, []byte("old "+strconv.FormatUint(r.old, 10)+"\n")) {
			t.Fatalf("old size %d from %q", r.old, b)
		}
	})
}
