package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// benchReceiver is the webhook endpoint of `sealpost bench`: it answers
// 204 and notes when each webhook-id first arrived.
type benchReceiver struct {
	srv   *http.Server
	ln    net.Listener
	mu    sync.Mutex
	first map[string]time.Time
	calls int
	more  chan struct{}
}

// maxReceiverBody bounds what the receiver reads of one request.
const maxReceiverBody = 64 << 20

func startBenchReceiver(addr string) (*benchReceiver, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("receiver: %w", err)
	}
	r := &benchReceiver{ln: ln, first: map[string]time.Time{}, more: make(chan struct{}, 1)}
	r.srv = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		_, _ = io.Copy(io.Discard, io.LimitReader(req.Body, maxReceiverBody))
		now := time.Now()
		id := req.Header.Get("webhook-id")
		r.mu.Lock()
		r.calls++
		if _, seen := r.first[id]; !seen && id != "" {
			r.first[id] = now
		}
		r.mu.Unlock()
		select {
		case r.more <- struct{}{}:
		default:
		}
		w.WriteHeader(http.StatusNoContent)
	})}
	go func() { _ = r.srv.Serve(ln) }()
	return r, nil
}

func (r *benchReceiver) url() string { return "http://" + r.ln.Addr().String() + "/hook" }

func (r *benchReceiver) close() { _ = r.srv.Close() }

// await returns once every id arrived, or when timeout passed or ctx
// ended; it returns the arrival times it has.
func (r *benchReceiver) await(ctx context.Context, ids []string, timeout time.Duration) map[string]time.Time {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		missing := 0
		for _, id := range ids {
			if _, ok := r.first[id]; !ok {
				missing++
			}
		}
		var got map[string]time.Time
		if missing == 0 {
			got = maps.Clone(r.first)
		}
		r.mu.Unlock()
		if missing == 0 {
			return got
		}
		select {
		case <-r.more:
		case <-deadline.C:
			r.mu.Lock()
			defer r.mu.Unlock()
			return maps.Clone(r.first)
		case <-ctx.Done():
			r.mu.Lock()
			defer r.mu.Unlock()
			return maps.Clone(r.first)
		}
	}
}

// benchTarget is where the load goes.
type benchTarget struct {
	ingestURL string // https://host:port/v1/ingest/<route>
	token     string
	tls       *tls.Config
}

// sent is one request of the load.
type sent struct {
	at     time.Time
	answer time.Duration
	status int
	id     string
	err    bool
}

// loadSpec is what to send.
type loadSpec struct {
	n, size, concurrency int
	rate                 float64 // per second; 0: as fast as concurrency allows
}

// sendLoad posts spec.n JSON payloads of about spec.size bytes.
func sendLoad(ctx context.Context, t benchTarget, spec loadSpec) []sent {
	client := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
		TLSClientConfig: t.tls, MaxIdleConnsPerHost: spec.concurrency, MaxConnsPerHost: spec.concurrency, ForceAttemptHTTP2: false,
	}}
	defer client.CloseIdleConnections()
	pad := strings.Repeat("x", max(0, spec.size-40))
	out := make([]sent, spec.n)
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range spec.concurrency {
		wg.Go(func() {
			for i := range jobs {
				out[i] = post(ctx, client, t, `{"n":`+strconv.Itoa(i)+`,"pad":"`+pad+`"}`)
			}
		})
	}
	// At a rate, payload i is due at start + i/rate: a sender that was
	// late does not lower the rate (as a ticker's dropped ticks would); the
	// next ones go at once until the schedule is met again.
	start := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for i := range spec.n {
		if spec.rate > 0 {
			due := start.Add(time.Duration(float64(i) * float64(time.Second) / spec.rate))
			if d := time.Until(due); d > 0 {
				timer.Reset(d)
				select {
				case <-timer.C:
				case <-ctx.Done():
				}
			}
		}
		select {
		case jobs <- i:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(jobs)
	wg.Wait()
	return out
}

func post(ctx context.Context, client *http.Client, t benchTarget, body string) sent {
	s := sent{at: time.Now()}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.ingestURL, strings.NewReader(body))
	if err != nil {
		s.err = true
		return s
	}
	req.Header.Set("Authorization", "Bearer "+t.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	s.answer = time.Since(s.at)
	if err != nil {
		s.err = true
		return s
	}
	defer resp.Body.Close()
	s.status = resp.StatusCode
	var doc struct {
		ID string `json:"id"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&doc); err == nil {
		s.id = doc.ID
	}
	// Read to the end, so the connection is reused.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return s
}

// benchStats summarises one run.
type benchStats struct {
	sent, accepted, delivered, refused, failed int
	acceptedPerSec, deliveredPerSec            float64
	ingest, endToEnd                           []time.Duration // sorted
}

func summarise(reqs []sent, arrivals map[string]time.Time) benchStats {
	var st benchStats
	if len(reqs) == 0 {
		return st
	}
	start, lastAnswer, lastArrival := reqs[0].at, time.Time{}, time.Time{}
	for _, r := range reqs {
		if r.at.IsZero() {
			continue
		}
		st.sent++
		start = minTime(start, r.at)
		switch {
		case r.err:
			st.failed++
			continue
		case r.status != http.StatusAccepted:
			st.refused++
			continue
		}
		st.accepted++
		st.ingest = append(st.ingest, r.answer)
		if end := r.at.Add(r.answer); end.After(lastAnswer) {
			lastAnswer = end
		}
		if at, ok := arrivals[r.id]; ok {
			st.delivered++
			st.endToEnd = append(st.endToEnd, at.Sub(r.at))
			if at.After(lastArrival) {
				lastArrival = at
			}
		}
	}
	if d := lastAnswer.Sub(start); d > 0 {
		st.acceptedPerSec = float64(st.accepted) / d.Seconds()
	}
	if d := lastArrival.Sub(start); d > 0 {
		st.deliveredPerSec = float64(st.delivered) / d.Seconds()
	}
	slices.Sort(st.ingest)
	slices.Sort(st.endToEnd)
	return st
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// quantile of a sorted list.
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	return ds[min(len(ds)-1, int(q*float64(len(ds))))]
}

// errIncomplete: some accepted messages did not arrive in time.
var errIncomplete = errors.New("not every accepted message was delivered in time")
