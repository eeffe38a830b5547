package audit

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/sealpost/sealpost/queue"
)

// The receipt index tells where a receipt's entries are in the tree
// without reading the log. The checkpointer, which reads every stored
// record anyway, notes each message.* entry whose target is a receipt id:
// its action, leaf index and stream sequence. Receipt ids are "rcpt_" and
// a ULID whose first 24 characters are shared by ids minted together (a
// group, see package ingress); the index keeps one subject per group, and
// the notes of one group gathered since the last write share one message.
// So the ingest and delivery path gains no write, the checkpointer writes
// about one message per group, and a lookup reads the few messages of one
// subject. The index is a hint: a proof is built from the record it points
// at, which the handler checks, and the proof itself from the signed tree.

const (
	receiptIDLen = 5 + 26
	groupStart   = 5
	groupEnd     = 5 + 24
)

// crockford marks the characters of Crockford's base32, as ULIDs write
// them (upper case).
var crockford = func() (t [256]bool) {
	for _, c := range "0123456789ABCDEFGHJKMNPQRSTVWXYZ" {
		t[c] = true
	}
	return t
}()

// ValidReceiptID reports whether id has the form of a receipt id
// (ingress.NewID): "rcpt_" and a ULID, 26 Crockford base32 characters of
// which the first is at most '7' (128 bits). It runs for every message
// step the checkpointer reads, so it is written out rather than a regexp.
func ValidReceiptID(id string) bool {
	if len(id) != receiptIDLen || id[:groupStart] != "rcpt_" || id[groupStart] > '7' {
		return false
	}
	for i := groupStart; i < len(id); i++ {
		if !crockford[id[i]] {
			return false
		}
	}
	return true
}

// indexNote is one indexed entry.
type indexNote struct {
	suffix string // the id's last two characters; the group names the subject
	action string
	index  uint64
	seq    uint64
	pos    int // the record's line in its message
}

// indexer gathers notes by group until they are written.
type indexer struct {
	groups map[string][]indexNote
	order  []string
	n      int
}

func newIndexer() *indexer { return &indexer{groups: map[string][]indexNote{}} }

// maxPendingNotes bounds the notes held before they are written.
const maxPendingNotes = 64 << 10

// messagePrefix starts every record of a message step: "action" is the
// first member in JCS order.
var messagePrefix = []byte(`{"action":"message.`)

// add notes the record line at leaf index, stored at seq, when it is a
// message step of a receipt. It reads only what it needs, at fixed places
// of the canonical form (see parseLink): the action is the first member;
// after the record's number ("n", or "index" in version 1) only top-level
// members follow, in which every '"' inside a string is escaped, so the
// first unescaped `,"target":"` there is the target.
func (ix *indexer) add(line []byte, index, seq uint64, pos int) {
	if !bytes.HasPrefix(line, messagePrefix) {
		return
	}
	rest := line[len(`{"action":"`):]
	end := bytes.IndexByte(rest, '"')
	if end < 0 || end > MaxActionLen {
		return
	}
	action := string(rest[:end])
	at := numberMember(line)
	if at < 0 {
		return
	}
	i := bytes.Index(line[at:], []byte(`,"target":"`))
	if i < 0 {
		return
	}
	t := line[at+i+len(`,"target":"`):]
	if len(t) <= receiptIDLen || t[receiptIDLen] != '"' {
		return
	}
	id := string(t[:receiptIDLen])
	if !ValidReceiptID(id) {
		return
	}
	g := id[groupStart:groupEnd]
	if _, ok := ix.groups[g]; !ok {
		ix.order = append(ix.order, g)
	}
	ix.groups[g] = append(ix.groups[g], indexNote{suffix: id[groupEnd:], action: action, index: index, seq: seq, pos: pos})
	ix.n++
}

// numberMember returns the offset just after the top-level `,"n":<digits>`
// (version 2) or `,"index":<digits>` (version 1) of a record, or -1. The
// details object, the only place a nested member could look alike, holds
// strings only and comes before both.
func numberMember(line []byte) int {
	for _, name := range []string{`,"n":`, `,"index":`} {
		off := 0
		for {
			i := bytes.Index(line[off:], []byte(name))
			if i < 0 {
				break
			}
			off += i + len(name)
			if off < len(line) && '0' <= line[off] && line[off] <= '9' {
				return off
			}
		}
	}
	return -1
}

