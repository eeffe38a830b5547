package audit

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	appends       *prometheus.CounterVec
	appendSeconds prometheus.Histogram
	publishes     prometheus.Counter
	publishSecs   prometheus.Histogram
	batchSize     prometheus.Histogram
	treeSize      prometheus.Gauge
	checkpoints   *prometheus.CounterVec
	leader        prometheus.Gauge
	consistent    prometheus.Gauge
	// Witnesses, the outside copies and proofs.
	witnessRequests *prometheus.CounterVec
	// witnessConflicts counts the conflicts of every witness, so that an
	// alert has a series before the first one.
	witnessConflicts prometheus.Counter
	cosignatures     prometheus.Gauge
	quorum           prometheus.Gauge
	outsideWrites    *prometheus.CounterVec
	proofState       prometheus.Gauge
}

// newMetrics builds the log's metrics and registers them on r when r is
// not nil.
func newMetrics(r prometheus.Registerer) *metrics {
	m := &metrics{
		appends: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sealpost_audit_appends_total",
			Help: "Audit entries appended, by result (ok, invalid, error).",
		}, []string{"result"}),
		appendSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sealpost_audit_append_seconds",
			Help:    "Time from Append to the entry being durable.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		publishes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sealpost_audit_publishes_total",
			Help: "JetStream publishes of audit batches.",
		}),
		publishSecs: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sealpost_audit_publish_seconds",
			Help:    "Time from sending a batch of audit entries to the store's acknowledgement, retries included.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 12),
		}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sealpost_audit_batch_entries",
			Help:    "Entries per audit publish.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10),
		}),
		treeSize: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sealpost_audit_tree_size",
			Help: "Entries in the audit Merkle tree, as far as this instance integrated it.",
		}),
		checkpoints: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sealpost_audit_checkpoints_total",
			Help: "Audit checkpoints signed, by result (ok, error).",
		}, []string{"result"}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sealpost_audit_checkpointer",
			Help: "1 while this instance holds the checkpointer lease (integrates entries and signs checkpoints).",
		}),
		consistent: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sealpost_audit_consistent",
			Help: "0 once the checkpointer found that the stored audit log does not continue the signed tree (run audit verify).",
		}),
		witnessRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sealpost_audit_witness_requests_total",
			Help: "add-checkpoint requests to witnesses, by witness and result (ok, conflict, error).",
		}, []string{"witness", "result"}),
		witnessConflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sealpost_audit_witness_conflicts_total",
			Help: "add-checkpoint requests a witness refused because it holds a checkpoint this log does not extend (a rollback or fork).",
		}),
		cosignatures: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sealpost_audit_checkpoint_cosignatures",
			Help: "Witness cosignatures on the newest checkpoint this instance stored.",
		}),
		quorum: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sealpost_audit_witness_quorum",
			Help: "Witness cosignatures a checkpoint needs (0: no witnesses configured).",
		}),
		outsideWrites: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sealpost_audit_outside_writes_total",
			Help: "Checkpoints written to the outside location, by result (ok, error).",
		}, []string{"result"}),
		proofState: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sealpost_audit_proof_tree_size",
			Help: "Tree size up to which this checkpointer wrote proof tiles and the receipt index.",
		}),
	}
	m.consistent.Set(1)
	for _, result := range []string{"ok", "error"} {
		m.outsideWrites.WithLabelValues(result)
	}
	if r != nil {
		r.MustRegister(m.appends, m.appendSeconds, m.publishes, m.publishSecs, m.batchSize, m.treeSize, m.checkpoints, m.leader, m.consistent,
			m.witnessRequests, m.witnessConflicts, m.cosignatures, m.quorum, m.outsideWrites, m.proofState)
	}
	return m
}
