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
	"sync"
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

// publisher returns a Publisher on c that c's cleanup closes.
func publisher(t *testing.T, c *queue.Conn, s queue.Sealer, cfg queue.PublisherConfig) *queue.Publisher {
	t.Helper()
	p, err := c.Publisher(s, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// ackAll is a handler that finishes every submission and reports them.
func ackAll(got chan<- *queue.Delivery) queue.Handler {
	return func(_ context.Context, ds []*queue.Delivery) []queue.Outcome {
		outs := make([]queue.Outcome, len(ds))
		for i, d := range ds {
			outs[i] = queue.Ack()
			got <- d
		}
		return outs
	}
}

// TestPublishConsume sends concurrent submissions through INGEST and checks
// that they share messages, that the consumer gets each back intact once,
// and that the payload is not on disk in plaintext.
func TestPublishConsume(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	c := openConn(t, dir)
	env := sealer(t, dir)
	pub := publisher(t, c, env, queue.PublisherConfig{Flushers: 1})
	const marker = "MARKER-7d1f0c3e-plaintext"
	const n = 64
	var ids [n]string
	errs := make(chan error, n)
	start := make(chan struct{})
	for i := range n {
		ids[i] = ingress.NewID(time.Now())
		go func() {
			<-start
			errs <- pub.Enqueue(ctx, submission(ids[i], marker))
		}()
	}
	close(start)
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if got := gather(t, c)["sealpost_queue_stream_messages/INGEST"]; got >= n {
		t.Errorf("%d concurrent submissions took %v messages, want fewer", n, got)
	}
	got := make(chan *queue.Delivery, 2*n)
	cons, err := c.Consume(ctx, queue.ConsumerConfig{Workers: 2}, env, ackAll(got))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for range n {
		select {
		case d := <-got:
			if !strings.Contains(string(d.Submission.Payload), marker) || d.Attempt != 0 || d.Redelivered || !d.Due.IsZero() {
				t.Errorf("delivery %s: payload %s attempt %d redelivered %v due %v", d.Submission.ID, d.Submission.Payload, d.Attempt, d.Redelivered, d.Due)
			}
			if seen[d.Submission.ID] {
				t.Errorf("duplicate delivery of %s", d.Submission.ID)
			}
			seen[d.Submission.ID] = true
		case <-time.After(10 * time.Second):
			t.Fatal("no delivery")
		}
	}
	select {
	case d := <-got:
		t.Fatalf("extra delivery of %s", d.Submission.ID)
	case <-time.After(300 * time.Millisecond):
	}
	cons.Stop(ctx)
	if g := gather(t, c)["sealpost_queue_stream_messages/INGEST"]; g != 0 {
		t.Errorf("%v messages left in INGEST after every submission was acked", g)
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

// TestOutcomesSettle: a retry that made an attempt comes back alone with
// its new attempt count and due time while its neighbours are acked; a
// retry of a whole message that changed nothing brings the message back as
// it was.
func TestOutcomesSettle(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	c := openConn(t, dir)
	env := sealer(t, dir)
	pub := publisher(t, c, env, queue.PublisherConfig{Flushers: 1})
	retried, other := ingress.NewID(time.Now()), ingress.NewID(time.Now())
	for _, id := range []string{retried, other} {
		if err := pub.Enqueue(ctx, submission(id, "m")); err != nil {
			t.Fatal(err)
		}
	}
	type seen struct {
		id          string
		attempt     int
		due         time.Time
		redelivered bool
	}
	got := make(chan seen, 20)
	var mu sync.Mutex
	nakked := false
	cons, err := c.Consume(ctx, queue.ConsumerConfig{Workers: 1}, env, func(_ context.Context, ds []*queue.Delivery) []queue.Outcome {
		mu.Lock()
		defer mu.Unlock()
		outs := make([]queue.Outcome, len(ds))
		for i, d := range ds {
			got <- seen{d.Submission.ID, d.Attempt, d.Due, d.Redelivered}
			switch {
			case d.Submission.ID == other && !nakked:
				// Nothing could be done: the message comes back as it is.
				nakked = true
				outs[i] = queue.Retry(10*time.Millisecond, d.Attempt)
			case d.Submission.ID == retried && d.Attempt < 2:
				outs[i] = queue.Retry(20*time.Millisecond, d.Attempt+1)
			default:
				outs[i] = queue.Ack()
			}
		}
		return outs
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Stop(ctx)
	var trace []seen
	for len(trace) < 5 {
		select {
		case s := <-got:
			trace = append(trace, s)
		case <-time.After(10 * time.Second):
			t.Fatalf("stalled after %+v", trace)
		}
	}
	attempts := []int{}
	for _, s := range trace {
		if s.id == retried {
			attempts = append(attempts, s.attempt)
			if s.attempt > 0 && s.due.IsZero() {
				t.Errorf("requeued retry without a due time: %+v", s)
			}
		}
	}
	if fmt.Sprint(attempts) != "[0 1 2]" {
		t.Errorf("attempts of the retried submission %v, want [0 1 2]", attempts)
	}
	redelivered := 0
	for _, s := range trace {
		if s.id == other && s.redelivered {
			redelivered++
		}
	}
	if redelivered != 1 {
		t.Errorf("the unchanged retry came back %d times as a redelivery, want 1: %+v", redelivered, trace)
	}
	select {
	case s := <-got:
		t.Fatalf("extra delivery %+v", s)
	case <-time.After(300 * time.Millisecond):
	}
}

// TestEnqueueTooLarge checks the size limit is a permanent, typed error.
func TestEnqueueTooLarge(t *testing.T) {
	dir := t.TempDir()
	c := openConn(t, dir)
	s := submission(ingress.NewID(time.Now()), strings.Repeat("x", 9<<20))
	err := publisher(t, c, sealer(t, dir), queue.PublisherConfig{}).Enqueue(context.Background(), s)
	if !errors.Is(err, ingress.ErrTooLarge) || ingress.IsTemporary(err) {
		t.Fatalf("got %v, want a permanent ErrTooLarge", err)
	}
}

// TestPublisherClose: after Close a submission is refused with a temporary
// error, never left waiting.
func TestPublisherClose(t *testing.T) {
	dir := t.TempDir()
	c := openConn(t, dir)
	p, err := c.Publisher(sealer(t, dir), queue.PublisherConfig{})
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	err = p.Enqueue(context.Background(), submission(ingress.NewID(time.Now()), "m"))
	if !ingress.IsTemporary(err) {
		t.Fatalf("Enqueue after Close = %v, want a temporary error", err)
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
	pub := publisher(t, c, env, queue.PublisherConfig{})
	for range 3 {
		if err := pub.Enqueue(ctx, submission(ingress.NewID(time.Now()), "m")); err != nil {
			t.Fatal(err)
		}
	}
	// The consumer exists once Consume declared it; stop it before it takes anything.
	cons, err := c.Consume(ctx, queue.ConsumerConfig{}, env, func(context.Context, []*queue.Delivery) []queue.Outcome { return nil })
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

// TestUnopenableIsQuarantined: a submission sealed under another master key
// is not deleted: it moves, still sealed, to QUARANTINE, and the handler
// never sees it, while the submissions sharing its message go on.
func TestUnopenableIsQuarantined(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	c := openConn(t, dir)
	other := sealer(t, t.TempDir()) // another instance's local master key
	id := ingress.NewID(time.Now())
	if err := publisher(t, c, other, queue.PublisherConfig{}).Enqueue(ctx, submission(id, "q")); err != nil {
		t.Fatal(err)
	}
	called := make(chan *queue.Delivery, 1)
	recorded := make(chan string, 4)
	cfg := queue.ConsumerConfig{Quarantined: func(_ context.Context, tenant, id, class string) error {
		recorded <- tenant + " " + id + " " + class
		return nil
	}}
	cons, err := c.Consume(ctx, cfg, sealer(t, dir), ackAll(called))
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
	if m.Header["Sealpost-Quarantine-Reason"] == "" || m.Header["Sealpost-Count"] != "1" || strings.Contains(string(m.Data), `"marker"`) {
		t.Errorf("quarantined message %+v", m.Header)
	}
	// The quarantined copy is the submission's record, still sealed: it
	// opens with the key that sealed it.
	opened := 0
	err = queue.EachRecord(m.Data, func(f []string, blob []byte) error {
		if f[0] != "acme" || f[1] != id {
			t.Errorf("quarantined record of %v", f)
		}
		_, err := other.Open(ctx, kms.Context{Tenant: "acme", Purpose: kms.PurposeIngest, ObjectID: id}, blob)
		opened++
		return err
	})
	if err != nil || opened != 1 {
		t.Errorf("quarantined copy does not open with its key (%d records): %v", opened, err)
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
	cons, err := c.Consume(ctx, queue.ConsumerConfig{}, env, func(_ context.Context, ds []*queue.Delivery) []queue.Outcome {
		for _, d := range ds {
			got <- d.Submission.ID
		}
		return make([]queue.Outcome, len(ds))
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
	if err := publisher(t, c, env, queue.PublisherConfig{}).Enqueue(ctx, submission(id, "after")); err != nil {
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

// TestConfigValidate checks the settings Validate judges before anything
// is started or dialed.
func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    queue.Config
		want string // substring of the error; "" means valid
	}{
		{"embedded", queue.Config{}, ""},
		{"embedded with a port", queue.Config{ListenAddr: "127.0.0.1:-1", SyncInterval: queue.MaxSyncInterval}, ""},
		{"cluster", queue.Config{URL: "nats://n1:4222, tls://n2:4222", Replicas: queue.MaxReplicas}, ""},
		{"url scheme", queue.Config{URL: "http://n1:4222"}, "url must be"},
		{"port name", queue.Config{ListenAddr: "127.0.0.1:nats"}, "listen port"},
		{"listen with a url", queue.Config{URL: "nats://n1:4222", ListenAddr: "127.0.0.1:4222"}, "only applies to the embedded server"},
		{"sync with a url", queue.Config{URL: "nats://n1:4222", SyncInterval: time.Second}, "only applies to the embedded server"},
		{"replicas", queue.Config{URL: "nats://n1:4222", Replicas: queue.MaxReplicas + 1}, "replicas must be between 1 and 5"},
		{"embedded replicas", queue.Config{Replicas: 3}, "replicas above 1 need a url"},
		{"sync interval", queue.Config{SyncInterval: queue.MaxSyncInterval + 1}, "sync interval must be"},
	} {
		err := tc.c.Validate()
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: Validate() = %v, want %q", tc.name, err, tc.want)
		}
	}
	if _, err := queue.Open(context.Background(), queue.Config{DataDir: t.TempDir(), Replicas: 3}); err == nil || !strings.HasPrefix(err.Error(), "queue: replicas above 1") {
		t.Errorf("Open with embedded replicas: %v", err)
	}
}
