// Command sealpost is the signed-receipt mail and webhook forwarding gateway.
//
//	sealpost serve [--config FILE | --dev]   run the gateway
//	sealpost verify RECEIPT.json --jwks FILE|URL
//	sealpost check-config FILE
//	sealpost keys list|rotate|revoke KID     (through the admin API)
//	sealpost dlq replay [--tenant T] [--route R] [--since T]
//	sealpost endpoint enable|rotate-secret TENANT ROUTE
//	sealpost audit verify|export
//	sealpost audit verify --data DIR         (offline)
//	sealpost monitor --url URL --keys K --state FILE
//	sealpost witness keygen|serve
//	sealpost apikey new ID [--admin]
//	sealpost kms rotate-master [--data DIR]
//	sealpost version
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		// After the first signal starts a graceful shutdown, restore the
		// default handling so that a second signal ends the process at once.
		<-ctx.Done()
		stop()
	}()
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	var ee exitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.code == 0:
	case errors.As(err, &ee):
		if ee.msg != "" {
			fmt.Fprintln(os.Stderr, "sealpost:", ee.msg)
		}
		os.Exit(ee.code)
	default:
		fmt.Fprintln(os.Stderr, "sealpost:", err)
		os.Exit(1)
	}
}

// exitError carries a specific exit status (2 for usage errors, 1 for
// failed checks) out of run.
type exitError struct {
	code int
	msg  string
}

func (e exitError) Error() string { return e.msg }

func usageError(format string, args ...any) error {
	return exitError{code: 2, msg: fmt.Sprintf(format, args...)}
}

const usage = `usage: sealpost <command> [flags]

commands:
  serve          run the gateway (--dev for zero configuration)
  verify         verify a saved receipt envelope against a JWKS or key history
  check-config   validate a configuration file
  keys           list, rotate or revoke signing keys (admin API)
  dlq            replay dead letters (admin API)
  endpoint       re-enable an endpoint or rotate its whsec_ secret (admin API)
  audit          verify or export the audit log (admin API; verify --data DIR works offline)
  monitor        follow a gateway's audit checkpoints, fail on a rollback or fork
  witness        run a C2SP tlog-witness that cosigns a gateway's checkpoints
  apikey         make a new API key or admin token and its hash
  kms            rotate the local master key
  version        print the version

Run "sealpost <command> -h" for a command's flags.
`

// run is the whole program: main only adds the process around it.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitError{code: 2}
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return runServe(ctx, rest, getenv, stdout, stderr)
	case "verify":
		return runVerify(ctx, rest, stdout, stderr)
	case "check-config":
		return runCheckConfig(rest, stdout, stderr)
	case "keys":
		return runKeys(ctx, rest, getenv, stdout, stderr)
	case "dlq":
		return runDLQ(ctx, rest, getenv, stdout, stderr)
	case "endpoint":
		return runEndpoint(ctx, rest, getenv, stdout, stderr)
	case "audit":
		return runAudit(ctx, rest, getenv, stdout, stderr)
	case "monitor":
		return runMonitor(ctx, rest, stdout, stderr)
	case "witness":
		return runWitness(ctx, rest, stdout, stderr)
	case "apikey":
		return runAPIKey(rest, stdout, stderr)
	case "kms":
		return runKMS(rest, getenv, stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, "sealpost", version)
		return nil
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return usageError("unknown command %q", cmd)
}
