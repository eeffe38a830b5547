package forwarder

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sealpost/sealpost/audit/entry"
	"github.com/sealpost/sealpost/ingress"
	"github.com/sealpost/sealpost/queue"
	"github.com/sealpost/sealpost/signer"
)

// ErrPending: the receipt is still being delivered (its next attempt is
// scheduled); delete it once it was delivered or dead-lettered.
var ErrPending = errors.New("forwarder: receipt still pending delivery")

// Deleted is what DeleteReceipt removed.
type Deleted struct {
	ID          string `json:"id"`
	Route       string `json:"route"`
	Attachments int    `json:"attachments"`
	DeadLetters bool   `json:"dead_letters"`
}

// DeleteReceipt removes the content of one receipt on request: its stored
// envelope is replaced by the envelope without the payload (the receipt
// and its signature, which still verify: the payload is bound only through
// payload_sha256), the attachments and bodies its payload refers to are
// erased from the object store, and its dead letters are purged. The
// messages that held the payload are rewritten and the old ones erased,
// so their bytes do not stay on disk either. Attempt records, which never
// hold content, stay. A receipt whose delivery is still scheduled is
// refused with ErrPending. It is audited as message.deleted.
//
// Copies in backups taken before the deletion keep the payload until
// those backups are pruned (backup retention); deleting the whole tenant
// (DeleteTenantData with the tenant's key destroyed) reaches them at once.
func (w *Worker) DeleteReceipt(ctx context.Context, tenant, id string) (*Deleted, error) {
	if err := cmp.Or(checkTenant(tenant), checkID(id)); err != nil {
		return nil, err
	}
	k, err := groupOf(tenant, id)
	if err != nil {
		return nil, fmt.Errorf("%w: receipt %s", ErrNotFound, signer.Truncate(id, 64))
	}
	lasts, err := w.lastAttempts(ctx, k)
	if err != nil {
		return nil, err
	}
	if len(lasts[id]) == 0 {
		return nil, fmt.Errorf("%w: %s", ErrPending, id)
	}
	for _, last := range lasts[id] {
		if !last.delivered && last.result != ResultDeadLettered {
			return nil, fmt.Errorf("%w: %s", ErrPending, id)
		}
	}
	subject := receiptSubject(k.tenant, k.group)
	var msgs []*queue.Msg
	if err := w.cfg.Receipts.Each(ctx, subject, func(m *queue.Msg) error {
		if m.Header[hdrFormat] != receiptsFormat {
			return fmt.Errorf("forwarder: %s seq %d: format %q", w.cfg.Receipts.Name(), m.Seq, signer.Truncate(m.Header[hdrFormat], 40))
		}
		msgs = append(msgs, m)
		return nil
	}); err != nil {
		return nil, err
	}
	// Rewrite every message of the group in order, keeping the first
	// record of each id (the one that was sent), so that which receipt
	// wins does not change.
	seen := map[string]bool{}
	var found *Deleted
	var refs []string
	type rewrite struct {
		recs []record
		ttl  time.Duration
	}
	var out []rewrite
	var touched []uint64
	now := w.cfg.Now()
	for _, m := range msgs {
		var recs []record
		changed := false
		err := queue.EachRecord(m.Data, func(f []string, blob []byte) error {
			if len(f) != 2 {
				return fmt.Errorf("forwarder: receipt record at seq %d has %d fields", m.Seq, len(f))
			}
			if seen[f[0]] {
				changed = true // a later duplicate: never the winner
				return nil
			}
			seen[f[0]] = true
			r := record{fields: slices.Clone(f), blob: bytes.Clone(blob)}
			if len(f) == 2 {
				r.index = receiptIndex(f[0], f[1])
			}
			if f[0] == id {
				env, err := w.openReceipt(ctx, tenant, id, blob)
				if err != nil {
					return err
				}
				stripped, hadPayload, err := stripPayload(env)
				if err != nil {
					return err
				}
				refs = payloadRefs(env, tenant)
				clear(env)
				found = &Deleted{ID: id, Route: f[1]}
				if hadPayload {
					if r.blob, err = w.cfg.Sealer.Seal(ctx, receiptContext(tenant, id), stripped); err != nil {
						return fmt.Errorf("forwarder: seal receipt: %w", err)
					}
					changed = true
				}
			}
			recs = append(recs, r)
			return nil
		})
		if err != nil {
			return nil, err
		}
		if !changed {
			continue
		}
		touched = append(touched, m.Seq)
		ttl := time.Duration(0)
		if v, err := strconv.ParseInt(m.Header[queue.HeaderTTL], 10, 64); err == nil && v > 0 {
			// The rewritten message expires when the original would have.
			ttl = max(time.Second, m.Time.Add(time.Duration(v)*time.Second).Sub(now))
		}
		for i := range recs {
			recs[i].ttl = ttl
		}
		if len(recs) > 0 {
			out = append(out, rewrite{recs: recs, ttl: ttl})
		}
	}
	if found == nil {
		return nil, fmt.Errorf("%w: receipt %s", ErrNotFound, id)
	}
	// A deletion is recorded before it is done: a failure part-way is
	// then repeated, never unrecorded.
	details := map[string]string{"route": found.Route, "attachments": strconv.Itoa(len(refs))}
	if err := w.audit(ctx, entry.Entry{Actor: actorFrom(ctx), Action: entry.ActionDeleted, Tenant: tenant, Target: id,
		Outcome: entry.OutcomeSuccess, Details: details}); err != nil {
		return nil, err
	}
	for _, rw := range out {
		if _, err := w.storeRecords(ctx, w.cfg.Receipts, subject, receiptsFormat, rw.recs, nil); err != nil {
			return nil, fmt.Errorf("forwarder: rewrite receipts: %w", err)
		}
	}
	for _, seq := range touched {
		if err := w.cfg.Receipts.Erase(ctx, seq); err != nil {
			return nil, err
		}
	}
	if w.cfg.Attachments != nil {
		for _, ref := range refs {
			if err := w.cfg.Attachments.Erase(ctx, ref); err != nil {
				return nil, err
			}
			found.Attachments++
		}
	}
	// The dead-letter stream refuses single deletes; a purge of the
	// receipt's own subjects (one per endpoint) removes its dead letters.
	for _, dlq := range []string{dlqSubject(tenant, found.Route, id, DefaultEndpoint), dlqSubject(tenant, found.Route, id, DefaultEndpoint) + ".*"} {
		if _, err := w.cfg.DeadLetters.Last(ctx, dlq); err == nil {
			if err := w.cfg.DeadLetters.Purge(ctx, dlq); err != nil {
				return nil, err
			}
			found.DeadLetters = true
		} else if !errors.Is(err, queue.ErrNotFound) {
			return nil, err
		}
	}
	return found, nil
}

