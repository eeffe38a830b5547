package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	iofs "io/fs"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sealpost/sealpost/audit"
	"github.com/sealpost/sealpost/ingress/httpin"
	"github.com/sealpost/sealpost/keyring"
	"github.com/sealpost/sealpost/keyring/kms"
	"github.com/sealpost/sealpost/signer"
)

// parseInterspersed parses flags that may come before or after positional
// arguments ("verify r.json --jwks k.json") and returns the positionals.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, exitError{code: 0}
			}
			return nil, exitError{code: 2}
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// maxFetchBytes bounds documents the CLI reads (JWKS, key history, receipts).
const maxFetchBytes = signer.MaxDocumentSize

func runVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	jwks := fs.String("jwks", "", "JWKS or key-history `source`: a file, or an https URL (required)")
	cacert := fs.String("cacert", "", "PEM `file` of a CA to trust when fetching --jwks (e.g. the dev certificate)")
	proofFile := fs.String("proof", "", "proof `file` (GET /v1/receipts/{id}/proof or /v1/audit/consistency) to check")
	wf := addWitnessFlags(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: sealpost verify RECEIPT.json --jwks FILE|URL [--cacert FILE]")
		fmt.Fprintln(stderr, "       sealpost verify [RECEIPT.json] --proof FILE --jwks FILE|URL [--witness VKEY ... --quorum N]")
		fs.PrintDefaults()
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 1 || (len(pos) == 0 && *proofFile == "") || *jwks == "" {
		fs.Usage()
		return exitError{code: 2}
	}
	policy, err := wf.policy()
	if err != nil {
		return usageError("verify: %v", err)
	}
	keyDoc, err := fetchDocument(ctx, *jwks, *cacert)
	if err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	keys, err := signer.ParseKeySet(keyDoc)
	if err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	if len(pos) == 0 {
		return verifyProofFile(*proofFile, "", keys, policy, stdout)
	}
	envelope, err := readLimited(pos[0])
	if err != nil {
		return err
	}
	v, err := signer.Verify(envelope, keys)
	if err != nil {
		fmt.Fprintf(stdout, "FAILED %s: %v\n", pos[0], err)
		return exitError{code: 1}
	}
	fmt.Fprintf(stdout, "OK %s: receipt %s signed by key %s at %s", pos[0], v.Receipt.ID, v.KeyID, v.Receipt.SignedAt)
	if v.PayloadPresent {
		fmt.Fprintln(stdout, "; payload matches payload_sha256")
	} else {
		fmt.Fprintln(stdout, "; no payload present, payload_sha256 not checked")
	}
	if *proofFile != "" {
		return verifyProofFile(*proofFile, v.Receipt.ID, keys, policy, stdout)
	}
	return nil
}

func readLimited(name string) ([]byte, error) {
	var r io.Reader
	if name == "-" {
		r = os.Stdin
	} else {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, maxFetchBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxFetchBytes {
		return nil, fmt.Errorf("%s: larger than %d bytes", name, maxFetchBytes)
	}
	return b, nil
}

// fetchDocument reads a file, or GETs an http(s) URL with TLS verification
// (optionally against an extra CA), a timeout and a size limit.
func fetchDocument(ctx context.Context, src, cacert string) ([]byte, error) {
	u, err := url.Parse(src)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") {
		return readLimited(src)
	}
	if u.Scheme == "http" {
		// Over plain HTTP anyone on the path could swap the keys and make a
		// forged receipt verify. Only a loopback address is acceptable.
		ip, err := netip.ParseAddr(u.Hostname())
		if (err != nil || !ip.IsLoopback()) && u.Hostname() != "localhost" {
			return nil, fmt.Errorf("refusing to fetch keys over plain http from %s: use https", u.Host)
		}
	}
	tr, err := transportTrusting(cacert)
	if err != nil {
		return nil, err
	}
	client := &http.Client{Transport: tr, Timeout: 15 * time.Second}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", src, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxFetchBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxFetchBytes {
		return nil, fmt.Errorf("GET %s: larger than %d bytes", src, maxFetchBytes)
	}
	return b, nil
}

