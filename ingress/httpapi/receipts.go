package httpapi

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/sealpost/sealpost/audit"
	"github.com/sealpost/sealpost/forwarder"
)

// The receipts of a tenant: listed, read, their attempts, proofs and
// redelivery, and the dead letters. A key scoped to some routes reaches
// only those routes' receipts.

// tenantOf is the tenant a request is about: an API key's own, or the
// {tenant} of an operator's path.
func (a *API) tenantOf(r *http.Request, c *caller) (string, error) {
	if c.key != nil {
		return c.tenant, nil
	}
	t := r.PathValue("tenant")
	if _, ok := a.cfg.Catalog.Tenant(t); !ok {
		return "", notFoundf("no such tenant")
	}
	return t, nil
}

// receipt reads a receipt the caller reaches; any other is not found.
func (a *API) receipt(r *http.Request, c *caller, tenant, id string) ([]byte, string, error) {
	env, err := a.cfg.Forwarder.Receipt(r.Context(), tenant, id)
	if errors.Is(err, forwarder.ErrInvalidInput) || errors.Is(err, forwarder.ErrNotFound) {
		return nil, "", notFoundf("no such receipt")
	}
	if err != nil {
		return nil, "", err
	}
	var e struct {
		Receipt struct {
			Route string `json:"route"`
		} `json:"receipt"`
	}
	if err := json.Unmarshal(env, &e); err != nil {
		return nil, "", fmt.Errorf("stored receipt: %w", err)
	}
	if !c.reaches(e.Receipt.Route) {
		return nil, "", notFoundf("no such receipt")
	}
	return env, e.Receipt.Route, nil
}

func (a *API) getReceipt(w http.ResponseWriter, r *http.Request, c *caller) error {
	env, _, err := a.receipt(r, c, c.tenant, r.PathValue("id"))
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Length", strconv.Itoa(len(env)))
	_, _ = w.Write(env)
	return nil
}

// maxListLimit bounds a page of a listing.
const maxListLimit = 500

func (a *API) listReceipts(w http.ResponseWriter, r *http.Request, c *caller) error {
	q := r.URL.Query()
	f := forwarder.ReceiptFilter{Tenant: c.tenant, Route: q.Get("route"), Endpoint: q.Get("endpoint"), Status: q.Get("status")}
	var err error
	if f.Since, err = queryTime(r, "since"); err != nil {
		return err
	}
	if f.Until, err = queryTime(r, "until"); err != nil {
		return err
	}
	if f.Route != "" && !c.reaches(f.Route) {
		return forbiddenf("the api key does not reach route " + f.Route)
	}
	f.Routes = c.reaches
	limit, err := queryLimit(r, 50, maxListLimit)
	if err != nil {
		return err
	}
	cur, err := decodeCursor(q.Get("cursor"))
	if err != nil {
		return err
	}
	items, next, more, err := a.cfg.Forwarder.ListReceipts(r.Context(), f, cur, limit)
	if err != nil {
		return err
	}
	if items == nil {
		items = []forwarder.ReceiptSummary{}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"items": items, "next_cursor": encodeCursor(next), "has_more": more})
}

func (a *API) getAttempts(w http.ResponseWriter, r *http.Request, c *caller) error {
	id := r.PathValue("id")
	if _, _, err := a.receipt(r, c, c.tenant, id); err != nil {
		return err
	}
	as, err := a.cfg.Forwarder.Attempts(r.Context(), c.tenant, id)
	if errors.Is(err, forwarder.ErrNotFound) {
		as, err = nil, nil
	}
	if err != nil {
		return err
	}
	ep := r.URL.Query().Get("endpoint")
	out := []forwarder.Attempt{}
	for _, at := range as {
		if ep == "" || at.Endpoint == ep {
			out = append(out, at)
		}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"id": id, "attempts": out})
}

