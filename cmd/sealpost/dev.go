package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/sealpost/sealpost/ingress/httpin"
	"github.com/sealpost/sealpost/signer"
)

const (
	devTenant       = "demo"
	devRoute        = "demo"
	devRecipient    = "demo@sealpost.localhost"
	devReceiverPath = "/dev/webhook"
	// devMaxWebhookBytes bounds what the built-in receiver reads.
	devMaxWebhookBytes = 64 << 20
)

// devSetup is what --dev generated for this run: it is printed at start.
type devSetup struct {
	apiKey         string
	adminToken     string
	adminTokenFile string
	webhook        string
	defaultWebhook bool
	certFile       string
}

// devConfig is the zero-configuration setup: everything on 127.0.0.1, a
// demo tenant whose route posts to --webhook or to the built-in receiver,
// and fresh API and admin tokens.
func devConfig(f serveFlags) (*Config, *devSetup, error) {
	dataDir := f.dataDir
	if dataDir == "" {
		dataDir = "./sealpost-data"
	}
	dev := &devSetup{webhook: f.webhook}
	var keyHash, adminHash string
	var err error
	if dev.apiKey, keyHash, err = httpin.NewToken(devTenant); err != nil {
		return nil, nil, err
	}
	if dev.adminToken, adminHash, err = httpin.NewToken("admin"); err != nil {
		return nil, nil, err
	}
	dev.adminTokenFile = filepath.Join(dataDir, "admin.token")
	endpoint := f.webhook
	if endpoint == "" {
		dev.defaultWebhook = true
		// Replaced with the admin listener's address once it is bound.
		endpoint = "http://127.0.0.1:9090" + devReceiverPath
	}
	cfg := &Config{
		DataDir: dataDir,
		Forward: ForwardConfig{AllowNetworks: []string{"127.0.0.0/8", "::1/128"}},
		Admin:   AdminConfig{TokenSHA256: adminHash},
		// No DNS lookups leave the machine in development.
		SMTP: SMTPConfig{Auth: "off"},
		Tenants: []TenantConfig{{
			Name:    devTenant,
			APIKeys: []APIKeyConfig{{ID: devTenant, SHA256: keyHash}},
			Routes: []RouteConfig{{
				Name: devRoute, Endpoint: endpoint, AllowHTTP: true,
				Recipients: []string{devRecipient},
			}},
		}},
	}
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, nil, fmt.Errorf("dev configuration: %w", err)
	}
	return cfg, dev, nil
}

func (d *devSetup) announce(w io.Writer, l listeners) {
	https := l.https.Addr().String()
	fmt.Fprintf(w, "\ndevelopment mode (self-signed certificate %s)\n", d.certFile)
	fmt.Fprintf(w, "  tenant %q, route %q\n", devTenant, devRoute)
	fmt.Fprintf(w, "  api key      %s\n", d.apiKey)
	fmt.Fprintf(w, "  admin token  written to %s\n", d.adminTokenFile)
	if d.defaultWebhook {
		fmt.Fprintf(w, "  webhook      http://%s%s (built-in receiver: verifies and logs each receipt)\n", l.admin.Addr(), devReceiverPath)
	} else {
		fmt.Fprintf(w, "  webhook      %s\n", d.webhook)
	}
	if l.smtp != nil {
		fmt.Fprintf(w, "  mail to      %s via %s\n", devRecipient, l.smtp.Addr())
	}
	fmt.Fprintf(w, "\ntry:\n  curl -k -H 'Authorization: Bearer %s' -H 'Content-Type: application/json' \\\n    -d '{\"hello\":\"world\"}' https://%s/v1/ingest/%s\n", d.apiKey, https, devRoute)
	fmt.Fprintf(w, "  curl -k https://%s/.well-known/jwks.json\n\n", https)
}

// devReceiver is the built-in webhook receiver of --dev: it checks the
// webhook signature and the receipt against the gateway's own keys and logs
// the outcome (ids only, never the payload).
func devReceiver(log *slog.Logger, keys func() *signer.KeySet) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, devMaxWebhookBytes))
		if err != nil {
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		id := r.Header.Get("webhook-id")
		ts, _ := strconv.ParseInt(r.Header.Get("webhook-timestamp"), 10, 64)
		ks := keys()
		err = errors.New("no key verified the webhook signature")
		for _, k := range ks.Keys {
			if signer.VerifyWebhookV1a(k.Key, id, ts, body, r.Header.Get("webhook-signature")) == nil {
				err = nil
				break
			}
		}
		if err == nil {
			_, err = signer.Verify(body, ks)
		}
		sum := sha256.Sum256(body)
		if err != nil {
			log.Warn("dev receiver: receipt did not verify", "webhook_id", id, "err", err)
			http.Error(w, "verification failed", http.StatusBadRequest)
			return
		}
		log.Info("dev receiver: receipt verified", "webhook_id", id, "bytes", len(body), "body_sha256", hex.EncodeToString(sum[:8]))
		w.WriteHeader(http.StatusNoContent)
	})
}

// looksLikeToken is a light check on tokens read from files or flags.
func looksLikeToken(s string) bool {
	_, _, ok := httpin.ParseToken(strings.TrimSpace(s))
	return ok
}
