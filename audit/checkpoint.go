package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/transparency-dev/merkle/compact"
	"golang.org/x/mod/sumdb/note"

	"github.com/sealpost/sealpost/queue"
	"github.com/sealpost/sealpost/signer"
)

// maxCheckpointRecord bounds a stored checkpoint record, in bytes.
const maxCheckpointRecord = 64 << 10

// checkpointRecord is what the checkpoints stream stores: the signed note
// (the only part verify trusts) plus hints that let a restarted process and
// verify resume from it without reading every entry.
type checkpointRecord struct {
	V    int    `json:"v"`
	Note string `json:"note"`
	// Size and Root repeat the note body.
	Size uint64 `json:"size"`
	Root string `json:"root"`
	// LastSeq is the entries stream sequence of the record at Size-1.
	LastSeq uint64 `json:"last_seq"`
	// LastLeaf is the leaf hash of the record at Size-1 (base64).
	LastLeaf string `json:"last_leaf,omitempty"`
	// LastAt is when the record at Size-1 was stored (at the latest).
	LastAt time.Time `json:"last_at,omitzero"`
	// Range is the compact range [0, Size): the hashes of the perfect
	// subtrees covering the tree, left to right (base64).
	Range []string `json:"range"`
	// KIDs are the keyring key ids that signed the note.
	KIDs []string  `json:"kids"`
	Time time.Time `json:"time"`

	seq uint64 // stream sequence of this record
}

// Checkpoint is a parsed checkpoint body (C2SP tlog-checkpoint).
type Checkpoint struct {
	Origin string
	Size   uint64
	Root   []byte
}

// formatCheckpoint returns the checkpoint body: "<origin>\n<size>\n<base64
// root>\n".
func formatCheckpoint(origin string, size uint64, root []byte) string {
	return origin + "\n" + strconv.FormatUint(size, 10) + "\n" + b64.EncodeToString(root) + "\n"
}

// ParseCheckpoint parses a checkpoint body (the note text without
// signatures). Extension lines after the root are allowed and ignored.
func ParseCheckpoint(text string) (Checkpoint, error) {
	var c Checkpoint
	if len(text) > maxCheckpointRecord {
		return c, errors.New("checkpoint too large")
	}
	lines := strings.SplitN(text, "\n", 4)
	if len(lines) < 4 {
		return c, errors.New("checkpoint has fewer than three lines")
	}
	if lines[0] == "" || !validOrigin(lines[0]) {
		return c, errors.New("checkpoint origin is empty or has spaces")
	}
	size, err := strconv.ParseUint(lines[1], 10, 64)
	if err != nil || (len(lines[1]) > 1 && lines[1][0] == '0') {
		return c, errors.New("checkpoint size is not a decimal number")
	}
	root, err := b64.Strict().DecodeString(lines[2])
	if err != nil || len(root) != sha256.Size {
		return c, errors.New("checkpoint root is not a base64 sha-256 hash")
	}
	return Checkpoint{Origin: lines[0], Size: size, Root: root}, nil
}

// noteSigner signs notes with an Ed25519 keyring key under the origin name,
// as C2SP signed-note specifies (key hash over name, 0x01 and the key).
type noteSigner struct {
	name string
	hash uint32
	key  ed25519.PrivateKey
}

