package httpin_test

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sealpost/sealpost/ingress"
	"github.com/sealpost/sealpost/ingress/httpin"
	"github.com/sealpost/sealpost/signer"
)

type routes map[string]bool

func (r routes) Route(tenant, name string) (httpin.Route, bool) {
	return httpin.Route{Tenant: tenant, Name: name}, r[tenant+"/"+name]
}

// recorder is an Enqueuer that keeps what it was given, or fails with err.
// A non-nil gate makes Enqueue wait until it is closed.
type recorder struct {
	mu   sync.Mutex
	subs []*ingress.Submission
	err  error
	gate chan struct{}
}

func (r *recorder) Enqueue(_ context.Context, s *ingress.Submission) error {
	r.mu.Lock()
	gate := r.gate
	r.mu.Unlock()
	if gate != nil {
		<-gate
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return r.err
	}
	r.subs = append(r.subs, s)
	return nil
}

// memIdem is an in-memory Idempotency store.
type memIdem struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (m *memIdem) Reserve(_ context.Context, key string, rec []byte) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if v, ok := m.m[key]; ok {
		return v, nil
	}
	m.m[key] = rec
	return nil, nil
}

func (m *memIdem) Complete(_ context.Context, key string, rec []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.m[key] = rec
	return nil
}

func (m *memIdem) Release(_ context.Context, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.m, key)
	return nil
}

type fixture struct {
	srv      *httptest.Server
	h        *httpin.Handler
	enq      *recorder
	idem     *memIdem
	token    string
	scoped   string
	otherTen string
}

func newFixture(t testing.TB, mod func(*httpin.Config)) *fixture {
	t.Helper()
	return newFixtureServer(t, mod, nil)
}

// newFixtureServer is newFixture with srvMod applied to the test server
// before it starts.
func newFixtureServer(t testing.TB, mod func(*httpin.Config), srvMod func(*http.Server)) *fixture {
	t.Helper()
	f := &fixture{enq: &recorder{}, idem: &memIdem{m: map[string][]byte{}}}
	var keys []httpin.APIKey
	for _, k := range []struct {
		id, tenant string
		routes     []string
		dst        *string
	}{
		{"acme-main", "acme", nil, &f.token},
		{"acme-scoped", "acme", []string{"orders"}, &f.scoped},
		{"globex", "globex", nil, &f.otherTen},
	} {
		tok, sum, err := httpin.NewToken(k.id)
		if err != nil {
			t.Fatal(err)
		}
		*k.dst = tok
		var h [32]byte
		if b, err := hex.DecodeString(sum); err != nil || copy(h[:], b) != 32 {
			t.Fatalf("bad hash %q", sum)
		}
		keys = append(keys, httpin.APIKey{ID: k.id, Tenant: k.tenant, SHA256: h, Routes: k.routes})
	}
	ks, err := httpin.NewKeys(keys)
	if err != nil {
		t.Fatal(err)
	}
	cfg := httpin.Config{
		Enqueuer: f.enq, Keys: ks, Routes: routes{"acme/invoices": true, "acme/orders": true, "globex/invoices": true},
		Idempotency: f.idem, MaxBodyBytes: 1024, RatePerSecond: 1000, Burst: 1000,
	}
	if mod != nil {
		mod(&cfg)
	}
	h, err := httpin.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.h = h
	mux := http.NewServeMux()
	mux.Handle("/v1/ingest/{route}", h)
	f.srv = httptest.NewUnstartedServer(mux)
	if srvMod != nil {
		srvMod(f.srv.Config)
	}
	f.srv.StartTLS()
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fixture) post(t *testing.T, method, route, token, ctype, body string, hdr map[string]string) (*http.Response, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+"/v1/ingest/"+route, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&doc)
	return resp, doc
}

