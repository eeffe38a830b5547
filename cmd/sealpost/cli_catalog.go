package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// The catalog's commands: routes, endpoints, API keys and operators
// through the admin API (tenants are in cli_lifecycle.go).

// stringsFlag is a flag that may be given several times.
type stringsFlag []string

func (s *stringsFlag) String() string     { return strings.Join(*s, ",") }
func (s *stringsFlag) Set(v string) error { *s = append(*s, v); return nil }

// objectFields are the flags of the fields objects share.
type objectFields struct {
	description, retention *string
	meta                   stringsFlag
}

func objectFlags(fs *flag.FlagSet) *objectFields {
	o := &objectFields{
		description: fs.String("description", "", "create/update: a `description`"),
		retention:   fs.String("retention", "", "create/update: how long data is kept, a `duration` (e.g. 168h)"),
	}
	fs.Var(&o.meta, "meta", "create/update: a metadata `key=value` (repeatable)")
	return o
}

// common is the JSON body of the set fields.
func (o *objectFields) common(fs *flag.FlagSet) map[string]any {
	body := map[string]any{}
	if flagSet(fs, "description") {
		body["description"] = *o.description
	}
	if flagSet(fs, "retention") {
		body["retention"] = *o.retention
	}
	if len(o.meta) > 0 {
		m := map[string]string{}
		for _, kv := range o.meta {
			k, v, _ := strings.Cut(kv, "=")
			m[k] = v
		}
		body["metadata"] = m
	}
	return body
}

// doJSON is do with a JSON body.
func (c *adminClient) doJSON(ctx context.Context, method, path string, q url.Values, body any, out io.Writer) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	return c.send(ctx, method, path, q, bytes.NewReader(b), out)
}

func pathOf(parts ...string) string {
	var b strings.Builder
	for i, p := range parts {
		if i%2 == 1 {
			b.WriteString("/" + url.PathEscape(p))
		} else {
			b.WriteString(p)
		}
	}
	return b.String()
}

// runRoute: sealpost route list T | get T R | create T R | update T R | delete T R.
func runRoute(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("route", flag.ContinueOnError)
	fs.SetOutput(stderr)
	client := adminFlags(fs, getenv)
	obj := objectFlags(fs)
	var rcpts stringsFlag
	fs.Var(&rcpts, "recipient", "create/update: a mail `address` routed here (repeatable); an update replaces the list")
	noRcpts := fs.Bool("no-recipients", false, "update: remove every recipient")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: sealpost route list TENANT | get|create|update|delete TENANT ROUTE [--description D] [--retention 168h] [--meta K=V] [--recipient ADDR]... [--no-recipients]")
		fs.PrintDefaults()
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	c, err := adminSubcommand(fs, pos, map[string]int{"list": 2, "get": 3, "create": 3, "update": 3, "delete": 3}, client)
	if err != nil {
		return err
	}
	routes := pathOf("/admin/tenants", pos[1], "/routes")
	switch pos[0] {
	case "list":
		return c.do(ctx, http.MethodGet, routes, nil, stdout)
	case "get":
		return c.do(ctx, http.MethodGet, routes+"/"+url.PathEscape(pos[2]), nil, stdout)
	case "create", "update":
		body := obj.common(fs)
		switch {
		case *noRcpts && len(rcpts) > 0:
			return usageError("route: --recipient and --no-recipients exclude each other")
		case *noRcpts:
			body["recipients"] = []string{}
		case len(rcpts) > 0:
			body["recipients"] = []string(rcpts)
		}
		if pos[0] == "create" {
			body["name"] = pos[2]
			return c.doJSON(ctx, http.MethodPost, routes, nil, body, stdout)
		}
		return c.doJSON(ctx, http.MethodPatch, routes+"/"+url.PathEscape(pos[2]), nil, body, stdout)
	}
	return c.do(ctx, http.MethodDelete, routes+"/"+url.PathEscape(pos[2]), nil, stdout)
}

