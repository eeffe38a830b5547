package signer

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// MaxKeySetSize is the largest JWKS or key-history document, in bytes, that
// ParseKeySet accepts (1 MiB).
const MaxKeySetSize = 1 << 20

// ErrInvalidKeySet reports a JWKS or key-history document that ParseKeySet
// refuses.
var ErrInvalidKeySet = errors.New("invalid key set")

// Key statuses, as published in the key history.
const (
	StatusNext    = "next"
	StatusActive  = "active"
	StatusGrace   = "grace"
	StatusExpired = "expired"
	StatusRevoked = "revoked"
)

// PublicKey is a verification key with its windows, as published in the JWKS
// and the key history.
type PublicKey struct {
	KID string
	Key ed25519.PublicKey
	// Status is one of the Status constants in the key history; it may be
	// empty in a plain JWKS.
	Status string
	// IssuedAt is when the key was created and published (JWK "iat").
	IssuedAt time.Time
	// NotBefore is the start of the signing window (JWK "nbf"); zero means
	// no lower bound.
	NotBefore time.Time
	// SignsUntil is the end of the signing window (JWK "signs_until"); zero
	// means the window is open.
	SignsUntil time.Time
	// Expires is the end of the window in which the key is published in the
	// JWKS (JWK "exp"): SignsUntil plus the grace period. Receipts signed
	// inside the signing window stay verifiable after it, through the key
	// history.
	Expires time.Time
	// RevokedAt is when the key was revoked (JWK "revoked_at"); zero means
	// not revoked. Receipts signed at or after it do not verify.
	RevokedAt time.Time
}

// NumericDate is a JWT NumericDate (RFC 7519 section 2): seconds since the
// Unix epoch, written as an integer, or with up to six fractional digits when
// the time is not a whole second. The zero value is omitted from JWKs.
type NumericDate time.Time

// maxNumericDate is 9999-12-31T23:59:59Z, a bound that keeps parsed dates
// inside what time.Time and the receipt layout can represent.
const maxNumericDate = 253402300799

// Time returns d as a UTC time.
func (d NumericDate) Time() time.Time {
	t := time.Time(d)
	if t.IsZero() {
		return t
	}
	return t.UTC()
}

// IsZero reports whether d is unset.
func (d NumericDate) IsZero() bool { return time.Time(d).IsZero() }

// MarshalJSON writes d as a JSON number.
func (d NumericDate) MarshalJSON() ([]byte, error) {
	t := time.Time(d)
	sec := t.Unix()
	if sec < 0 || sec > maxNumericDate {
		return nil, fmt.Errorf("numeric date %s is out of range", t.Format(time.RFC3339))
	}
	micro := t.Nanosecond() / 1000
	if micro == 0 {
		return strconv.AppendInt(nil, sec, 10), nil
	}
	frac := strings.TrimRight(fmt.Sprintf("%06d", micro), "0")
	return fmt.Appendf(nil, "%d.%s", sec, frac), nil
}

