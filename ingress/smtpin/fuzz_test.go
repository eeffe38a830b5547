package smtpin

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzParseMessage checks that any input either parses into a valid JSON
// payload or fails with one of the documented errors, without panicking.
func FuzzParseMessage(f *testing.F) {
	files, _ := filepath.Glob("testdata/corpus/*.eml")
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(simpleMessage))
	f.Add([]byte(attachmentMessage))
	f.Add([]byte("Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n--a--\r\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		lim := Limits{MaxHeaderBytes: 4096, MaxMIMEDepth: 4, MaxMIMEParts: 20}
		var payload []byte
		var err error
		done := make(chan struct{})
		go func() { payload, err = ParseMessage(raw, lim); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("ParseMessage did not return within 10s on %d bytes", len(raw))
		}
		if err != nil {
			for _, want := range []error{ErrHeaderTooLarge, ErrMIMETooDeep, ErrTooManyParts, ErrMalformed} {
				if errors.Is(err, want) {
					return
				}
			}
			t.Fatalf("undocumented error %v", err)
		}
		if !utf8.Valid(payload) || !json.Valid(payload) {
			t.Fatalf("payload is not valid UTF-8 JSON: %q", payload)
		}
		var m payloadView
		if err := json.Unmarshal(payload, &m); err != nil {
			t.Fatal(err)
		}
		if m.Headers == nil || m.Attachments == nil || m.Defects == nil {
			t.Fatal("payload member missing")
		}
		for _, a := range m.Attachments {
			if a.Content == nil || a.SHA256 == "" {
				t.Fatal("attachment without content or digest")
			}
		}
	})
}

// FuzzSPFRecord evaluates arbitrary SPF records and checks that the result
// is always one of the names RFC 7208 defines.
func FuzzSPFRecord(f *testing.F) {
	for _, s := range []string{
		"v=spf1 ip4:192.0.2.0/24 -all", "v=spf1 include:other.example ~all", "v=spf1 a:%{d}/24//64 mx -all",
		"v=spf1 exists:%{ir}.%{v}._spf.%{d2} redirect=other.example", "v=spf1 %{", "v=spf1 ip6:::1/129",
	} {
		f.Add(s)
	}
	res := &fakeResolver{txt: map[string][]string{"other.example": {"v=spf1 ?all"}}, ip: map[string][]string{"fuzz.example": {"192.0.2.1"}}}
	valid := map[string]bool{"pass": true, "fail": true, "softfail": true, "neutral": true, "none": true, "temperror": true, "permerror": true}
	f.Fuzz(func(t *testing.T, record string) {
		r := &fakeResolver{txt: map[string][]string{"fuzz.example": {record}, "other.example": res.txt["other.example"]}, ip: res.ip}
		got := checkSPF(context.Background(), r, netip.MustParseAddr("192.0.2.1"), "fuzz.example", "a@fuzz.example", "h.example")
		if !valid[got] {
			t.Fatalf("result %q", got)
		}
	})
}
