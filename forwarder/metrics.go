package forwarder

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	deliveries       *prometheus.CounterVec
	attemptSeconds   *prometheus.HistogramVec
	breakerState     *prometheus.GaugeVec
	endpointDisabled *prometheus.CounterVec
	disabled         prometheus.Gauge
	batchSize        prometheus.Histogram
	batchSeconds     prometheus.Histogram
	opEvents         *prometheus.CounterVec
}

func newMetrics(r prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sealpost_forwarder_deliveries_total",
			Help: "Delivery attempts by outcome: delivered, failed (will retry), dead_lettered, deferred (endpoint at its concurrency limit, not an attempt).",
		}, []string{"outcome"}),
		attemptSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sealpost_forwarder_attempt_duration_seconds",
			Help:    "Duration of webhook attempts that sent a request, by result class (ok or an error class).",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 15, 30},
		}, []string{"class"}),
		breakerState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sealpost_forwarder_breaker_state",
			Help: "Circuit breaker state per endpoint on this instance: 0 closed, 1 open, 2 half-open.",
		}, []string{"tenant", "route", "endpoint"}),
		endpointDisabled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sealpost_forwarder_endpoint_disabled_total",
			Help: "Endpoints disabled after answering 410 Gone.",
		}, []string{"tenant", "route"}),
		disabled: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sealpost_forwarder_endpoints_disabled",
			Help: "Endpoints currently disabled, as last seen by this instance.",
		}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sealpost_forwarder_batch_submissions",
			Help:    "Submissions handled together in one batch (sharing its signing-key lookup, audit appends and writes).",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024},
		}),
		batchSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sealpost_forwarder_batch_seconds",
			Help:    "Time to handle one batch: receipts, requests, attempt records and audit entries.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12),
		}),
		opEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sealpost_forwarder_operational_events_total",
			Help: "Operational webhook events by outcome: queued (stored until sent), delivered, failed (every try failed, or the webhook was removed), dropped (could not be stored).",
		}, []string{"outcome"}),
	}
	if r == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.deliveries, m.attemptSeconds, m.breakerState, m.endpointDisabled, m.disabled, m.batchSize, m.batchSeconds, m.opEvents} {
		if err := r.Register(c); err != nil {
			return nil, fmt.Errorf("forwarder: register metrics: %w", err)
		}
	}
	return m, nil
}
