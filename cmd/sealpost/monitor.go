package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/sealpost/sealpost/audit"
	"github.com/sealpost/sealpost/signer"
)

// `sealpost monitor` follows a gateway's audit checkpoints as a customer
// would: it keeps the last checkpoint it verified in a state file and
// accepts a new one only with a consistency proof from it. A smaller tree
// is a rollback, another root or a failing proof a fork: it prints both
// checkpoints as evidence and exits 1. A gateway that cannot be reached is
// retried at the next interval (with --once: exit 3).

// monitorState is the state file.
type monitorState struct {
	Origin     string    `json:"origin"`
	Size       uint64    `json:"size"`
	Root       string    `json:"root"`
	Checkpoint string    `json:"checkpoint"`
	VerifiedAt time.Time `json:"verified_at"`
}

// Exit statuses of monitor besides 0 and 2 (usage).
const (
	exitMisbehaved = 1 // rollback, fork, a checkpoint that does not verify
	exitUnchecked  = 3 // --once and the gateway could not be checked
)

type monitor struct {
	base    string
	keysSrc string
	cacert  string
	state   string
	origin  string
	policy  *audit.WitnessPolicy
	client  *http.Client
	keys    *signer.KeySet
	out     io.Writer
}

// errMisbehaved wraps findings that end the monitor; other errors are
// passing.
var errMisbehaved = errors.New("the log misbehaved")