func (a *API) redeliver(w http.ResponseWriter, r *http.Request, c *caller) error {
	tenant, err := a.tenantOf(r, c)
	if err != nil {
		return err
	}
	id := r.PathValue("id")
	if _, _, err := a.receipt(r, c, tenant, id); err != nil {
		return err
	}
	rs, err := a.cfg.Forwarder.RedeliverEach(r.Context(), tenant, id, r.URL.Query().Get("endpoint"))
	if err != nil {
		return err
	}
	return writeRedeliveries(w, id, rs)
}

// redelivered is one endpoint's result in a redelivery's answer.
type redelivered struct {
	Endpoint string `json:"endpoint"`
	Result   string `json:"result"` // delivered, failed or disabled
	Detail   string `json:"detail,omitempty"`
}

// writeRedeliveries answers a redelivery: 200 with a result per endpoint
// when at least one endpoint got it ("result" is "delivered", or
// "partial" when some did not), else the problem of a redelivery that
// failed: 409 endpoint-disabled when every endpoint is disabled, 502
// delivery-failed otherwise.
func writeRedeliveries(w http.ResponseWriter, id string, rs []forwarder.Redelivery) error {
	out := make([]redelivered, len(rs))
	delivered, disabled := 0, 0
	var firstErr error
	for i, x := range rs {
		out[i] = redelivered{Endpoint: x.Endpoint, Result: forwarder.ResultDelivered}
		switch {
		case x.Err == nil:
			delivered++
			continue
		case errors.Is(x.Err, forwarder.ErrEndpointDisabled):
			disabled++
			out[i].Result = "disabled"
		default:
			out[i].Result = forwarder.ResultFailed
		}
		out[i].Detail = x.Err.Error()
		firstErr = cmp.Or(firstErr, x.Err)
	}
	switch {
	case delivered == 0 && disabled == len(rs):
		return firstErr
	case delivered == 0:
		return fmt.Errorf("%w: no endpoint answered 2xx (first: %v)", forwarder.ErrDeliveryFailed, firstErr)
	}
	result := forwarder.ResultDelivered
	if delivered < len(rs) {
		result = "partial"
	}
	return writeJSON(w, http.StatusOK, map[string]any{"id": id, "result": result, "endpoints": out})
}

// deadLetterFilter reads the dead-letter selection of a request:
// ?route=&endpoint=&since=&until=.
func deadLetterFilter(r *http.Request, c *caller, tenant string) (forwarder.ReplayFilter, error) {
	q := r.URL.Query()
	f := forwarder.ReplayFilter{Tenant: tenant, Route: q.Get("route"), Endpoint: q.Get("endpoint")}
	var err error
	if f.Since, err = queryTime(r, "since"); err != nil {
		return f, err
	}
	if f.Until, err = queryTime(r, "until"); err != nil {
		return f, err
	}
	if f.Endpoint != "" && f.Route == "" {
		return f, invalidf("endpoint: only with route")
	}
	if f.Route != "" && !c.reaches(f.Route) {
		return f, forbiddenf("the api key does not reach route " + f.Route)
	}
	if c.key != nil && c.key.RouteLimited() {
		f.Routes = c.reaches
	}
	return f, nil
}

func (a *API) listDeadLetters(w http.ResponseWriter, r *http.Request, c *caller) error {
	f, err := deadLetterFilter(r, c, c.tenant)
	if err != nil {
		return err
	}
	limit, err := queryLimit(r, 50, maxListLimit)
	if err != nil {
		return err
	}
	cur, err := decodeCursor(r.URL.Query().Get("cursor"))
	if err != nil {
		return err
	}
	items, more, err := a.cfg.Forwarder.DeadLetters(r.Context(), f, cur.Seq, limit)
	if err != nil {
		return err
	}
	next := cur
	if len(items) > 0 {
		next = forwarder.Cursor{Seq: items[len(items)-1].Seq}
	}
	if items == nil {
		items = []forwarder.DeadLetter{}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"items": items, "next_cursor": encodeCursor(next), "has_more": more})
}

func (a *API) replayDeadLetters(w http.ResponseWriter, r *http.Request, c *caller) error {
	f, err := deadLetterFilter(r, c, c.tenant)
	if err != nil {
		return err
	}
	return a.replay(w, r, f)
}

