package main

import (
	"fmt"
	"net/netip"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/sealpost/sealpost/audit"
)

// validateAuditOutside checks audit.outside and audit.witnesses.
func (c *Config) validateAuditOutside(bad func(key, format string, args ...any)) {
	if d := c.Audit.Outside.Dir; d != "" {
		if inside(d, c.DataDir) {
			bad("audit.outside.dir", "must not be inside data_dir: a rollback of the data dir would take the copies along")
		}
	}
	w := c.Audit.Witnesses
	if w.Timeout < 0 || time.Duration(w.Timeout) > time.Minute {
		bad("audit.witnesses.timeout", "must be at most 1m, got %s", time.Duration(w.Timeout))
	}
	if len(w.List) == 0 {
		if w.Quorum != 0 {
			bad("audit.witnesses.quorum", "needs witnesses in audit.witnesses.list")
		}
		return
	}
	if _, err := c.witnessPolicy(); err != nil {
		bad("audit.witnesses", "%v", err)
	}
}

// inside reports whether path is dir or below it.
func inside(path, dir string) bool {
	p, err1 := filepath.Abs(path)
	d, err2 := filepath.Abs(dir)
	if err1 != nil || err2 != nil {
		return false
	}
	rel, err := filepath.Rel(d, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// witnessPolicy builds the audit log's witness policy from
// audit.witnesses; nil when there are none.
func (c *Config) witnessPolicy() (*audit.WitnessPolicy, error) {
	w := c.Audit.Witnesses
	if len(w.List) == 0 {
		return nil, nil
	}
	p := &audit.WitnessPolicy{Quorum: w.Quorum}
	for i, wc := range w.List {
		name, key, err := audit.ParseCosignerKey(wc.VKey)
		if err != nil {
			return nil, fmt.Errorf("list[%d].vkey: %w", i, err)
		}
		if err := checkWitnessURL(wc.URL); err != nil {
			return nil, fmt.Errorf("list[%d].url: %w", i, err)
		}
		p.Witnesses = append(p.Witnesses, audit.Witness{Name: name, Key: key, URL: strings.TrimSuffix(wc.URL, "/")})
	}
	if err := p.Check(); err != nil {
		return nil, err
	}
	return p, nil
}

// checkWitnessURL accepts https URLs, and http to a loopback address.
func checkWitnessURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("must be an https URL without query, got %q", raw)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if a, err := netip.ParseAddr(u.Hostname()); (err == nil && a.IsLoopback()) || u.Hostname() == "localhost" {
			return nil
		}
	}
	return fmt.Errorf("must be https (http only to a loopback address), got %q", raw)
}