// transportTrusting returns an HTTP transport that also trusts the CA in
// the PEM file cacert, when given.
func transportTrusting(cacert string) (*http.Transport, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if cacert == "" {
		return tr, nil
	}
	pem, err := os.ReadFile(cacert)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate", cacert)
	}
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return tr, nil
}

// runCheckConfig is `sealpost check-config [--dev] FILE`: everything
// `serve --config FILE` (with --dev: `serve --dev --config FILE`) checks
// before it opens the data dir and the queue, including that the TLS
// certificate and key load. What only the running system can tell (ports
// free, the data dir writable, an external NATS server's max_payload, the
// KMS reachable) is not checked; for an external NATS cluster the
// max_payload it needs is printed.
func runCheckConfig(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("check-config", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dev := fs.Bool("dev", false, "check the file as `serve --dev --config FILE` uses it (no tls section needed)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: sealpost check-config [--dev] FILE")
		fs.PrintDefaults()
		fmt.Fprintln(stderr, "exit status: 0 valid, 1 invalid, 2 usage error, 3 the file could not be read")
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return exitError{code: exitUsage}
	}
	file := pos[0]
	cfg, err := LoadConfig(file)
	var pathErr *iofs.PathError
	if errors.As(err, &pathErr) {
		return exitError{code: exitCannotRun, msg: err.Error()}
	}
	if err == nil {
		err = checkStart(cfg, *dev)
	}
	if err != nil {
		fmt.Fprintf(stdout, "%s: invalid\n", file)
		for _, line := range strings.Split(strings.TrimPrefix(err.Error(), file+": "), "\n") {
			fmt.Fprintf(stdout, "  %s\n", line)
		}
		return exitError{code: exitFailed}
	}
	fmt.Fprintf(stdout, "%s: ok\n", file)
	if cfg.NATS.URL != "" {
		// The external servers' own limit is checked at start; say now
		// what it must be.
		need := requiredMaxPayload(cfg)
		fmt.Fprintf(stdout, "  note: the NATS servers must allow messages of at least %d bytes for ingest.max_body_bytes %d (max_payload: %s in nats-server.conf; the NATS default is 1MB)\n",
			need, cfg.Ingest.MaxBodyBytes, payloadSetting(need))
	}
	return nil
}

// checkStart checks what serve refuses beyond the file's own rules: the
// TLS certificate and key, required unless --dev and loaded as a pair.
func checkStart(cfg *Config, dev bool) error {
	switch {
	case cfg.TLS.CertFile == "" && !dev:
		return errors.New("tls: cert_file and key_file are required (serve --dev generates a self-signed pair; check such a file with --dev)")
	case cfg.TLS.CertFile != "":
		if _, err := newCertStore(cfg.TLS.CertFile, cfg.TLS.KeyFile); err != nil {
			return err
		}
	}
	return nil
}

func runAPIKey(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] != "new" && !strings.HasPrefix(args[0], "-") {
		return runAPIKeyAdmin(ctx, args, getenv, stdout, stderr)
	}
	fs := flag.NewFlagSet("apikey", flag.ContinueOnError)
	fs.SetOutput(stderr)
	admin := fs.Bool("admin", false, "make an admin token (admin.token_sha256) instead of a tenant API key")
	fs.Usage = func() {
		fmt.Fprint(stderr, apiKeyUsage)
		fmt.Fprintln(stderr, "flags of new (see \"sealpost apikey create -h\" for the others):")
		fs.PrintDefaults()
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if *admin && len(pos) == 1 && pos[0] == "new" {
		pos = append(pos, "admin")
	}
	if len(pos) != 2 || pos[0] != "new" {
		fs.Usage()
		return exitError{code: 2}
	}
	token, sum, err := httpin.NewToken(pos[1])
	if err != nil {
		return usageError("apikey: %v", err)
	}
	fmt.Fprintf(stdout, "token (shown once, store it now): %s\n\n", token)
	if *admin {
		fmt.Fprintf(stdout, "admin:\n  token_sha256: %s\n", sum)
	} else {
		fmt.Fprintf(stdout, "add to the tenant's api_keys:\n  - id: %s\n    sha256: %s\n", pos[1], sum)
	}
	return nil
}

