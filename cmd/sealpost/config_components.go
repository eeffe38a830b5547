package main

import (
	"fmt"
	"time"

	"github.com/sealpost/sealpost/audit"
	"github.com/sealpost/sealpost/forwarder"
	"github.com/sealpost/sealpost/ingress/httpin"
	"github.com/sealpost/sealpost/ingress/smtpin"
	"github.com/sealpost/sealpost/keyring"
	"github.com/sealpost/sealpost/keyring/kms"
	"github.com/sealpost/sealpost/queue"
)

// validateComponents checks the settings whose rules belong to a
// component: the component's Config.Validate judges each setting, and its
// errors are filed under the setting's YAML key, so that check-config
// refuses exactly what serve would. A setting whose rule involves another
// one (keys.pre_publish and keys.period_months) is judged together with
// it; an error filed under the other key already is not repeated.
func (c *Config) validateComponents(bad func(key, format string, args ...any)) {
	seen := map[string]bool{}
	setting := func(key string, err error) {
		errs := []error{err}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			errs = j.Unwrap()
		}
		for _, e := range errs {
			if e != nil && !seen[e.Error()] {
				seen[e.Error()] = true
				bad(key, "%s", e.Error())
			}
		}
	}

	n := c.NATS
	setting("nats.url", queue.Config{URL: n.URL}.Validate())
	setting("nats.listen", queue.Config{URL: n.URL, ListenAddr: n.Listen}.Validate())
	setting("nats.replicas", queue.Config{URL: n.URL, Replicas: n.Replicas}.Validate())
	setting("nats.sync_interval", queue.Config{URL: n.URL, SyncInterval: time.Duration(n.SyncInterval)}.Validate())

	if c.KMS.Provider == "aws" {
		a := c.KMS.AWS
		setting("kms.aws.key_id", kms.AWSConfig{KeyID: a.KeyID}.Validate())
		setting("kms.aws.endpoint", kms.AWSConfig{KeyID: a.KeyID, Endpoint: a.Endpoint}.Validate())
	}
	setting("kms.cache_max_age", kms.Config{MaxAge: time.Duration(c.KMS.CacheMaxAge)}.Validate())
	setting("kms.cache_max_uses", kms.Config{MaxUses: c.KMS.CacheMaxUses}.Validate())

	k := c.Keys
	setting("keys.period_months", keyring.Config{PeriodMonths: k.PeriodMonths}.Validate())
	setting("keys.pre_publish", keyring.Config{PeriodMonths: k.PeriodMonths, PrePublish: time.Duration(k.PrePublish)}.Validate())
	setting("keys.grace", keyring.Config{Grace: time.Duration(k.Grace)}.Validate())

	setting("ingest.max_body_bytes", httpin.Config{MaxBodyBytes: c.Ingest.MaxBodyBytes}.Validate())
	setting("ingest.rate_per_second", httpin.Config{RatePerSecond: c.Ingest.RatePerSecond}.Validate())
	setting("ingest.burst", httpin.Config{Burst: c.Ingest.Burst}.Validate())

	s := c.SMTP
	for _, l := range []struct {
		key string
		c   smtpin.Config
	}{
		{"smtp.max_message_bytes", smtpin.Config{MaxMessageBytes: s.MaxMessageBytes}},
		{"smtp.max_recipients", smtpin.Config{MaxRecipients: s.MaxRecipients}},
		{"smtp.max_conns_per_ip", smtpin.Config{MaxConnsPerIP: s.MaxConnsPerIP}},
		{"smtp.max_conns", smtpin.Config{MaxConns: s.MaxConns}},
		{"smtp.command_timeout", smtpin.Config{CommandTimeout: time.Duration(s.CommandTimeout)}},
		// Judged with the longest session, so that a session shorter
		// than the data timeout is max_session_time's error.
		{"smtp.data_timeout", smtpin.Config{DataTimeout: time.Duration(s.DataTimeout), MaxSessionTime: smtpin.MaxMaxSessionTime}},
		{"smtp.max_session_time", smtpin.Config{MaxSessionTime: time.Duration(s.MaxSessionTime), DataTimeout: time.Duration(s.DataTimeout)}},
		{"smtp.max_junk_commands", smtpin.Config{MaxJunkCommands: s.MaxJunkCommands}},
		{"smtp.max_header_bytes", smtpin.Config{MaxHeaderBytes: s.MaxHeaderBytes}},
		{"smtp.max_mime_depth", smtpin.Config{MaxMIMEDepth: s.MaxMIMEDepth}},
		{"smtp.max_mime_parts", smtpin.Config{MaxMIMEParts: s.MaxMIMEParts}},
		{"smtp.inline_attachment_bytes", smtpin.Config{InlineAttachmentMax: s.InlineAttachmentBytes}},
	} {
		setting(l.key, l.c.Validate())
	}

	for i, d := range c.Forward.Schedule {
		setting(fmt.Sprintf("forward.schedule[%d]", i), forwarder.Config{Schedule: []time.Duration{time.Duration(d)}}.Validate())
	}
	setting("forward.schedule", forwarder.Config{Schedule: c.Forward.schedule()}.Validate())

	setting("audit.retention", audit.Config{Retention: time.Duration(c.Audit.Retention)}.Validate())
	setting("audit.origin", audit.Config{Origin: c.Audit.Origin}.Validate())
}

// schedule is forward.schedule for the forwarder; nil (the default) when
// empty.
func (f ForwardConfig) schedule() []time.Duration {
	var out []time.Duration
	for _, d := range f.Schedule {
		out = append(out, time.Duration(d))
	}
	return out
}
