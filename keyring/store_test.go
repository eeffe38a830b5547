package keyring

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

var (
	errOtherNotFound = errors.New("other: not found")
	errOtherConflict = errors.New("other: conflict")
	errOtherDown     = errors.New("other: unavailable")
)

// errStore answers every call with err.
type errStore struct{ err error }

func (s errStore) Get(context.Context, string) ([]byte, uint64, error) { return nil, 0, s.err }
func (s errStore) Create(context.Context, string, []byte) (uint64, error) {
	return 0, s.err
}
func (s errStore) Update(context.Context, string, []byte, uint64) (uint64, error) {
	return 0, s.err
}

type errWatchStore struct{ errStore }

func (errWatchStore) Watch(context.Context, string, func(string, []byte, uint64)) error { return nil }

// TestMapStoreErrors checks that an adapted store reports the keyring's
// sentinels for the other store's, keeps every other error as it was, and
// is a Watcher exactly when the store it adapts is one.
func TestMapStoreErrors(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		err  error
		want error
	}{
		{fmt.Errorf("get: %w", errOtherNotFound), ErrStoreNotFound},
		{fmt.Errorf("create: %w", errOtherConflict), ErrStoreConflict},
		{errOtherDown, nil},
	} {
		s := MapStoreErrors(errStore{tc.err}, errOtherNotFound, errOtherConflict)
		_, _, gerr := s.Get(ctx, StateKey)
		_, cerr := s.Create(ctx, StateKey, nil)
		_, uerr := s.Update(ctx, StateKey, nil, 1)
		for _, err := range []error{gerr, cerr, uerr} {
			if !errors.Is(err, tc.err) {
				t.Errorf("%v: lost the store's error", err)
			}
			for _, sentinel := range []error{ErrStoreNotFound, ErrStoreConflict} {
				if errors.Is(err, sentinel) != (sentinel == tc.want) {
					t.Errorf("%v: errors.Is(%v) = %t", err, sentinel, !(sentinel == tc.want))
				}
			}
		}
	}
	if _, ok := MapStoreErrors(errStore{}, errOtherNotFound, errOtherConflict).(Watcher); ok {
		t.Error("a store that cannot watch became a Watcher")
	}
	if _, ok := MapStoreErrors(errWatchStore{}, errOtherNotFound, errOtherConflict).(Watcher); !ok {
		t.Error("a Watcher lost Watch")
	}
	if _, _, err := MapStoreErrors(errStore{}, errOtherNotFound, errOtherConflict).Get(ctx, StateKey); err != nil {
		t.Errorf("a nil error became %v", err)
	}
}
