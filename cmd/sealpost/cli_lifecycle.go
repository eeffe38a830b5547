package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sealpost/sealpost/keyring/kms"
	"github.com/sealpost/sealpost/queue"
	"github.com/sealpost/sealpost/queue/backup"
	"github.com/sealpost/sealpost/signer"
)

// runReceipts: sealpost receipts delete TENANT ID.
func runReceipts(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("receipts", flag.ContinueOnError)
	fs.SetOutput(stderr)
	client := adminFlags(fs, getenv)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: sealpost receipts delete TENANT ID   (removes the payload and attachments; the signed receipt stays)")
		fs.PrintDefaults()
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 3 || pos[0] != "delete" {
		fs.Usage()
		return exitError{code: 2}
	}
	c, err := client()
	if err != nil {
		return err
	}
	return c.do(ctx, http.MethodDelete, "/admin/receipts/"+url.PathEscape(pos[1])+"/"+url.PathEscape(pos[2]), nil, stdout)
}

// runTenant: sealpost tenant list | get T | create T | update T | delete T
// --confirm T | export T [-o FILE].
func runTenant(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tenant", flag.ContinueOnError)
	fs.SetOutput(stderr)
	client := adminFlags(fs, getenv)
	confirm := fs.String("confirm", "", "delete: the tenant's name again, to confirm")
	out := fs.String("o", "", "export: write the archive to this `file` (default: standard output)")
	obj := objectFlags(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: sealpost tenant list | get TENANT | create TENANT | update TENANT [--description D] [--retention 168h] [--meta K=V]")
		fmt.Fprintln(stderr, "       sealpost tenant delete TENANT --confirm TENANT | export TENANT [-o FILE]")
		fs.PrintDefaults()
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	c, err := adminSubcommand(fs, pos, map[string]int{"list": 1, "get": 2, "create": 2, "update": 2, "delete": 2, "export": 2}, client)
	if err != nil {
		return err
	}
	switch pos[0] {
	case "list":
		return c.do(ctx, http.MethodGet, "/admin/tenants", nil, stdout)
	case "get":
		return c.do(ctx, http.MethodGet, "/admin/tenants/"+url.PathEscape(pos[1]), nil, stdout)
	case "create":
		body := obj.common(fs)
		body["name"] = pos[1]
		return c.doJSON(ctx, http.MethodPost, "/admin/tenants", nil, body, stdout)
	case "update":
		return c.doJSON(ctx, http.MethodPatch, "/admin/tenants/"+url.PathEscape(pos[1]), nil, obj.common(fs), stdout)
	}
	tenant := pos[1]
	if pos[0] == "delete" {
		if *confirm != tenant {
			return usageError("tenant delete: cannot be undone; pass --confirm %s", tenant)
		}
		return c.do(ctx, http.MethodDelete, "/admin/tenants/"+url.PathEscape(tenant), url.Values{"confirm": {tenant}}, stdout)
	}
	w := stdout
	if *out != "" {
		tmp := *out + ".partial"
		f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		defer os.Remove(tmp)
		defer f.Close()
		if err := c.do(ctx, http.MethodGet, "/admin/tenants/"+url.PathEscape(tenant)+"/export", nil, f); err != nil {
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		return os.Rename(tmp, *out)
	}
	return c.do(ctx, http.MethodGet, "/admin/tenants/"+url.PathEscape(tenant)+"/export", nil, w)
}

// runExport: sealpost export verify FILE --jwks SRC.
func runExport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("export", flag.ContinueOnError)
	fs.SetOutput(stderr)
	jwks := fs.String("jwks", "", "JWKS or key-history `source`: a file, or an https URL (required)")
	cacert := fs.String("cacert", "", "PEM `file` of a CA to trust when fetching --jwks")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: sealpost export verify FILE --jwks FILE|URL")
		fs.PrintDefaults()
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 || pos[0] != "verify" || *jwks == "" {
		fs.Usage()
		return exitError{code: 2}
	}
	doc, err := fetchDocument(ctx, *jwks, *cacert)
	if err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	keys, err := signer.ParseKeySet(doc)
	if err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	f, err := os.Open(pos[1])
	if err != nil {
		return err
	}
	defer f.Close()
	rep, err := verifyExport(f, keys)
	if err != nil {
		fmt.Fprintf(stdout, "FAILED %s: %v\n", pos[1], err)
		return exitError{code: 1}
	}
	fmt.Fprintf(stdout, "OK %s: tenant %s, %d files, %d receipts verified, audit proofs verified, manifest signed\n", pos[1], rep.Tenant, rep.Files, rep.Receipts)
	return nil
}

// runBackup: sealpost backup [now | list] through the admin API.
func runBackup(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("backup", flag.ContinueOnError)
	fs.SetOutput(stderr)
	client := adminFlags(fs, getenv)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: sealpost backup [now | list]   (a running gateway writes the backup)")
		fs.PrintDefaults()
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		pos = []string{"now"}
	}
	if len(pos) != 1 || (pos[0] != "now" && pos[0] != "list") {
		fs.Usage()
		return exitError{code: 2}
	}
	c, err := client()
	if err != nil {
		return err
	}
	if pos[0] == "list" {
		return c.do(ctx, http.MethodGet, "/admin/backups", nil, stdout)
	}
	return c.do(ctx, http.MethodPost, "/admin/backup", nil, stdout)
}

