package forwarder

import (
	"context"
	"encoding/json"
	"flag"
	"net/http"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if string(got) != string(want) {
		t.Errorf("%s differs from the golden file:\ngot:\n%s\nwant:\n%s", name, got, want)
	}
}

// TestAttemptsGolden fixes the attempts listing customers read: a 429 with
// Retry-After, a 500, a redirect, then a 2xx, on a controllable clock.
func TestAttemptsGolden(t *testing.T) {
	c := newClock()
	e := newEnv(t, func(cfg *Config) { cfg.Now = c.now })
	answers := []func(w http.ResponseWriter){
		func(w http.ResponseWriter) { w.Header().Set("Retry-After", "60"); w.WriteHeader(429) },
		func(w http.ResponseWriter) { w.WriteHeader(500) },
		func(w http.ResponseWriter) {
			w.Header().Set("Location", "https://elsewhere.example/")
			w.WriteHeader(302)
		},
		func(w http.ResponseWriter) { w.WriteHeader(202) },
	}
	rc := newReceiver(t, func(w http.ResponseWriter, _ *http.Request, n int) { answers[n-1](w) })
	e.route("invoices", rc, nil)
	s := submission(t, "invoices")
	s.ID = "rcpt_01JD7ZZZZZZZZZZZZZZZZZZZZZ"
	runSchedule(t, e, c, s, 10)
	as, err := e.w.Attempts(context.Background(), "acme", s.ID)
	if err != nil {
		t.Fatal(err)
	}
	for i := range as {
		as[i].LatencyMS = 0 // the one thing that is not deterministic
	}
	out, err := json.MarshalIndent(struct {
		ID       string    `json:"id"`
		Attempts []Attempt `json:"attempts"`
	}{s.ID, as}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "attempts.json", append(out, '\n'))
}
