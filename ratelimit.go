package gateway

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dunglas/httpsfv"
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

// RateLimit admits a request only if every zone whose matchers match it
// admits it, and refuses it with 429 otherwise. Zones are named globally:
// handlers that name the same zone share its state, and a config reload
// keeps it.
type RateLimit struct {
	// RateLimits are the zones, by name.
	RateLimits map[string]*ZoneConfig `json:"rate_limits,omitempty"`

	// Headers selects the rate-limit response headers: "ietf" (default;
	// RateLimit-Policy and RateLimit, draft-ietf-httpapi-ratelimit-headers
	// version 10), "legacy" (X-RateLimit-Limit, -Remaining, -Reset),
	// "both" or "off".
	Headers string `json:"headers,omitempty"`

	// MaxKeys bounds the keys each zone holds in memory. Default 1000000.
	MaxKeys int `json:"max_keys,omitempty"`

	// Jitter adds up to this fraction of the wait, at random, to
	// Retry-After, so refused clients do not return all at once.
	Jitter float64 `json:"jitter,omitempty"`

	// LogKey puts the raw key in the logs of decisions; by default logs
	// show a hash of it.
	LogKey bool `json:"log_key,omitempty"`

	// SweepInterval is how often keys back at rest are dropped. Default 1m.
	SweepInterval caddy.Duration `json:"sweep_interval,omitempty"`

	// DisableMetrics stops this handler from counting its decisions.
	DisableMetrics bool `json:"disable_metrics,omitempty"`

	// Redis is the URL of a Redis that holds the zones' state for a cluster
	// of nodes (redis:// or rediss://, user, password, database).
	// Placeholders such as {env.REDIS_URL} work. Default: process memory.
	Redis string `json:"redis,omitempty"`

	// FailMode says what happens while Redis fails: "local" (default)
	// limits with this node's memory, "open" admits, "closed" refuses
	// with 503.
	FailMode string `json:"fail_mode,omitempty"`

	// Timeout bounds each Redis decision. Default 50ms.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	zones   []*zoneRef
	policy  []string // RateLimit-Policy when every zone matches, shared read-only
	logger  *zap.Logger
	now     func() time.Time
	headerI bool
	headerL bool
	redis   *redisClient
	breaker *breaker
}

// DefaultRedisTimeout bounds a Redis decision when no timeout is set.
const DefaultRedisTimeout = 50 * time.Millisecond

// ZoneConfig is one zone of a rate_limit handler.
type ZoneConfig struct {
	// MatcherSetsRaw selects the requests the zone applies to. Default: all.
	MatcherSetsRaw caddyhttp.RawMatcherSets `json:"match,omitempty" caddy:"namespace=http.matchers"`

	// Key is a placeholder template whose value tells apart the callers
	// limited separately, such as {client_ip}. Required.
	Key string `json:"key"`

	// MaxEvents is the limit's N: events allowed per Window. Required.
	MaxEvents int64 `json:"max_events"`

	// Window is the limit's W. Required.
	Window caddy.Duration `json:"window"`

	// Algorithm is fixed_window, sliding_window (default), token_bucket or
	// leaky_bucket.
	Algorithm string `json:"algorithm,omitempty"`

	// Burst is the token bucket's capacity or the leaky bucket's queue
	// length. Default: MaxEvents.
	Burst int64 `json:"burst,omitempty"`

	// Cost is the units a request takes: a number or a placeholder that
	// expands to one. Default 1.
	Cost string `json:"cost,omitempty"`

	// DryRun counts and reports, but never refuses.
	DryRun bool `json:"dry_run,omitempty"`

	// IPv4Prefix and IPv6Prefix, when the key is an IP address, limit its
	// whole network of that prefix length together.
	IPv4Prefix int `json:"ipv4_prefix,omitempty"`
	IPv6Prefix int `json:"ipv6_prefix,omitempty"`
}

