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
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/sealpost/sealpost/audit"
	"github.com/sealpost/sealpost/forwarder"
	"github.com/sealpost/sealpost/ingress"
	"github.com/sealpost/sealpost/ingress/httpin"
	"github.com/sealpost/sealpost/ingress/smtpin"
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
	// Retention is how long tenant data (receipts, attempt records, dead
	// letters, attachments) is kept when neither the tenant nor the route
	// says. Default 720h (30 days); at least 1s, at most 8784h (366 days).
	// The audit log has its own (audit.retention).
	Retention Duration `yaml:"retention"`
	// Backup writes sealed snapshots to S3-compatible storage. Optional:
	// without backup.bucket there are no scheduled backups.
	Backup BackupConfig `yaml:"backup"`
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
	// Listen opens the embedded server's client port (host:port, port -1
	// for any free one) so other instances and tools can connect. Default:
	// no port.
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
	// MaxConnsPerIP concurrently, per IPv4 address or IPv6 /64. Default 20.
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
	// MaxJunkCommands in a row that move no message forward (NOOP, RSET,
	// refused RCPT, ...); one more closes the connection (421). Default 20.
	MaxJunkCommands int `yaml:"max_junk_commands"`
	// MaxSessionTime bounds a connection from its start (421 then).
	// Default 30m; 1m to 24h, at least data_timeout.
	MaxSessionTime Duration `yaml:"max_session_time"`
	// Auth: "on" (default) checks SPF, DKIM and DMARC of every message;
	// "off" makes no DNS lookups and records "skipped" (--dev's setting).
	Auth string `yaml:"auth"`
	// DNS of the SPF, DKIM and DMARC lookups; see mail_config.go.
	DNS SMTPDNSConfig `yaml:"dns"`
	// MTASTS publishes an MTA-STS policy. Optional; see mail_config.go.
	MTASTS SMTPMTASTSConfig `yaml:"mta_sts"`
	// TLSRPT takes TLS-RPT reports. Optional; see mail_config.go.
	TLSRPT SMTPTLSRPTConfig `yaml:"tls_rpt"`
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
	// [0s, 5s, 5m, 30m, 2h, 5h, 10h, 10h], each with ±20% jitter. At most
	// 50 entries, each at most 168h.
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
	// Origin names the log in signed checkpoints. Default "sealpost/audit";
	// at most 255 bytes, without spaces, control characters or '+'.
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

// AdminConfig protects the admin API. Operators with their own tokens
// and roles are added through the API (sealpost operator new); this file
// holds the bootstrap token and the identity provider.
type AdminConfig struct {
	// TokenSHA256 is the hex SHA-256 of the bootstrap admin token
	// (`sealpost apikey new --admin` prints one): an operator "admin" with
	// the admin role. Optional; without it, and without operators or SSO,
	// the admin API is disabled.
	TokenSHA256 string `yaml:"token_sha256"`
	// SSO accepts an identity provider's signed tokens (JWT) on the admin
	// API. Optional.
	SSO SSOConfig `yaml:"sso"`
}

// SSOConfig names an identity provider whose JWTs open the admin API.
// Hardware keys and MFA stay at the provider.
type SSOConfig struct {
	// Issuer must equal each token's iss. Required to enable SSO.
	Issuer string `yaml:"issuer"`
	// Audience must be (one of) each token's aud. Required with issuer.
	Audience string `yaml:"audience"`
	// JWKSURL is the provider's key set (EdDSA, ES256 or RS256 keys):
	// https, or http to a loopback address. Required with issuer. Fetched
	// every 10 minutes, and on an unknown key id at most every 30s.
	JWKSURL string `yaml:"jwks_url"`
	// RoleClaim names the claim holding the caller's role(s). Default
	// "sealpost_role".
	RoleClaim string `yaml:"role_claim"`
	// Roles maps the claim's values to viewer, operator or admin. Default:
	// the values are the role names.
	Roles map[string]string `yaml:"roles"`
	// SubjectClaim names who the caller is in audit entries ("sso:<it>").
	// Default "sub".
	SubjectClaim string `yaml:"subject_claim"`
}

