package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// dataLockName is the file a gateway with the embedded NATS server holds
// locked (flock) while it runs: two processes must never open one
// JetStream file store, and offline tools must not read one that is being
// written. The lock goes with the process, however it ends.
const dataLockName = "sealpost.lock"

// errDataDirInUse: another process holds the data dir's lock.
var errDataDirInUse = errors.New("in use by a running sealpost (its lock file is held)")

// lockDataDir takes the data dir's lock without waiting. With optional, a
// data dir where the lock file cannot be created (a read-only copy) is
// used without it.
func lockDataDir(dir string, optional bool) (unlock func(), err error) {
	path := filepath.Join(dir, dataLockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil && optional {
		f, err = os.Open(path)
		if errors.Is(err, fs.ErrNotExist) {
			return func() {}, nil
		}
	}
	if err != nil {
		return nil, fmt.Errorf("data dir lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, errDataDirInUse
		}
		return nil, fmt.Errorf("data dir lock: %w", err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
