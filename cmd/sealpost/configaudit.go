package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/sealpost/sealpost/audit"
	"github.com/sealpost/sealpost/queue"
)

// configBucket remembers what the last start's configuration was, so that
// a start with a changed file records what changed: API keys live in the
// configuration file, so adding one is its creation and removing one (or
// replacing its hash) its revocation.
var configBucket = queue.KVConfig{Bucket: "CONFIG", History: 5}

// configState is stored in configBucket: digests only, no key hashes.
type configState struct {
	// Digest of the whole configuration as loaded.
	Digest string `json:"digest"`
	// Keys maps "<tenant>/<key id>" to a digest of the key's hash and routes.
	Keys map[string]string `json:"keys"`
}

func digestJSON(v any) string {
	b, _ := json.Marshal(v)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

func currentConfigState(cfg *Config) configState {
	st := configState{Digest: digestJSON(cfg), Keys: map[string]string{}}
	for _, t := range cfg.Tenants {
		for _, k := range t.APIKeys {
			st.Keys[t.Name+"/"+k.ID] = digestJSON(k)
		}
	}
	return st
}

// auditConfig records config.reload, apikey.create and apikey.revoke
// entries for what changed since the configuration the last start recorded,
// then records this one. Entries come first: a crash in between records the
// change again, never loses it.
func (g *gateway) auditConfig(ctx context.Context) error {
	kv, err := g.q.KV(ctx, configBucket)
	if err != nil {
		return err
	}
	cur := currentConfigState(g.cfg)
	var prev configState
	raw, rev, err := kv.Get(ctx, "state")
	switch {
	case errors.Is(err, queue.ErrNotFound):
	case err != nil:
		return err
	default:
		if err := json.Unmarshal(raw, &prev); err != nil {
			return fmt.Errorf("config state: %w", err)
		}
	}
	if prev.Digest == cur.Digest {
		return nil
	}
	entry := func(action, tenantKey string) audit.Entry {
		tenant, id, _ := strings.Cut(tenantKey, "/") // neither part holds a "/"
		return audit.Entry{Actor: "config", Action: action, Tenant: tenant, Target: id, Outcome: audit.OutcomeSuccess}
	}
	es := []audit.Entry{{Actor: "config", Action: audit.ActionConfigReload, Target: "config", Outcome: audit.OutcomeSuccess,
		Details: map[string]string{"digest": cur.Digest, "previous": prev.Digest}}}
	for _, k := range slices.Sorted(maps.Keys(prev.Keys)) {
		if cur.Keys[k] != prev.Keys[k] {
			es = append(es, entry(audit.ActionAPIKeyRevoke, k))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(cur.Keys)) {
		if cur.Keys[k] != prev.Keys[k] {
			es = append(es, entry(audit.ActionAPIKeyCreate, k))
		}
	}
	if err := g.auditLog.AppendAll(ctx, es...); err != nil {
		return err
	}
	b, _ := json.Marshal(cur)
	if rev == 0 {
		_, err = kv.Create(ctx, "state", b)
	} else {
		_, err = kv.Update(ctx, "state", b, rev)
	}
	if errors.Is(err, queue.ErrConflict) {
		return nil // another instance with this file recorded it meanwhile
	}
	return err
}
