package forwarder

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sealpost/sealpost/audit/entry"
	"github.com/sealpost/sealpost/ingress"
	"github.com/sealpost/sealpost/keyring/kms"
	"github.com/sealpost/sealpost/signer"
)

func receiptContext(tenant, id string) kms.Context {
	return kms.Context{Tenant: tenant, Purpose: kms.PurposeReceipt, ObjectID: id}
}

// storedReceipt is the first receipt stored for an id.
type storedReceipt struct {
	seq    uint64
	route  string
	sealed []byte
}

// receiptsOf returns the first receipt stored for each id of a group. The
// sealed bytes are kept only where keep says so (nil keeps all).
func (w *Worker) receiptsOf(ctx context.Context, k groupKey, keep func(id string, seq uint64) bool) (map[string]storedReceipt, error) {
	out := map[string]storedReceipt{}
	err := eachRecord(ctx, w.cfg.Receipts, receiptSubject(k.tenant, k.group), receiptsFormat, func(seq uint64, f []string, blob []byte) error {
		if len(f) != 2 {
			return fmt.Errorf("forwarder: receipt record at seq %d has %d fields", seq, len(f))
		}
		if _, ok := out[f[0]]; !ok {
			r := storedReceipt{seq: seq, route: f[1]}
			if keep == nil || keep(f[0], seq) {
				r.sealed = bytes.Clone(blob)
			}
			out[f[0]] = r
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("forwarder: read receipts: %w", err)
	}
	return out, nil
}

func (w *Worker) openReceipt(ctx context.Context, tenant, id string, sealed []byte) ([]byte, error) {
	env, err := w.cfg.Sealer.Open(ctx, receiptContext(tenant, id), sealed)
	if err != nil {
		return nil, fmt.Errorf("forwarder: open receipt: %w", err)
	}
	return env, nil
}

// ensureReceipts gives every item without one its signed envelope: the
// first time an id is handled its receipt is built and signed,
// message.signed is recorded, and it is stored sealed; a receipt stored
// first by another worker is used instead (see storeReceipts). Items that
// cannot get one now are concluded with an internal retry.
func (w *Worker) ensureReceipts(ctx context.Context, items []*item) {
	var todo []*item
	for _, it := range items {
		if !it.done && it.env == nil {
			todo = append(todo, it)
		}
	}
	if len(todo) == 0 {
		return
	}
	now := w.cfg.Now()
	cur, _, err := w.cfg.Keys.SigningKeys(ctx, now)
	if err != nil {
		w.retryLaterAll(todo, fmt.Errorf("forwarder: signing keys: %w", err))
		return
	}
	signed := make([]entry.Entry, 0, len(todo))
	groups := map[groupKey][]*item{}
	var keys []groupKey
	for _, it := range todo {
		env, err := buildEnvelope(it.s, cur, now)
		if err != nil {
			// The submission passed Validate; only a bug or a payload JCS
			// refuses gets here, and trying again will not help.
			it.log().Error("forwarder: receipt cannot be built; dropped", "err", err)
			it.finish(ackOutcome)
			continue
		}
		sealed, err := w.cfg.Sealer.Seal(ctx, receiptContext(it.s.Tenant, it.s.ID), env)
		if err != nil {
			it.retryLater(w, fmt.Errorf("forwarder: seal receipt: %w", err))
			continue
		}
		it.env, it.sealed = env, sealed
		signed = append(signed, entry.Entry{Time: now.UTC(), Actor: "system", Action: entry.ActionSigned, Tenant: it.s.Tenant,
			Target: it.s.ID, Outcome: entry.OutcomeSuccess, Details: map[string]string{"route": it.s.Route, "kid": cur.KID}})
		if _, ok := groups[it.key]; !ok {
			keys = append(keys, it.key)
		}
		groups[it.key] = append(groups[it.key], it)
	}
	if len(keys) == 0 {
		return
	}
	// Every stored receipt has its message.signed entry.
	if err := w.auditAll(ctx, signed...); err != nil {
		for _, k := range keys {
			w.retryLaterAll(groups[k], err)
		}
		return
	}
	var wg sync.WaitGroup
	for _, k := range keys {
		wg.Go(func() { w.storeReceipts(ctx, k, groups[k]) })
	}
	wg.Wait()
}

// buildEnvelope makes the signed receipt envelope of s (DESIGN.md, receipt
// envelope v1): the receipt members from the submission, kid and signed_at
// from the key and the clock, payload_sha256 over JCS(payload).
func buildEnvelope(s *ingress.Submission, key signer.PrivateKey, now time.Time) ([]byte, error) {
	// signer.Sign sets v, kid and payload_sha256.
	r := signer.Receipt{
		ID:         s.ID,
		Tenant:     s.Tenant,
		Route:      s.Route,
		Channel:    s.Channel,
		ReceivedAt: signer.FormatTime(s.ReceivedAt),
		SignedAt:   signer.FormatTime(now),
		Source:     s.Source,
		RawSHA256:  s.RawSHA256,
		RawSize:    s.RawSize,
	}
	sign := signer.Sign
	if s.PayloadJCS {
		sign = func(r signer.Receipt, p json.RawMessage, key signer.PrivateKey) ([]byte, error) {
			return signer.SignCanonical(r, p, key)
		}
	}
	env, err := sign(r, s.Payload, key)
	if err != nil {
		return nil, fmt.Errorf("forwarder: sign receipt: %w", err)
	}
	return env, nil
}

// Receipt returns the stored receipt envelope (the webhook body) of a
// receipt id, or ErrNotFound.
func (w *Worker) Receipt(ctx context.Context, tenant, id string) ([]byte, error) {
	if err := cmp.Or(checkTenant(tenant), checkID(id)); err != nil {
		return nil, err
	}
	k, err := groupOf(tenant, id)
	if err != nil {
		return nil, fmt.Errorf("%w: receipt %s", ErrNotFound, signer.Truncate(id, 64))
	}
	stored, err := w.receiptsOf(ctx, k, func(rid string, _ uint64) bool { return rid == id })
	if err != nil {
		return nil, err
	}
	r, ok := stored[id]
	if !ok {
		return nil, fmt.Errorf("%w: receipt %s", ErrNotFound, id)
	}
	return w.openReceipt(ctx, tenant, id, r.sealed)
}

// receiptFields are the members of a stored receipt the worker reads back.
type receiptFields struct {
	Route   string `json:"route"`
	Channel string `json:"channel"`
	Source  struct {
		EventType string `json:"event_type"`
	} `json:"source"`
}

func (r receiptFields) eventType() string {
	if r.Source.EventType == "" && r.Channel == ingress.ChannelSMTP {
		return ingress.EventTypeMail
	}
	return r.Source.EventType
}

// receiptOf reads the route and event type from an envelope.
func receiptOf(env []byte) (receiptFields, error) {
	var e struct {
		Receipt receiptFields `json:"receipt"`
	}
	if err := json.Unmarshal(env, &e); err != nil || e.Receipt.Route == "" {
		return receiptFields{}, errors.New("forwarder: stored receipt has no route")
	}
	return e.Receipt, nil
}

// auditAll appends entries and returns once they are durable.
func (w *Worker) auditAll(ctx context.Context, es ...entry.Entry) error {
	if w.cfg.Auditor == nil || len(es) == 0 {
		return nil
	}
	for i := range es {
		if es[i].Time.IsZero() {
			es[i].Time = w.cfg.Now().UTC()
		}
	}
	if err := w.cfg.Auditor.AppendAll(ctx, es...); err != nil {
		return fmt.Errorf("forwarder: audit %s: %w", es[0].Action, err)
	}
	return nil
}

func (w *Worker) audit(ctx context.Context, e entry.Entry) error { return w.auditAll(ctx, e) }
