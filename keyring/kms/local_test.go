package kms

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func localProvider(t *testing.T) provider {
	dir := t.TempDir()
	open := func(t *testing.T, dir string) KEK {
		t.Helper()
		l, err := OpenLocal(dir)
		if err != nil {
			t.Fatalf("OpenLocal: %v", err)
		}
		return l
	}
	return provider{
		kek:   func(t *testing.T) KEK { return open(t, dir) },
		other: func(t *testing.T) KEK { return open(t, t.TempDir()) },
		broken: func(t *testing.T) KEK {
			d := t.TempDir()
			l := open(t, d)
			if err := os.Remove(filepath.Join(d, MasterKeyFile)); err != nil {
				t.Fatal(err)
			}
			return l
		},
		brokenStillOpens: true,
		rotate: func(t *testing.T) {
			if _, err := RotateLocalMaster(dir); err != nil {
				t.Fatalf("RotateLocalMaster: %v", err)
			}
		},
		strictWrapped: true,
	}
}

func TestLocalConformance(t *testing.T) {
	runConformance(t, localProvider(t))
}

func TestOpenLocalCreatesPrivateFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	l, err := OpenLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, MasterKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Fatalf("master key mode %04o, want 0600", perm)
	}
	data, err := os.ReadFile(filepath.Join(dir, MasterKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(lines) != 2 || lines[0] != masterHeader || !strings.HasPrefix(lines[1], "1 ") {
		t.Fatalf("master key file = %q, want header and version 1", data)
	}
	if l.CurrentVersion() != 1 {
		t.Fatalf("CurrentVersion = %d, want 1", l.CurrentVersion())
	}
	// A second start reads the same key instead of creating a new one.
	e1 := newEnvelope(t, Config{KEK: l})
	l2, err := OpenLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	c := Context{"acme", PurposeSigningKey, "k1"}
	mustOpen(t, newEnvelope(t, Config{KEK: l2}), c, mustSeal(t, e1, c, []byte("ed25519 seed")), []byte("ed25519 seed"))
	if after, _ := os.ReadFile(filepath.Join(dir, MasterKeyFile)); !bytes.Equal(after, data) {
		t.Fatal("second OpenLocal changed the master key file")
	}
	if matches, _ := filepath.Glob(filepath.Join(dir, "*.tmp-*")); len(matches) != 0 {
		t.Fatalf("temporary files left behind: %v", matches)
	}
}

func TestOpenLocalRefusesSharedFile(t *testing.T) {
	for _, mode := range []os.FileMode{0o640, 0o604, 0o644, 0o660, 0o606, 0o610, 0o601} {
		t.Run(mode.String(), func(t *testing.T) {
			dir := t.TempDir()
			if _, err := OpenLocal(dir); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, MasterKeyFile)
			if err := os.Chmod(path, mode); err != nil {
				t.Fatal(err)
			}
			_, err := OpenLocal(dir)
			if err == nil || !strings.Contains(err.Error(), "accessible by group or others") {
				t.Fatalf("OpenLocal with mode %04o: %v; want a refusal", mode, err)
			}
			if _, err := RotateLocalMaster(dir); err == nil {
				t.Fatalf("RotateLocalMaster with mode %04o succeeded", mode)
			}
		})
	}
	for _, mode := range []os.FileMode{0o600, 0o400} {
		t.Run(mode.String(), func(t *testing.T) {
			dir := t.TempDir()
			if _, err := OpenLocal(dir); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(filepath.Join(dir, MasterKeyFile), mode); err != nil {
				t.Fatal(err)
			}
			if _, err := OpenLocal(dir); err != nil {
				t.Fatalf("OpenLocal with mode %04o: %v", mode, err)
			}
		})
	}
}

func TestOpenLocalRefusesSymlink(t *testing.T) {
	src := t.TempDir()
	if _, err := OpenLocal(src); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Symlink(filepath.Join(src, MasterKeyFile), filepath.Join(dir, MasterKeyFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenLocal(dir); err == nil {
		t.Fatal("OpenLocal followed a symlinked master key file")
	}
}

func TestRotateLocalMaster(t *testing.T) {
	dir := t.TempDir()
	l, err := OpenLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnvelope(t, Config{KEK: l})
	c := Context{"acme", PurposeEndpointSecret, "ep1"}
	v1 := mustSeal(t, e, c, []byte("whsec_one"))

	for want := 2; want <= 3; want++ {
		got, err := RotateLocalMaster(dir)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("RotateLocalMaster = %d, want %d", got, want)
		}
	}
	fi, err := os.Stat(filepath.Join(dir, MasterKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Fatalf("master key mode after rotation %04o, want 0600", perm)
	}
	// The running provider picks up the new version with its next data
	// key, and still opens what version 1 wrapped.
	_, wrapped, err := l.GenerateDataKey(context.Background(), kmsContext("acme", PurposeEndpointSecret))
	if err != nil {
		t.Fatal(err)
	}
	if l.CurrentVersion() != 3 || wrapped[4] != 3 {
		t.Fatalf("after rotation: current version %d, wrapped with version %d; want 3", l.CurrentVersion(), wrapped[4])
	}
	l2, err := OpenLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	e2 := newEnvelope(t, Config{KEK: l2})
	mustOpen(t, e2, c, v1, []byte("whsec_one"))
	v3 := mustSeal(t, e2, c, []byte("whsec_three"))
	mustOpen(t, newEnvelope(t, Config{KEK: l}), c, v3, []byte("whsec_three"))

	if _, err := RotateLocalMaster(t.TempDir()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("RotateLocalMaster without a master key: %v, want not exist", err)
	}
}

func TestParseMasterRejects(t *testing.T) {
	key := "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=" // 32 bytes
	for _, tc := range []struct{ name, file string }{
		{"empty", ""},
		{"no header", "1 " + key + "\n"},
		{"wrong header", "sealpost-master-key v2\n1 " + key + "\n"},
		{"no versions", masterHeader + "\n"},
		{"starts at 2", masterHeader + "\n2 " + key + "\n"},
		{"gap", masterHeader + "\n1 " + key + "\n3 " + key + "\n"},
		{"duplicate", masterHeader + "\n1 " + key + "\n1 " + key + "\n"},
		{"short key", masterHeader + "\n1 AAEC\n"},
		{"bad base64", masterHeader + "\n1 !!!!\n"},
		{"no space", masterHeader + "\n1" + key + "\n"},
		{"trailing blank line", masterHeader + "\n1 " + key + "\n\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if keys, err := parseMaster([]byte(tc.file)); err == nil {
				t.Fatalf("parseMaster accepted %q: %d keys", tc.file, len(keys))
			}
		})
	}
	keys, err := parseMaster([]byte(masterHeader + "\n1 " + key + "\n2 " + key + "\n"))
	if err != nil || len(keys) != 2 {
		t.Fatalf("parseMaster valid file: %d keys, %v", len(keys), err)
	}
}
