package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go"
)

// JetStream's snapshot API is not wrapped by nats.go's jetstream package;
// this file speaks it directly.
//
// Snapshot: a request on $JS.API.STREAM.SNAPSHOT.<stream> names a deliver
// subject; the server answers with the stream's config and state and then
// sends the snapshot (an s2-compressed tar of the stream's store and, unless
// left out, its consumers' state) to the deliver subject in chunks. Every
// chunk but the last carries a reply subject the client publishes to once
// it has the chunk, which is the server's flow control (it stops after
// 5 seconds without an ack). A message without data ends the snapshot: a
// status header other than 204 in it is an error.
//
// Restore: a request on $JS.API.STREAM.RESTORE.<stream> with the config and
// state returns a deliver subject; the client sends the chunks there as
// requests (each answered with an empty message once the server took it)
// and finally an empty request, answered with the restored stream's info
// or an error. The stream must not exist.
//
// The server produces the snapshot from one consistent view of the stream,
// so a snapshot holds exactly the messages stored up to a point.

// SnapshotInfo is what the server said about a stream when it started a
// snapshot: its configuration and state as JetStream's own JSON. Restore
// needs both.
type SnapshotInfo struct {
	Stream string          `json:"stream"`
	Config json.RawMessage `json:"config"`
	State  json.RawMessage `json:"state"`
}

// StreamSummary reads the message count and sequences from State.
func (i SnapshotInfo) StreamSummary() (StreamState, error) {
	var st struct {
		Msgs      uint64    `json:"messages"`
		FirstSeq  uint64    `json:"first_seq"`
		LastSeq   uint64    `json:"last_seq"`
		FirstTime time.Time `json:"first_ts"`
		LastTime  time.Time `json:"last_ts"`
	}
	if err := json.Unmarshal(i.State, &st); err != nil {
		return StreamState{}, fmt.Errorf("queue: snapshot state of %s: %w", i.Stream, err)
	}
	return StreamState{FirstSeq: st.FirstSeq, LastSeq: st.LastSeq, Msgs: st.Msgs, FirstTime: st.FirstTime, LastTime: st.LastTime}, nil
}

// snapshotChunk is the chunk size asked of the server (its default).
const snapshotChunk = 128 << 10

// snapshotIdle bounds the wait for the next chunk of a snapshot.
const snapshotIdle = 30 * time.Second

type apiError struct {
	Code        int    `json:"code"`
	ErrCode     int    `json:"err_code"`
	Description string `json:"description"`
}

func (e *apiError) Error() string {
	return fmt.Sprintf("jetstream: %s (code %d, error %d)", e.Description, e.Code, e.ErrCode)
}

// request sends a JetStream API request and decodes its answer into out,
// which must have an Error *apiError field reachable through errOf.
func (c *Conn) apiRequest(ctx context.Context, subject string, req any, out any, errOf func() *apiError) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	msg, err := c.nc.RequestWithContext(ctx, subject, body)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(msg.Data, out); err != nil {
		return fmt.Errorf("decode answer of %s: %w", subject, err)
	}
	if e := errOf(); e != nil {
		return e
	}
	return nil
}

// StreamNames lists every stream of the account.
func (c *Conn) StreamNames(ctx context.Context) ([]string, error) {
	lister := c.js.StreamNames(ctx)
	var names []string
	for n := range lister.Name() {
		names = append(names, n)
	}
	if err := lister.Err(); err != nil {
		return nil, fmt.Errorf("queue: list streams: %w", err)
	}
	return names, nil
}

