package audit

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
)

// Timestamped cosignatures (C2SP tlog-cosignature, Ed25519 type) serve two
// purposes here: witnesses return them for the checkpoints they verified,
// and the log adds one of its own to every checkpoint it signs, under its
// origin name and with its checkpoint key, so a checkpoint carries a signed
// time while its body stays the three lines every checkpoint parser reads.
// A client that does not know the cosignature key ignores the extra line.

// cosigAlg is the signature type byte of Ed25519 cosignatures in key
// hashes and verifier keys.
const cosigAlg = 0x04

// cosigHeader starts the message a version 1 cosignature signs.
const cosigHeader = "cosignature/v1\n"

// cosigLen is the length of a timestamped Ed25519 signature: a big-endian
// uint64 POSIX time and the 64-byte signature.
const cosigLen = 8 + ed25519.SignatureSize

// cosigKeyHash is SHA-256(name || "\n" || 0x04 || public key)[:4].
func cosigKeyHash(name string, pub ed25519.PublicKey) uint32 {
	h := sha256.New()
	h.Write([]byte(name))
	h.Write([]byte{'\n', cosigAlg})
	h.Write(pub)
	return binary.BigEndian.Uint32(h.Sum(nil))
}

// cosignedMessage is what a cosignature at POSIX time ts signs over a note
// text: the header line, the time line, then the text. A checkpoint's
// second line is a decimal size, never "time ...", so this message is never
// a checkpoint body that the same key might sign as a log.
func cosignedMessage(ts uint64, text []byte) []byte {
	m := make([]byte, 0, len(cosigHeader)+32+len(text))
	m = append(m, cosigHeader...)
	m = append(m, "time "...)
	m = strconv.AppendUint(m, ts, 10)
	m = append(m, '\n')
	return append(m, text...)
}

// cosigner signs notes with timestamped Ed25519 cosignatures.
type cosigner struct {
	name string
	hash uint32
	key  ed25519.PrivateKey
	now  func() time.Time
}

// NewCosigner returns a note signer that makes C2SP tlog-cosignature/v1
// Ed25519 cosignatures under name, timestamped with now. The key is copied.
func NewCosigner(name string, key ed25519.PrivateKey, now func() time.Time) (note.Signer, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, errors.New("audit: cosigner key is not an ed25519 private key")
	}
	if !validKeyName(name) {
		return nil, fmt.Errorf("audit: cosigner name %q is empty or has spaces or '+'", name)
	}
	if now == nil {
		now = time.Now
	}
	k := ed25519.PrivateKey(bytes.Clone(key))
	return &cosigner{name: name, hash: cosigKeyHash(name, k.Public().(ed25519.PublicKey)), key: k, now: now}, nil
}

func (c *cosigner) Name() string    { return c.name }
func (c *cosigner) KeyHash() uint32 { return c.hash }
func (c *cosigner) Sign(msg []byte) ([]byte, error) {
	t := c.now().Unix()
	if t < 0 {
		return nil, errors.New("audit: cosigner clock is before 1970")
	}
	ts := uint64(t)
	sig := ed25519.Sign(c.key, cosignedMessage(ts, msg))
	return append(binary.BigEndian.AppendUint64(make([]byte, 0, cosigLen), ts), sig...), nil
}

// cosigVerifier checks timestamped Ed25519 cosignatures.
type cosigVerifier struct {
	name string
	hash uint32
	key  ed25519.PublicKey
}

// NewCosignatureVerifier returns a note verifier for the cosignatures of
// the cosigner name with public key pub.
func NewCosignatureVerifier(name string, pub ed25519.PublicKey) (note.Verifier, error) {
	if len(pub) != ed25519.PublicKeySize {
		return nil, errors.New("audit: cosigner key is not an ed25519 public key")
	}
	if !validKeyName(name) {
		return nil, fmt.Errorf("audit: cosigner name %q is empty or has spaces or '+'", name)
	}
	return &cosigVerifier{name: name, hash: cosigKeyHash(name, pub), key: bytes.Clone(pub)}, nil
}

func (v *cosigVerifier) Name() string    { return v.name }
func (v *cosigVerifier) KeyHash() uint32 { return v.hash }
func (v *cosigVerifier) Verify(msg, sig []byte) bool {
	if len(sig) != cosigLen {
		return false
	}
	ts := binary.BigEndian.Uint64(sig)
	if ts > 1<<63-1 {
		return false
	}
	return ed25519.Verify(v.key, cosignedMessage(ts, msg), sig[8:])
}

// validKeyName reports whether s can be a note key name: non-empty, no
// spaces, no '+', no control characters.
func validKeyName(s string) bool { return s != "" && validOrigin(s) }

// FormatCosignerKey returns the C2SP verifier key of an Ed25519 cosigner:
// "<name>+<key hash, 8 hex digits>+<base64(0x04 || public key)>".
func FormatCosignerKey(name string, pub ed25519.PublicKey) string {
	return fmt.Sprintf("%s+%08x+%s", name, cosigKeyHash(name, pub), base64.StdEncoding.EncodeToString(append([]byte{cosigAlg}, pub...)))
}

// maxVerifierKey bounds a verifier key string.
const maxVerifierKey = 512

// ParseCosignerKey parses a C2SP verifier key of an Ed25519 cosigner (type
// 0x04) and checks its key hash.
func ParseCosignerKey(vkey string) (name string, pub ed25519.PublicKey, err error) {
	if len(vkey) > maxVerifierKey {
		return "", nil, errors.New("verifier key too long")
	}
	name, rest, ok1 := strings.Cut(vkey, "+")
	hexHash, b64Key, ok2 := strings.Cut(rest, "+")
	if !ok1 || !ok2 || !validKeyName(name) || len(hexHash) != 8 {
		return "", nil, errors.New("verifier key is not <name>+<hash>+<key>")
	}
	h, err := strconv.ParseUint(hexHash, 16, 32)
	if err != nil {
		return "", nil, errors.New("verifier key hash is not 8 hex digits")
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(b64Key)
	if err != nil || len(raw) != 1+ed25519.PublicKeySize || raw[0] != cosigAlg {
		return "", nil, errors.New("verifier key is not an Ed25519 cosigner key (type 0x04)")
	}
	pub = ed25519.PublicKey(raw[1:])
	if uint32(h) != cosigKeyHash(name, pub) {
		return "", nil, errors.New("verifier key hash does not match its name and key")
	}
	return name, pub, nil
}

// cosignatureTime returns the timestamp of a verified cosignature.
func cosignatureTime(s note.Signature) (time.Time, error) {
	raw, err := base64.StdEncoding.DecodeString(s.Base64)
	if err != nil || len(raw) != 4+cosigLen {
		return time.Time{}, errors.New("cosignature is not a timestamped signature")
	}
	return time.Unix(int64(binary.BigEndian.Uint64(raw[4:12])), 0).UTC(), nil
}
