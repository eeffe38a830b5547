package ingress

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

func TestEncodeJSONKeepsHTML(t *testing.T) {
	env := json.RawMessage(`{"html":"<p>a&b</p>"}`)
	got, err := EncodeJSON(struct {
		Envelope json.RawMessage `json:"envelope"`
	}{env})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"envelope":{"html":"<p>a&b</p>"}}` + "\n"; string(got) != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

// TestSubmissionBinary: the binary form reads back as written; the JSON
// of earlier versions still reads; damaged forms are refused, never read
// wrong.
func TestSubmissionBinary(t *testing.T) {
	plain := &Submission{ID: "rcpt_01JD7", Tenant: "acme", Route: "invoices", Channel: ChannelHTTPS,
		ReceivedAt: time.Date(2026, 11, 22, 10, 0, 0, 123456789, time.UTC), Source: json.RawMessage(`{"remote_addr":"192.0.2.1"}`),
		Payload: json.RawMessage(`{"a":"é<&>"}`), PayloadJCS: true, RawSHA256: "abc", RawSize: 17}
	typed := *plain
	typed.EventType = "order.created"
	for _, s := range []*Submission{plain, &typed} {
		b := s.AppendBinary(nil)
		if len(b) > s.BinarySize() {
			t.Fatalf("binary form of %d bytes above its size bound %d", len(b), s.BinarySize())
		}
		got, err := DecodeSubmission(b)
		if err != nil || !reflect.DeepEqual(got, s) {
			t.Fatalf("DecodeSubmission = %+v, %v; want %+v", got, err, s)
		}
		legacy, _ := EncodeJSON(s)
		if got, err := DecodeSubmission(legacy); err != nil || got.ID != s.ID || string(got.Payload) != string(s.Payload) || got.EventType != s.EventType {
			t.Fatalf("JSON form: %+v, %v", got, err)
		}
		for i := range b {
			if _, err := DecodeSubmission(b[:i]); err == nil {
				t.Fatalf("a form cut at %d of %d bytes was read", i, len(b))
			}
		}
		if _, err := DecodeSubmission(append(b, 0)); err == nil {
			t.Fatal("trailing bytes were read")
		}
	}
}

// FuzzDecodeSubmission: the decoder never panics, and what it reads in
// the binary form encodes back to the same bytes.
func FuzzDecodeSubmission(f *testing.F) {
	s := &Submission{ID: "rcpt_1", Tenant: "t", Route: "r", Channel: ChannelSMTP, ReceivedAt: time.Unix(1, 0), Source: []byte("{}"), Payload: []byte("[]")}
	f.Add(s.AppendBinary(nil))
	s.EventType = "x.y"
	f.Add(s.AppendBinary(nil))
	f.Add([]byte(`{"id":"x"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := DecodeSubmission(b)
		if err != nil || len(b) == 0 || b[0] == '{' {
			return
		}
		if again := got.AppendBinary(nil); string(again) != string(b) {
			t.Fatalf("read %x, writes %x", b, again)
		}
	})
}

func TestThrottle(t *testing.T) {
	var th Throttle
	t0 := time.Unix(1_000_000, 0)
	steps := []struct {
		at      time.Duration
		ok      bool
		skipped int
	}{
		{0, true, 0},
		{10 * time.Millisecond, false, 0},
		{999 * time.Millisecond, false, 0},
		{time.Second, true, 2},
		{1500 * time.Millisecond, false, 0},
		{5 * time.Second, true, 1},
		{5*time.Second + 1, false, 0},
	}
	for _, s := range steps {
		ok, skipped := th.Allow(t0.Add(s.at))
		if ok != s.ok || skipped != s.skipped {
			t.Errorf("at %s: Allow = %v, %d; want %v, %d", s.at, ok, skipped, s.ok, s.skipped)
		}
	}
	th = Throttle{Period: time.Minute}
	th.Allow(t0)
	if ok, _ := th.Allow(t0.Add(59 * time.Second)); ok {
		t.Error("a one-minute throttle let a second event through after 59 s")
	}
}
