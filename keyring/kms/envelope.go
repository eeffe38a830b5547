package kms

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ErrUnavailable reports that the key-encryption key provider could not be
// reached or refused the call for a reason that may pass. Callers treat it
// as temporary: answer 451 / 503, nak the message, retry later. The
// provider's error is wrapped as well.
var ErrUnavailable = errors.New("kms: key provider unavailable")

// ErrOpen reports a sealed object that cannot be opened with the given
// context and KEK: it is malformed or tampered with, was sealed for another
// tenant, purpose or object, or its data key was wrapped by another key. It
// is permanent.
var ErrOpen = errors.New("kms: cannot open sealed object")

// KEK wraps and unwraps data keys. ec is the KMS encryption context: the
// same ec must be given to Decrypt as was given to GenerateDataKey.
//
// Decrypt wraps errors that will never pass (a wrapped key that is
// malformed, was wrapped by another key or under another context) with
// ErrOpen; every other error is treated as temporary.
type KEK interface {
	// GenerateDataKey returns a fresh 256-bit data key and the same key
	// wrapped by the KEK.
	GenerateDataKey(ctx context.Context, ec map[string]string) (plaintext, wrapped []byte, err error)
	// Decrypt unwraps a data key wrapped by GenerateDataKey.
	Decrypt(ctx context.Context, wrapped []byte, ec map[string]string) ([]byte, error)
	// ID is the provider id stored in the sealed header, e.g. "local" or
	// "aws": 1 to 32 printable ASCII bytes.
	ID() string
}

// Defaults and limits of Config.
const (
	DefaultMaxAge      = 5 * time.Minute
	DefaultMaxUses     = 100_000
	DefaultMaxOpenKeys = 10_000

	// maxMaxUses keeps the number of random 96-bit nonces under one data
	// key far below 2^32, the bound NIST SP 800-38D sets for random GCM
	// nonces.
	maxMaxUses = 1 << 30
	maxMaxAge  = 24 * time.Hour
)

// Config configures an Envelope.
type Config struct {
	// KEK wraps the data keys. Required.
	KEK KEK
	// Logger receives debug events about data-key generation. Default:
	// discard.
	Logger *slog.Logger
	// MaxAge is how long one data key seals new objects and how long an
	// unwrapped data key stays cached for opening. Default 5m, at most 24h.
	MaxAge time.Duration
	// MaxUses is how many objects one data key seals at most. Default
	// 100,000, at most 2^30.
	MaxUses int
	// MaxOpenKeys is how many unwrapped data keys the open cache holds.
	// Default 10,000.
	MaxOpenKeys int
	// Registerer receives the sealpost_kms_* metrics. Optional.
	Registerer prometheus.Registerer
	// Now returns the current time. Default time.Now.
	Now func() time.Time
	// TenantKeys, when set, puts a key of each tenant's own between the
	// KEK and the tenant's data keys (see DestroyTenant); tenants whose
	// name starts with '_' are exempt. Default nil: the KEK wraps every
	// data key. Objects sealed either way open either way.
	TenantKeys TenantKeyStore
}

// Envelope seals and opens objects with data keys wrapped by a KEK. It is
// safe for concurrent use.
type Envelope struct {
	kek      KEK
	provider string
	log      *slog.Logger
	now      func() time.Time
	m        *metrics
	seal     *sealCache
	open     *openCache
	maxAge   time.Duration
	tenants  *tenantKeys // nil without Config.TenantKeys
}

// Validate checks c's settings: MaxAge, MaxUses and MaxOpenKeys, a zero
// value standing for its default. It does not look at KEK, which New
// requires as well. Its errors name the setting; New's add "kms: config:".
func (c Config) Validate() error {
	var errs []error
	if c.MaxAge < 0 || c.MaxAge > maxMaxAge {
		errs = append(errs, fmt.Errorf("max age %s out of range (0, %s]", c.MaxAge, maxMaxAge))
	}
	if c.MaxUses < 0 || c.MaxUses > maxMaxUses {
		errs = append(errs, fmt.Errorf("max uses %d out of range [1, %d]", c.MaxUses, maxMaxUses))
	}
	if c.MaxOpenKeys < 0 {
		errs = append(errs, fmt.Errorf("max open keys %d is negative", c.MaxOpenKeys))
	}
	return errors.Join(errs...)
}

