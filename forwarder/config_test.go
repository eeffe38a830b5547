package forwarder

import (
	"strings"
	"testing"
	"time"
)

// TestConfigValidate checks the settings Validate judges without the
// worker's parts: the zero Config takes the defaults and passes.
func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    Config
		want string // substring of the error; "" means valid
	}{
		{"defaults", Config{}, ""},
		{"longest schedule", Config{Schedule: make([]time.Duration, MaxScheduleLen)}, ""},
		{"longest delay", Config{Schedule: []time.Duration{0, MaxScheduleDelay}}, ""},
		{"empty schedule", Config{Schedule: []time.Duration{}}, "schedule must have 1 to 50 entries, got 0"},
		{"schedule too long", Config{Schedule: make([]time.Duration, MaxScheduleLen+1)}, "got 51"},
		{"delay too long", Config{Schedule: []time.Duration{0, MaxScheduleDelay + time.Second}}, "schedule delay 168h0m1s is out of range"},
		{"negative delay", Config{Schedule: []time.Duration{-time.Second}}, "schedule delay -1s is out of range"},
		{"jitter", Config{Jitter: 1}, "jitter 1 must be below 1"},
	} {
		err := tc.c.Validate()
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: Validate() = %v, want %q", tc.name, err, tc.want)
		}
	}
}
