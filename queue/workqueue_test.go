package queue_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sealpost/sealpost/queue"
)

func workQueue(t *testing.T, c *queue.Conn) *queue.WorkQueue {
	t.Helper()
	q, err := c.WorkQueue(context.Background(), queue.WorkQueueConfig{Name: "JOBS", Subjects: []string{"jobs.>"},
		MaxAge: time.Hour, MaxBytes: 1 << 20, Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// TestWorkQueue: jobs are durable until a handler finishes them, a retry
// comes back with Tries counted, a repeated MsgID is stored once, a purged
// subject's jobs are gone, and a job running at Stop is handed out again
// to the next Run (a restart).
func TestWorkQueue(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	c := openConn(t, dir)
	q := workQueue(t, c)
	if _, err := c.WorkQueue(ctx, queue.WorkQueueConfig{Name: "X"}); err == nil {
		t.Error("a work queue without subjects, age and size was declared")
	}
	jobs := []queue.NewJob{
		{Subject: "jobs.a.1", MsgID: "1", Data: []byte("one")},
		{Subject: "jobs.a.2", MsgID: "2", Data: []byte("two")},
		{Subject: "jobs.b.3", MsgID: "3", Data: []byte("three")},
	}
	if n, err := q.Add(ctx, jobs...); err != nil || n != len(jobs) {
		t.Fatalf("Add = %d, %v", n, err)
	}
	if _, err := q.Add(ctx, jobs[0]); err != nil { // the same MsgID: stored once
		t.Fatal(err)
	}
	if _, err := q.Add(ctx, queue.NewJob{Subject: "jobs.c.4", Data: []byte("four")}); err != nil {
		t.Fatal(err)
	}
	if n, err := q.Pending(ctx); err != nil || n != 4 {
		t.Fatalf("pending = %d, %v; want 4", n, err)
	}
	if err := q.Purge(ctx, "jobs.c.>"); err != nil {
		t.Fatal(err)
	}

	type call struct {
		data  string
		tries int
	}
	var (
		mu    sync.Mutex
		calls []call
	)
	block := make(chan struct{})
	started := make(chan struct{}, 1)
	q.Run(ctx, func(ctx context.Context, j queue.Job) queue.JobOutcome {
		mu.Lock()
		calls = append(calls, call{string(j.Data), j.Tries})
		mu.Unlock()
		switch string(j.Data) {
		case "two": // fails twice, then succeeds
			if j.Tries < 3 {
				return queue.JobRetry(50 * time.Millisecond)
			}
		case "three": // still running at Stop
			started <- struct{}{}
			select {
			case <-block:
			case <-ctx.Done():
			}
			return queue.JobRetry(time.Hour)
		}
		return queue.JobDone()
	})
	<-started
	waitFor(t, 10*time.Second, func() bool { n, _ := q.Pending(ctx); return n == 1 })
	q.Stop()

	mu.Lock()
	got := fmt.Sprint(calls)
	mu.Unlock()
	for _, want := range []string{"{one 1}", "{two 1}", "{two 2}", "{two 3}", "{three 1}"} {
		if !strings.Contains(got, want) {
			t.Errorf("calls %s lack %s", got, want)
		}
	}
	if strings.Contains(got, "four") || strings.Contains(got, "{one 2}") || strings.Contains(got, "{two 4}") {
		t.Errorf("calls %s: a purged or finished job was handed out", got)
	}

	// The job that was running at Stop is handed out at once to the next
	// Run, not after the hour its handler asked for.
	again := make(chan queue.Job, 1)
	q2 := workQueue(t, c)
	q2.Run(ctx, func(ctx context.Context, j queue.Job) queue.JobOutcome {
		again <- j
		return queue.JobDone()
	})
	defer q2.Stop()
	select {
	case j := <-again:
		if string(j.Data) != "three" || j.Tries != 2 || j.Subject != "jobs.b.3" {
			t.Errorf("after the restart: %s %q try %d", j.Subject, j.Data, j.Tries)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the job running at Stop was not handed out again")
	}
	waitFor(t, 10*time.Second, func() bool { n, _ := q.Pending(ctx); return n == 0 })
}

func waitFor(t *testing.T, d time.Duration, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !ok(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
	}
}

// TestWorkQueueStopAndBackoff: a job added while no instance runs, or
// after one stopped, is handed out first with Tries 1 (no fetch of a
// stopped instance takes it); jobs waiting out a retry delay do not hold
// up the others.
func TestWorkQueueStopAndBackoff(t *testing.T) {
	ctx := context.Background()
	c := openConn(t, t.TempDir())
	q, err := c.WorkQueue(ctx, queue.WorkQueueConfig{Name: "JOBS", Subjects: []string{"jobs.>"},
		MaxAge: time.Hour, MaxBytes: 1 << 20, Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan queue.Job, 100)
	run := func() {
		q.Run(ctx, func(ctx context.Context, j queue.Job) queue.JobOutcome {
			got <- j
			if strings.HasPrefix(j.Subject, "jobs.slow.") {
				return queue.JobRetry(time.Hour)
			}
			return queue.JobDone()
		})
	}
	run()
	q.Stop()
	if _, err := q.Add(ctx, queue.NewJob{Subject: "jobs.after.stop", Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // a fetch left waiting would take it now
	var slow []queue.NewJob
	for i := range 20 {
		slow = append(slow, queue.NewJob{Subject: fmt.Sprintf("jobs.slow.%d", i), Data: []byte("s")})
	}
	if _, err := q.Add(ctx, slow...); err != nil {
		t.Fatal(err)
	}
	run()
	defer q.Stop()
	deadline := time.After(10 * time.Second)
	seen := map[string]int{}
	for len(seen) < 21 {
		select {
		case j := <-got:
			seen[j.Subject] = j.Tries
		case <-deadline:
			t.Fatalf("handed out %d of 21 jobs: %v", len(seen), seen)
		}
	}
	if seen["jobs.after.stop"] != 1 {
		t.Errorf("the job added after a stop had Tries %d, want 1", seen["jobs.after.stop"])
	}
	// Twenty jobs wait an hour for their retry; a new one still runs.
	if _, err := q.Add(ctx, queue.NewJob{Subject: "jobs.fresh", Data: []byte("f")}); err != nil {
		t.Fatal(err)
	}
	select {
	case j := <-got:
		if j.Subject != "jobs.fresh" {
			t.Errorf("handed out %s, want jobs.fresh", j.Subject)
		}
	case <-time.After(5 * time.Second):
		t.Error("a new job waits behind jobs in retry")
	}
}
