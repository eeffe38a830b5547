// Package witness is a minimal transparency log witness (C2SP
// tlog-witness): it keeps, for each log it knows, the newest checkpoint it
// verified, and cosigns a new checkpoint (C2SP tlog-cosignature, Ed25519,
// timestamped) only when a consistency proof shows that the new tree
// extends the one it holds. It refuses a rollback (a smaller tree) and a
// fork (another root for a size, or a tree that does not extend its own).
//
// A customer or a second region runs it (`sealpost witness`) so that
// nobody, the gateway's operator included, can show a rolled back or
// forked audit log without the witness's cosignature missing from it.
package witness

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/sealpost/sealpost/audit"
	"github.com/sealpost/sealpost/signer"
)

// StateStore keeps the witness's state document. Save must replace it
// atomically and durably (write, sync, rename): a cosignature is only
// returned once its state is saved.
type StateStore interface {
	// Load returns the saved document, or nil when none was saved.
	Load() ([]byte, error)
	Save(doc []byte) error
}

// KeySource hands out the public keys a log signs its checkpoints with
// (the log's JWKS or key history, refreshed as the log rotates keys).
type KeySource interface {
	KeySet(ctx context.Context) (*signer.KeySet, error)
}

// Log is a log the witness cosigns.
type Log struct {
	// Origin is the checkpoints' origin line.
	Origin string
	Keys   KeySource
}

// Config configures a Witness.
type Config struct {
	// Name is the witness's key name, e.g. "witness.example.com/w1".
	// Required.
	Name string
	// Key is the witness's Ed25519 private key. Required.
	Key ed25519.PrivateKey
	// State keeps the newest cosigned checkpoint of each log; it is saved
	// before every cosignature. Required.
	State StateStore
	// Logs the witness cosigns. At least one is required.
	Logs   []Log
	Logger *slog.Logger
	// Now is the clock of the cosignatures; default time.Now.
	Now func() time.Time
}

// Witness serves add-checkpoint.
type Witness struct {
	cfg    Config
	log    *slog.Logger
	signer note.Signer
	logs   map[string]Log

	mu    sync.Mutex // held from the size check to the persisted state
	state state
}

// state is the state file's content.
type state struct {
	Logs map[string]logState `json:"logs"`
}

// logState is the newest checkpoint cosigned for one origin.
type logState struct {
	Size uint64 `json:"size"`
	Root string `json:"root"`
	// Note is the checkpoint as submitted: evidence of what was cosigned.
	Note string    `json:"note"`
	At   time.Time `json:"at"`
}

// maxStateFile bounds the state file.
const maxStateFile = 16 << 20

// New loads the state file (a missing one is an empty state) and returns
// the witness.
func New(c Config) (*Witness, error) {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.State == nil {
		return nil, errors.New("witness: a state store is required")
	}
	if len(c.Logs) == 0 {
		return nil, errors.New("witness: at least one log is required")
	}
	s, err := audit.NewCosigner(c.Name, c.Key, c.Now)
	if err != nil {
		return nil, fmt.Errorf("witness: %w", err)
	}
	w := &Witness{cfg: c, log: c.Logger, signer: s, logs: map[string]Log{}, state: state{Logs: map[string]logState{}}}
	for _, l := range c.Logs {
		if l.Origin == "" || l.Keys == nil {
			return nil, errors.New("witness: a log needs an origin and keys")
		}
		w.logs[l.Origin] = l
	}
	b, err := c.State.Load()
	switch {
	case err != nil:
		return nil, fmt.Errorf("witness: state: %w", err)
	case b == nil:
	case len(b) > maxStateFile:
		return nil, fmt.Errorf("witness: state larger than %d bytes", maxStateFile)
	default:
		if err := json.Unmarshal(b, &w.state); err != nil {
			return nil, fmt.Errorf("witness: state: %w", err)
		}
		if w.state.Logs == nil {
			w.state.Logs = map[string]logState{}
		}
	}
	return w, nil
}

