package signer

import "strconv"

// The receipt has a fixed shape, so its JCS form is written member by
// member in canonical order instead of encoding JSON and parsing it back:
// only its source, a JSON object of the ingress's making, is canonicalized.
// TestReceiptJCS and FuzzReceiptJCS hold the result equal to Canonicalize
// of the encoded receipt.

// appendReceiptJCS appends JCS(r) to dst; canonSource is JCS(r.Source).
// r's strings must be valid UTF-8 (checkReceipt) and RawSize and V below
// 2^53.
func appendReceiptJCS(dst []byte, r *Receipt, canonSource []byte) []byte {
	// Member names sorted by UTF-16 code units (all ASCII here).
	dst = append(dst, `{"channel":`...)
	dst = AppendJCSString(dst, r.Channel)
	dst = append(dst, `,"id":`...)
	dst = AppendJCSString(dst, r.ID)
	dst = append(dst, `,"kid":`...)
	dst = AppendJCSString(dst, r.KID)
	dst = append(dst, `,"payload_sha256":`...)
	dst = AppendJCSString(dst, r.PayloadSHA256)
	dst = append(dst, `,"raw_sha256":`...)
	dst = AppendJCSString(dst, r.RawSHA256)
	dst = append(dst, `,"raw_size":`...)
	dst = strconv.AppendInt(dst, r.RawSize, 10)
	dst = append(dst, `,"received_at":`...)
	dst = AppendJCSString(dst, r.ReceivedAt)
	dst = append(dst, `,"route":`...)
	dst = AppendJCSString(dst, r.Route)
	dst = append(dst, `,"signed_at":`...)
	dst = AppendJCSString(dst, r.SignedAt)
	dst = append(dst, `,"source":`...)
	dst = append(dst, canonSource...)
	dst = append(dst, `,"tenant":`...)
	dst = AppendJCSString(dst, r.Tenant)
	dst = append(dst, `,"v":`...)
	dst = strconv.AppendInt(dst, int64(r.V), 10)
	return append(dst, '}')
}

// AppendJCSString appends s, valid UTF-8, as a JSON string the way RFC
// 8785 section 3.2.2.2 writes it: only '"', '\\' and control characters
// are escaped, with the short forms where JSON has them and \u00xx
// (lowercase) otherwise; everything else, U+2028 and U+2029 included, is
// written as it is.
func AppendJCSString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c >= 0x20:
			dst = append(dst, c)
		case c == '\b':
			dst = append(dst, '\\', 'b')
		case c == '\t':
			dst = append(dst, '\\', 't')
		case c == '\n':
			dst = append(dst, '\\', 'n')
		case c == '\f':
			dst = append(dst, '\\', 'f')
		case c == '\r':
			dst = append(dst, '\\', 'r')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
	}
	return append(dst, '"')
}
