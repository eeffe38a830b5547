package main

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

var vkeyPattern = regexp.MustCompile(`witness\.test/w\d\+[0-9a-f]{8}\+\S+`)

// keygen makes a witness key in dir and returns the key file and vkey.
func keygen(t *testing.T, dir, name string) (string, string) {
	t.Helper()
	file := filepath.Join(dir, strings.ReplaceAll(name, "/", "_")+".key")
	out, err := runCmd("witness", "keygen", "--name", name, "--key", file)
	vkey := vkeyPattern.FindString(out)
	if err != nil || vkey == "" {
		t.Fatalf("witness keygen: %v\n%s", err, out)
	}
	return file, vkey
}

// TestWitnessedGateway runs `sealpost witness` next to a gateway that
// lists it: checkpoints carry its cosignature, receipt proofs verify with
// the witness quorum required (and fail with another witness's key), and
// the monitor and audit verify require the quorum too.
func TestWitnessedGateway(t *testing.T) {
	dir := t.TempDir()
	keyFile, vkey := keygen(t, dir, "witness.test/w1")
	if out, err := runCmd("witness", "keygen", "--name", "witness.test/w1", "--key", keyFile); err == nil {
		t.Fatalf("keygen replaced an existing key:\n%s", out)
	}
	_, otherVKey := keygen(t, dir, "witness.test/w2")
	stateFile, logKeys := filepath.Join(dir, "w.state"), filepath.Join(dir, "log-keys.json")

	ctx, cancel := context.WithCancel(context.Background())
	stdout := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"witness", "serve", "--key", keyFile, "--state", stateFile, "--listen", "127.0.0.1:0",
			"--log", "sealpost/audit=" + logKeys}, func(string) string { return "" }, stdout, &syncBuffer{})
	}()
	t.Cleanup(func() { cancel(); <-done })
	listening := regexp.MustCompile(`listening on (http://\S+)`)
	var url string
	for deadline := time.Now().Add(20 * time.Second); url == ""; time.Sleep(10 * time.Millisecond) {
		if m := listening.FindStringSubmatch(stdout.String()); m != nil {
			url = m[1]
		}
		if time.Now().After(deadline) {
			t.Fatalf("witness did not start: %s", stdout.String())
		}
	}

	rcv := newReceiver(t)
	extra := "audit:\n  checkpoint_every: 1s\n  witnesses:\n    quorum: 1\n    list:\n      - url: " + url + "\n        vkey: " + vkey + "\n"
	g := startGateway(t, gatewayOpts{endpoint: rcv.url(), extra: extra})
	// The witness learns the log's keys from a saved key history.
	_, history := g.get("/v1/keys")
	must(t, os.WriteFile(logKeys, history, 0o600))
	code, doc, _ := g.ingest("invoices", `{"w":1}`, nil)
	if code != 202 {
		t.Fatalf("ingest: %d %v", code, doc)
	}
	id := doc["id"].(string)
	rcv.waitFor(t, 1, 30*time.Second)
	proof := waitProof(t, g, id, "message.delivered")
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(string(proof), "— witness.test/w1 "); {
		if time.Now().After(deadline) {
			t.Fatalf("no witnessed checkpoint: %s", proof)
		}
		time.Sleep(200 * time.Millisecond)
		proof = waitProof(t, g, id, "message.delivered")
	}
	proofFile := filepath.Join(dir, "proof.json")
	must(t, os.WriteFile(proofFile, proof, 0o600))
	out, err := runCmd("verify", "--proof", proofFile, "--jwks", logKeys, "--witness", vkey)
	if err != nil || !strings.Contains(out, "cosigned by witness.test/w1") {
		t.Fatalf("verify --proof with the witness: %v\n%s", err, out)
	}
	if out, err := runCmd("verify", "--proof", proofFile, "--jwks", logKeys, "--witness", otherVKey); exitCode(err) != 1 || !strings.Contains(out, "quorum") {
		t.Fatalf("verify --proof with another witness required: %v\n%s", err, out)
	}
	out, err = runCmd("monitor", "--once", "--url", "https://"+g.https, "--state", filepath.Join(dir, "m.json"), "--keys", logKeys,
		"--cacert", filepath.Join(g.dataDir, "dev-cert.pem"), "--witness", vkey)
	if err != nil || !strings.Contains(out, "cosigned by witness.test/w1") {
		t.Fatalf("monitor with the witness: %v\n%s", err, out)
	}
	out, err = g.cli("audit", "verify")
	if err != nil || !strings.Contains(out, "witness quorum") {
		t.Fatalf("audit verify with a witness: %v\n%s", err, out)
	}
}
