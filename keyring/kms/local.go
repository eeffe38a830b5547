package kms

import (
	"bufio"
	"bytes"
	"context"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// MasterKeyFile is the name of the local master key file in the data
// directory.
const MasterKeyFile = "master.key"

// Limits of the master key file.
const (
	masterHeader      = "sealpost-master-key v1"
	maxMasterFileSize = 1 << 20
	maxMasterVersions = 10_000

	localWrapFormat = 1
	localWrapHeader = 1 + 4
	localWrapSize   = localWrapHeader + nonceSize + dataKeySize + tagSize
	localAADPrefix  = "sealpost local kek v1\x00"
)

var _ KEK = (*Local)(nil)

// Local is the default key-encryption key: a 256-bit master key in a file
// in the data directory. The file holds every master key version ever
// created; new data keys are wrapped by the newest, and the version in each
// wrapped key selects the one that unwraps it.
//
// The master key file is
//
//	sealpost-master-key v1
//	1 <base64 of 32 random bytes>
//	2 <base64 of 32 random bytes>
//
// one line per version, versions counting up from 1. It must be mode 0600
// (or stricter) and is replaced atomically on rotation. Losing it loses
// every object sealed under it: back it up together with the data.
type Local struct {
	path string

	mu      sync.RWMutex
	keys    map[uint32]cipher.AEAD
	current uint32
	loaded  fs.FileInfo // the file the keys were read from
}

// OpenLocal opens the master key file in dir, creating dir (mode 0700) and
// the file (mode 0600) with a first key version when they do not exist. It
// refuses a file that group or others may access.
func OpenLocal(dir string) (*Local, error) {
	if dir == "" {
		return nil, errors.New("kms: local: data directory is required")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("kms: local: %w", err)
	}
	l := &Local{path: filepath.Join(dir, MasterKeyFile)}
	err := l.load()
	if errors.Is(err, fs.ErrNotExist) {
		if err := createMaster(dir, l.path); err != nil {
			return nil, err
		}
		err = l.load()
	}
	if err != nil {
		return nil, err
	}
	return l, nil
}

// RotateLocalMaster adds a new master key version to the master key file in
// dir and returns its number. Older versions stay in the file so that
// everything sealed under them still opens. A running sealpost wraps new data
// keys with the new version from its next data key on.
func RotateLocalMaster(dir string) (version int, err error) {
	path := filepath.Join(dir, MasterKeyFile)
	unlock, err := lockFile(path + ".lock")
	if err != nil {
		return 0, fmt.Errorf("kms: local: rotate: %w", err)
	}
	defer unlock()
	raw, _, err := readMaster(path)
	if err != nil {
		return 0, err
	}
	defer func() {
		for _, k := range raw {
			clear(k)
		}
	}()
	if len(raw) >= maxMasterVersions {
		return 0, fmt.Errorf("kms: local: rotate: %s already has %d versions", path, len(raw))
	}
	next := uint32(len(raw) + 1)
	key := make([]byte, dataKeySize)
	rand.Read(key)
	raw[next] = key
	if err := writeMasterAtomic(dir, path, raw, true); err != nil {
		return 0, fmt.Errorf("kms: local: rotate: %w", err)
	}
	return int(next), nil
}

// ID returns "local".
func (l *Local) ID() string { return "local" }

// CurrentVersion returns the master key version that wraps new data keys.
func (l *Local) CurrentVersion() int {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return int(l.current)
}

// GenerateDataKey returns a random data key and the same key wrapped with
// AES-256-GCM under the current master key, with ec as additional data. A
// master key wraps one data key per cache period and (tenant, purpose), so
// its random nonces stay far below the 2^32 bound for random GCM nonces.
func (l *Local) GenerateDataKey(ctx context.Context, ec map[string]string) (plaintext, wrapped []byte, err error) {
	if err := l.reloadIfChanged(); err != nil {
		return nil, nil, err
	}
	l.mu.RLock()
	version, master := l.current, l.keys[l.current]
	l.mu.RUnlock()

	plaintext = make([]byte, dataKeySize)
	rand.Read(plaintext)
	wrapped = make([]byte, localWrapHeader+nonceSize, localWrapSize)
	wrapped[0] = localWrapFormat
	binary.BigEndian.PutUint32(wrapped[1:], version)
	nonce := wrapped[localWrapHeader:]
	rand.Read(nonce)
	wrapped = master.Seal(wrapped, nonce, plaintext, localAAD(wrapped[:localWrapHeader], ec))
	return plaintext, wrapped, nil
}

// Decrypt unwraps a data key wrapped by GenerateDataKey under the same ec.
// A malformed wrapped key, an unknown master version, another master key or
// another ec give an error wrapping ErrOpen.
func (l *Local) Decrypt(ctx context.Context, wrapped []byte, ec map[string]string) ([]byte, error) {
	if len(wrapped) != localWrapSize || wrapped[0] != localWrapFormat {
		return nil, fmt.Errorf("%w: local: malformed wrapped key", ErrOpen)
	}
	version := binary.BigEndian.Uint32(wrapped[1:])
	master, err := l.version(version)
	if err != nil {
		return nil, err
	}
	pt, err := master.Open(nil, wrapped[localWrapHeader:localWrapHeader+nonceSize], wrapped[localWrapHeader+nonceSize:], localAAD(wrapped[:localWrapHeader], ec))
	if err != nil {
		return nil, fmt.Errorf("%w: local: data key was wrapped by another master key or for another context", ErrOpen)
	}
	return pt, nil
}

// version returns the master key of version v, re-reading the file once if
// it is unknown (another process may have rotated).
func (l *Local) version(v uint32) (cipher.AEAD, error) {
	l.mu.RLock()
	master, ok := l.keys[v]
	l.mu.RUnlock()
	if ok {
		return master, nil
	}
	if err := l.reloadIfChanged(); err != nil {
		return nil, err
	}
	l.mu.RLock()
	master, ok = l.keys[v]
	l.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w: local: master key version %d is not in %s", ErrOpen, v, l.path)
	}
	return master, nil
}

