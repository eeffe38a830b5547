package httpapi

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// httpMetrics counts and times the requests of the HTTPS and admin servers.
//
// The design, for every sealpost metric: a request or message is counted
// by exactly one counter (here sealpost_http_requests_total, by server,
// pattern and status code), and a latency histogram beside it carries the
// same labels less the outcome. A histogram's _count repeats its counter;
// use the counter for rates and error ratios, the histogram for latency.
type httpMetrics struct {
	requests *prometheus.CounterVec
	seconds  *prometheus.HistogramVec
}

func newHTTPMetrics(reg prometheus.Registerer) (*httpMetrics, error) {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sealpost_http_requests_total",
			Help: "HTTP requests answered, by server (https, admin), route pattern (method and path) and status code.",
		}, []string{"server", "pattern", "code"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "sealpost_http_request_duration_seconds",
			Help: "Time from a request's headers to the end of its answer, by server and route pattern. For ingest this includes the queue's durable acknowledgement.",
			// 1 ms to 60 s: an ingest waits for a synced disk write; an
			// audit export streams for minutes (+Inf).
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"server", "pattern"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.seconds} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *httpMetrics) observe(server, pattern string, code int, d time.Duration) {
	m.requests.WithLabelValues(server, pattern, strconv.Itoa(code)).Inc()
	m.seconds.WithLabelValues(server, pattern).Observe(d.Seconds())
}

// patternLabel is the route pattern a request matched, as the metrics and
// the audit log name it: "METHOD /path". Requests that matched no pattern
// of a known method (unknown paths, and other methods on a path, which are
// answered 404 or 405) are "unmatched", so a client cannot grow the label
// set.
func patternLabel(pattern string) string {
	method, _, ok := strings.Cut(pattern, " ")
	if !ok || !knownMethod(method) {
		return "unmatched"
	}
	return pattern
}

func knownMethod(m string) bool {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		return true
	}
	return false
}
