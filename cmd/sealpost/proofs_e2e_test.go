package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sealpost/sealpost/audit"
)

const fastCheckpoints = "audit:\n  checkpoint_every: 1s\n"

// waitProof asks for a receipt's proof until it holds the action; a 409
// before that must carry Retry-After. The deadline guards against a hang.
func waitProof(t *testing.T, g *testGateway, id, action string) []byte {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, _ := http.NewRequest("GET", "https://"+g.https+"/v1/receipts/"+id+"/proof", nil)
		req.Header.Set("Authorization", "Bearer "+g.token)
		resp, err := g.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusOK && bytes.Contains(body, []byte(`"action":"`+action+`"`)):
			return body
		case resp.StatusCode == http.StatusOK:
		case resp.StatusCode == http.StatusConflict:
			if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 1 || !bytes.Contains(body, []byte("proof-pending")) {
				t.Fatalf("409 without Retry-After or problem type: %q %s", resp.Header.Get("Retry-After"), body)
			}
		default:
			t.Fatalf("proof of %s: %d %s", id, resp.StatusCode, body)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no proof of %s with %s; last answer %d %s", id, action, resp.StatusCode, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func runCmd(args ...string) (string, error) {
	var out, errOut bytes.Buffer
	err := run(context.Background(), args, func(string) string { return "" }, &out, &errOut)
	return out.String() + errOut.String(), err
}

func exitCode(err error) int {
	var ee exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	if err != nil {
		return -1
	}
	return 0
}

// TestReceiptProofEndToEnd: a tenant fetches the proof of its receipt's
// audit entries (409 with Retry-After until a checkpoint covers them), and
// `sealpost verify RECEIPT --proof` checks it with the receipt against the
// key history; consistency proofs between stored checkpoints verify too;
// tampered proofs and bad requests are refused.
func TestReceiptProofEndToEnd(t *testing.T) {
	rcv := newReceiver(t)
	g := startGateway(t, gatewayOpts{endpoint: rcv.url(), extra: fastCheckpoints})
	code, doc, _ := g.ingest("invoices", `{"invoice":"INV-9"}`, nil)
	if code != http.StatusAccepted {
		t.Fatalf("ingest: %d %v", code, doc)
	}
	id := doc["id"].(string)
	d := rcv.waitFor(t, 1, 30*time.Second)[0]
	proof := waitProof(t, g, id, "message.delivered")

	dir := t.TempDir()
	receiptFile, proofFile := filepath.Join(dir, "receipt.json"), filepath.Join(dir, "proof.json")
	must(t, os.WriteFile(receiptFile, d.body, 0o600))
	must(t, os.WriteFile(proofFile, proof, 0o600))
	keys := []string{"--jwks", "https://" + g.https + "/v1/keys", "--cacert", filepath.Join(g.dataDir, "dev-cert.pem")}
	out, err := runCmd(append([]string{"verify", receiptFile, "--proof", proofFile}, keys...)...)
	if err != nil || !strings.Contains(out, "message.signed") || !strings.Contains(out, "message.delivered") || !strings.Contains(out, "signed at") {
		t.Fatalf("verify --proof: %v\n%s", err, out)
	}
	// The proof is of this receipt and no other.
	other := bytes.Replace(d.body, []byte(id), []byte(id[:len(id)-1]+"Z"), -1)
	must(t, os.WriteFile(receiptFile, other, 0o600))
	if out, err := runCmd(append([]string{"verify", receiptFile, "--proof", proofFile}, keys...)...); err == nil {
		t.Fatalf("a proof verified for another receipt:\n%s", out)
	}
	// An edited entry or proof hash fails.
	for _, edit := range []func([]byte) []byte{
		func(b []byte) []byte {
			return bytes.Replace(b, []byte(`"outcome":"success"`), []byte(`"outcome":"failure"`), 1)
		},
		func(b []byte) []byte { return bytes.Replace(b, []byte(`"proof":["`), []byte(`"proof":["A`), 1) },
	} {
		must(t, os.WriteFile(proofFile, edit(proof), 0o600))
		if out, err := runCmd(append([]string{"verify", "--proof", proofFile}, keys...)...); exitCode(err) != 1 || !strings.HasPrefix(out, "FAILED") {
			t.Fatalf("tampered proof: %v\n%s", err, out)
		}
	}

	// Unknown and malformed ids are 404; no key is 401.
	unknown := id[:len(id)-2] + "ZZ"
	if unknown == id {
		unknown = id[:len(id)-2] + "YY"
	}
	for _, p := range []string{"/v1/receipts/" + unknown + "/proof", "/v1/receipts/rcpt_x/proof"} {
		if code, body := g.getAuth(p); code != http.StatusNotFound {
			t.Errorf("GET %s: %d %s", p, code, body)
		}
	}
	if code, _ := g.get("/v1/receipts/" + id + "/proof"); code != http.StatusUnauthorized {
		t.Errorf("proof without an API key: %d", code)
	}

	// Consistency from the empty tree and between two stored checkpoints.
	var p audit.ReceiptProof
	must(t, json.Unmarshal(proof, &p))
	code, body := g.get("/v1/audit/consistency?from=0")
	if code != http.StatusOK {
		t.Fatalf("consistency from 0: %d %s", code, body)
	}
	var c audit.ConsistencyProof
	must(t, json.Unmarshal(body, &c))
	if c.To < p.Size {
		t.Fatalf("newest checkpoint %d is before the proof's %d", c.To, p.Size)
	}
	code, body = g.get("/v1/audit/consistency?from=" + strconv.FormatUint(p.Size, 10) + "&to=" + strconv.FormatUint(c.To, 10))
	if code != http.StatusOK {
		t.Fatalf("consistency %d..%d: %d %s", p.Size, c.To, code, body)
	}
	must(t, os.WriteFile(proofFile, body, 0o600))
	if out, err := runCmd(append([]string{"verify", "--proof", proofFile}, keys...)...); err != nil || !strings.Contains(out, "extends") {
		t.Fatalf("verify consistency proof: %v\n%s", err, out)
	}
	for q, want := range map[string]int{
		"from=x": 400, "from=-1": 400, "from=01": 400, "": 400,
		"from=" + strconv.FormatUint(c.To, 10) + "&to=1":                                 400,
		"from=0&to=" + strconv.FormatUint(c.To+1000, 10):                                 400,
		"from=" + strconv.FormatUint(c.To-1, 10) + "&to=" + strconv.FormatUint(c.To, 10): 404,
	} {
		if code, body := g.get("/v1/audit/consistency?" + q); code != want || !bytes.Contains(body, []byte(`"type"`)) {
			t.Errorf("consistency?%s: %d %s, want %d", q, code, body, want)
		}
	}
}

