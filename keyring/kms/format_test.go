package kms

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the sealed-format vector in testdata")

// vector is a sealed object kept in testdata so that every later version
// of sealpost still opens what version 1 sealed.
type vector struct {
	Comment   string   `json:"comment"`
	Tenant    string   `json:"tenant"`
	Purpose   string   `json:"purpose"`
	ObjectID  string   `json:"object_id"`
	Plaintext string   `json:"plaintext"`
	Sealed    string   `json:"sealed_hex"`
	Layout    []string `json:"layout"`
}

const (
	vectorMaster = "testdata/v1-master.key"
	vectorFile   = "testdata/v1-local.json"
)

// vectorKEK opens the fixed test master key from testdata. Git does not
// keep file modes, so it is copied to a private file first.
func vectorKEK(t testing.TB) *Local {
	t.Helper()
	data, err := os.ReadFile(vectorMaster)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, MasterKeyFile), data, 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := OpenLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// layout describes a sealed blob field by field, as in the package
// documentation.
func layout(b []byte) ([]string, error) {
	s, err := parseSealed(b)
	if err != nil {
		return nil, err
	}
	n := len(s.provider)
	off := 0
	var out []string
	field := func(name string, size int) {
		out = append(out, fmt.Sprintf("%5d %5d  %-20s %s", off, size, name, hex.EncodeToString(b[off:off+size])))
		off += size
	}
	field("magic", 4)
	field("format version", 1)
	field("provider id length", 1)
	field("provider id", n)
	field("wrapped key length", 2)
	if s.provider == "local" {
		field("  wrap format", 1)
		field("  master version", 4)
		field("  wrap nonce", nonceSize)
		field("  wrapped data key", dataKeySize+tagSize)
	} else {
		field("wrapped key", len(s.wrapped))
	}
	field("nonce", nonceSize)
	field("ciphertext", len(s.ciphertext)-tagSize)
	field("tag", tagSize)
	return out, nil
}

func TestSealedVector(t *testing.T) {
	kek := vectorKEK(t)
	e := newEnvelope(t, Config{KEK: kek})
	if *update {
		v := vector{
			Comment:  "sealed format v1 under the local provider with testdata/v1-master.key; fields: offset size name hex",
			Tenant:   "acme",
			Purpose:  PurposeReceipt,
			ObjectID: "rcpt_01JD7Z8Q4K2M3N5P6R7S8T9V0W",
		}
		v.Plaintext = `{"receipt":{"v":1,"id":"rcpt_01JD7Z8Q4K2M3N5P6R7S8T9V0W"}}`
		b := mustSeal(t, e, Context{v.Tenant, v.Purpose, v.ObjectID}, []byte(v.Plaintext))
		v.Sealed = hex.EncodeToString(b)
		var err error
		if v.Layout, err = layout(b); err != nil {
			t.Fatal(err)
		}
		data, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(vectorFile, append(data, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(vectorFile)
	if err != nil {
		t.Fatal(err)
	}
	var v vector
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	b, err := hex.DecodeString(v.Sealed)
	if err != nil {
		t.Fatal(err)
	}
	got, err := layout(b)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, "\n") != strings.Join(v.Layout, "\n") {
		t.Errorf("layout of the stored blob differs from %s (run with -update after a deliberate format change):\n%s", vectorFile, strings.Join(got, "\n"))
	}
	c := Context{v.Tenant, v.Purpose, v.ObjectID}
	mustOpen(t, e, c, b, []byte(v.Plaintext))
	c.ObjectID += "x"
	if _, err := e.Open(context.Background(), c, b); !errors.Is(err, ErrOpen) {
		t.Fatalf("vector opened under another object id: %v", err)
	}
}

func TestParseSealedRejects(t *testing.T) {
	valid, err := appendHeader(nil, "local", make([]byte, localWrapSize))
	if err != nil {
		t.Fatal(err)
	}
	valid = append(valid, make([]byte, nonceSize+tagSize)...)
	if _, err := parseSealed(valid); err != nil {
		t.Fatalf("parseSealed(minimal valid) = %v", err)
	}
	mod := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(valid)) }
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, "too short"},
		{"magic", mod(func(b []byte) []byte { b[0] = 'X'; return b }), "bad magic"},
		{"version 2", mod(func(b []byte) []byte { b[4] = 2; return b }), "unsupported format version 2"},
		{"version 0", mod(func(b []byte) []byte { b[4] = 0; return b }), "unsupported format version 0"},
		{"provider length 0", mod(func(b []byte) []byte { b[5] = 0; return b }), "provider id length 0"},
		{"provider length 33", mod(func(b []byte) []byte { b[5] = 33; return b }), "provider id length 33"},
		{"provider not ascii", mod(func(b []byte) []byte { b[6] = 0; return b }), "printable"},
		{"wrapped length 0", mod(func(b []byte) []byte { b[11], b[12] = 0, 0; return b }), "wrapped key length 0"},
		{"wrapped length huge", mod(func(b []byte) []byte { b[11], b[12] = 0xff, 0xff; return b }), "wrapped key length 65535"},
		{"wrapped beyond end", mod(func(b []byte) []byte { b[11], b[12] = 0x01, 0x00; return b }), "truncated"},
		{"no tag", valid[:len(valid)-1], "truncated"},
		{"provider beyond end", mod(func(b []byte) []byte { b[5] = 32; return b[:39] }), "truncated header"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseSealed(tc.b)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("parseSealed: %v; want an error containing %q", err, tc.want)
			}
		})
	}
}

func fuzzSeeds(f *testing.F) {
	data, err := os.ReadFile(vectorFile)
	if err != nil {
		f.Fatal(err)
	}
	var v vector
	if err := json.Unmarshal(data, &v); err != nil {
		f.Fatal(err)
	}
	b, err := hex.DecodeString(v.Sealed)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add(b[:len(b)-tagSize])
	f.Add(b[:20])
	f.Add([]byte("SPS1"))
	f.Add([]byte("SPS1\x01\x03aws\x00\x01x0123456789abcdef0123456789ab"))
}

func FuzzParseSealed(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := parseSealed(b)
		if err != nil {
			return
		}
		h, err := appendHeader(nil, s.provider, s.wrapped)
		if err != nil {
			t.Fatalf("parsed header does not re-encode: %v", err)
		}
		if !bytes.Equal(h, s.header) {
			t.Fatalf("re-encoded header %x, parsed %x", h, s.header)
		}
		if len(s.nonce) != nonceSize || len(s.ciphertext) < tagSize {
			t.Fatalf("nonce %d bytes, ciphertext %d bytes", len(s.nonce), len(s.ciphertext))
		}
		if len(s.header)+len(s.nonce)+len(s.ciphertext) != len(b) {
			t.Fatal("fields do not cover the blob")
		}
	})
}

// FuzzOpen feeds arbitrary blobs to Open under the vector's key: it must
// never panic, and every failure is a permanent ErrOpen.
func FuzzOpen(f *testing.F) {
	fuzzSeeds(f)
	e := newEnvelope(f, Config{KEK: vectorKEK(f)})
	c := Context{"acme", PurposeReceipt, "rcpt_01JD7Z8Q4K2M3N5P6R7S8T9V0W"}
	f.Fuzz(func(t *testing.T, b []byte) {
		pt, err := e.Open(context.Background(), c, b)
		if err != nil {
			if !errors.Is(err, ErrOpen) || pt != nil {
				t.Fatalf("Open = %q, %v; want ErrOpen and no plaintext", pt, err)
			}
		}
	})
}