// VerifierKey is the witness's C2SP verifier key, what logs and verifiers
// are configured with.
func (w *Witness) VerifierKey() string {
	return audit.FormatCosignerKey(w.cfg.Name, w.cfg.Key.Public().(ed25519.PublicKey))
}

// Latest returns the size and root the witness cosigned last for origin.
func (w *Witness) Latest(origin string) (uint64, string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.state.Logs[origin]
	return s.Size, s.Root
}

// Limits of a request.
const (
	maxRequest    = 128 << 10
	maxProofLines = 63
)

// request is a parsed add-checkpoint body.
type request struct {
	old   uint64
	proof [][]byte
	note  []byte
}

// errBadRequest marks a malformed request (400).
var errBadRequest = errors.New("malformed request")

func parseRequest(body []byte) (*request, error) {
	r := &request{}
	rd := bufio.NewReader(bytes.NewReader(body))
	line, err := rd.ReadString('\n')
	if err != nil {
		return nil, fmt.Errorf("%w: no old size line", errBadRequest)
	}
	num, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "old ")
	if !ok || num == "" || (len(num) > 1 && num[0] == '0') {
		return nil, fmt.Errorf("%w: the first line must be \"old <size>\"", errBadRequest)
	}
	if r.old, err = strconv.ParseUint(num, 10, 64); err != nil {
		return nil, fmt.Errorf("%w: old size: %v", errBadRequest, err)
	}
	for {
		line, err := rd.ReadString('\n')
		if err != nil {
			return nil, fmt.Errorf("%w: no empty line before the checkpoint", errBadRequest)
		}
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			break
		}
		if len(r.proof) == maxProofLines {
			return nil, fmt.Errorf("%w: more than %d proof lines", errBadRequest, maxProofLines)
		}
		h, err := base64.StdEncoding.Strict().DecodeString(line)
		if err != nil || len(h) != 32 {
			return nil, fmt.Errorf("%w: a proof line is not a base64 hash", errBadRequest)
		}
		r.proof = append(r.proof, h)
	}
	r.note, _ = io.ReadAll(rd)
	return r, nil
}

// Handler serves POST <prefix>/add-checkpoint as C2SP tlog-witness
// specifies: 404 for an unknown origin, 403 when no log key signed the
// checkpoint, 400 for an old size beyond the checkpoint, 409 with the
// witness's size (text/x.tlog.size) when the old size is not it, 409 for
// another root of the size it holds, 422 when the consistency proof does
// not verify, and 200 with the cosignature line once the new checkpoint
// is persisted.
func (w *Witness) Handler() http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			rw.Header().Set("Allow", "POST")
			http.Error(rw, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(rw, r.Body, maxRequest))
		if err != nil {
			http.Error(rw, "request too large", http.StatusRequestEntityTooLarge)
			return
		}
		status, ctype, answer := w.addCheckpoint(r.Context(), body)
		rw.Header().Set("Content-Type", ctype)
		rw.WriteHeader(status)
		_, _ = rw.Write(answer)
	})
}

func text(status int, format string, args ...any) (int, string, []byte) {
	return status, "text/plain; charset=utf-8", []byte(fmt.Sprintf(format, args...) + "\n")
}

