package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/sealpost/sealpost/ingress"
	"github.com/sealpost/sealpost/queue"
	"github.com/sealpost/sealpost/signer"
)

// The bare reference pipeline: what `sealpost bench --bare` measures
// sealpost against. It does the steps every accepted message needs and
// nothing else: HTTPS in, one JetStream publish (acknowledged before the
// 202), one consumer, JCS and an Ed25519 receipt signature, a v1a webhook
// signature, an HTTP POST, one ack. No audit log, no sealing, no stored
// receipts or attempts, no bundling: each step is one write.

// bareMessage is what the bare pipeline queues.
type bareMessage struct {
	ID         string          `json:"id"`
	ReceivedAt time.Time       `json:"received_at"`
	Payload    json.RawMessage `json:"payload"`
	RawSHA256  string          `json:"raw_sha256"`
	RawSize    int64           `json:"raw_size"`
}

// bareMaxBody bounds an accepted body, as ingest.max_body_bytes does.
const bareMaxBody = 1 << 20

func runServeBare(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench serve-bare", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data", "", "data `dir` (required)")
	webhook := fs.String("webhook", "", "webhook `URL` (required)")
	listen := fs.String("listen", "127.0.0.1:0", "HTTPS `address`")
	syncInterval := fs.Duration("sync-interval", 0, "JetStream sync interval (0: every write flushed)")
	workers := fs.Int("workers", 16, "deliveries in flight")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitError{code: 0}
		}
		return exitError{code: 2}
	}
	if *dataDir == "" || *webhook == "" || *workers < 1 {
		return usageError("bench serve-bare: --data and --webhook are required")
	}
	q, err := queue.Open(ctx, queue.Config{DataDir: *dataDir, SyncInterval: *syncInterval})
	if err != nil {
		return err
	}
	defer q.Close()
	work, err := q.Bare(ctx, "BARE")
	if err != nil {
		return err
	}
	certFile, keyFile, err := ensureDevCert(*dataDir, time.Now())
	if err != nil {
		return err
	}
	certs, err := newCertStore(certFile, keyFile)
	if err != nil {
		return err
	}
	_, seed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	key := signer.NewPrivateKey(seed)
	client := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: *workers}}
	var ids ingress.IDs
	srv := &http.Server{TLSConfig: certs.serverTLS(), ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodPost || subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), []byte("Bearer bare")) != 1 {
				http.Error(w, "no", http.StatusUnauthorized)
				return
			}
			raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, bareMaxBody))
			if err != nil || !json.Valid(raw) {
				http.Error(w, "bad body", http.StatusBadRequest)
				return
			}
			m := bareMessage{ID: ids.New(time.Now()), ReceivedAt: time.Now().UTC(), Payload: raw, RawSHA256: signer.RawDigest(raw), RawSize: int64(len(raw))}
			data, _ := json.Marshal(m)
			if err := work.Publish(r.Context(), data); err != nil {
				http.Error(w, "queue", http.StatusServiceUnavailable)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusAccepted)
			_, _ = w.Write([]byte(`{"id":"` + m.ID + `"}`))
		})}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "sealpost bare pipeline\n  https  listening on %s\n", ln.Addr())
	var wg sync.WaitGroup
	wg.Go(func() {
		_ = work.Consume(ctx, *workers, func(ctx context.Context, data []byte) error {
			return bareDeliver(ctx, client, *webhook, key, data)
		})
	})
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.ServeTLS(ln, "", ""); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	wg.Wait()
	return nil
}

// bareDeliver signs one queued message and posts it.
func bareDeliver(ctx context.Context, client *http.Client, webhook string, key signer.PrivateKey, data []byte) error {
	var m bareMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return nil // cannot get better by retrying
	}
	now := time.Now()
	env, err := signer.Sign(signer.Receipt{ID: m.ID, Tenant: "bench", Route: "bench", Channel: ingress.ChannelHTTPS,
		ReceivedAt: signer.FormatTime(m.ReceivedAt), SignedAt: signer.FormatTime(now), Source: json.RawMessage(`{}`),
		RawSHA256: m.RawSHA256, RawSize: m.RawSize}, m.Payload, key)
	if err != nil {
		return nil
	}
	ts := now.Unix()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, webhook, bytes.NewReader(env))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("webhook-id", m.ID)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("webhook-signature", signer.WebhookSignatureV1a(key, m.ID, ts, env))
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook answered %d", resp.StatusCode)
	}
	return nil
}