// zoneRef is a zone as one handler uses it.
type zoneRef struct {
	name     string
	cfg      *ZoneConfig
	limit    limiter.Limit
	zone     *zoneEntry
	matchers caddyhttp.MatcherSets
	cost     int64 // when Cost is a constant
	policy   string
	sfName   string // the zone's name as a Structured Field string
	err      error  // what a refusal in this zone says
	keyVar   string // the placeholder, when the key is exactly one
	remKey   string // the placeholder of the zone's remaining units
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
	if h.MaxKeys == 0 {
		h.MaxKeys = DefaultMaxKeys
	}
	if h.SweepInterval == 0 {
		h.SweepInterval = caddy.Duration(DefaultSweepInterval)
	}
	switch h.Headers {
	case "", "ietf":
		h.headerI = true
	case "legacy":
		h.headerL = true
	case "both":
		h.headerI, h.headerL = true, true
	case "off":
	default:
		return fmt.Errorf("rate_limit: headers must be ietf, legacy, both or off, not %q", h.Headers)
	}
	switch {
	case h.MaxKeys < 0:
		return fmt.Errorf("rate_limit: max_keys must be positive")
	case h.Jitter < 0 || h.Jitter > 1:
		return fmt.Errorf("rate_limit: jitter must be between 0 and 1")
	case h.SweepInterval < 0:
		return fmt.Errorf("rate_limit: sweep_interval must be positive")
	case len(h.RateLimits) == 0:
		return fmt.Errorf("rate_limit: no zone")
	}
	if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return err
	}
	switch h.FailMode {
	case "", "local", "open", "closed":
	default:
		return fmt.Errorf("rate_limit: fail_mode must be local, open or closed, not %q", h.FailMode)
	}
	if h.Timeout == 0 {
		h.Timeout = caddy.Duration(DefaultRedisTimeout)
	}
	if h.Redis != "" {
		c, err := acquireRedis(h.Redis, time.Duration(h.Timeout))
		if err != nil {
			return fmt.Errorf("rate_limit: %v", err)
		}
		h.redis, h.breaker = c, new(breaker)
	}
	var policies []string
	for _, name := range sortedKeys(h.RateLimits) {
		ref, err := h.provisionZone(ctx, name, h.RateLimits[name])
		if err != nil {
			return fmt.Errorf("rate_limit: zone %s: %v", name, err)
		}
		h.zones = append(h.zones, ref) // acquired: Cleanup releases it
		policies = append(policies, ref.policy)
	}
	// Its capacity is its length: a handler that appends to it copies it.
	h.policy = []string{strings.Join(policies, ", ")}
	return nil
}

// zoneName is what a zone may be called: it appears in placeholders,
// headers and Redis keys.
var zoneName = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

func (h *RateLimit) provisionZone(ctx caddy.Context, name string, cfg *ZoneConfig) (*zoneRef, error) {
	if !zoneName.MatchString(name) {
		return nil, fmt.Errorf("a zone name holds only letters, digits, '_', '.' and '-'")
	}
	if cfg == nil || cfg.Key == "" {
		return nil, fmt.Errorf("key is required")
	}
	algo, err := limiter.ParseAlgorithm(cfg.Algorithm)
	if err != nil {
		return nil, err
	}
	ref := &zoneRef{name: name, cfg: cfg, cost: 1, remKey: "http.rate_limit." + name + ".remaining"}
	ref.limit = limiter.Limit{Algorithm: algo, Events: cfg.MaxEvents, Window: time.Duration(cfg.Window), Burst: cfg.Burst}
	if err := ref.limit.Validate(); err != nil {
		return nil, err
	}
	if cfg.Cost != "" && !strings.Contains(cfg.Cost, "{") {
		if ref.cost, err = strconv.ParseInt(cfg.Cost, 10, 64); err != nil || ref.cost <= 0 {
			return nil, fmt.Errorf("cost must be a positive number or a placeholder, not %q", cfg.Cost)
		}
	}
	if algo == limiter.TokenBucket || algo == limiter.LeakyBucket {
		if b := ref.limit.Burst; b > 0 && b < ref.cost {
			return nil, fmt.Errorf("burst %d is below the cost %d: no request could ever pass", b, ref.cost)
		}
	}
	if cfg.IPv4Prefix < 0 || cfg.IPv4Prefix > 32 || cfg.IPv6Prefix < 0 || cfg.IPv6Prefix > 128 {
		return nil, fmt.Errorf("ipv4_prefix must be 0 to 32 and ipv6_prefix 0 to 128")
	}
	if cfg.MatcherSetsRaw != nil {
		mods, err := ctx.LoadModule(cfg, "MatcherSetsRaw")
		if err != nil {
			return nil, fmt.Errorf("loading matchers: %v", err)
		}
		if err := ref.matchers.FromInterface(mods); err != nil {
			return nil, err
		}
	}
	if err := claimZone(ctx, name, zoneDef{ref.limit, h.MaxKeys, h.Redis}); err != nil {
		return nil, err
	}
	val, loaded, err := rateZones.LoadOrNew(name, func() (caddy.Destructor, error) {
		return newZoneEntry(name, ref.limit, h.MaxKeys, time.Duration(h.SweepInterval), h.now), nil
	})
	if err != nil {
		return nil, err
	}
	ref.zone = val.(*zoneEntry)
	if loaded {
		ref.zone.Reconfigure(ref.limit, h.MaxKeys)
	}
	ref.zone.redis.Store(h.redis)
	ref.keyVar = singlePlaceholder(cfg.Key)
	ref.err = fmt.Errorf("%w in zone %s", errRateLimited, name)
	ref.policy = policyMember(name, ref.limit)
	ref.sfName, _ = httpsfv.Marshal(httpsfv.NewItem(name))
	return ref, nil
}

