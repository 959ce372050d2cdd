// Package gateway turns Caddy into an API gateway: named response caches
// (cache_write, cache_read, cache_invalidate) held by the cache_pool app,
// and their admin routes. The ideas live below internal/; this package is
// the Caddy wiring.
package gateway

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/dgraph-io/ristretto/v2"
	"go.uber.org/zap"

	"github.com/caddy-gateway/gateway/internal/httpcache"
)

func init() {
	caddy.RegisterModule(Pool{})
}

// Size defaults and bounds of a named cache, in bytes.
const (
	DefaultMaxSize      = 64 << 20
	DefaultMaxEntrySize = 1 << 20
	minMaxSize          = 1 << 20
)

// Pool is the cache_pool app: it holds the named caches that cache_write,
// cache_read and cache_invalidate use. A named cache is shared by every
// site and route of a config and keeps its entries across config reloads
// that keep its name.
type Pool struct {
	// MaxSize is the default bound, in bytes, on the memory each named
	// cache holds: bodies, headers, keys and bookkeeping. Default 64 MiB.
	MaxSize int64 `json:"max_size,omitempty"`

	// MaxEntrySize is the default largest response, headers and body, that
	// a cache stores. Default 1 MiB.
	MaxEntrySize int64 `json:"max_entry_size,omitempty"`

	// Caches holds settings for caches by name. A name used by a handler
	// but absent here gets the defaults above.
	Caches map[string]*CacheSettings `json:"caches,omitempty"`

	// Redis is the URL of a Redis through which flushes, purges and
	// invalidations reach every node subscribed to it before the call that
	// made them returns. Placeholders such as {env.REDIS_URL} work.
	Redis string `json:"redis,omitempty"`

	logger *zap.Logger
	held   *heldCaches
	bus    *bus
}

// heldCaches are the named caches one config acquired from the usage pool.
type heldCaches struct {
	mu     sync.Mutex
	caches map[string]*namedCache
}

