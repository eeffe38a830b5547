package main

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/sealpost/sealpost/audit"
	"github.com/sealpost/sealpost/forwarder"
)

// Config is the YAML configuration file. Every field documents its unit,
// default and whether it is required; configs/ has commented examples.
type Config struct {
	// DataDir holds the JetStream store, the local KMS master key and, in
	// --dev, the generated certificate. Default "./sealpost-data".
	DataDir string `yaml:"data_dir"`
	// LogLevel: debug, info (default), warn, error.
	LogLevel string `yaml:"log_level"`
	// Listen addresses (host:port). Empty takes the default.
	Listen ListenConfig `yaml:"listen"`
	TLS    TLSConfig    `yaml:"tls"`
	NATS   NATSConfig   `yaml:"nats"`
	KMS    KMSConfig    `yaml:"kms"`
	Keys   KeysConfig   `yaml:"keys"`
	Ingest IngestConfig `yaml:"ingest"`
	SMTP   SMTPConfig   `yaml:"smtp"`
	// Forward configures webhook delivery.
	Forward ForwardConfig `yaml:"forward"`
	Audit   AuditConfig   `yaml:"audit"`
	// Admin protects the admin API (/admin/...) on the admin listener.
	Admin AdminConfig `yaml:"admin"`
	// Tenants, each with its API keys and routes. At least one is required.
	Tenants []TenantConfig `yaml:"tenants"`
}

// ListenConfig holds listener addresses (host:port).
type ListenConfig struct {
	// HTTPS ingest and public API (JWKS, keys, receipts). Default "127.0.0.1:8443".
	HTTPS string `yaml:"https"`
	// SMTP with required STARTTLS. Default "127.0.0.1:2525"; "off"
	// disables the SMTP ingress.
	SMTP string `yaml:"smtp"`
	// Admin: /healthz, /readyz, /metrics and the admin API, plain HTTP.
	// Keep it on loopback or a private network. Default "127.0.0.1:9090".
	Admin string `yaml:"admin"`
}

