package main

import (
	"errors"
	"io"
	"log/slog"
	"time"
)

// logAttr is the JSON logger's ReplaceAttr: it writes durations as Go
// duration strings ("1.5s", "250ms") instead of the handler's bare
// nanoseconds, whatever package logged them.
func logAttr(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		return slog.String(a.Key, a.Value.Duration().Round(time.Microsecond).String())
	}
	return a
}

// fatalLogged writes an error that ends `serve` in the log format (a JSON
// line on stderr, like every other log line) and marks it logged, so main
// does not print it again. Usage errors stay plain text for the person at
// the terminal.
func fatalLogged(stderr io.Writer, err error) error {
	var ee exitError
	if err == nil || errors.As(err, &ee) {
		return err
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{ReplaceAttr: logAttr}))
	log.Error("sealpost stopped", "err", err.Error())
	return exitError{code: exitCannotRun, msg: err.Error(), logged: true}
}

// logStarted logs what the start-up banner on stdout shows, so that the
// log alone tells which build started, where it listens and where its
// data is. The banner stays human-readable for the person at the terminal;
// the dev API key it prints is never logged.
func (g *gateway) logStarted(l listeners) {
	b := readBuildInfo()
	attrs := []any{"version", b.version, "revision", b.revision, "go", b.goVersion,
		"https", l.https.Addr().String(), "admin", l.admin.Addr().String(), "data_dir", absPath(g.cfg.DataDir)}
	if l.smtp != nil {
		attrs = append(attrs, "smtp", l.smtp.Addr().String())
	}
	if g.dev != nil {
		attrs = append(attrs, "dev", true)
	}
	g.log.Info("sealpost started", attrs...)
}
