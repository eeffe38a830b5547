package kms

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
)

// memTenantKeys is a TenantKeyStore in memory (the real one is a JetStream
// stream in cmd/sealpost).
type memTenantKeys struct {
	mu   sync.Mutex
	recs map[string][]byte
}

func (m *memTenantKeys) LoadTenantKey(_ context.Context, tenant string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r, ok := m.recs[tenant]; ok {
		return bytes.Clone(r), nil
	}
	return nil, ErrNoTenantKey
}

func (m *memTenantKeys) CreateTenantKey(_ context.Context, tenant string, rec []byte) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r, ok := m.recs[tenant]; ok {
		return bytes.Clone(r), nil
	}
	m.recs[tenant] = bytes.Clone(rec)
	return rec, nil
}

func (m *memTenantKeys) DestroyTenantKey(_ context.Context, tenant string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.recs, tenant)
	return nil
}

// TestTenantKeys seals under tenant keys and checks that destroying one
// tenant's key makes its objects unopenable for every envelope sharing the
// KEK and the store, while other tenants, sealpost's own objects and
// objects sealed before tenant keys were enabled still open.
func TestTenantKeys(t *testing.T) {
	ctx := context.Background()
	kek, err := OpenLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	store := &memTenantKeys{recs: map[string][]byte{}}
	plain, err := New(Config{KEK: kek})
	if err != nil {
		t.Fatal(err)
	}
	env, err := New(Config{KEK: kek, TenantKeys: store})
	if err != nil {
		t.Fatal(err)
	}
	acme := Context{Tenant: "acme", Purpose: PurposeReceipt, ObjectID: "r1"}
	globex := Context{Tenant: "globex", Purpose: PurposeReceipt, ObjectID: "r1"}
	system := Context{Tenant: "_system", Purpose: PurposeSigningKey, ObjectID: "k1"}
	old, err := plain.Seal(ctx, acme, []byte("sealed before tenant keys"))
	if err != nil {
		t.Fatal(err)
	}
	sa, err := env.Seal(ctx, acme, []byte("acme secret"))
	if err != nil {
		t.Fatal(err)
	}
	sg, err := env.Seal(ctx, globex, []byte("globex secret"))
	if err != nil {
		t.Fatal(err)
	}
	ss, err := env.Seal(ctx, system, []byte("system secret"))
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := parseSealed(sa); p.provider != ProviderTenant {
		t.Fatalf("tenant object sealed by provider %q", p.provider)
	}
	if p, _ := parseSealed(ss); p.provider != "local" {
		t.Fatalf("system object sealed by provider %q", p.provider)
	}
	if len(store.recs) != 2 {
		t.Fatalf("%d tenant keys stored, want 2 (acme, globex)", len(store.recs))
	}
	// A second envelope (another instance) opens through the store.
	other, err := New(Config{KEK: kek, TenantKeys: store})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []*Envelope{env, other} {
		if got, err := e.Open(ctx, acme, sa); err != nil || string(got) != "acme secret" {
			t.Fatalf("open: %q %v", got, err)
		}
		if got, err := e.Open(ctx, acme, old); err != nil || string(got) != "sealed before tenant keys" {
			t.Fatalf("open an object sealed without tenant keys: %q %v", got, err)
		}
	}
	// A tenant key never opens another tenant's object.
	if _, err := env.Open(ctx, Context{Tenant: "globex", Purpose: PurposeReceipt, ObjectID: "r1"}, sa); !errors.Is(err, ErrOpen) {
		t.Fatalf("acme's object opened as globex's: %v", err)
	}

	if err := env.DestroyTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	fresh, err := New(Config{KEK: kek, TenantKeys: store})
	if err != nil {
		t.Fatal(err)
	}
	for name, e := range map[string]*Envelope{"destroying": env, "fresh": fresh} {
		if _, err := e.Open(ctx, acme, sa); !errors.Is(err, ErrTenantDestroyed) || !errors.Is(err, ErrOpen) {
			t.Fatalf("%s envelope opened a destroyed tenant's object: %v", name, err)
		}
		if got, err := e.Open(ctx, globex, sg); err != nil || string(got) != "globex secret" {
			t.Fatalf("%s envelope: another tenant: %q %v", name, got, err)
		}
		if got, err := e.Open(ctx, system, ss); err != nil || string(got) != "system secret" {
			t.Fatalf("%s envelope: system object: %q %v", name, got, err)
		}
	}
	// The tenant can be made again; its old objects stay unopenable.
	sa2, err := fresh.Seal(ctx, acme, []byte("after"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := fresh.Open(ctx, acme, sa2); err != nil || string(got) != "after" {
		t.Fatalf("new tenant key: %q %v", got, err)
	}
	if _, err := fresh.Open(ctx, acme, sa); !errors.Is(err, ErrTenantDestroyed) {
		t.Fatalf("the new key opened an object of the destroyed one: %v", err)
	}
	if err := env.DestroyTenant(ctx, "_system"); err == nil {
		t.Fatal("destroyed the system tenant")
	}
}