// New returns an Envelope for c.
func New(c Config) (*Envelope, error) {
	if c.KEK == nil {
		return nil, errors.New("kms: config: KEK is required")
	}
	id := c.KEK.ID()
	if _, err := appendHeader(nil, id, []byte{0}); err != nil {
		return nil, fmt.Errorf("kms: config: %w", err)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("kms: config: %w", err)
	}
	if c.MaxAge == 0 {
		c.MaxAge = DefaultMaxAge
	}
	if c.MaxUses == 0 {
		c.MaxUses = DefaultMaxUses
	}
	if c.MaxOpenKeys == 0 {
		c.MaxOpenKeys = DefaultMaxOpenKeys
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	m, err := newMetrics(c.Registerer)
	if err != nil {
		return nil, fmt.Errorf("kms: metrics: %w", err)
	}
	e := &Envelope{
		kek:      c.KEK,
		provider: id,
		log:      c.Logger,
		now:      c.Now,
		m:        m,
		seal:     newSealCache(c.MaxAge, c.MaxUses),
		open:     newOpenCache(c.MaxOpenKeys, c.MaxAge),
		maxAge:   c.MaxAge,
	}
	if c.TenantKeys != nil {
		e.tenants = &tenantKeys{store: c.TenantKeys, keys: map[string]*tenantKey{}}
	}
	return e, nil
}

// Seal encrypts plaintext for the context c and returns the sealed blob.
// Errors wrap ErrInvalidContext, ErrTooLarge or ErrUnavailable.
func (e *Envelope) Seal(ctx context.Context, c Context, plaintext []byte) ([]byte, error) {
	return e.seal1(ctx, c, plaintext, !e.tenantScoped(c.Tenant))
}

// sealDirect seals with a data key wrapped by the KEK, never a tenant key.
func (e *Envelope) sealDirect(ctx context.Context, c Context, plaintext []byte) ([]byte, error) {
	return e.seal1(ctx, c, plaintext, true)
}

func (e *Envelope) seal1(ctx context.Context, c Context, plaintext []byte, direct bool) ([]byte, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	if len(plaintext) > MaxPlaintext {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(plaintext), MaxPlaintext)
	}
	k, hit, err := e.seal.get(ctx, c.Tenant, c.Purpose, e.now, func(ctx context.Context) (*sealKey, error) {
		return e.newSealKey(ctx, c.Tenant, c.Purpose, direct)
	})
	if err != nil {
		if !errors.Is(err, ErrUnavailable) {
			err = fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		return nil, err
	}
	if hit {
		e.m.hits.WithLabelValues(opSeal).Inc()
	}
	out := make([]byte, len(k.header)+nonceSize, len(k.header)+nonceSize+len(plaintext)+tagSize)
	copy(out, k.header)
	nonce := out[len(k.header):]
	// A fresh random 96-bit nonce per object is safe: one data key seals at
	// most MaxUses (default 100,000) objects, so the chance of a repeated
	// nonce is about MaxUses^2 / 2^97, far below the 2^-32 that NIST allows
	// at 2^32 random nonces per key.
	rand.Read(nonce)
	aad := appendAAD(make([]byte, 0, len(k.header)+6+len(c.Tenant)+len(c.Purpose)+len(c.ObjectID)), k.header, c)
	return k.aead.Seal(out, nonce, plaintext, aad), nil
}

// Open decrypts a blob sealed for the context c. Errors wrap
// ErrInvalidContext, ErrOpen (permanent) or ErrUnavailable (temporary). On
// error no plaintext is returned.
func (e *Envelope) Open(ctx context.Context, c Context, blob []byte) ([]byte, error) {
	return e.open1(ctx, c, blob, false)
}

// openDirect opens only blobs whose data key the KEK wrapped.
func (e *Envelope) openDirect(ctx context.Context, c Context, blob []byte) ([]byte, error) {
	return e.open1(ctx, c, blob, true)
}

func (e *Envelope) open1(ctx context.Context, c Context, blob []byte, direct bool) ([]byte, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	s, err := parseSealed(blob)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrOpen, err)
	}
	byTenant := s.provider == ProviderTenant && !direct && e.tenantScoped(c.Tenant)
	if s.provider != e.provider && !byTenant {
		return nil, fmt.Errorf("%w: sealed by key provider %q, configured provider is %q", ErrOpen, s.provider, e.provider)
	}
	ec := kmsContext(c.Tenant, c.Purpose)
	id := newOpenID(s.provider, s.wrapped, ec)
	aead, hit, err := e.open.get(ctx, id, e.now, func(ctx context.Context) (cipher.AEAD, error) {
		if byTenant {
			pt, err := e.unwrapTenantDataKey(ctx, c.Tenant, s.wrapped, ec)
			if err != nil {
				return nil, err
			}
			defer clear(pt)
			aead, err := newGCM(pt)
			if err != nil {
				return nil, fmt.Errorf("%w: %w", ErrOpen, err)
			}
			return aead, nil
		}
		return e.unwrap(ctx, s.wrapped, ec)
	})
	if err != nil {
		if !errors.Is(err, ErrOpen) && !errors.Is(err, ErrUnavailable) {
			err = fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		return nil, err
	}
	if hit {
		e.m.hits.WithLabelValues(opOpen).Inc()
	}
	aad := appendAAD(make([]byte, 0, len(s.header)+6+len(c.Tenant)+len(c.Purpose)+len(c.ObjectID)), s.header, c)
	// GCM authenticates before it decrypts: on failure it returns no
	// plaintext at all.
	pt, err := aead.Open(nil, s.nonce, s.ciphertext, aad)
	if err != nil {
		return nil, fmt.Errorf("%w: authentication failed: tampered object or wrong context", ErrOpen)
	}
	return pt, nil
}

