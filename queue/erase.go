package queue

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// HeaderTTL is the header that gives a message its own time to live on a
// stream declared with AllowMsgTTL; TTLValue formats its value. The store
// removes the message once it is that old, without a sweeper and without
// another write.
const HeaderTTL = "Nats-TTL"

// TTLValue formats d for HeaderTTL: whole seconds, at least 1.
func TTLValue(d time.Duration) string {
	return strconv.FormatInt(max(1, int64((d+time.Second-1)/time.Second)), 10)
}

// Erase removes the message at seq and overwrites its bytes in the store,
// so that nothing of it stays on disk (a plain delete only marks it
// removed until its block is compacted). A message that is already gone is
// not an error.
func (s *Stream) Erase(ctx context.Context, seq uint64) error {
	err := s.s.SecureDeleteMsg(ctx, seq)
	if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("queue: erase %s seq %d: %w", s.name, seq, err)
	}
	return nil
}

// EraseSubject erases every message stored on subject (see Erase) and
// returns how many there were, up to 10,000 per call.
func (s *Stream) EraseSubject(ctx context.Context, subject string) (int, error) {
	var seqs []uint64
	if err := s.Each(ctx, subject, func(m *Msg) error { seqs = append(seqs, m.Seq); return nil }); err != nil {
		return 0, err
	}
	for _, seq := range seqs {
		if err := s.Erase(ctx, seq); err != nil {
			return 0, err
		}
	}
	return len(seqs), nil
}

// AppendNew stores data on subject only if the subject holds no message
// yet; otherwise it returns ErrConflict. It is a compare-and-set create.
func (s *Stream) AppendNew(ctx context.Context, subject string, header map[string]string, data []byte) (uint64, error) {
	m := nats.NewMsg(subject)
	m.Data = data
	for k, v := range header {
		m.Header.Set(k, v)
	}
	ack, err := s.js.PublishMsg(ctx, m, jetstream.WithExpectStream(s.name), jetstream.WithExpectLastSequencePerSubject(0))
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
			return 0, fmt.Errorf("%w: %s already holds a message", ErrConflict, subject)
		}
		return 0, fmt.Errorf("queue: append to %s: %w", s.name, err)
	}
	return ack.Sequence, nil
}

// ObjectInfo describes a stored object.
type ObjectInfo struct {
	Name     string
	Size     uint64
	Modified time.Time
}

// List returns every object in the bucket whose name starts with prefix.
func (o *Objects) List(ctx context.Context, prefix string) ([]ObjectInfo, error) {
	infos, err := o.os.List(ctx)
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("queue: list objects: %w", err)
	}
	var out []ObjectInfo
	for _, in := range infos {
		if len(in.Name) >= len(prefix) && in.Name[:len(prefix)] == prefix {
			out = append(out, ObjectInfo{Name: in.Name, Size: in.Size, Modified: in.ModTime})
		}
	}
	return out, nil
}

// Erase removes the object stored under name and overwrites its chunks in
// the store (see Stream.Erase). An unknown name is not an error.
func (o *Objects) Erase(ctx context.Context, name string) error {
	info, err := o.os.GetInfo(ctx, name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("queue: erase object: %w", err)
	}
	st, err := o.js.Stream(ctx, "OBJ_"+o.bucket)
	if err != nil {
		return fmt.Errorf("queue: erase object: %w", err)
	}
	s := &Stream{js: o.js, s: st, name: "OBJ_" + o.bucket}
	if _, err := s.EraseSubject(ctx, "$O."+o.bucket+".C."+info.NUID); err != nil {
		return err
	}
	// The object's metadata names no content; a delete marker replaces it.
	return o.Delete(ctx, name)
}

// Purge removes every message on subject (wildcards allowed). Unlike
// Erase it does not overwrite their bytes: use it for data that is
// unreadable already (a destroyed tenant's) or where the stream refuses
// deletes of single messages.
func (s *Stream) Purge(ctx context.Context, subject string) error {
	if err := s.s.Purge(ctx, jetstream.WithPurgeSubject(subject)); err != nil {
		return fmt.Errorf("queue: purge %s %s: %w", s.name, subject, err)
	}
	return nil
}
