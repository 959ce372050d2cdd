package gateway

import (
	"cmp"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-gateway/gateway/internal/limiter"
	"github.com/caddy-gateway/gateway/internal/redisstore"
)

func init() {
	caddy.RegisterModule(RateLimit{})
}

// Defaults of the rate_limit handler.
const (
	DefaultMaxKeys       = 1_000_000
	DefaultSweepInterval = time.Minute
)

// maxKeysBound is the most keys a zone may be told to hold: 2^31, the
// bound of events and burst too. Its state alone would take over 100 GiB.
const maxKeysBound = 1 << 31

// RateLimit admits a request only if every zone whose matchers match it
// admits it, and refuses it with 429 otherwise. Zones are named globally:
// handlers that name the same zone share its state, and a config reload
// keeps it.
//
// Of its options, a zone's key and cost take placeholders, expanded for
// each request, and Redis takes global ones such as {env.*}. It sets:
//
// Placeholder | Description
// ------------|-------------
// `{http.rate_limit.exceeded.name}` | the zone that refused the request
// `{http.rate_limit.<zone>.remaining}` | the units the request's key has left in the zone, after it
type RateLimit struct {
	// RateLimits are the zones, by name: letters, digits, '_', '.' and
	// '-'. At least one. Placeholders do not work in names.
	RateLimits map[string]*ZoneConfig `json:"rate_limits,omitempty"`

	// Headers selects the rate-limit response headers: "ietf" (default;
	// RateLimit-Policy and RateLimit, draft-ietf-httpapi-ratelimit-headers
	// version 10), "legacy" (X-RateLimit-Limit, -Remaining, -Reset),
	// "both" or "off".
	Headers string `json:"headers,omitempty"`

	// MaxKeys bounds the keys each zone holds in memory, exactly; a new key
	// beyond it evicts the key closest to rest. At most 2^31. Default
	// 1000000.
	MaxKeys int `json:"max_keys,omitempty"`

	// Jitter adds up to this fraction (0 to 1) of the wait, at random, to
	// Retry-After, so refused clients do not return all at once. Default 0.
	Jitter float64 `json:"jitter,omitempty"`

	// LogKey puts the raw key in the logs of decisions. Default: logs
	// show a hash of it.
	LogKey bool `json:"log_key,omitempty"`

	// SweepInterval is how often keys back at rest are dropped. Default 1m.
	SweepInterval caddy.Duration `json:"sweep_interval,omitempty"`

	// DisableMetrics stops this handler from counting its decisions.
	// Default: counted.
	DisableMetrics bool `json:"disable_metrics,omitempty"`

	// Redis is the URL of a Redis that holds the zones' state for a cluster
	// of nodes (redis:// or rediss://, user, password, database). Global
	// placeholders such as {env.REDIS_URL} work. Default: process memory.
	Redis string `json:"redis,omitempty"`

	// FailMode says what happens while Redis fails: "local" (default)
	// limits with this node's memory, "open" admits, "closed" refuses
	// with 503.
	FailMode string `json:"fail_mode,omitempty"`

	// Timeout bounds each Redis decision. Default 50ms.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	zones   []*zoneRef
	policy  string // RateLimit-Policy when every zone matches
	logger  *zap.Logger
	now     func() time.Time
	headerI bool
	headerL bool
	redis   *redisClient
	bus     *bus // carries resets of local refusals between the nodes
	breaker *breaker
}

// DefaultRedisTimeout bounds a Redis decision when no timeout is set.
const DefaultRedisTimeout = 50 * time.Millisecond