// CacheSettings overrides the pool's defaults for one named cache.
type CacheSettings struct {
	// MaxSize bounds the cache's memory in bytes. Default: the pool's.
	MaxSize int64 `json:"max_size,omitempty"`
	// MaxEntrySize is the largest storable response. Default: the pool's.
	MaxEntrySize int64 `json:"max_entry_size,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (Pool) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "cache_pool",
		New: func() caddy.Module { return new(Pool) },
	}
}

// Provision validates the settings and acquires every declared cache.
func (p *Pool) Provision(ctx caddy.Context) error {
	p.logger = ctx.Logger()
	p.held = &heldCaches{caches: make(map[string]*namedCache)}
	if p.MaxSize == 0 {
		p.MaxSize = DefaultMaxSize
	}
	if p.MaxEntrySize == 0 {
		p.MaxEntrySize = DefaultMaxEntrySize
	}
	if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return err
	}
	for _, name := range slices.Sorted(maps.Keys(p.Caches)) {
		if _, err := p.Cache(name); err != nil {
			return err
		}
	}
	return nil
}

// settings returns the effective sizes of the named cache.
func (p *Pool) settings(name string) (maxSize, maxEntrySize int64, err error) {
	maxSize, maxEntrySize = p.MaxSize, p.MaxEntrySize
	if s := p.Caches[name]; s != nil {
		if s.MaxSize != 0 {
			maxSize = s.MaxSize
		}
		if s.MaxEntrySize != 0 {
			maxEntrySize = s.MaxEntrySize
		}
	}
	switch {
	case maxSize < minMaxSize:
		return 0, 0, fmt.Errorf("cache %q: max_size %d is below the minimum of 1MiB", name, maxSize)
	case maxEntrySize <= 0:
		return 0, 0, fmt.Errorf("cache %q: max_entry_size must be positive", name)
	case maxEntrySize > maxSize/2:
		return 0, 0, fmt.Errorf("cache %q: max_entry_size %d exceeds half of max_size %d", name, maxEntrySize, maxSize)
	}
	return maxSize, maxEntrySize, nil
}

// Cache returns the named cache, acquiring it for this config the first
// time it is asked for. An existing cache of that name, kept from an
// earlier config, is resized in place to this config's settings.
func (p *Pool) Cache(name string) (*namedCache, error) {
	if name == "" {
		return nil, fmt.Errorf("a cache needs a name")
	}
	p.held.mu.Lock()
	defer p.held.mu.Unlock()
	if p.held.caches == nil {
		return nil, fmt.Errorf("cache %q: the cache_pool app was cleaned up", name)
	}
	if c := p.held.caches[name]; c != nil {
		return c, nil
	}
	maxSize, maxEntrySize, err := p.settings(name)
	if err != nil {
		return nil, err
	}
	val, loaded, err := caches.LoadOrNew(name, func() (caddy.Destructor, error) {
		return newNamedCache(name, maxSize, maxEntrySize)
	})
	if err != nil {
		return nil, fmt.Errorf("cache %q: %v", name, err)
	}
	c := val.(*namedCache)
	if loaded {
		c.resize(maxSize, maxEntrySize)
	}
	p.held.caches[name] = c
	return c, nil
}

// Start joins the invalidation bus when the pool has a Redis, and binds
// this config's caches to it (or to none). The bus dials lazily: Caddy
// starts while Redis is down.
func (p *Pool) Start() error {
	if p.Redis != "" {
		b, err := acquireBus(p.Redis, p.logger)
		if err != nil {
			return fmt.Errorf("cache_pool: %v", err)
		}
		p.bus = b
	}
	p.held.mu.Lock()
	defer p.held.mu.Unlock()
	for _, c := range p.held.caches {
		c.bus.Store(p.bus)
	}
	return nil
}

// Stop leaves the bus; it stays up while a newer config uses it. The caches
// outlive a stop when the next config keeps them.
func (p *Pool) Stop() error {
	releaseBus(p.bus)
	p.bus = nil
	return nil
}

// Cleanup releases every cache this config acquired. A cache no config
// holds any longer is closed.
func (p *Pool) Cleanup() error {
	if p.held == nil {
		return nil
	}
	p.held.mu.Lock()
	defer p.held.mu.Unlock()
	for name := range p.held.caches {
		if _, err := caches.Delete(name); err != nil {
			p.logger.Error("releasing cache", zap.String("cache", name), zap.Error(err))
		}
	}
	p.held.caches = nil
	return nil
}

// caches holds every named cache of the running configs, by name.
var caches = caddy.NewUsagePool()

// rangeCaches calls f for each live named cache, in name order.
func rangeCaches(f func(*namedCache)) { rangePool(caches, f) }

// lookupCache returns the live named cache called name, or nil.
func lookupCache(name string) *namedCache { return lookupPool[*namedCache](caches, name) }

// rangePool calls f for each value of type T in a usage pool keyed by
// name, in name order.
func rangePool[T any](pool *caddy.UsagePool, f func(T)) {
	type named struct {
		name string
		v    T
	}
	var all []named
	pool.Range(func(k, v any) bool {
		name, _ := k.(string)
		if t, ok := v.(T); ok {
			all = append(all, named{name, t})
		}
		return true
	})
	slices.SortFunc(all, func(a, b named) int { return strings.Compare(a.name, b.name) })
	for _, n := range all {
		f(n.v)
	}
}

// lookupPool returns the value called name in a usage pool, without taking
// a reference, or T's zero value.
func lookupPool[T any](pool *caddy.UsagePool, name string) T {
	var found T
	pool.Range(func(k, v any) bool {
		if k != name {
			return true
		}
		found, _ = v.(T)
		return false
	})
	return found
}

// entry is one stored response, or, when vary is set, the marker that
// tells which request headers select the variants of a resource.
type entry struct {
	key  []byte
	host string
	path string
	tags []string
	cost int64

	vary []string

	status      int
	fields      []field
	cacheStatus []string // the upstream's Cache-Status members
	validators  httpcache.Validators
	body        []byte
	storedAt    time.Time
	initialAge  time.Duration
	expires     time.Time

	// The entries of one path form a list that the index owns.
	indexed            bool
	prevPath, nextPath *entry
}

// field is one stored header field. A slice of them costs far less than
// an http.Header map, and a hit copies them into the response as fast.
type field struct {
	name   string
	values []string
}

// Memory accounted per entry beyond its strings and body, measured with
// TestFloodStaysBounded: the entry, its slot in the store's maps and
// policy, and its place in the index.
const (
	entryOverhead       = 640
	headerValueOverhead = 40
)

// computeCost sets e.cost to the bytes the entry holds in memory.
func (e *entry) computeCost() {
	n := int64(entryOverhead + len(e.key) + len(e.host) + len(e.path) + cap(e.body))
	for _, t := range e.tags {
		n += int64(len(t) + 2*headerValueOverhead)
	}
	for _, v := range e.vary {
		n += int64(len(v) + headerValueOverhead)
	}
	for _, f := range e.fields {
		n += int64(len(f.name)) + valuesSize(f.values)
	}
	e.cost = n + valuesSize(e.cacheStatus)
}

func valuesSize(values []string) int64 {
	n := int64(headerValueOverhead)
	for _, v := range values {
		n += int64(len(v) + 16)
	}
	return n
}

// headerSize estimates the bytes a header holds once stored.
func headerSize(h http.Header) int64 {
	var n int64
	for k, vs := range h {
		n += int64(len(k)) + valuesSize(vs)
	}
	return n
}

// invalidationSlots spreads per-path invalidation counters: a store that
// started before an invalidation of its path, or of the whole cache, is
// dropped rather than written after it.
const invalidationSlots = 256

// namedCache is one named cache: a ristretto store bounded in bytes, the
// index that invalidation by path, prefix and tag walks, the key rules of
// the writers that use it, and its counters.
type namedCache struct {
	name  string
	store *ristretto.Cache[[]byte, *entry]
	index index

	maxSize      atomic.Int64
	maxEntrySize atomic.Int64
	fixedCost    int64

	// mu orders stores against invalidations: a store holds it shared
	// while it checks the epochs and writes; an invalidation holds it
	// exclusively while it bumps the epochs, deletes and waits for the
	// store's buffers to drain.
	mu     sync.RWMutex
	epoch  atomic.Uint64
	slots  [invalidationSlots]atomic.Uint64
	rulesM sync.Mutex
	rules  atomic.Pointer[[]*keyRule]
	refs   map[string]int

	flushing atomic.Bool
	stats    cacheStats
	bus      atomic.Pointer[bus] // other nodes to invalidate, if any
}

func newNamedCache(name string, maxSize, maxEntrySize int64) (*namedCache, error) {
	counters := counterCount(maxSize)
	c := &namedCache{name: name, refs: make(map[string]int)}
	// The admission counters and the store's write buffer are memory the
	// cache holds; they come out of max_size.
	c.fixedCost = counters*4 + 256<<10
	store, err := ristretto.NewCache(&ristretto.Config[[]byte, *entry]{
		NumCounters: counters,
		MaxCost:     maxSize - c.fixedCost,
		BufferItems: 64,
		OnEvict:     c.onEvict,
		OnReject:    c.onReject,
		OnExit:      c.onExit,
	})
	if err != nil {
		return nil, err
	}
	c.store = store
	c.maxSize.Store(maxSize)
	c.maxEntrySize.Store(maxEntrySize)
	c.index.init()
	c.rules.Store(new([]*keyRule))
	return c, nil
}

// counterCount sizes ristretto's admission counters: about one per 256
// bytes of capacity, ten per entry of 2.5 KiB.
func counterCount(maxSize int64) int64 {
	return min(max(maxSize/256, 1<<10), 1<<24)
}

// resize applies new sizes in place; entries are kept, and the store
// evicts down to a smaller bound as new entries arrive.
func (c *namedCache) resize(maxSize, maxEntrySize int64) {
	c.maxEntrySize.Store(maxEntrySize)
	if c.maxSize.Swap(maxSize) != maxSize {
		c.store.UpdateMaxCost(maxSize - c.fixedCost)
	}
}

// Destruct closes the store when no config holds the cache any longer.
func (c *namedCache) Destruct() error {
	c.store.Close()
	return nil
}

func (c *namedCache) onEvict(item *ristretto.Item[*entry]) {
	if c.flushing.Load() {
		return
	}
	if !item.Expiration.IsZero() && !item.Expiration.After(time.Now()) {
		return // expired, not evicted for room
	}
	c.stats.evicted.Add(1)
}

func (c *namedCache) onReject(*ristretto.Item[*entry]) {
	c.stats.rejected.Add(1)
	c.stats.record(httpcache.ReasonRefused)
}

// onExit runs whenever a value leaves the store, for any reason.
func (c *namedCache) onExit(e *entry) {
	if e != nil {
		c.index.remove(e)
	}
}

// snapshot is the state of the invalidation epochs a store started under.
type snapshot struct{ global, slot uint64 }

// pathSlot hashes the path with 32-bit FNV-1a.
func pathSlot(path string) int {
	h := uint32(2166136261)
	for i := 0; i < len(path); i++ {
		h ^= uint32(path[i])
		h *= 16777619
	}
	return int(h % invalidationSlots)
}

func (c *namedCache) snapshot(path string) snapshot {
	return snapshot{c.epoch.Load(), c.slots[pathSlot(path)].Load()}
}

// put stores the entry written for one request, and the Vary marker that
// leads to it if there is one, unless an invalidation of their path
// happened since snap was taken. It returns "" or the reason nothing was
// stored. When it returns, a later lookup finds the entries.
func (c *namedCache) put(snap snapshot, ttl time.Duration, e, marker *entry) string {
	c.mu.RLock()
	if snap != c.snapshot(e.path) {
		c.mu.RUnlock()
		return httpcache.ReasonInvalidated
	}
	// Ristretto drops the entry a little after our own expiry.
	storeTTL := ttl + time.Second
	refused := false
	for _, x := range [2]*entry{e, marker} {
		if x == nil {
			continue
		}
		c.index.add(x)
		if !c.store.SetWithTTL(x.key, x, x.cost, storeTTL) {
			c.index.remove(x)
			refused = true
		}
	}
	c.mu.RUnlock()
	c.store.Wait()
	if refused {
		return httpcache.ReasonRefused
	}
	return ""
}

// get returns the entry stored under key, if its key matches exactly.
func (c *namedCache) get(key []byte) *entry {
	e, ok := c.store.Get(key)
	if !ok || e == nil || string(e.key) != string(key) {
		return nil
	}
	return e
}

// flush drops every entry. When it returns, no lookup finds any entry
// stored before it, nor one from a store that started before it.
func (c *namedCache) flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch.Add(1)
	c.flushing.Store(true)
	c.store.Clear()
	c.index.clear()
	c.flushing.Store(false)
}

// purge drops the entries that match, and returns how many it dropped.
// Paths are escaped paths; a host of "" matches any host.
func (c *namedCache) purge(t purgeTarget) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(t.prefixes) > 0 || len(t.tags) > 0 {
		c.epoch.Add(1)
	}
	for _, u := range t.urls {
		c.slots[pathSlot(u.Path)].Add(1)
	}
	victims := c.index.match(t)
	for _, e := range victims {
		c.store.Del(e.key)
	}
	c.store.Wait()
	removed := 0
	for _, e := range victims {
		if e.vary == nil {
			removed++
		}
	}
	return removed
}

// flushEverywhere flushes the cache here and on every node of its bus,
// and returns how many nodes flushed it.
func (c *namedCache) flushEverywhere(ctx context.Context) (nodes int, err error) {
	c.flush()
	return c.broadcast(ctx, busMessage{Cache: c.name, Flush: true})
}

// purgeEverywhere purges here and on every node of the cache's bus. It
// returns how many entries this node removed and how many nodes purged.
func (c *namedCache) purgeEverywhere(ctx context.Context, t purgeTarget) (removed, nodes int, err error) {
	removed = c.purge(t)
	nodes, err = c.broadcast(ctx, busMessage{Cache: c.name, URLs: t.urls, Prefixes: t.prefixes, Tags: t.tags})
	return removed, nodes, err
}

func (c *namedCache) broadcast(ctx context.Context, m busMessage) (int, error) {
	b := c.bus.Load()
	if b == nil {
		return 1, nil
	}
	return b.publish(ctx, m)
}

// usedBytes returns the memory the cache holds now.
func (c *namedCache) usedBytes() int64 {
	return c.store.MaxCost() - c.store.RemainingCost() + c.fixedCost
}

// keyRule is how one cache_write builds keys: the spec and the
// placeholder templates whose values join the key.
type keyRule struct {
	spec         *httpcache.KeySpec
	placeholders []string
	id           string
}

func newKeyRule(query, headers, placeholders []string) *keyRule {
	spec := httpcache.NewKeySpec(query, headers, placeholders)
	return &keyRule{spec: spec, placeholders: placeholders, id: fmt.Sprintf("%016x", spec.ID())}
}

// addRule makes a writer's key rule known to readers of the cache.
func (c *namedCache) addRule(r *keyRule) {
	c.rulesM.Lock()
	defer c.rulesM.Unlock()
	c.refs[r.id]++
	if c.refs[r.id] > 1 {
		return
	}
	rules := slices.Clone(*c.rules.Load())
	rules = append(rules, r)
	c.rules.Store(&rules)
}

// removeRule forgets a writer's key rule once no writer uses it.
func (c *namedCache) removeRule(r *keyRule) {
	c.rulesM.Lock()
	defer c.rulesM.Unlock()
	c.refs[r.id]--
	if c.refs[r.id] > 0 {
		return
	}
	delete(c.refs, r.id)
	rules := slices.DeleteFunc(slices.Clone(*c.rules.Load()), func(x *keyRule) bool { return x.id == r.id })
	c.rules.Store(&rules)
}

// Interface guards
var (
	_ caddy.App          = (*Pool)(nil)
	_ caddy.Provisioner  = (*Pool)(nil)
	_ caddy.CleanerUpper = (*Pool)(nil)
	_ caddy.Destructor   = (*namedCache)(nil)
)

// build returns the key of r under the rule, for the resource's primary
// entry (vary nil) or for one of its variants. The result is valid until
// b's next use.
func (k *keyRule) build(b *httpcache.KeyBuilder, r *http.Request, vary []string) []byte {
	var values []string
	if len(k.placeholders) > 0 {
		repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
		values = make([]string, len(k.placeholders))
		for i, t := range k.placeholders {
			values[i] = repl.ReplaceAll(t, "")
		}
	}
	return b.Build(k.spec, r, values, vary)
}

var keyBuilders = sync.Pool{New: func() any { return new(httpcache.KeyBuilder) }}

func getKeyBuilder() *httpcache.KeyBuilder { return keyBuilders.Get().(*httpcache.KeyBuilder) }

func putKeyBuilder(b *httpcache.KeyBuilder) {
	b.Reset()
	keyBuilders.Put(b)
}
