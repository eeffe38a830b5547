package forwarder

import (
	"errors"
	"strings"
	"testing"
)

// TestNameChecks checks tenants and routes against the ingress name rule
// and receipt ids against the looser token rule.
func TestNameChecks(t *testing.T) {
	for _, tc := range []struct {
		check func(string) error
		s     string
		ok    bool
	}{
		{checkTenant, "acme", true},
		{checkTenant, "Acme", false},
		{checkTenant, "ac_me", false},
		{checkTenant, "acme.eu", false},
		{checkTenant, "", false},
		{checkRoute, "in_voices", true},
		{checkRoute, "invoices>", false},
		{checkRoute, strings.Repeat("r", 64), false},
		{checkID, "rcpt_01JD7ZK3M4N5P6Q7R8S9T0V1W2", true},
		{checkID, "rcpt_01JD7.*", false},
		{checkID, strings.Repeat("x", 128), true},
		{checkID, strings.Repeat("x", 129), false},
		{checkID, "", false},
	} {
		err := tc.check(tc.s)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrInvalidInput)) {
			t.Errorf("check(%q) = %v, want ok %t", tc.s, err, tc.ok)
		}
	}
}
