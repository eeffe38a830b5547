package keyring

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sealpost/sealpost/audit/entry"
	"github.com/sealpost/sealpost/keyring/kms"
)

// Sealer seals and opens private keys. *kms.Envelope implements it.
type Sealer interface {
	Seal(ctx context.Context, c kms.Context, p []byte) ([]byte, error)
	Open(ctx context.Context, c kms.Context, s []byte) ([]byte, error)
}

// Auditor records key rotations and revocations in the audit log.
type Auditor interface {
	Append(ctx context.Context, e entry.Entry) error
}

// SystemTenant is the encryption-context tenant of sealpost's own secrets,
// the signing keys among them.
const SystemTenant = "_system"

// Defaults of Config.
const (
	DefaultPeriodMonths  = 3
	DefaultPrePublish    = 14 * 24 * time.Hour
	DefaultGrace         = 90 * 24 * time.Hour
	DefaultCheckInterval = time.Minute
)

// Bounds of Config.
const (
	// MinPrePublish and MinGrace keep a receiver with a cached JWKS (cached
	// at most MaxJWKSAge) able to verify across a rotation.
	MinPrePublish = 2 * MaxJWKSAge
	MinGrace      = 2 * MaxJWKSAge
	// MaxGrace bounds how long a retired key stays published.
	MaxGrace = 10 * 365 * 24 * time.Hour
	// MinCheckInterval and MaxCheckInterval bound Config.CheckInterval.
	MinCheckInterval = 10 * time.Millisecond
	MaxCheckInterval = time.Hour
)

// MaxJWKSAge is the longest max-age the JWKS handler ever sends. A revocation
// reaches every receiver that honours Cache-Control within it.
const MaxJWKSAge = time.Hour

// Config configures a Keyring.
type Config struct {
	// Store holds the shared key state (the KEYRING bucket). Required.
	Store Store
	// Sealer seals the private keys. Required.
	Sealer Sealer
	// Auditor receives key.rotate and key.revoke entries. Optional.
	Auditor Auditor
	// Logger receives rotation events. Default: discard.
	Logger *slog.Logger
	// Registerer receives the sealpost_keyring_* metrics. Optional.
	Registerer prometheus.Registerer

	// PeriodMonths is the length of a signing period in calendar months;
	// periods start on the first day of a month at 00:00 UTC, aligned to the
	// start of the year. Default 3 (calendar quarters); must divide 12.
	PeriodMonths int
	// PrePublish is how long before it starts signing a key is published in
	// the JWKS. Default 14 days; at least 2h and shorter than the shortest
	// period (28 days times PeriodMonths).
	PrePublish time.Duration
	// Grace is how long a key stays in the JWKS after it stops signing.
	// Default 90 days; at least 2h, at most 10 years.
	Grace time.Duration

	// Now returns the current time. Default time.Now.
	Now func() time.Time
	// CheckInterval is how often Run re-reads the state and creates keys
	// that are due. Default 1m; between 10ms and 1h.
	CheckInterval time.Duration
	// Rand is the source of new private keys. Default crypto/rand. Tests
	// set it to get reproducible keys.
	Rand io.Reader
}

// Validate checks c's settings: PeriodMonths, PrePublish, Grace and
// CheckInterval, a zero value standing for its default. It does not look at
// Store and Sealer, which New requires as well. Its errors name the
// setting; New's add "keyring: config:".
func (c Config) Validate() error {
	c = c.settingDefaults()
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.PeriodMonths < 1 || 12%c.PeriodMonths != 0 {
		bad("period must divide 12 months (1, 2, 3, 4, 6 or 12), got %d", c.PeriodMonths)
	}
	if shortest := time.Duration(max(c.PeriodMonths, 1)) * 28 * 24 * time.Hour; c.PrePublish < MinPrePublish || c.PrePublish >= shortest {
		bad("pre-publication must be at least %s and shorter than the shortest period (%s), got %s", MinPrePublish, shortest, c.PrePublish)
	}
	if c.Grace < MinGrace || c.Grace > MaxGrace {
		bad("grace must be between %s and %s, got %s", MinGrace, MaxGrace, c.Grace)
	}
	if c.CheckInterval < MinCheckInterval || c.CheckInterval > MaxCheckInterval {
		bad("check interval must be between %s and %s, got %s", MinCheckInterval, MaxCheckInterval, c.CheckInterval)
	}
	return errors.Join(errs...)
}

// settingDefaults fills in the defaults of c's settings.
func (c Config) settingDefaults() Config {
	if c.PeriodMonths == 0 {
		c.PeriodMonths = DefaultPeriodMonths
	}
	if c.PrePublish == 0 {
		c.PrePublish = DefaultPrePublish
	}
	if c.Grace == 0 {
		c.Grace = DefaultGrace
	}
	if c.CheckInterval == 0 {
		c.CheckInterval = DefaultCheckInterval
	}
	return c
}

// withDefaults validates c and fills in its defaults.
func (c Config) withDefaults() (Config, error) {
	var errs []error
	if c.Store == nil {
		errs = append(errs, errors.New("store is required"))
	}
	if c.Sealer == nil {
		errs = append(errs, errors.New("sealer is required"))
	}
	if err := c.Validate(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return c, fmt.Errorf("keyring: config: %w", errors.Join(errs...))
	}
	c = c.settingDefaults()
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c, nil
}

// periodStart returns the start of the period that contains t.
func periodStart(t time.Time, months int) time.Time {
	t = t.UTC()
	m := (int(t.Month())-1)/months*months + 1
	return time.Date(t.Year(), time.Month(m), 1, 0, 0, 0, 0, time.UTC)
}

// nextBoundary returns the first period boundary strictly after t.
func nextBoundary(t time.Time, months int) time.Time {
	return periodStart(t, months).AddDate(0, months, 0)
}

// ceilSecond rounds t up to a whole second, in UTC. Every time the keyring
// sets is a whole second, so JWK NumericDates are integers; rotations and
// revocations round up, so they never move a window into the past.
func ceilSecond(t time.Time) time.Time {
	t = t.UTC()
	if u := t.Truncate(time.Second); !u.Equal(t) {
		return u.Add(time.Second)
	}
	return t
}