func runKMS(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("kms", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data", defaultDataDir(getenv), "data `dir` holding master.key")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: sealpost kms rotate-master [--data DIR]")
		fs.PrintDefaults()
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || pos[0] != "rotate-master" {
		fs.Usage()
		return exitError{code: 2}
	}
	v, err := kms.RotateLocalMaster(*dataDir)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "master key version %d is now used for new data keys; older versions still open what they sealed.\nRunning instances pick it up with their next data key (within kms.cache_max_age).\n", v)
	return nil
}

func defaultDataDir(getenv func(string) string) string {
	if d := getenv("SEALPOST_DATA"); d != "" {
		return d
	}
	return "./sealpost-data"
}

// adminClient calls the admin API of a running gateway.
type adminClient struct {
	base  string
	token string
	http  *http.Client
}

func adminFlags(fs *flag.FlagSet, getenv func(string) string) func() (*adminClient, error) {
	base := getenv("SEALPOST_ADMIN_URL")
	if base == "" {
		base = "http://127.0.0.1:9090"
	}
	addr := fs.String("admin", base, "admin API base `URL` (env SEALPOST_ADMIN_URL)")
	tokenFile := fs.String("token-file", "", "`file` with the admin token (default: env SEALPOST_ADMIN_TOKEN, else <data>/admin.token)")
	dataDir := fs.String("data", defaultDataDir(getenv), "data `dir` of a --dev gateway, for its admin.token")
	return func() (*adminClient, error) {
		token := getenv("SEALPOST_ADMIN_TOKEN")
		file := *tokenFile
		if file == "" && token == "" {
			file = filepath.Join(*dataDir, "admin.token")
		}
		if file != "" {
			b, err := os.ReadFile(file)
			if err != nil {
				return nil, fmt.Errorf("admin token: %w (set SEALPOST_ADMIN_TOKEN or --token-file)", err)
			}
			token = strings.TrimSpace(string(b))
		}
		if !looksLikeToken(token) {
			return nil, errors.New("admin token: not a sealpost token")
		}
		return &adminClient{base: strings.TrimRight(*addr, "/"), token: token, http: &http.Client{Timeout: 10 * time.Minute}}, nil
	}
}

func (c *adminClient) do(ctx context.Context, method, path string, q url.Values, out io.Writer) error {
	return c.send(ctx, method, path, q, nil, out)
}

// send is do with a JSON body (nil for none).
func (c *adminClient) send(ctx context.Context, method, path string, q url.Values, body io.Reader, out io.Writer) error {
	u := c.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(b))
	}
	_, err = io.Copy(out, resp.Body)
	return err
}

func runKeys(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("keys", flag.ContinueOnError)
	fs.SetOutput(stderr)
	client := adminFlags(fs, getenv)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: sealpost keys list | rotate | revoke KID   [flags]")
		fs.PrintDefaults()
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		fs.Usage()
		return exitError{code: 2}
	}
	c, err := client()
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	switch {
	case pos[0] == "list" && len(pos) == 1:
		if err := c.do(ctx, http.MethodGet, "/admin/keys", nil, &buf); err != nil {
			return err
		}
		ks, err := signer.ParseKeySet(buf.Bytes())
		if err != nil {
			return err
		}
		return keyring.FormatTable(stdout, ks.Keys)
	case pos[0] == "rotate" && len(pos) == 1:
		if err := c.do(ctx, http.MethodPost, "/admin/keys/rotate", nil, stdout); err != nil {
			return err
		}
	case pos[0] == "revoke" && len(pos) == 2:
		if err := c.do(ctx, http.MethodPost, "/admin/keys/"+url.PathEscape(pos[1])+"/revoke", nil, stdout); err != nil {
			return err
		}
	default:
		fs.Usage()
		return exitError{code: 2}
	}
	return nil
}

