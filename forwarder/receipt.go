package forwarder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/sealpost/sealpost/audit"
	"github.com/sealpost/sealpost/ingress"
	"github.com/sealpost/sealpost/keyring/kms"
	"github.com/sealpost/sealpost/queue"
	"github.com/sealpost/sealpost/signer"
)

func receiptKey(tenant, id string) string { return tenant + "." + id }

func receiptContext(tenant, id string) kms.Context {
	return kms.Context{Tenant: tenant, Purpose: kms.PurposeReceipt, ObjectID: id}
}

// ensureReceipt returns the signed envelope of s. The first attempt builds
// and signs it, records message.signed and stores it sealed with a
// compare-and-set create; every later attempt (and a worker that lost the
// race) opens the stored one, so the id and signed_at never change.
//
// The audit entry is written before the receipt is stored: every stored
// receipt has its message.signed entry. A worker that loses the race leaves
// an entry for a signature that was dropped, which says so in its details.
func (w *Worker) ensureReceipt(ctx context.Context, s *ingress.Submission) ([]byte, error) {
	key := receiptKey(s.Tenant, s.ID)
	sealed, _, err := w.cfg.Receipts.Get(ctx, key)
	switch {
	case err == nil:
		return w.openReceipt(ctx, s.Tenant, s.ID, sealed)
	case !errors.Is(err, queue.ErrNotFound):
		return nil, fmt.Errorf("forwarder: read receipt: %w", err)
	}
	now := w.cfg.Now()
	cur, _, err := w.cfg.Keys.SigningKeys(ctx, now)
	if err != nil {
		return nil, fmt.Errorf("forwarder: signing keys: %w", err)
	}
	env, err := buildEnvelope(s, cur, now)
	if err != nil {
		return nil, err
	}
	sealed, err = w.cfg.Sealer.Seal(ctx, receiptContext(s.Tenant, s.ID), env)
	if err != nil {
		return nil, fmt.Errorf("forwarder: seal receipt: %w", err)
	}
	if err := w.audit(ctx, audit.Entry{Actor: "system", Action: audit.ActionSigned, Tenant: s.Tenant, Target: s.ID,
		Outcome: audit.OutcomeSuccess, Details: map[string]string{"route": s.Route, "kid": cur.KID}}); err != nil {
		return nil, err
	}
	if _, err := w.cfg.Receipts.Create(ctx, key, sealed); err != nil {
		if !errors.Is(err, queue.ErrConflict) {
			return nil, fmt.Errorf("forwarder: store receipt: %w", err)
		}
		// Another worker signed and stored it first: use theirs.
		sealed, _, err := w.cfg.Receipts.Get(ctx, key)
		if err != nil {
			return nil, fmt.Errorf("forwarder: read receipt: %w", err)
		}
		return w.openReceipt(ctx, s.Tenant, s.ID, sealed)
	}
	return env, nil
}

func (w *Worker) openReceipt(ctx context.Context, tenant, id string, sealed []byte) ([]byte, error) {
	env, err := w.cfg.Sealer.Open(ctx, receiptContext(tenant, id), sealed)
	if err != nil {
		return nil, fmt.Errorf("forwarder: open receipt: %w", err)
	}
	return env, nil
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
	env, err := signer.Sign(r, s.Payload, key)
	if err != nil {
		return nil, fmt.Errorf("forwarder: sign receipt: %w", err)
	}
	return env, nil
}

// Receipt returns the stored receipt envelope (the webhook body) of a
// receipt id, or ErrNotFound.
func (w *Worker) Receipt(ctx context.Context, tenant, id string) ([]byte, error) {
	if err := checkTokens(tenant, id); err != nil {
		return nil, err
	}
	sealed, _, err := w.cfg.Receipts.Get(ctx, receiptKey(tenant, id))
	if errors.Is(err, queue.ErrNotFound) {
		return nil, fmt.Errorf("%w: receipt %s", ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("forwarder: read receipt: %w", err)
	}
	return w.openReceipt(ctx, tenant, id, sealed)
}

// routeOf reads receipt.route from an envelope.
func routeOf(env []byte) (string, error) {
	var e struct {
		Receipt struct {
			Route string `json:"route"`
		} `json:"receipt"`
	}
	if err := json.Unmarshal(env, &e); err != nil || e.Receipt.Route == "" {
		return "", errors.New("forwarder: stored receipt has no route")
	}
	return e.Receipt.Route, nil
}

// checkTokens checks that each value is usable as a key and subject token:
// 1 to 128 letters, digits, '-' and '_'. Tenant, route and receipt ids are
// all such tokens.
func checkTokens(vs ...string) error {
	for _, v := range vs {
		if v == "" || len(v) > 128 {
			return fmt.Errorf("%w: empty or longer than 128 bytes", ErrInvalidInput)
		}
		for i := 0; i < len(v); i++ {
			c := v[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("%w: %q has characters other than letters, digits, '-' and '_'", ErrInvalidInput, v)
			}
		}
	}
	return nil
}

func (w *Worker) audit(ctx context.Context, e audit.Entry) error {
	if w.cfg.Auditor == nil {
		return nil
	}
	if e.Time.IsZero() {
		e.Time = w.cfg.Now().UTC()
	}
	if err := w.cfg.Auditor.Append(ctx, e); err != nil {
		return fmt.Errorf("forwarder: audit %s: %w", e.Action, err)
	}
	return nil
}
