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
	"time"

	"github.com/sealpost/sealpost/ingress"
	"github.com/sealpost/sealpost/signer"
)

// API keys look like "sp_<id>_<secret>": the id is public (it appears in
// receipts and audit entries), the secret is 32 random bytes, base64url. The
// configuration keeps only SHA-256 of the whole token.
const tokenPrefix = "sp_"

// maxTokenLen bounds the Authorization header value we look at.
const maxTokenLen = 256

// APIKey is one API key of a tenant.
type APIKey struct {
	// ID is the public part of the token, unique across tenants.
	ID     string
	Tenant string
	// SHA256 of the full token.
	SHA256 [32]byte
	// Previous are hashes of the tokens a rotation replaced, each valid
	// until its NotAfter: the overlap in which both tokens work.
	Previous []PreviousHash
	// Expires ends the key; zero never.
	Expires time.Time
	// Routes the key may post to; empty allows every route of the tenant.
	// Used only when Scopes is nil (keys of the configuration file without
	// scopes).
	Routes []string
	// Scopes the key holds (see the Scope constants). Nil means the
	// configuration file's default: ingest on Routes (or every route) and
	// every other scope.
	Scopes []string
}

// PreviousHash is the hash of a replaced token and the end of its overlap.
type PreviousHash struct {
	SHA256   [32]byte
	NotAfter time.Time
}

// Scopes of API keys.
const (
	// ScopeIngestAll posts to every route of the tenant; "ingest:<route>"
	// to one.
	ScopeIngestAll = "ingest:*"
	// ScopeIngestPrefix starts a route's ingest scope.
	ScopeIngestPrefix = "ingest:"
	// ScopeReceiptsRead reads receipts, attempts, dead letters, attachments
	// and proofs.
	ScopeReceiptsRead = "receipts:read"
	// ScopeEndpointsWrite manages endpoints and deliveries: endpoints,
	// secrets, redelivery, replay, the operational webhook.
	ScopeEndpointsWrite = "endpoints:write"
	// ScopeAuditRead reads the tenant's audit entries.
	ScopeAuditRead = "audit:read"
)

// DefaultScopes are the scopes of a key the configuration file declares
// without any: ingest on routes (every route when empty), reading receipts
// and managing endpoints of those routes, and, for a key of every route,
// reading the tenant's audit entries.
func DefaultScopes(routes []string) []string {
	var out []string
	if len(routes) == 0 {
		out = append(out, ScopeIngestAll)
	}
	for _, r := range routes {
		out = append(out, ScopeIngestPrefix+r)
	}
	out = append(out, ScopeReceiptsRead, ScopeEndpointsWrite)
	if len(routes) == 0 {
		out = append(out, ScopeAuditRead)
	}
	return out
}

// maxScopes bounds the scopes of one key.
const maxScopes = 32

// CheckScopes validates a list of scopes: known names, ingest scopes of
// well-formed route names, no duplicates, at most 32.
func CheckScopes(scopes []string) error {
	if len(scopes) > maxScopes {
		return fmt.Errorf("at most %d scopes", maxScopes)
	}
	seen := map[string]bool{}
	for _, s := range scopes {
		switch {
		case seen[s]:
			return fmt.Errorf("scope %q listed twice", signer.Truncate(s, 80))
		case s == ScopeIngestAll, s == ScopeReceiptsRead, s == ScopeEndpointsWrite, s == ScopeAuditRead:
		case strings.HasPrefix(s, ScopeIngestPrefix) && ingress.ValidRoute(s[len(ScopeIngestPrefix):]):
		default:
			return fmt.Errorf("unknown scope %q (ingest:<route>, ingest:*, receipts:read, endpoints:write, audit:read)", signer.Truncate(s, 80))
		}
		seen[s] = true
	}
	return nil
}

// Allows reports whether the key may post to route.
func (k *APIKey) Allows(route string) bool {
	if k.Scopes == nil {
		return len(k.Routes) == 0 || slices.Contains(k.Routes, route)
	}
	return slices.Contains(k.Scopes, ScopeIngestAll) || slices.Contains(k.Scopes, ScopeIngestPrefix+route)
}

// Has reports whether the key holds a scope other than an ingest scope.
func (k *APIKey) Has(scope string) bool {
	return k.Scopes == nil || slices.Contains(k.Scopes, scope)
}

// ReachesRoute reports whether the key's other scopes reach route's data:
// a key whose ingest scopes name particular routes (a key "scoped to a
// route") reaches only those; a key with ingest:* or no ingest scope
// reaches every route of its tenant.
func (k *APIKey) ReachesRoute(route string) bool {
	routes := k.Routes
	if k.Scopes != nil {
		routes = nil
		for _, s := range k.Scopes {
			if s == ScopeIngestAll {
				return true
			}
			if r, ok := strings.CutPrefix(s, ScopeIngestPrefix); ok {
				routes = append(routes, r)
			}
		}
	}
	return len(routes) == 0 || slices.Contains(routes, route)
}

// RouteLimited reports whether ReachesRoute is false for some route.
func (k *APIKey) RouteLimited() bool { return !k.ReachesRoute("\x00") }

// Keys authenticates bearer tokens against a fixed set of API keys.
type Keys struct {
	byID map[string]*APIKey
	// Now is the clock of expiry checks. Default time.Now.
	Now func() time.Time
}

// NewKeys indexes keys by id; ids must be unique and well formed.
func NewKeys(keys []APIKey) (*Keys, error) {
	k := &Keys{byID: make(map[string]*APIKey, len(keys)), Now: time.Now}
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

// Lookup returns the key with id.
func (k *Keys) Lookup(id string) (*APIKey, bool) {
	key, ok := k.byID[id]
	return key, ok
}

// Authentication outcomes.
var (
	ErrNoCredentials  = errors.New("missing bearer token")
	ErrBadCredentials = errors.New("invalid api key")
)

// Authenticate checks the request's bearer token. The comparison of the
// token's hash is constant-time; an unknown id costs the same hash. An
// expired key, and a replaced token after its overlap, fail like a wrong
// one.
func (k *Keys) Authenticate(r *http.Request) (*APIKey, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return nil, ErrNoCredentials
	}
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || len(token) > maxTokenLen {
		return nil, ErrBadCredentials
	}
	return k.Check(token)
}

// Check authenticates a bare token (see Authenticate).
func (k *Keys) Check(token string) (*APIKey, error) {
	id, _, ok := ParseToken(token)
	sum := sha256.Sum256([]byte(token))
	key := k.byID[id]
	if !ok || key == nil {
		subtle.ConstantTimeCompare(sum[:], sum[:])
		return nil, ErrBadCredentials
	}
	now := k.Now()
	match := subtle.ConstantTimeCompare(sum[:], key.SHA256[:]) == 1
	for _, p := range key.Previous {
		if subtle.ConstantTimeCompare(sum[:], p.SHA256[:]) == 1 && now.Before(p.NotAfter) {
			match = true
		}
	}
	if !match || (!key.Expires.IsZero() && !now.Before(key.Expires)) {
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
