package keyring

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the keyring's Prometheus metrics.
type metrics struct {
	created   *prometheus.CounterVec // origin
	conflicts prometheus.Counter
	errors    prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, k *Keyring) (*metrics, error) {
	m := &metrics{
		created: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sealpost_keyring_keys_created_total",
			Help: "Signing keys this instance created, by origin (initial, schedule, rotate, replace).",
		}, []string{"origin"}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sealpost_keyring_cas_conflicts_total",
			Help: "Key-state writes that lost a compare-and-set to another instance and were retried.",
		}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sealpost_keyring_check_errors_total",
			Help: "Key schedule checks that failed (state unreadable, store or KMS unavailable).",
		}),
	}
	if reg == nil {
		return m, nil
	}
	signsUntil := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sealpost_keyring_current_key_signs_until_timestamp_seconds",
		Help: "When the current signing key stops signing (Unix seconds); 0 when no key signs now.",
	}, func() float64 {
		st, now := k.cached()
		if i := st.signing(now); i >= 0 {
			return float64(st.Keys[i].end().Unix())
		}
		return 0
	})
	nextReady := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sealpost_keyring_next_key_published",
		Help: "1 when the key that signs after the current one is published, else 0. Alert when it is 0 less than the pre-publication time before the current key ends.",
	}, func() float64 {
		st, now := k.cached()
		i := st.signing(now)
		if i >= 0 && st.signing(st.Keys[i].end()) >= 0 {
			return 1
		}
		return 0
	})
	for _, c := range []prometheus.Collector{m.created, m.conflicts, m.errors, signsUntil, nextReady} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// cached returns the cached state (empty before the first load) and now.
func (k *Keyring) cached() (*state, time.Time) {
	k.mu.RLock()
	st := k.st
	k.mu.RUnlock()
	if st == nil {
		st = &state{V: stateVersion}
	}
	return st, k.c.Now()
}