// addCheckpoint handles one request and returns the answer.
func (w *Witness) addCheckpoint(ctx context.Context, body []byte) (int, string, []byte) {
	req, err := parseRequest(body)
	if err != nil {
		return text(http.StatusBadRequest, "%v", err)
	}
	origin, _, _ := bytes.Cut(req.note, []byte{'\n'})
	lg, ok := w.logs[string(origin)]
	if !ok {
		return text(http.StatusNotFound, "unknown log")
	}
	keys, err := lg.Keys.KeySet(ctx)
	if err != nil {
		w.log.Error("witness: log keys unavailable", "origin", lg.Origin, "err", err)
		return text(http.StatusServiceUnavailable, "log keys unavailable")
	}
	cp, err := audit.VerifyCheckpoint(req.note, lg.Origin, keys, nil)
	if err != nil {
		var unverified *note.UnverifiedNoteError
		var invalid *note.InvalidSignatureError
		if errors.As(err, &unverified) || errors.As(err, &invalid) || errors.Is(err, audit.ErrNoLogSignature) {
			return text(http.StatusForbidden, "no valid signature of the log")
		}
		return text(http.StatusBadRequest, "checkpoint: %v", err)
	}
	if req.old > cp.Size {
		return text(http.StatusBadRequest, "old size %d is beyond the checkpoint's size %d", req.old, cp.Size)
	}
	if req.old == 0 && len(req.proof) > 0 {
		return text(http.StatusBadRequest, "a consistency proof from size 0 must be empty")
	}

	w.mu.Lock()
	defer w.mu.Unlock()
	cur := w.state.Logs[lg.Origin]
	if req.old != cur.Size {
		return http.StatusConflict, "text/x.tlog.size", []byte(strconv.FormatUint(cur.Size, 10) + "\n")
	}
	root := base64.StdEncoding.EncodeToString(cp.Root)
	if cur.Size == cp.Size && cur.Size > 0 && cur.Root != root {
		w.log.Warn("witness: refused a fork: another root for the size it cosigned", "origin", lg.Origin, "size", cp.Size)
		return http.StatusConflict, "text/x.tlog.size", []byte(strconv.FormatUint(cur.Size, 10) + "\n")
	}
	if cur.Size > 0 {
		old, err := base64.StdEncoding.DecodeString(cur.Root)
		if err != nil {
			return text(http.StatusInternalServerError, "witness state is damaged")
		}
		if err := audit.CheckConsistency(audit.Checkpoint{Size: cur.Size, Root: old}, cp, req.proof); err != nil {
			w.log.Warn("witness: refused a checkpoint that does not extend the one it cosigned", "origin", lg.Origin,
				"old", cur.Size, "new", cp.Size, "err", err)
			return text(http.StatusUnprocessableEntity, "the consistency proof does not verify")
		}
	}
	next := logState{Size: cp.Size, Root: root, Note: string(req.note), At: w.cfg.Now().UTC()}
	if err := w.persist(lg.Origin, next); err != nil {
		w.log.Error("witness: state not saved; not cosigning", "err", err)
		return text(http.StatusInternalServerError, "state not saved")
	}
	cpBody, _ := bytesBody(req.note)
	sig, err := w.signer.Sign(cpBody)
	if err != nil {
		return text(http.StatusInternalServerError, "signing failed")
	}
	raw := binary.BigEndian.AppendUint32(nil, w.signer.KeyHash())
	line := "— " + w.cfg.Name + " " + base64.StdEncoding.EncodeToString(append(raw, sig...)) + "\n"
	w.log.Info("witness: cosigned", "origin", lg.Origin, "size", cp.Size)
	return http.StatusOK, "text/plain; charset=utf-8", []byte(line)
}

// bytesBody returns the note body (the text before the signatures).
func bytesBody(signed []byte) ([]byte, bool) {
	i := bytes.LastIndex(signed, []byte("\n\n"))
	if i < 0 {
		return nil, false
	}
	return signed[:i+1], true
}

// persist saves the state holding next for origin, and only then
// changes the state in memory.
func (w *Witness) persist(origin string, next logState) error {
	logs := make(map[string]logState, len(w.state.Logs)+1)
	for k, v := range w.state.Logs {
		logs[k] = v
	}
	logs[origin] = next
	b, err := json.MarshalIndent(state{Logs: logs}, "", "  ")
	if err != nil {
		return err
	}
	if len(b) > maxStateFile {
		return fmt.Errorf("state would be larger than %d bytes", maxStateFile)
	}
	if err := w.cfg.State.Save(b); err != nil {
		return err
	}
	w.state.Logs = logs
	return nil
}