// policyMember is one zone's member of RateLimit-Policy.
func policyMember(name string, l limiter.Limit) string {
	item := httpsfv.NewItem(name)
	item.Params.Add("q", l.Events)
	item.Params.Add("w", int64(max(l.Window/time.Second, 1)))
	s, _ := httpsfv.Marshal(httpsfv.List{item})
	return s
}

// zoneDefs remembers, per config load, the limit each zone name was given,
// so two handlers of one config cannot give one zone two limits.
var zoneDefs sync.Map // context.Context → *sync.Map of name → zoneDef

type zoneDef struct {
	limit   limiter.Limit
	maxKeys int
	redis   string
}

func claimZone(ctx caddy.Context, name string, def zoneDef) error {
	defs, loaded := zoneDefs.LoadOrStore(ctx.Context, new(sync.Map))
	if !loaded {
		key := ctx.Context
		ctx.OnCancel(func() { zoneDefs.Delete(key) })
	}
	prev, ok := defs.(*sync.Map).LoadOrStore(name, def)
	if ok && prev != def {
		return fmt.Errorf("another rate_limit of this config defines the zone with other settings; a zone name is global")
	}
	return nil
}

// rateZones holds every zone of the running configs, by name.
var rateZones = caddy.NewUsagePool()

// zoneEntry is a zone with its sweeper and its counters.
type zoneEntry struct {
	*limiter.Zone
	allowed       atomic.Uint64
	limited       atomic.Uint64
	dryRunLimited atomic.Uint64
	storeErrors   atomic.Uint64
	redis         atomic.Pointer[redisClient] // the shared store, if any
	stop          chan struct{}
	done          chan struct{}
}

func newZoneEntry(name string, l limiter.Limit, maxKeys int, sweep time.Duration, now func() time.Time) *zoneEntry {
	z := &zoneEntry{Zone: limiter.NewZone(name, l, maxKeys), stop: make(chan struct{}), done: make(chan struct{})}
	go z.sweep(sweep, now)
	return z
}

// sweep drops keys back at rest, so idle keys cost no memory.
func (z *zoneEntry) sweep(every time.Duration, now func() time.Time) {
	defer close(z.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			z.Sweep(now())
		case <-z.stop:
			return
		}
	}
}

// Destruct stops the sweeper when no config uses the zone any longer.
func (z *zoneEntry) Destruct() error {
	close(z.stop)
	<-z.done
	return nil
}

// rangeZones calls f for each live zone, in name order.
func rangeZones(f func(*zoneEntry)) { rangePool(rateZones, f) }

var keySeed = maphash.MakeSeed()

// hashKey turns a key into the table's 64-bit key.
func hashKey(key string) uint64 { return maphash.String(keySeed, key) }

