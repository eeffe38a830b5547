package kms

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Metric label values.
const (
	opGenerate = "generate_data_key"
	opDecrypt  = "decrypt"
	opSeal     = "seal"
	opOpen     = "open"

	outcomeOK          = "ok"
	outcomeUnavailable = "unavailable"
	outcomeRejected    = "rejected"
)

// metrics are the counters of one Envelope.
type metrics struct {
	calls *prometheus.CounterVec // op, outcome
	hits  *prometheus.CounterVec // op
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sealpost_kms_calls_total",
			Help: "Calls to the key-encryption key provider, by operation (generate_data_key, decrypt) and outcome (ok, unavailable, rejected).",
		}, []string{"op", "outcome"}),
		hits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sealpost_kms_cache_hits_total",
			Help: "Seal and open operations served by a cached data key without a provider call, by operation (seal, open).",
		}, []string{"op"}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	if m.calls, err = register(reg, m.calls); err != nil {
		return nil, err
	}
	if m.hits, err = register(reg, m.hits); err != nil {
		return nil, err
	}
	return m, nil
}

// register registers c, or returns the collector already registered under
// the same name so that two Envelopes can share one registry.
func register(reg prometheus.Registerer, c *prometheus.CounterVec) (*prometheus.CounterVec, error) {
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
			return existing, nil
		}
	}
	return nil, err
}