// runEndpoint: sealpost endpoint list T R | get|update|delete|disable T R E
// | create T R --url URL | enable|rotate-secret T R [E].
func runEndpoint(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("endpoint", flag.ContinueOnError)
	fs.SetOutput(stderr)
	client := adminFlags(fs, getenv)
	overlap := fs.Duration("overlap", 24*time.Hour, "rotate-secret: how long the previous secrets keep signing")
	u := fs.String("url", "", "create/update: the webhook `URL`")
	id := fs.String("id", "", "create: the endpoint's `id` (default: a fresh one)")
	allowHTTP := fs.Bool("allow-http", false, "create/update: allow an http URL (development only)")
	conc := fs.Int("max-concurrency", 0, "create/update: requests in flight, shared by the instances (0: 16)")
	rateLimit := fs.Float64("rate-limit", 0, "create/update: messages per second, shared by the instances (0: none)")
	var types stringsFlag
	fs.Var(&types, "event-type", "create/update: an event `type` the endpoint takes, or a prefix \"x.*\" (repeatable; none: all)")
	obj := objectFlags(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: sealpost endpoint list TENANT ROUTE | get|update|delete|disable TENANT ROUTE ENDPOINT")
		fmt.Fprintln(stderr, "       sealpost endpoint create TENANT ROUTE --url URL [--id ID] [--event-type T]... [--rate-limit N] [--max-concurrency N]")
		fmt.Fprintln(stderr, "       sealpost endpoint enable|rotate-secret TENANT ROUTE [ENDPOINT] [--overlap 24h]   (ENDPOINT default: \"default\")")
		fs.PrintDefaults()
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 3 && (pos[0] == "enable" || pos[0] == "rotate-secret") {
		pos = append(pos, "default")
	}
	c, err := adminSubcommand(fs, pos, map[string]int{"list": 3, "create": 3, "get": 4, "update": 4, "delete": 4, "enable": 4, "disable": 4, "rotate-secret": 4}, client)
	if err != nil {
		return err
	}
	eps := pathOf("/admin/tenants", pos[1], "/routes", pos[2], "/endpoints")
	body := obj.common(fs)
	for name, v := range map[string]any{"url": *u, "allow_http": *allowHTTP, "max_concurrency": *conc, "rate_limit": *rateLimit} {
		if flagSet(fs, strings.ReplaceAll(name, "_", "-")) {
			body[name] = v
		}
	}
	if len(types) > 0 {
		body["event_types"] = []string(types)
	}
	switch pos[0] {
	case "list":
		return c.do(ctx, http.MethodGet, eps, nil, stdout)
	case "create":
		if *u == "" {
			return usageError("endpoint create: --url is required")
		}
		if *id != "" {
			body["id"] = *id
		}
		return c.doJSON(ctx, http.MethodPost, eps, nil, body, stdout)
	}
	one := eps + "/" + url.PathEscape(pos[3])
	switch pos[0] {
	case "get":
		return c.do(ctx, http.MethodGet, one, nil, stdout)
	case "update":
		return c.doJSON(ctx, http.MethodPatch, one, nil, body, stdout)
	case "delete":
		return c.do(ctx, http.MethodDelete, one, nil, stdout)
	case "rotate-secret":
		return c.do(ctx, http.MethodPost, one+"/rotate-secret", url.Values{"overlap": {overlap.String()}}, stdout)
	}
	return c.do(ctx, http.MethodPost, one+"/"+pos[0], nil, stdout)
}

// runAPIKeyAdmin: sealpost apikey create T --scope S... | list T | get T ID |
// rotate T ID | revoke T ID, through the admin API.
// adminSubcommand checks that pos is one of want's subcommands with its
// number of words (the subcommand's own included), printing the usage when
// it is not, and connects to the admin API.
func adminSubcommand(fs *flag.FlagSet, pos []string, want map[string]int, client func() (*adminClient, error)) (*adminClient, error) {
	if len(pos) == 0 || want[pos[0]] != len(pos) {
		fs.Usage()
		return nil, exitError{code: 2}
	}
	return client()
}

// apiKeyUsage is the usage of every apikey subcommand, offline and through
// the admin API.
const apiKeyUsage = `usage: sealpost apikey new ID [--admin]                      (offline: a token and its hash for the configuration file)
       sealpost apikey create TENANT --scope S [--scope S]... [--id ID] [--expires T] [--description D]
       sealpost apikey list TENANT | get|revoke TENANT ID | rotate TENANT ID [--overlap 24h]
`

func runAPIKeyAdmin(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("apikey", flag.ContinueOnError)
	fs.SetOutput(stderr)
	client := adminFlags(fs, getenv)
	var scopes stringsFlag
	fs.Var(&scopes, "scope", "create: a `scope` (ingest:ROUTE, ingest:*, receipts:read, endpoints:write, audit:read; repeatable)")
	id := fs.String("id", "", "create: the key's `id` (default: a fresh one)")
	desc := fs.String("description", "", "create: a `description`")
	expires := fs.String("expires", "", "create: when the key ends, RFC 3339 `time` or a duration from now (e.g. 8760h)")
	overlap := fs.Duration("overlap", 24*time.Hour, "rotate: how long the old token keeps working")
	fs.Usage = func() {
		fmt.Fprint(stderr, apiKeyUsage)
		fs.PrintDefaults()
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	c, err := adminSubcommand(fs, pos, map[string]int{"create": 2, "list": 2, "get": 3, "rotate": 3, "revoke": 3}, client)
	if err != nil {
		return err
	}
	keys := pathOf("/admin/tenants", pos[1], "/api-keys")
	switch pos[0] {
	case "create":
		body := map[string]any{"scopes": []string(scopes)}
		if *id != "" {
			body["id"] = *id
		}
		if *desc != "" {
			body["description"] = *desc
		}
		if *expires != "" {
			t, err := parseUntil(*expires, time.Now())
			if err != nil {
				return usageError("apikey: --expires: %v", err)
			}
			body["expires_at"] = t.UTC().Format(time.RFC3339)
		}
		return c.doJSON(ctx, http.MethodPost, keys, nil, body, stdout)
	case "list":
		return c.do(ctx, http.MethodGet, keys, nil, stdout)
	}
	one := keys + "/" + url.PathEscape(pos[2])
	switch pos[0] {
	case "get":
		return c.do(ctx, http.MethodGet, one, nil, stdout)
	case "rotate":
		return c.do(ctx, http.MethodPost, one+"/rotate", url.Values{"overlap": {overlap.String()}}, stdout)
	}
	return c.do(ctx, http.MethodDelete, one, nil, stdout)
}

// parseUntil accepts an RFC 3339 time or a duration from now.
func parseUntil(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(d), nil
	}
	return time.Parse(time.RFC3339, s)
}

// runOperator: sealpost operator list | get ID | create ID --role R |
// rotate ID | revoke ID.
func runOperator(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("operator", flag.ContinueOnError)
	fs.SetOutput(stderr)
	client := adminFlags(fs, getenv)
	role := fs.String("role", "", "create: viewer, operator or admin")
	desc := fs.String("description", "", "create: a `description`")
	expires := fs.String("expires", "", "create: when the token ends, RFC 3339 `time` or a duration from now")
	overlap := fs.Duration("overlap", 0, "rotate: how long the old token keeps working")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: sealpost operator list | get ID | create ID --role viewer|operator|admin [--expires T] | rotate ID [--overlap D] | revoke ID")
		fs.PrintDefaults()
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	c, err := adminSubcommand(fs, pos, map[string]int{"list": 1, "get": 2, "create": 2, "rotate": 2, "revoke": 2}, client)
	if err != nil {
		return err
	}
	if pos[0] == "list" {
		return c.do(ctx, http.MethodGet, "/admin/operators", nil, stdout)
	}
	one := "/admin/operators/" + url.PathEscape(pos[1])
	switch pos[0] {
	case "get":
		return c.do(ctx, http.MethodGet, one, nil, stdout)
	case "create":
		body := map[string]any{"id": pos[1], "role": *role}
		if *desc != "" {
			body["description"] = *desc
		}
		if *expires != "" {
			t, err := parseUntil(*expires, time.Now())
			if err != nil {
				return usageError("operator: --expires: %v", err)
			}
			body["expires_at"] = t.UTC().Format(time.RFC3339)
		}
		return c.doJSON(ctx, http.MethodPost, "/admin/operators", nil, body, stdout)
	case "rotate":
		return c.do(ctx, http.MethodPost, one+"/rotate", url.Values{"overlap": {overlap.String()}}, stdout)
	}
	return c.do(ctx, http.MethodDelete, one, nil, stdout)
}