// TestIngestAnswers checks every answer of the ingest API, and that
// failures are RFC 9457 problem documents.
func TestIngestAnswers(t *testing.T) {
	f := newFixture(t, nil)
	const js = "application/json"
	cases := []struct {
		name, method, route, token, ctype, body string
		want                                    int
		problem                                 string
	}{
		{"accepted", "POST", "invoices", "main", js, `{"n":1}`, 202, ""},
		{"json by default", "POST", "invoices", "main", "", `[1,2]`, 202, ""},
		{"non-JSON body wrapped", "POST", "invoices", "main", "text/plain", "not json", 202, ""},
		{"no key", "POST", "invoices", "", js, `{}`, 401, "unauthorized"},
		{"wrong key", "POST", "invoices", "sp_acme-main_AAAA", js, `{}`, 401, "unauthorized"},
		{"garbage key", "POST", "invoices", "hello", js, `{}`, 401, "unauthorized"},
		{"unknown route", "POST", "nope", "main", js, `{}`, 404, "unknown-route"},
		{"route of another tenant", "POST", "orders", "other", js, `{}`, 404, "unknown-route"},
		{"out of scope", "POST", "invoices", "scoped", js, `{}`, 403, "forbidden"},
		{"bad JSON", "POST", "invoices", "main", js, `{"a":`, 400, "invalid-json"},
		{"empty JSON", "POST", "invoices", "main", js, ``, 400, "invalid-json"},
		{"duplicate member", "POST", "invoices", "main", js, `{"a":1,"a":2}`, 400, "invalid-json"},
		{"nested duplicate", "POST", "invoices", "main", js, `{"a":[{"b":1,"b":1}]}`, 400, "invalid-json"},
		{"too deep", "POST", "invoices", "main", js, strings.Repeat("[", 100) + strings.Repeat("]", 100), 400, "invalid-json"},
		{"64 deep", "POST", "invoices", "main", js, strings.Repeat("[", 64) + strings.Repeat("]", 64), 202, ""},
		{"brackets in strings", "POST", "invoices", "main", js, `{"a":"\"` + strings.Repeat("[{", 100) + `","b":["]]]"]}`, 202, ""},
		{"duplicate after unescaping", "POST", "invoices", "main", js, `{"a":1,"\u0061":2}`, 400, "invalid-json"},
		{"integer beyond 2^53", "POST", "invoices", "main", js, `{"g":12345678901234567890}`, 400, "lossy-number"},
		{"2^53 + 1", "POST", "invoices", "main", js, `[9007199254740993]`, 400, "lossy-number"},
		{"more digits than a double", "POST", "invoices", "main", js, `{"x":[0.10000000000000001]}`, 400, "lossy-number"},
		{"number out of range", "POST", "invoices", "main", js, `{"x":1e400}`, 400, "lossy-number"},
		{"number that underflows", "POST", "invoices", "main", js, `1e-400`, 400, "lossy-number"},
		{"2^53", "POST", "invoices", "main", js, `{"g":9007199254740992}`, 202, ""},
		{"number with another spelling", "POST", "invoices", "main", js, `{"g":[1.0,1e3,-0,4.50]}`, 202, ""},
		{"lossy number as a string", "POST", "invoices", "main", js, `{"g":"12345678901234567890"}`, 202, ""},
		{"lossy number in a non-JSON body", "POST", "invoices", "main", "text/plain", `{"g":12345678901234567890}`, 202, ""},
		{"too large", "POST", "invoices", "main", js, `{"a":"` + strings.Repeat("x", 2000) + `"}`, 413, "too-large"},
		{"GET", "GET", "invoices", "main", js, ``, 405, "method-not-allowed"},
	}
	tokens := map[string]string{"main": f.token, "scoped": f.scoped, "other": f.otherTen}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tok := c.token
			if v, ok := tokens[tok]; ok {
				tok = v
			}
			resp, doc := f.post(t, c.method, c.route, tok, c.ctype, c.body, nil)
			if resp.StatusCode != c.want {
				t.Fatalf("status %d, want %d (%v)", resp.StatusCode, c.want, doc)
			}
			if c.problem == "" {
				id, _ := doc["id"].(string)
				if !strings.HasPrefix(id, "rcpt_") {
					t.Fatalf("202 without a receipt id: %v", doc)
				}
				return
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("content-type %q", ct)
			}
			if typ, _ := doc["type"].(string); !strings.HasSuffix(typ, "/"+c.problem) || doc["status"] != float64(c.want) {
				t.Errorf("problem %v, want type %s", doc, c.problem)
			}
		})
	}
}

