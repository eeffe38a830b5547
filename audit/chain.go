package audit

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"time"
)

// The checkpointer integrates every stored record into the tree. Before it
// signs a tree it checks that each version 2 record continues its writer's
// chain, so an entry inserted, left out or edited in the store since it
// was written is not signed over. Decoding every record would cost more
// than the rest of its handling, so the check reads only the chain fields,
// at fixed places of the canonical form; audit verify decodes everything.

// v2Tail is how a version 2 record ends: the version, then the writer id
// (16 hex digits), the last member in JCS order.
const (
	v2TailStart = `,"v":2,"w":"`
	v2TailLen   = len(v2TailStart) + 16 + len(`"}`)
	v1Tail      = `,"v":1}`
)

// parseLink returns a version 2 record's writer, number and link without
// decoding the rest; ok is false when line is not shaped like one. In a
// JCS record every '"' inside a string is escaped, so the unescaped
// patterns looked for occur only as members of the record or of its
// details object, which holds strings only and comes before "n".
func parseLink(line []byte) (writer string, n uint64, prev []byte, ok bool) {
	if len(line) < v2TailLen+32 || line[len(line)-1] != '}' || line[len(line)-2] != '"' ||
		string(line[len(line)-v2TailLen:len(line)-v2TailLen+len(v2TailStart)]) != v2TailStart {
		return "", 0, nil, false
	}
	w := line[len(line)-18 : len(line)-2]
	for _, c := range w {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return "", 0, nil, false
		}
	}
	rest := line
	for {
		i := bytes.Index(rest, []byte(`,"n":`))
		if i < 0 {
			return "", 0, nil, false
		}
		rest = rest[i+len(`,"n":`):]
		if len(rest) > 0 && '0' <= rest[0] && rest[0] <= '9' {
			break
		}
	}
	digits := 0
	for digits < len(rest) && '0' <= rest[digits] && rest[digits] <= '9' {
		n = n*10 + uint64(rest[digits]-'0')
		digits++
		if digits > 16 {
			return "", 0, nil, false
		}
	}
	rest = rest[digits:]
	if !bytes.HasPrefix(rest, []byte(`,"outcome":"`)) {
		return "", 0, nil, false
	}
	rest = rest[len(`,"outcome":"`):]
	end := bytes.IndexByte(rest, '"')
	if end < 0 {
		return "", 0, nil, false
	}
	rest = rest[end+1:]
	if p, found := bytes.CutPrefix(rest, []byte(`,"prev":"`)); found {
		const encLen = 44 // base64 of 32 bytes
		if len(p) < encLen+1 || p[encLen] != '"' {
			return "", 0, nil, false
		}
		prev = make([]byte, sha256.Size)
		if k, err := b64.Decode(prev, p[:encLen]); err != nil || k != sha256.Size {
			return "", 0, nil, false
		}
	}
	if (n == 0) != (prev == nil) {
		return "", 0, nil, false
	}
	return string(w), n, prev, true
}

// writerState is what the checkpointer knows of one writer's chain.
type writerState struct {
	next uint64
	last []byte
	seen time.Time
}

// writerIdle is how long a writer's chain is remembered after its last
// record; a writer is one process, and a process that wrote nothing for
// this long has most likely stopped.
const writerIdle = 15 * time.Minute

// checkLink checks a stored record against its writer's chain and records
// it; seq names the message in errors. Version 1 records (one chain through
// the log, written before writers had their own) are integrated as they
// are.
func (t *tree) checkLink(line, h []byte, seq uint64, now time.Time) error {
	w, n, prev, ok := parseLink(line)
	if !ok {
		if bytes.HasSuffix(line, []byte(v1Tail)) {
			return nil
		}
		return fmt.Errorf("%w: seq %d holds a record that is not a version 2 record", ErrTampered, seq)
	}
	if t.writers == nil {
		t.writers = map[string]*writerState{}
	}
	ws := t.writers[w]
	switch {
	case ws == nil:
		// A writer not seen since this tree was loaded: start following
		// it here.
		ws = &writerState{}
		t.writers[w] = ws
	case n < ws.next:
		return fmt.Errorf("%w: seq %d holds record %d of writer %s again", ErrTampered, seq, n, w)
	case n > ws.next:
		return fmt.Errorf("%w: seq %d holds record %d of writer %s, but %d..%d are missing", ErrTampered, seq, n, w, ws.next, n-1)
	case !bytes.Equal(prev, ws.last):
		return fmt.Errorf("%w: seq %d: record %d of writer %s does not link to the one before", ErrTampered, seq, n, w)
	}
	ws.next, ws.last, ws.seen = n+1, h, now
	return nil
}

// forgetIdleWriters bounds the chains remembered.
func (t *tree) forgetIdleWriters(now time.Time) {
	for w, ws := range t.writers {
		if now.Sub(ws.seen) > writerIdle {
			delete(t.writers, w)
		}
	}
}
