// Command sealpost is the signed-receipt mail and webhook forwarding gateway.
//
//	sealpost serve [--config FILE | --dev]   run the gateway
//	sealpost verify RECEIPT.json --jwks FILE|URL
//	sealpost check-config FILE
//	sealpost keys list|rotate|revoke KID     (through the admin API)
//	sealpost dlq replay [--tenant T] [--route R] [--since T]
//	sealpost tenant|route|endpoint|apikey|operator ...   (catalog, through the admin API)
//	sealpost endpoint enable|rotate-secret TENANT ROUTE [ENDPOINT]
//	sealpost audit verify|export
//	sealpost audit verify --data DIR         (offline)
//	sealpost monitor --url URL --keys K --state FILE
//	sealpost witness keygen|serve
//	sealpost apikey new ID [--admin]
//	sealpost kms rotate-master [--data DIR]
//	sealpost bench --self [--bare] | --url URL --token T --route R
//	sealpost health [--ready]                (Docker HEALTHCHECK: the admin listener's probes)
//	sealpost receipts delete TENANT ID
//	sealpost tenant delete TENANT --confirm TENANT | export TENANT [-o FILE]
//	sealpost export verify FILE --jwks FILE|URL
//	sealpost backup [now|list]
//	sealpost restore --config FILE [--snapshot ID] [--from primary|copy]
//	sealpost version
//
// Exit status: 0 success, 1 a check failed (verify, check-config, audit
// verify, health), 2 a usage error, 3 the command could not run (a file or
// the gateway could not be read or reached, the gateway could not start).
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
	code, msg := exitStatus(err)
	if msg != "" {
		fmt.Fprintln(os.Stderr, "sealpost:", msg)
	}
	stop()
	os.Exit(code)
}

// Exit statuses of the command line.
const (
	exitOK        = 0
	exitFailed    = 1 // a check failed: a receipt, a configuration, the audit log, health
	exitUsage     = 2 // bad arguments
	exitCannotRun = 3 // a file or the gateway could not be read or reached, or serve could not start
)

// exitError carries a specific exit status out of run. logged means the
// message was already written in the log format (serve's fatal errors).
type exitError struct {
	code   int
	msg    string
	logged bool
}

func (e exitError) Error() string { return e.msg }

// exitStatus maps run's error to the process's exit status and the message
// main prints on stderr ("" for none). An error without a status is one the
// command could not run past.
func exitStatus(err error) (int, string) {
	var ee exitError
	switch {
	case err == nil:
		return exitOK, ""
	case errors.As(err, &ee):
		if ee.logged {
			return ee.code, ""
		}
		return ee.code, ee.msg
	}
	return exitCannotRun, err.Error()
}

func usageError(format string, args ...any) error {
	return exitError{code: exitUsage, msg: fmt.Sprintf(format, args...)}
}

const usage = `usage: sealpost <command> [flags]

commands:
  serve          run the gateway (--dev for zero configuration)
  verify         verify a saved receipt envelope against a JWKS or key history
  check-config   validate a configuration file
  keys           list, rotate or revoke signing keys (admin API)
  dlq            replay dead letters (admin API)
  route          list, create, update or delete a tenant's routes (admin API)
  endpoint       manage a route's endpoints: create, update, enable, disable, rotate-secret (admin API)
  operator       manage operators of the admin API and their roles (admin API)
  audit          verify or export the audit log (admin API; verify --data DIR works offline)
  monitor        follow a gateway's audit checkpoints, fail on a rollback or fork
  witness        run a C2SP tlog-witness that cosigns a gateway's checkpoints
  apikey         make a token offline (new), or manage a tenant's API keys (admin API)
  kms            rotate the local master key
  bench          measure a gateway: throughput, latency, CPU per message
  health         probe a running gateway's admin listener (for HEALTHCHECK)
  receipts       delete a receipt's payload and attachments (admin API)
  tenant         list, create, update, delete (crypto-shredding) or export tenants (admin API)
  export         verify a tenant export offline
  backup         write a backup now or list backups (admin API)
  restore        restore a backup into an empty data dir or a fresh cluster
  version        print the version

Run "sealpost <command> -h" for a command's flags.

exit status: 0 success, 1 a check failed, 2 usage error, 3 could not run
`

// run is the whole program: main only adds the process around it.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitError{code: exitUsage}
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return fatalLogged(stderr, runServe(ctx, rest, getenv, stdout, stderr))
	case "verify":
		return runVerify(ctx, rest, stdout, stderr)
	case "check-config":
		return runCheckConfig(rest, getenv, stdout, stderr)
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
		return runAPIKey(ctx, rest, getenv, stdout, stderr)
	case "route":
		return runRoute(ctx, rest, getenv, stdout, stderr)
	case "operator":
		return runOperator(ctx, rest, getenv, stdout, stderr)
	case "kms":
		return runKMS(rest, getenv, stdout, stderr)
	case "bench":
		return runBench(ctx, rest, getenv, stdout, stderr)
	case "health":
		return runHealth(ctx, rest, getenv, stdout, stderr)
	case "receipts":
		return runReceipts(ctx, rest, getenv, stdout, stderr)
	case "tenant":
		return runTenant(ctx, rest, getenv, stdout, stderr)
	case "export":
		return runExport(ctx, rest, stdout, stderr)
	case "backup":
		return runBackup(ctx, rest, getenv, stdout, stderr)
	case "restore":
		return runRestore(ctx, rest, getenv, stdout, stderr)
	case "version", "-version", "--version":
		return runVersion(rest, stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return usageError("unknown command %q", cmd)
}