func newNoteSigner(name string, k signer.PrivateKey) (*noteSigner, error) {
	pub := k.Public()
	if pub == nil {
		return nil, errors.New("audit: signing key is not an ed25519 key")
	}
	vkey, err := note.NewEd25519VerifierKey(name, pub)
	if err != nil {
		return nil, fmt.Errorf("audit: verifier key: %w", err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, fmt.Errorf("audit: verifier key: %w", err)
	}
	return &noteSigner{name: name, hash: v.KeyHash(), key: k.Key}, nil
}

func (s *noteSigner) Name() string    { return s.name }
func (s *noteSigner) KeyHash() uint32 { return s.hash }
func (s *noteSigner) Sign(msg []byte) ([]byte, error) {
	return ed25519.Sign(s.key, msg), nil
}

// NoteVerifiers returns note verifiers for every key in keys under name
// origin. It is what verify and VerifyExport use to check checkpoints.
func NoteVerifiers(origin string, keys *signer.KeySet) (note.Verifiers, error) {
	if keys == nil {
		return nil, errors.New("audit: no verification keys")
	}
	var vs []note.Verifier
	for _, k := range keys.Keys {
		vkey, err := note.NewEd25519VerifierKey(origin, k.Key)
		if err != nil {
			continue
		}
		v, err := note.NewVerifier(vkey)
		if err != nil {
			return nil, fmt.Errorf("audit: verifier for %s: %w", k.KID, err)
		}
		vs = append(vs, v)
	}
	return note.VerifierList(vs...), nil
}

// OpenCheckpoint verifies a signed checkpoint note against keys and parses
// its body; the origin must be origin (empty accepts the note's own).
func OpenCheckpoint(signed []byte, origin string, keys *signer.KeySet) (Checkpoint, error) {
	if origin == "" {
		first, _, _ := bytes.Cut(signed, []byte{'\n'})
		origin = string(first)
	}
	vs, err := NoteVerifiers(origin, keys)
	if err != nil {
		return Checkpoint{}, err
	}
	n, err := note.Open(signed, vs)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint signature: %w", err)
	}
	c, err := ParseCheckpoint(n.Text)
	if err != nil {
		return Checkpoint{}, err
	}
	if c.Origin != origin {
		return Checkpoint{}, fmt.Errorf("checkpoint origin %q, want %q", c.Origin, origin)
	}
	return c, nil
}

// compactRange rebuilds the compact range the record carries and checks it
// against the record's root.
func (r *checkpointRecord) compactRange() (*compact.Range, error) {
	hashes := make([][]byte, len(r.Range))
	for i, s := range r.Range {
		h, err := b64.Strict().DecodeString(s)
		if err != nil || len(h) != sha256.Size {
			return nil, errors.New("range hash is not base64 sha-256")
		}
		hashes[i] = h
	}
	rng, err := rangeFactory.NewRange(0, r.Size, hashes)
	if err != nil {
		return nil, err
	}
	root, err := rootOf(rng)
	if err != nil {
		return nil, err
	}
	if b64.EncodeToString(root) != r.Root {
		return nil, errors.New("range does not hash to the root")
	}
	if r.Size > 0 && r.lastLeaf() == nil {
		return nil, errors.New("no last leaf")
	}
	return rng, nil
}

func (r *checkpointRecord) lastLeaf() []byte {
	h, err := b64.Strict().DecodeString(r.LastLeaf)
	if err != nil || len(h) != sha256.Size {
		return nil
	}
	return h
}

// rootOf returns the RFC 6962 root of a range starting at 0.
func rootOf(rng *compact.Range) ([]byte, error) {
	if rng.End() == 0 {
		return hasher.EmptyRoot(), nil
	}
	return rng.GetRootHash(nil)
}

func decodeCheckpointRecord(m *queue.Msg) (*checkpointRecord, error) {
	if len(m.Data) > maxCheckpointRecord {
		return nil, fmt.Errorf("checkpoint record at seq %d is %d bytes, limit %d", m.Seq, len(m.Data), maxCheckpointRecord)
	}
	var r checkpointRecord
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return nil, fmt.Errorf("checkpoint record at seq %d: %w", m.Seq, err)
	}
	r.seq = m.Seq
	return &r, nil
}

// latestCheckpoint reads the newest stored checkpoint record.
func (l *Log) latestCheckpoint(ctx context.Context) (*checkpointRecord, error) {
	m, err := l.cps.Last(ctx, l.cfg.CheckpointSubject)
	if errors.Is(err, queue.ErrNotFound) {
		return nil, ErrNoCheckpoint
	}
	if err != nil {
		return nil, fmt.Errorf("audit: %w: %w", ErrUnavailable, err)
	}
	return decodeCheckpointRecord(m)
}

func (l *Log) setLastCheckpoint(r *checkpointRecord) {
	l.cpMu.Lock()
	defer l.cpMu.Unlock()
	if l.lastCP == nil || r.Size >= l.lastCP.Size {
		l.lastCP = r
		l.lastCPAt = r.Time
	}
}

