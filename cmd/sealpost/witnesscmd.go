package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/sealpost/sealpost/audit"
	"github.com/sealpost/sealpost/audit/witness"
	"github.com/sealpost/sealpost/signer"
)

// `sealpost witness` runs a minimal C2SP tlog-witness for a customer or a
// second region (see package audit/witness):
//
//	sealpost witness keygen --name NAME --key FILE
//	sealpost witness serve --key FILE --state FILE --listen ADDR --log ORIGIN=KEYS [--log ...]

func runWitness(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "keygen":
			return runWitnessKeygen(args[1:], stdout, stderr)
		case "serve":
			return runWitnessServe(ctx, args[1:], stdout, stderr)
		}
	}
	fmt.Fprintln(stderr, "usage: sealpost witness keygen --name NAME --key FILE")
	fmt.Fprintln(stderr, "       sealpost witness serve --key FILE --state FILE --listen ADDR --log ORIGIN=KEYS [--log ...]")
	if len(args) == 1 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
		return exitError{code: 0}
	}
	return exitError{code: 2}
}

// witnessKey is the key file: the witness's name and Ed25519 seed.
type witnessKey struct {
	Name string `json:"name"`
	Seed string `json:"seed"`
}

func runWitnessKeygen(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("witness keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	name := fs.String("name", "", "the witness's name, a schema-less URL such as witness.example.com/w1 (required)")
	file := fs.String("key", "", "`file` to create for the private key, mode 0600 (required)")
	if err := fs.Parse(args); err != nil {
		return exitError{code: 2}
	}
	if *name == "" || *file == "" || fs.NArg() > 0 {
		fs.Usage()
		return exitError{code: 2}
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	if _, err := audit.NewCosigner(*name, priv, nil); err != nil {
		return usageError("witness keygen: %v", err)
	}
	b, _ := json.Marshal(witnessKey{Name: *name, Seed: base64.StdEncoding.EncodeToString(priv.Seed())})
	f, err := os.OpenFile(*file, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("witness keygen: %w (an existing key is never replaced)", err)
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "private key written to %s\nverifier key (give it to the log's operator and its clients):\n%s\n", *file, audit.FormatCosignerKey(*name, pub))
	return nil
}

func loadWitnessKey(file string) (string, ed25519.PrivateKey, error) {
	b, err := readLimited(file)
	if err != nil {
		return "", nil, err
	}
	var k witnessKey
	if err := json.Unmarshal(b, &k); err != nil {
		return "", nil, fmt.Errorf("%s: %w", file, err)
	}
	seed, err := base64.StdEncoding.DecodeString(k.Seed)
	if err != nil || len(seed) != ed25519.SeedSize {
		return "", nil, fmt.Errorf("%s: the seed is not 32 bytes of base64", file)
	}
	return k.Name, ed25519.NewKeyFromSeed(seed), nil
}

// logFlags collects --log ORIGIN=KEYS.
type logFlags []string

func (l *logFlags) String() string     { return strings.Join(*l, ",") }
func (l *logFlags) Set(s string) error { *l = append(*l, s); return nil }

func runWitnessServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("witness serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	keyFile := fs.String("key", "", "private key `file` from witness keygen (required)")
	stateFile := fs.String("state", "", "state `file`: the newest checkpoint cosigned per log (required)")
	listen := fs.String("listen", "127.0.0.1:8480", "`address` to listen on; add-checkpoint is served at /add-checkpoint")
	certFile := fs.String("tls-cert", "", "PEM certificate `file` (with --tls-key: serve https)")
	keyPEM := fs.String("tls-key", "", "PEM private key `file` of --tls-cert")
	cacert := fs.String("cacert", "", "PEM `file` of a CA to trust when fetching https key sources")
	refresh := fs.Duration("refresh", 10*time.Minute, "how often the logs' key sources are read again")
	var logs logFlags
	fs.Var(&logs, "log", "a log to witness: `ORIGIN=KEYS`, KEYS a JWKS or key-history file or https URL (repeat for each log)")
	if err := fs.Parse(args); err != nil {
		return exitError{code: 2}
	}
	if *keyFile == "" || *stateFile == "" || len(logs) == 0 || fs.NArg() > 0 || (*certFile == "") != (*keyPEM == "") || *refresh < time.Minute {
		fs.Usage()
		return exitError{code: 2}
	}
	name, key, err := loadWitnessKey(*keyFile)
	if err != nil {
		return err
	}
	cfg := witness.Config{Name: name, Key: key, State: fileState{*stateFile}, Logger: newLogger(stderr, "info")}
	for _, l := range logs {
		origin, src, ok := strings.Cut(l, "=")
		if !ok || origin == "" || src == "" {
			return usageError("witness: --log must be ORIGIN=KEYS, got %q", l)
		}
		cfg.Logs = append(cfg.Logs, witness.Log{Origin: origin, Keys: &refreshingKeys{src: src, cacert: *cacert, every: *refresh}})
	}
	w, err := witness.New(cfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("POST /add-checkpoint", w.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: readHeaderTimeout, ReadTimeout: 30 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: idleTimeout, MaxHeaderBytes: maxHeaderBytes, ErrorLog: slogErrorLog(cfg.Logger)}
	scheme := "http"
	if *certFile != "" {
		scheme = "https"
	}
	fmt.Fprintf(stdout, "witness %s listening on %s://%s (add-checkpoint at /add-checkpoint)\nverifier key: %s\n", name, scheme, ln.Addr(), w.VerifierKey())
	errc := make(chan error, 1)
	go func() {
		if *certFile != "" {
			errc <- srv.ServeTLS(ln, *certFile, *keyPEM)
		} else {
			errc <- srv.Serve(ln)
		}
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// fileState is the witness's state in a file, replaced atomically and
// synced with its directory before a cosignature is returned.
type fileState struct{ path string }

func (f fileState) Load() ([]byte, error) {
	b, err := os.ReadFile(f.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return b, err
}

func (f fileState) Save(doc []byte) error {
	if err := writeFileAtomic(f.path, doc, 0o600); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(f.path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// refreshingKeys reads a log's key source (file or URL) at most every
// `every`; when a read fails it keeps the keys it has and tries again a
// minute later.
type refreshingKeys struct {
	src, cacert string
	every       time.Duration

	mu  sync.Mutex
	set *signer.KeySet
	at  time.Time
}

func (r *refreshingKeys) KeySet(ctx context.Context) (*signer.KeySet, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.set != nil && time.Since(r.at) < r.every {
		return r.set, nil
	}
	doc, err := fetchDocument(ctx, r.src, r.cacert)
	var set *signer.KeySet
	if err == nil {
		set, err = signer.ParseKeySet(doc)
	}
	if err != nil {
		if r.set == nil {
			return nil, fmt.Errorf("keys %s: %w", r.src, err)
		}
		r.at = time.Now().Add(time.Minute - r.every)
		return r.set, nil
	}
	r.set, r.at = set, time.Now()
	return set, nil
}
