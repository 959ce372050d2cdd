package gateway

import "github.com/prometheus/client_golang/prometheus"

// rateLimitCollector exports every live zone's counters and key count at
// scrape time, so no metric outlives its zone and none is counted twice.
type rateLimitCollector struct{}

var (
	descRateRequests = prometheus.NewDesc("caddy_rate_limit_requests_total",
		"Rate-limit decisions, by outcome: allowed, limited, or dry_run_limited.", []string{"zone", "outcome"}, nil)
	descRateKeys = prometheus.NewDesc("caddy_rate_limit_keys",
		"Keys held in memory.", []string{"zone"}, nil)
	descRateEvictions = prometheus.NewDesc("caddy_rate_limit_evictions_total",
		"Keys evicted because the zone held max_keys.", []string{"zone"}, nil)
	descRateStoreErrors = prometheus.NewDesc("caddy_rate_limit_store_errors_total",
		"Decisions the shared store failed to make.", []string{"zone"}, nil)
)

func (rateLimitCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descRateRequests
	ch <- descRateKeys
	ch <- descRateEvictions
	ch <- descRateStoreErrors
}

func (rateLimitCollector) Collect(ch chan<- prometheus.Metric) {
	rangeZones(func(z *zoneEntry) {
		counter := func(d *prometheus.Desc, v uint64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), append([]string{z.Name}, labels...)...)
		}
		counter(descRateRequests, z.allowed.Load(), "allowed")
		counter(descRateRequests, z.limited.Load(), "limited")
		counter(descRateRequests, z.dryRunLimited.Load(), "dry_run_limited")
		counter(descRateEvictions, z.Evictions())
		counter(descRateStoreErrors, z.storeErrors.Load())
		ch <- prometheus.MustNewConstMetric(descRateKeys, prometheus.GaugeValue, float64(z.Keys()), z.Name)
	})
}
