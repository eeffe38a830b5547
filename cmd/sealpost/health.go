package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// runHealth is `sealpost health`: a probe of a running gateway for
// container HEALTHCHECKs (the distroless image has no shell or curl). It
// GETs /healthz (the process serves) or, with --ready, /readyz (the queue
// answers and the worker consumes) on the admin listener, and exits 0 on
// 200, 1 otherwise.
func runHealth(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("health", flag.ContinueOnError)
	fs.SetOutput(stderr)
	base := getenv("SEALPOST_ADMIN_URL")
	if base == "" {
		base = "http://127.0.0.1:9090"
	}
	addr := fs.String("admin", base, "admin listener base `URL` (env SEALPOST_ADMIN_URL)")
	ready := fs.Bool("ready", false, "probe /readyz (ready for traffic) instead of /healthz (alive)")
	timeout := fs.Duration("timeout", 5*time.Second, "give up after this long")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: sealpost health [--ready] [--admin URL] [--timeout 5s]")
		fs.PrintDefaults()
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		fs.Usage()
		return exitError{code: exitUsage}
	}
	path := "/healthz"
	if *ready {
		path = "/readyz"
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	u := strings.TrimRight(*addr, "/") + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return usageError("health: %v", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return exitError{code: exitFailed, msg: fmt.Sprintf("health: %v", err)}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode != http.StatusOK {
		return exitError{code: exitFailed, msg: fmt.Sprintf("health: GET %s: %s: %s", u, resp.Status, strings.TrimSpace(string(body)))}
	}
	fmt.Fprintf(stdout, "%s: %s\n", u, strings.TrimSpace(string(body)))
	return nil
}

// runVersion is `sealpost version`.
func runVersion(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintln(stderr, "usage: sealpost version") }
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		fs.Usage()
		return exitError{code: exitUsage}
	}
	fmt.Fprintln(stdout, readBuildInfo())
	return nil
}
