package kms

import (
	"context"
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// Tenant keys
//
// With Config.TenantKeys set, a tenant's data keys are not wrapped by the
// KEK but by a key of that tenant's own: a random 256-bit tenant key, which
// is itself sealed under the KEK and kept in a TenantKeyStore. Destroying
// it (DestroyTenant) makes every object sealed for the tenant unopenable
// wherever a copy of it lies, backups included, as long as no copy of the
// tenant key itself survives: the store erases it, and backups keep tenant
// keys apart from the data so that they can be erased there too.
//
// Tenants whose name starts with '_' (keyring.SystemTenant, "_system") are
// sealpost's own and keep data keys wrapped by the KEK directly.
//
// A data key wrapped by a tenant key has the provider id "tenant" in the
// sealed header and this wrapped-key layout:
//
//	0   1   wrap format, 0x01
//	1   16  tenant key id
//	17  12  nonce
//	29  48  AES-256-GCM(tenant key, data key) and tag
//
// with "sealpost tenant kek v1\x00", the first 17 bytes and the KMS context
// as additional data. The stored tenant key record is
//
//	0   1   record format, 0x01
//	1   16  tenant key id
//	17  ..  the 32-byte key sealed by the KEK with the context (tenant,
//	        "tenant-key", hex key id)
//
// An unwrapped tenant key is cached for Config.MaxAge like a data key.

// ProviderTenant is the provider id of data keys wrapped by a tenant key.
const ProviderTenant = "tenant"

// PurposeTenantKey is the purpose of a tenant key sealed by the KEK.
const PurposeTenantKey = "tenant-key"

const (
	tenantWrapFormat   = 1
	tenantKeyIDSize    = 16
	tenantWrapHeader   = 1 + tenantKeyIDSize
	tenantWrapSize     = tenantWrapHeader + nonceSize + dataKeySize + tagSize
	tenantAADPrefix    = "sealpost tenant kek v1\x00"
	tenantRecordFormat = 1
	// maxTenantKeys bounds the unwrapped tenant keys cached at once.
	maxTenantKeys = 10_000
)

// ErrNoTenantKey is what a TenantKeyStore returns for a tenant without a
// stored key.
var ErrNoTenantKey = errors.New("kms: no tenant key")

// ErrTenantDestroyed reports an object of a tenant whose key was destroyed
// (or replaced after a destruction). It wraps ErrOpen: permanent.
var ErrTenantDestroyed = fmt.Errorf("%w: the tenant's key was destroyed", ErrOpen)

// TenantKeyStore keeps tenant key records (opaque bytes, sealed).
type TenantKeyStore interface {
	// LoadTenantKey returns tenant's record, or an error wrapping
	// ErrNoTenantKey.
	LoadTenantKey(ctx context.Context, tenant string) ([]byte, error)
	// CreateTenantKey stores rec for tenant unless it has a record
	// already, and returns the record stored (rec, or the existing one).
	CreateTenantKey(ctx context.Context, tenant string, rec []byte) ([]byte, error)
	// DestroyTenantKey erases tenant's record so that no copy of it is
	// left in the store.
	DestroyTenantKey(ctx context.Context, tenant string) error
}

// tenantKey is an unwrapped tenant key.
type tenantKey struct {
	id     [tenantKeyIDSize]byte
	aead   cipher.AEAD
	loaded time.Time
}

// tenantKeys caches unwrapped tenant keys.
type tenantKeys struct {
	store TenantKeyStore
	mu    sync.Mutex
	keys  map[string]*tenantKey
	// gen counts destructions, so that a key loaded while one ran is not
	// cached after it.
	gen uint64
}

// tenantScoped reports whether tenant's data keys are wrapped by a tenant
// key.
func (e *Envelope) tenantScoped(tenant string) bool {
	return e.tenants != nil && !strings.HasPrefix(tenant, "_")
}

// tenantKey returns tenant's key, creating it when create is set and the
// tenant has none.
func (e *Envelope) tenantKey(ctx context.Context, tenant string, create bool) (*tenantKey, error) {
	t := e.tenants
	now := e.now()
	t.mu.Lock()
	k, gen := t.keys[tenant], t.gen
	t.mu.Unlock()
	if k != nil {
		if age := now.Sub(k.loaded); age >= 0 && age < e.maxAge {
			return k, nil
		}
	}
	rec, err := t.store.LoadTenantKey(ctx, tenant)
	if errors.Is(err, ErrNoTenantKey) && create {
		rec, err = e.newTenantKeyRecord(ctx, tenant)
		if err == nil {
			rec, err = t.store.CreateTenantKey(ctx, tenant, rec)
		}
	}
	if errors.Is(err, ErrNoTenantKey) {
		return nil, fmt.Errorf("%w (tenant %s)", ErrTenantDestroyed, tenant)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: tenant key: %w", ErrUnavailable, err)
	}
	k, err = e.openTenantKeyRecord(ctx, tenant, rec)
	if err != nil {
		return nil, err
	}
	k.loaded = now
	t.mu.Lock()
	if t.gen == gen {
		if len(t.keys) >= maxTenantKeys {
			clear(t.keys)
		}
		t.keys[tenant] = k
	}
	t.mu.Unlock()
	return k, nil
}

// newTenantKeyRecord makes a fresh tenant key and seals it under the KEK.
func (e *Envelope) newTenantKeyRecord(ctx context.Context, tenant string) ([]byte, error) {
	var id [tenantKeyIDSize]byte
	rand.Read(id[:])
	key := make([]byte, dataKeySize)
	rand.Read(key)
	defer clear(key)
	sealed, err := e.sealDirect(ctx, Context{Tenant: tenant, Purpose: PurposeTenantKey, ObjectID: hex.EncodeToString(id[:])}, key)
	if err != nil {
		return nil, err
	}
	rec := append([]byte{tenantRecordFormat}, id[:]...)
	return append(rec, sealed...), nil
}

func (e *Envelope) openTenantKeyRecord(ctx context.Context, tenant string, rec []byte) (*tenantKey, error) {
	if len(rec) < 1+tenantKeyIDSize || rec[0] != tenantRecordFormat {
		return nil, fmt.Errorf("%w: malformed tenant key record of %s", ErrOpen, tenant)
	}
	k := &tenantKey{}
	copy(k.id[:], rec[1:])
	key, err := e.openDirect(ctx, Context{Tenant: tenant, Purpose: PurposeTenantKey, ObjectID: hex.EncodeToString(k.id[:])}, rec[1+tenantKeyIDSize:])
	if err != nil {
		return nil, fmt.Errorf("tenant key of %s: %w", tenant, err)
	}
	defer clear(key)
	if k.aead, err = newGCM(key); err != nil {
		return nil, fmt.Errorf("%w: tenant key of %s: %w", ErrOpen, tenant, err)
	}
	return k, nil
}

// generateTenantDataKey makes a data key wrapped by tenant's key.
func (e *Envelope) generateTenantDataKey(ctx context.Context, tenant string, ec map[string]string) (plaintext, wrapped []byte, err error) {
	k, err := e.tenantKey(ctx, tenant, true)
	if err != nil {
		return nil, nil, err
	}
	plaintext = make([]byte, dataKeySize)
	rand.Read(plaintext)
	wrapped = make([]byte, tenantWrapHeader+nonceSize, tenantWrapSize)
	wrapped[0] = tenantWrapFormat
	copy(wrapped[1:], k.id[:])
	nonce := wrapped[tenantWrapHeader:]
	// A tenant key wraps one data key per (purpose, cache period) and
	// instance, so its random nonces stay far below 2^32.
	rand.Read(nonce)
	wrapped = k.aead.Seal(wrapped, nonce, plaintext, tenantAAD(wrapped[:tenantWrapHeader], ec))
	return plaintext, wrapped, nil
}

// unwrapTenantDataKey unwraps a data key wrapped by tenant's key.
func (e *Envelope) unwrapTenantDataKey(ctx context.Context, tenant string, wrapped []byte, ec map[string]string) ([]byte, error) {
	if len(wrapped) != tenantWrapSize || wrapped[0] != tenantWrapFormat {
		return nil, fmt.Errorf("%w: malformed tenant-wrapped key", ErrOpen)
	}
	k, err := e.tenantKey(ctx, tenant, false)
	if err != nil {
		return nil, err
	}
	if [tenantKeyIDSize]byte(wrapped[1:tenantWrapHeader]) != k.id {
		// Wrapped by a tenant key that no longer exists: the tenant was
		// deleted (and perhaps made again since).
		return nil, fmt.Errorf("%w (tenant %s, key %x)", ErrTenantDestroyed, tenant, wrapped[1:5])
	}
	pt, err := k.aead.Open(nil, wrapped[tenantWrapHeader:tenantWrapHeader+nonceSize], wrapped[tenantWrapHeader+nonceSize:], tenantAAD(wrapped[:tenantWrapHeader], ec))
	if err != nil {
		return nil, fmt.Errorf("%w: data key was wrapped for another context", ErrOpen)
	}
	return pt, nil
}

func tenantAAD(header []byte, ec map[string]string) []byte {
	aad := append([]byte(tenantAADPrefix), header...)
	return appendCanonicalEC(aad, ec)
}

// DestroyTenant erases tenant's key from the store and forgets every
// cached key of it: from then on nothing sealed for the tenant opens,
// here or from any copy. Other processes sharing the store stop opening
// the tenant's objects once their cached keys expire (Config.MaxAge). A
// later Seal for the tenant makes a new key that opens nothing older.
func (e *Envelope) DestroyTenant(ctx context.Context, tenant string) error {
	if !e.tenantScoped(tenant) {
		return fmt.Errorf("%w: tenant %q has no tenant key", ErrInvalidContext, tenant)
	}
	t := e.tenants
	t.mu.Lock()
	t.gen++
	delete(t.keys, tenant)
	t.mu.Unlock()
	if err := t.store.DestroyTenantKey(ctx, tenant); err != nil {
		return fmt.Errorf("%w: destroy tenant key: %w", ErrUnavailable, err)
	}
	e.seal.forgetTenant(tenant)
	e.open.clear()
	return nil
}

// TenantKeyID returns the id of tenant's current key (hex), or an error
// wrapping ErrTenantDestroyed when it has none. For tools and tests.
func (e *Envelope) TenantKeyID(ctx context.Context, tenant string) (string, error) {
	if !e.tenantScoped(tenant) {
		return "", fmt.Errorf("%w: tenant %q has no tenant key", ErrInvalidContext, tenant)
	}
	k, err := e.tenantKey(ctx, tenant, false)
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(k.id[:]), nil
}

// TenantKeyRecordID returns the key id a stored tenant key record holds.
func TenantKeyRecordID(rec []byte) (string, error) {
	if len(rec) < 1+tenantKeyIDSize || rec[0] != tenantRecordFormat {
		return "", errors.New("kms: malformed tenant key record")
	}
	return hex.EncodeToString(rec[1 : 1+tenantKeyIDSize]), nil
}
