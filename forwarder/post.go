package forwarder

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sealpost/sealpost/signer"
)

// Error classes recorded with attempts.
const (
	ClassTimeout     = "timeout"
	ClassConnect     = "connect"
	ClassTLS         = "tls"
	ClassStatus      = "status"
	ClassRedirect    = "redirect"
	ClassSSRF        = "ssrf"
	ClassBreakerOpen = "breaker_open"
	ClassDisabled    = "disabled"
)

// maxResponseBody is how much of an answer is read (and dropped) so the
// connection can be reused.
const maxResponseBody = 64 << 10

// newClient returns the HTTP client for webhooks: the SSRF guard on every
// dial, no proxy from the environment (it would dial for us, unguarded),
// TLS verification on, no redirects, connect and TLS timeouts. The total
// timeout is set per request.
func newClient(c Config, g *guard, r *net.Resolver) *http.Client {
	d := &net.Dialer{Timeout: c.ConnectTimeout, KeepAlive: 30 * time.Second, Control: g.control, Resolver: r}
	tr := &http.Transport{
		Proxy:                  nil,
		DialContext:            d.DialContext,
		TLSClientConfig:        &tls.Config{RootCAs: c.RootCAs, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:    c.TLSTimeout,
		ForceAttemptHTTP2:      true,
		MaxIdleConns:           256,
		MaxIdleConnsPerHost:    16,
		IdleConnTimeout:        90 * time.Second,
		ResponseHeaderTimeout:  c.Timeout,
		MaxResponseHeaderBytes: 64 << 10,
		DisableCompression:     true,
	}
	return &http.Client{
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// result is what one attempt learned.
type result struct {
	status     int
	class      string // "" on success
	latency    time.Duration
	retryAfter time.Duration
	gone       bool // 410: disable the endpoint
	final      bool // no further attempt: dead-letter now
}

func (r result) ok() bool { return r.class == "" }

// post sends body to the endpoint once. It never returns the response body
// or the transport's error text, which may echo parts of the URL. An error
// means sealpost could not make the attempt at all (signing failed).
func (w *Worker) post(ctx context.Context, ep Endpoint, id string, body []byte, current signer.PrivateKey, previous []signer.PrivateKey, secrets []Secret) (result, error) {
	if _, err := parseEndpoint(ep.URL, ep.AllowHTTP); err != nil {
		return result{class: ClassSSRF}, nil
	}
	start := w.cfg.Now()
	ts := start.Unix()
	sig, err := signatureHeader(id, ts, body, current, previous, secrets, start)
	if err != nil {
		return result{}, fmt.Errorf("forwarder: sign webhook: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.URL, bytes.NewReader(body))
	if err != nil {
		return result{class: ClassSSRF}, nil
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "sealpost")
	req.Header.Set("webhook-id", id)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("webhook-signature", sig)
	t0 := time.Now()
	resp, err := w.client.Do(req)
	if err != nil {
		return result{class: classify(err), latency: time.Since(t0)}, nil
	}
	// The answer counts even if reading its (ignored) body fails.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseBody))
	resp.Body.Close()
	r := result{status: resp.StatusCode, latency: time.Since(t0)}
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		r.class = ClassRedirect
	default:
		r.class = ClassStatus
		if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
			r.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), w.cfg.Now())
		}
		r.gone = resp.StatusCode == http.StatusGone
	}
	return r, nil
}

// classify maps a transport error to an error class.
func classify(err error) string {
	var (
		recErr  tls.RecordHeaderError
		certErr *tls.CertificateVerificationError
		unkAuth x509.UnknownAuthorityError
		hostErr x509.HostnameError
		invErr  x509.CertificateInvalidError
		alert   tls.AlertError
		opErr   *net.OpError
	)
	switch {
	case errors.Is(err, ErrBlockedAddress):
		return ClassSSRF
	case errors.As(err, &recErr), errors.As(err, &certErr), errors.As(err, &unkAuth),
		errors.As(err, &hostErr), errors.As(err, &invErr), errors.As(err, &alert),
		strings.Contains(err.Error(), "TLS handshake"), strings.Contains(err.Error(), "tls: "):
		return ClassTLS
	case errors.As(err, &opErr) && opErr.Op == "dial":
		// Refused, unreachable or a connect timeout.
		return ClassConnect
	case errors.Is(err, context.DeadlineExceeded), isTimeout(err):
		return ClassTimeout
	}
	return ClassConnect
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// signatureHeader builds the webhook-signature value: v1a with the current
// key and each previous key in grace, then v1 with each live secret.
func signatureHeader(id string, ts int64, body []byte, current signer.PrivateKey, previous []signer.PrivateKey, secrets []Secret, now time.Time) (string, error) {
	sigs := []string{signer.WebhookSignatureV1a(current, id, ts, body)}
	for _, k := range previous {
		sigs = append(sigs, signer.WebhookSignatureV1a(k, id, ts, body))
	}
	for _, s := range secrets {
		if !s.NotAfter.IsZero() && !now.Before(s.NotAfter) {
			continue
		}
		v, err := signV1(s.Value, id, ts, body)
		if err != nil {
			return "", err
		}
		sigs = append(sigs, v)
	}
	return strings.Join(sigs, " "), nil
}

// signV1 is the Standard Webhooks symmetric signature (signer.WebhookSignatureV1)
// with a whsec_ secret.
func signV1(secret, id string, ts int64, body []byte) (string, error) {
	key, err := secretKey(secret)
	if err != nil {
		return "", err
	}
	defer clear(key)
	return signer.WebhookSignatureV1(key, id, ts, body), nil
}

// ValidateSecret checks a configured webhook secret: "whsec_" and the
// standard base64 of 16 to 64 bytes. The error never contains the secret.
func ValidateSecret(secret string) error {
	key, err := secretKey(secret)
	clear(key)
	return err
}

// secretKey decodes a whsec_ secret into its key bytes.
func secretKey(secret string) ([]byte, error) {
	b64, ok := strings.CutPrefix(secret, secretPrefix)
	if !ok {
		return nil, fmt.Errorf("%w: secret without the %s prefix", ErrInvalidInput, secretPrefix)
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(key) < 16 || len(key) > 64 {
		return nil, fmt.Errorf("%w: secret is not base64 of 16 to 64 bytes", ErrInvalidInput)
	}
	return key, nil
}
