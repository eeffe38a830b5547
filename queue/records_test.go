package queue_test

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/sealpost/sealpost/queue"
)

func TestRecordsRoundTrip(t *testing.T) {
	type rec struct {
		fields []string
		blob   []byte
	}
	in := []rec{{[]string{"acme", "rcpt_1", "0", "0"}, []byte("sealed")}, {nil, nil}, {[]string{""}, bytes.Repeat([]byte{0xff}, 300)}}
	var b []byte
	for _, r := range in {
		before := len(b)
		b = queue.AppendRecord(b, r.fields, r.blob)
		if got := len(b) - before; got != queue.RecordSize(r.fields, len(r.blob)) {
			t.Fatalf("RecordSize %d, encoded %d", queue.RecordSize(r.fields, len(r.blob)), got)
		}
	}
	var out []rec
	err := queue.EachRecord(b, func(f []string, blob []byte) error {
		out = append(out, rec{append([]string(nil), f...), bytes.Clone(blob)})
		return nil
	})
	if err != nil || fmt.Sprint(out) != fmt.Sprint(in) {
		t.Fatalf("decoded %v, %v; want %v", out, err, in)
	}
	for _, bad := range [][]byte{{0x80}, {17}, {1, 5, 'a'}, {0, 9, 'x'}, {0x80, 0x00, 0}} {
		if err := queue.EachRecord(bad, func([]string, []byte) error { return nil }); !errors.Is(err, queue.ErrBadRecords) {
			t.Errorf("EachRecord(%x) = %v, want ErrBadRecords", bad, err)
		}
	}
}

// FuzzEachRecord: the decoder never panics, and what it accepts encodes
// back to the same bytes.
func FuzzEachRecord(f *testing.F) {
	f.Add(queue.AppendRecord(queue.AppendRecord(nil, []string{"a", "b"}, []byte("c")), nil, nil))
	f.Add([]byte{1, 2, 'h', 'i', 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		var again []byte
		err := queue.EachRecord(b, func(f []string, blob []byte) error {
			again = queue.AppendRecord(again, f, blob)
			return nil
		})
		if err == nil && !bytes.Equal(again, b) {
			t.Fatalf("accepted %x, re-encodes as %x", b, again)
		}
	})
}
