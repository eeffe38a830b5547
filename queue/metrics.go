package queue

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Collector reports the state of the streams and the ingest consumer at
// scrape time: backlog, messages awaiting acknowledgement, redeliveries, and
// the size of every stream (the dead-letter stream among them).
func (c *Conn) Collector(consumer string) prometheus.Collector {
	if consumer == "" {
		consumer = "forwarder"
	}
	return &collector{c: c, consumer: consumer}
}

var (
	descStreamMsgs = prometheus.NewDesc("sealpost_queue_stream_messages",
		"Messages stored in a JetStream stream.", []string{"stream"}, nil)
	descStreamBytes = prometheus.NewDesc("sealpost_queue_stream_bytes",
		"Bytes stored in a JetStream stream.", []string{"stream"}, nil)
	descPending = prometheus.NewDesc("sealpost_queue_ingest_pending",
		"INGEST messages not yet handed to a worker.", nil, nil)
	descAckPending = prometheus.NewDesc("sealpost_queue_ingest_ack_pending",
		"INGEST messages handed to a worker and not yet acknowledged (in flight or waiting for a retry).", nil, nil)
	descMaxAckPending = prometheus.NewDesc("sealpost_queue_ingest_max_ack_pending",
		"The bound on INGEST messages awaiting acknowledgement (forward.max_unacked): at it, no new message is handed out.", nil, nil)
	descRedelivered = prometheus.NewDesc("sealpost_queue_ingest_redelivered",
		"INGEST messages delivered more than once and still pending.", nil, nil)
	descQuarantined = prometheus.NewDesc("sealpost_queue_quarantined_total",
		"INGEST messages this process moved to QUARANTINE because they could not be opened or parsed.", nil, nil)
	descUp = prometheus.NewDesc("sealpost_queue_up",
		"1 when JetStream answered the last scrape, 0 otherwise.", nil, nil)
)

type collector struct {
	c        *Conn
	consumer string
}

func (k *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descStreamMsgs, descStreamBytes, descPending, descAckPending, descMaxAckPending, descRedelivered, descQuarantined, descUp} {
		ch <- d
	}
}

func (k *collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	up := 1.0
	names := k.c.js.StreamNames(ctx)
	for name := range names.Name() {
		s, err := k.c.js.Stream(ctx, name)
		if err != nil {
			up = 0
			continue
		}
		info := s.CachedInfo()
		ch <- prometheus.MustNewConstMetric(descStreamMsgs, prometheus.GaugeValue, float64(info.State.Msgs), name)
		ch <- prometheus.MustNewConstMetric(descStreamBytes, prometheus.GaugeValue, float64(info.State.Bytes), name)
	}
	if names.Err() != nil {
		up = 0
	}
	if cons, err := k.c.js.Consumer(ctx, IngestStream, k.consumer); err == nil {
		info := cons.CachedInfo()
		ch <- prometheus.MustNewConstMetric(descPending, prometheus.GaugeValue, float64(info.NumPending))
		ch <- prometheus.MustNewConstMetric(descAckPending, prometheus.GaugeValue, float64(info.NumAckPending))
		ch <- prometheus.MustNewConstMetric(descMaxAckPending, prometheus.GaugeValue, float64(info.Config.MaxAckPending))
		ch <- prometheus.MustNewConstMetric(descRedelivered, prometheus.GaugeValue, float64(info.NumRedelivered))
	} else {
		up = 0
	}
	ch <- prometheus.MustNewConstMetric(descQuarantined, prometheus.CounterValue, float64(k.c.quarantined.Load()))
	ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, up)
}