// TestLossyNumberDetail: the problem names the number and what it would
// have become, and nothing is queued.
func TestLossyNumberDetail(t *testing.T) {
	f := newFixture(t, nil)
	resp, doc := f.post(t, "POST", "invoices", f.token, "application/json", `{"order":12345678901234567890}`, nil)
	if resp.StatusCode != 400 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	detail, _ := doc["detail"].(string)
	if doc["type"] != "https://sealpost.dev/problems/lossy-number" ||
		!strings.Contains(detail, "12345678901234567890 would be signed as 12345678901234567000") {
		t.Fatalf("problem %v", doc)
	}
	if len(f.enq.subs) != 0 {
		t.Fatalf("%d submissions queued", len(f.enq.subs))
	}
}

// TestSubmissionContents checks what reaches the queue for JSON and non-JSON bodies.
func TestSubmissionContents(t *testing.T) {
	f := newFixture(t, nil)
	body := `{"z":1,"a":"é"}`
	resp, doc := f.post(t, "POST", "invoices", f.token, "application/json", body, map[string]string{"Idempotency-Key": "k-1"})
	if resp.StatusCode != 202 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	f.post(t, "POST", "invoices", f.token, "application/octet-stream", "\x00\x01binary", nil)
	if len(f.enq.subs) != 2 {
		t.Fatalf("%d submissions", len(f.enq.subs))
	}
	s := f.enq.subs[0]
	// The payload is kept in its JCS form, the one the receipt signs; the
	// raw digest covers the bytes as sent.
	if s.ID != doc["id"] || s.Tenant != "acme" || s.Route != "invoices" || s.Channel != "https" ||
		string(s.Payload) != `{"a":"é","z":1}` || !s.PayloadJCS {
		t.Errorf("submission %+v", s)
	}
	if s.RawSHA256 != signer.RawDigest([]byte(body)) || s.RawSize != int64(len(body)) {
		t.Errorf("raw digest %s size %d", s.RawSHA256, s.RawSize)
	}
	var src map[string]any
	if err := json.Unmarshal(s.Source, &src); err != nil {
		t.Fatal(err)
	}
	tlsInfo, _ := src["tls"].(map[string]any)
	if src["api_key_id"] != "acme-main" || src["idempotency_key"] != "k-1" || tlsInfo["version"] != "TLS1.3" || src["remote_addr"] == "" {
		t.Errorf("source %v", src)
	}
	var wrapped struct {
		ContentType string `json:"content_type"`
		BodyBase64  string `json:"body_base64"`
	}
	if err := json.Unmarshal(f.enq.subs[1].Payload, &wrapped); err != nil || wrapped.ContentType != "application/octet-stream" || wrapped.BodyBase64 != "AAFiaW5hcnk=" {
		t.Errorf("wrapped payload %s (%v)", f.enq.subs[1].Payload, err)
	}
}

