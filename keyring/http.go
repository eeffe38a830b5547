package keyring

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sealpost/sealpost/signer"
)

// maxKIDLength bounds the {kid} path value: a thumbprint is 43 characters.
const maxKIDLength = 64

// JWKSHandler serves GET /.well-known/jwks.json: the next, current and
// grace-period keys as Ed25519 OKP JWKs with their validity members. The
// response carries an ETag (If-None-Match gives 304) and a Cache-Control
// max-age that ends no later than the next scheduled change of the set (a
// key published or leaving), and never exceeds MaxJWKSAge, so that a
// revocation reaches caching receivers within the hour.
func (k *Keyring) JWKSHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !allowGet(w, r) {
			return
		}
		st, now := k.cached()
		body, err := keySet(st, now, false).MarshalJWKS()
		if err != nil {
			k.log.Error("keyring: encode jwks", "err", err)
			problem(w, http.StatusInternalServerError, "the key set cannot be served")
			return
		}
		age := k.jwksMaxAge(st, now)
		cc := "public, max-age=" + strconv.Itoa(int(age/time.Second))
		if age < time.Second {
			cc = "no-cache"
		}
		serveJSON(w, r, "application/jwk-set+json", cc, body)
	})
}

// jwksMaxAge is the time until the JWKS next changes by schedule: a key is
// published (PrePublish before the last key's window ends) or a published
// key expires. It is capped at MaxJWKSAge; when a due key is missing it is
// CheckInterval, by when Run will have created it.
func (k *Keyring) jwksMaxAge(st *state, now time.Time) time.Duration {
	next := now.Add(MaxJWKSAge)
	consider := func(t time.Time) {
		if t.After(now) && t.Before(next) {
			next = t
		}
	}
	if i := st.tail(); i >= 0 {
		publish := st.Keys[i].end().Add(-k.c.PrePublish)
		if !publish.After(now) {
			consider(now.Add(k.c.CheckInterval))
		}
		consider(publish)
	}
	for i := range st.Keys {
		r := &st.Keys[i]
		switch r.status(now) {
		case signer.StatusNext, signer.StatusActive, signer.StatusGrace:
			consider(r.Expires)
		}
	}
	return next.Sub(now).Truncate(time.Second)
}

// HistoryHandler serves GET /v1/keys (every key ever created, with its
// status and windows) and GET /v1/keys/{kid} (one key). Receipts whose key
// has left the JWKS verify against this history. Responses must be
// revalidated (Cache-Control: no-cache) and carry an ETag.
func (k *Keyring) HistoryHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !allowGet(w, r) {
			return
		}
		st, now := k.cached()
		set := keySet(st, now, true)
		kid := r.PathValue("kid")
		if kid == "" {
			body, err := set.MarshalHistory()
			if err != nil {
				k.log.Error("keyring: encode key history", "err", err)
				problem(w, http.StatusInternalServerError, "the key history cannot be served")
				return
			}
			serveJSON(w, r, "application/jwk-set+json", "no-cache", body)
			return
		}
		if len(kid) > maxKIDLength {
			problem(w, http.StatusNotFound, "no key has this key id")
			return
		}
		key, ok := set.Lookup(kid)
		if !ok {
			problem(w, http.StatusNotFound, "no key has this key id")
			return
		}
		body, err := json.Marshal(key.JWK())
		if err != nil {
			k.log.Error("keyring: encode key", "kid", kid, "err", err)
			problem(w, http.StatusInternalServerError, "the key cannot be served")
			return
		}
		serveJSON(w, r, "application/jwk+json", "no-cache", body)
	})
}

func allowGet(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	problem(w, http.StatusMethodNotAllowed, "only GET is allowed")
	return false
}

// serveJSON writes body with a strong ETag, answering 304 when the client's
// If-None-Match names it.
func serveJSON(w http.ResponseWriter, r *http.Request, contentType, cacheControl string, body []byte) {
	sum := sha256.Sum256(body)
	etag := `"` + base64.RawURLEncoding.EncodeToString(sum[:18]) + `"`
	h := w.Header()
	h.Set("ETag", etag)
	h.Set("Cache-Control", cacheControl)
	h.Set("X-Content-Type-Options", "nosniff")
	// Public keys: receivers may verify in a browser.
	h.Set("Access-Control-Allow-Origin", "*")
	if etagMatch(r.Header.Get("If-None-Match"), etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.Set("Content-Type", contentType)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

// etagMatch implements the weak comparison of If-None-Match (RFC 9110
// section 13.1.2) against one strong entity tag.
func etagMatch(header, etag string) bool {
	if len(header) > 4096 {
		return false
	}
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimSpace(t)
		if t == "*" || strings.TrimPrefix(t, "W/") == etag {
			return true
		}
	}
	return false
}

// problemNames are the problem types (suffixes of
// https://sealpost.dev/problems/, the API's vocabulary) of the statuses
// these handlers answer.
var problemNames = map[int]string{400: "invalid-request", 401: "unauthorized", 404: "not-found", 405: "method-not-allowed", 429: "rate-limited", 500: "internal", 503: "unavailable"}

// problem writes an RFC 9457 problem document.
func problem(w http.ResponseWriter, status int, detail string) {
	b, _ := json.Marshal(map[string]any{
		"type": "https://sealpost.dev/problems/" + problemNames[status], "title": http.StatusText(status), "status": status, "detail": detail,
	})
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
