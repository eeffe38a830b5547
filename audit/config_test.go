package audit

import (
	"strings"
	"testing"
	"time"
)

// TestConfigValidate checks the settings Validate judges without the
// connection and keys Open needs.
func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    Config
		want string // substring of the error; "" means valid
	}{
		{"zero", Config{}, ""},
		{"origin", Config{Origin: "sealpost.example/audit", Retention: MinRetention}, ""},
		{"origin with a space", Config{Origin: "sealpost audit"}, "origin"},
		{"origin with a plus", Config{Origin: "sealpost+audit"}, "origin"},
		{"origin too long", Config{Origin: strings.Repeat("a", 256)}, "at most 255 bytes"},
		{"short retention", Config{Retention: 23 * time.Hour}, "retention must be at least 24h"},
		{"negative batch delay", Config{BatchDelay: -1}, "batch delay"},
		{"witness quorum", Config{Witnesses: &WitnessPolicy{Quorum: 1}}, "witnesses"},
	} {
		err := tc.c.Validate()
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: Validate() = %v, want %q", tc.name, err, tc.want)
		}
	}
}
