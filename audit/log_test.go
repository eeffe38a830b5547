package audit

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sealpost/sealpost/queue"
)

func TestAppendThenVerify(t *testing.T) {
	ctx := context.Background()
	l, entries, cps, keys := newTestLog(t, "APPEND")

	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() { errs <- l.Append(ctx, testEntry(i, "acme")) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := entries.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Msgs >= n {
		t.Errorf("%d concurrent appends took %d publishes, want fewer", n, st.Msgs)
	}
	ro := openLog(t, entries, cps, nil, nil)
	rep, err := ro.Verify(ctx, keys.keySet())
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK || rep.Entries != n || rep.Size != n || rep.Verified != n || rep.Checkpoints != 1 {
		t.Fatalf("report = %+v, want OK with %d entries verified by 1 checkpoint", rep, n)
	}
}

func TestReopenRecoversTree(t *testing.T) {
	ctx := context.Background()
	c := openConn(t)
	entries, cps := plainStreams(t, c, "REOPEN")
	keys := &testKeys{cur: newTestKey(t, "a")}
	l1 := openLog(t, entries, cps, keys, nil)
	for i := range 10 {
		if err := l1.Append(ctx, testEntry(i, "acme")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l1.signCheckpoint(ctx, true); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := l1.Append(ctx, testEntry(100+i, "beta")); err != nil {
			t.Fatal(err)
		}
	}
	// A second log on the same stream (another instance) builds its tree
	// from the checkpoint plus the entries after it, and both keep
	// appending without waiting for each other.
	l2 := openLog(t, entries, cps, keys, nil)
	if got, err := l2.Size(ctx); err != nil || got != 15 {
		t.Fatalf("recovered size %d (%v), want 15", got, err)
	}
	for i := range 6 {
		w := l1
		if i%2 == 1 {
			w = l2
		}
		if err := w.Append(ctx, testEntry(200+i, "acme")); err != nil {
			t.Fatal(err)
		}
	}
	if err := l1.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := l2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	rep, err := l2.Verify(ctx, keys.keySet())
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK || rep.Size != 21 || rep.Verified != 21 {
		t.Fatalf("report = %+v, want OK with 21 entries verified", rep)
	}
}

func TestAppendRefusesInvalid(t *testing.T) {
	c := openConn(t)
	entries, cps := plainStreams(t, c, "INVALID")
	l := openLog(t, entries, cps, &testKeys{cur: newTestKey(t, "a")}, nil)
	long := strings.Repeat("x", MaxFieldLen+1)
	many := map[string]string{}
	for i := range MaxDetails + 1 {
		many[string(rune('a'+i%26))+strings.Repeat("k", i)] = "v"
	}
	big := map[string]string{}
	for i := range 10 {
		big[string(rune('a'+i))] = strings.Repeat("v", MaxFieldLen)
	}
	ok := testEntry(1, "acme")
	tests := []struct {
		name string
		mod  func(*Entry)
		want string
	}{
		{"no action", func(e *Entry) { e.Action = "" }, "action is empty"},
		{"bad action", func(e *Entry) { e.Action = "Key Rotate" }, "lowercase dotted"},
		{"bad outcome", func(e *Entry) { e.Outcome = "ok" }, "outcome"},
		{"no actor", func(e *Entry) { e.Actor = "" }, "actor is empty"},
		{"long target", func(e *Entry) { e.Target = long }, "target is"},
		{"bad utf8", func(e *Entry) { e.Tenant = "\xff" }, "not valid UTF-8"},
		{"many details", func(e *Entry) { e.Details = many }, "details, limit"},
		{"too big", func(e *Entry) { e.Details = big }, "bytes encoded, limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := ok
			e.Details = map[string]string{"status": "202"}
			tt.mod(&e)
			err := l.Append(context.Background(), e)
			if !errors.Is(err, ErrInvalidEntry) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Append = %v, want ErrInvalidEntry mentioning %q", err, tt.want)
			}
		})
	}
	if got, _ := l.Size(context.Background()); got != 0 {
		t.Fatalf("size %d after invalid appends, want 0", got)
	}
}