// TLSConfig names the certificate for the HTTPS and SMTP listeners.
type TLSConfig struct {
	// CertFile and KeyFile are PEM files, reloaded on SIGHUP. Required unless
	// --dev (which generates a self-signed pair into the data dir).
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// NATSConfig selects the queue.
type NATSConfig struct {
	// URL of an external NATS cluster; empty (default) embeds a server.
	URL string `yaml:"url"`
	// CredsFile for URL; optional.
	CredsFile string `yaml:"creds_file"`
	// Listen opens the embedded server's client port (host:port) so other
	// instances and tools can connect. Default: no port.
	Listen string `yaml:"listen"`
	// Replicas for every stream and bucket. Default 1; 3 on a cluster.
	Replicas int `yaml:"replicas"`
	// SingleInstance declares that exactly one sealpost instance uses
	// nats.url. Only then may kms.provider be local: each instance's local
	// master key opens only what that instance sealed. Default false.
	SingleInstance bool `yaml:"single_instance"`
	// SyncInterval is how often the embedded server flushes its store to
	// disk. Default 0: every write is on disk before sealpost answers 202 or
	// 250. A positive interval is faster, but a power loss (not a crash of
	// the process) can lose what was acknowledged in the last interval.
	SyncInterval Duration `yaml:"sync_interval"`
}

// KMSConfig selects the key-encryption-key provider.
type KMSConfig struct {
	// Provider: "local" (default: a master key file in the data dir) or "aws".
	Provider string `yaml:"provider"`
	// AWS is required when provider is "aws".
	AWS AWSKMSConfig `yaml:"aws"`
	// CacheMaxAge bounds how long one data key seals objects. Default 5m.
	CacheMaxAge Duration `yaml:"cache_max_age"`
	// CacheMaxUses bounds how many objects one data key seals. Default 100000.
	CacheMaxUses int `yaml:"cache_max_uses"`
}

// AWSKMSConfig points at an AWS KMS key. Credentials come from the standard
// chain (environment, shared config, instance role).
type AWSKMSConfig struct {
	// KeyID: key id, ARN or alias ("alias/sealpost"). Required.
	KeyID string `yaml:"key_id"`
	// Region, e.g. "eu-west-1". Required unless set in the environment.
	Region string `yaml:"region"`
	// Endpoint overrides the KMS endpoint URL (tests, VPC endpoints). Optional.
	Endpoint string `yaml:"endpoint"`
}

// KeysConfig is the signing-key schedule.
type KeysConfig struct {
	// PeriodMonths between scheduled rotations; must divide 12. Default 3 (quarterly, UTC).
	PeriodMonths int `yaml:"period_months"`
	// PrePublish: how long before activation a key is in the JWKS. Default 336h (14 days).
	PrePublish Duration `yaml:"pre_publish"`
	// Grace: how long a key stays in the JWKS after it stops signing. Default 2160h (90 days).
	Grace Duration `yaml:"grace"`
}

// IngestConfig limits the HTTPS ingest API.
type IngestConfig struct {
	// MaxBodyBytes per request. Default 1048576 (1 MiB); at most 4 MiB.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// RatePerSecond per API key. Default 100.
	RatePerSecond float64 `yaml:"rate_per_second"`
	// Burst per API key. Default 200.
	Burst int `yaml:"burst"`
}

// SMTPConfig limits the SMTP ingress.
type SMTPConfig struct {
	// Hostname announced in the greeting. Default: the machine's hostname.
	Hostname string `yaml:"hostname"`
	// MaxMessageBytes per message. Default 26214400 (25 MiB).
	MaxMessageBytes int64 `yaml:"max_message_bytes"`
	// MaxRecipients per message. Default 100.
	MaxRecipients int `yaml:"max_recipients"`
	// MaxConnsPerIP concurrently. Default 20.
	MaxConnsPerIP int `yaml:"max_conns_per_ip"`
	// CommandTimeout per command. Default 5m.
	CommandTimeout Duration `yaml:"command_timeout"`
	// DataTimeout for the whole DATA phase. Default 10m.
	DataTimeout Duration `yaml:"data_timeout"`
	// MaxConns concurrently in total. Default 1000.
	MaxConns int `yaml:"max_conns"`
	// MaxHeaderBytes of a message's header block. Default 65536.
	MaxHeaderBytes int `yaml:"max_header_bytes"`
	// MaxMIMEDepth of nested multiparts. Default 10.
	MaxMIMEDepth int `yaml:"max_mime_depth"`
	// MaxMIMEParts per message. Default 100.
	MaxMIMEParts int `yaml:"max_mime_parts"`
	// InlineAttachmentBytes: larger attachments are stored sealed in the
	// object store and referenced. Default 262144 (256 KiB).
	InlineAttachmentBytes int64 `yaml:"inline_attachment_bytes"`
}

// ForwardConfig tunes webhook delivery.
type ForwardConfig struct {
	// Workers delivering at once per instance. Default 16.
	Workers int `yaml:"workers"`
	// MaxUnacked bounds the messages handed out and not yet acked, across
	// instances: those being posted and those waiting for their next
	// attempt. At the bound, new messages wait in the queue. Default 250000.
	MaxUnacked int `yaml:"max_unacked"`
	// Schedule of attempts, from the first: default
	// [0s, 5s, 5m, 30m, 2h, 5h, 10h, 10h], each with ±20% jitter.
	Schedule []Duration `yaml:"schedule"`
	// Timeout for one attempt in total. Default 15s.
	Timeout Duration `yaml:"timeout"`
	// BreakerFailures: consecutive failures that open an endpoint's
	// circuit breaker. Default 5.
	BreakerFailures int `yaml:"breaker_failures"`
	// BreakerCooldown: how long an open breaker waits before one probe.
	// Messages waiting meanwhile do not use up attempts. Default 30s.
	BreakerCooldown Duration `yaml:"breaker_cooldown"`
	// AllowNetworks exempts these CIDR ranges from the SSRF guard (e.g.
	// "127.0.0.0/8" in development). Default none.
	AllowNetworks []string `yaml:"allow_networks"`
}

// AuditConfig tunes the audit log.
type AuditConfig struct {
	// Retention of audit entries. Default 9480h (395 days: 12 months plus a margin).
	Retention Duration `yaml:"retention"`
	// Origin names the log in signed checkpoints. Default "sealpost/audit".
	Origin string `yaml:"origin"`
	// CheckpointEvery is how often a checkpoint is signed while entries
	// are appended; a receipt's proof is available after the next one.
	// Default 1m; between 1s and 1h.
	CheckpointEvery Duration `yaml:"checkpoint_every"`
	// Outside keeps a copy of every checkpoint outside the data dir.
	Outside AuditOutsideConfig `yaml:"outside"`
	// Witnesses cosign every checkpoint (C2SP tlog-witness).
	Witnesses WitnessesConfig `yaml:"witnesses"`
}

// AuditOutsideConfig names where copies of the checkpoints are kept. Only
// a copy outside the data dir shows that the data dir was rolled back.
type AuditOutsideConfig struct {
	// Dir receives one write-once file per checkpoint
	// (<dir>/<YYYY-MM-DD>/<size>.json). Put it on another disk or a mount
	// the data dir's backups do not restore; not inside data_dir.
	// Optional: without it (and without witnesses) a rollback of the whole
	// data dir goes unnoticed.
	Dir string `yaml:"dir"`
}

// WitnessesConfig lists the witnesses that cosign every checkpoint. The
// log submits each checkpoint to all of them; verification (audit verify,
// and clients with the same list) requires Quorum cosignatures.
type WitnessesConfig struct {
	// Quorum is how many witnesses must cosign a checkpoint. Default: a
	// majority of List (len/2+1); between 1 and len(List).
	Quorum int `yaml:"quorum"`
	// Timeout bounds one witness's answer, retries included. Default 10s;
	// at most 1m. A checkpoint is stored with the cosignatures that came in
	// time.
	Timeout Duration `yaml:"timeout"`
	// List of witnesses; at most 32. Optional.
	List []WitnessConfig `yaml:"list"`
}

// WitnessConfig is one witness.
type WitnessConfig struct {
	// URL is the witness's submission prefix: add-checkpoint is POSTed to
	// URL + "/add-checkpoint". https, or http to a loopback address.
	// Required.
	URL string `yaml:"url"`
	// VKey is the witness's C2SP verifier key,
	// "<name>+<8 hex digits>+<base64 of 0x04 and the Ed25519 key>" (what
	// `sealpost witness keygen` prints). Required.
	VKey string `yaml:"vkey"`
}

// AdminConfig protects the admin API.
type AdminConfig struct {
	// TokenSHA256 is the hex SHA-256 of the admin bearer token
	// (`sealpost apikey new --admin` prints one). Required for /admin/...;
	// without it the admin API is disabled.
	TokenSHA256 string `yaml:"token_sha256"`
}

// TenantConfig is one customer.
type TenantConfig struct {
	// Name: 1-63 of a-z, 0-9 and '-'. Required, unique.
	Name    string         `yaml:"name"`
	APIKeys []APIKeyConfig `yaml:"api_keys"`
	Routes  []RouteConfig  `yaml:"routes"`
}

// APIKeyConfig is a tenant's API key, kept only as a hash.
type APIKeyConfig struct {
	// ID: the public part of the token "sp_<id>_<secret>". Required, unique.
	ID string `yaml:"id"`
	// SHA256: hex SHA-256 of the whole token. Required.
	SHA256 string `yaml:"sha256"`
	// Routes the key may post to; empty means all of the tenant's routes.
	Routes []string `yaml:"routes"`
}

// RouteConfig is where a tenant's payloads go.
type RouteConfig struct {
	// Name: 1-63 of a-z, 0-9, '_' and '-'. Required, unique in the tenant.
	Name string `yaml:"name"`
	// Endpoint: the customer's webhook URL, https. Required.
	Endpoint string `yaml:"endpoint"`
	// AllowHTTP permits an http:// endpoint (development only). Default false.
	AllowHTTP bool `yaml:"allow_http"`
	// MaxConcurrency bounds deliveries in flight to this endpoint per
	// instance. Default 8.
	MaxConcurrency int `yaml:"max_concurrency"`
	// Recipients: mail addresses routed here by the SMTP ingress. Optional.
	Recipients []string `yaml:"recipients"`
	// AllowedSenderDomains limits MAIL FROM domains. Optional.
	AllowedSenderDomains []string `yaml:"allowed_sender_domains"`
	// AllowedNetworks limits SMTP client addresses (CIDR). Optional.
	AllowedNetworks []string `yaml:"allowed_networks"`
	// RequireDKIM refuses mail without a passing DKIM signature. Default false.
	RequireDKIM bool `yaml:"require_dkim"`
}

// Duration is a time.Duration written as "5m", "90s", "2160h".
type Duration time.Duration

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return fmt.Errorf("line %d: duration must be a string like \"5m\"", n.Line)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	if v < 0 {
		return fmt.Errorf("line %d: duration must not be negative", n.Line)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// printable reports whether s is non-empty printable ASCII.
func printable(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// maxConfigBytes bounds the configuration file.
const maxConfigBytes = 4 << 20

// LoadConfig reads, strictly decodes, defaults and validates a config file.
func LoadConfig(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxConfigBytes {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxConfigBytes)
	}
	cfg, err := ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// ParseConfig decodes YAML strictly (unknown keys are errors), applies
// defaults and validates.
func ParseConfig(data []byte) (*Config, error) {
	var cfg Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty configuration")
		}
		return nil, yamlError(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("more than one YAML document")
	}
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

func (c *Config) setDefaults() {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&c.DataDir, "./sealpost-data")
	def(&c.LogLevel, "info")
	def(&c.Listen.HTTPS, "127.0.0.1:8443")
	def(&c.Listen.SMTP, "127.0.0.1:2525")
	def(&c.Listen.Admin, "127.0.0.1:9090")
	def(&c.KMS.Provider, "local")
	def(&c.Audit.Origin, "sealpost/audit")
	if c.NATS.Replicas == 0 {
		c.NATS.Replicas = 1
	}
	if c.Ingest.MaxBodyBytes == 0 {
		c.Ingest.MaxBodyBytes = 1 << 20
	}
	if c.Audit.Retention == 0 {
		c.Audit.Retention = Duration(395 * 24 * time.Hour)
	}
	if c.Audit.CheckpointEvery == 0 {
		c.Audit.CheckpointEvery = Duration(time.Minute)
	}
	if c.Audit.Witnesses.Timeout == 0 {
		c.Audit.Witnesses.Timeout = Duration(audit.DefaultWitnessTimeout)
	}
	if n := len(c.Audit.Witnesses.List); n > 0 && c.Audit.Witnesses.Quorum == 0 {
		c.Audit.Witnesses.Quorum = n/2 + 1
	}
}

var (
	namePattern  = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	routePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
	hexSHA256    = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// Validate checks the whole configuration and names the first bad key by
// its YAML path.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log_level", "must be debug, info, warn or error, got %q", c.LogLevel)
	}
	for key, addr := range map[string]string{"listen.https": c.Listen.HTTPS, "listen.smtp": c.Listen.SMTP, "listen.admin": c.Listen.Admin, "nats.listen": c.NATS.Listen} {
		if addr == "" || (key == "listen.smtp" && addr == "off") {
			continue
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			bad(key, "must be host:port, got %q", addr)
		}
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		bad("tls", "cert_file and key_file must be set together")
	}
	if c.NATS.URL != "" {
		for _, one := range strings.Split(c.NATS.URL, ",") {
			u, err := url.Parse(strings.TrimSpace(one))
			if err != nil || u.Host == "" || (u.Scheme != "nats" && u.Scheme != "tls" && u.Scheme != "ws" && u.Scheme != "wss") {
				bad("nats.url", "must be a comma-separated list of nats:// (or tls://) URLs, got %q", one)
				break
			}
		}
		if c.NATS.Listen != "" {
			bad("nats.listen", "only applies to the embedded server; remove it or nats.url")
		}
		if c.NATS.SyncInterval != 0 {
			bad("nats.sync_interval", "only applies to the embedded server; an external server has its own sync setting")
		}
		if c.KMS.Provider == "local" && !c.NATS.SingleInstance {
			// Each instance would have its own master key and could not
			// open what the others sealed.
			bad("kms.provider", "must be aws when nats.url is set: instances sharing a queue must share the key-encryption key (or set nats.single_instance: true)")
		}
	} else if c.NATS.Replicas > 1 {
		bad("nats.replicas", "the embedded server is a single node: replicas above 1 need nats.url")
	}
	if c.NATS.SyncInterval < 0 || time.Duration(c.NATS.SyncInterval) > 10*time.Minute {
		bad("nats.sync_interval", "must be 0 (every write) up to 10m, got %s", time.Duration(c.NATS.SyncInterval))
	}
	if c.NATS.Replicas < 1 || c.NATS.Replicas > 5 {
		bad("nats.replicas", "must be 1 to 5, got %d", c.NATS.Replicas)
	}
	switch c.KMS.Provider {
	case "local":
	case "aws":
		if c.KMS.AWS.KeyID == "" {
			bad("kms.aws.key_id", "required when kms.provider is aws")
		}
		if c.KMS.AWS.Endpoint != "" {
			if u, err := url.Parse(c.KMS.AWS.Endpoint); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
				bad("kms.aws.endpoint", "must be an http(s) URL, got %q", c.KMS.AWS.Endpoint)
			}
		}
	default:
		bad("kms.provider", "must be local or aws, got %q", c.KMS.Provider)
	}
	if c.KMS.CacheMaxUses < 0 {
		bad("kms.cache_max_uses", "must not be negative")
	}
	if p := c.Keys.PeriodMonths; p != 0 && (p < 1 || 12%p != 0) {
		bad("keys.period_months", "must divide 12 (1, 2, 3, 4, 6 or 12), got %d", p)
	}
	if c.Ingest.MaxBodyBytes < 1 || c.Ingest.MaxBodyBytes > 4<<20 {
		bad("ingest.max_body_bytes", "must be between 1 and 4194304, got %d", c.Ingest.MaxBodyBytes)
	}
	if c.Ingest.RatePerSecond < 0 || c.Ingest.Burst < 0 {
		bad("ingest", "rate_per_second and burst must not be negative")
	}
	if c.SMTP.MaxMessageBytes < 0 || c.SMTP.MaxMessageBytes > 100<<20 {
		bad("smtp.max_message_bytes", "must be between 0 (default) and 104857600")
	}
	if c.SMTP.MaxRecipients < 0 || c.SMTP.MaxConnsPerIP < 0 || c.SMTP.MaxConns < 0 || c.SMTP.MaxHeaderBytes < 0 ||
		c.SMTP.MaxMIMEDepth < 0 || c.SMTP.MaxMIMEParts < 0 || c.SMTP.InlineAttachmentBytes < 0 {
		bad("smtp", "limits must not be negative")
	}
	if c.SMTP.MaxHeaderBytes > 1<<20 || c.SMTP.MaxMIMEDepth > 100 || c.SMTP.MaxMIMEParts > 10000 || c.SMTP.InlineAttachmentBytes > 512<<10 {
		bad("smtp", "max_header_bytes at most 1 MiB, max_mime_depth at most 100, max_mime_parts at most 10000, inline_attachment_bytes at most 512 KiB")
	}
	if c.Forward.Timeout > Duration(30*time.Second) {
		bad("forward.timeout", "must be at most 30s (a webhook attempt must end well before the queue hands the message to another worker)")
	}
	if c.Forward.Workers < 0 || c.Forward.Workers > 1024 {
		bad("forward.workers", "must be between 0 (default) and 1024")
	}
	if c.Forward.MaxUnacked != 0 && (c.Forward.MaxUnacked < 1000 || c.Forward.MaxUnacked > 10_000_000) {
		bad("forward.max_unacked", "must be 0 (default 250000) or between 1000 and 10000000, got %d", c.Forward.MaxUnacked)
	}
	if c.Forward.BreakerFailures < 0 || c.Forward.BreakerFailures > 1000 {
		bad("forward.breaker_failures", "must be between 0 (default) and 1000")
	}
	if len(c.Forward.Schedule) > 32 {
		bad("forward.schedule", "at most 32 attempts")
	}
	var allowNets []netip.Prefix
	for i, n := range c.Forward.AllowNetworks {
		p, err := netip.ParsePrefix(n)
		if err != nil {
			bad(fmt.Sprintf("forward.allow_networks[%d]", i), "not a CIDR prefix: %q", n)
			continue
		}
		allowNets = append(allowNets, p)
	}
	if c.Audit.Retention < Duration(24*time.Hour) {
		bad("audit.retention", "must be at least 24h")
	}
	if !printable(c.Audit.Origin) || strings.ContainsAny(c.Audit.Origin, " +") || len(c.Audit.Origin) > 255 {
		bad("audit.origin", "must be 1-255 printable characters without spaces or '+'")
	}
	if d := time.Duration(c.Audit.CheckpointEvery); d < time.Second || d > time.Hour {
		bad("audit.checkpoint_every", "must be between 1s and 1h, got %s", d)
	}
	c.validateAuditOutside(bad)
	if c.SMTP.Hostname != "" && (!printable(c.SMTP.Hostname) || strings.ContainsAny(c.SMTP.Hostname, " ") || len(c.SMTP.Hostname) > 253) {
		bad("smtp.hostname", "must be a host name")
	}
	if c.Admin.TokenSHA256 != "" && !hexSHA256.MatchString(c.Admin.TokenSHA256) {
		bad("admin.token_sha256", "must be 64 lowercase hex digits")
	}
	if len(c.Tenants) == 0 {
		bad("tenants", "at least one tenant is required")
	}
	tenants := map[string]bool{}
	keyIDs := map[string]bool{}
	recipients := map[string]bool{}
	for i, t := range c.Tenants {
		tk := fmt.Sprintf("tenants[%d]", i)
		if !namePattern.MatchString(t.Name) {
			bad(tk+".name", "must be 1-63 of a-z, 0-9 and '-', got %q", t.Name)
		} else if tenants[t.Name] {
			bad(tk+".name", "duplicate tenant %q", t.Name)
		}
		tenants[t.Name] = true
		routes := map[string]bool{}
		for j, r := range t.Routes {
			rk := fmt.Sprintf("%s.routes[%d]", tk, j)
			if !routePattern.MatchString(r.Name) {
				bad(rk+".name", "must be 1-63 of a-z, 0-9, '_' and '-', got %q", r.Name)
			} else if routes[r.Name] {
				bad(rk+".name", "duplicate route %q", r.Name)
			}
			routes[r.Name] = true
			if err := validateEndpoint(r.Endpoint, r.AllowHTTP, allowNets); err != nil {
				bad(rk+".endpoint", "%v", err)
			}
			if r.MaxConcurrency < 0 {
				bad(rk+".max_concurrency", "must not be negative")
			}
			for k, rc := range r.Recipients {
				addr := strings.ToLower(rc)
				if at := strings.LastIndexByte(addr, '@'); at < 1 || at == len(addr)-1 || len(addr) > 254 {
					bad(fmt.Sprintf("%s.recipients[%d]", rk, k), "not a mail address")
				}
				if rkey := t.Name + "/" + r.Name + "/" + addr; recipients[rkey] {
					bad(fmt.Sprintf("%s.recipients[%d]", rk, k), "listed twice in the route")
				} else {
					recipients[rkey] = true
				}
			}
			for k, n := range r.AllowedNetworks {
				if _, err := netip.ParsePrefix(n); err != nil {
					bad(fmt.Sprintf("%s.allowed_networks[%d]", rk, k), "not a CIDR prefix: %q", n)
				}
			}
		}
		for j, k := range t.APIKeys {
			kk := fmt.Sprintf("%s.api_keys[%d]", tk, j)
			if !namePattern.MatchString(k.ID) {
				bad(kk+".id", "must be 1-63 of a-z, 0-9 and '-', got %q", k.ID)
			} else if keyIDs[k.ID] {
				bad(kk+".id", "duplicate api key id %q", k.ID)
			}
			keyIDs[k.ID] = true
			if !hexSHA256.MatchString(k.SHA256) {
				bad(kk+".sha256", "must be 64 lowercase hex digits (the SHA-256 of the token)")
			}
			for l, rn := range k.Routes {
				if !routes[rn] {
					bad(fmt.Sprintf("%s.routes[%d]", kk, l), "unknown route %q", rn)
				}
			}
		}
	}
	return errors.Join(errs...)
}

