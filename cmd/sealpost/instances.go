package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Instances of one cluster share the configured ingest rate limits and
// every endpoint's rate and concurrency limits: each puts a heartbeat in
// the INSTANCES bucket and enforces 1/n of every limit, n being the number
// of live instances. A load balancer that spreads requests evenly (and the
// queue, which spreads deliveries) then keeps the configured limits across
// the cluster.
const (
	heartbeatEvery = 5 * time.Second
	heartbeatTTL   = 3 * heartbeatEvery
)

// limitSharer is a part that enforces its share of limits: the ingest
// handler, the delivery worker.
type limitSharer interface{ SetInstances(n int) }

// shareLimits keeps each part's share of the limits up to date while the
// gateway runs. With the embedded server there is one instance and
// nothing to share.
func (g *gateway) shareLimits(parts ...limitSharer) error {
	gauge := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "sealpost_cluster_instances",
		Help: "Live sealpost instances sharing the queue; each enforces 1/n of the ingest and endpoint limits.",
	})
	gauge.Set(1)
	if err := g.reg.Register(gauge); err != nil {
		return err
	}
	if g.cfg.NATS.URL == "" {
		return nil
	}
	reg, err := g.q.Instances(g.bgCtx, instanceName(), heartbeatTTL)
	if err != nil {
		return err
	}
	beat := func(ctx context.Context) {
		ctx, cancel := context.WithTimeout(ctx, heartbeatEvery)
		defer cancel()
		if err := reg.Beat(ctx); err != nil {
			g.log.Warn("cluster heartbeat failed", "err", err)
			return
		}
		n, err := reg.Count(ctx)
		if err != nil {
			g.log.Warn("counting cluster instances failed", "err", err)
			return
		}
		for _, p := range parts {
			p.SetInstances(n)
		}
		gauge.Set(float64(n))
	}
	beat(g.bgCtx)
	g.goBackground(func() {
		t := time.NewTicker(heartbeatEvery)
		defer t.Stop()
		for {
			select {
			case <-g.bgCtx.Done():
				return
			case <-t.C:
				beat(g.bgCtx)
			}
		}
	})
	return nil
}

// instanceName names this process in the registry: the host name and a
// random suffix, since several instances may share a host.
func instanceName() string {
	host, _ := os.Hostname()
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := []byte(host + "-" + hex.EncodeToString(b[:]))
	for i, c := range name {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			name[i] = '_'
		}
	}
	return string(name)
}