// TestIdempotencyKey checks a replay gets the same id without a second
// enqueue, and another body under the same key is a 409.
func TestIdempotencyKey(t *testing.T) {
	f := newFixture(t, nil)
	h := map[string]string{"Idempotency-Key": "order-42"}
	_, first := f.post(t, "POST", "invoices", f.token, "application/json", `{"n":1}`, h)
	resp, again := f.post(t, "POST", "invoices", f.token, "application/json", `{"n":1}`, h)
	if resp.StatusCode != 202 || again["id"] != first["id"] {
		t.Fatalf("replay: %d %v, first %v", resp.StatusCode, again, first)
	}
	if resp, _ := f.post(t, "POST", "invoices", f.token, "application/json", `{"n":2}`, h); resp.StatusCode != 409 {
		t.Fatalf("reuse with another body: %d", resp.StatusCode)
	}
	if resp, _ := f.post(t, "POST", "invoices", f.token, "application/json", `{}`, map[string]string{"Idempotency-Key": strings.Repeat("k", 256)}); resp.StatusCode != 400 {
		t.Fatalf("bad key: %d", resp.StatusCode)
	}
	if len(f.enq.subs) != 1 {
		t.Fatalf("%d submissions enqueued, want 1", len(f.enq.subs))
	}
	// The same key on another route is another request.
	if resp, doc := f.post(t, "POST", "orders", f.token, "application/json", `{"n":1}`, h); resp.StatusCode != 202 || doc["id"] == first["id"] {
		t.Fatalf("same key on another route: %d %v", resp.StatusCode, doc)
	}
}

// TestIdempotencyInFlight: a retry that arrives while the first request is
// still being queued must not get a 202 (the first may yet fail); once the
// first failed, the retry is queued.
func TestIdempotencyInFlight(t *testing.T) {
	f := newFixture(t, nil)
	gate := make(chan struct{})
	f.enq.gate = gate
	f.enq.err = ingress.Temporary(errors.New("queue down"))
	h := map[string]string{"Idempotency-Key": "slow-1"}
	first := make(chan int)
	go func() {
		resp, _ := f.post(t, "POST", "invoices", f.token, "application/json", `{"n":1}`, h)
		first <- resp.StatusCode
	}()
	// Wait until the first request holds the reservation.
	deadline := time.Now().Add(5 * time.Second)
	for {
		idem := f.idem
		idem.mu.Lock()
		n := len(idem.m)
		idem.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("first request never reserved the key")
		}
		time.Sleep(5 * time.Millisecond)
	}
	resp, doc := f.post(t, "POST", "invoices", f.token, "application/json", `{"n":1}`, h)
	if resp.StatusCode != 409 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("retry while in flight: %d %v", resp.StatusCode, doc)
	}
	close(gate)
	if code := <-first; code != 503 {
		t.Fatalf("first request: %d, want 503", code)
	}
	// The failed request may have been stored after all (a publish whose
	// answer timed out): the retry must use the same id, so that the queue
	// or the receiver drops the copy.
	var failed struct {
		ID     string `json:"id"`
		Failed bool   `json:"failed"`
	}
	f.idem.mu.Lock()
	for _, rec := range f.idem.m {
		_ = json.Unmarshal(rec, &failed)
	}
	f.idem.mu.Unlock()
	if !failed.Failed || failed.ID == "" {
		t.Fatalf("record after the failure: %+v", failed)
	}
	f.enq.mu.Lock()
	f.enq.gate, f.enq.err = nil, nil
	f.enq.mu.Unlock()
	resp, doc = f.post(t, "POST", "invoices", f.token, "application/json", `{"n":1}`, h)
	if resp.StatusCode != 202 || doc["id"] != failed.ID {
		t.Fatalf("retry after the failure: %d %v, want 202 with id %s", resp.StatusCode, doc, failed.ID)
	}
	if len(f.enq.subs) != 1 || f.enq.subs[0].ID != failed.ID {
		t.Fatalf("%d submissions, want 1 with id %s", len(f.enq.subs), failed.ID)
	}
}

