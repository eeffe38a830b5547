package main

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestDependenciesPointOneWay checks that packages which only record
// audit entries or keep keys do not depend on the audit log or the queue:
// they take the entry type from audit/entry and define their own small
// interfaces, which cmd/sealpost satisfies.
func TestDependenciesPointOneWay(t *testing.T) {
	const mod = "github.com/sealpost/sealpost/"
	for pkg, forbidden := range map[string][]string{
		"audit/entry":    {"*"},
		"ingress":        {"*"},
		"ingress/httpin": {"audit", "queue", "keyring"},
		"ingress/smtpin": {"audit", "queue", "keyring"},
		"keyring":        {"audit", "queue"},
		"keyring/kms":    {"*"},
		"forwarder":      {"audit", "keyring"},
	} {
		out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", mod+pkg).Output()
		if err != nil {
			t.Fatalf("go list %s: %v", pkg, err)
		}
		for dep := range strings.FieldsSeq(string(out)) {
			dep, ok := strings.CutPrefix(dep, mod)
			if !ok || dep == pkg {
				continue
			}
			if slices.Contains(forbidden, "*") || slices.Contains(forbidden, dep) {
				t.Errorf("%s imports %s", pkg, dep)
			}
		}
	}
}
