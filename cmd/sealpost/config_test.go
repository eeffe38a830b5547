package main

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files")

// TestConfigsDirectory loads every example configuration shipped in
// configs/: they must stay valid as the code changes.
func TestConfigsDirectory(t *testing.T) {
	files, err := filepath.Glob("../../configs/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 3 {
		t.Fatalf("found %d example configs, want dev, production and nats-cluster", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			if _, err := LoadConfig(f); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestConfigErrors checks that each bad configuration is refused with a
// message naming the bad key. The messages are golden files: operators
// read them.
func TestConfigErrors(t *testing.T) {
	files, err := filepath.Glob("testdata/config/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no test configs")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			_, err := LoadConfig(f)
			if err == nil {
				t.Fatal("accepted")
			}
			golden := strings.TrimSuffix(f, ".yaml") + ".err"
			got := err.Error() + "\n"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("error:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

// TestConfigDefaults checks the defaults a minimal file gets.
func TestConfigDefaults(t *testing.T) {
	cfg, err := ParseConfig([]byte(`
tenants:
  - name: t
    routes:
      - name: r
        endpoint: https://example.com/hook
        recipients: ["r@example.com"]
`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DataDir != "./sealpost-data" || cfg.Listen.HTTPS != "127.0.0.1:8443" || cfg.Listen.SMTP != "127.0.0.1:2525" ||
		cfg.Listen.Admin != "127.0.0.1:9090" || cfg.KMS.Provider != "local" || cfg.Ingest.MaxBodyBytes != 1<<20 || cfg.NATS.Replicas != 1 {
		t.Errorf("defaults: %+v", cfg)
	}
}
