package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/sealpost/sealpost/keyring/kms"
)

// TenantKeysStream keeps each tenant's key record (sealed by the KEK) on
// "tenantkey.<tenant>", one message per tenant. It is a stream rather than
// a key-value bucket because a bucket's stream refuses message deletes,
// and destroying a tenant key must erase its bytes (Stream.Erase), not
// leave them behind a delete marker. Backups keep it apart from the
// snapshots (see queue/backup), so that a destroyed key is gone from them
// too.
const TenantKeysStream = "TENANT_KEYS"

const tenantKeySubject = "tenantkey."

// TenantKeys is the kms.TenantKeyStore on TenantKeysStream.
type TenantKeys struct{ s *Stream }

var _ kms.TenantKeyStore = (*TenantKeys)(nil)

// TenantKeys declares the tenant key stream and returns its store.
func (c *Conn) TenantKeys(ctx context.Context) (*TenantKeys, error) {
	s, err := c.Stream(ctx, StreamConfig{Name: TenantKeysStream, Subjects: []string{tenantKeySubject + "*"}, MaxMsgsPerSubject: 1})
	if err != nil {
		return nil, err
	}
	return &TenantKeys{s: s}, nil
}

// LoadTenantKey implements kms.TenantKeyStore.
func (t *TenantKeys) LoadTenantKey(ctx context.Context, tenant string) ([]byte, error) {
	if err := checkTenantToken(tenant); err != nil {
		return nil, err
	}
	m, err := t.s.Last(ctx, tenantKeySubject+tenant)
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("%w: %s", kms.ErrNoTenantKey, tenant)
	}
	if err != nil {
		return nil, err
	}
	return m.Data, nil
}

// CreateTenantKey implements kms.TenantKeyStore.
func (t *TenantKeys) CreateTenantKey(ctx context.Context, tenant string, rec []byte) ([]byte, error) {
	if err := checkTenantToken(tenant); err != nil {
		return nil, err
	}
	_, err := t.s.AppendNew(ctx, tenantKeySubject+tenant, nil, rec)
	if errors.Is(err, ErrConflict) {
		// Another instance made the tenant's key first: use theirs.
		return t.LoadTenantKey(ctx, tenant)
	}
	if err != nil {
		return nil, err
	}
	return rec, nil
}

// DestroyTenantKey implements kms.TenantKeyStore: the record is erased.
func (t *TenantKeys) DestroyTenantKey(ctx context.Context, tenant string) error {
	if err := checkTenantToken(tenant); err != nil {
		return err
	}
	_, err := t.s.EraseSubject(ctx, tenantKeySubject+tenant)
	return err
}

// All returns every tenant's key record.
func (t *TenantKeys) All(ctx context.Context) (map[string][]byte, error) {
	out := map[string][]byte{}
	err := t.s.Read(ctx, ReadOptions{}, func(m *Msg) error {
		out[strings.TrimPrefix(m.Subject, tenantKeySubject)] = bytes.Clone(m.Data)
		return nil
	})
	return out, err
}

// checkTenantToken refuses a tenant that is not one subject token.
func checkTenantToken(tenant string) error {
	if tenant == "" || len(tenant) > 128 || strings.ContainsAny(tenant, ".*> \t\r\n") {
		return fmt.Errorf("queue: tenant %q is not a subject token", tenant)
	}
	return nil
}
