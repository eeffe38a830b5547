package smtpin

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// TestCorpus parses real-world MIME shapes and compares the payloads with
// golden files. Run with -update to rewrite them after a deliberate change.
func TestCorpus(t *testing.T) {
	files, err := filepath.Glob("testdata/corpus/*.eml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no corpus: %v", err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".eml")
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			payload, err := ParseMessage(raw, Limits{})
			if err != nil {
				t.Fatalf("ParseMessage: %v", err)
			}
			var out bytes.Buffer
			if err := json.Indent(&out, payload, "", "  "); err != nil {
				t.Fatal(err)
			}
			out.WriteByte('\n')
			golden := strings.TrimSuffix(f, ".eml") + ".golden.json"
			if *update {
				if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if !bytes.Equal(out.Bytes(), want) {
				t.Errorf("payload differs from %s:\n%s", golden, out.String())
			}
		})
	}
}

// TestParseExpectations checks, independently of the golden files, what a
// reader of each payload relies on.
func TestParseExpectations(t *testing.T) {
	tests := []struct {
		file  string
		check func(t *testing.T, m *payloadView)
	}{
		{"alternative", func(t *testing.T, m *payloadView) {
			want(t, "text", m.Text, "Invoice 42 is due on 1 December.\r\n")
			want(t, "html", m.HTML, "<p>Invoice <b>42</b> is due on 1 December.</p>\r\n")
			want(t, "cc", len(m.Cc), 2)
			want(t, "date", m.Date, "2026-11-22T09:00:00Z")
			want(t, "first header", m.Headers[0][0], "Return-Path")
			want(t, "message-id header case", m.Headers[5][0], "Message-ID")
		}},
		{"nested-inline-images", func(t *testing.T, m *payloadView) {
			want(t, "attachments", len(m.Attachments), 2)
			want(t, "inline image", m.Attachments[0].ContentID, "logo@vendor.example")
			want(t, "image size", m.Attachments[0].Size, int64(70))
			want(t, "pdf", m.Attachments[1].Filename, "report.pdf")
			want(t, "text", m.Text, "Monthly report, logo inline.")
		}},
		{"iso-8859-1", func(t *testing.T, m *payloadView) {
			if !strings.Contains(m.Text, "n° 42") || !strings.Contains(m.Text, "René") {
				t.Errorf("latin-1 text not decoded: %q", m.Text)
			}
		}},
		{"shift-jis", func(t *testing.T, m *payloadView) {
			want(t, "text", m.Text, "請求書を添付します。\nご確認ください。\n")
			want(t, "subject", m.Subject, "請求書")
		}},
		{"quoted-printable", func(t *testing.T, m *payloadView) {
			if !strings.HasPrefix(m.Text, "Grüße aus München! Dies ist eine sehr lange Zeile, die mit quoted-printable umbrochen wird") {
				t.Errorf("text = %q", m.Text)
			}
		}},
		{"rfc2047", func(t *testing.T, m *payloadView) {
			want(t, "subject", m.Subject, "Rechnung für März € 120")
			want(t, "from name", m.From[0].Name, "René François")
			want(t, "filename 2047", m.Attachments[0].Filename, "Rechnung März.pdf")
			want(t, "filename 2231", m.Attachments[1].Filename, "€-Kurs.txt")
		}},
		{"html-only", func(t *testing.T, m *payloadView) {
			want(t, "text", m.Text, "")
			if !strings.Contains(m.HTML, "Order shipped") {
				t.Errorf("html = %q", m.HTML)
			}
		}},
		{"malformed-boundary", func(t *testing.T, m *payloadView) {
			if len(m.Defects) == 0 {
				t.Error("no defect recorded")
			}
			if !strings.Contains(m.Text, "different boundary") {
				t.Errorf("body lost: text = %q", m.Text)
			}
		}},
		{"text-attachment-latin1", func(t *testing.T, m *payloadView) {
			want(t, "text", m.Text, "Anbei der Export für März.")
			// An attachment keeps the bytes the sender attached: no charset
			// conversion, so size and sha256 match the sender's file.
			a := m.Attachments[0]
			want(t, "filename", a.Filename, "export.csv")
			if a.Size != 23 || a.SHA256 != "7knYtYnfoeyM1XECrrBhv7oW4dnsBd6NoO8aD0TL1Lk" {
				t.Errorf("attachment size %d sha256 %s, want the 23 bytes as sent", a.Size, a.SHA256)
			}
		}},
		{"stray-header-lines", func(t *testing.T, m *payloadView) {
			want(t, "subject", m.Subject, "Invoice 77")
			want(t, "date", m.Date, "2026-11-22T10:00:00Z")
			want(t, "stray line", m.Headers[4], [2]string{"", "This line has no colon"})
			want(t, "defects", len(m.Defects), 3)
		}},
		{"bad-transfer-encoding", func(t *testing.T, m *payloadView) {
			// Undecodable base64 is kept as sent, never emptied.
			want(t, "text", m.Text, "SGVsbG8gd29ybGQ*broken*")
			a := m.Attachments[0]
			sent := "JVBERi0xLjQK!!not base64!!JcTl8uXrp"
			want(t, "size", a.Size, int64(len(sent)))
			want(t, "sha256", a.SHA256, sha256Digest([]byte(sent)))
			want(t, "intact attachment", m.Attachments[1].Size, int64(6))
			if len(m.Defects) != 2 || !strings.Contains(m.Defects[1], "base64") {
				t.Errorf("defects %q", m.Defects)
			}
		}},
		{"unknown-charset", func(t *testing.T, m *payloadView) {
			if len(m.Defects) == 0 || !strings.Contains(m.Text, "kept as they came") {
				t.Errorf("defects %v, text %q", m.Defects, m.Text)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			raw, err := os.ReadFile("testdata/corpus/" + tt.file + ".eml")
			if err != nil {
				t.Fatal(err)
			}
			payload, err := ParseMessage(raw, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			var m payloadView
			if err := json.Unmarshal(payload, &m); err != nil {
				t.Fatal(err)
			}
			tt.check(t, &m)
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		raw  string
		lim  Limits
		want error
	}{
		{"header too large", "X-A: " + strings.Repeat("a", 3000) + "\r\n\r\nbody", Limits{MaxHeaderBytes: 2048}, ErrHeaderTooLarge},
		{"header without end too large", "X-A: " + strings.Repeat("a", 3000), Limits{MaxHeaderBytes: 2048}, ErrHeaderTooLarge},
		{"too deep", "Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n--a--\r\n", Limits{MaxMIMEDepth: 1}, ErrMIMETooDeep},
		{"too many parts", "Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\n\r\nx\r\n--a\r\n\r\ny\r\n--a--\r\n", Limits{MaxMIMEParts: 2}, ErrTooManyParts},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseMessage([]byte(tt.raw), tt.lim)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

type payloadView struct {
	MessageID string `json:"message_id"`
	Date      string `json:"date"`
	Subject   string `json:"subject"`
	From      []struct{ Name, Address string }
	To        []struct{ Name, Address string }
	Cc        []struct{ Name, Address string }
	Headers   [][2]string `json:"headers"`
	Text      string      `json:"text"`
	HTML      string      `json:"html"`
	Defects   []string    `json:"defects"`

	Attachments []struct {
		Filename    string  `json:"filename"`
		ContentType string  `json:"content_type"`
		ContentID   string  `json:"content_id"`
		Size        int64   `json:"size"`
		SHA256      string  `json:"sha256"`
		Content     *string `json:"content"`
		Ref         string  `json:"ref"`
	} `json:"attachments"`
}

func want[T comparable](t *testing.T, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Errorf("%s = %#v, want %#v", what, got, want)
	}
}
