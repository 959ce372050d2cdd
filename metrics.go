package gateway

import (
	"errors"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/caddy-gateway/gateway/internal/cachestore"
	"github.com/caddy-gateway/gateway/internal/httpcache"
)

// cacheCollector exports every live named cache's counters and sizes at
// scrape time, so no metric outlives its cache and none is counted twice.
type cacheCollector struct{}

var (
	descRequests = prometheus.NewDesc("caddy_cache_requests_total",
		"Requests seen by cache_read or cache_write, by result.", []string{"cache", "result"}, nil)
	descStores = prometheus.NewDesc("caddy_cache_stores_total",
		"Responses offered to a cache, by outcome: stored or the reason not stored.", []string{"cache", "outcome"}, nil)
	descEvictions = prometheus.NewDesc("caddy_cache_evictions_total",
		"Entries evicted to make room.", []string{"cache"}, nil)
	descEntries = prometheus.NewDesc("caddy_cache_entries",
		"Entries held, Vary markers included.", []string{"cache"}, nil)
	descSize = prometheus.NewDesc("caddy_cache_size_bytes",
		"Bytes held, bookkeeping included.", []string{"cache"}, nil)
)

// outcomeLabels are the outcome labels of caddy_cache_stores_total, such
// as "stored" and "no-store": a fixed set, so labels stay bounded.
var outcomeLabels = func() (labels [httpcache.NumOutcomes]string) {
	for i := range labels {
		labels[i] = strings.ToLower(httpcache.Outcome(i).String())
	}
	return labels
}()

func (cacheCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descRequests
	ch <- descStores
	ch <- descEvictions
	ch <- descEntries
	ch <- descSize
}

func (cacheCollector) Collect(ch chan<- prometheus.Metric) {
	rangeCaches(func(c *namedCache) {
		name, st := c.Name(), c.Stats()
		for r, n := range st.Requests {
			ch <- prometheus.MustNewConstMetric(descRequests, prometheus.CounterValue, float64(n), name, cachestore.Result(r).String())
		}
		for o, n := range st.Outcomes {
			ch <- prometheus.MustNewConstMetric(descStores, prometheus.CounterValue, float64(n), name, outcomeLabels[o])
		}
		ch <- prometheus.MustNewConstMetric(descEvictions, prometheus.CounterValue, float64(st.Evicted), name)
		ch <- prometheus.MustNewConstMetric(descEntries, prometheus.GaugeValue, float64(st.Entries), name)
		ch <- prometheus.MustNewConstMetric(descSize, prometheus.GaugeValue, float64(st.UsedBytes), name)
	})
}

// registerCollector adds a collector to a config's registry; every config
// load has a registry of its own.
func registerCollector(reg *prometheus.Registry, c prometheus.Collector) error {
	if reg == nil {
		return nil
	}
	err := reg.Register(c)
	var already prometheus.AlreadyRegisteredError
	if errors.As(err, &already) {
		return nil
	}
	return err
}