// TenantConfig is one customer.
type TenantConfig struct {
	// Name: 1-63 of a-z, 0-9 and '-'. Required, unique.
	Name    string         `yaml:"name"`
	APIKeys []APIKeyConfig `yaml:"api_keys"`
	Routes  []RouteConfig  `yaml:"routes"`
	// Retention of the tenant's data (e.g. "168h" for 7 days). Default:
	// the top-level retention. Same bounds.
	Retention Duration `yaml:"retention"`
}

// APIKeyConfig is a tenant's API key, kept only as a hash.
type APIKeyConfig struct {
	// ID: the public part of the token "sp_<id>_<secret>". Required, unique.
	ID string `yaml:"id"`
	// SHA256: hex SHA-256 of the whole token. Required.
	SHA256 string `yaml:"sha256"`
	// Routes the key may post to; empty means all of the tenant's routes.
	// Used only without scopes.
	Routes []string `yaml:"routes"`
	// Scopes of the key: ingest:<route>, ingest:*, receipts:read,
	// endpoints:write, audit:read. Default: ingest on routes (or every
	// route), receipts:read and endpoints:write, and audit:read for a key
	// of every route. A key whose ingest scopes name routes reaches only
	// those routes' receipts and endpoints.
	Scopes []string `yaml:"scopes"`
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
	// instance. Default 16.
	MaxConcurrency int `yaml:"max_concurrency"`
	// Recipients: mail addresses routed here by the SMTP ingress. Optional.
	Recipients []string `yaml:"recipients"`
	// AllowedSenderDomains limits MAIL FROM domains. Optional.
	AllowedSenderDomains []string `yaml:"allowed_sender_domains"`
	// AllowedNetworks limits SMTP client addresses (CIDR). Optional.
	AllowedNetworks []string `yaml:"allowed_networks"`
	// RequireDKIM refuses mail without a passing DKIM signature. Default false.
	RequireDKIM bool `yaml:"require_dkim"`
	// Retention of this route's receipts, attempt records and dead
	// letters. Default: the tenant's. Same bounds.
	Retention Duration `yaml:"retention"`
}

// BackupConfig schedules backups. Credentials come from the standard AWS
// chain (environment, shared config, instance role).
type BackupConfig struct {
	// S3 is where snapshots go. Its bucket is required to enable backups.
	S3 S3Config `yaml:"s3"`
	// Copy is a second bucket (another region or provider) that gets
	// every object too. Optional.
	Copy S3Config `yaml:"copy"`
	// Every is the time between scheduled backups inside serve. Default
	// 1h; "0s" turns the schedule off (backups then run only on request).
	// At least 1m.
	Every *Duration `yaml:"every"`
	// Keep is how long snapshots are kept before they are pruned. Default
	// 720h (30 days); at least 1h.
	Keep Duration `yaml:"keep"`
	// MinKeep snapshots are never pruned, however old. Default 3.
	MinKeep int `yaml:"min_keep"`
	// Checkpoints is a bucket with S3 Object Lock that gets every signed
	// audit checkpoint a backup records, write-once. Optional.
	Checkpoints CheckpointsConfig `yaml:"checkpoints"`
}

// S3Config names an S3-compatible bucket.
type S3Config struct {
	// Bucket name. Required for the location to be used.
	Bucket string `yaml:"bucket"`
	// Prefix of every object key, e.g. "sealpost/". Optional.
	Prefix string `yaml:"prefix"`
	// Region, e.g. "eu-central-1". Required unless set in the environment.
	Region string `yaml:"region"`
	// Endpoint overrides the S3 URL (MinIO, Ceph, tests). Optional.
	Endpoint string `yaml:"endpoint"`
	// PathStyle puts the bucket in the URL path, as most S3-compatible
	// servers need. Default false.
	PathStyle bool `yaml:"path_style"`
}