func runMonitor(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("monitor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	m := &monitor{out: stdout}
	fs.StringVar(&m.base, "url", "", "the gateway's public base `URL`, e.g. https://sealpost.example (required)")
	fs.StringVar(&m.keysSrc, "keys", "", "JWKS or key-history `source`: a file, or an https URL read at every check (required)")
	fs.StringVar(&m.cacert, "cacert", "", "PEM `file` of a CA to trust (e.g. the dev certificate)")
	fs.StringVar(&m.state, "state", "", "`file` keeping the last verified checkpoint (required)")
	fs.StringVar(&m.origin, "origin", "", "the log's origin (default: the state file's, else the first checkpoint's)")
	interval := fs.Duration("interval", time.Minute, "time between checks, at least 1s")
	once := fs.Bool("once", false, "check once and exit")
	count := fs.Int("count", 0, "stop after this many checks (0: until interrupted)")
	timeout := fs.Duration("timeout", 15*time.Second, "bound of one request to the gateway")
	wf := addWitnessFlags(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: sealpost monitor --url URL --keys FILE|URL --state FILE [--interval 1m] [--once] [--witness VKEY ... --quorum N]")
		fmt.Fprintln(stderr, "exit status: 1 rollback, fork or an invalid checkpoint; 3 with --once when the gateway could not be checked")
		fs.PrintDefaults()
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	u, uerr := url.Parse(m.base)
	switch {
	case len(pos) != 0 || m.base == "" || m.keysSrc == "" || m.state == "":
		fs.Usage()
		return exitError{code: 2}
	case uerr != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http"):
		return usageError("monitor: --url must be an http(s) URL, got %q", m.base)
	case *interval < time.Second || *timeout <= 0 || *count < 0:
		return usageError("monitor: --interval must be at least 1s, --timeout positive, --count not negative")
	}
	m.base = strings.TrimSuffix(m.base, "/")
	if m.policy, err = wf.policy(); err != nil {
		return usageError("monitor: %v", err)
	}
	tr, err := transportTrusting(m.cacert)
	if err != nil {
		return err
	}
	m.client = &http.Client{Transport: tr, Timeout: *timeout, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
	for i := 1; ; i++ {
		err := m.check(ctx)
		switch {
		case errors.Is(err, errMisbehaved):
			fmt.Fprintln(stdout, err)
			return exitError{code: exitMisbehaved}
		case err != nil && *once:
			fmt.Fprintf(stdout, "UNCHECKED: %v\n", err)
			return exitError{code: exitUnchecked}
		case err != nil:
			fmt.Fprintf(stdout, "%s WARN: %v (trying again in %s)\n", time.Now().UTC().Format(time.RFC3339), err, *interval)
		}
		if *once || (*count > 0 && i >= *count) {
			return nil
		}
		t := time.NewTimer(*interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// check runs one round: fetch, verify, compare, prove, save.
func (m *monitor) check(ctx context.Context) error {
	if err := m.loadKeys(ctx); err != nil {
		return err
	}
	st, err := m.loadState()
	if err != nil {
		return err
	}
	origin := m.origin
	if origin == "" && st != nil {
		origin = st.Origin
	}
	signed, err := m.get(ctx, "/v1/audit/checkpoint", 64<<10)
	if err != nil {
		return err
	}
	cp, err := audit.VerifyCheckpoint(signed, origin, m.keys, m.policy)
	var unknown *note.UnverifiedNoteError
	switch {
	case errors.Is(err, audit.ErrQuorum):
		return fmt.Errorf("the newest checkpoint (size %d) lacks the witness quorum; waiting for a witnessed one: %w", cp.Size, err)
	case errors.As(err, &unknown):
		return fmt.Errorf("the newest checkpoint is signed by no key of --keys (a new key not yet in a saved key history?): %w", err)
	case err != nil:
		return fmt.Errorf("%w: INVALID: the gateway serves a checkpoint that does not verify: %v\n%s", errMisbehaved, err, signed)
	}
	if st == nil {
		if err := m.save(cp, signed); err != nil {
			return err
		}
		fmt.Fprintf(m.out, "%s OK size %d: first checkpoint, kept as the starting point; %s\n", now(), cp.Size, describeCheckpoint(cp))
		return nil
	}
	if cp.Origin != st.Origin {
		return fmt.Errorf("%w: INVALID: the checkpoint's origin is %q, the state file's %q", errMisbehaved, cp.Origin, st.Origin)
	}
	oldRoot, err := base64.StdEncoding.DecodeString(st.Root)
	if err != nil {
		return fmt.Errorf("state %s: bad root", m.state)
	}
	old := audit.Checkpoint{Origin: st.Origin, Size: st.Size, Root: oldRoot}
	evidence := func(what string, err error) error {
		return fmt.Errorf("%w: %s: %v\nthe checkpoint verified before:\n%s\nthe checkpoint served now:\n%s", errMisbehaved, what, err, st.Checkpoint, signed)
	}
	switch {
	case cp.Size < st.Size:
		return evidence("ROLLBACK", fmt.Errorf("the log's tree shrank from %d to %d entries", st.Size, cp.Size))
	case cp.Size == st.Size:
		if err := audit.CheckConsistency(old, cp, nil); err != nil {
			return evidence("FORK", err)
		}
		fmt.Fprintf(m.out, "%s OK size %d: unchanged; %s\n", now(), cp.Size, describeCheckpoint(cp))
		return nil
	}
	doc, err := m.get(ctx, "/v1/audit/consistency?from="+strconv.FormatUint(st.Size, 10)+"&to="+strconv.FormatUint(cp.Size, 10), audit.MaxProofDocument)
	if errors.Is(err, errNotFound) {
		return evidence("ROLLBACK", fmt.Errorf("the gateway no longer has a checkpoint of size %d to prove its tree from", st.Size))
	}
	if err != nil {
		return err
	}
	_, from, to, err := audit.VerifyConsistencyProof(doc, m.keys, nil)
	switch {
	case err != nil:
		return evidence("FORK", err)
	case from.Size != old.Size || to.Size != cp.Size:
		return evidence("FORK", fmt.Errorf("the proof is from %d to %d, asked %d to %d", from.Size, to.Size, old.Size, cp.Size))
	}
	if err := audit.CheckConsistency(old, from, nil); err != nil {
		return evidence("FORK", fmt.Errorf("the gateway's checkpoint of size %d is not the one verified before: %w", old.Size, err))
	}
	if err := audit.CheckConsistency(to, cp, nil); err != nil {
		return evidence("FORK", fmt.Errorf("the gateway holds two checkpoints of size %d: %w", cp.Size, err))
	}
	if err := m.save(cp, signed); err != nil {
		return err
	}
	fmt.Fprintf(m.out, "%s OK size %d: extends size %d; %s\n", now(), cp.Size, st.Size, describeCheckpoint(cp))
	return nil
}

func now() string { return time.Now().UTC().Format(time.RFC3339) }

// loadKeys reads the keys at every check (a URL follows key rotations); a
// failed read keeps the last keys read.
func (m *monitor) loadKeys(ctx context.Context) error {
	doc, err := fetchDocument(ctx, m.keysSrc, m.cacert)
	if err == nil {
		var ks *signer.KeySet
		if ks, err = signer.ParseKeySet(doc); err == nil {
			m.keys = ks
			return nil
		}
	}
	if m.keys == nil {
		return fmt.Errorf("keys: %w", err)
	}
	fmt.Fprintf(m.out, "%s WARN: keys: %v (using the keys read before)\n", now(), err)
	return nil
}

var errNotFound = errors.New("404 not found")

// get fetches a path of the gateway, bounded in size.
func (m *monitor) get(ctx context.Context, path string, limit int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.base+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := m.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, err
	}
	switch {
	case int64(len(b)) > limit:
		return nil, fmt.Errorf("GET %s: answer larger than %d bytes", path, limit)
	case resp.StatusCode == http.StatusNotFound:
		return nil, fmt.Errorf("GET %s: %w", path, errNotFound)
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return b, nil
}

const maxMonitorState = 256 << 10

func (m *monitor) loadState() (*monitorState, error) {
	f, err := os.Open(m.state)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxMonitorState+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxMonitorState {
		return nil, fmt.Errorf("state %s: larger than %d bytes", m.state, maxMonitorState)
	}
	var st monitorState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("state %s: %w", m.state, err)
	}
	return &st, nil
}

func (m *monitor) save(cp audit.Checkpoint, signed []byte) error {
	b, err := json.MarshalIndent(monitorState{Origin: cp.Origin, Size: cp.Size, Root: base64.StdEncoding.EncodeToString(cp.Root),
		Checkpoint: string(signed), VerifiedAt: time.Now().UTC()}, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(m.state, append(b, '\n'), 0o600)
}
