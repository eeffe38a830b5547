package audit

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sealpost/sealpost/queue"
)

// stream is what the log needs of a JetStream stream; *queue.Stream is
// one.
type stream interface {
	State(ctx context.Context) (queue.StreamState, error)
	Read(ctx context.Context, o queue.ReadOptions, fn func(*queue.Msg) error) error
	Get(ctx context.Context, seq uint64) (*queue.Msg, error)
	AppendOnce(ctx context.Context, subject, msgID string, header map[string]string, data []byte) (uint64, bool, error)
}

var _ stream = (*queue.Stream)(nil)

// readStall is how long a stream read may go without a message before the
// reader falls back to fetching the next sequence directly. A message the
// store counts but cannot load (a block file edited on disk fails its
// checksum) otherwise stalls a consumer for ever.
const readStall = 2 * time.Second

// scan calls fn for every message of s from start (0: the first) to the end
// of the stream, in order. Messages the store cannot load are skipped, as
// deleted ones are; the caller's index checks report the gap.
func scan(ctx context.Context, s stream, start uint64, fn func(*queue.Msg) error) error {
	st, err := s.State(ctx)
	if err != nil {
		return err
	}
	next := max(start, st.FirstSeq)
	for st.Msgs > 0 && next <= st.LastSeq {
		rctx, cancel := context.WithCancel(ctx)
		progress := make(chan struct{}, 1)
		stalled := make(chan struct{})
		go watch(rctx, cancel, progress, stalled)
		err := s.Read(rctx, queue.ReadOptions{StartSeq: next}, func(m *queue.Msg) error {
			select {
			case progress <- struct{}{}:
			default:
			}
			if err := fn(m); err != nil {
				return err
			}
			next = m.Seq + 1
			return nil
		})
		cancel()
		select {
		case <-stalled:
		default:
			if err != nil && ctx.Err() != nil {
				return ctx.Err()
			}
			return err // nil: read to the end
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// The consumer stalled before next: fetch it on its own.
		m, err := s.Get(ctx, next)
		switch {
		case errors.Is(err, queue.ErrNotFound):
		case err != nil:
			return fmt.Errorf("read seq %d: %w", next, err)
		default:
			if err := fn(m); err != nil {
				return err
			}
		}
		next++
	}
	return nil
}

// watch cancels a read that delivers nothing for readStall and closes
// stalled when it did.
func watch(ctx context.Context, cancel context.CancelFunc, progress <-chan struct{}, stalled chan<- struct{}) {
	t := time.NewTimer(readStall)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-progress:
			t.Reset(readStall)
		case <-t.C:
			close(stalled)
			cancel()
			return
		}
	}
}