// UnmarshalJSON reads a non-negative decimal number of seconds with at most
// nine fractional digits. Exponents are refused: no sealpost key carries one,
// and a strict form keeps one instant from having many spellings.
func (d *NumericDate) UnmarshalJSON(b []byte) error {
	s := string(b)
	intPart, frac, hasFrac := strings.Cut(s, ".")
	if intPart == "" || len(intPart) > 12 || !allDigits(intPart) ||
		(hasFrac && (frac == "" || len(frac) > 9 || !allDigits(frac))) {
		return fmt.Errorf("numeric date %s is not a plain non-negative number of seconds", Truncate(s, maxErrText))
	}
	sec, err := strconv.ParseInt(intPart, 10, 64)
	if err != nil || sec > maxNumericDate {
		return fmt.Errorf("numeric date %s is out of range", Truncate(s, maxErrText))
	}
	var nsec int64
	if hasFrac {
		frac += strings.Repeat("0", 9-len(frac))
		nsec, _ = strconv.ParseInt(frac, 10, 64)
	}
	*d = NumericDate(time.Unix(sec, nsec).UTC())
	return nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// JWK is the JSON form of a PublicKey in the JWKS and the key history.
type JWK struct {
	Kty        string      `json:"kty"`
	Crv        string      `json:"crv"`
	X          string      `json:"x"`
	KID        string      `json:"kid"`
	Use        string      `json:"use"`
	Alg        string      `json:"alg"`
	IssuedAt   NumericDate `json:"iat,omitzero"`
	NotBefore  NumericDate `json:"nbf,omitzero"`
	Expires    NumericDate `json:"exp,omitzero"`
	SignsUntil NumericDate `json:"signs_until,omitzero"`
	RevokedAt  NumericDate `json:"revoked_at,omitzero"`
	Status     string      `json:"status,omitempty"`
}

// JWK returns the JSON form of k, including its status when set.
func (k PublicKey) JWK() JWK {
	return JWK{
		Kty:        "OKP",
		Crv:        "Ed25519",
		X:          b64.EncodeToString(k.Key),
		KID:        k.KID,
		Use:        "sig",
		Alg:        Alg,
		IssuedAt:   NumericDate(k.IssuedAt),
		NotBefore:  NumericDate(k.NotBefore),
		Expires:    NumericDate(k.Expires),
		SignsUntil: NumericDate(k.SignsUntil),
		RevokedAt:  NumericDate(k.RevokedAt),
		Status:     k.Status,
	}
}

// KeySet is a set of verification keys with distinct key ids.
type KeySet struct {
	Keys []PublicKey
}

// Lookup returns the key with key id kid.
func (s *KeySet) Lookup(kid string) (PublicKey, bool) {
	if s == nil {
		return PublicKey{}, false
	}
	for _, k := range s.Keys {
		if k.KID == kid {
			return k, true
		}
	}
	return PublicKey{}, false
}

// MarshalJWKS returns the public JWKS document {"keys":[...]}, without the
// status members that only the key history carries.
func (s *KeySet) MarshalJWKS() ([]byte, error) {
	return s.marshal(false)
}

// MarshalHistory returns the key-history document: the JWKS shape with each
// key's status.
func (s *KeySet) MarshalHistory() ([]byte, error) {
	return s.marshal(true)
}

func (s *KeySet) marshal(withStatus bool) ([]byte, error) {
	doc := struct {
		Keys []JWK `json:"keys"`
	}{Keys: []JWK{}}
	if s != nil {
		for i, k := range s.Keys {
			if len(k.Key) != ed25519.PublicKeySize {
				return nil, fmt.Errorf("marshal key set: key %d: not an ed25519 public key", i)
			}
			if k.KID != Thumbprint(k.Key) {
				return nil, fmt.Errorf("marshal key set: key %d: kid does not match the key's thumbprint", i)
			}
			j := k.JWK()
			if !withStatus {
				j.Status = ""
			}
			doc.Keys = append(doc.Keys, j)
		}
	}
	out, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("marshal key set: %w", err)
	}
	return out, nil
}

// ParseKeySet parses a JWKS ({"keys":[...]}) or the key-history document (the
// same shape with a "status" member per key). It is strict: every key must be
// kty "OKP", crv "Ed25519", with a 32-byte x and a kid equal to the RFC 7638
// thumbprint of x; "use" must be "sig" and "alg" "Ed25519" (or the RFC 8037
// name "EdDSA") when present; a key carrying private material ("d") is
// refused. Member names are matched exactly, duplicate members and duplicate
// key ids are errors. Errors name the index of the offending key.
func ParseKeySet(data []byte) (*KeySet, error) {
	if len(data) > MaxKeySetSize {
		return nil, fmt.Errorf("%w: %w: %d bytes, limit %d", ErrInvalidKeySet, ErrTooLarge, len(data), MaxKeySetSize)
	}
	// Canonicalize refuses duplicate members anywhere and trailing data,
	// which encoding/json would silently accept.
	if _, err := Canonicalize(data); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidKeySet, err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return nil, fmt.Errorf("%w: not a json object", ErrInvalidKeySet)
	}
	rawKeys, ok := top["keys"]
	if !ok {
		return nil, fmt.Errorf("%w: no \"keys\" member", ErrInvalidKeySet)
	}
	var keys []json.RawMessage
	if err := json.Unmarshal(rawKeys, &keys); err != nil || keys == nil {
		return nil, fmt.Errorf("%w: \"keys\" is not an array", ErrInvalidKeySet)
	}
	set := &KeySet{Keys: make([]PublicKey, 0, len(keys))}
	seen := make(map[string]int, len(keys))
	for i, raw := range keys {
		k, err := parseJWK(raw)
		if err != nil {
			return nil, fmt.Errorf("%w: key %d: %w", ErrInvalidKeySet, i, err)
		}
		if j, dup := seen[k.KID]; dup {
			return nil, fmt.Errorf("%w: key %d: kid %s repeats key %d", ErrInvalidKeySet, i, k.KID, j)
		}
		seen[k.KID] = i
		set.Keys = append(set.Keys, k)
	}
	return set, nil
}