// TestTemporaryFailure checks a queue or KMS outage is a 503 with
// Retry-After, and that an unknown error fails closed without details.
func TestTemporaryFailure(t *testing.T) {
	for _, c := range []struct {
		name   string
		err    error
		status int
	}{
		{"queue down", ingress.Temporary(errors.New("nats: no responders")), 503},
		{"deadline", context.DeadlineExceeded, 503},
		{"too large after sealing", ingress.ErrTooLarge, 413},
		{"unknown", errors.New("secret internal detail"), 500},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t, nil)
			f.enq.err = c.err
			resp, doc := f.post(t, "POST", "invoices", f.token, "application/json", `{}`, nil)
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, c.status)
			}
			if c.status == 503 && resp.Header.Get("Retry-After") == "" {
				t.Error("503 without Retry-After")
			}
			if strings.Contains(doc["detail"].(string), "secret") {
				t.Errorf("internal detail leaked: %v", doc)
			}
		})
	}
}

// TestRateLimit checks a key over its rate gets 429 with Retry-After.
func TestRateLimit(t *testing.T) {
	f := newFixture(t, func(c *httpin.Config) { c.RatePerSecond, c.Burst = 0.001, 2 })
	var codes []int
	for range 4 {
		resp, _ := f.post(t, "POST", "invoices", f.token, "application/json", `{}`, nil)
		codes = append(codes, resp.StatusCode)
		if resp.StatusCode == 429 && resp.Header.Get("Retry-After") == "" {
			t.Error("429 without Retry-After")
		}
	}
	if codes[0] != 202 || codes[1] != 202 || codes[2] != 429 || codes[3] != 429 {
		t.Fatalf("codes %v", codes)
	}
}

// TestRateLimitShare: with two instances sharing the limits, each allows
// half the burst, including a key whose limiter existed before.
func TestRateLimitShare(t *testing.T) {
	f := newFixture(t, func(c *httpin.Config) { c.RatePerSecond, c.Burst = 0.001, 4 })
	if resp, _ := f.post(t, "POST", "invoices", f.token, "application/json", `{}`, nil); resp.StatusCode != 202 {
		t.Fatalf("first request: %d", resp.StatusCode)
	}
	f.h.SetInstances(2)
	var codes []int
	for range 3 {
		resp, _ := f.post(t, "POST", "invoices", f.token, "application/json", `{}`, nil)
		codes = append(codes, resp.StatusCode)
	}
	// The bucket now holds at most the new burst of 2 (4 without the
	// share would have let all three through).
	if codes[0] != 202 || codes[1] != 202 || codes[2] != 429 {
		t.Fatalf("codes %v with half of a burst of 4", codes)
	}
	// A key first seen after the change starts with the share too.
	for i, want := range []int{202, 202, 429} {
		if resp, _ := f.post(t, "POST", "invoices", f.otherTen, "application/json", `{}`, nil); resp.StatusCode != want {
			t.Fatalf("new key, request %d: %d, want %d", i+1, resp.StatusCode, want)
		}
	}
}

func TestTokenRoundTrip(t *testing.T) {
	tok, sum, err := httpin.NewToken("abc-1")
	if err != nil {
		t.Fatal(err)
	}
	id, secret, ok := httpin.ParseToken(tok)
	if !ok || id != "abc-1" || len(secret) != 43 || len(sum) != 64 {
		t.Fatalf("parse %q: %q %q %v", tok, id, secret, ok)
	}
	for _, bad := range []string{"", "sp_", "sp_x", "sp__secret", "xx_abc_def", "sp_ABC_def", "sp_abc_"} {
		if _, _, ok := httpin.ParseToken(bad); ok {
			t.Errorf("ParseToken(%q) accepted", bad)
		}
	}
	if _, _, err := httpin.NewToken("Bad_Id"); err == nil {
		t.Error("bad id accepted")
	}
}

