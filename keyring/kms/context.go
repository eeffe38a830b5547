package kms

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"unicode/utf8"
)

// Purposes name what a sealed object is. They are part of the encryption
// context, so an object sealed for one purpose never opens as another.
const (
	PurposeIngest         = "ingest"
	PurposeReceipt        = "receipt"
	PurposeAttachment     = "attachment"
	PurposeDeadLetter     = "dead-letter"
	PurposeSigningKey     = "signing-key"
	PurposeEndpointSecret = "endpoint-secret"
	PurposeAPIKey         = "api-key"
	PurposeAttempts       = "attempts"
	PurposeOpEvent        = "operational-event"
)

// MaxContextField is the largest tenant, purpose or object id, in bytes.
const MaxContextField = 1024

// ErrInvalidContext reports an empty, too long or non-UTF-8 context field.
// It is a programming error on the caller's side and permanent.
var ErrInvalidContext = errors.New("kms: invalid encryption context")

// Context is the encryption context of one sealed object. Every field is
// required: the same context must be given to Open as was given to Seal.
type Context struct {
	// Tenant is the customer the object belongs to.
	Tenant string
	// Purpose says what the object is; use one of the Purpose constants.
	Purpose string
	// ObjectID identifies the object within its tenant and purpose, for
	// example a receipt id or a stream sequence.
	ObjectID string
}

func (c Context) validate() error {
	for _, f := range [...]struct{ name, v string }{
		{"tenant", c.Tenant}, {"purpose", c.Purpose}, {"object id", c.ObjectID},
	} {
		switch {
		case f.v == "":
			return fmt.Errorf("%w: empty %s", ErrInvalidContext, f.name)
		case len(f.v) > MaxContextField:
			return fmt.Errorf("%w: %s longer than %d bytes", ErrInvalidContext, f.name, MaxContextField)
		case !utf8.ValidString(f.v):
			return fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalidContext, f.name)
		}
	}
	return nil
}

// KMS encryption context keys. The values of ecFormat changes only with an
// incompatible sealed format.
const (
	ecFormatKey  = "sealpost:format"
	ecFormat     = "sps1"
	ecTenantKey  = "sealpost:tenant"
	ecPurposeKey = "sealpost:purpose"
)

// kmsContext is the KMS encryption context for data keys of tenant and
// purpose: the part of the context that is constant for a cached data key.
func kmsContext(tenant, purpose string) map[string]string {
	return map[string]string{
		ecFormatKey:  ecFormat,
		ecTenantKey:  tenant,
		ecPurposeKey: purpose,
	}
}

// appendAAD appends the GCM additional data of an object: the sealed header
// followed by each context field as a 2-byte length and its bytes. The
// lengths keep ("ab","c") and ("a","bc") apart.
func appendAAD(dst, header []byte, c Context) []byte {
	dst = append(dst, header...)
	for _, f := range [...]string{c.Tenant, c.Purpose, c.ObjectID} {
		dst = binary.BigEndian.AppendUint16(dst, uint16(len(f)))
		dst = append(dst, f...)
	}
	return dst
}

// appendCanonicalEC appends an unambiguous encoding of a KMS encryption
// context: the number of pairs, then each key and value as a 4-byte length
// and its bytes, keys in sorted order. It is the additional data of the local
// provider and part of the open-cache key.
func appendCanonicalEC(dst []byte, ec map[string]string) []byte {
	keys := make([]string, 0, len(ec))
	for k := range ec {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(keys)))
	for _, k := range keys {
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(k)))
		dst = append(dst, k...)
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(ec[k])))
		dst = append(dst, ec[k]...)
	}
	return dst
}
