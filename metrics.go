package gateway

import (
	"errors"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/caddy-gateway/gateway/internal/httpcache"
)

// Results of a cache lookup, as counted and as {http.cache.status}.
const (
	resultHit    = "hit"
	resultMiss   = "miss"
	resultStale  = "stale"
	resultBypass = "bypass"
)

var results = []string{resultHit, resultMiss, resultStale, resultBypass}

// resultValues holds each result boxed once, so that setting the
// placeholder to one allocates nothing.
var resultValues = []any{resultHit, resultMiss, resultStale, resultBypass}

// resultValue returns the result as the placeholder's value.
func resultValue(result string) any { return resultValues[slices.Index(results, result)] }

// outcomeStored is the outcome of a response that was stored.
const outcomeStored = "stored"

// outcomes are the labels of caddy_cache_stores_total: stored, or the
// reason a response was not stored. The set is fixed, so labels stay bounded.
var outcomes = []string{
	outcomeStored,
	httpcache.ReasonStatus, httpcache.ReasonNoStore, httpcache.ReasonPrivate,
	httpcache.ReasonSetCookie, httpcache.ReasonAuthorization, httpcache.ReasonVaryStar,
	httpcache.ReasonNoFreshness, httpcache.ReasonTooLarge, httpcache.ReasonIncomplete,
	httpcache.ReasonInvalidated, httpcache.ReasonRefused,
}

// cacheStats counts what happens to one named cache. The admin API and the
// metrics collector both read these counters.
type cacheStats struct {
	requests [4]atomic.Uint64 // by index in results
	outcomes [12]atomic.Uint64
	evicted  atomic.Uint64
	rejected atomic.Uint64
}

// count records the result of a lookup.
func (s *cacheStats) count(result string) { s.requests[slices.Index(results, result)].Add(1) }

// requestsOf returns how many lookups had the result.
func (s *cacheStats) requestsOf(result string) uint64 {
	return s.requests[slices.Index(results, result)].Load()
}

// record counts the outcome of offering a response to the cache.
func (s *cacheStats) record(outcome string) { s.outcomes[slices.Index(outcomes, outcome)].Add(1) }

// stored returns how many responses were stored.
func (s *cacheStats) stored() uint64 { return s.outcomes[0].Load() }

// collector exports every live named cache's counters and sizes at scrape
// time, so no metric outlives its cache and none is counted twice.
type collector struct{}

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

	descRateRequests = prometheus.NewDesc("caddy_rate_limit_requests_total",
		"Rate-limit decisions, by outcome: allowed, limited, or dry_run_limited.", []string{"zone", "outcome"}, nil)
	descRateKeys = prometheus.NewDesc("caddy_rate_limit_keys",
		"Keys held in memory.", []string{"zone"}, nil)
	descRateEvictions = prometheus.NewDesc("caddy_rate_limit_evictions_total",
		"Keys evicted because the zone held max_keys.", []string{"zone"}, nil)
	descRateStoreErrors = prometheus.NewDesc("caddy_rate_limit_store_errors_total",
		"Decisions the shared store failed to make.", []string{"zone"}, nil)
)

func (collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descRequests
	ch <- descStores
	ch <- descEvictions
	ch <- descEntries
	ch <- descSize
	ch <- descRateRequests
	ch <- descRateKeys
	ch <- descRateEvictions
	ch <- descRateStoreErrors
}

func (collector) Collect(ch chan<- prometheus.Metric) {
	rangeCaches(func(c *namedCache) {
		for i, r := range results {
			ch <- prometheus.MustNewConstMetric(descRequests, prometheus.CounterValue, float64(c.stats.requests[i].Load()), c.name, r)
		}
		for i, o := range outcomes {
			ch <- prometheus.MustNewConstMetric(descStores, prometheus.CounterValue, float64(c.stats.outcomes[i].Load()), c.name, strings.ToLower(o))
		}
		ch <- prometheus.MustNewConstMetric(descEvictions, prometheus.CounterValue, float64(c.stats.evicted.Load()), c.name)
		ch <- prometheus.MustNewConstMetric(descEntries, prometheus.GaugeValue, float64(c.index.entries()), c.name)
		ch <- prometheus.MustNewConstMetric(descSize, prometheus.GaugeValue, float64(c.usedBytes()), c.name)
	})
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

// registerMetrics adds the collector to a config's registry; every config
// load has a registry of its own.
func registerMetrics(reg *prometheus.Registry) error {
	if reg == nil {
		return nil
	}
	err := reg.Register(collector{})
	var already prometheus.AlreadyRegisteredError
	if errors.As(err, &already) {
		return nil
	}
	return err
}
