package main

import (
	"fmt"
	"strings"
	"testing"
	"time"
	"io"
)

func TestZZDebug(t *testing.T) {
	rcv := newReceiver(t)
	g := startGateway(t, gatewayOpts{endpoint: rcv.url(), logLevel: "warn", extra: "ingest:\n  rate_per_second: 1000000\n  burst: 1000000\n"})
	res := &loadResult{}
	st := time.Now()
	runLoad(t, []*testGateway{g}, 2000, 5*time.Second, res, nil)
	fmt.Println("accepted", len(res.accepted), "refused", res.refused, "in", time.Since(st), "p50", res.quantile(0.5), "p99", res.quantile(0.99))
	rcv.waitFor(t, len(res.accepted), time.Minute)
	fmt.Println("delivered after", time.Since(st))
	resp, err := g.client.Get(g.adminURL + "/metrics")
	if err != nil { t.Fatal(err) }
	b, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "sealpost_") && (strings.Contains(l, "_sum") || strings.Contains(l, "_count") || strings.Contains(l, "settled") || strings.Contains(l, "deliveries_total")) {
			fmt.Println(l)
		}
	}
}
