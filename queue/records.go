package queue

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Several small records share one stored message wherever concurrent work
// is written together (INGEST bundles, receipts and attempts): with every
// write flushed to disk, one message is one flush however many records it
// holds. A record is a few short string fields and one blob, each prefixed
// with its length as a uvarint:
//
//	record = uvarint(nfields) { uvarint(len) field }* uvarint(len) blob
//
// The encoding is unambiguous and lengths are in their shortest form, so a
// message's records decode one way only and encode back to the same bytes.

// Limits of the record encoding.
const (
	// MaxRecordFields bounds the fields of one record.
	MaxRecordFields = 16
	// MaxRecordField bounds one field, in bytes.
	MaxRecordField = 1024
)

// ErrBadRecords reports stored bytes that are not a list of records.
var ErrBadRecords = errors.New("queue: malformed records")

// AppendRecord appends one record to dst. Fields longer than
// MaxRecordField or more than MaxRecordFields are a programming error and
// panic.
func AppendRecord(dst []byte, fields []string, blob []byte) []byte {
	if len(fields) > MaxRecordFields {
		panic("queue: too many record fields")
	}
	dst = binary.AppendUvarint(dst, uint64(len(fields)))
	for _, f := range fields {
		if len(f) > MaxRecordField {
			panic("queue: record field too long")
		}
		dst = binary.AppendUvarint(dst, uint64(len(f)))
		dst = append(dst, f...)
	}
	dst = binary.AppendUvarint(dst, uint64(len(blob)))
	return append(dst, blob...)
}

// RecordSize is the encoded size of a record with these fields and a blob
// of blobLen bytes.
func RecordSize(fields []string, blobLen int) int {
	n := uvarintLen(uint64(len(fields)))
	for _, f := range fields {
		n += uvarintLen(uint64(len(f))) + len(f)
	}
	return n + uvarintLen(uint64(blobLen)) + blobLen
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// uvarint reads a uvarint in its shortest form only, so that one list of
// records has one encoding.
func uvarint(b []byte) (uint64, int) {
	v, n := binary.Uvarint(b)
	if n > 0 && n != uvarintLen(v) {
		return 0, -1
	}
	return v, n
}

// EachRecord calls fn for every record in b, in order. The fields slice is
// reused for the next record and the blob aliases b: fn copies what it
// keeps. An error from fn stops EachRecord and is returned.
func EachRecord(b []byte, fn func(fields []string, blob []byte) error) error {
	var fields []string
	for i := 0; len(b) > 0; i++ {
		nf, n := uvarint(b)
		if n <= 0 || nf > MaxRecordFields {
			return fmt.Errorf("%w: record %d: field count", ErrBadRecords, i)
		}
		b = b[n:]
		fields = fields[:0]
		for range nf {
			l, n := uvarint(b)
			if n <= 0 || l > MaxRecordField || l > uint64(len(b)-n) {
				return fmt.Errorf("%w: record %d: field length", ErrBadRecords, i)
			}
			fields = append(fields, string(b[n:n+int(l)]))
			b = b[n+int(l):]
		}
		l, n := uvarint(b)
		if n <= 0 || l > uint64(len(b)-n) {
			return fmt.Errorf("%w: record %d: blob length", ErrBadRecords, i)
		}
		blob := b[n : n+int(l) : n+int(l)]
		b = b[n+int(l):]
		if err := fn(fields, blob); err != nil {
			return err
		}
	}
	return nil
}
