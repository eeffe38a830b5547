package main

import (
	"bufio"
	"os"
	"regexp"
	"strings"
	"testing"
)

// unitSettings reads the [Service] section of a systemd unit: every
// setting's values in order (a key may repeat).
func unitSettings(t *testing.T, file string) map[string][]string {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			section = line
		case section == "[Service]":
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("%s: not a setting: %q", file, line)
			}
			out[k] = append(out[k], v)
		}
	}
	return out
}

// TestSystemdUnit checks the hardening the unit promises: no new
// privileges, a read-only system with only the data dir writable, no
// capabilities, and commands the binary has.
func TestSystemdUnit(t *testing.T) {
	s := unitSettings(t, "../../configs/sealpost.service")
	one := func(k string) string {
		if len(s[k]) == 0 {
			return ""
		}
		return s[k][len(s[k])-1]
	}
	for k, want := range map[string]string{
		"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
		"PrivateDevices": "yes", "RestrictSUIDSGID": "yes", "CapabilityBoundingSet": "", "AmbientCapabilities": "",
		"StateDirectory": "sealpost", "User": "sealpost",
	} {
		if got := s[k]; len(got) == 0 || one(k) != want {
			t.Errorf("%s=%q, want %q", k, got, want)
		}
	}
	data := strings.TrimPrefix(one("Environment"), "SEALPOST_DATA=")
	if data != "/var/lib/sealpost" || !strings.Contains(one("ReadWritePaths"), data) {
		t.Errorf("data dir %q is not among ReadWritePaths %q", data, one("ReadWritePaths"))
	}
	for _, k := range []string{"ExecStartPre", "ExecStart"} {
		args := strings.Fields(one(k))
		if len(args) < 2 || args[0] != "/usr/local/bin/sealpost" {
			t.Fatalf("%s=%q", k, one(k))
		}
		if code, out, errs := runCLI(args[1], "-h"); code != exitOK {
			t.Errorf("%s runs %q, which is not a command: %s%s", k, args[1], out, errs)
		}
	}
}

// TestDockerfile checks that the image's health check runs a command the
// binary has, and that the data volume is the data dir, owned by the
// non-root user the image runs as.
func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := strings.ReplaceAll(string(b), "\\\n", " ")
	hc := regexp.MustCompile(`(?m)^HEALTHCHECK .*CMD \["/usr/local/bin/sealpost", "([a-z-]+)"`).FindStringSubmatch(df)
	if hc == nil {
		t.Fatal("no HEALTHCHECK running /usr/local/bin/sealpost")
	}
	if code, out, errs := runCLI(hc[1], "-h"); code != exitOK {
		t.Errorf("HEALTHCHECK runs %q, which is not a command: %s%s", hc[1], out, errs)
	}
	for _, want := range []string{
		`VOLUME ["/var/lib/sealpost"]`,
		`ENV SEALPOST_DATA=/var/lib/sealpost`,
		`USER nonroot:nonroot`,
		`COPY --from=build --chown=65532:65532 --chmod=0700 /out/data /var/lib/sealpost`,
	} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %s", want)
		}
	}
	if strings.Index(df, "/out/data /var/lib/sealpost") > strings.Index(df, "VOLUME") {
		t.Error("the data dir must be created before VOLUME, or a new volume does not get its owner")
	}
}