// stripPayload returns the envelope without its payload member and
// whether it had one. The receipt and signature members are kept byte for
// byte.
func stripPayload(env []byte) ([]byte, bool, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(env, &top); err != nil {
		return nil, false, fmt.Errorf("forwarder: stored receipt: %w", err)
	}
	_, had := top["payload"]
	out, err := ingress.EncodeJSON(struct {
		Receipt   json.RawMessage `json:"receipt"`
		Signature json.RawMessage `json:"signature"`
	}{top["receipt"], top["signature"]})
	if err != nil {
		return nil, false, err
	}
	return bytes.TrimRight(out, "\n"), had, nil
}

// payloadRefs returns the object names ("<tenant>/<name>") a mail payload
// refers to: the ref of each attachment and the text and html bodies
// stored by reference.
func payloadRefs(env []byte, tenant string) []string {
	var doc struct {
		Payload struct {
			TextRef     string `json:"text_ref"`
			HTMLRef     string `json:"html_ref"`
			Attachments []struct {
				Ref string `json:"ref"`
			} `json:"attachments"`
		} `json:"payload"`
	}
	if json.Unmarshal(env, &doc) != nil {
		return nil
	}
	cand := []string{doc.Payload.TextRef, doc.Payload.HTMLRef}
	for _, a := range doc.Payload.Attachments {
		cand = append(cand, a.Ref)
	}
	prefix := "attachments/" + tenant + "/"
	var out []string
	for _, c := range cand {
		if name, ok := strings.CutPrefix(c, prefix); ok && name != "" && !strings.ContainsAny(name, "/.") && !slices.Contains(out, tenant+"/"+name) {
			out = append(out, tenant+"/"+name)
		}
	}
	return out
}