// CheckpointsConfig is the write-once location of audit checkpoints.
type CheckpointsConfig struct {
	S3 S3Config `yaml:"s3"`
	// Retain is how long each checkpoint is locked. Default 9600h (400 days).
	Retain Duration `yaml:"retain"`
	// Mode is COMPLIANCE (default) or GOVERNANCE.
	Mode string `yaml:"mode"`
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
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty configuration")
		}
		return nil, yamlError(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("more than one YAML document")
	}
	if unknown := unknownKeys(&doc, reflect.TypeFor[Config](), ""); len(unknown) > 0 {
		return nil, errors.Join(unknown...)
	}
	// Strict again as a backstop: anything the walk above missed is still
	// an error, not silently ignored.
	strict := yaml.NewDecoder(bytes.NewReader(data))
	strict.KnownFields(true)
	if err := strict.Decode(&cfg); err != nil {
		return nil, yamlError(err)
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
	if c.Retention == 0 {
		c.Retention = Duration(defaultRetention)
	}
	if c.Backup.Every == nil {
		d := Duration(time.Hour)
		c.Backup.Every = &d
	}
	if c.Backup.Keep == 0 {
		c.Backup.Keep = Duration(30 * 24 * time.Hour)
	}
	if c.Backup.MinKeep == 0 {
		c.Backup.MinKeep = 3
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

// Retention bounds.
const (
	defaultRetention = 30 * 24 * time.Hour
	maxRetention     = 366 * 24 * time.Hour
)

var (
	hexSHA256 = regexp.MustCompile(`^[0-9a-f]{64}$`)
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
	for key, addr := range map[string]string{"listen.https": c.Listen.HTTPS, "listen.smtp": c.Listen.SMTP, "listen.admin": c.Listen.Admin} {
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
	if c.NATS.URL != "" && c.KMS.Provider == "local" && !c.NATS.SingleInstance {
		// Each instance would have its own master key and could not
		// open what the others sealed.
		bad("kms.provider", "must be aws when nats.url is set: instances sharing a queue must share the key-encryption key (or set nats.single_instance: true)")
	}
	switch c.KMS.Provider {
	case "local", "aws":
	default:
		bad("kms.provider", "must be local or aws, got %q", c.KMS.Provider)
	}
	// The components judge their own settings: serve refuses what they
	// refuse, so check-config must too.
	c.validateComponents(bad)
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
	var allowNets []netip.Prefix
	for i, n := range c.Forward.AllowNetworks {
		p, err := netip.ParsePrefix(n)
		if err != nil {
			bad(fmt.Sprintf("forward.allow_networks[%d]", i), "not a CIDR prefix: %q", n)
			continue
		}
		allowNets = append(allowNets, p)
	}
	c.validateMail(bad)
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
	if s := c.Admin.SSO; s.Issuer != "" || s.Audience != "" || s.JWKSURL != "" || s.RoleClaim != "" || s.SubjectClaim != "" || len(s.Roles) > 0 {
		if s.Issuer == "" || s.Audience == "" || s.JWKSURL == "" {
			bad("admin.sso", "issuer, audience and jwks_url are required together")
		}
		if u, err := url.Parse(s.JWKSURL); s.JWKSURL != "" && (err != nil || u.Host == "" || (u.Scheme != "https" && !(u.Scheme == "http" && isLoopbackHost(u.Hostname())))) {
			bad("admin.sso.jwks_url", "must be https (http only to a loopback address)")
		}
		for v, r := range s.Roles {
			if r != "viewer" && r != "operator" && r != "admin" {
				bad("admin.sso.roles."+v, "must be viewer, operator or admin, got %q", r)
			}
		}
	}
	if len(c.Tenants) == 0 {
		bad("tenants", "at least one tenant is required")
	}
	checkRetention := func(key string, d Duration) {
		if d != 0 && (d < Duration(time.Second) || d > Duration(maxRetention)) {
			bad(key, "must be between 1s and 8784h (366 days), got %s", time.Duration(d))
		}
	}
	checkRetention("retention", c.Retention)
	c.Backup.validate(bad)
	tenants := map[string]bool{}
	keyIDs := map[string]bool{}
	recipients := map[string]string{} // address -> the YAML path of its route
	for i, t := range c.Tenants {
		tk := fmt.Sprintf("tenants[%d]", i)
		if !ingress.ValidName(t.Name) {
			bad(tk+".name", "must be %s, got %q", ingress.NameRule, t.Name)
		} else if tenants[t.Name] {
			bad(tk+".name", "duplicate tenant %q", t.Name)
		}
		tenants[t.Name] = true
		checkRetention(tk+".retention", t.Retention)
		routes := map[string]bool{}
		for j, r := range t.Routes {
			rk := fmt.Sprintf("%s.routes[%d]", tk, j)
			if !ingress.ValidRoute(r.Name) {
				bad(rk+".name", "must be %s, got %q", ingress.RouteRule, r.Name)
			} else if routes[r.Name] {
				bad(rk+".name", "duplicate route %q", r.Name)
			}
			routes[r.Name] = true
			checkRetention(rk+".retention", r.Retention)
			if err := forwarder.CheckEndpointURL(r.Endpoint, r.AllowHTTP, allowNets); err != nil {
				bad(rk+".endpoint", "%v", err)
			}
			if r.MaxConcurrency < 0 {
				bad(rk+".max_concurrency", "must not be negative")
			}
			for k, rc := range r.Recipients {
				addr := strings.ToLower(rc)
				if !smtpin.ValidAddress(rc) {
					bad(fmt.Sprintf("%s.recipients[%d]", rk, k), "not a mail address")
				}
				// The SMTP ingress routes an address to exactly one route.
				switch other, dup := recipients[addr]; {
				case dup && other == rk:
					bad(fmt.Sprintf("%s.recipients[%d]", rk, k), "listed twice in the route")
				case dup:
					bad(fmt.Sprintf("%s.recipients[%d]", rk, k), "already a recipient of %s", other)
				default:
					recipients[addr] = rk
				}
			}
			for k, d := range r.AllowedSenderDomains {
				if !smtpin.ValidSenderDomain(d) {
					bad(fmt.Sprintf("%s.allowed_sender_domains[%d]", rk, k), "not a domain: %q", d)
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
			if !ingress.ValidName(k.ID) {
				bad(kk+".id", "must be %s, got %q", ingress.NameRule, k.ID)
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
			if k.Scopes != nil {
				if len(k.Routes) > 0 {
					bad(kk+".routes", "not with scopes: name routes as ingest:<route> scopes")
				}
				if err := httpin.CheckScopes(k.Scopes); err != nil {
					bad(kk+".scopes", "%v", err)
				}
				for l, sc := range k.Scopes {
					if rn, ok := strings.CutPrefix(sc, httpin.ScopeIngestPrefix); ok && rn != "*" && !routes[rn] {
						bad(fmt.Sprintf("%s.scopes[%d]", kk, l), "unknown route %q", rn)
					}
				}
			}
		}
	}
	return errors.Join(errs...)
}

// unknownKeys walks a YAML node against the Go type it decodes into and
// returns one error per key that type does not have, named by its YAML
// path ("tenants[0].routes[0].secrets") and line.
func unknownKeys(n *yaml.Node, t reflect.Type, path string) []error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch n.Kind {
	case yaml.DocumentNode:
		var errs []error
		for _, c := range n.Content {
			errs = append(errs, unknownKeys(c, t, path)...)
		}
		return errs
	case yaml.AliasNode:
		return unknownKeys(n.Alias, t, path)
	}
	if reflect.PointerTo(t).Implements(reflect.TypeFor[yaml.Unmarshaler]()) {
		return nil // decodes itself (Duration)
	}
	join := func(key string) string {
		if path == "" {
			return key
		}
		return path + "." + key
	}
	var errs []error
	switch {
	case t.Kind() == reflect.Struct && n.Kind == yaml.MappingNode:
		fields := map[string]reflect.Type{}
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if f.IsExported() && name != "" && name != "-" {
				fields[name] = f.Type
			}
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Tag == "!!merge" {
				errs = append(errs, unknownKeys(v, t, path)...)
				continue
			}
			ft, ok := fields[k.Value]
			if !ok {
				errs = append(errs, fmt.Errorf("%s: unknown key (line %d)", join(k.Value), k.Line))
				continue
			}
			errs = append(errs, unknownKeys(v, ft, join(k.Value))...)
		}
	case t.Kind() == reflect.Slice && n.Kind == yaml.SequenceNode:
		for i, c := range n.Content {
			errs = append(errs, unknownKeys(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i))...)
		}
	case t.Kind() == reflect.Map && n.Kind == yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			errs = append(errs, unknownKeys(n.Content[i+1], t.Elem(), join(n.Content[i].Value))...)
		}
	}
	return errs
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

// isLoopbackHost reports whether host is a loopback address or localhost.
func isLoopbackHost(host string) bool {
	a, err := netip.ParseAddr(host)
	return host == "localhost" || (err == nil && a.IsLoopback())
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

// requiredMaxPayload is the smallest NATS max_payload that cfg works with:
// a body at the ingest limit must fit one queue message once wrapped
// (base64 for non-JSON bodies, the submission's other members, sealing,
// bundle framing). Mail larger than a message is stored in parts and
// needs no more.
func requiredMaxPayload(cfg *Config) int64 {
	return cfg.Ingest.MaxBodyBytes*4/3 + 64<<10
}

// payloadSetting writes n bytes as a nats-server.conf size, rounded up to
// whole MiB.
func payloadSetting(n int64) string {
	return strconv.FormatInt((n+1<<20-1)>>20, 10) + "MB"
}

// validate checks the backup settings.
func (b *BackupConfig) validate(bad func(key, format string, args ...any)) {
	for _, loc := range []struct {
		key string
		s3  S3Config
	}{{"backup.s3", b.S3}, {"backup.copy", b.Copy}, {"backup.checkpoints.s3", b.Checkpoints.S3}} {
		key, s3 := loc.key, loc.s3
		if s3.Bucket == "" {
			if s3 != (S3Config{}) {
				bad(key+".bucket", "required when %s is set", key)
			}
			continue
		}
		if len(s3.Bucket) < 3 || len(s3.Bucket) > 63 || strings.ContainsAny(s3.Bucket, "/ ") {
			bad(key+".bucket", "must be a bucket name (3-63 characters)")
		}
		if s3.Endpoint != "" {
			if u, err := url.Parse(s3.Endpoint); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
				bad(key+".endpoint", "must be an http(s) URL, got %q", s3.Endpoint)
			}
		}
		if len(s3.Prefix) > 256 || strings.HasPrefix(s3.Prefix, "/") {
			bad(key+".prefix", "at most 256 characters, not starting with '/'")
		}
	}
	if b.S3.Bucket == "" && (b.Copy.Bucket != "" || b.Checkpoints.S3.Bucket != "") {
		bad("backup.s3.bucket", "required when backup.copy or backup.checkpoints is set")
	}
	if b.Every != nil && *b.Every != 0 && *b.Every < Duration(time.Minute) {
		bad("backup.every", "must be 0s (no schedule) or at least 1m")
	}
	if b.Keep < Duration(time.Hour) {
		bad("backup.keep", "must be at least 1h")
	}
	if b.MinKeep < 1 || b.MinKeep > 1000 {
		bad("backup.min_keep", "must be between 1 and 1000")
	}
	switch b.Checkpoints.Mode {
	case "", "COMPLIANCE", "GOVERNANCE":
	default:
		bad("backup.checkpoints.mode", "must be COMPLIANCE or GOVERNANCE")
	}
}
