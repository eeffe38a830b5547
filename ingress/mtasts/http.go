package mtasts

import (
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/sealpost/sealpost/ingress"
	"github.com/sealpost/sealpost/ingress/httpin"
)

const problemBase = "https://sealpost.dev/problems/"

// ReportPath is where the HTTPS endpoint takes reports; the _smtp._tls
// record names it as rua=https://<host>/v1/tlsrpt.
const ReportPath = "/v1/tlsrpt"

// ReportHandler takes TLS-RPT reports by HTTPS POST (RFC 8460 section
// 5.3): the body is the report, Content-Type application/tlsrpt+json or
// application/tlsrpt+gzip. Reporters do not authenticate, so each client
// IP address gets a few reports a minute and every body is size-limited.
type ReportHandler struct {
	store *Store

	mu    sync.Mutex
	perIP map[string]*rate.Limiter
}

// maxLimitedIPs bounds the rate limiter's memory; it starts afresh past it.
const maxLimitedIPs = 10000

// NewReportHandler returns the HTTPS endpoint for store.
func NewReportHandler(store *Store) *ReportHandler {
	return &ReportHandler{store: store, perIP: map[string]*rate.Limiter{}}
}

func (h *ReportHandler) allow(remote string) bool {
	ip := remote
	if host, _, err := net.SplitHostPort(remote); err == nil {
		ip = host
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	l := h.perIP[ip]
	if l == nil {
		if len(h.perIP) >= maxLimitedIPs {
			clear(h.perIP)
		}
		// 10 reports at once, then one every 6 seconds: a reporter sends a
		// few a day.
		l = rate.NewLimiter(rate.Every(6*time.Second), 10)
		h.perIP[ip] = l
	}
	return l.Allow()
}

func (h *ReportHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeProblem(w, http.StatusMethodNotAllowed, "method-not-allowed", "POST a TLS-RPT report")
		return
	}
	if !h.allow(r.RemoteAddr) {
		w.Header().Set("Retry-After", "60")
		writeProblem(w, http.StatusTooManyRequests, "rate-limited", "too many reports from this address")
		return
	}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	var gzipped bool
	switch mt {
	case MediaTypeGzip:
		gzipped = true
	case MediaTypeJSON, "application/json":
	default:
		writeProblem(w, http.StatusUnsupportedMediaType, "unsupported-media-type",
			"Content-Type must be "+MediaTypeJSON+" or "+MediaTypeGzip)
		return
	}
	max := h.store.MaxReportBytes()
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, max))
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		writeProblem(w, http.StatusRequestEntityTooLarge, "too-large", "the report is larger than "+strconv.FormatInt(max, 10)+" bytes")
		return
	case err != nil:
		writeProblem(w, http.StatusBadRequest, "bad-request", "the request body could not be read")
		return
	}
	id, err := h.store.Put(r.Context(), body, gzipped, Received{Channel: "https", RemoteAddr: r.RemoteAddr})
	switch {
	case err == nil:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(map[string]string{"id": id})
	case errors.Is(err, ErrReportTooLarge):
		writeProblem(w, http.StatusRequestEntityTooLarge, "too-large", "the report is larger than "+strconv.FormatInt(max, 10)+" bytes decompressed")
	case errors.Is(err, ErrInvalidReport):
		writeProblem(w, http.StatusBadRequest, "invalid-report", err.Error())
	case errors.Is(err, ErrForeignReport):
		writeProblem(w, http.StatusUnprocessableEntity, "foreign-report", "the report is about no domain served here")
	case ingress.IsTemporary(err):
		w.Header().Set("Retry-After", "30")
		writeProblem(w, http.StatusServiceUnavailable, "unavailable", "the report could not be stored now; try again later")
	default:
		writeProblem(w, http.StatusInternalServerError, "internal", "the report could not be stored")
	}
}

func writeProblem(w http.ResponseWriter, status int, kind, detail string) {
	httpin.WriteProblem(w, httpin.Problem{Status: status, Type: problemBase + kind, Title: http.StatusText(status), Detail: detail})
}

// maxListed bounds one listing.
const maxListed = 1000

// ListHandler is GET /admin/tls-reports: summaries of the reports
// received, newest first. ?since= (RFC 3339, default 30 days ago) and
// ?limit= (default 100, at most 1000) select them.
func (s *Store) ListHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		since := s.cfg.Now().Add(-30 * 24 * time.Hour)
		limit := 100
		q := r.URL.Query()
		if v := q.Get("since"); v != "" {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				writeProblem(w, http.StatusBadRequest, "bad-request", "since must be an RFC 3339 time")
				return
			}
			since = t
		}
		if v := q.Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > maxListed {
				writeProblem(w, http.StatusBadRequest, "bad-request", "limit must be 1 to 1000")
				return
			}
			limit = n
		}
		list, err := s.List(r.Context(), since, limit)
		if err != nil {
			s.log.Error("tls report listing failed", "err", err)
			writeProblem(w, http.StatusServiceUnavailable, "unavailable", "the reports could not be read")
			return
		}
		writeJSON(w, map[string]any{"reports": list})
	})
}

// GetHandler is GET /admin/tls-reports/{id}: one report as received, with
// how it arrived.
func (s *Store) GetHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st, err := s.Get(r.Context(), r.PathValue("id"))
		switch {
		case errors.Is(err, ErrNotFound):
			writeProblem(w, http.StatusNotFound, "not-found", "no such TLS report")
		case err != nil:
			s.log.Error("tls report read failed", "err", err)
			writeProblem(w, http.StatusServiceUnavailable, "unavailable", "the report could not be read")
		default:
			writeJSON(w, st)
		}
	})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
