package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/sealpost/sealpost/audit"
	"github.com/sealpost/sealpost/keyring"
	"github.com/sealpost/sealpost/queue"
	"github.com/sealpost/sealpost/signer"
)

// `sealpost audit verify --data DIR` verifies the audit log of a data dir,
// or of a copy of one (a backup), without a gateway: it opens the
// JetStream file store with an embedded server that opens no port, looks
// the audit streams and the key state up without declaring or changing
// anything, and verifies as the admin API would. A data dir a gateway is
// running on is refused (its lock is held): two servers must never open
// one store.

type offlineVerify struct {
	dataDir, keys, outside, origin, config string
}

func offlineFlags(fs *flag.FlagSet) *offlineVerify {
	o := &offlineVerify{}
	fs.Func("keys", "verify --data: JWKS or key-history `file` (default: the key state in the data dir)", func(s string) error { o.keys = s; return nil })
	fs.Func("outside", "verify --data: `dir` of the checkpoints held outside the log (default: audit.outside.dir of --config)", func(s string) error { o.outside = s; return nil })
	fs.Func("origin", "verify --data: the log's origin (default: audit.origin of --config, else sealpost/audit)", func(s string) error { o.origin = s; return nil })
	fs.Func("config", "verify --data: configuration `file` for audit.origin, audit.outside and audit.witnesses", func(s string) error { o.config = s; return nil })
	return o
}

func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func runOfflineVerify(ctx context.Context, o *offlineVerify, stdout io.Writer) error {
	origin, outside := o.origin, o.outside
	var policy *audit.WitnessPolicy
	var timeout time.Duration
	if o.config != "" {
		cfg, err := LoadConfig(o.config)
		if err != nil {
			return err
		}
		if origin == "" {
			origin = cfg.Audit.Origin
		}
		if outside == "" {
			outside = cfg.Audit.Outside.Dir
		}
		if policy, err = cfg.witnessPolicy(); err != nil {
			return fmt.Errorf("audit.witnesses: %w", err)
		}
		timeout = time.Duration(cfg.Audit.Witnesses.Timeout)
	}
	if origin == "" {
		origin = "sealpost/audit"
	}
	if _, err := os.Stat(filepath.Join(o.dataDir, "jetstream")); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%s holds no JetStream store (no jetstream directory)", o.dataDir)
		}
		return err
	}
	unlock, err := lockDataDir(o.dataDir, true)
	if errors.Is(err, errDataDirInUse) {
		return exitError{code: 1, msg: fmt.Sprintf("%s is %v: verify through it (sealpost audit verify without --data), or verify a copy of the data dir", o.dataDir, err)}
	}
	if err != nil {
		return err
	}
	defer unlock()
	c, err := queue.Open(ctx, queue.Config{DataDir: o.dataDir})
	if err != nil {
		return err
	}
	defer c.Close()
	entries, err := c.LookupStream(ctx, audit.EntriesStream)
	if err == nil {
		var cps *queue.Stream
		if cps, err = c.LookupStream(ctx, audit.CheckpointsStream); err == nil {
			return verifyStored(ctx, c, entries, cps, o.keys, origin, outside, policy, timeout, stdout)
		}
	}
	if errors.Is(err, queue.ErrNotFound) {
		return fmt.Errorf("%s holds no audit log: %w", o.dataDir, err)
	}
	return err
}

func verifyStored(ctx context.Context, c *queue.Conn, entries, cps *queue.Stream, keysFile, origin, outside string,
	policy *audit.WitnessPolicy, timeout time.Duration, stdout io.Writer) error {
	keys, err := offlineKeys(ctx, c, keysFile)
	if err != nil {
		return err
	}
	var sink audit.CheckpointSink
	if outside != "" {
		sink = &audit.DirSink{Dir: outside}
	}
	l, err := audit.Open(ctx, audit.Config{Stream: entries, Checkpoints: cps, Origin: origin, ReadOnly: true,
		Outside: sink, Witnesses: policy, WitnessTimeout: timeout})
	if err != nil {
		return err
	}
	rep, err := l.Verify(ctx, keys)
	if err != nil {
		return err
	}
	return printReport(rep, stdout)
}

// offlineKeys reads the verification keys from a JWKS or key-history file,
// or from the key state stored in the data dir (public keys are stored in
// the clear: no KMS needed).
func offlineKeys(ctx context.Context, c *queue.Conn, file string) (*signer.KeySet, error) {
	if file != "" {
		doc, err := readLimited(file)
		if err != nil {
			return nil, fmt.Errorf("keys: %w", err)
		}
		return signer.ParseKeySet(doc)
	}
	kv, err := c.LookupKV(ctx, "KEYRING")
	if err != nil {
		return nil, fmt.Errorf("keys: the data dir has no key state (pass --keys): %w", err)
	}
	doc, _, err := kv.Get(ctx, keyring.StateKey)
	if err != nil {
		return nil, fmt.Errorf("keys: the data dir has no key state (pass --keys): %w", err)
	}
	return keyring.ParseHistory(doc, time.Now())
}