// ZoneConfig is one zone of a rate_limit handler.
type ZoneConfig struct {
	// MatcherSetsRaw selects the requests the zone applies to. Default: all.
	MatcherSetsRaw caddyhttp.RawMatcherSets `json:"match,omitempty" caddy:"namespace=http.matchers"`

	// Key is a template whose value tells apart the callers limited
	// separately, such as {client_ip}; placeholders work, and every '{'
	// must be closed by a '}' (a literal brace is written \{). Requests
	// whose key expands to nothing, such as a header they lack, share one
	// key. A request header whose name holds '_' or '.' must be kept by the
	// server's expected_underscore_headers or expected_dot_headers.
	// Required.
	Key string `json:"key"`

	// MaxEvents is the limit's N: units allowed per Window. Required,
	// positive (the Caddyfile's events).
	MaxEvents int64 `json:"max_events"`

	// Window is the limit's W, from 16ms to 366 days. Required.
	Window caddy.Duration `json:"window"`

	// Algorithm is fixed_window, sliding_window (default), token_bucket or
	// leaky_bucket.
	Algorithm string `json:"algorithm,omitempty"`

	// Burst is the token bucket's capacity or the leaky bucket's queue
	// length, at least Cost; the windows ignore it. Default: MaxEvents.
	Burst int64 `json:"burst,omitempty"`

	// Cost is the units a request takes: a positive number, at most the
	// zone's capacity (MaxEvents, or Burst for a bucket), or a template of
	// placeholders, expanded for each request. A template that expands to
	// nothing costs the default; one that expands to 0 costs nothing; one
	// that expands to anything but a non-negative integer gets the request
	// a 400, except in a dry-run zone, where it costs the default. Default
	// 1.
	Cost string `json:"cost,omitempty"`

	// DryRun counts and reports, but never refuses. Default: off.
	DryRun bool `json:"dry_run,omitempty"`

	// IPv4Prefix (1 to 32) and IPv6Prefix (1 to 128), when the key is an
	// IP address, limit its whole network of that prefix length together.
	// Default (or 0): each address alone.
	IPv4Prefix int `json:"ipv4_prefix,omitempty"`
	IPv6Prefix int `json:"ipv6_prefix,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (RateLimit) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.rate_limit",
		New: func() caddy.Module { return new(RateLimit) },
	}
}

// Provision checks the zones and acquires their state.
func (h *RateLimit) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	if h.now == nil {
		h.now = time.Now
	}
	if err := h.Validate(); err != nil {
		return err
	}
	h.MaxKeys = cmp.Or(h.MaxKeys, DefaultMaxKeys)
	h.SweepInterval = cmp.Or(h.SweepInterval, caddy.Duration(DefaultSweepInterval))
	h.Timeout = cmp.Or(h.Timeout, caddy.Duration(DefaultRedisTimeout))
	h.headerI = h.Headers == "" || h.Headers == "ietf" || h.Headers == "both"
	h.headerL = h.Headers == "legacy" || h.Headers == "both"
	if err := registerCollector(ctx.GetMetricsRegistry(), rateLimitCollector{}); err != nil {
		return err
	}
	for _, name := range sortedKeys(h.RateLimits) {
		cfg := h.RateLimits[name]
		if err := checkHeaderPlaceholders(ctx, cfg.Key); err != nil {
			return fmt.Errorf("rate_limit: zone %s: key: %v", name, err)
		}
		if err := checkHeaderPlaceholders(ctx, cfg.Cost); err != nil {
			return fmt.Errorf("rate_limit: zone %s: cost: %v", name, err)
		}
	}
	if h.Redis != "" {
		c, err := acquireRedis(h.Redis, time.Duration(h.Timeout))
		if err != nil {
			return fmt.Errorf("rate_limit: %v", err)
		}
		h.redis, h.breaker = c, new(breaker)
		b, err := acquireBus(h.Redis, h.logger)
		if err != nil {
			return fmt.Errorf("rate_limit: %v", err)
		}
		h.bus = b
	}
	pool, err := configPool(ctx)
	if err != nil {
		return fmt.Errorf("rate_limit: %v", err)
	}
	if b := h.bus; b != nil {
		// Subscribing dials: not before the config starts (caddy
		// validate provisions too).
		pool.onStart(func() func() {
			b.start()
			return nil // a running bus serves whichever config holds it
		})
	}
	var policies []string
	for _, name := range sortedKeys(h.RateLimits) {
		ref, err := h.provisionZone(ctx, pool, name, h.RateLimits[name])
		if err != nil {
			return fmt.Errorf("rate_limit: zone %s: %v", name, err)
		}
		h.zones = append(h.zones, ref) // acquired: Cleanup releases it
		policies = append(policies, ref.policy)
	}
	// Its capacity is its length: a handler that appends to it copies it.
	h.policy = strings.Join(policies, ", ")
	return nil
}

// Validate checks the handler's options and every zone's, before and
// after provisioning alike. The Caddyfile parser calls it too, so that a
// bad value in JSON and in a Caddyfile gets the same message.
func (h *RateLimit) Validate() error {
	if err := h.validateOptions(); err != nil {
		return err
	}
	if len(h.RateLimits) == 0 {
		return fmt.Errorf("rate_limit: at least one zone is required (rate_limits)")
	}
	for _, name := range sortedKeys(h.RateLimits) {
		if err := h.RateLimits[name].validate(name); err != nil {
			return fmt.Errorf("rate_limit: zone %s: %v", name, err)
		}
	}
	return nil
}

// validateOptions checks the options of the handler beside its zones.
func (h *RateLimit) validateOptions() error {
	switch {
	case !slices.Contains([]string{"", "ietf", "legacy", "both", "off"}, h.Headers):
		return fmt.Errorf("rate_limit: headers must be ietf, legacy, both or off, not %q", h.Headers)
	case !slices.Contains([]string{"", "local", "open", "closed"}, h.FailMode):
		return fmt.Errorf("rate_limit: fail_mode must be local, open or closed, not %q", h.FailMode)
	case h.MaxKeys < 0:
		return fmt.Errorf("rate_limit: max_keys must be positive, not %d", h.MaxKeys)
	case h.MaxKeys > maxKeysBound:
		return fmt.Errorf("rate_limit: max_keys must be at most %d, not %d", maxKeysBound, h.MaxKeys)
	case !(h.Jitter >= 0 && h.Jitter <= 1): // NaN compares false either way
		return fmt.Errorf("rate_limit: jitter must be a fraction between 0 and 1, not %v", h.Jitter)
	case h.SweepInterval < 0:
		return fmt.Errorf("rate_limit: sweep_interval must be positive, not %v", time.Duration(h.SweepInterval))
	case h.Timeout < 0:
		return fmt.Errorf("rate_limit: timeout must be positive, not %v", time.Duration(h.Timeout))
	}
	if err := validateRedisURL(h.Redis); err != nil {
		return fmt.Errorf("rate_limit: redis: %v", err)
	}
	return nil
}

// zoneName is what a zone may be called: it appears in placeholders,
// headers and Redis keys.
var zoneName = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// validate checks one zone's settings.
func (z *ZoneConfig) validate(name string) error {
	if !zoneName.MatchString(name) {
		return fmt.Errorf("a zone name holds only letters, digits, '_', '.' and '-'")
	}
	if name == "." || name == ".." {
		// The admin API's router would clean it out of /rate_limit/<zone>.
		return fmt.Errorf("a zone may not be named %q", name)
	}
	if z == nil || z.Key == "" {
		return fmt.Errorf("key is required")
	}
	if err := checkTemplate(z.Key); err != nil {
		return fmt.Errorf("key %q: %v", z.Key, err)
	}
	l, err := z.limit()
	if err != nil {
		return err
	}
	switch {
	case z.MaxEvents <= 0:
		return fmt.Errorf("events (max_events) must be a positive integer, not %d", z.MaxEvents)
	case z.Window <= 0:
		return fmt.Errorf("window must be a positive duration, not %v", time.Duration(z.Window))
	case z.IPv4Prefix < 0 || z.IPv4Prefix > 32:
		return fmt.Errorf("ipv4_prefix must be 1 to 32, not %d", z.IPv4Prefix)
	case z.IPv6Prefix < 0 || z.IPv6Prefix > 128:
		return fmt.Errorf("ipv6_prefix must be 1 to 128, not %d", z.IPv6Prefix)
	}
	if err := l.Validate(); err != nil {
		return err
	}
	cost, err := z.constantCost()
	if err != nil || z.DryRun {
		return err // a dry-run zone never refuses, whatever a request costs
	}
	switch {
	case (l.Algorithm == limiter.TokenBucket || l.Algorithm == limiter.LeakyBucket) && l.Burst > 0:
		if l.Burst < cost {
			return fmt.Errorf("burst %d is below cost %d: no request could ever pass", l.Burst, cost)
		}
	case l.Events < cost:
		return fmt.Errorf("cost %d is above events (max_events) %d: no request could ever pass", cost, l.Events)
	}
	return nil
}

// limit returns the zone's limit.
func (z *ZoneConfig) limit() (limiter.Limit, error) {
	algo, err := limiter.ParseAlgorithm(z.Algorithm)
	if err != nil {
		return limiter.Limit{}, err
	}
	return limiter.Limit{Algorithm: algo, Events: z.MaxEvents, Window: time.Duration(z.Window), Burst: z.Burst}, nil
}

// constantCost returns the units every request costs, or 1 when the cost
// is a template, decided per request. A constant cost of 0 is refused: a
// zone where nothing costs anything is a mistake, while a template that
// makes some requests free is a choice.
func (z *ZoneConfig) constantCost() (int64, error) {
	if z.Cost == "" {
		return 1, nil
	}
	if strings.Contains(z.Cost, "{") {
		if err := checkTemplate(z.Cost); err != nil {
			return 0, fmt.Errorf("cost %q: %v", z.Cost, err)
		}
		return 1, nil
	}
	n, err := strconv.ParseInt(z.Cost, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("cost must be a positive number or a placeholder, not %q", z.Cost)
	}
	return n, nil
}

// maxZonesInline is how many matching zones a request can have without
// the decision allocating.
const maxZonesInline = 4

var errRateLimited = errors.New("rate limit exceeded")

// ServeHTTP decides the request in every matching zone, then serves it,
// makes it wait for its slot, or refuses it.
func (h *RateLimit) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	var reqsBuf [maxZonesInline]limiter.Request
	var refsBuf [maxZonesInline]*zoneRef
	var keysBuf [maxZonesInline]string
	reqs, refs, keys := reqsBuf[:0], refsBuf[:0], keysBuf[:0]
	for _, ref := range h.zones {
		if ref.matchers != nil {
			ok, err := ref.matchers.AnyMatchWithError(r)
			if err != nil {
				return caddyhttp.Error(http.StatusInternalServerError, err)
			}
			if !ok {
				continue
			}
		}
		cost, err := ref.costOf(repl)
		switch {
		case err != nil && ref.cfg.DryRun:
			cost = ref.cost // a dry-run zone never refuses
		case err != nil:
			// The request's value is at fault, not the server: Caddy logs
			// a 4xx at debug level, so a client cannot fill the error log.
			return caddyhttp.Error(http.StatusBadRequest, err)
		}
		key := ref.maskKey(ref.keyOf(r, repl))
		reqs = append(reqs, limiter.Request{Zone: ref.zone.Zone, Key: hashKey(key), Cost: cost, DryRun: ref.cfg.DryRun})
		refs = append(refs, ref)
		keys = append(keys, key)
	}
	if len(reqs) == 0 {
		return next.ServeHTTP(w, r)
	}
	var outBuf [maxZonesInline]limiter.Decision
	var out []limiter.Decision
	if len(reqs) > maxZonesInline {
		out = make([]limiter.Decision, len(reqs))
	} else {
		out = outBuf[:len(reqs)]
	}
	now := h.arrival(r)
	var digests []redisstore.Digest
	if h.redis != nil {
		var digestsBuf [maxZonesInline]redisstore.Digest
		digests = digestsBuf[:0]
		for i, key := range keys {
			// Zones often share a key ({client_ip}): hash it once.
			j := slices.Index(keys[:i], key)
			if j < 0 {
				digests = append(digests, redisstore.DigestOf(key))
			} else {
				digests = append(digests, digests[j])
			}
		}
	}
	var admitted bool
	var v storeVerdict
	if i := h.refusedLocally(now, refs, digests, reqs, out); i >= 0 {
		// The answer speaks of the zone that refused: the others were
		// not asked.
		refs, keys, out = refs[i:i+1], keys[i:i+1], out[i:i+1]
	} else {
		admitted, v = h.decide(r.Context(), now, refs, digests, reqs, out)
	}
	switch v {
	case storeOpen:
		return next.ServeHTTP(w, r)
	case storeClosed:
		w.Header().Set("Retry-After", strconv.FormatInt(ceilSeconds(breakerPause), 10))
		return caddyhttp.Error(http.StatusServiceUnavailable, errStoreDown)
	case storeGone:
		return caddyhttp.Error(499, r.Context().Err())
	}
	h.count(refs, out, admitted)
	h.setHeaders(w.Header(), refs, out)
	repl.Map(newRemainingPlaceholders(refs, out).replace)
	if !admitted {
		return h.refuse(w, r, repl, refs, keys, out)
	}
	var wait time.Duration
	for _, d := range out {
		wait = max(wait, d.Wait)
	}
	if wait > 0 {
		if err := h.sleep(r.Context(), wait); err != nil {
			return caddyhttp.Error(499, err)
		}
	}
	return next.ServeHTTP(w, r)
}

// Cleanup releases the zones Provision acquired; a zone no config uses
// any longer stops.
func (h *RateLimit) Cleanup() error {
	for _, ref := range h.zones {
		if _, err := rateZones.Delete(ref.name); err != nil {
			h.logger.Error("releasing zone", zap.String("zone", ref.name), zap.Error(err))
		}
	}
	h.zones = nil
	releaseRedis(h.redis)
	releaseBus(h.bus)
	h.redis, h.bus = nil, nil
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Interface guards
var (
	_ caddy.Provisioner           = (*RateLimit)(nil)
	_ caddy.Validator             = (*RateLimit)(nil)
	_ caddy.CleanerUpper          = (*RateLimit)(nil)
	_ caddyhttp.MiddlewareHandler = (*RateLimit)(nil)
)
