package queue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// StreamConfig declares an append-only stream (audit log, dead letters,
// delivery attempts).
type StreamConfig struct {
	Name     string
	Subjects []string
	// MaxAge drops messages older than this; 0 keeps them forever.
	MaxAge time.Duration
	// MaxBytes bounds the stream's size; 0 is unlimited.
	MaxBytes int64
	// MaxMsgsPerSubject keeps only the newest N per subject; 0 is unlimited.
	MaxMsgsPerSubject int64
	// DenyDelete and DenyPurge make the stream append-only for every client.
	DenyDelete, DenyPurge bool
	// Duplicates is the window in which a repeated MsgID is dropped.
	// Default 2 minutes.
	Duplicates time.Duration
	// AllowMsgTTL lets a message carry its own time to live (the header
	// HeaderTTL, see TTLValue); the store removes it when that ends.
	AllowMsgTTL bool
}

// Stream is a JetStream stream used as an append-only log.
type Stream struct {
	js   jetstream.JetStream
	s    jetstream.Stream
	name string
}

// Msg is one stored message.
type Msg struct {
	Seq     uint64
	Subject string
	Time    time.Time
	Header  map[string]string
	Data    []byte
}

// Stream creates (or updates) a stream and returns it.
func (c *Conn) Stream(ctx context.Context, cfg StreamConfig) (*Stream, error) {
	if cfg.Duplicates == 0 {
		cfg.Duplicates = 2 * time.Minute
	}
	if cfg.MaxAge > 0 && cfg.Duplicates > cfg.MaxAge {
		cfg.Duplicates = cfg.MaxAge
	}
	sc := jetstream.StreamConfig{
		Name:              cfg.Name,
		Subjects:          cfg.Subjects,
		MaxAge:            cfg.MaxAge,
		MaxBytes:          cfg.MaxBytes,
		MaxMsgsPerSubject: cfg.MaxMsgsPerSubject,
		DenyDelete:        cfg.DenyDelete,
		DenyPurge:         cfg.DenyPurge,
		Duplicates:        cfg.Duplicates,
		Storage:           jetstream.FileStorage,
		Replicas:          c.replicas(),
		Discard:           jetstream.DiscardOld,
		AllowDirect:       true,
		AllowMsgTTL:       cfg.AllowMsgTTL,
	}
	if cfg.MaxBytes == 0 {
		sc.MaxBytes = -1
	}
	s, err := c.ensureStream(ctx, sc)
	if err != nil {
		return nil, err
	}
	return &Stream{js: c.js, s: s, name: cfg.Name}, nil
}

// LookupStream returns an existing stream without declaring or changing
// it, or an error wrapping ErrNotFound: for tools that must leave a store
// as it is (offline verification of a data dir or a backup).
func (c *Conn) LookupStream(ctx context.Context, name string) (*Stream, error) {
	s, err := c.js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("%w: stream %s", ErrNotFound, name)
	}
	if err != nil {
		return nil, fmt.Errorf("queue: stream %s: %w", name, err)
	}
	return &Stream{js: c.js, s: s, name: name}, nil
}

// Name returns the stream's name.
func (s *Stream) Name() string { return s.name }

// Append publishes data to subject and returns its sequence once stored.
// A non-empty msgID deduplicates within the stream's duplicate window.
func (s *Stream) Append(ctx context.Context, subject, msgID string, header map[string]string, data []byte) (uint64, error) {
	seq, _, err := s.AppendOnce(ctx, subject, msgID, header, data)
	return seq, err
}

// AppendOnce is Append that also reports whether the store dropped the
// message as a duplicate of msgID; seq is then the sequence of the copy
// stored before.
func (s *Stream) AppendOnce(ctx context.Context, subject, msgID string, header map[string]string, data []byte) (seq uint64, duplicate bool, err error) {
	m := nats.NewMsg(subject)
	m.Data = data
	for k, v := range header {
		m.Header.Set(k, v)
	}
	var opts []jetstream.PublishOpt
	if msgID != "" {
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	opts = append(opts, jetstream.WithExpectStream(s.name))
	ack, err := s.js.PublishMsg(ctx, m, opts...)
	if err != nil {
		return 0, false, appendErr(s.name, err)
	}
	return ack.Sequence, ack.Duplicate, nil
}

// HdrExpectLastSubjectSeq makes an append conditional: it is stored only
// when the newest message on its subject has this sequence (0: there is
// none). Otherwise the append fails with ErrConflict.
const HdrExpectLastSubjectSeq = "Nats-Expected-Last-Subject-Sequence"

func appendErr(stream string, err error) error {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
		return fmt.Errorf("queue: append to %s: %w: %w", stream, ErrConflict, err)
	}
	return fmt.Errorf("queue: append to %s: %w", stream, err)
}

// Get returns the message at seq, or ErrNotFound.
func (s *Stream) Get(ctx context.Context, seq uint64) (*Msg, error) {
	raw, err := s.s.GetMsg(ctx, seq)
	if err != nil {
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil, fmt.Errorf("%w: %s seq %d", ErrNotFound, s.name, seq)
		}
		return nil, fmt.Errorf("queue: get %s seq %d: %w", s.name, seq, err)
	}
	return rawMsg(raw), nil
}

// Last returns the newest message on subject, or ErrNotFound.
func (s *Stream) Last(ctx context.Context, subject string) (*Msg, error) {
	raw, err := s.s.GetLastMsgForSubject(ctx, subject)
	if err != nil {
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil, fmt.Errorf("%w: %s subject %s", ErrNotFound, s.name, subject)
		}
		return nil, fmt.Errorf("queue: last %s: %w", s.name, err)
	}
	return rawMsg(raw), nil
}