// DeleteTenantData removes every receipt, attempt record, dead letter,
// attachment, endpoint secret and pending operational event of tenant
// from the store. It is the second half of deleting a tenant, after its
// key was destroyed (which alone makes all of it unreadable, backups
// included); it frees the space.
func (w *Worker) DeleteTenantData(ctx context.Context, tenant string) error {
	if err := checkTenant(tenant); err != nil {
		return err
	}
	for _, p := range []struct {
		s       *queue.Stream
		subject string
	}{
		{w.cfg.Receipts, "receipt." + tenant + ".>"},
		{w.cfg.Attempts, "attempts." + tenant + ".>"},
		{w.cfg.DeadLetters, "dlq." + tenant + ".>"},
	} {
		if err := p.s.Purge(ctx, p.subject); err != nil {
			return err
		}
	}
	if w.cfg.OpEvents != nil {
		if err := w.cfg.OpEvents.Purge(ctx, "opevents."+tenant+".>"); err != nil {
			return err
		}
	}
	if w.cfg.Attachments != nil {
		objs, err := w.cfg.Attachments.List(ctx, tenant+"/")
		if err != nil {
			return err
		}
		for _, o := range objs {
			if err := w.cfg.Attachments.Delete(ctx, o.Name); err != nil {
				return err
			}
		}
	}
	for _, prefix := range []string{"secrets.", "disabled."} {
		keys, err := w.cfg.EndpointState.Keys(ctx, prefix+tenant+".*")
		if err != nil && !errors.Is(err, queue.ErrNotFound) {
			return err
		}
		for _, key := range keys {
			if err := w.cfg.EndpointState.Delete(ctx, key); err != nil && !errors.Is(err, queue.ErrNotFound) {
				return err
			}
		}
	}
	return nil
}

// EachReceipt calls fn with the id and envelope of every receipt of
// tenant, in the order they were stored (the first stored of each id).
// For exports; an error from fn stops it.
func (w *Worker) EachReceipt(ctx context.Context, tenant string, fn func(id string, env []byte) error) error {
	if err := checkTenant(tenant); err != nil {
		return err
	}
	seen := map[string]bool{}
	return w.cfg.Receipts.Read(ctx, queue.ReadOptions{Filter: "receipt." + tenant + ".>"}, func(m *queue.Msg) error {
		if m.Header[hdrFormat] != receiptsFormat {
			return fmt.Errorf("forwarder: %s seq %d: format %q", w.cfg.Receipts.Name(), m.Seq, signer.Truncate(m.Header[hdrFormat], 40))
		}
		return queue.EachRecord(m.Data, func(f []string, blob []byte) error {
			if len(f) != 2 || seen[f[0]] {
				return nil
			}
			seen[f[0]] = true
			env, err := w.openReceipt(ctx, tenant, f[0], blob)
			if err != nil {
				return err
			}
			return fn(f[0], env)
		})
	})
}

// EachAttempt calls fn with every attempt record of tenant, in the order
// they were stored.
func (w *Worker) EachAttempt(ctx context.Context, tenant string, fn func(id string, a Attempt) error) error {
	if err := checkTenant(tenant); err != nil {
		return err
	}
	return w.cfg.Attempts.Read(ctx, queue.ReadOptions{Filter: "attempts." + tenant + ".>"}, func(m *queue.Msg) error {
		return queue.EachRecord(m.Data, func(f []string, blob []byte) error {
			if len(f) != attemptFields && len(f) != attemptFieldsBefore {
				return nil
			}
			a, err := w.openAttempt(ctx, tenant, f[0], m.Seq, blob)
			if err != nil {
				return err
			}
			return fn(f[0], a)
		})
	})
}
