package ingress

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// A queued submission is sealed in a compact binary form rather than JSON:
// encoding and decoding JSON (and validating the payload inside it twice)
// cost more than the rest of queueing it. The form is one version byte,
// then:
//
//	id, tenant, route, channel, raw_sha256    uvarint length + bytes each
//	received_at                               varint, unix nanoseconds
//	raw_size                                  varint
//	flags                                     one byte; bit 0: payload_jcs,
//	                                          bit 1: an event type follows
//	event_type                                uvarint length + bytes, if flagged
//	source, payload                           uvarint length + bytes each
//
// Submissions sealed by earlier versions are JSON, and start with '{'.
const binaryVersion = 0x01

// Flags of the binary form.
const (
	flagPayloadJCS = 1 << 0
	flagEventType  = 1 << 1
)

// maxField bounds the short string members of a binary submission.
const maxField = 1024

// uvarint and varint read a number in its shortest form only, so that a
// submission has one binary form.
func uvarint(b []byte) (uint64, int) {
	v, n := binary.Uvarint(b)
	if n > 0 && n != len(binary.AppendUvarint(nil, v)) {
		return 0, -1
	}
	return v, n
}

func varint(b []byte) (int64, int) {
	v, n := binary.Varint(b)
	if n > 0 && n != len(binary.AppendVarint(nil, v)) {
		return 0, -1
	}
	return v, n
}

// ErrBadSubmission reports bytes that are not a submission.
var ErrBadSubmission = errors.New("malformed submission")

// AppendBinary appends the binary form of s to dst.
func (s *Submission) AppendBinary(dst []byte) []byte {
	dst = append(dst, binaryVersion)
	for _, f := range []string{s.ID, s.Tenant, s.Route, s.Channel, s.RawSHA256} {
		dst = binary.AppendUvarint(dst, uint64(len(f)))
		dst = append(dst, f...)
	}
	dst = binary.AppendVarint(dst, s.ReceivedAt.UnixNano())
	dst = binary.AppendVarint(dst, s.RawSize)
	var flags byte
	if s.PayloadJCS {
		flags |= flagPayloadJCS
	}
	if s.EventType != "" {
		flags |= flagEventType
	}
	dst = append(dst, flags)
	if s.EventType != "" {
		dst = binary.AppendUvarint(dst, uint64(len(s.EventType)))
		dst = append(dst, s.EventType...)
	}
	for _, b := range [][]byte{s.Source, s.Payload} {
		dst = binary.AppendUvarint(dst, uint64(len(b)))
		dst = append(dst, b...)
	}
	return dst
}

// BinarySize is the length of s's binary form.
func (s *Submission) BinarySize() int {
	n := 1 + 2*binary.MaxVarintLen64 + 1
	for _, f := range []string{s.ID, s.Tenant, s.Route, s.Channel, s.RawSHA256, s.EventType} {
		n += binary.MaxVarintLen64 + len(f)
	}
	return n + 2*binary.MaxVarintLen64 + len(s.Source) + len(s.Payload)
}

// DecodeSubmission reads a queued submission: the binary form, or the JSON
// of earlier versions. Source and Payload alias b. It checks the shape
// (Submission.Check); the JSON members are trusted, since the queue holds
// them sealed, as validated before sealing.
func DecodeSubmission(b []byte) (*Submission, error) {
	if len(b) > 0 && b[0] == '{' {
		var s Submission
		if err := jsonUnmarshal(b, &s); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadSubmission, err)
		}
		return &s, s.Validate()
	}
	if len(b) == 0 || b[0] != binaryVersion {
		return nil, fmt.Errorf("%w: unknown form", ErrBadSubmission)
	}
	b = b[1:]
	str := func() (string, error) {
		n, k := uvarint(b)
		if k <= 0 || n > maxField || n > uint64(len(b)-k) {
			return "", ErrBadSubmission
		}
		v := string(b[k : k+int(n)])
		b = b[k+int(n):]
		return v, nil
	}
	s := &Submission{}
	var err error
	for _, f := range []*string{&s.ID, &s.Tenant, &s.Route, &s.Channel, &s.RawSHA256} {
		if *f, err = str(); err != nil {
			return nil, err
		}
	}
	at, k := varint(b)
	if k <= 0 {
		return nil, ErrBadSubmission
	}
	b = b[k:]
	size, k := varint(b)
	if k <= 0 || len(b) < k+1 {
		return nil, ErrBadSubmission
	}
	flags := b[k]
	if flags&^(flagPayloadJCS|flagEventType) != 0 {
		return nil, fmt.Errorf("%w: unknown flags", ErrBadSubmission)
	}
	s.ReceivedAt, s.RawSize, s.PayloadJCS = time.Unix(0, at).UTC(), size, flags&flagPayloadJCS != 0
	b = b[k+1:]
	if flags&flagEventType != 0 {
		if s.EventType, err = str(); err != nil {
			return nil, err
		}
		if s.EventType == "" {
			return nil, fmt.Errorf("%w: empty event type", ErrBadSubmission)
		}
	}
	for _, f := range []*[]byte{(*[]byte)(&s.Source), (*[]byte)(&s.Payload)} {
		n, k := uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			return nil, ErrBadSubmission
		}
		*f = b[k : k+int(n) : k+int(n)]
		b = b[k+int(n):]
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%w: trailing bytes", ErrBadSubmission)
	}
	return s, s.Check()
}

// Check reports whether s has every member a receipt needs, without
// parsing its JSON members (Validate does that too).
func (s *Submission) Check() error {
	switch {
	case s.ID == "":
		return errors.New("submission: missing id")
	case s.Tenant == "":
		return errors.New("submission: missing tenant")
	case s.Route == "":
		return errors.New("submission: missing route")
	case s.Channel != ChannelSMTP && s.Channel != ChannelHTTPS:
		return fmt.Errorf("submission: unknown channel %q", s.Channel)
	case s.ReceivedAt.IsZero():
		return errors.New("submission: missing received_at")
	case len(s.Payload) == 0:
		return errors.New("submission: missing payload")
	case len(s.Source) == 0:
		return errors.New("submission: missing source")
	}
	return nil
}