// ParseJWK parses one key document, such as the answer of /v1/keys/{kid},
// with the same strict rules as ParseKeySet.
func ParseJWK(data []byte) (PublicKey, error) {
	if len(data) > MaxKeySetSize {
		return PublicKey{}, fmt.Errorf("%w: %w: %d bytes, limit %d", ErrInvalidKeySet, ErrTooLarge, len(data), MaxKeySetSize)
	}
	if _, err := Canonicalize(data); err != nil {
		return PublicKey{}, fmt.Errorf("%w: %w", ErrInvalidKeySet, err)
	}
	k, err := parseJWK(data)
	if err != nil {
		return PublicKey{}, fmt.Errorf("%w: %w", ErrInvalidKeySet, err)
	}
	return k, nil
}

// parseJWK reads one key by exact member name. encoding/json would match
// member names case-insensitively, so the members are looked up in a map.
func parseJWK(raw json.RawMessage) (PublicKey, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return PublicKey{}, errors.New("not a json object")
	}
	if _, ok := m["d"]; ok {
		return PublicKey{}, errors.New("holds private key material (\"d\")")
	}
	str := func(name string, required bool) (string, error) {
		v, ok := m[name]
		if !ok {
			if required {
				return "", fmt.Errorf("no %q member", name)
			}
			return "", nil
		}
		s, ok := jsonString(v)
		if !ok {
			return "", fmt.Errorf("%q is not a string", name)
		}
		return s, nil
	}
	date := func(name string) (time.Time, error) {
		v, ok := m[name]
		if !ok {
			return time.Time{}, nil
		}
		var d NumericDate
		if err := json.Unmarshal(v, &d); err != nil {
			return time.Time{}, fmt.Errorf("%q: %w", name, err)
		}
		return d.Time(), nil
	}

	kty, err := str("kty", true)
	if err != nil {
		return PublicKey{}, err
	}
	if kty != "OKP" {
		return PublicKey{}, fmt.Errorf("kty %q is not \"OKP\"", Truncate(kty, maxErrText))
	}
	crv, err := str("crv", true)
	if err != nil {
		return PublicKey{}, err
	}
	if crv != "Ed25519" {
		return PublicKey{}, fmt.Errorf("crv %q is not \"Ed25519\"", Truncate(crv, maxErrText))
	}
	x, err := str("x", true)
	if err != nil {
		return PublicKey{}, err
	}
	pub, err := decodeB64(x)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return PublicKey{}, errors.New("x is not 32 bytes of base64url without padding")
	}
	kid, err := str("kid", true)
	if err != nil {
		return PublicKey{}, err
	}
	if kid != Thumbprint(pub) {
		return PublicKey{}, fmt.Errorf("kid %q is not the RFC 7638 thumbprint of x", Truncate(kid, maxErrText))
	}
	if use, err := str("use", false); err != nil {
		return PublicKey{}, err
	} else if use != "" && use != "sig" {
		return PublicKey{}, fmt.Errorf("use %q is not \"sig\"", Truncate(use, maxErrText))
	}
	if alg, err := str("alg", false); err != nil {
		return PublicKey{}, err
	} else if _, present := m["alg"]; present && alg != Alg && alg != "EdDSA" {
		return PublicKey{}, fmt.Errorf("alg %q is not %q", Truncate(alg, maxErrText), Alg)
	}
	status, err := str("status", false)
	if err != nil {
		return PublicKey{}, err
	}
	switch status {
	case "", StatusNext, StatusActive, StatusGrace, StatusExpired, StatusRevoked:
	default:
		return PublicKey{}, fmt.Errorf("status %q is unknown", Truncate(status, maxErrText))
	}
	k := PublicKey{KID: kid, Key: ed25519.PublicKey(bytes.Clone(pub)), Status: status}
	for _, f := range []struct {
		name string
		dst  *time.Time
	}{
		{"iat", &k.IssuedAt}, {"nbf", &k.NotBefore}, {"exp", &k.Expires},
		{"signs_until", &k.SignsUntil}, {"revoked_at", &k.RevokedAt},
	} {
		if *f.dst, err = date(f.name); err != nil {
			return PublicKey{}, err
		}
	}
	if !k.SignsUntil.IsZero() && k.SignsUntil.Before(k.NotBefore) {
		return PublicKey{}, errors.New("signs_until is before nbf")
	}
	return k, nil
}
