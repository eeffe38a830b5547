package audit

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The log submits every checkpoint it is about to store to its witnesses
// (C2SP tlog-witness add-checkpoint) with a consistency proof from the size
// each witness cosigned last, and stores the checkpoint with the
// cosignatures that came back in time. A witness that does not answer, or
// refuses, costs that checkpoint its cosignature, never the checkpoint.

// DefaultWitnessTimeout bounds one witness's answer, retries included.
const DefaultWitnessTimeout = 10 * time.Second

// Bounds of the witness protocol.
const (
	maxWitnessResponse = 16 << 10
	maxProofLines      = 63
	// witnessAttempts: a first try with the size last seen, and one more
	// with the size a 409 named.
	witnessAttempts = 3
)

// ErrWitnessConflict: the witness holds a checkpoint of this log that the
// submitted one does not extend (409 for the same size, or an old size the
// log cannot prove from).
var ErrWitnessConflict = errors.New("witness holds a conflicting checkpoint")

// witnesses submits checkpoints and remembers each witness's size.
type witnesses struct {
	policy  *WitnessPolicy
	client  *http.Client
	timeout time.Duration
	log     *slog.Logger

	mu    sync.Mutex
	sizes map[string]uint64 // size each witness cosigned last, when known
}

func newWitnesses(p *WitnessPolicy, client *http.Client, timeout time.Duration, log *slog.Logger) *witnesses {
	if client == nil {
		client = &http.Client{Timeout: timeout}
	}
	return &witnesses{policy: p, client: client, timeout: timeout, log: log, sizes: map[string]uint64{}}
}

// prover returns the consistency proof from an old size to the checkpoint.
type prover func(ctx context.Context, old uint64) ([][]byte, error)

// cosign asks every witness at once to cosign the signed checkpoint of
// size and returns the note with the cosignatures received, and how many.
func (ws *witnesses) cosign(ctx context.Context, signed []byte, size uint64, prove prover, m *metrics) ([]byte, int) {
	body, ok := checkpointBody(signed)
	if !ok {
		return signed, 0
	}
	lines := make([]string, len(ws.policy.Witnesses))
	var wg sync.WaitGroup
	for i, w := range ws.policy.Witnesses {
		if w.URL == "" {
			continue
		}
		wg.Go(func() {
			wctx, cancel := context.WithTimeout(ctx, ws.timeout)
			defer cancel()
			line, err := ws.submit(wctx, w, signed, body, size, prove)
			result := "ok"
			if err != nil {
				result = "error"
				if errors.Is(err, ErrWitnessConflict) {
					result = "conflict"
				}
			}
			m.witnessRequests.WithLabelValues(w.Name, result).Inc()
			if result == "conflict" {
				m.witnessConflicts.Inc()
			}
			if err != nil {
				ws.log.Warn("audit: witness did not cosign the checkpoint", "witness", w.Name, "size", size, "err", err)
				return
			}
			lines[i] = line
		})
	}
	wg.Wait()
	out := bytes.Clone(signed)
	n := 0
	for _, line := range lines {
		if line != "" {
			out = append(out, line...)
			n++
		}
	}
	return out, n
}

// submit runs add-checkpoint against one witness and returns its verified
// cosignature line.
func (ws *witnesses) submit(ctx context.Context, w Witness, signed, body []byte, size uint64, prove prover) (string, error) {
	ws.mu.Lock()
	old := ws.sizes[w.Name]
	ws.mu.Unlock()
	if old > size {
		old = 0 // learn the witness's size again
	}
	for range witnessAttempts {
		proof, err := prove(ctx, old)
		if err != nil {
			return "", fmt.Errorf("consistency proof from %d: %w", old, err)
		}
		var req bytes.Buffer
		fmt.Fprintf(&req, "old %d\n", old)
		for _, h := range proof {
			req.WriteString(base64.StdEncoding.EncodeToString(h))
			req.WriteByte('\n')
		}
		req.WriteByte('\n')
		req.Write(signed)
		status, ctype, resp, err := ws.post(ctx, w.URL, req.Bytes())
		if err != nil {
			return "", err
		}
		switch {
		case status == http.StatusOK:
			line, err := pickCosignature(w, body, resp)
			if err != nil {
				return "", err
			}
			ws.mu.Lock()
			ws.sizes[w.Name] = size
			ws.mu.Unlock()
			return line, nil
		case status == http.StatusConflict && strings.HasPrefix(ctype, "text/x.tlog.size"):
			got, err := strconv.ParseUint(strings.TrimSpace(string(resp)), 10, 64)
			if err != nil {
				return "", fmt.Errorf("409 with an unreadable size")
			}
			if got > size {
				return "", fmt.Errorf("%w: it cosigned size %d, beyond this checkpoint's %d", ErrWitnessConflict, got, size)
			}
			if got == old {
				return "", fmt.Errorf("%w: it holds another root for size %d", ErrWitnessConflict, got)
			}
			old = got
		case status == http.StatusConflict:
			return "", fmt.Errorf("%w: 409 for size %d", ErrWitnessConflict, size)
		default:
			return "", fmt.Errorf("add-checkpoint: %d %s", status, bytes.TrimSpace(resp[:min(len(resp), 200)]))
		}
	}
	return "", errors.New("add-checkpoint: the witness's size keeps changing")
}

func (ws *witnesses) post(ctx context.Context, url string, body []byte) (int, string, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(url, "/")+"/add-checkpoint", bytes.NewReader(body))
	if err != nil {
		return 0, "", nil, err
	}
	resp, err := ws.client.Do(req)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxWitnessResponse+1))
	if err != nil {
		return 0, "", nil, err
	}
	if len(b) > maxWitnessResponse {
		return 0, "", nil, errors.New("answer too large")
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), b, nil
}

// pickCosignature returns the line of resp that is w's valid cosignature
// of body. Other lines are ignored, as the protocol asks.
func pickCosignature(w Witness, body, resp []byte) (string, error) {
	v, err := NewCosignatureVerifier(w.Name, w.Key)
	if err != nil {
		return "", err
	}
	for _, line := range strings.SplitAfter(string(resp), "\n") {
		if !strings.HasSuffix(line, "\n") {
			continue
		}
		name, b64, ok := strings.Cut(strings.TrimSuffix(strings.TrimPrefix(line, "— "), "\n"), " ")
		if !strings.HasPrefix(line, "— ") || !ok || name != w.Name {
			continue
		}
		raw, err := base64.StdEncoding.DecodeString(b64)
		if err != nil || len(raw) < 5 || binary.BigEndian.Uint32(raw) != v.KeyHash() {
			continue
		}
		if v.Verify(body, raw[4:]) {
			return line, nil
		}
	}
	return "", errors.New("no valid cosignature in the answer")
}

// askSize learns the size a witness cosigned last for this log by
// submitting signed with old size 0: a witness that holds a larger size
// answers 409 with it. A witness that holds none cosigns it (that is a
// valid first submission). It returns the witness's size.
func (ws *witnesses) askSize(ctx context.Context, w Witness, signed []byte, size uint64) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, ws.timeout)
	defer cancel()
	status, ctype, resp, err := ws.post(ctx, w.URL, append([]byte("old 0\n\n"), signed...))
	if err != nil {
		return 0, err
	}
	switch {
	case status == http.StatusOK:
		return size, nil
	case status == http.StatusConflict && strings.HasPrefix(ctype, "text/x.tlog.size"):
		return strconv.ParseUint(strings.TrimSpace(string(resp)), 10, 64)
	}
	return 0, fmt.Errorf("add-checkpoint: %d %s", status, bytes.TrimSpace(resp[:min(len(resp), 200)]))
}