// maskKey limits a whole network together: an IP key becomes its prefix.
func (ref *zoneRef) maskKey(key string) string {
	if ref.cfg.IPv4Prefix == 0 && ref.cfg.IPv6Prefix == 0 {
		return key
	}
	addr, err := netip.ParseAddr(key)
	if err != nil {
		return key
	}
	bits := ref.cfg.IPv6Prefix
	if addr.Is4() || addr.Is4In6() {
		addr, bits = addr.Unmap(), ref.cfg.IPv4Prefix
	}
	if bits == 0 {
		return key
	}
	p, err := addr.Prefix(bits)
	if err != nil {
		return key
	}
	return p.String()
}

// keyOf expands the zone's key template for the request. A key that is one
// placeholder, the usual case, is looked up without parsing the template,
// and the commonest ones without the replacer's long switch.
func (ref *zoneRef) keyOf(r *http.Request, repl *caddy.Replacer) string {
	switch {
	case ref.keyVar == "":
		return repl.ReplaceAll(ref.cfg.Key, "")
	case strings.HasPrefix(ref.keyVar, "http.vars."):
		return caddy.ToString(caddyhttp.GetVar(r.Context(), ref.keyVar[len("http.vars."):]))
	case strings.HasPrefix(ref.keyVar, "http.request.header."):
		// As the replacer does: every field line, joined by commas.
		vals := r.Header.Values(ref.keyVar[len("http.request.header."):])
		if len(vals) == 1 {
			return vals[0]
		}
		return strings.Join(vals, ",")
	}
	v, _ := repl.Get(ref.keyVar)
	return caddy.ToString(v)
}

// singlePlaceholder returns the name of the placeholder that t consists
// of, such as "http.vars.client_ip" for "{http.vars.client_ip}", or "".
func singlePlaceholder(t string) string {
	if len(t) < 3 || t[0] != '{' || t[len(t)-1] != '}' || strings.ContainsAny(t[1:len(t)-1], "{}\\:") {
		return ""
	}
	return t[1 : len(t)-1]
}

