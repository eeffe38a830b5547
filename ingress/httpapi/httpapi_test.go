package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sealpost/sealpost/audit"
	"github.com/sealpost/sealpost/forwarder"
	"github.com/sealpost/sealpost/ingress/catalog"
	"github.com/sealpost/sealpost/keyring"
	"github.com/sealpost/sealpost/queue"
)

// TestWriteError: each error kind gets its status, problem type and
// Retry-After; the detail of an apiError is what the client sees; an
// unknown error gets 503 without its text.
func TestWriteError(t *testing.T) {
	for _, tc := range []struct {
		err        error
		status     int
		typ        string
		retryAfter string
		detail     string
	}{
		{errUnauthorized, 401, probUnauthorized, "", ""},
		{forbiddenf("the key may not read route x"), 403, probForbidden, "", "the key may not read route x"},
		{&apiError{errMethod, "allowed: GET"}, 405, probMethod, "", "allowed: GET"},
		{fmt.Errorf("lookup: %w", catalog.ErrNotFound), 404, probNotFound, "", "no such object"},
		{forwarder.ErrUnknownRoute, 404, probNotFound, "", ""},
		{queue.ErrNotFound, 404, probNotFound, "", ""},
		{keyring.ErrUnknownKey, 404, probNotFound, "", ""},
		{errTooLarge, 413, probTooLarge, "", ""},
		{invalidf("limit: 1 to 100"), 400, probInvalid, "", "limit: 1 to 100"},
		{fmt.Errorf("%w: name", catalog.ErrInvalid), 400, probInvalid, "", ""},
		{catalog.ErrExists, 409, probExists, "", ""},
		{fmt.Errorf("%w: a@b.test already goes to another route", catalog.ErrRecipientTaken), 409, probRecipientTaken, "", "a@b.test already goes to another route"},
		{catalog.ErrReadOnly, 409, probReadOnly, "", ""},
		{catalog.ErrBusy, 409, probConflict, "1", ""},
		{keyring.ErrRotationPending, 409, probConflict, "1", ""},
		{forwarder.ErrEndpointDisabled, 409, probEndpointDisabled, "", ""},
		{forwarder.ErrPending, 409, probPending, "", ""},
		{&audit.PendingError{RetryAfter: 3 * time.Second}, 409, probProofPending, "3", ""},
		{audit.ErrBadRange, 400, probInvalidRange, "", ""},
		{forwarder.ErrDeliveryFailed, 502, probDeliveryFailed, "", ""},
		{audit.ErrBusy, 429, probRateLimited, "10", ""},
		{audit.ErrProofsUnavailable, 501, probProofsUnavailable, "", ""},
		{audit.ErrTampered, 409, probAuditTampered, "", ""},
		{errors.New("kms: dial tcp 10.0.0.7:443: secret detail"), 503, probUnavailable, "5", ""},
	} {
		w := httptest.NewRecorder()
		writeError(w, slog.New(slog.DiscardHandler), tc.err)
		var p struct {
			Type, Title, Detail string
			Status              int
		}
		if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil {
			t.Fatalf("%v: body %q: %v", tc.err, w.Body, err)
		}
		if w.Code != tc.status || p.Status != tc.status || p.Type != problemBase+tc.typ || p.Title == "" {
			t.Errorf("%v: %d %+v, want %d %s", tc.err, w.Code, p, tc.status, tc.typ)
		}
		if got := w.Header().Get("Retry-After"); got != tc.retryAfter {
			t.Errorf("%v: Retry-After %q, want %q", tc.err, got, tc.retryAfter)
		}
		if tc.detail != "" && p.Detail != tc.detail {
			t.Errorf("%v: detail %q, want %q", tc.err, p.Detail, tc.detail)
		}
		if ct := w.Header().Get("Content-Type"); ct != "application/problem+json" {
			t.Errorf("%v: Content-Type %q", tc.err, ct)
		}
		if tc.status == 503 && strings.Contains(w.Body.String(), "secret detail") {
			t.Errorf("an internal error's text reached the client: %s", w.Body)
		}
	}
}

// TestProblemTypesDocumented: every problem type the API answers is named
// in docs/api.md.
func TestProblemTypesDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("problem.go")
	if err != nil {
		t.Fatal(err)
	}
	names := regexp.MustCompile(`(?m)^\s+prob[A-Za-z]+\s+= "([a-z-]+)"`).FindAllSubmatch(src, -1)
	if len(names) < 10 {
		t.Fatalf("found %d problem names in problem.go", len(names))
	}
	for _, m := range names {
		if !strings.Contains(string(doc), "`"+string(m[1])+"`") {
			t.Errorf("problem type %s is not in docs/api.md", m[1])
		}
	}
}

// TestRouteAccess: the routes anyone may call are exactly the public
// documents and ingest (which authenticates itself) and, on the admin
// listener, the probes, the metrics and --dev's receiver; every other
// admin route needs an operator role, every other tenant route an API
// key; no method and path is served twice.
func TestRouteAccess(t *testing.T) {
	public := []string{
		"GET /.well-known/jwks.json", "GET /v1/keys", "GET /v1/keys/{kid}", "GET /v1/audit/checkpoint",
		"GET /v1/audit/consistency", "GET /v1/openapi.json", "GET /.well-known/mta-sts.txt", "POST /v1/tlsrpt",
		"POST /v1/ingest/{route}",
		"admin GET /healthz", "admin GET /readyz", "admin GET /metrics", "admin POST /dev/webhook",
	}
	a := &API{}
	seen := map[string]bool{}
	var open []string
	for _, rt := range a.table() {
		key := rt.server + " " + rt.method + " " + rt.path
		if seen[key] {
			t.Errorf("%s is routed twice", key)
		}
		seen[key] = true
		if (rt.h == nil) == (rt.raw == nil) {
			t.Errorf("%s: wants exactly one of h and raw", key)
		}
		switch {
		case rt.access.apikey && rt.access.role != "":
			t.Errorf("%s: both an API key and a role", key)
		case rt.server == "admin" && rt.access.role == "":
			open = append(open, key)
		case rt.server == "https" && !rt.access.apikey && rt.access.role == "":
			open = append(open, rt.method+" "+rt.path)
		case rt.server != "https" && rt.server != "admin":
			t.Errorf("%s: unknown server", key)
		}
		if rt.access.role != "" && catalog.RoleRank(rt.access.role) == 0 {
			t.Errorf("%s: unknown role %q", key, rt.access.role)
		}
	}
	slices.Sort(open)
	slices.Sort(public)
	if !slices.Equal(open, public) {
		t.Errorf("routes without authentication: %v, want %v", open, public)
	}
	if len(seen) < 60 {
		t.Errorf("only %d routes", len(seen))
	}
}