// runRestore: sealpost restore --config FILE [--snapshot ID] [--from copy].
func runRestore(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("restore", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgFile := fs.String("config", getenv("SEALPOST_CONFIG"), "configuration `file` (env SEALPOST_CONFIG): its backup and kms settings are used")
	dataDir := fs.String("data", "", "data `dir` to restore into (default: the config's data_dir); it must hold no store yet")
	snap := fs.String("snapshot", "", "snapshot `id` (default: the newest)")
	from := fs.String("from", "primary", "`location`: primary (backup.s3) or copy (backup.copy)")
	list := fs.Bool("list", false, "list the snapshots instead of restoring")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: sealpost restore --config FILE [--data DIR] [--snapshot ID] [--from primary|copy] [--list]")
		fs.PrintDefaults()
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 || *cfgFile == "" {
		fs.Usage()
		return exitError{code: 2}
	}
	cfg, err := LoadConfig(*cfgFile)
	if err != nil {
		return err
	}
	if *dataDir != "" {
		cfg.DataDir = *dataDir
	}
	log := newLogger(stderr, cfg.LogLevel)
	if *list {
		t, err := restoreTarget(ctx, cfg, *from)
		if err != nil {
			return err
		}
		ids, err := backup.List(ctx, t)
		if err != nil {
			return err
		}
		for _, id := range ids {
			fmt.Fprintln(stdout, id)
		}
		return nil
	}
	res, err := restoreSnapshot(ctx, cfg, *snap, *from, log)
	if err != nil {
		return err
	}
	m := res.Manifest
	fmt.Fprintf(stdout, "restored snapshot %s (taken %s) into %s: %d streams, %d tenant keys, in %s\n",
		m.ID, m.Started.Format(time.RFC3339), absPath(cfg.DataDir), len(m.Streams), res.TenantKeys, res.Took.Round(time.Millisecond))
	if len(res.Missing) > 0 {
		fmt.Fprintf(stdout, "tenants deleted since the snapshot (their data stays unreadable): %s\n", strings.Join(res.Missing, ", "))
	}
	fmt.Fprintln(stdout, "start the gateway with: sealpost serve --config", *cfgFile)
	return nil
}

func restoreTarget(ctx context.Context, cfg *Config, from string) (*backup.Target, error) {
	loc := cfg.Backup.S3
	switch from {
	case "primary", "":
	case "copy":
		loc = cfg.Backup.Copy
	default:
		return nil, usageError("restore: --from must be primary or copy")
	}
	if loc.Bucket == "" {
		return nil, fmt.Errorf("restore: no bucket configured for %s", from)
	}
	return backup.NewTarget(ctx, targetConfig(loc))
}

// restoreSnapshot restores a snapshot into cfg's empty store (the data
// dir, or nats.url's fresh cluster).
func restoreSnapshot(ctx context.Context, cfg *Config, id, from string, log *slog.Logger) (*backup.RestoreResult, error) {
	t, err := restoreTarget(ctx, cfg, from)
	if err != nil {
		return nil, err
	}
	if cfg.NATS.URL == "" {
		if _, err := os.Stat(filepath.Join(cfg.DataDir, "jetstream")); err == nil {
			return nil, fmt.Errorf("restore: %s already holds a store: restore into an empty data dir", cfg.DataDir)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		if cfg.KMS.Provider == "local" {
			if _, err := os.Stat(filepath.Join(cfg.DataDir, kms.MasterKeyFile)); err != nil {
				return nil, fmt.Errorf("restore: the local KMS needs the master key that sealed the backup: copy %s into %s first", kms.MasterKeyFile, cfg.DataDir)
			}
		}
	}
	var kek kms.KEK
	switch cfg.KMS.Provider {
	case "local":
		if kek, err = kms.OpenLocal(cfg.DataDir); err != nil {
			return nil, err
		}
	case "aws":
		if kek, err = kms.NewAWS(ctx, kms.AWSConfig{KeyID: cfg.KMS.AWS.KeyID, Region: cfg.KMS.AWS.Region, Endpoint: cfg.KMS.AWS.Endpoint}); err != nil {
			return nil, err
		}
	}
	sealer, err := kms.New(kms.Config{KEK: kek, Logger: log})
	if err != nil {
		return nil, err
	}
	q, err := queue.Open(ctx, queue.Config{URL: cfg.NATS.URL, CredsFile: cfg.NATS.CredsFile, DataDir: cfg.DataDir,
		Replicas: cfg.NATS.Replicas, Logger: log, NoDeclare: true})
	if err != nil {
		return nil, err
	}
	defer q.Close()
	tks, err := q.TenantKeys(ctx)
	if err != nil {
		return nil, err
	}
	return backup.Restore(ctx, backup.RestoreConfig{Conn: q, Sealer: sealer, Target: t, ID: id, Replicas: cfg.NATS.Replicas,
		TenantKeys: tks, Logger: log})
}