func rawMsg(raw *jetstream.RawStreamMsg) *Msg {
	m := &Msg{Seq: raw.Sequence, Subject: raw.Subject, Time: raw.Time, Data: raw.Data}
	if len(raw.Header) > 0 {
		m.Header = make(map[string]string, len(raw.Header))
		for k := range raw.Header {
			m.Header[k] = raw.Header.Get(k)
		}
	}
	return m
}

// StreamState is a summary of a stream.
type StreamState struct {
	FirstSeq, LastSeq, Msgs uint64
	FirstTime, LastTime     time.Time
}

// State returns the stream's current first and last sequence and count.
func (s *Stream) State(ctx context.Context) (StreamState, error) {
	info, err := s.s.Info(ctx)
	if err != nil {
		return StreamState{}, fmt.Errorf("queue: info %s: %w", s.name, err)
	}
	st := info.State
	return StreamState{FirstSeq: st.FirstSeq, LastSeq: st.LastSeq, Msgs: st.Msgs, FirstTime: st.FirstTime, LastTime: st.LastTime}, nil
}

// ReadOptions select what Read visits.
type ReadOptions struct {
	// Filter is a subject filter (NATS wildcards); empty reads all.
	Filter string
	// StartSeq starts at this sequence (inclusive); StartTime at the first
	// message at or after this time. Both zero read from the beginning.
	StartSeq  uint64
	StartTime time.Time
	// HeadersOnly delivers the headers without the data (Msg.Data is
	// empty): for scans that need subjects and headers only.
	HeadersOnly bool
}

// readInactive is how long after a read its consumer lingers on the server.
const readInactive = 5 * time.Second

// Read calls fn, in stream order, for every message selected by o that exists
// when Read starts, then returns. An error from fn stops Read and is returned.
func (s *Stream) Read(ctx context.Context, o ReadOptions, fn func(*Msg) error) error {
	// The server removes the consumer a few seconds after the read ends,
	// so reads never pile consumers up on a stream.
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy, InactiveThreshold: readInactive, HeadersOnly: o.HeadersOnly}
	if o.Filter != "" {
		cfg.FilterSubjects = []string{o.Filter}
	}
	switch {
	case o.StartSeq > 0:
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = o.StartSeq
	case !o.StartTime.IsZero():
		cfg.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		t := o.StartTime
		cfg.OptStartTime = &t
	}
	// Stop at the last message that exists now, so a stream that keeps
	// growing (the audit log grows with every call) does not keep Read going.
	sinfo, err := s.s.Info(ctx)
	if err != nil {
		return fmt.Errorf("queue: read %s: %w", s.name, err)
	}
	last := sinfo.State.LastSeq
	cons, err := s.s.OrderedConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("queue: read %s: %w", s.name, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("queue: read %s: %w", s.name, err)
	}
	if info.NumPending == 0 || last == 0 {
		return nil
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("queue: read %s: %w", s.name, err)
	}
	defer it.Stop()
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			it.Stop()
		case <-done:
		}
	}()
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("queue: read %s: %w", s.name, err)
		}
		meta, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("queue: read %s: %w", s.name, err)
		}
		if meta.Sequence.Stream > last {
			return nil
		}
		msg := &Msg{Seq: meta.Sequence.Stream, Subject: m.Subject(), Time: meta.Timestamp, Data: m.Data()}
		if h := m.Headers(); len(h) > 0 {
			msg.Header = make(map[string]string, len(h))
			for k := range h {
				msg.Header[k] = h.Get(k)
			}
		}
		if err := fn(msg); err != nil {
			return err
		}
		if meta.NumPending == 0 || meta.Sequence.Stream >= last {
			return nil
		}
	}
}

// maxEach bounds the messages one Each call visits.
const maxEach = 10000

// Each calls fn, in stream order, for every message stored on subject (a
// subject without wildcards, or one with them), up to 10,000. It reads
// message by message through the stream's subject index, so it needs no
// consumer and suits subjects that hold a few messages. An error from fn
// stops Each and is returned.
func (s *Stream) Each(ctx context.Context, subject string, fn func(*Msg) error) error {
	return s.EachFrom(ctx, subject, 1, fn)
}

// EachFrom is Each from sequence from on.
func (s *Stream) EachFrom(ctx context.Context, subject string, from uint64, fn func(*Msg) error) error {
	seq := max(from, 1)
	for range maxEach {
		raw, err := s.s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("queue: read %s %s: %w", s.name, subject, err)
		}
		if err := fn(rawMsg(raw)); err != nil {
			return err
		}
		seq = raw.Sequence + 1
	}
	return fmt.Errorf("queue: read %s %s: more than %d messages", s.name, subject, maxEach)
}

// AppendAsync publishes data to subject without waiting; the returned
// function waits for the store's answer and returns the sequence. It lets
// one caller have several writes in flight.
func (s *Stream) AppendAsync(subject, msgID string, header map[string]string, data []byte) (wait func(ctx context.Context) (uint64, error), err error) {
	m := nats.NewMsg(subject)
	m.Data = data
	for k, v := range header {
		m.Header.Set(k, v)
	}
	opts := []jetstream.PublishOpt{jetstream.WithExpectStream(s.name)}
	if msgID != "" {
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	f, err := s.js.PublishMsgAsync(m, opts...)
	if err != nil {
		return nil, fmt.Errorf("queue: append to %s: %w", s.name, err)
	}
	return func(ctx context.Context) (uint64, error) {
		select {
		case ack := <-f.Ok():
			return ack.Sequence, nil
		case err := <-f.Err():
			return 0, fmt.Errorf("queue: append to %s: %w", s.name, err)
		case <-ctx.Done():
			return 0, fmt.Errorf("queue: append to %s: %w", s.name, ctx.Err())
		}
	}, nil
}
