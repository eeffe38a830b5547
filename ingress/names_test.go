package ingress

import (
	"regexp"
	"strings"
	"testing"
)

// The rules as regular expressions, the form they had before they were
// written out by hand: the reference the fuzz test holds ValidName and
// ValidRoute to.
var (
	namePattern  = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	routePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
)

func TestValidName(t *testing.T) {
	for _, tc := range []struct {
		s           string
		name, route bool
	}{
		{"acme", true, true},
		{"a", true, true},
		{"0", true, true},
		{"acme-eu-1", true, true},
		{"a-", true, true},
		{"in_voices", false, true},
		{"invoices_", false, true},
		{"", false, false},
		{"-acme", false, false},
		{"_acme", false, false},
		{"Acme", false, false},
		{"acme.eu", false, false},
		{"acme eu", false, false},
		{"acme*", false, false},
		{"acme>", false, false},
		{"åcme", false, false},
		{strings.Repeat("a", 63), true, true},
		{strings.Repeat("a", 64), false, false},
	} {
		if got := ValidName(tc.s); got != tc.name {
			t.Errorf("ValidName(%q) = %t, want %t", tc.s, got, tc.name)
		}
		if got := ValidRoute(tc.s); got != tc.route {
			t.Errorf("ValidRoute(%q) = %t, want %t", tc.s, got, tc.route)
		}
	}
}

func FuzzValidName(f *testing.F) {
	for _, s := range []string{"acme", "in_voices", "-a", "A", "a.b", strings.Repeat("z", 64), ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := ValidName(s), namePattern.MatchString(s); got != want {
			t.Errorf("ValidName(%q) = %t, the rule says %t", s, got, want)
		}
		if got, want := ValidRoute(s), routePattern.MatchString(s); got != want {
			t.Errorf("ValidRoute(%q) = %t, the rule says %t", s, got, want)
		}
	})
}
