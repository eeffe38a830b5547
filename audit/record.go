package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gowebpki/jcs"
)

// Limits on an entry. Append refuses entries beyond them with ErrInvalidEntry.
const (
	// MaxEntrySize is the largest stored record (the JCS of the entry with
	// its index and link), in bytes.
	MaxEntrySize = 8 << 10
	// MaxDetails is the most Details members an entry may carry.
	MaxDetails = 32
	// MaxFieldLen is the longest Actor, Tenant, Target, RequestID, Details
	// key or Details value, in bytes.
	MaxFieldLen = 1024
	// MaxActionLen is the longest Action, in bytes.
	MaxActionLen = 64
)

// ErrInvalidEntry reports an entry that Append refuses (or a stored record
// that does not decode).
var ErrInvalidEntry = errors.New("invalid audit entry")

// recordVersion is the "v" member of every stored record.
const recordVersion = 1

// Record is an entry as stored: the entry's fields plus its leaf index and
// the leaf hash of the entry before it. The leaf hash of a record is
// SHA-256(0x00 || JCS(record)) as in RFC 6962; storing the index and the link
// inside the hashed bytes lets verify tell deleted, reordered and inserted
// entries apart from modified ones.
type Record struct {
	V     int    `json:"v"`
	Index uint64 `json:"index"`
	// Prev is the base64 (standard, padded) leaf hash of the record at
	// Index-1; empty for the first record.
	Prev string `json:"prev,omitempty"`
	// PrevTime is when the record at Index-1 was handed to the store (the
	// writer's clock, UTC, microseconds), or zero when unknown. It lets
	// verify tell entries that expired under the retention from deleted
	// ones.
	PrevTime time.Time `json:"prev_time,omitzero"`
	Entry
}

// leafHash returns the RFC 6962 leaf hash of the canonical record bytes.
func leafHash(canon []byte) []byte {
	h := sha256.New()
	h.Write([]byte{0})
	h.Write(canon)
	return h.Sum(nil)
}

var b64 = base64.StdEncoding

// actionRE is the shape of an action name: lowercase dotted words.
var actionRE = regexp.MustCompile(`^[a-z0-9_]+(\.[a-z0-9_-]+)*$`)

// localPartRE finds the local part of anything shaped like a mail address:
// a quoted string or a run of characters that are not space or delimiters,
// followed by "@". It is deliberately broad (internationalized and quoted
// local parts, dotless and address-literal domains): a false positive only
// hides a few characters of an audit field, a false negative would store
// personal data.
var localPartRE = regexp.MustCompile(`("[^"]*"|[^\s@<>()\[\],;:"]+)@`)

// redact replaces the local part of every mail address in s with "*".
func redact(s string) string {
	if !strings.Contains(s, "@") {
		return s
	}
	return localPartRE.ReplaceAllString(s, "*@")
}

// normalize fills defaults, removes mail local parts and returns the entry
// as Append stores it. It does not modify e's Details map.
func normalize(e Entry, now time.Time) Entry {
	if e.Time.IsZero() {
		e.Time = now
	}
	e.Time = e.Time.UTC().Truncate(time.Microsecond)
	e.Actor = redact(e.Actor)
	e.Tenant = redact(e.Tenant)
	e.Target = redact(e.Target)
	e.RequestID = redact(e.RequestID)
	if len(e.Details) > 0 {
		d := make(map[string]string, len(e.Details))
		for k, v := range e.Details {
			d[redact(k)] = redact(v)
		}
		e.Details = d
	}
	return e
}

// validate checks an entry's fields against the limits.
func validate(e *Entry) error {
	if e.Action == "" {
		return fmt.Errorf("%w: action is empty", ErrInvalidEntry)
	}
	if len(e.Action) > MaxActionLen || !actionRE.MatchString(e.Action) {
		return fmt.Errorf("%w: action %.64q is not lowercase dotted words of at most %d bytes", ErrInvalidEntry, e.Action, MaxActionLen)
	}
	switch e.Outcome {
	case OutcomeSuccess, OutcomeFailure, OutcomeDenied:
	default:
		return fmt.Errorf("%w: outcome %.32q is not success, failure or denied", ErrInvalidEntry, e.Outcome)
	}
	if e.Actor == "" {
		return fmt.Errorf("%w: actor is empty", ErrInvalidEntry)
	}
	if y := e.Time.Year(); e.Time.IsZero() || y < 1 || y > 9999 {
		return fmt.Errorf("%w: time is zero or outside years 1 to 9999", ErrInvalidEntry)
	}
	for name, v := range map[string]string{"actor": e.Actor, "tenant": e.Tenant, "target": e.Target, "request_id": e.RequestID} {
		if err := checkField(name, v); err != nil {
			return err
		}
	}
	if len(e.Details) > MaxDetails {
		return fmt.Errorf("%w: %d details, limit %d", ErrInvalidEntry, len(e.Details), MaxDetails)
	}
	for k, v := range e.Details {
		if k == "" {
			return fmt.Errorf("%w: empty details key", ErrInvalidEntry)
		}
		if err := checkField("details key", k); err != nil {
			return err
		}
		if err := checkField("details["+k+"]", v); err != nil {
			return err
		}
	}
	return nil
}

