package kms

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Sizes and limits of the sealed format, version 1. See the package
// documentation for the layout.
const (
	sealedMagic      = "SPS1"
	sealedVersion    = 1
	maxProviderID    = 32
	maxWrappedKey    = 8192
	nonceSize        = 12
	tagSize          = 16
	dataKeySize      = 32
	minSealedSize    = len(sealedMagic) + 1 + 1 + 1 + 2 + 1 + nonceSize + tagSize
	maxHeaderSize    = len(sealedMagic) + 1 + 1 + maxProviderID + 2 + maxWrappedKey
	sealedOverheadV1 = nonceSize + tagSize
)

// MaxPlaintext is the largest object Seal accepts, in bytes (64 MiB).
const MaxPlaintext = 64 << 20

// MaxSealed is the largest blob Open accepts, in bytes.
const MaxSealed = MaxPlaintext + maxHeaderSize + sealedOverheadV1

// ErrTooLarge reports an object above MaxPlaintext or a blob above MaxSealed.
var ErrTooLarge = errors.New("kms: object too large")

// sealed is a parsed sealed blob. Its slices alias the input.
type sealed struct {
	header     []byte // magic through wrapped key: part of the AAD
	provider   string
	wrapped    []byte
	nonce      []byte
	ciphertext []byte // ciphertext and tag
}

// errFormat reports a blob that is not a well-formed sealed object.
var errFormat = errors.New("malformed sealed object")

// parseSealed splits a sealed blob into its fields. It checks the structure
// only; authenticity is checked by GCM when the object is opened.
func parseSealed(b []byte) (sealed, error) {
	var s sealed
	if len(b) > MaxSealed {
		return s, fmt.Errorf("%w: %d bytes, limit %d: %w", errFormat, len(b), MaxSealed, ErrTooLarge)
	}
	if len(b) < minSealedSize {
		return s, fmt.Errorf("%w: %d bytes is too short", errFormat, len(b))
	}
	if string(b[:4]) != sealedMagic {
		return s, fmt.Errorf("%w: bad magic", errFormat)
	}
	if b[4] != sealedVersion {
		return s, fmt.Errorf("%w: unsupported format version %d", errFormat, b[4])
	}
	off := 5
	n := int(b[off])
	off++
	if n == 0 || n > maxProviderID {
		return s, fmt.Errorf("%w: provider id length %d", errFormat, n)
	}
	if len(b) < off+n+2 {
		return s, fmt.Errorf("%w: truncated header", errFormat)
	}
	s.provider = string(b[off : off+n])
	for _, c := range []byte(s.provider) {
		if c < 0x21 || c > 0x7e {
			return s, fmt.Errorf("%w: provider id is not printable ASCII", errFormat)
		}
	}
	off += n
	m := int(binary.BigEndian.Uint16(b[off:]))
	off += 2
	if m == 0 || m > maxWrappedKey {
		return s, fmt.Errorf("%w: wrapped key length %d", errFormat, m)
	}
	if len(b) < off+m+nonceSize+tagSize {
		return s, fmt.Errorf("%w: truncated", errFormat)
	}
	s.wrapped = b[off : off+m]
	off += m
	s.header = b[:off]
	s.nonce = b[off : off+nonceSize]
	s.ciphertext = b[off+nonceSize:]
	return s, nil
}

// appendHeader appends the header of a sealed blob for a data key wrapped
// by provider.
func appendHeader(dst []byte, provider string, wrapped []byte) ([]byte, error) {
	if len(provider) == 0 || len(provider) > maxProviderID {
		return nil, fmt.Errorf("kms: provider id %q: length must be 1..%d", provider, maxProviderID)
	}
	if len(wrapped) == 0 || len(wrapped) > maxWrappedKey {
		return nil, fmt.Errorf("kms: wrapped key of %d bytes: length must be 1..%d", len(wrapped), maxWrappedKey)
	}
	for _, c := range []byte(provider) {
		if c < 0x21 || c > 0x7e {
			return nil, fmt.Errorf("kms: provider id %q is not printable ASCII", provider)
		}
	}
	dst = append(dst, sealedMagic...)
	dst = append(dst, sealedVersion, byte(len(provider)))
	dst = append(dst, provider...)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(wrapped)))
	return append(dst, wrapped...), nil
}
