package httpapi

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/sealpost/sealpost/ingress/catalog"
)

// SSOConfig accepts an identity provider's signed JWTs on the admin API:
// verified against the provider's JWKS, with a configured issuer and
// audience; a claim maps to a role. Hardware keys and MFA stay at the
// provider.
type SSOConfig struct {
	// Issuer must equal the token's iss. Required.
	Issuer string
	// Audience must be (one of) the token's aud. Required.
	Audience string
	// JWKSURL is the provider's key set: https, or http to a loopback
	// address. Required.
	JWKSURL string
	// RoleClaim names the claim (a string or a list of strings) that
	// carries the caller's roles. Default "sealpost_role".
	RoleClaim string
	// Roles maps the claim's values to viewer, operator or admin; the
	// highest one a token has counts. Default: the role names themselves.
	Roles map[string]string
	// SubjectClaim names the claim that identifies the caller in audit
	// entries. Default "sub".
	SubjectClaim string
	// Client fetches the JWKS. Default: a client with a 10s timeout.
	Client *http.Client
	Now    func() time.Time
}

// ssoVerifier checks identity tokens, with the provider's keys cached.
type ssoVerifier struct {
	cfg     SSOConfig
	mu      sync.Mutex
	keys    map[string]crypto.PublicKey
	fetched time.Time
	tried   time.Time
}

// JWKS refresh: every 10 minutes, or on an unknown key id at most every
// 30 seconds.
const (
	jwksMaxAge     = 10 * time.Minute
	jwksMinRefetch = 30 * time.Second
	maxJWKSBytes   = 1 << 20
	clockLeeway    = time.Minute
)

func newSSOVerifier(c SSOConfig) (*ssoVerifier, error) {
	if c.Issuer == "" || c.Audience == "" || c.JWKSURL == "" {
		return nil, errors.New("httpapi: sso needs issuer, audience and jwks_url")
	}
	u, err := url.Parse(c.JWKSURL)
	if err != nil || u.Host == "" || (u.Scheme != "https" && !(u.Scheme == "http" && isLoopback(u.Hostname()))) {
		return nil, errors.New("httpapi: sso jwks_url must be https (http only to a loopback address)")
	}
	if c.RoleClaim == "" {
		c.RoleClaim = "sealpost_role"
	}
	if c.SubjectClaim == "" {
		c.SubjectClaim = "sub"
	}
	if c.Client == nil {
		c.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return &ssoVerifier{cfg: c}, nil
}

func isLoopback(host string) bool {
	ip := net.ParseIP(host)
	return host == "localhost" || (ip != nil && ip.IsLoopback())
}

// identity is a verified token's caller.
type identity struct {
	subject, role string
}

var b64 = base64.RawURLEncoding

// verify checks a compact JWS: its algorithm (EdDSA, ES256 or RS256) and
// signature with the provider's key of its kid, iss, aud, exp and nbf,
// and maps its role claim.
func (v *ssoVerifier) verify(ctx context.Context, token string) (identity, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return identity{}, errors.New("not a compact JWS")
	}
	var hdr struct {
		Alg, Kid, Typ string
	}
	if err := decodeSegment(parts[0], &hdr); err != nil {
		return identity{}, fmt.Errorf("header: %w", err)
	}
	sig, err := b64.DecodeString(parts[2])
	if err != nil {
		return identity{}, errors.New("signature is not base64url")
	}
	key, err := v.key(ctx, hdr.Kid)
	if err != nil {
		return identity{}, err
	}
	signed := []byte(parts[0] + "." + parts[1])
	if !checkSig(hdr.Alg, key, signed, sig) {
		return identity{}, errors.New("signature does not verify")
	}
	var claims map[string]any
	if err := decodeSegment(parts[1], &claims); err != nil {
		return identity{}, fmt.Errorf("claims: %w", err)
	}
	now := v.cfg.Now()
	if iss, _ := claims["iss"].(string); iss != v.cfg.Issuer {
		return identity{}, errors.New("wrong issuer")
	}
	if !audienceHas(claims["aud"], v.cfg.Audience) {
		return identity{}, errors.New("wrong audience")
	}
	exp, ok := claims["exp"].(float64)
	if !ok || now.After(time.Unix(int64(exp), 0).Add(clockLeeway)) {
		return identity{}, errors.New("expired or without exp")
	}
	if nbf, ok := claims["nbf"].(float64); ok && now.Add(clockLeeway).Before(time.Unix(int64(nbf), 0)) {
		return identity{}, errors.New("not valid yet")
	}
	sub, _ := claims[v.cfg.SubjectClaim].(string)
	if sub == "" || len(sub) > 128 || !printableASCII(sub) {
		return identity{}, errors.New("no usable subject")
	}
	role := ""
	for _, val := range stringsOf(claims[v.cfg.RoleClaim]) {
		r := val
		if v.cfg.Roles != nil {
			r = v.cfg.Roles[val]
		}
		if catalog.RoleRank(r) > catalog.RoleRank(role) {
			role = r
		}
	}
	if role == "" {
		return identity{}, errors.New("no role: the role claim maps to none of viewer, operator, admin")
	}
	return identity{subject: sub, role: role}, nil
}