func checkField(name, v string) error {
	if len(v) > MaxFieldLen {
		return fmt.Errorf("%w: %.80s is %d bytes, limit %d", ErrInvalidEntry, name, len(v), MaxFieldLen)
	}
	if !utf8.ValidString(v) {
		return fmt.Errorf("%w: %.80s is not valid UTF-8", ErrInvalidEntry, name)
	}
	return nil
}

// link ties a record to the one before it.
type link struct {
	hash []byte    // leaf hash of the previous record; nil for index 0
	time time.Time // when the previous record was stored; may be zero
}

// encodeRecord returns JCS(record) for entry e at index with link prev.
func encodeRecord(e Entry, index uint64, prev link) ([]byte, error) {
	if index > maxIndex {
		return nil, fmt.Errorf("%w: index %d beyond 2^53", ErrInvalidEntry, index)
	}
	canon := appendRecordJCS(make([]byte, 0, 512), &e, index, prev)
	if len(canon) > MaxEntrySize {
		return nil, fmt.Errorf("%w: %d bytes encoded, limit %d", ErrInvalidEntry, len(canon), MaxEntrySize)
	}
	return canon, nil
}

// encodeRecordGeneric is encodeRecord through encoding/json and a generic
// JCS implementation; tests hold the two equal.
func encodeRecordGeneric(e Entry, index uint64, prev link) ([]byte, error) {
	r := Record{V: recordVersion, Index: index, Entry: e, PrevTime: prev.time}
	if prev.hash != nil {
		r.Prev = b64.EncodeToString(prev.hash)
	}
	raw, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidEntry, err)
	}
	canon, err := jcs.Transform(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: canonicalize: %w", ErrInvalidEntry, err)
	}
	return canon, nil
}

// DecodeRecord parses one stored record. It is strict: the bytes must be the
// JCS form of a record with no unknown members, a known version, a valid
// entry and a well-formed link, so that one record has exactly one accepted
// byte string and therefore one leaf hash.
func DecodeRecord(b []byte) (Record, error) {
	var r Record
	if len(b) > MaxEntrySize {
		return r, fmt.Errorf("%w: record is %d bytes, limit %d", ErrInvalidEntry, len(b), MaxEntrySize)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return Record{}, fmt.Errorf("%w: %w", ErrInvalidEntry, err)
	}
	if dec.More() {
		return Record{}, fmt.Errorf("%w: data after the record", ErrInvalidEntry)
	}
	if r.V != recordVersion {
		return Record{}, fmt.Errorf("%w: record version %d, want %d", ErrInvalidEntry, r.V, recordVersion)
	}
	if err := validate(&r.Entry); err != nil {
		return Record{}, err
	}
	switch {
	case r.Index == 0 && (r.Prev != "" || !r.PrevTime.IsZero()):
		return Record{}, fmt.Errorf("%w: first record has a prev link", ErrInvalidEntry)
	case r.Index > 0:
		p, err := b64.Strict().DecodeString(r.Prev)
		if err != nil || len(p) != sha256.Size {
			return Record{}, fmt.Errorf("%w: prev link is not a base64 sha-256 hash", ErrInvalidEntry)
		}
	}
	// The bytes must be exactly the JCS form of what was decoded. This also
	// refuses what encoding/json lets through: member names in another
	// case, repeated members, escapes JCS does not use, trailing data.
	again, err := encodeRecord(r.Entry, r.Index, r.link())
	if err != nil || !bytes.Equal(again, b) {
		return Record{}, fmt.Errorf("%w: record is not in canonical (JCS) form", ErrInvalidEntry)
	}
	return r, nil
}

// link returns the record's link to the one before it.
func (r Record) link() link { return link{hash: r.prevHash(), time: r.PrevTime} }

// prevHash returns the decoded link hash, or nil.
func (r Record) prevHash() []byte {
	if r.Prev == "" {
		return nil
	}
	p, _ := b64.DecodeString(r.Prev)
	return p
}

// splitBatch splits a stored message into its records: one JCS record per
// line.
func splitBatch(data []byte) [][]byte {
	if len(data) == 0 {
		return nil
	}
	return bytes.Split(data, []byte{'\n'})
}