// newSealKey generates a data key for tenant and purpose and makes it
// available for opening too, so that objects sealed by this process open
// without a provider call.
func (e *Envelope) newSealKey(ctx context.Context, tenant, purpose string, direct bool) (*sealKey, error) {
	ec := kmsContext(tenant, purpose)
	provider := e.provider
	var pt, wrapped []byte
	var err error
	if direct {
		pt, wrapped, err = e.kek.GenerateDataKey(ctx, ec)
	} else {
		provider = ProviderTenant
		pt, wrapped, err = e.generateTenantDataKey(ctx, tenant, ec)
		if errors.Is(err, ErrOpen) {
			// The tenant's key record does not open: not a passing
			// failure of the provider, but reported the same way.
			return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
	}
	if err != nil {
		e.m.calls.WithLabelValues(opGenerate, outcomeUnavailable).Inc()
		return nil, fmt.Errorf("%w: generate data key: %w", ErrUnavailable, err)
	}
	defer clear(pt)
	aead, err := newGCM(pt)
	if err != nil {
		e.m.calls.WithLabelValues(opGenerate, outcomeRejected).Inc()
		return nil, fmt.Errorf("%w: generate data key: %w", ErrUnavailable, err)
	}
	header, err := appendHeader(nil, provider, wrapped)
	if err != nil {
		e.m.calls.WithLabelValues(opGenerate, outcomeRejected).Inc()
		return nil, fmt.Errorf("%w: generate data key: %w", ErrUnavailable, err)
	}
	e.m.calls.WithLabelValues(opGenerate, outcomeOK).Inc()
	now := e.now()
	e.open.put(newOpenID(provider, wrapped, ec), aead, now)
	e.log.Debug("kms data key generated", "tenant", tenant, "purpose", purpose, "provider", e.provider)
	return &sealKey{aead: aead, header: header, created: now}, nil
}

// unwrap asks the KEK for the plaintext of a wrapped data key.
func (e *Envelope) unwrap(ctx context.Context, wrapped []byte, ec map[string]string) (cipher.AEAD, error) {
	pt, err := e.kek.Decrypt(ctx, wrapped, ec)
	if err != nil {
		if errors.Is(err, ErrOpen) {
			e.m.calls.WithLabelValues(opDecrypt, outcomeRejected).Inc()
			return nil, fmt.Errorf("unwrap data key: %w", err)
		}
		e.m.calls.WithLabelValues(opDecrypt, outcomeUnavailable).Inc()
		return nil, fmt.Errorf("%w: unwrap data key: %w", ErrUnavailable, err)
	}
	defer clear(pt)
	aead, err := newGCM(pt)
	if err != nil {
		e.m.calls.WithLabelValues(opDecrypt, outcomeRejected).Inc()
		return nil, fmt.Errorf("%w: unwrap data key: %w", ErrOpen, err)
	}
	e.m.calls.WithLabelValues(opDecrypt, outcomeOK).Inc()
	return aead, nil
}

// newGCM returns AES-256-GCM with the standard 12-byte nonce and 16-byte
// tag for a 32-byte key. Shorter keys are refused so that a provider can
// never silently downgrade to AES-128.
func newGCM(key []byte) (cipher.AEAD, error) {
	if len(key) != dataKeySize {
		return nil, fmt.Errorf("data key is %d bytes, want %d", len(key), dataKeySize)
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// Check generates a data key and unwraps it again, outside every cache, to
// prove at start-up that the provider is reachable and the key usable for
// both operations. It calls the provider twice and uses the tenant
// "sealpost" and purpose "check" in the KMS context.
func (e *Envelope) Check(ctx context.Context) error {
	ec := kmsContext("sealpost", "check")
	pt, wrapped, err := e.kek.GenerateDataKey(ctx, ec)
	if err != nil {
		e.m.calls.WithLabelValues(opGenerate, outcomeUnavailable).Inc()
		return fmt.Errorf("%w: check: generate data key: %w", ErrUnavailable, err)
	}
	defer clear(pt)
	e.m.calls.WithLabelValues(opGenerate, outcomeOK).Inc()
	if _, err := e.unwrap(ctx, wrapped, ec); err != nil {
		return fmt.Errorf("kms: check: %w", err)
	}
	return nil
}
