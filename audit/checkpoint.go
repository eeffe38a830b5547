package audit

import (
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

// Checkpoint is a parsed checkpoint body (C2SP tlog-checkpoint), with what
// VerifyCheckpoint learnt from its signatures.
type Checkpoint struct {
	Origin string
	Size   uint64
	Root   []byte
	// Time is when the log signed the checkpoint, from the log's own
	// timestamped cosignature; zero for a checkpoint without one (signed
	// before sealpost added it).
	Time time.Time
	// Cosigned maps each witness of the policy whose cosignature verified
	// to the time of its cosignature.
	Cosigned map[string]time.Time
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

// OpenCheckpoint verifies a signed checkpoint note against keys and parses
// its body; the origin must be origin (empty accepts the note's own). It is
// VerifyCheckpoint without a witness policy.
func OpenCheckpoint(signed []byte, origin string, keys *signer.KeySet) (Checkpoint, error) {
	return VerifyCheckpoint(signed, origin, keys, nil)
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

// latestCheckpoint reads the newest stored checkpoint record. Checkpoints
// are stored with a compare-and-set on the subject, so the newest is also
// the largest.
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

// signCheckpoint integrates what was stored, signs the tree and, when
// store is set, stores the checkpoint. A checkpoint is stored only after
// the newest stored one (a compare-and-set on the subject), so stored
// checkpoints only grow; when another instance stored a larger one
// meanwhile, that one is returned.
func (l *Log) signCheckpoint(ctx context.Context, store bool) (*checkpointRecord, error) {
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
	// The signed time: the log's own timestamped cosignature with the
	// current key.
	stamp, err := NewCosigner(l.cfg.Origin, cur.Key, l.cfg.Now)
	if err != nil {
		return nil, err
	}
	signers = append(signers, stamp)
	var latest *checkpointRecord
	var latestSeq uint64
	if store {
		latest, err = l.latestCheckpoint(ctx)
		switch {
		case errors.Is(err, ErrNoCheckpoint):
		case err != nil:
			return nil, err
		default:
			latestSeq = latest.seq
		}
	}

	l.tmu.Lock()
	if store {
		l.keepProofsLocked(true)
	}
	if err := l.integrateLocked(ctx); err != nil {
		l.tmu.Unlock()
		l.m.checkpoints.WithLabelValues("error").Inc()
		return nil, err
	}
	t := &l.tree
	size := t.rng.End()
	root, err := rootOf(t.rng)
	rec := &checkpointRecord{V: 1, Size: size, LastSeq: t.lastSeq, Time: now.UTC(), KIDs: kids}
	for _, h := range t.rng.Hashes() {
		rec.Range = append(rec.Range, b64.EncodeToString(h))
	}
	if t.lastLeaf != nil {
		rec.LastLeaf, rec.LastAt = b64.EncodeToString(t.lastLeaf), t.lastAt
	}
	if err == nil && store && (latest == nil || latest.Size <= size) {
		// Proofs against this checkpoint must be possible once it is
		// stored: its tiles and index notes are written first.
		if werr := l.writeProofsLocked(ctx, true); werr != nil {
			l.tmu.Unlock()
			l.m.checkpoints.WithLabelValues("error").Inc()
			return nil, fmt.Errorf("audit: %w: %w", ErrUnavailable, werr)
		}
	}
	l.tmu.Unlock()
	if err != nil {
		return nil, err
	}
	if latest != nil && latest.Size > size {
		return latest, nil
	}
	rec.Root = b64.EncodeToString(root)
	signed, err := note.Sign(&note.Note{Text: formatCheckpoint(l.cfg.Origin, size, root)}, signers...)
	if err != nil {
		return nil, fmt.Errorf("audit: sign checkpoint: %w", err)
	}
	if !store {
		rec.Note = string(signed)
		return rec, nil
	}
	if l.wit != nil {
		prove := func(ctx context.Context, old uint64) ([][]byte, error) {
			if old > 0 && l.tiles == nil {
				return nil, ErrProofsUnavailable
			}
			return proveConsistency(ctx, l.tiles, old, size, root)
		}
		var n int
		signed, n = l.wit.cosign(ctx, signed, size, prove, l.m)
		l.m.cosignatures.Set(float64(n))
		if n < l.cfg.Witnesses.Quorum {
			l.log.Warn("audit: checkpoint stored without the witness quorum", "size", size, "cosignatures", n, "quorum", l.cfg.Witnesses.Quorum)
		}
	}
	rec.Note = string(signed)
	data, err := json.Marshal(rec)
	if err != nil {
		return nil, err
	}
	c, cancel := context.WithTimeout(ctx, l.cfg.StoreTimeout)
	defer cancel()
	seq, err := l.cps.Append(c, l.cfg.CheckpointSubject, "",
		map[string]string{"Nats-Expected-Last-Subject-Sequence": strconv.FormatUint(latestSeq, 10)}, data)
	if err != nil {
		l.m.checkpoints.WithLabelValues("error").Inc()
		if newer, lerr := l.latestCheckpoint(ctx); lerr == nil && newer.seq != latestSeq && newer.Size >= size {
			// Another instance stored one at least as large meanwhile.
			l.setLastCheckpoint(newer)
			return newer, nil
		}
		return nil, fmt.Errorf("audit: %w: store checkpoint: %w", ErrUnavailable, err)
	}
	rec.seq = seq
	l.setLastCheckpoint(rec)
	l.m.checkpoints.WithLabelValues("ok").Inc()
	l.log.Debug("audit checkpoint signed", "size", size, "kid", cur.KID)
	l.putOutside(ctx, rec, root, data)
	return rec, nil
}

// checkpointIfGrown stores a checkpoint when the tree grew since the last
// one, and returns the newest checkpoint.
func (l *Log) checkpointIfGrown(ctx context.Context) (*checkpointRecord, error) {
	size, err := l.Size(ctx)
	if err != nil {
		return nil, err
	}
	l.cpMu.Lock()
	last := l.lastCP
	l.cpMu.Unlock()
	if last != nil && size <= last.Size {
		return last, nil
	}
	return l.signCheckpoint(ctx, true)
}

// leader reports whether this instance signs checkpoints: it holds the
// lease, or there is no lease.
func (l *Log) leader(ctx context.Context) bool {
	if l.cfg.Lease == nil {
		return true
	}
	held, err := l.cfg.Lease.Hold(ctx)
	if err != nil {
		l.log.Warn("audit: checkpointer lease", "err", err)
	}
	return held
}

func (l *Log) releaseLease(ctx context.Context) {
	if l.cfg.Lease != nil {
		l.cfg.Lease.Release(ctx)
	}
}

// integrateEvery is how often the checkpointer reads new entries into the
// tree, and how often it renews its lease.
const integrateEvery = time.Second

// Run signs checkpoints until ctx ends, while this instance holds the
// checkpointer lease (another instance takes over within the lease's TTL
// when this one dies): every CheckpointEvery when entries were appended,
// and at least every IdleCheckpointEvery otherwise. In between it reads
// new entries into the tree every second, so a checkpoint is quick to
// sign.
func (l *Log) Run(ctx context.Context) {
	if l.cfg.ReadOnly {
		return
	}
	tick := time.NewTicker(min(integrateEvery, l.cfg.CheckpointEvery))
	defer tick.Stop()
	wasLeader := false
	var signed time.Time  // when this instance last stored a checkpoint
	var checked time.Time // when this instance last checked the log's tail
	for {
		isLeader := l.leader(ctx)
		l.m.leader.Set(b2f(isLeader))
		if isLeader != wasLeader {
			// The checkpointer keeps the proof data; it starts from what
			// the previous holder wrote.
			l.tmu.Lock()
			l.keepProofsLocked(isLeader)
			l.tmu.Unlock()
		}
		if isLeader && !wasLeader {
			// Start from what the previous holder signed.
			if cp, err := l.latestCheckpoint(ctx); err == nil {
				l.setLastCheckpoint(cp)
			}
			signed = time.Now()
			l.log.Info("audit: this instance signs checkpoints now")
		}
		wasLeader = isLeader
		if isLeader {
			ok, err := l.checkpointIfDue(ctx, time.Since(signed) >= l.cfg.CheckpointEvery)
			if err != nil && ctx.Err() == nil && !errors.Is(err, ErrTampered) {
				// An inconsistent log was reported when it was found.
				l.log.Error("audit checkpoint failed", "err", err)
			}
			if ok {
				signed = time.Now()
			}
		} else if time.Since(checked) >= tailCheckEvery {
			// The checkpointer finds what the other instances would not:
			// they look at the newest checkpoints only.
			checked = time.Now()
			if err := l.CheckTail(ctx); err != nil && !errors.Is(err, ErrTampered) && ctx.Err() == nil {
				l.log.Warn("audit: checking the log's tail failed", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// checkpointIfDue integrates new entries and stores a checkpoint when one
// is due: there is none yet, the idle interval passed, or the tree grew and
// cadence says the interval since the last one passed.
func (l *Log) checkpointIfDue(ctx context.Context, cadence bool) (bool, error) {
	size, err := l.Size(ctx)
	if err != nil {
		return false, err
	}
	l.cpMu.Lock()
	last, lastAt := l.lastCP, l.lastCPAt
	l.cpMu.Unlock()
	if last != nil && l.cfg.Now().Sub(lastAt) < l.cfg.IdleCheckpointEvery && (size <= last.Size || !cadence) {
		return false, nil
	}
	_, err = l.signCheckpoint(ctx, true)
	return err == nil, err
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
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

// problemNames are the problem types (suffixes of
// https://sealpost.dev/problems/, the API's vocabulary) of the statuses
// these handlers answer.
var problemNames = map[int]string{400: "invalid-request", 401: "unauthorized", 404: "not-found", 405: "method-not-allowed", 429: "rate-limited", 500: "internal", 503: "unavailable"}

// writeProblem answers with an RFC 9457 problem document.
func writeProblem(w http.ResponseWriter, status int, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"type": "https://sealpost.dev/problems/" + problemNames[status],
		"title": http.StatusText(status), "status": status, "detail": detail})
}
