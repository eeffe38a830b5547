package queue_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sealpost/sealpost/ingress"
	"github.com/sealpost/sealpost/keyring/kms"
	"github.com/sealpost/sealpost/queue"
)

func openConn(t *testing.T, dir string) *queue.Conn {
	t.Helper()
	c, err := queue.Open(context.Background(), queue.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func sealer(t *testing.T, dir string) *kms.Envelope {
	t.Helper()
	kek, err := kms.OpenLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	env, err := kms.New(kms.Config{KEK: kek})
	if err != nil {
		t.Fatal(err)
	}
	return env
}

func submission(id, marker string) *ingress.Submission {
	return &ingress.Submission{
		ID: id, Tenant: "acme", Route: "invoices", Channel: ingress.ChannelHTTPS,
		ReceivedAt: time.Now().UTC(), Source: json.RawMessage(`{"remote_addr":"127.0.0.1:1"}`),
		Payload: json.RawMessage(fmt.Sprintf(`{"marker":%q}`, marker)), RawSHA256: "x", RawSize: 10,
	}
}

// TestPublishConsume sends submissions through INGEST and checks that the
// consumer gets them back intact, that the same id is stored once, and
// that the payload is not on disk in plaintext.
func TestPublishConsume(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	c := openConn(t, dir)
	env := sealer(t, dir)
	pub := c.Publisher(env)
	const marker = "MARKER-7d1f0c3e-plaintext"
	ids := []string{ingress.NewID(time.Now()), ingress.NewID(time.Now())}
	for _, id := range ids {
		if err := pub.Enqueue(ctx, submission(id, marker)); err != nil {
			t.Fatal(err)
		}
	}
	// A retried publish of the same submission is stored once.
	if err := pub.Enqueue(ctx, submission(ids[0], marker)); err != nil {
		t.Fatal(err)
	}
	got := make(chan *queue.Delivery, 10)
	cons, err := c.Consume(ctx, queue.ConsumerConfig{Workers: 2}, env, func(ctx context.Context, d *queue.Delivery) {
		if err := d.Ack(ctx); err != nil {
			t.Error(err)
		}
		got <- d
	})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for range ids {
		select {
		case d := <-got:
			if !strings.Contains(string(d.Submission.Payload), marker) || d.Attempt != 1 {
				t.Errorf("delivery %s: payload %s attempt %d", d.Submission.ID, d.Submission.Payload, d.Attempt)
			}
			seen[d.Submission.ID] = true
		case <-time.After(10 * time.Second):
			t.Fatal("no delivery")
		}
	}
	select {
	case d := <-got:
		t.Fatalf("duplicate delivery of %s", d.Submission.ID)
	case <-time.After(300 * time.Millisecond):
	}
	cons.Stop(ctx)
	for _, id := range ids {
		if !seen[id] {
			t.Errorf("%s not delivered", id)
		}
	}
	err = filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if strings.Contains(string(b), marker) {
			t.Errorf("%s holds the payload in plaintext", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestRetryRedelivers checks that Retry hands the message back with a
// higher attempt count.
func TestRetryRedelivers(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	c := openConn(t, dir)
	env := sealer(t, dir)
	if err := c.Publisher(env).Enqueue(ctx, submission(ingress.NewID(time.Now()), "m")); err != nil {
		t.Fatal(err)
	}
	attempts := make(chan int, 10)
	cons, err := c.Consume(ctx, queue.ConsumerConfig{}, env, func(ctx context.Context, d *queue.Delivery) {
		attempts <- d.Attempt
		if d.Attempt < 3 {
			_ = d.Retry(10 * time.Millisecond)
			return
		}
		_ = d.Ack(ctx)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Stop(ctx)
	for want := 1; want <= 3; want++ {
		select {
		case got := <-attempts:
			if got != want {
				t.Fatalf("attempt %d, want %d", got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("attempt %d never came", want)
		}
	}
}

// TestEnqueueTooLarge checks the size limit is a permanent, typed error.
func TestEnqueueTooLarge(t *testing.T) {
	dir := t.TempDir()
	c := openConn(t, dir)
	s := submission(ingress.NewID(time.Now()), strings.Repeat("x", 9<<20))
	err := c.Publisher(sealer(t, dir)).Enqueue(context.Background(), s)
	if !errors.Is(err, ingress.ErrTooLarge) || ingress.IsTemporary(err) {
		t.Fatalf("got %v, want a permanent ErrTooLarge", err)
	}
}

// TestKVCompareAndSet checks the outcomes other packages branch on.
func TestKVCompareAndSet(t *testing.T) {
	ctx := context.Background()
	c := openConn(t, t.TempDir())
	kv, err := c.KV(ctx, queue.KVConfig{Bucket: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := kv.Get(ctx, "a"); !errors.Is(err, queue.ErrNotFound) {
		t.Fatalf("get missing: %v", err)
	}
	rev, err := kv.Create(ctx, "a", []byte("1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(ctx, "a", []byte("2")); !errors.Is(err, queue.ErrConflict) {
		t.Fatalf("second create: %v", err)
	}
	if _, err := kv.Update(ctx, "a", []byte("3"), rev+10); !errors.Is(err, queue.ErrConflict) {
		t.Fatalf("stale update: %v", err)
	}
	if _, err := kv.Update(ctx, "a", []byte("4"), rev); err != nil {
		t.Fatal(err)
	}
	v, _, err := kv.Get(ctx, "a")
	if err != nil || string(v) != "4" {
		t.Fatalf("get: %q %v", v, err)
	}
	keys, err := kv.Keys(ctx, "")
	if err != nil || len(keys) != 1 || keys[0] != "a" {
		t.Fatalf("keys: %v %v", keys, err)
	}
}

// TestStreamRead checks Read visits exactly the selected messages in order.
func TestStreamRead(t *testing.T) {
	ctx := context.Background()
	c := openConn(t, t.TempDir())
	s, err := c.Stream(ctx, queue.StreamConfig{Name: "LOG", Subjects: []string{"log.>"}, DenyDelete: true, DenyPurge: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Read(ctx, queue.ReadOptions{}, func(*queue.Msg) error { return errors.New("empty stream visited") }); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		subj := "log.a"
		if i%2 == 1 {
			subj = "log.b"
		}
		if _, err := s.Append(ctx, subj, "", map[string]string{"N": fmt.Sprint(i)}, []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	err = s.Read(ctx, queue.ReadOptions{Filter: "log.b", StartSeq: 3}, func(m *queue.Msg) error {
		got = append(got, string(m.Data)+":"+m.Header["N"])
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := "3:3 5:5 7:7 9:9"; strings.Join(got, " ") != want {
		t.Fatalf("read %v, want %s", got, want)
	}
	last, err := s.Last(ctx, "log.a")
	if err != nil || string(last.Data) != "8" {
		t.Fatalf("last: %v %v", last, err)
	}
}

// TestCollector checks the scrape-time metrics report the backlog.
func TestCollector(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	c := openConn(t, dir)
	env := sealer(t, dir)
	for range 3 {
		if err := c.Publisher(env).Enqueue(ctx, submission(ingress.NewID(time.Now()), "m")); err != nil {
			t.Fatal(err)
		}
	}
	// The consumer exists once Consume declared it; stop it before it takes anything.
	cons, err := c.Consume(ctx, queue.ConsumerConfig{}, env, func(context.Context, *queue.Delivery) {})
	if err != nil {
		t.Fatal(err)
	}
	cons.Stop(ctx)
	got := gather(t, c)
	if got["sealpost_queue_up"] != 1 || got["sealpost_queue_stream_messages/INGEST"] != 3 {
		t.Fatalf("metrics %v", got)
	}
	if got["sealpost_queue_ingest_pending"]+got["sealpost_queue_ingest_ack_pending"] != 3 {
		t.Fatalf("backlog not reported: %v", got)
	}
	if got["sealpost_queue_ingest_max_ack_pending"] != 250_000 {
		t.Errorf("max_ack_pending %v, want the default 250000", got["sealpost_queue_ingest_max_ack_pending"])
	}
}

// TestUnopenableIsQuarantined: a message sealed under another master key
// is not deleted: it moves, still sealed, to QUARANTINE, and the handler
// never sees it.
func TestUnopenableIsQuarantined(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	c := openConn(t, dir)
	other := sealer(t, t.TempDir()) // another instance's local master key
	id := ingress.NewID(time.Now())
	if err := c.Publisher(other).Enqueue(ctx, submission(id, "q")); err != nil {
		t.Fatal(err)
	}
	called := make(chan struct{}, 1)
	recorded := make(chan string, 4)
	cfg := queue.ConsumerConfig{Quarantined: func(_ context.Context, tenant, id, class string) error {
		recorded <- tenant + " " + id + " " + class
		return nil
	}}
	cons, err := c.Consume(ctx, cfg, sealer(t, dir), func(ctx context.Context, d *queue.Delivery) {
		called <- struct{}{}
		_ = d.Ack(ctx)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Stop(ctx)
	q, err := c.Stream(ctx, queue.StreamConfig{Name: queue.QuarantineStream, Subjects: []string{"quarantine.>"}, DenyDelete: true})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := q.State(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Msgs == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("message not quarantined")
		}
		time.Sleep(20 * time.Millisecond)
	}
	m, err := q.Get(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if m.Header["Sealpost-Tenant"] != "acme" || m.Header["Sealpost-Quarantine-Reason"] == "" || strings.Contains(string(m.Data), `"marker"`) {
		t.Errorf("quarantined message %+v", m.Header)
	}
	// The quarantined copy still opens with the key that sealed it.
	if _, err := other.Open(ctx, kms.Context{Tenant: "acme", Purpose: kms.PurposeIngest, ObjectID: m.Header["Sealpost-Id"]}, m.Data); err != nil {
		t.Errorf("quarantined copy does not open with its key: %v", err)
	}
	select {
	case r := <-recorded:
		if r != "acme "+id+" unopenable" {
			t.Errorf("quarantine recorded as %q", r)
		}
	case <-time.After(10 * time.Second):
		t.Error("the quarantine was not reported to ConsumerConfig.Quarantined")
	}
	// The message leaves INGEST once the quarantine was recorded.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		got := gather(t, c)
		if got["sealpost_queue_stream_messages/INGEST"] == 0 && got["sealpost_queue_quarantined_total"] == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after quarantine: %v", got)
		}
	}
	select {
	case <-called:
		t.Fatal("the handler got an unopenable message")
	default:
	}
}

// gather scrapes c's collector into name/label -> value.
func gather(t *testing.T, c *queue.Conn) map[string]float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(c.Collector(""))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range m.GetLabel() {
				key += "/" + l.GetValue()
			}
			got[key] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	return got
}

// TestConsumerSurvivesDeletion: when the durable consumer disappears on the
// server (an operator deleted it, a cluster lost it), the workers declare it
// again and keep delivering instead of going quiet.
func TestConsumerSurvivesDeletion(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c, err := queue.Open(ctx, queue.Config{DataDir: dir, ListenAddr: addr})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	env := sealer(t, dir)
	got := make(chan string, 10)
	cons, err := c.Consume(ctx, queue.ConsumerConfig{}, env, func(ctx context.Context, d *queue.Delivery) {
		_ = d.Ack(ctx)
		got <- d.Submission.ID
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Stop(ctx)
	nc, err := nats.Connect(c.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if err := js.DeleteConsumer(ctx, queue.IngestStream, "forwarder"); err != nil {
		t.Fatal(err)
	}
	id := ingress.NewID(time.Now())
	if err := c.Publisher(env).Enqueue(ctx, submission(id, "after")); err != nil {
		t.Fatal(err)
	}
	select {
	case g := <-got:
		if g != id {
			t.Fatalf("got %s", g)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("nothing delivered after the consumer was deleted")
	}
	if !cons.Alive() {
		t.Error("consumer not alive after re-subscribing")
	}
}

// TestEmbeddedSync: by default every write is flushed to disk before it is
// acknowledged; a sync interval is used only when configured.
func TestEmbeddedSync(t *testing.T) {
	if jc := openConn(t, t.TempDir()).EmbeddedJetStreamConfig(); !jc.SyncAlways {
		t.Errorf("default embedded server: SyncAlways = false, interval %s", jc.SyncInterval)
	}
	c, err := queue.Open(context.Background(), queue.Config{DataDir: t.TempDir(), SyncInterval: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if jc := c.EmbeddedJetStreamConfig(); jc.SyncAlways || jc.SyncInterval != 5*time.Second {
		t.Errorf("with SyncInterval 5s: SyncAlways %v, interval %s", jc.SyncAlways, jc.SyncInterval)
	}
}