func TestAppendRemovesMailLocalParts(t *testing.T) {
	ctx := context.Background()
	c := openConn(t)
	entries, cps := plainStreams(t, c, "REDACT")
	l := openLog(t, entries, cps, &testKeys{cur: newTestKey(t, "a")}, nil)
	e := testEntry(1, "acme")
	e.Target = "rcpt alice.smith+tag@mail.example.com"
	e.Details = map[string]string{"from": "<bob@example.org>", "note": "no address here"}
	if err := l.Append(ctx, e); err != nil {
		t.Fatal(err)
	}
	var stored []byte
	err := entries.Read(ctx, queue.ReadOptions{}, func(m *queue.Msg) error { stored = m.Data; return nil })
	if err != nil {
		t.Fatal(err)
	}
	for _, local := range []string{"alice", "smith", "bob"} {
		if strings.Contains(string(stored), local) {
			t.Errorf("stored record %s contains the local part %q", stored, local)
		}
	}
	if !strings.Contains(string(stored), "*@mail.example.com") || !strings.Contains(string(stored), "*@example.org") {
		t.Errorf("stored record %s lost the domains", stored)
	}
}

func TestOpenRefusesDenyStreamsWithoutConn(t *testing.T) {
	_, err := Open(context.Background(), Config{Origin: testOrigin})
	if err == nil {
		t.Fatal("Open without conn or streams succeeded")
	}
	_, err = Open(context.Background(), Config{Origin: "has space"})
	if err == nil || !strings.Contains(err.Error(), "origin") {
		t.Fatalf("Open with a bad origin = %v", err)
	}
}

