package audit

import (
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"

	"github.com/sealpost/sealpost/signer"
)

// maxIndex is the largest leaf index or record number a record may carry: JCS writes numbers
// as IEEE 754 doubles, which hold integers exactly only up to 2^53.
const maxIndex = 1<<53 - 1

// appendRecordJCS appends the RFC 8785 (JCS) form of the record for e with
// head h. The record's shape is fixed, so the members are
// written in their canonical order directly instead of parsing JSON back;
// the equality with a generic JCS implementation is tested and fuzzed.
// e must be validated (valid UTF-8) first.
func appendRecordJCS(dst []byte, e *Entry, h head) []byte {
	// Member names sorted by UTF-16 code units (all ASCII here).
	dst = append(dst, `{"action":`...)
	dst = signer.AppendJCSString(dst, e.Action)
	dst = append(dst, `,"actor":`...)
	dst = signer.AppendJCSString(dst, e.Actor)
	if len(e.Details) > 0 {
		dst = append(dst, `,"details":{`...)
		keys := make([]string, 0, len(e.Details))
		for k := range e.Details {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, compareUTF16)
		for i, k := range keys {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = signer.AppendJCSString(dst, k)
			dst = append(dst, ':')
			dst = signer.AppendJCSString(dst, e.Details[k])
		}
		dst = append(dst, '}')
	}
	if h.v == recordV1 {
		dst = append(dst, `,"index":`...)
	} else {
		dst = append(dst, `,"n":`...)
	}
	dst = strconv.AppendUint(dst, h.n, 10)
	dst = append(dst, `,"outcome":`...)
	dst = signer.AppendJCSString(dst, e.Outcome)
	if h.prev != nil {
		dst = append(dst, `,"prev":"`...)
		dst = b64.AppendEncode(dst, h.prev)
		dst = append(dst, '"')
	}
	if h.v == recordV1 && !h.prevTime.IsZero() {
		dst = append(dst, `,"prev_time":"`...)
		dst = h.prevTime.AppendFormat(dst, time.RFC3339Nano)
		dst = append(dst, '"')
	}
	for _, m := range []struct{ name, v string }{{"request_id", e.RequestID}, {"target", e.Target}, {"tenant", e.Tenant}} {
		if m.v != "" {
			dst = append(dst, `,"`...)
			dst = append(dst, m.name...)
			dst = append(dst, `":`...)
			dst = signer.AppendJCSString(dst, m.v)
		}
	}
	dst = append(dst, `,"time":"`...)
	dst = e.Time.AppendFormat(dst, time.RFC3339Nano)
	dst = append(dst, `","v":`...)
	dst = strconv.AppendInt(dst, int64(h.v), 10)
	if h.v == recordV2 {
		dst = append(dst, `,"w":`...)
		dst = signer.AppendJCSString(dst, h.writer)
	}
	return append(dst, '}')
}

// compareUTF16 orders strings by their UTF-16 code units, as JCS sorts
// member names.
func compareUTF16(a, b string) int {
	if isASCII(a) && isASCII(b) {
		return strings.Compare(a, b)
	}
	return slices.Compare(utf16.Encode([]rune(a)), utf16.Encode([]rune(b)))
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// recordOverhead bounds what a version 2 record holds besides its entry's
// strings: member names, quotes, separators, the time, n, prev and w.
const recordOverhead = 256

// maxRecordSize bounds the encoded size of e's record from above: every
// string byte escaped to \u00xx (6 bytes), each details member with its
// quotes and separators.
func maxRecordSize(e *Entry) int {
	n := recordOverhead + 6*(len(e.Action)+len(e.Actor)+len(e.Tenant)+len(e.Target)+len(e.Outcome)+len(e.RequestID))
	for k, v := range e.Details {
		n += 6*(len(k)+len(v)) + 6
	}
	return n
}
