// Package ingress holds what the SMTP and HTTPS ingresses share: the Submission
// they produce, the Enqueuer they hand it to, and the error classes that decide
// whether a sender is told to retry (temporary) or to give up (permanent).
package ingress

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Channel names, as they appear in receipt.channel.
const (
	ChannelSMTP  = "smtp"
	ChannelHTTPS = "https"
)

// Submission is one accepted payload on its way to the queue. It carries
// everything the worker needs to build the receipt; the receipt itself (kid,
// signed_at, payload_sha256, signature) is made by the worker.
type Submission struct {
	// ID is the receipt id, "rcpt_" followed by a ULID. It stays the same
	// across retries and is the webhook-id.
	ID      string `json:"id"`
	Tenant  string `json:"tenant"`
	Route   string `json:"route"`
	Channel string `json:"channel"`
	// ReceivedAt is when the ingress finished reading the payload, in UTC.
	ReceivedAt time.Time `json:"received_at"`
	// Source is the channel-specific source object of the receipt (a JSON object).
	Source json.RawMessage `json:"source"`
	// Payload is the parsed mail or the posted JSON value.
	Payload json.RawMessage `json:"payload"`
	// PayloadJCS is set when Payload is already in its JCS (RFC 8785) form,
	// so that signing does not canonicalize it again.
	PayloadJCS bool `json:"payload_jcs,omitempty"`
	// RawSHA256 is base64url (no padding) of SHA-256 over the exact bytes received.
	RawSHA256 string `json:"raw_sha256"`
	// RawSize is the number of bytes received.
	RawSize int64 `json:"raw_size"`
	// EventType is the sender's name for what happened (an HTTPS
	// submission's Event-Type header); endpoints may filter on it. Empty
	// when not given; mail is of type "mail".
	EventType string `json:"event_type,omitempty"`
}

// EventTypeMail is the event type of every mail submission.
const EventTypeMail = "mail"

// Type returns the submission's event type: EventType, or "mail" for a
// mail submission without one.
func (s *Submission) Type() string {
	if s.EventType == "" && s.Channel == ChannelSMTP {
		return EventTypeMail
	}
	return s.EventType
}

// MaxEventTypeLen bounds an event type.
const MaxEventTypeLen = 64

// ValidEventType reports whether t is an event type: 1 to 64 letters,
// digits, '.', '_' and '-'.
func ValidEventType(t string) bool {
	if t == "" || len(t) > MaxEventTypeLen {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Validate reports whether s has every member a receipt needs and its
// payload and source are JSON values.
func (s *Submission) Validate() error {
	if err := s.Check(); err != nil {
		return err
	}
	switch {
	case !json.Valid(s.Payload):
		return errors.New("submission: payload is not a JSON value")
	case !json.Valid(s.Source):
		return errors.New("submission: source is not a JSON value")
	}
	return nil
}

// jsonUnmarshal is json.Unmarshal, named for the one place that reads the
// JSON submissions of earlier versions.
var jsonUnmarshal = json.Unmarshal

// Enqueuer durably queues a submission. It returns nil only once the queue
// acknowledged the (sealed) message; any error it returns for which
// IsTemporary is true means "try again later".
type Enqueuer interface {
	Enqueue(ctx context.Context, s *Submission) error
}

// ErrTemporary marks failures the sender should retry: queue or KMS
// unavailable, timeouts, shutdown.
var ErrTemporary = errors.New("temporary failure")

// ErrTooLarge marks a payload over a size limit. It is permanent.
var ErrTooLarge = errors.New("payload too large")

// ErrUnavailable marks an ingress that is not ready to accept (shutting down,
// queue not connected). It is temporary.
var ErrUnavailable = fmt.Errorf("service unavailable: %w", ErrTemporary)

type temporaryError struct{ err error }

func (e temporaryError) Error() string { return e.err.Error() }
func (e temporaryError) Unwrap() []error {
	return []error{e.err, ErrTemporary}
}

// Temporary wraps err so that IsTemporary reports true for it while keeping
// err reachable through errors.Is and errors.As. Temporary(nil) is nil.
func Temporary(err error) error {
	if err == nil {
		return nil
	}
	return temporaryError{err}
}

// IsTemporary reports whether err, or anything it wraps, is temporary.
// Context cancellation and deadlines count as temporary: the sender did
// nothing wrong.
func IsTemporary(err error) bool {
	return errors.Is(err, ErrTemporary) ||
		errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, context.Canceled)
}

// EncodeJSON encodes v without escaping <, > and &: mail text and HTML are
// full of them, and each escape would make a stored or queued object 6
// bytes larger per character than what was sent. The result ends in a
// newline.
func EncodeJSON(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