// TestMonitorDetectsRollbackOnDisk follows a gateway with `sealpost
// monitor`, then puts back an older copy of its data dir: the monitor
// exits 1 and names the rollback. A state file whose root was changed is
// a fork.
func TestMonitorDetectsRollbackOnDisk(t *testing.T) {
	rcv := newReceiver(t)
	dataDir := t.TempDir()
	g := startGateway(t, gatewayOpts{dataDir: dataDir, endpoint: rcv.url(), extra: fastCheckpoints})
	ingestOK(t, g, rcv, 1)
	must(t, g.stop())
	older := t.TempDir()
	copyDir(t, dataDir, older)

	g = startGateway(t, gatewayOpts{dataDir: dataDir, endpoint: rcv.url(), extra: fastCheckpoints, token: g.token, admin: g.admin})
	state := filepath.Join(t.TempDir(), "monitor.json")
	monitor := func(g *testGateway) (string, error) {
		return runCmd("monitor", "--once", "--url", "https://"+g.https, "--state", state,
			"--keys", "https://"+g.https+"/v1/keys", "--cacert", filepath.Join(g.dataDir, "dev-cert.pem"))
	}
	if out, err := monitor(g); err != nil || !strings.Contains(out, "first checkpoint") {
		t.Fatalf("first check: %v\n%s", err, out)
	}
	first := checkpointSize(t, g)
	ingestOK(t, g, rcv, 2)
	deadline := time.Now().Add(30 * time.Second)
	for checkpointSize(t, g) <= first {
		if time.Now().After(deadline) {
			t.Fatal("no newer checkpoint")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if out, err := monitor(g); err != nil || !strings.Contains(out, "extends size") {
		t.Fatalf("second check: %v\n%s", err, out)
	}
	saved, err := os.ReadFile(state)
	must(t, err)
	must(t, g.stop())

	g = startGateway(t, gatewayOpts{dataDir: older, endpoint: rcv.url(), extra: fastCheckpoints, token: g.token, admin: g.admin})
	out, err := monitor(g)
	if exitCode(err) != exitMisbehaved || !strings.Contains(out, "ROLLBACK") {
		t.Fatalf("monitor of the rolled back gateway: %v\n%s", err, out)
	}
	// The state was not moved back.
	if now, _ := os.ReadFile(state); !bytes.Equal(now, saved) {
		t.Error("the monitor's state changed on a rollback")
	}

	// Against the current gateway, a state whose root was replaced shows a
	// fork.
	must(t, g.stop())
	g = startGateway(t, gatewayOpts{dataDir: dataDir, endpoint: rcv.url(), extra: fastCheckpoints, token: g.token, admin: g.admin})
	var st monitorState
	must(t, json.Unmarshal(saved, &st))
	st.Root = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
	forged, _ := json.Marshal(st)
	must(t, os.WriteFile(state, forged, 0o600))
	ingestOK(t, g, rcv, 1)
	for checkpointSize(t, g) <= st.Size {
		if time.Now().After(deadline.Add(30 * time.Second)) {
			t.Fatal("no newer checkpoint")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if out, err := monitor(g); exitCode(err) != exitMisbehaved || !strings.Contains(out, "FORK") {
		t.Fatalf("monitor with a forged state: %v\n%s", err, out)
	}
}

func checkpointSize(t *testing.T, g *testGateway) uint64 {
	t.Helper()
	code, body := g.get("/v1/audit/checkpoint")
	if code != http.StatusOK {
		return 0
	}
	lines := strings.SplitN(string(body), "\n", 3)
	n, _ := strconv.ParseUint(lines[1], 10, 64)
	return n
}
