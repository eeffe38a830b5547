package smtpin

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"hash"
	"io"
	"strings"
)

// chunkSize is the unit in which message bytes are buffered. Chunks keep the
// memory of a large message close to its size: a growing contiguous buffer
// would briefly hold twice its capacity on every reallocation.
const chunkSize = 64 << 10

// chunks is a byte sequence stored as fixed-size chunks.
type chunks struct {
	bufs [][]byte
	size int64
}

// readChunks reads r to its end into chunks, hashing what it reads. It reads
// at most limit bytes and returns ErrMessageTooLarge when r holds more: the
// reader is wrapped in io.LimitReader(limit+1) so overflow is detected
// without reading further.
func readChunks(r io.Reader, limit int64, h hash.Hash) (*chunks, error) {
	c := &chunks{}
	lr := io.LimitReader(r, limit+1)
	for {
		buf := make([]byte, chunkSize)
		n, err := fill(lr, buf)
		if n > 0 {
			buf = buf[:n:n]
			c.bufs = append(c.bufs, buf)
			c.size += int64(n)
			if h != nil {
				h.Write(buf)
			}
		}
		if c.size > limit {
			return c, ErrMessageTooLarge
		}
		if err == io.EOF {
			return c, nil
		}
		if err != nil {
			return c, err
		}
	}
}

// fill reads into buf until it is full or r fails, and returns r's error
// unchanged. Unlike io.ReadFull it keeps io.ErrUnexpectedEOF meaningful:
// go-smtp's DATA reader returns it when the connection ends before the
// terminating ".", and such a message must never be accepted.
func fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// reader returns a reader over the stored bytes.
func (c *chunks) reader() io.Reader {
	rs := make([]io.Reader, len(c.bufs))
	for i, b := range c.bufs {
		rs[i] = bytes.NewReader(b)
	}
	return io.MultiReader(rs...)
}

// string returns the stored bytes as a string, copying them once.
func (c *chunks) string() string {
	var b strings.Builder
	b.Grow(int(c.size))
	for _, buf := range c.bufs {
		b.Write(buf)
	}
	return b.String()
}

// bytes returns the stored bytes as one slice (shared when there is a single
// chunk).
func (c *chunks) bytes() []byte {
	switch len(c.bufs) {
	case 0:
		return []byte{}
	case 1:
		return c.bufs[0]
	}
	out := make([]byte, 0, c.size)
	for _, b := range c.bufs {
		out = append(out, b...)
	}
	return out
}

// digest returns base64url (no padding) of a SHA-256 state, the encoding
// receipts use for every digest.
func digest(h hash.Hash) string {
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}

// sha256Digest returns base64url (no padding) of SHA-256(b).
func sha256Digest(b []byte) string {
	sum := sha256.Sum256(b)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}
