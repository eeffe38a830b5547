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

// Record versions. Version 2 records are written; version 1 records,
// written by earlier sealpost releases, are still read and verified.
const (
	recordV1 = 1
	recordV2 = 2
)

// Record is an entry as stored: the entry's fields plus what ties it to the
// records before it. The leaf hash of a record is SHA-256(0x00 ||
// JCS(record)) as in RFC 6962, and the records are the leaves of the
// Merkle tree in the stream's order.
//
// A version 2 record names its writer (a random id of the process that
// wrote it), its number N among that writer's records, and the leaf hash of
// that writer's previous record: each writer's records form a hash chain,
// so verify tells deleted, reordered and inserted entries apart from
// modified ones without the writers of several instances ever waiting for
// each other. A version 1 record holds its leaf index, the leaf hash of
// the record at index-1 and that record's store time: one chain through
// the whole log.
type Record struct {
	V int `json:"v"`
	// Writer (version 2) names the writing process.
	Writer string `json:"w,omitempty"`
	// N (version 2) numbers the writer's records from 0.
	N uint64 `json:"n,omitempty"`
	// Index (version 1) is the leaf index.
	Index uint64 `json:"index,omitempty"`
	// Prev is the base64 (standard, padded) leaf hash of the record before
	// in the chain; empty for a chain's first record.
	Prev string `json:"prev,omitempty"`
	// PrevTime (version 1) is when the record at Index-1 was handed to the
	// store, or zero when unknown.
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

// validAction reports whether s is lowercase dotted words: [a-z0-9_]+ then
// any number of "." [a-z0-9_-]+.
func validAction(s string) bool {
	word := 0 // length of the current word
	first := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '.':
			if word == 0 {
				return false
			}
			word, first = 0, false
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '_', c == '-' && !first:
			word++
		default:
			return false
		}
	}
	return word > 0
}

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
	if len(e.Action) > MaxActionLen || !validAction(e.Action) {
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

// head is what a record holds besides its entry.
type head struct {
	v      int
	writer string // version 2
	// n is the writer's record number (version 2) or the leaf index
	// (version 1).
	n        uint64
	prev     []byte    // leaf hash of the chain's previous record; nil for the first
	prevTime time.Time // version 1 only
}

// writerRE is the shape of a writer id.
var writerRE = regexp.MustCompile(`^[0-9a-f]{16}$`)

// encodeRecord returns JCS(record) for entry e with head h.
func encodeRecord(e Entry, h head) ([]byte, error) {
	if h.n > maxIndex {
		return nil, fmt.Errorf("%w: record number %d beyond 2^53", ErrInvalidEntry, h.n)
	}
	canon := appendRecordJCS(make([]byte, 0, 512), &e, h)
	if len(canon) > MaxEntrySize {
		return nil, fmt.Errorf("%w: %d bytes encoded, limit %d", ErrInvalidEntry, len(canon), MaxEntrySize)
	}
	return canon, nil
}

// encodeRecordGeneric is encodeRecord through encoding/json and a generic
// JCS implementation; tests hold the two equal.
func encodeRecordGeneric(e Entry, h head) ([]byte, error) {
	r := Record{V: h.v, Entry: e}
	switch h.v {
	case recordV1:
		r.Index, r.PrevTime = h.n, h.prevTime
	default:
		r.Writer, r.N = h.writer, h.n
	}
	if h.prev != nil {
		r.Prev = b64.EncodeToString(h.prev)
	}
	raw, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidEntry, err)
	}
	if h.v == recordV2 && h.n == 0 {
		// omitempty drops n=0, which version 2 writes.
		raw = append(raw[:len(raw)-1], `,"n":0}`...)
	}
	if h.v == recordV1 && h.n == 0 {
		raw = append(raw[:len(raw)-1], `,"index":0}`...)
	}
	canon, err := jcs.Transform(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: canonicalize: %w", ErrInvalidEntry, err)
	}
	return canon, nil
}

// DecodeRecord parses one stored record. It is strict: the bytes must be the
// JCS form of a record with no unknown members, a known version, a valid
// entry and a well-formed chain link, so that one record has exactly one
// accepted byte string and therefore one leaf hash.
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
	switch r.V {
	case recordV1:
	case recordV2:
		if !writerRE.MatchString(r.Writer) {
			return Record{}, fmt.Errorf("%w: writer is not 16 hex digits", ErrInvalidEntry)
		}
	default:
		return Record{}, fmt.Errorf("%w: record version %d, want %d or %d", ErrInvalidEntry, r.V, recordV1, recordV2)
	}
	if err := validate(&r.Entry); err != nil {
		return Record{}, err
	}
	h := r.head()
	switch {
	case h.n == 0 && (r.Prev != "" || !r.PrevTime.IsZero()):
		return Record{}, fmt.Errorf("%w: first record of a chain has a prev link", ErrInvalidEntry)
	case h.n > 0:
		p, err := b64.Strict().DecodeString(r.Prev)
		if err != nil || len(p) != sha256.Size {
			return Record{}, fmt.Errorf("%w: prev link is not a base64 sha-256 hash", ErrInvalidEntry)
		}
	}
	// The bytes must be exactly the JCS form of what was decoded. This also
	// refuses what encoding/json lets through: member names in another
	// case, repeated members, escapes JCS does not use, trailing data, and
	// members of the other version.
	again, err := encodeRecord(r.Entry, h)
	if err != nil || !bytes.Equal(again, b) {
		return Record{}, fmt.Errorf("%w: record is not in canonical (JCS) form", ErrInvalidEntry)
	}
	return r, nil
}

// head returns the record's chain data.
func (r Record) head() head {
	h := head{v: r.V, prev: r.prevHash()}
	if r.V == recordV1 {
		h.n, h.prevTime = r.Index, r.PrevTime
	} else {
		h.writer, h.n = r.Writer, r.N
	}
	return h
}

// chain names the hash chain a record belongs to: its writer, or "" for
// the single chain of version 1 records.
func (r Record) chain() string { return r.Writer }

// number is the record's place in its chain.
func (r Record) number() uint64 { return r.head().n }

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
