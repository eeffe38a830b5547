package forwarder

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

func TestHandlers(t *testing.T) {
	e := newEnv(t, nil)
	var status atomic.Int32
	status.Store(500)
	rc := newReceiver(t, func(w http.ResponseWriter, _ *http.Request, _ int) { w.WriteHeader(int(status.Load())) })
	e.route("invoices", rc, nil)
	s := submission(t, "invoices")
	e.handle(context.Background(), s, &fakeDelivery{})

	mux := http.NewServeMux()
	mux.Handle("POST /v1/receipts/{id}/redeliver", e.w.RedeliverHandler())
	mux.Handle("GET /v1/receipts/{id}/attempts", e.w.AttemptsHandler())
	do := func(tenant, method, path string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(method, path, nil)
		if tenant != "" {
			r = r.WithContext(WithActor(WithTenant(r.Context(), tenant), "apikey:k1"))
		}
		rr := httptest.NewRecorder()
		mux.ServeHTTP(rr, r)
		return rr
	}
	for _, tc := range []struct {
		name, tenant, method, path string
		setStatus                  int32
		want                       int
	}{
		{"attempts", "acme", "GET", "/v1/receipts/" + s.ID + "/attempts", 0, 200},
		{"attempts other tenant", "other", "GET", "/v1/receipts/" + s.ID + "/attempts", 0, 404},
		{"attempts no tenant", "", "GET", "/v1/receipts/" + s.ID + "/attempts", 0, 401},
		{"attempts bad id", "acme", "GET", "/v1/receipts/a.b/attempts", 0, 404},
		{"redeliver failing", "acme", "POST", "/v1/receipts/" + s.ID + "/redeliver", 500, 502},
		{"redeliver ok", "acme", "POST", "/v1/receipts/" + s.ID + "/redeliver", 200, 200},
		{"redeliver unknown", "acme", "POST", "/v1/receipts/rcpt_unknown/redeliver", 200, 404},
		{"redeliver other tenant", "other", "POST", "/v1/receipts/" + s.ID + "/redeliver", 200, 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setStatus != 0 {
				status.Store(tc.setStatus)
			}
			rr := do(tc.tenant, tc.method, tc.path)
			if rr.Code != tc.want {
				t.Errorf("%s %s = %d %s, want %d", tc.method, tc.path, rr.Code, rr.Body, tc.want)
			}
			if rr.Code >= 400 && rr.Header().Get("Content-Type") != "application/problem+json" {
				t.Errorf("error without problem+json: %q", rr.Header().Get("Content-Type"))
			}
		})
	}
	rr := do("acme", "GET", "/v1/receipts/"+s.ID+"/attempts")
	var out struct {
		ID       string    `json:"id"`
		Attempts []Attempt `json:"attempts"`
	}
	if err := json.Unmarshal(rr.Body.Bytes(), &out); err != nil {
		t.Fatal(err)
	}
	if out.ID != s.ID || len(out.Attempts) != 3 || out.Attempts[2].Result != ResultDelivered {
		t.Errorf("attempts listing = %+v", out)
	}
	for _, a := range e.audit.entries {
		if a.Action == "message.redeliver" && a.Actor != "apikey:k1" {
			t.Errorf("redeliver audited with actor %q, want the caller's", a.Actor)
		}
	}
}