// encodeNotes writes a group's notes as lines "<suffix> <action> <index>
// <seq> <line in the message>".
func encodeNotes(ns []indexNote) []byte {
	var b []byte
	for _, n := range ns {
		b = append(b, n.suffix...)
		b = append(b, ' ')
		b = append(b, n.action...)
		b = append(b, ' ')
		b = strconv.AppendUint(b, n.index, 10)
		b = append(b, ' ')
		b = strconv.AppendUint(b, n.seq, 10)
		b = append(b, ' ')
		b = strconv.AppendInt(b, int64(n.pos), 10)
		b = append(b, '\n')
	}
	return b
}

// indexStream is what the index needs of its stream; *queue.Stream is one.
type indexStream interface {
	AppendAsync(subject, msgID string, header map[string]string, data []byte) (func(ctx context.Context) (uint64, error), error)
	Each(ctx context.Context, subject string, fn func(*queue.Msg) error) error
}

var _ indexStream = (*queue.Stream)(nil)

// maxIndexMessage bounds one index message; a group's notes are split
// over several when they are more.
const maxIndexMessage = 64 << 10

// write stores the gathered notes, one message per group (more for a very
// large group), all publishes in flight at once. Message ids name the
// group and first leaf, so a checkpointer that takes over and writes the
// same notes again within the duplicate window stores them once. Notes
// that were not written stay for the next write.
func (ix *indexer) write(ctx context.Context, s indexStream, subject string) error {
	if ix.n == 0 {
		return nil
	}
	var waits []func(context.Context) (uint64, error)
	var errs []error
	for _, g := range ix.order {
		ns := ix.groups[g]
		for len(ns) > 0 {
			k := min(len(ns), maxIndexMessage/128) // a note is at most 120 bytes
			wait, err := s.AppendAsync(subject+"."+g, "ix-"+g+"-"+strconv.FormatUint(ns[0].index, 10), nil, encodeNotes(ns[:k]))
			if err != nil {
				errs = append(errs, err)
				break
			}
			waits = append(waits, wait)
			ns = ns[k:]
		}
	}
	for _, wait := range waits {
		if _, err := wait(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		// Everything is kept and written again: the message ids make a
		// repeat within the duplicate window a no-op, and lookups ignore
		// a note seen twice.
		return fmt.Errorf("write receipt index: %w", errors.Join(errs...))
	}
	*ix = indexer{groups: map[string][]indexNote{}}
	return nil
}

// IndexedEntry is where one of a receipt's entries is.
type IndexedEntry struct {
	Action string
	Index  uint64
	Seq    uint64
	// Pos is the record's line in the stored message.
	Pos int
}

// maxReceiptEntries bounds the entries one receipt lookup returns.
const maxReceiptEntries = 128

// lookupReceipt returns the indexed entries of receipt id, by leaf index,
// at most maxReceiptEntries (more is true when there were more).
func lookupReceipt(ctx context.Context, s indexStream, subject, id string) (out []IndexedEntry, more bool, err error) {
	if !ValidReceiptID(id) {
		return nil, false, nil
	}
	suffix := id[groupEnd:]
	seen := map[uint64]bool{}
	err = s.Each(ctx, subject+"."+id[groupStart:groupEnd], func(m *queue.Msg) error {
		if len(m.Data) > maxIndexMessage {
			return nil
		}
		for _, line := range strings.Split(strings.TrimSuffix(string(m.Data), "\n"), "\n") {
			f := strings.Fields(line)
			if len(f) != 5 || f[0] != suffix {
				continue
			}
			index, err1 := strconv.ParseUint(f[2], 10, 64)
			seq, err2 := strconv.ParseUint(f[3], 10, 64)
			pos, err3 := strconv.Atoi(f[4])
			if err1 != nil || err2 != nil || err3 != nil || pos < 0 || seen[index] {
				continue
			}
			seen[index] = true
			out = append(out, IndexedEntry{Action: f[1], Index: index, Seq: seq, Pos: pos})
		}
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	slices.SortFunc(out, func(a, b IndexedEntry) int { return cmp.Compare(a.Index, b.Index) })
	if len(out) > maxReceiptEntries {
		return out[:maxReceiptEntries], true, nil
	}
	return out, false, nil
}