// signCheckpoint signs the current tree and stores the checkpoint.
func (l *Log) signCheckpoint(ctx context.Context) (*checkpointRecord, error) {
	if l.cfg.ReadOnly {
		return nil, ErrReadOnly
	}
	now := l.cfg.Now()
	cur, prev, err := l.cfg.Keys.SigningKeys(ctx, now)
	if err != nil {
		return nil, fmt.Errorf("audit: signing keys: %w", err)
	}
	var signers []note.Signer
	var kids []string
	for _, k := range append([]signer.PrivateKey{cur}, prev...) {
		s, err := newNoteSigner(l.cfg.Origin, k)
		if err != nil {
			return nil, err
		}
		signers = append(signers, s)
		kids = append(kids, k.KID)
	}

	l.mu.Lock()
	if err := l.syncLocked(ctx); err != nil {
		l.mu.Unlock()
		return nil, err
	}
	size := l.rng.End()
	root, err := rootOf(l.rng)
	rec := &checkpointRecord{V: 1, Size: size, LastSeq: l.lastSeq, Time: now.UTC(), KIDs: kids}
	for _, h := range l.rng.Hashes() {
		rec.Range = append(rec.Range, b64.EncodeToString(h))
	}
	if l.lastLeaf != nil {
		rec.LastLeaf, rec.LastAt = b64.EncodeToString(l.lastLeaf), l.lastAt

	}
	l.mu.Unlock()
	if err != nil {
		return nil, err
	}
	rec.Root = b64.EncodeToString(root)
	signed, err := note.Sign(&note.Note{Text: formatCheckpoint(l.cfg.Origin, size, root)}, signers...)
	if err != nil {
		return nil, fmt.Errorf("audit: sign checkpoint: %w", err)
	}
	rec.Note = string(signed)
	data, err := json.Marshal(rec)
	if err != nil {
		return nil, err
	}
	c, cancel := context.WithTimeout(ctx, l.cfg.StoreTimeout)
	defer cancel()
	seq, err := l.cps.Append(c, l.cfg.CheckpointSubject, "", nil, data)
	if err != nil {
		l.m.checkpoints.WithLabelValues("error").Inc()
		return nil, fmt.Errorf("audit: %w: store checkpoint: %w", ErrUnavailable, err)
	}
	rec.seq = seq
	l.setLastCheckpoint(rec)
	l.m.checkpoints.WithLabelValues("ok").Inc()
	l.log.Debug("audit checkpoint signed", "size", size, "kid", cur.KID)
	return rec, nil
}

// checkpointIfGrown signs a checkpoint when the tree grew since the last one.
func (l *Log) checkpointIfGrown(ctx context.Context) (*checkpointRecord, error) {
	l.cpMu.Lock()
	last := l.lastCP
	l.cpMu.Unlock()
	if last != nil && l.Size() <= last.Size {
		return last, nil
	}
	return l.signCheckpoint(ctx)
}

// Run signs checkpoints until ctx ends: every CheckpointEvery when entries
// were appended, and at least every IdleCheckpointEvery otherwise.
func (l *Log) Run(ctx context.Context) {
	if l.cfg.ReadOnly {
		return
	}
	tick := time.NewTicker(l.cfg.CheckpointEvery)
	defer tick.Stop()
	for {
		l.cpMu.Lock()
		last, lastAt := l.lastCP, l.lastCPAt
		l.cpMu.Unlock()
		var err error
		if last == nil || l.cfg.Now().Sub(lastAt) >= l.cfg.IdleCheckpointEvery {
			_, err = l.signCheckpoint(ctx)
		} else {
			_, err = l.checkpointIfGrown(ctx)
		}
		if err != nil && ctx.Err() == nil {
			l.log.Error("audit checkpoint failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// Checkpoint returns the latest stored signed checkpoint (signed-note text).
func (l *Log) Checkpoint(ctx context.Context) ([]byte, error) {
	r, err := l.latestCheckpoint(ctx)
	if err != nil {
		return nil, err
	}
	return []byte(r.Note), nil
}

// CheckpointHandler serves GET /v1/audit/checkpoint: the latest signed
// checkpoint as text/plain, with the signing key ids in Audit-Key-Ids.
func (l *Log) CheckpointHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeProblem(w, http.StatusMethodNotAllowed, "method not allowed")
			return
		}
		rec, err := l.latestCheckpoint(r.Context())
		if err != nil {
			if !errors.Is(err, ErrNoCheckpoint) {
				l.log.Error("audit checkpoint read failed", "err", err)
			}
			w.Header().Set("Retry-After", "60")
			writeProblem(w, http.StatusServiceUnavailable, "no checkpoint available")
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("Audit-Key-Ids", strings.Join(rec.KIDs, ","))
		_, _ = w.Write([]byte(rec.Note))
	})
}

// writeProblem answers with an RFC 9457 problem document.
func writeProblem(w http.ResponseWriter, status int, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"type": "about:blank", "title": http.StatusText(status), "status": status, "detail": detail})
}
