package keyring

import (
	"context"
	"errors"
	"testing"

	"github.com/sealpost/sealpost/queue"
)

// TestParseHistoryFromStore reads the stored key state as an offline tool
// does: looked up, not declared, and without the KMS. It holds the same
// keys, with the same statuses, as the running keyring serves.
func TestParseHistoryFromStore(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, date("2026-03-20T00:00:00Z"))
	k := e.keyring()
	if _, err := k.Rotate(ctx, "admin"); err != nil {
		t.Fatal(err)
	}
	kv, err := e.conn.LookupKV(ctx, "KEYRING")
	if err != nil {
		t.Fatal(err)
	}
	doc, _, err := kv.Get(ctx, StateKey)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseHistory(doc, e.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	want, err := k.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Keys) != len(want) || len(want) < 3 {
		t.Fatalf("%d keys from the stored state, the keyring lists %d", len(got.Keys), len(want))
	}
	for _, w := range want {
		g, ok := got.Lookup(w.KID)
		if !ok || !g.Key.Equal(w.Key) || g.Status != w.Status {
			t.Errorf("key %s: %+v, want %+v", w.KID, g, w)
		}
	}
	if _, err := ParseHistory([]byte(`{"v":1,"keys":[{"kid":"x"}]}`), e.clock.Now()); err == nil {
		t.Error("an invalid state parsed")
	}
	if _, err := e.conn.LookupKV(ctx, "NO_SUCH_BUCKET"); !errors.Is(err, queue.ErrNotFound) {
		t.Errorf("LookupKV of a missing bucket: %v", err)
	}
	if _, err := e.conn.LookupStream(ctx, "NO_SUCH_STREAM"); !errors.Is(err, queue.ErrNotFound) {
		t.Errorf("LookupStream of a missing stream: %v", err)
	}
}