func localAAD(header []byte, ec map[string]string) []byte {
	aad := append([]byte(localAADPrefix), header...)
	return appendCanonicalEC(aad, ec)
}

// reloadIfChanged re-reads the master key file when it was replaced since
// it was loaded. A file that became unreadable or insecure is an error:
// sealing on with a key that is gone from disk would make data unopenable.
func (l *Local) reloadIfChanged() error {
	fi, err := os.Stat(l.path)
	if err != nil {
		return fmt.Errorf("kms: local: %w", err)
	}
	l.mu.RLock()
	same := os.SameFile(fi, l.loaded) && fi.ModTime().Equal(l.loaded.ModTime()) && fi.Size() == l.loaded.Size()
	l.mu.RUnlock()
	if same {
		return nil
	}
	return l.load()
}

// load reads the master key file into l.
func (l *Local) load() error {
	raw, fi, err := readMaster(l.path)
	if err != nil {
		return err
	}
	keys := make(map[uint32]cipher.AEAD, len(raw))
	var current uint32
	for v, k := range raw {
		aead, err := newGCM(k)
		clear(k)
		if err != nil {
			return fmt.Errorf("kms: local: %s version %d: %w", l.path, v, err)
		}
		keys[v] = aead
		current = max(current, v)
	}
	l.mu.Lock()
	l.keys, l.current, l.loaded = keys, current, fi
	l.mu.Unlock()
	return nil
}

// readMaster reads and checks the master key file. The caller clears the
// returned keys.
func readMaster(path string) (map[uint32][]byte, fs.FileInfo, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("kms: local: open master key: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("kms: local: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("kms: local: %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, nil, fmt.Errorf("kms: local: %s is accessible by group or others (mode %04o); refusing to use it: run chmod 600 %s", path, perm, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxMasterFileSize+1))
	if err != nil {
		return nil, nil, fmt.Errorf("kms: local: read %s: %w", path, err)
	}
	defer clear(data)
	if len(data) > maxMasterFileSize {
		return nil, nil, fmt.Errorf("kms: local: %s is larger than %d bytes", path, maxMasterFileSize)
	}
	keys, err := parseMaster(data)
	if err != nil {
		return nil, nil, fmt.Errorf("kms: local: %s: %w", path, err)
	}
	return keys, fi, nil
}

// parseMaster parses the master key file format. Versions must count up
// from 1 without gaps.
func parseMaster(data []byte) (map[uint32][]byte, error) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 256), maxMasterFileSize)
	if !sc.Scan() || sc.Text() != masterHeader {
		return nil, fmt.Errorf("first line is not %q", masterHeader)
	}
	keys := make(map[uint32][]byte)
	fail := func(err error) (map[uint32][]byte, error) {
		for _, k := range keys {
			clear(k)
		}
		return nil, err
	}
	line := 1
	for sc.Scan() {
		line++
		vs, b64, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			return fail(fmt.Errorf("line %d: want \"<version> <base64 key>\"", line))
		}
		v, err := strconv.ParseUint(vs, 10, 32)
		if err != nil || v != uint64(len(keys)+1) {
			return fail(fmt.Errorf("line %d: version %q, want %d", line, vs, len(keys)+1))
		}
		if len(keys) >= maxMasterVersions {
			return fail(fmt.Errorf("more than %d versions", maxMasterVersions))
		}
		k, err := base64.StdEncoding.Strict().DecodeString(b64)
		if err != nil || len(k) != dataKeySize {
			clear(k)
			return fail(fmt.Errorf("line %d: key is not %d bytes of base64", line, dataKeySize))
		}
		keys[uint32(v)] = k
	}
	if err := sc.Err(); err != nil {
		return fail(err)
	}
	if len(keys) == 0 {
		return nil, errors.New("no key versions")
	}
	return keys, nil
}

// formatMaster encodes keys in the master key file format.
func formatMaster(keys map[uint32][]byte) []byte {
	var b bytes.Buffer
	b.WriteString(masterHeader + "\n")
	for v := uint32(1); v <= uint32(len(keys)); v++ {
		fmt.Fprintf(&b, "%d %s\n", v, base64.StdEncoding.EncodeToString(keys[v]))
	}
	return b.Bytes()
}

// createMaster writes a master key file with one fresh version, unless
// another process created one first.
func createMaster(dir, path string) error {
	key := make([]byte, dataKeySize)
	rand.Read(key)
	defer clear(key)
	err := writeMasterAtomic(dir, path, map[uint32][]byte{1: key}, false)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("kms: local: create master key: %w", err)
	}
	return nil
}

// writeMasterAtomic writes keys to a temporary file (mode 0600), syncs it
// and moves it to path: with replace, over an existing file (rename), and
// otherwise only if path does not exist yet (link, fs.ErrExist if it does).
// It then syncs the directory so the new name survives a crash.
func writeMasterAtomic(dir, path string, keys map[uint32][]byte, replace bool) (err error) {
	f, err := os.CreateTemp(dir, MasterKeyFile+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return err
	}
	data := formatMaster(keys)
	defer clear(data)
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if replace {
		if err := os.Rename(tmp, path); err != nil {
			return err
		}
	} else {
		if err := os.Link(tmp, path); err != nil {
			return err
		}
		os.Remove(tmp)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
