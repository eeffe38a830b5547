package keyring

import (
	"context"
	"errors"
	"fmt"
)

// Store holds the key-state document. Create and Update are
// compare-and-set operations. Get fails with an error wrapping
// ErrStoreNotFound when the key does not exist; Create fails with one
// wrapping ErrStoreConflict when the key exists, Update when its revision
// moved on. A store whose errors wrap other sentinels (*queue.KV's) is
// adapted with MapStoreErrors.
type Store interface {
	Get(ctx context.Context, key string) ([]byte, uint64, error)
	Create(ctx context.Context, key string, val []byte) (uint64, error)
	Update(ctx context.Context, key string, val []byte, rev uint64) (uint64, error)
}

// Watcher is implemented by stores that report changes (*queue.KV does).
// Run uses it to pick up other instances' changes within moments; without
// it Run re-reads the state every CheckInterval.
type Watcher interface {
	Watch(ctx context.Context, filter string, fn func(key string, val []byte, rev uint64)) error
}

// Outcomes of a Store that the keyring branches on.
var (
	// ErrStoreNotFound: no document under the key.
	ErrStoreNotFound = errors.New("keyring: store: not found")
	// ErrStoreConflict: a compare-and-set lost to another writer.
	ErrStoreConflict = errors.New("keyring: store: conflict")
)

// MapStoreErrors adapts s, whose errors wrap notFound and conflict for the
// two outcomes, to the Store contract: such errors wrap ErrStoreNotFound
// and ErrStoreConflict as well, and stay what they were otherwise. The
// result is a Watcher when s is one.
func MapStoreErrors(s Store, notFound, conflict error) Store {
	m := mappedStore{s: s, notFound: notFound, conflict: conflict}
	if w, ok := s.(Watcher); ok {
		return watchingStore{m, w}
	}
	return m
}

type mappedStore struct {
	s                  Store
	notFound, conflict error
}

func (m mappedStore) mapErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, m.notFound):
		return fmt.Errorf("%w: %w", ErrStoreNotFound, err)
	case errors.Is(err, m.conflict):
		return fmt.Errorf("%w: %w", ErrStoreConflict, err)
	}
	return err
}

func (m mappedStore) Get(ctx context.Context, key string) ([]byte, uint64, error) {
	b, rev, err := m.s.Get(ctx, key)
	return b, rev, m.mapErr(err)
}

func (m mappedStore) Create(ctx context.Context, key string, val []byte) (uint64, error) {
	rev, err := m.s.Create(ctx, key, val)
	return rev, m.mapErr(err)
}

func (m mappedStore) Update(ctx context.Context, key string, val []byte, rev uint64) (uint64, error) {
	rev, err := m.s.Update(ctx, key, val, rev)
	return rev, m.mapErr(err)
}

// watchingStore is a mappedStore of a Watcher.
type watchingStore struct {
	mappedStore
	Watcher
}
