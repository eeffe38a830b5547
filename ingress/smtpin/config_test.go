package smtpin

import (
	"crypto/tls"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestNewValidation(t *testing.T) {
	cert := newTestCert(t)
	valid := func() Config {
		return Config{
			Hostname: "mx.test", TLSConfig: cert.server, Routes: testRoutes(),
			Enqueuer: &recordingEnqueuer{}, Blobs: &memBlobs{}, Resolver: &fakeResolver{},
		}
	}
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string // substring of the error; "" means valid
	}{
		{"valid with defaults", func(*Config) {}, ""},
		{"no hostname", func(c *Config) { c.Hostname = "" }, "Hostname is required"},
		{"no tls", func(c *Config) { c.TLSConfig = nil }, "TLSConfig is required"},
		{"tls without certificate", func(c *Config) { c.TLSConfig = &tls.Config{} }, "TLSConfig has no certificate"},
		{"no enqueuer", func(c *Config) { c.Enqueuer = nil }, "Enqueuer is required"},
		{"no blobs", func(c *Config) { c.Blobs = nil }, "Blobs is required"},
		{"no resolver", func(c *Config) { c.Resolver = nil }, "Resolver is required"},
		{"no routes", func(c *Config) { c.Routes = nil }, "Routes needs at least one route"},
		{"tiny message limit", func(c *Config) { c.MaxMessageBytes = 10 }, "MaxMessageBytes 10 is below 1024"},
		{"negative recipients", func(c *Config) { c.MaxRecipients = -1 }, "MaxRecipients -1 must be positive"},
		{"short timeout", func(c *Config) { c.DataTimeout = 1 }, "CommandTimeout and DataTimeout must be at least 1s"},
		{"route without tenant", func(c *Config) { c.Routes[0].Tenant = "" }, `Routes[0]: Tenant "" is not a tenant name`},
		{"route name with a dot", func(c *Config) { c.Routes[0].Name = "in.voices" }, `Routes[0]: Name "in.voices" is not a route name`},
		{"route without recipients", func(c *Config) { c.Routes[1].Recipients = nil }, "Routes[1] (acme/alerts): Recipients needs at least one address"},
		{"recipient not an address", func(c *Config) { c.Routes[1].Recipients = []string{"alerts"} }, `recipient "alerts" is not an address`},
		{"recipient on two routes", func(c *Config) { c.Routes[2].Recipients = []string{"ALERTS@in.example.net"} },
			`Routes[2] (globex/orders): recipient "ALERTS@in.example.net" is already served by route acme/alerts`},
		{"duplicate route", func(c *Config) { c.Routes[1].Name = "invoices" }, "duplicate route acme/invoices"},
		{"bad sender domain", func(c *Config) { c.Routes[0].AllowedSenderDomains = []string{"a@b"} }, `AllowedSenderDomains entry "a@b" is not a domain`},
		{"bad network", func(c *Config) { c.Routes[0].AllowedNetworks = []netip.Prefix{{}} }, "AllowedNetworks has an invalid prefix"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.mutate(&c)
			_, err := New(c)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// TestConfigValidateSettingsOnly checks that Validate judges the limits
// and routes without the parts New needs, and that a zero limit stands for
// its default.
func TestConfigValidateSettingsOnly(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    Config
		want string // substring of the error; "" means valid
	}{
		{"zero", Config{}, ""},
		{"largest limits", Config{MaxMessageBytes: MaxMaxMessageBytes, MaxHeaderBytes: MaxMaxHeaderBytes, MaxMIMEDepth: MaxMaxMIMEDepth,
			MaxMIMEParts: MaxMaxMIMEParts, InlineAttachmentMax: MaxInlineAttachmentMax, MaxJunkCommands: MaxMaxJunkCommands,
			DataTimeout: MaxMaxSessionTime, MaxSessionTime: MaxMaxSessionTime}, ""},
		{"message above 100 MiB", Config{MaxMessageBytes: MaxMaxMessageBytes + 1}, "MaxMessageBytes 104857601 is above"},
		{"header above 1 MiB", Config{MaxHeaderBytes: MaxMaxHeaderBytes + 1}, "MaxHeaderBytes 1048577 must be between"},
		{"mime depth", Config{MaxMIMEDepth: MaxMaxMIMEDepth + 1}, "MaxMIMEDepth and MaxMIMEParts"},
		{"inline attachments", Config{InlineAttachmentMax: MaxInlineAttachmentMax + 1}, "InlineAttachmentMax"},
		{"junk commands", Config{MaxJunkCommands: -1}, "MaxJunkCommands -1"},
		{"session shorter than the default data timeout", Config{MaxSessionTime: time.Minute}, "MaxSessionTime 1m0s is below DataTimeout 10m0s"},
		{"session above a day", Config{MaxSessionTime: MaxMaxSessionTime + 1}, "is above 24h"},
		{"recipient without local part", Config{Routes: []Route{{Tenant: "acme", Name: "r", Recipients: []string{"@acme.example"}}}}, "is not an address"},
		{"sender domain with a space", Config{Routes: []Route{{Tenant: "acme", Name: "r", Recipients: []string{"r@acme.example"},
			AllowedSenderDomains: []string{"vendor example"}}}}, "is not a domain"},
	} {
		err := tc.c.Validate()
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: Validate() = %v, want %q", tc.name, err, tc.want)
		}
	}
	for a, ok := range map[string]bool{"in@acme.example": true, " In@Acme.Example ": true, "@acme.example": false,
		"in@": false, "in": false, strings.Repeat("a", 250) + "@b.cd": false} {
		if ValidAddress(a) != ok {
			t.Errorf("ValidAddress(%q) = %t", a, !ok)
		}
	}
}

func TestTLSConfigHardened(t *testing.T) {
	base := newTestCert(t).server.Clone()
	base.MinVersion = tls.VersionTLS10
	c := serverTLSConfig(base)
	if c.MinVersion != tls.VersionTLS12 {
		t.Errorf("MinVersion %x, want TLS 1.2", c.MinVersion)
	}
	for _, id := range c.CipherSuites {
		name := tls.CipherSuiteName(id)
		if !strings.Contains(name, "GCM") && !strings.Contains(name, "CHACHA20") {
			t.Errorf("non-AEAD suite %s allowed", name)
		}
	}
	if base.MinVersion != tls.VersionTLS10 {
		t.Error("the caller's TLS config was modified")
	}
}