// adminReplay replays one tenant's dead letters (?tenant=) or every
// tenant's.
func (a *API) adminReplay(w http.ResponseWriter, r *http.Request, c *caller) error {
	tenant := r.URL.Query().Get("tenant")
	f, err := deadLetterFilter(r, c, tenant)
	if err != nil {
		return err
	}
	f.AllTenants = tenant == ""
	return a.replay(w, r, f)
}

func (a *API) replay(w http.ResponseWriter, r *http.Request, f forwarder.ReplayFilter) error {
	n, err := a.cfg.Forwarder.ReplayDeadLetters(r.Context(), f)
	// None was delivered and every one not delivered was for a disabled
	// endpoint: 409, as a redelivery to it answers. Other failures leave a
	// partial result, reported with the count.
	if err != nil && (!errors.Is(err, forwarder.ErrDeliveryFailed) || n == 0 && errors.Is(err, forwarder.ErrEndpointDisabled)) {
		return err
	}
	out := map[string]any{"replayed": n}
	if err != nil {
		out["failed"] = err.Error()
	}
	return writeJSON(w, http.StatusOK, out)
}

func (a *API) getAttachment(w http.ResponseWriter, r *http.Request, c *caller) error {
	name := r.PathValue("name")
	if r.PathValue("tenant") != c.tenant {
		name = "" // another tenant's: not found, like an unknown name
	}
	data, err := a.cfg.Blobs.GetBlob(r.Context(), c.tenant, name)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", "attachment")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	_, _ = w.Write(data)
	return nil
}

// getReceiptProof serves the receipt's audit entries with their inclusion
// proofs in the newest checkpoint (see audit.ReceiptProof).
func (a *API) getReceiptProof(w http.ResponseWriter, r *http.Request, c *caller) error {
	id := r.PathValue("id")
	if _, _, err := a.receipt(r, c, c.tenant, id); err != nil {
		return err
	}
	p, err := a.cfg.Audit.ReceiptProof(r.Context(), c.tenant, id)
	if errors.Is(err, audit.ErrNotFound) {
		// The receipt exists (checked above): not indexed yet.
		err = &audit.PendingError{RetryAfter: a.cfg.CheckpointEvery}
	}
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	return audit.EncodeProof(w, p)
}

// maxAuditWindow bounds one GET /v1/audit.
const maxAuditWindow = 31 * 24 * time.Hour

// getAudit serves the tenant's own audit entries between since and until
// (both required, at most 31 days apart) as JSON Lines with inclusion
// proofs (audit.Export). The export is audited.
func (a *API) getAudit(w http.ResponseWriter, r *http.Request, c *caller) error {
	since, err1 := time.Parse(time.RFC3339Nano, r.URL.Query().Get("since"))
	until, err2 := time.Parse(time.RFC3339Nano, r.URL.Query().Get("until"))
	switch {
	case err1 != nil || err2 != nil:
		return invalidf("since and until must be RFC 3339 times")
	case !until.After(since):
		return invalidf("until must be after since")
	case until.Sub(since) > maxAuditWindow:
		return invalidf("since and until may be at most 31 days apart")
	}
	select {
	case a.exports <- struct{}{}:
		defer func() { <-a.exports }()
	default:
		return errBusy
	}
	var buf bytes.Buffer
	err := a.cfg.Audit.Export(r.Context(), &buf, audit.Filter{Tenant: c.tenant, Since: since, Until: until})
	a.appendAudit(r.Context(), audit.Entry{Actor: c.actor, Action: audit.ActionExport, Tenant: c.tenant, Target: "GET /v1/audit",
		Outcome: outcomeOf(err), RequestID: r.Header.Get("X-Request-Id"),
		Details: map[string]string{"since": since.UTC().Format(time.RFC3339), "until": until.UTC().Format(time.RFC3339)}})
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/jsonl")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(buf.Bytes())
	return nil
}

func outcomeOf(err error) string {
	if err != nil {
		return audit.OutcomeFailure
	}
	return audit.OutcomeSuccess
}