func decodeSegment(s string, v any) error {
	raw, err := b64.DecodeString(s)
	if err != nil {
		return errors.New("not base64url")
	}
	return json.Unmarshal(raw, v)
}

func audienceHas(aud any, want string) bool {
	for _, a := range stringsOf(aud) {
		if a == want {
			return true
		}
	}
	return false
}

func stringsOf(v any) []string {
	switch x := v.(type) {
	case string:
		return []string{x}
	case []any:
		var out []string
		for _, e := range x {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// checkSig verifies a JWS signature with the algorithm its key allows.
func checkSig(alg string, key crypto.PublicKey, signed, sig []byte) bool {
	switch k := key.(type) {
	case ed25519.PublicKey:
		return (alg == "EdDSA" || alg == "Ed25519") && ed25519.Verify(k, signed, sig)
	case *ecdsa.PublicKey:
		if alg != "ES256" || k.Curve != elliptic.P256() || len(sig) != 64 {
			return false
		}
		h := sha256.Sum256(signed)
		r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
		return ecdsa.Verify(k, h[:], r, s)
	case *rsa.PublicKey:
		h := sha256.Sum256(signed)
		return alg == "RS256" && rsa.VerifyPKCS1v15(k, crypto.SHA256, h[:], sig) == nil
	}
	return false
}

// key returns the provider's key of kid, fetching the JWKS when it is
// old or does not have it.
func (v *ssoVerifier) key(ctx context.Context, kid string) (crypto.PublicKey, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	now := time.Now()
	k, ok := v.keys[kid]
	stale := now.Sub(v.fetched) > jwksMaxAge
	if ok && !stale {
		return k, nil
	}
	if now.Sub(v.tried) >= jwksMinRefetch || v.keys == nil || stale {
		v.tried = now
		keys, err := v.fetch(ctx)
		if err != nil {
			if ok {
				return k, nil // keep using a known key while the provider is unreachable
			}
			return nil, fmt.Errorf("provider keys: %w", err)
		}
		v.keys, v.fetched = keys, now
		k, ok = v.keys[kid]
	}
	if !ok {
		return nil, errors.New("unknown key id")
	}
	return k, nil
}

func (v *ssoVerifier) fetch(ctx context.Context) (map[string]crypto.PublicKey, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.cfg.JWKSURL, nil)
	if err != nil {
		return nil, err
	}
	resp, err := v.cfg.Client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET jwks: %s", resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, err
	}
	if len(body) > maxJWKSBytes {
		return nil, errors.New("jwks larger than 1 MiB")
	}
	return parseJWKS(body)
}

// parseJWKS reads the signing keys of a JWKS: OKP Ed25519, EC P-256 and
// RSA of at least 2048 bits; others are skipped.
func parseJWKS(doc []byte) (map[string]crypto.PublicKey, error) {
	var set struct {
		Keys []struct {
			Kty, Crv, Kid, Use, X, Y, N, E string
		} `json:"keys"`
	}
	if err := json.Unmarshal(doc, &set); err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	out := map[string]crypto.PublicKey{}
	for _, k := range set.Keys {
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		switch {
		case k.Kty == "OKP" && k.Crv == "Ed25519":
			x, err := b64.DecodeString(k.X)
			if err == nil && len(x) == ed25519.PublicKeySize {
				out[k.Kid] = ed25519.PublicKey(x)
			}
		case k.Kty == "EC" && k.Crv == "P-256":
			x, err1 := b64.DecodeString(k.X)
			y, err2 := b64.DecodeString(k.Y)
			if err1 != nil || err2 != nil || len(x) != 32 || len(y) != 32 {
				continue
			}
			raw := append(append([]byte{4}, x...), y...)
			if pk, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), raw); err == nil {
				out[k.Kid] = pk
			}
		case k.Kty == "RSA":
			n, err1 := b64.DecodeString(k.N)
			e, err2 := b64.DecodeString(k.E)
			if err1 != nil || err2 != nil || len(n) < 256 || len(e) == 0 || len(e) > 4 {
				continue
			}
			out[k.Kid] = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
		}
	}
	return out, nil
}
