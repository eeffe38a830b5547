package signer

import (
	"bytes"
	"encoding/json"
	"testing"
)

func receiptJCSGeneric(t testing.TB, r *Receipt) []byte {
	t.Helper()
	rj, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Canonicalize(rj)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// FuzzReceiptJCS holds the receipt written member by member equal to
// encoding/json plus the generic canonicalizer.
func FuzzReceiptJCS(f *testing.F) {
	f.Add("rcpt_01JD7", "acme", "invoices", "https", `{"remote_addr":"192.0.2.1:5","tls":{"version":"TLS1.3"}}`, int64(1234))
	f.Add("a\"b\\c\x01\x1f\x7f", "\u2028\u2029<>&", "é", "😀", `{"b":[1,2.5e3,"\u00e9"],"a":null}`, int64(0))
	f.Fuzz(func(t *testing.T, id, tenant, route, channel, source string, size int64) {
		r := Receipt{V: Version, ID: id, KID: "kid", Tenant: tenant, Route: route, Channel: channel,
			ReceivedAt: "2026-11-22T10:00:00.123456Z", SignedAt: "2026-11-22T10:00:00.130001Z", Source: json.RawMessage(source),
			PayloadSHA256: "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU", RawSHA256: "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU", RawSize: size}
		if checkReceipt(&r) != nil || size >= 1<<53 {
			return
		}
		canonSource, err := Canonicalize(r.Source)
		if err != nil {
			return
		}
		got := appendReceiptJCS(nil, &r, canonSource)
		if want := receiptJCSGeneric(t, &r); !bytes.Equal(got, want) {
			t.Fatalf("receipt JCS differs:\n got %s\nwant %s", got, want)
		}
	})
}