// costOf returns the units the request costs in the zone.
func (ref *zoneRef) costOf(repl *caddy.Replacer) (int64, error) {
	if ref.cfg.Cost == "" || !strings.Contains(ref.cfg.Cost, "{") {
		return ref.cost, nil
	}
	v := repl.ReplaceAll(ref.cfg.Cost, "")
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("zone %s: cost %q is not a non-negative number", ref.name, v)
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
		if err != nil {
			return caddyhttp.Error(http.StatusInternalServerError, err)
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
	admitted, v := h.decide(r.Context(), h.arrival(r), refs, keys, reqs, out)
	switch v {
	case storeOpen:
		return next.ServeHTTP(w, r)
	case storeClosed:
		w.Header().Set("Retry-After", strconv.FormatInt(ceilSeconds(breakerPause), 10))
		return caddyhttp.Error(http.StatusServiceUnavailable, errStoreDown)
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

// remainingPlaceholders answers {http.rate_limit.<zone>.remaining} for the
// zones of one request, when a placeholder asks. Setting each value on
// the replacer instead costs every request the replacer's map and a boxed
// value, about 2% of a small response's throughput.
type remainingPlaceholders struct {
	keys      [maxZonesInline]string
	remaining [maxZonesInline]int64
	more      map[string]int64 // zones beyond the inline ones, rare
}

func newRemainingPlaceholders(refs []*zoneRef, out []limiter.Decision) remainingPlaceholders {
	var p remainingPlaceholders
	for i, ref := range refs {
		if i < maxZonesInline {
			p.keys[i], p.remaining[i] = ref.remKey, out[i].Remaining
			continue
		}
		if p.more == nil {
			p.more = make(map[string]int64, len(refs)-maxZonesInline)
		}
		p.more[ref.remKey] = out[i].Remaining
	}
	return p
}

func (p remainingPlaceholders) replace(key string) (any, bool) {
	for i, k := range p.keys {
		if k == key && k != "" {
			return p.remaining[i], true
		}
	}
	if v, ok := p.more[key]; ok {
		return v, true
	}
	return nil, false
}

// arrival returns when Caddy began to handle the request, which it has
// read from the clock already: reading it again costs about a quarter of a
// microsecond per request under load on a virtual machine. A request
// decided after a later arrival is fine: every limiter counts a time
// behind the key's state as the key's own, which is never more lenient.
func (h *RateLimit) arrival(r *http.Request) time.Time {
	if t, ok := caddyhttp.GetVar(r.Context(), "start_time").(time.Time); ok {
		return t
	}
	return h.now()
}

// errStoreDown refuses requests while Redis fails under fail_mode closed.
var errStoreDown = errors.New("rate-limit store unavailable")

// storeVerdict tells how a decision was made.
type storeVerdict int

const (
	storeDecided storeVerdict = iota // by Redis or in memory
	storeOpen                        // Redis failed; fail_mode open admits
	storeClosed                      // Redis failed; fail_mode closed refuses
)

// decide makes the decision in Redis when the handler has one, else in
// memory. When Redis fails, fail_mode says what happens: local decides in
// memory, open admits undecided, closed refuses with 503.
func (h *RateLimit) decide(ctx context.Context, now time.Time, refs []*zoneRef, keys []string, reqs []limiter.Request, out []limiter.Decision) (bool, storeVerdict) {
	if h.redis == nil {
		return limiter.Decide(now, reqs, out), storeDecided
	}
	if h.breaker.allow(now) {
		admitted, err := h.decideInRedis(ctx, refs, keys, reqs, out)
		if err == nil {
			return admitted, storeDecided
		}
		h.breaker.fail(now)
		for _, ref := range refs {
			ref.zone.storeErrors.Add(1)
		}
		h.breaker.log.warn(h.logger, now, "rate-limit store failing; using fail_mode",
			zap.String("fail_mode", h.failMode()), zap.Error(err))
	}
	switch h.failMode() {
	case "open":
		return true, storeOpen
	case "closed":
		return false, storeClosed
	}
	return limiter.Decide(now, reqs, out), storeDecided
}

func (h *RateLimit) decideInRedis(ctx context.Context, refs []*zoneRef, keys []string, reqs []limiter.Request, out []limiter.Decision) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(h.Timeout))
	defer cancel()
	var buf [maxZonesInline]redisstore.Request
	rr := buf[:0]
	for i, ref := range refs {
		rr = append(rr, redisstore.Request{StateKey: redisstore.StateKey(ref.name, keys[i]), Limit: ref.limit, Cost: reqs[i].Cost, DryRun: reqs[i].DryRun})
	}
	return redisstore.Decide(ctx, h.redis, 0, rr, out)
}

func (h *RateLimit) failMode() string {
	if h.FailMode == "" {
		return "local"
	}
	return h.FailMode
}

// sleep waits for a leaky bucket's slot; the wait ends early, with an
// error, when the client goes away.
func (h *RateLimit) sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (h *RateLimit) count(refs []*zoneRef, out []limiter.Decision, admitted bool) {
	if h.DisableMetrics {
		return
	}
	for i, ref := range refs {
		switch {
		case out[i].Allowed && admitted:
			ref.zone.allowed.Add(1)
		case !out[i].Allowed && ref.cfg.DryRun:
			ref.zone.dryRunLimited.Add(1)
		case !out[i].Allowed:
			ref.zone.limited.Add(1)
		}
	}
}

// refuse answers 429 through Caddy's error handling, with Retry-After
// never earlier than the moment the request would be admitted.
func (h *RateLimit) refuse(w http.ResponseWriter, r *http.Request, repl *caddy.Replacer, refs []*zoneRef, keys []string, out []limiter.Decision) error {
	var retry time.Duration
	var refusing string
	var refusingRef *zoneRef
	for i, ref := range refs {
		if out[i].Allowed || ref.cfg.DryRun {
			continue
		}
		if refusing == "" {
			refusing, refusingRef = ref.name, ref
		}
		retry = max(retry, out[i].RetryAfter)
		if ce := h.logger.Check(zap.DebugLevel, "rate limit exceeded"); ce != nil {
			ce.Write(zap.String("zone", ref.name), zap.String("key", h.loggedKey(keys[i])),
				zap.Duration("retry_after", out[i].RetryAfter))
		}
	}
	repl.Set("http.rate_limit.exceeded.name", refusing)
	if retry < time.Duration(1<<62) {
		if h.Jitter > 0 {
			retry += time.Duration(rand.Float64() * h.Jitter * float64(retry))
		}
		secs := (retry + time.Second - 1) / time.Second
		w.Header().Set("Retry-After", strconv.FormatInt(int64(secs), 10))
	}
	if !hasErrorRoutes(r) {
		// Without handle_errors, Caddy would answer a bare 429 after
		// logging the error with a stack trace and a fresh logger: write
		// the same answer directly, so a refusal costs less than a reply.
		w.WriteHeader(http.StatusTooManyRequests)
		return nil
	}
	return caddyhttp.Error(http.StatusTooManyRequests, refusingRef.refusal())
}

// hasErrorRoutes reports whether the request's server shapes errors with
// handle_errors.
func hasErrorRoutes(r *http.Request) bool {
	srv, ok := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	return !ok || (srv.Errors != nil && len(srv.Errors.Routes) > 0)
}

// errorIDs numbers refusals for the logs, cheaper than random IDs.
var errorIDs atomic.Uint64

// refusal is the error that handle_errors sees; filled in here, so that
// caddyhttp.Error spends no time on a random ID or a stack trace.
func (ref *zoneRef) refusal() caddyhttp.HandlerError {
	return caddyhttp.HandlerError{
		Err:        ref.err,
		StatusCode: http.StatusTooManyRequests,
		ID:         "rl" + strconv.FormatUint(errorIDs.Add(1), 36),
		Trace:      "gateway.(*RateLimit).refuse (ratelimit.go)",
	}
}

func (h *RateLimit) loggedKey(key string) string {
	if h.LogKey {
		return key
	}
	return strconv.FormatUint(hashKey(key), 16)
}

// setHeaders writes the rate-limit headers for the matching zones.
func (h *RateLimit) setHeaders(hdr http.Header, refs []*zoneRef, out []limiter.Decision) {
	if h.headerI {
		if len(refs) == len(h.zones) {
			hdr["Ratelimit-Policy"] = h.policy
		} else {
			policies := make([]string, len(refs))
			for i, ref := range refs {
				policies[i] = ref.policy
			}
			hdr["Ratelimit-Policy"] = []string{strings.Join(policies, ", ")}
		}
		hdr["Ratelimit"] = []string{rateLimitField(refs, out)}
	}
	if h.headerL {
		// The legacy headers speak of one limit: the zone with the least left.
		m := 0
		for i := range out {
			if out[i].Remaining < out[m].Remaining {
				m = i
			}
		}
		hdr["X-Ratelimit-Limit"] = []string{strconv.FormatInt(refs[m].limit.Events, 10)}
		hdr["X-Ratelimit-Remaining"] = []string{strconv.FormatInt(out[m].Remaining, 10)}
		hdr["X-Ratelimit-Reset"] = []string{strconv.FormatInt(ceilSeconds(out[m].Reset), 10)}
	}
}

// rateLimitField serializes the RateLimit field: a list of the zones'
// names, as Structured Field strings serialized once by httpsfv at
// provisioning, each with the integer parameters r and t.
func rateLimitField(refs []*zoneRef, out []limiter.Decision) string {
	var buf [128]byte
	b := buf[:0]
	for i, ref := range refs {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = append(b, ref.sfName...)
		b = append(b, ";r="...)
		b = strconv.AppendInt(b, out[i].Remaining, 10)
		b = append(b, ";t="...)
		b = strconv.AppendInt(b, ceilSeconds(out[i].Reset), 10)
	}
	return string(b)
}

func ceilSeconds(d time.Duration) int64 { return int64((d + time.Second - 1) / time.Second) }

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
	h.redis = nil
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
	_ caddy.CleanerUpper          = (*RateLimit)(nil)
	_ caddyhttp.MiddlewareHandler = (*RateLimit)(nil)
)