func runDLQ(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dlq", flag.ContinueOnError)
	fs.SetOutput(stderr)
	client := adminFlags(fs, getenv)
	tenant := fs.String("tenant", "", "only this `tenant`'s dead letters")
	route := fs.String("route", "", "only this `route`'s dead letters")
	since := fs.String("since", "", "only dead letters since this `time` (RFC 3339, or a duration like 24h)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: sealpost dlq replay [--tenant T] [--route R] [--since T]")
		fs.PrintDefaults()
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || pos[0] != "replay" {
		fs.Usage()
		return exitError{code: 2}
	}
	q := url.Values{}
	if *tenant != "" {
		q.Set("tenant", *tenant)
	}
	if *route != "" {
		q.Set("route", *route)
	}
	if *since != "" {
		t, err := parseSince(*since, time.Now())
		if err != nil {
			return usageError("dlq: --since: %v", err)
		}
		q.Set("since", t.Format(time.RFC3339))
	}
	c, err := client()
	if err != nil {
		return err
	}
	return c.do(ctx, http.MethodPost, "/admin/dlq/replay", q, stdout)
}

// parseSince accepts an RFC 3339 time or a duration back from now.
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(-d), nil
	}
	return time.Parse(time.RFC3339, s)
}

func runAudit(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("audit", flag.ContinueOnError)
	fs.SetOutput(stderr)
	client := adminFlags(fs, getenv)
	tenant := fs.String("tenant", "", "export: only this `tenant`'s entries")
	since := fs.String("since", "", "export: entries since this `time` (RFC 3339 or a duration)")
	until := fs.String("until", "", "export: entries until this `time` (RFC 3339 or a duration)")
	off := offlineFlags(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: sealpost audit verify | export [--tenant T] [--since T] [--until T]")
		fmt.Fprintln(stderr, "       sealpost audit verify --data DIR [--keys FILE] [--outside DIR] [--config FILE]   (offline, no gateway)")
		fs.PrintDefaults()
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return exitError{code: 2}
	}
	if pos[0] == "verify" && flagSet(fs, "data") {
		off.dataDir = fs.Lookup("data").Value.String()
		return runOfflineVerify(ctx, off, stdout)
	}
	c, err := client()
	if err != nil {
		return err
	}
	switch pos[0] {
	case "verify":
		var buf bytes.Buffer
		if err := c.do(ctx, http.MethodGet, "/admin/audit/verify", nil, &buf); err != nil {
			return err
		}
		return printAuditReport(buf.Bytes(), stdout)
	case "export":
		q := url.Values{}
		if *tenant != "" {
			q.Set("tenant", *tenant)
		}
		for name, v := range map[string]string{"since": *since, "until": *until} {
			if v == "" {
				continue
			}
			t, err := parseSince(v, time.Now())
			if err != nil {
				return usageError("audit: --%s: %v", name, err)
			}
			q.Set(name, t.Format(time.RFC3339))
		}
		return c.do(ctx, http.MethodGet, "/admin/audit/export", q, stdout)
	}
	fs.Usage()
	return exitError{code: 2}
}

// printAuditReport prints the result of `audit verify` and fails when the
// log does not verify.
func printAuditReport(doc []byte, w io.Writer) error {
	var rep audit.Report
	if err := json.Unmarshal(doc, &rep); err != nil {
		return fmt.Errorf("audit verify: unreadable report: %w", err)
	}
	return printReport(&rep, w)
}

func printReport(rep *audit.Report, w io.Writer) error {
	fmt.Fprintf(w, "entries: %d, tree size: %d, checkpoints verified: %d, largest verified size: %d\n",
		rep.Entries, rep.Size, rep.Checkpoints, rep.Verified)
	if rep.Outside > 0 {
		fmt.Fprintf(w, "newest checkpoint held outside the log: size %d\n", rep.Outside)
	}
	if rep.Witnessed > 0 {
		fmt.Fprintf(w, "largest size with the witness quorum: %d\n", rep.Witnessed)
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	if rep.OK {
		fmt.Fprintln(w, "OK: every entry matches the signed checkpoints")
		return nil
	}
	fmt.Fprintf(w, "FAILED: first bad sequence %d\n", rep.FirstBadSeq)
	for _, p := range rep.Problems {
		fmt.Fprintf(w, "  seq %d (leaf %d): %s: %s\n", p.Seq, p.Index, p.Kind, p.Detail)
	}
	if rep.Truncated {
		fmt.Fprintln(w, "  (more problems not listed)")
	}
	return exitError{code: 1}
}