var unknownField = regexp.MustCompile(`field (\S+) not found in type main\.(\S+)`)

// yamlError rewrites the decoder's Go-flavoured messages for operators.
func yamlError(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err
	}
	lines := make([]string, len(te.Errors))
	for i, e := range te.Errors {
		lines[i] = unknownField.ReplaceAllString(e, "unknown key \"$1\" (in $2)")
	}
	return errors.New(strings.Join(lines, "\n"))
}

// validateEndpoint checks a webhook URL with the forwarder's rules. An
// address literal in a blocked range (loopback, private, metadata, ...)
// passes only when forward.allow_networks lists it; names are checked again
// at every connection.
func validateEndpoint(raw string, allowHTTP bool, allow []netip.Prefix) error {
	if raw == "" {
		return errors.New("required")
	}
	err := forwarder.ValidateEndpoint(raw, allowHTTP)
	if errors.Is(err, forwarder.ErrBlockedAddress) {
		u, _ := url.Parse(raw)
		host := u.Hostname()
		if strings.EqualFold(host, "localhost") {
			host = "127.0.0.1"
		}
		if a, perr := netip.ParseAddr(host); perr == nil && !forwarder.Blocked(a, allow) {
			return nil
		}
		return fmt.Errorf("%s is in a range the SSRF guard refuses (add it to forward.allow_networks for development only)", host)
	}
	if err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), "forwarder: "))
	}
	return nil
}

func mustHex32(s string) [32]byte {
	var out [32]byte
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 {
		panic("validated hex sha256 did not decode")
	}
	copy(out[:], b)
	return out
}
