package httpin

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/sealpost/sealpost/ingress"
)

// API keys look like "sp_<id>_<secret>": the id is public (it appears in
// receipts and audit entries), the secret is 32 random bytes, base64url. The
// configuration keeps only SHA-256 of the whole token.
const tokenPrefix = "sp_"

// maxTokenLen bounds the Authorization header value we look at.
const maxTokenLen = 256

// APIKey is one configured key.
type APIKey struct {
	// ID is the public part of the token, unique across tenants.
	ID     string
	Tenant string
	// SHA256 of the full token.
	SHA256 [32]byte
	// Routes the key may post to; empty allows every route of the tenant.
	Routes []string
}

// Allows reports whether the key may post to route.
func (k *APIKey) Allows(route string) bool {
	return len(k.Routes) == 0 || slices.Contains(k.Routes, route)
}

// Keys authenticates bearer tokens against a fixed set of API keys.
type Keys struct{ byID map[string]*APIKey }

// NewKeys indexes keys by id; ids must be unique and well formed.
func NewKeys(keys []APIKey) (*Keys, error) {
	k := &Keys{byID: make(map[string]*APIKey, len(keys))}
	for i := range keys {
		key := keys[i]
		if !ingress.ValidName(key.ID) {
			return nil, fmt.Errorf("api key %q: id must be %s", key.ID, ingress.NameRule)
		}
		if _, dup := k.byID[key.ID]; dup {
			return nil, fmt.Errorf("api key %q: duplicate id", key.ID)
		}
		k.byID[key.ID] = &key
	}
	return k, nil
}

// Authentication outcomes.
var (
	ErrNoCredentials  = errors.New("missing bearer token")
	ErrBadCredentials = errors.New("invalid api key")
)

// Authenticate checks the request's bearer token. The comparison of the
// token's hash is constant-time; an unknown id costs the same hash.
func (k *Keys) Authenticate(r *http.Request) (*APIKey, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return nil, ErrNoCredentials
	}
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || len(token) > maxTokenLen {
		return nil, ErrBadCredentials
	}
	id, _, ok := ParseToken(token)
	sum := sha256.Sum256([]byte(token))
	key := k.byID[id]
	if !ok || key == nil {
		subtle.ConstantTimeCompare(sum[:], sum[:])
		return nil, ErrBadCredentials
	}
	if subtle.ConstantTimeCompare(sum[:], key.SHA256[:]) != 1 {
		return nil, ErrBadCredentials
	}
	return key, nil
}

// ParseToken splits "sp_<id>_<secret>".
func ParseToken(token string) (id, secret string, ok bool) {
	rest, ok := strings.CutPrefix(token, tokenPrefix)
	if !ok {
		return "", "", false
	}
	i := strings.LastIndexByte(rest, '_')
	if i <= 0 || i == len(rest)-1 {
		return "", "", false
	}
	id, secret = rest[:i], rest[i+1:]
	if !ingress.ValidName(id) {
		return "", "", false
	}
	return id, secret, true
}

// NewToken makes a new API key token for id and returns it with the hex
// SHA-256 that goes into the configuration. The token is shown once.
func NewToken(id string) (token, sha256Hex string, err error) {
	if !ingress.ValidName(id) {
		return "", "", fmt.Errorf("api key id %q: must be %s", id, ingress.NameRule)
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", err
	}
	// The secret never contains '_' so that the last '_' of a token always
	// separates id and secret.
	secret := strings.ReplaceAll(base64.RawURLEncoding.EncodeToString(b[:]), "_", "-")
	token = tokenPrefix + id + "_" + secret
	sum := sha256.Sum256([]byte(token))
	return token, hex.EncodeToString(sum[:]), nil
}
