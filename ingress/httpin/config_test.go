package httpin_test

import (
	"strings"
	"testing"
	"time"

	"github.com/sealpost/sealpost/ingress/httpin"
)

// TestConfigValidate checks the settings Validate judges without the
// handler's parts: the zero Config takes the defaults and passes.
func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    httpin.Config
		want string // substring of the error; "" means valid
	}{
		{"defaults", httpin.Config{}, ""},
		{"largest body", httpin.Config{MaxBodyBytes: httpin.MaxMaxBodyBytes}, ""},
		{"body too large", httpin.Config{MaxBodyBytes: httpin.MaxMaxBodyBytes + 1}, "max body bytes must be between 1 and 4194304"},
		{"negative body", httpin.Config{MaxBodyBytes: -1}, "max body bytes"},
		{"negative rate", httpin.Config{RatePerSecond: -1}, "must not be negative"},
		{"negative burst", httpin.Config{Burst: -1}, "must not be negative"},
		{"negative retry after", httpin.Config{RetryAfter: -time.Second}, "retry after"},
	} {
		err := tc.c.Validate()
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: Validate() = %v, want %q", tc.name, err, tc.want)
		}
	}
}
