package signer

import (
	"encoding/json"
	"strings"
	"testing"
)

// benchPayload is a JSON payload of about 1 KiB.
func benchPayload() json.RawMessage {
	lines := make([]string, 0, 16)
	for range 16 {
		lines = append(lines, `{"sku":"SKU-000123","qty":2,"price":19.99,"desc":"widget, blue"}`)
	}
	p := `{"invoice":"2026-0042","currency":"EUR","lines":[` + strings.Join(lines, ",") + `]}`
	return json.RawMessage(p)
}

func BenchmarkSign(b *testing.B) {
	k := testKey(b)
	r := testReceipt()
	p := benchPayload()
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Sign(r, p, k); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	env, err := Sign(testReceipt(), benchPayload(), testKey(b))
	if err != nil {
		b.Fatal(err)
	}
	keys := testKeySet(b)
	b.SetBytes(int64(len(env)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Verify(env, keys); err != nil {
			b.Fatal(err)
		}
	}
}
