package signer

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/gowebpki/jcs"
)

// errorCode is the name of an outcome in the shared vectors, the same in
// every receiver kit.
func errorCode(err error) string {
	for _, c := range []struct {
		err  error
		code string
	}{
		{ErrMalformed, "malformed"}, {ErrUnknownKey, "unknown_key"}, {ErrKeyMismatch, "key_mismatch"},
		{ErrOutsideWindow, "outside_window"}, {ErrRevoked, "revoked"}, {ErrBadSignature, "bad_signature"},
		{ErrPayloadDigest, "payload_digest"}, {ErrWebhookMalformed, "malformed"},
		{ErrWebhookTimestamp, "outside_tolerance"}, {ErrWebhookSignature, "bad_signature"},
		{ErrWebhookHMAC, "bad_signature"}, {ErrWebhookID, "id_mismatch"},
	} {
		if err == c.err {
			return c.code
		}
	}
	return "unknown error " + err.Error()
}

func loadVectors[T any](t *testing.T, name string) vectorFile[T] {
	t.Helper()
	var f vectorFile[T]
	if err := json.Unmarshal(readFile(t, "testdata/vectors/"+name), &f); err != nil {
		t.Fatal(err)
	}
	if len(f.Cases) == 0 {
		t.Fatalf("%s has no cases", name)
	}
	return f
}

func vectorKeys(t *testing.T, sets map[string]string, name string) *KeySet {
	t.Helper()
	if name == "" {
		return nil
	}
	doc, ok := sets[name]
	if !ok {
		t.Fatalf("no key set %q", name)
	}
	ks, err := ParseKeySet([]byte(doc))
	if err != nil {
		t.Fatalf("key set %s: %v", name, err)
	}
	return ks
}

// vectorBytes returns a vector's document: its text, or the bytes of its
// base64 form when it is not UTF-8.
func vectorBytes(t *testing.T, text, b64 string) []byte {
	t.Helper()
	if b64 == "" {
		return []byte(text)
	}
	b, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkOutcome compares a Verify or VerifyWebhook outcome with a vector's.
func checkOutcome(t *testing.T, want vectorExpect, v *Verified, err error) {
	t.Helper()
	if want.OK {
		if err != nil {
			t.Fatalf("want ok, got %v", err)
		}
		if v == nil {
			if want.ReceiptID != "" {
				t.Fatal("want a verified receipt, got none")
			}
			return
		}
		if (want.ReceiptID != "" && v.Receipt.ID != want.ReceiptID) || (want.KeyID != "" && v.KeyID != want.KeyID) ||
			(want.PayloadPresent != nil && v.PayloadPresent != *want.PayloadPresent) {
			t.Fatalf("verified %+v, want %+v", v, want)
		}
		return
	}
	var ve *VerifyError
	if !errors.As(err, &ve) {
		t.Fatalf("want %s at %s, got %v", want.Error, want.Step, err)
	}
	if ve.Step != want.Step || errorCode(ve.Err) != want.Error {
		t.Fatalf("want %s at %s, got %s at %s (%v)", want.Error, want.Step, errorCode(ve.Err), ve.Step, err)
	}
	if lossy := errors.Is(err, ErrLossyNumber); lossy != (want.Cause == "lossy_number") {
		t.Fatalf("cause %q, but the error is %v", want.Cause, err)
	}
}

// TestSharedVectors runs the vectors of testdata/vectors, which the
// JavaScript and Python kits run too.
func TestSharedVectors(t *testing.T) {
	t.Run("receipts", func(t *testing.T) {
		f := loadVectors[receiptVector](t, "receipts.json")
		for _, c := range f.Cases {
			t.Run(c.Name, func(t *testing.T) {
				v, err := Verify(vectorBytes(t, c.Envelope, c.EnvelopeBase64), vectorKeys(t, f.KeySets, c.KeySet))
				checkOutcome(t, c.Expect, v, err)
			})
		}
	})
	t.Run("webhooks", func(t *testing.T) {
		f := loadVectors[webhookVector](t, "webhooks.json")
		for _, c := range f.Cases {
			t.Run(c.Name, func(t *testing.T) {
				h := c.Headers
				w, err := VerifyWebhook(h["webhook-id"], h["webhook-timestamp"], h["webhook-signature"], []byte(c.Body), WebhookOptions{
					Keys:      vectorKeys(t, f.KeySets, c.KeySet),
					Secrets:   c.Secrets,
					Tolerance: time.Duration(c.ToleranceSeconds) * time.Second,
					Now:       time.Unix(c.Now, 0),
				})
				var v *Verified
				if w != nil {
					v = w.Receipt
					if w.ID != h["webhook-id"] || strconv.FormatInt(w.Timestamp.Unix(), 10) != h["webhook-timestamp"] {
						t.Fatalf("webhook %+v", w)
					}
				}
				checkOutcome(t, c.Expect, v, err)
			})
		}
	})
	t.Run("jcs", func(t *testing.T) {
		f := loadVectors[jcsVector](t, "jcs.json")
		for _, c := range f.Cases {
			t.Run(c.Name, func(t *testing.T) {
				got, err := Canonicalize(vectorBytes(t, c.Input, c.InputBase64))
				switch {
				case c.Expect.OK && (err != nil || string(got) != c.Expect.Output):
					t.Fatalf("Canonicalize = %s, %v; want %s", got, err, c.Expect.Output)
				case !c.Expect.OK && err == nil:
					t.Fatalf("Canonicalize = %s, want %s", got, c.Expect.Error)
				case !c.Expect.OK && errors.Is(err, ErrLossyNumber) != (c.Expect.Error == "lossy_number"):
					t.Fatalf("Canonicalize: %v, want %s", err, c.Expect.Error)
				}
			})
		}
		if len(f.Numbers) < 800 {
			t.Fatalf("only %d numbers", len(f.Numbers))
		}
		for _, n := range f.Numbers {
			raw, err := hex.DecodeString(n[0])
			if err != nil || len(raw) != 8 {
				t.Fatalf("bad bits %q", n[0])
			}
			bits := binary.BigEndian.Uint64(raw)
			if s, err := jcs.NumberToJSON(math.Float64frombits(bits)); err != nil || s != n[1] {
				t.Errorf("%s formats as %s (%v), want %s", n[0], s, err, n[1])
			}
			if f, err := strconv.ParseFloat(n[1], 64); err != nil || math.Float64bits(f) != bits && !(f == 0 && bits == 1<<63) {
				t.Errorf("%s parses to %x (%v), want %s", n[1], math.Float64bits(f), err, n[0])
			}
			if c, err := Canonicalize([]byte(n[1])); err != nil || string(c) != n[1] {
				t.Errorf("Canonicalize(%s) = %s, %v", n[1], c, err)
			}
		}
	})
	t.Run("key sets", func(t *testing.T) {
		f := loadVectors[keySetVector](t, "keysets.json")
		for _, c := range f.Cases {
			t.Run(c.Name, func(t *testing.T) {
				ks, err := ParseKeySet([]byte(c.Document))
				if !c.Expect.OK {
					if err == nil {
						t.Fatalf("ParseKeySet accepted %s", c.Document)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				var kids []string
				for _, k := range ks.Keys {
					kids = append(kids, k.KID)
				}
				if !slices.Equal(kids, c.Expect.KIDs) {
					t.Fatalf("kids %v, want %v", kids, c.Expect.KIDs)
				}
			})
		}
	})
}