// Snapshot writes a consistent snapshot of stream to w, consumers
// included, and returns the stream's config and state as of the snapshot.
// w gets the server's chunks in order; an error from w ends the snapshot.
func (c *Conn) Snapshot(ctx context.Context, stream string, w io.Writer) (SnapshotInfo, error) {
	info := SnapshotInfo{Stream: stream}
	inbox := c.nc.NewRespInbox()
	// A channel subscription keeps the chunks in order; its buffer holds
	// more than the server's window (8 MiB of 128 KiB chunks).
	ch := make(chan *nats.Msg, 256)
	sub, err := c.nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return info, fmt.Errorf("queue: snapshot %s: %w", stream, err)
	}
	defer sub.Unsubscribe()
	var resp struct {
		Error  *apiError       `json:"error"`
		Config json.RawMessage `json:"config"`
		State  json.RawMessage `json:"state"`
	}
	req := map[string]any{"deliver_subject": inbox, "chunk_size": snapshotChunk}
	rctx, cancel := context.WithTimeout(ctx, provisionAttemptTimeout)
	err = c.apiRequest(rctx, "$JS.API.STREAM.SNAPSHOT."+stream, req, &resp, func() *apiError { return resp.Error })
	cancel()
	if err != nil {
		return info, fmt.Errorf("queue: snapshot %s: %w", stream, err)
	}
	info.Config, info.State = resp.Config, resp.State
	idle := time.NewTimer(snapshotIdle)
	defer idle.Stop()
	for {
		select {
		case <-ctx.Done():
			return info, fmt.Errorf("queue: snapshot %s: %w", stream, ctx.Err())
		case <-idle.C:
			return info, fmt.Errorf("queue: snapshot %s: no chunk for %s", stream, snapshotIdle)
		case m := <-ch:
			idle.Reset(snapshotIdle)
			if len(m.Data) == 0 {
				if st := m.Header.Get("Status"); st != "" && st != "204" {
					return info, fmt.Errorf("queue: snapshot %s: server ended it with %s %s", stream, st, m.Header.Get("Description"))
				}
				return info, nil
			}
			if _, err := w.Write(m.Data); err != nil {
				return info, fmt.Errorf("queue: snapshot %s: %w", stream, err)
			}
			if m.Reply != "" {
				if err := c.nc.Publish(m.Reply, nil); err != nil {
					return info, fmt.Errorf("queue: snapshot %s: ack: %w", stream, err)
				}
			}
		}
	}
}

// restoreChunk is the largest chunk Restore sends; each is a round trip.
// It is cut to fit the server's message limit.
const restoreChunk = 1 << 20

// restoreChunkTimeout bounds the server's answer to one restore chunk.
const restoreChunkTimeout = time.Minute

// Restore creates stream from a snapshot read from r, with the config and
// state the snapshot was taken with; replicas other than 0 replaces the
// stream's replica count (a cluster of another size). The stream must not
// exist yet.
func (c *Conn) Restore(ctx context.Context, info SnapshotInfo, replicas int, r io.Reader) error {
	cfg := map[string]any{}
	if err := json.Unmarshal(info.Config, &cfg); err != nil {
		return fmt.Errorf("queue: restore %s: config: %w", info.Stream, err)
	}
	if replicas > 0 {
		cfg["num_replicas"] = replicas
	}
	var state any
	if err := json.Unmarshal(info.State, &state); err != nil {
		return fmt.Errorf("queue: restore %s: state: %w", info.Stream, err)
	}
	var resp struct {
		Error          *apiError `json:"error"`
		DeliverSubject string    `json:"deliver_subject"`
	}
	rctx, cancel := context.WithTimeout(ctx, provisionAttemptTimeout)
	err := c.apiRequest(rctx, "$JS.API.STREAM.RESTORE."+info.Stream, map[string]any{"config": cfg, "state": state}, &resp,
		func() *apiError { return resp.Error })
	cancel()
	if err != nil {
		return fmt.Errorf("queue: restore %s: %w", info.Stream, err)
	}
	if resp.DeliverSubject == "" {
		return fmt.Errorf("queue: restore %s: the server named no subject for the chunks", info.Stream)
	}
	buf := make([]byte, max(1024, min(restoreChunk, int(c.nc.MaxPayload())-4096)))
	for {
		n, rerr := io.ReadFull(r, buf)
		if n > 0 {
			cctx, cancel := context.WithTimeout(ctx, restoreChunkTimeout)
			m, err := c.nc.RequestWithContext(cctx, resp.DeliverSubject, buf[:n])
			cancel()
			if err != nil {
				return fmt.Errorf("queue: restore %s: send chunk: %w", info.Stream, err)
			}
			if len(m.Data) > 0 {
				var e struct {
					Error *apiError `json:"error"`
				}
				if json.Unmarshal(m.Data, &e) == nil && e.Error != nil {
					return fmt.Errorf("queue: restore %s: %w", info.Stream, e.Error)
				}
			}
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			return fmt.Errorf("queue: restore %s: read snapshot: %w", info.Stream, rerr)
		}
	}
	var done struct {
		Error *apiError `json:"error"`
	}
	dctx, cancel := context.WithTimeout(ctx, provisionTimeout)
	defer cancel()
	m, err := c.nc.RequestWithContext(dctx, resp.DeliverSubject, nil)
	if err != nil {
		return fmt.Errorf("queue: restore %s: finish: %w", info.Stream, err)
	}
	if err := json.Unmarshal(m.Data, &done); err != nil {
		return fmt.Errorf("queue: restore %s: finish: %w", info.Stream, err)
	}
	if done.Error != nil {
		return fmt.Errorf("queue: restore %s: %w", info.Stream, done.Error)
	}
	return nil
}