func TestConcurrentWritersShareStream(t *testing.T) {
	ctx := context.Background()
	c := openConn(t)
	entries, cps := plainStreams(t, c, "SHARED")
	keys := &testKeys{cur: newTestKey(t, "a")}
	writers := []*Log{openLog(t, entries, cps, keys, nil), openLog(t, entries, cps, keys, nil), openLog(t, entries, cps, keys, nil)}
	const per = 60
	var wg sync.WaitGroup
	errs := make(chan error, per*len(writers))
	for w, l := range writers {
		for i := range per {
			wg.Go(func() { errs <- l.Append(ctx, testEntry(w*1000+i, "acme")) })
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range writers {
		if err := l.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := writers[0].Verify(ctx, keys.keySet())
	if err != nil {
		t.Fatal(err)
	}
	want := uint64(per * len(writers))
	if !rep.OK || rep.Size != want || rep.Verified != want {
		t.Fatalf("report %+v, want OK with %d entries", rep, want)
	}
	// Every request id is stored exactly once.
	seen := map[string]int{}
	err = entries.Read(ctx, queue.ReadOptions{}, func(m *queue.Msg) error {
		for _, line := range splitBatch(m.Data) {
			r, err := DecodeRecord(line)
			if err != nil {
				return err
			}
			seen[r.RequestID]++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("%s stored %d times", id, n)
		}
	}
	if len(seen) != int(want) {
		t.Errorf("%d distinct entries, want %d", len(seen), want)
	}
}

func TestAppendAllAndClose(t *testing.T) {
	ctx := context.Background()
	l, entries, cps, keys := newTestLog(t, "ALL")
	steps := []Entry{testEntry(1, "acme"), testEntry(2, "acme"), testEntry(3, "acme")}
	if err := l.AppendAll(ctx, steps...); err != nil {
		t.Fatal(err)
	}
	bad := testEntry(4, "acme")
	bad.Outcome = ""
	if err := l.AppendAll(ctx, testEntry(5, "acme"), bad); !errors.Is(err, ErrInvalidEntry) {
		t.Fatalf("AppendAll with an invalid entry = %v", err)
	}
	if got, _ := l.Size(ctx); got != 3 {
		t.Fatalf("size %d, want 3: nothing of a refused call is written", got)
	}
	st, err := entries.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Msgs != 1 {
		t.Errorf("AppendAll of 3 took %d publishes, want 1", st.Msgs)
	}
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := l.Append(ctx, testEntry(6, "acme")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close = %v, want ErrClosed", err)
	}
	ro := openLog(t, entries, cps, nil, nil)
	if err := ro.Append(ctx, testEntry(7, "acme")); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("Append on a read-only log = %v, want ErrReadOnly", err)
	}
	rep, err := ro.Verify(ctx, keys.keySet())
	if err != nil || !rep.OK || rep.Verified != 3 {
		t.Fatalf("Verify = %+v, %v", rep, err)
	}
}

func TestOpenIgnoresForeignCheckpoint(t *testing.T) {
	ctx := context.Background()
	c := openConn(t)
	entries, cps := plainStreams(t, c, "FOREIGN")
	keys := &testKeys{cur: newTestKey(t, "a")}
	l := openLog(t, entries, cps, keys, nil)
	for i := range 5 {
		if err := l.Append(ctx, testEntry(i, "acme")); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// Someone with write access to the checkpoints stream plants a
	// self-consistent checkpoint of a two-entry tree under another key.
	attacker := &testKeys{cur: newTestKey(t, "attacker")}
	fe, fc := plainStreams(t, c, "FAKE")
	fl := openLog(t, fe, fc, attacker, nil)
	for i := range 2 {
		if err := fl.Append(ctx, testEntry(50+i, "acme")); err != nil {
			t.Fatal(err)
		}
	}
	forged, err := fl.signCheckpoint(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(forged)
	if _, err := cps.Append(ctx, subjectOf("FOREIGN")+"_cp", "", nil, data); err != nil {
		t.Fatal(err)
	}
	l2 := openLog(t, entries, cps, keys, nil)
	if got, _ := l2.Size(ctx); got != 5 {
		t.Fatalf("size %d after a foreign checkpoint, want 5 rebuilt from the entries", got)
	}
	if err := l2.Append(ctx, testEntry(9, "acme")); err != nil {
		t.Fatal(err)
	}
}

func TestLargeBatchesAreSplit(t *testing.T) {
	ctx := context.Background()
	c := openConn(t)
	entries, cps := plainStreams(t, c, "SPLIT")
	keys := &testKeys{cur: newTestKey(t, "a")}
	l := openLog(t, entries, cps, keys, func(c *Config) { c.BatchMax = 10000 })
	es := make([]Entry, 200)
	for i := range es {
		es[i] = testEntry(i, "acme")
		es[i].Details = map[string]string{"a": strings.Repeat("x", MaxFieldLen), "b": strings.Repeat("y", MaxFieldLen),
			"c": strings.Repeat("z", MaxFieldLen), "d": strings.Repeat("w", MaxFieldLen)}
	}
	if err := l.AppendAll(ctx, es...); err != nil {
		t.Fatal(err)
	}
	st, err := entries.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := uint64(200*4*MaxFieldLen/maxBatchBytes) + 1; st.Msgs < want {
		t.Errorf("%d messages for 200 entries of 4 KiB, want at least %d", st.Msgs, want)
	}
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	rep, err := l.Verify(ctx, keys.keySet())
	if err != nil || !rep.OK || rep.Verified != 200 {
		t.Fatalf("Verify = %+v, %v", rep, err)
	}
}

func TestRedact(t *testing.T) {
	tests := []struct{ in, want string }{
		{"alice.smith+tag@mail.example.com", "*@mail.example.com"},
		{"rcpt <bob@example.org>, carol@example.net", "rcpt <*@example.org>, *@example.net"},
		{"jürgen.müller@example.com", "*@example.com"},
		{`"john doe"@example.com`, "*@example.com"},
		{"root@localhost", "*@localhost"},
		{"bob@[192.0.2.1]", "*@[192.0.2.1]"},
		{"no address here", "no address here"},
	}
	for _, tt := range tests {
		if got := redact(tt.in); got != tt.want {
			t.Errorf("redact(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// lateStream stores the first append but loses its answer: a publish that
// timed out after it reached the store.
type lateStream struct {
	*queue.Stream
	mu    sync.Mutex
	calls int
}

func (s *lateStream) AppendOnce(ctx context.Context, subject, msgID string, header map[string]string, data []byte) (uint64, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	seq, dup, err := s.Stream.AppendOnce(ctx, subject, msgID, header, data)
	if s.calls == 1 && err == nil {
		return 0, false, context.DeadlineExceeded
	}
	return seq, dup, err
}

// TestLostAnswerStoredLater: a publish whose answer was lost is repeated
// with the same message id, and the store keeps one copy.
func TestLostAnswerStoredLater(t *testing.T) {
	ctx := context.Background()
	l, entries, _, keys := newTestLog(t, "LATE")
	late := &lateStream{Stream: entries}
	l.entries = late
	if err := l.Append(ctx, testEntry(1, "acme")); err != nil {
		t.Fatal(err)
	}
	if late.calls < 2 {
		t.Fatalf("the publish was not repeated (%d calls)", late.calls)
	}
	if err := l.Append(ctx, testEntry(2, "acme")); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	rep, err := l.Verify(ctx, keys.keySet())
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK || rep.Size != 2 {
		t.Fatalf("verify: %+v; want two entries, each stored once", rep)
	}
}

// downStream refuses appends while down, keeping the last one, which land
// stores later: a store that was unreachable and then received a message
// whose answer never came back.
type downStream struct {
	*queue.Stream
	mu   sync.Mutex
	down bool
	held func() error
}

func (s *downStream) AppendOnce(ctx context.Context, subject, msgID string, header map[string]string, data []byte) (uint64, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		s.held = func() error {
			_, _, err := s.Stream.AppendOnce(context.Background(), subject, msgID, header, data)
			return err
		}
		return 0, false, context.DeadlineExceeded
	}
	return s.Stream.AppendOnce(ctx, subject, msgID, header, data)
}

func (s *downStream) land(t *testing.T) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = false
	if err := s.held(); err != nil {
		t.Fatal(err)
	}
}

// TestFailedAppendLandingLater: an append given up after RetryFor may still
// land later; the writer's next entries start a new chain, so both verify.
func TestFailedAppendLandingLater(t *testing.T) {
	ctx := context.Background()
	c := openConn(t)
	entries, cps := plainStreams(t, c, "DOWN")
	keys := &testKeys{cur: newTestKey(t, "a")}
	l := openLog(t, entries, cps, keys, func(c *Config) {
		c.Now = time.Now
		c.RetryFor = 300 * time.Millisecond
	})
	ds := &downStream{Stream: entries, down: true}
	l.entries = ds
	if err := l.Append(ctx, testEntry(1, "acme")); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("append while the store refused every publish = %v, want ErrUnavailable", err)
	}
	ds.land(t)
	if err := l.Append(ctx, testEntry(2, "acme")); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	rep, err := l.Verify(ctx, keys.keySet())
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK || rep.Size != 2 {
		t.Fatalf("verify: %+v; want both entries, the late one and the acknowledged one", rep)
	}
}

// TestAppendAsync: an entry queued without waiting is written by the next
// batch, and at the latest by Close.
func TestAppendAsync(t *testing.T) {
	ctx := context.Background()
	l, _, _, keys := newTestLog(t, "ASYNC")
	if err := l.AppendAsync(ctx, testEntry(1, "acme"), testEntry(2, "acme")); err != nil {
		t.Fatal(err)
	}
	if err := l.AppendAsync(ctx, Entry{}); !errors.Is(err, ErrInvalidEntry) {
		t.Fatalf("invalid entry: %v", err)
	}
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := l.AppendAsync(ctx, testEntry(3, "acme")); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v, want ErrClosed", err)
	}
	rep, err := l.Verify(ctx, keys.keySet())
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK || rep.Size != 2 {
		t.Fatalf("verify: ok %v, size %d; want the two queued entries", rep.OK, rep.Size)
	}
}