// FuzzIngestBody checks any body gets either a 202 whose queued payload
// canonicalizes (so the worker can sign it) or a 4xx problem, never a
// crash or a 5xx.
func FuzzIngestBody(f *testing.F) {
	for _, seed := range []string{`{"a":1}`, `[1,"x",null,true]`, `{"a":1,"a":2}`, `{"a":`, `1e400`, `"\ud800"`, `{"b":{"c":[{}]}}`} {
		f.Add(seed)
	}
	fx := newFixture(f, func(c *httpin.Config) { c.RatePerSecond, c.Burst = 1e9, 1e9 })
	f.Fuzz(func(t *testing.T, body string) {
		fx.enq.mu.Lock()
		fx.enq.subs = nil
		fx.enq.mu.Unlock()
		resp, _ := fx.post(t, "POST", "invoices", fx.token, "application/json", body, nil)
		switch {
		case resp.StatusCode == 202:
			if len(fx.enq.subs) != 1 {
				t.Fatalf("202 but %d submissions", len(fx.enq.subs))
			}
			if _, err := signer.Canonicalize(fx.enq.subs[0].Payload); err != nil {
				t.Fatalf("accepted payload does not canonicalize: %v", err)
			}
		case resp.StatusCode == 400 || resp.StatusCode == 413:
		default:
			t.Fatalf("status %d for %q", resp.StatusCode, body)
		}
	})
}

// TestIdempotencyAfterRefusal: a request refused for good (here: too large
// once sealed) frees its Idempotency-Key, so a corrected body can use it.
func TestIdempotencyAfterRefusal(t *testing.T) {
	f := newFixture(t, nil)
	f.enq.err = ingress.ErrTooLarge
	h := map[string]string{"Idempotency-Key": "fix-1"}
	if resp, doc := f.post(t, "POST", "invoices", f.token, "application/json", `{"big":true}`, h); resp.StatusCode != 413 {
		t.Fatalf("first request: %d %v", resp.StatusCode, doc)
	}
	f.enq.mu.Lock()
	f.enq.err = nil
	f.enq.mu.Unlock()
	if resp, doc := f.post(t, "POST", "invoices", f.token, "application/json", `{"big":false}`, h); resp.StatusCode != 202 {
		t.Fatalf("corrected body with the same key: %d %v, want 202", resp.StatusCode, doc)
	}
}

// TestDuplicateIdempotencyKey: two Idempotency-Key headers are refused
// with 400, whether they agree or not; nothing is queued.
func TestDuplicateIdempotencyKey(t *testing.T) {
	f := newFixture(t, nil)
	for _, keys := range [][]string{{"a", "b"}, {"a", "a"}} {
		req, err := http.NewRequest("POST", f.srv.URL+"/v1/ingest/invoices", strings.NewReader(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+f.token)
		for _, k := range keys {
			req.Header.Add("Idempotency-Key", k)
		}
		resp, err := f.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&doc)
		resp.Body.Close()
		if resp.StatusCode != 400 || doc["type"] != "https://sealpost.dev/problems/invalid-idempotency-key" {
			t.Errorf("keys %q: %d %v, want 400 invalid-idempotency-key", keys, resp.StatusCode, doc)
		}
	}
	if len(f.enq.subs) != 0 {
		t.Fatalf("%d submissions queued", len(f.enq.subs))
	}
}

// TestSlowBody: a body that does not arrive within the server's read
// timeout is answered 408 (the client's doing), not 503 (which would invite
// the same slow retry as a passing failure of ours).
func TestSlowBody(t *testing.T) {
	f := newFixtureServer(t, nil, func(s *http.Server) { s.ReadTimeout = 300 * time.Millisecond })
	pr, pw := io.Pipe()
	defer pw.Close()
	go func() {
		// Half a body, then nothing until the test ends.
		_, _ = pw.Write([]byte(`{"n":`))
	}()
	req, err := http.NewRequest("POST", f.srv.URL+"/v1/ingest/invoices", pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+f.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&doc)
	if resp.StatusCode != http.StatusRequestTimeout || doc["type"] != "https://sealpost.dev/problems/request-timeout" {
		t.Fatalf("slow body: %d %v, want 408 request-timeout", resp.StatusCode, doc)
	}
	if len(f.enq.subs) != 0 {
		t.Fatalf("%d submissions queued", len(f.enq.subs))
	}
}
