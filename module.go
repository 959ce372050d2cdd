// Package gateway turns Caddy into an API gateway: named response caches
// (cache_write, cache_read, cache_invalidate) held by the cache_pool app,
// and their admin routes. The ideas live below internal/; this package is
// the Caddy wiring.
package gateway

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-gateway/gateway/internal/cachestore"
)

func init() {
	caddy.RegisterModule(Pool{})
}

// Pool is the cache_pool app: it holds the named caches that cache_write,
// cache_read and cache_invalidate use. A named cache is shared by every
// site and route of a config and keeps its entries across config reloads
// that keep its name; a changed max_size resizes it in place. Of its
// options, only Redis takes placeholders (global ones, such as {env.*}).
type Pool struct {
	// MaxSize is the default bound, in bytes, on the memory each named
	// cache holds: bodies, headers, keys and bookkeeping. At least 1 MiB.
	// Default 64 MiB.
	MaxSize int64 `json:"max_size,omitempty"`

	// MaxEntrySize is the default largest response, headers and body, that
	// a cache stores; at most half of the cache's max_size. Default 1 MiB.
	MaxEntrySize int64 `json:"max_entry_size,omitempty"`

	// Caches holds settings for caches by name. A name used by a handler
	// but absent here gets the defaults above.
	Caches map[string]*CacheSettings `json:"caches,omitempty"`

	// Redis is the URL of a Redis (redis:// or rediss://, with user,
	// password and database) through which flushes, purges and
	// invalidations reach every node subscribed to it before the call that
	// made them returns. Global placeholders such as {env.REDIS_URL} work.
	// Default: none, invalidations stay on this node.
	Redis string `json:"redis,omitempty"`

	logger *zap.Logger
	held   *heldCaches
	bus    *bus
	// changes are what the config's modules change in state that
	// configs share, made when it starts.
	changes *changes
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
	p.changes = &changes{self: ctx.Context}
	p.held = &heldCaches{caches: make(map[string]*namedCache)}
	if err := p.Validate(); err != nil {
		return err
	}
	if err := registerCollector(ctx.GetMetricsRegistry(), cacheCollector{}); err != nil {
		return err
	}
	for _, name := range slices.Sorted(maps.Keys(p.Caches)) {
		if _, err := p.Cache(name); err != nil {
			return err
		}
	}
	return nil
}

// Validate checks the sizes of every declared cache, the defaults alone
// (a cache that only a handler names is checked with them when it is
// acquired), and the Redis URL.
func (p *Pool) Validate() error {
	if p.MaxSize != 0 {
		if err := cachestore.CheckMaxSize(p.MaxSize); err != nil {
			return fmt.Errorf("cache_pool: %v", err)
		}
	}
	if p.MaxEntrySize != 0 {
		if err := cachestore.CheckMaxEntrySize(p.MaxEntrySize); err != nil {
			return fmt.Errorf("cache_pool: %v", err)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(p.Caches)) {
		if name == "" {
			return fmt.Errorf("cache_pool: caches: a cache needs a name")
		}
		if err := p.config(name).Validate(); err != nil {
			return fmt.Errorf("cache_pool: cache %q: %v", name, err)
		}
	}
	if err := validateRedisURL(p.Redis); err != nil {
		return fmt.Errorf("cache_pool: redis: %v", err)
	}
	return nil
}

// config returns the effective settings of the named cache.
func (p *Pool) config(name string) cachestore.Config {
	cfg := cachestore.Config{
		Name:         name,
		MaxSize:      cmp.Or(p.MaxSize, cachestore.DefaultMaxSize),
		MaxEntrySize: cmp.Or(p.MaxEntrySize, cachestore.DefaultMaxEntrySize),
	}
	if s := p.Caches[name]; s != nil {
		cfg.MaxSize = cmp.Or(s.MaxSize, cfg.MaxSize)
		cfg.MaxEntrySize = cmp.Or(s.MaxEntrySize, cfg.MaxEntrySize)
	}
	return cfg
}

// Cache returns the named cache, acquiring it for this config the first
// time it is asked for. An existing cache of that name, kept from an
// earlier config, is resized in place to this config's settings when
// this config starts.
func (p *Pool) Cache(name string) (*namedCache, error) {
	cfg := p.config(name)
	p.held.mu.Lock()
	defer p.held.mu.Unlock()
	if p.held.caches == nil {
		return nil, fmt.Errorf("cache %q: the cache_pool app was cleaned up", name)
	}
	if c := p.held.caches[name]; c != nil {
		return c, nil
	}
	// The settings are validated here, the defaults included for a cache
	// that only a handler names.
	val, loaded, err := caches.LoadOrNew(name, func() (caddy.Destructor, error) {
		s, err := cachestore.New(cfg)
		if err != nil {
			return nil, err
		}
		return &namedCache{Store: s}, nil
	})
	if err != nil {
		return nil, err
	}
	c := val.(*namedCache)
	if loaded {
		if err := cfg.Validate(); err != nil {
			caches.Delete(name)
			return nil, fmt.Errorf("cache %q: %v", name, err)
		}
		p.onStart(func() func() {
			was := cachestore.Config{Name: name, MaxSize: c.MaxSize(), MaxEntrySize: c.MaxEntrySize()}
			_ = c.Resize(cfg) // valid: it cannot fail
			return func() { _ = c.Resize(was) }
		})
	}
	p.held.caches[name] = c
	return c, nil
}

// Start joins the invalidation bus when the pool has a Redis, and binds
// this config's caches to it (or to none). It waits for the bus's first
// subscription, so that a purge on another node right after reaches this
// one, but not for Redis to answer: Caddy starts while Redis is down.
func (p *Pool) Start() error {
	if p.Redis != "" {
		b, err := acquireBus(p.Redis, p.logger)
		if err != nil {
			return fmt.Errorf("cache_pool: %v", err)
		}
		p.bus = b // released in Cleanup: the bus serves while the server drains
		b.start()
		b.waitTried()
	}
	p.held.mu.Lock()
	for _, c := range p.held.caches {
		p.onStart(func() func() {
			was := c.bus.Swap(p.bus)
			return func() { c.bus.Store(was) }
		})
	}
	p.held.mu.Unlock()
	p.changes.apply()
	return nil
}

// onStart has f run when the config starts, not when it is provisioned;
// what f returns, unless nil, undoes it if the config never becomes the
// active one.
func (p *Pool) onStart(f func() (undo func())) { p.changes.add(f) }

// changes are what one config changes in state that configs share (a
// zone's settings, a cache's size and bus), made when the config starts,
// not when it is provisioned: a config that fails to load must leave the
// running one as it was. Caddy starts a config's apps in no set order and
// may fail it after the cache_pool app started (another app's Start, or
// finishing the setup), so each change comes with its undo, run if the
// config stops or is cleaned up while the config before it is still the
// active one. Once this config is active, the undos are dropped: they
// hold the state it replaced.
type changes struct {
	mu      sync.Mutex
	pending []func() (undo func())
	undos   []func()
	self    context.Context // this config's
	prev    context.Context // the active config's when these were made
	settled chan struct{}   // closed when the undos are no longer needed
}

func (c *changes) add(f func() (undo func())) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pending = append(c.pending, f)
}

// apply makes the pending changes, and drops their undos once this config
// is the active one.
func (c *changes) apply() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.prev = caddy.ActiveContext().Context
	for _, f := range c.pending {
		if undo := f(); undo != nil {
			c.undos = append(c.undos, undo)
		}
	}
	c.pending = nil
	if len(c.undos) == 0 || c.prev == nil {
		// Nothing to undo, or no config ran before: nothing to put back.
		c.undos = nil
		return
	}
	c.settled = make(chan struct{})
	go c.settle(c.settled)
}

// settle waits for the config to become the active one, or to be
// undone, checking at settleEvery; Caddy makes a config active just
// after starting it.
func (c *changes) settle(settled <-chan struct{}) {
	t := time.NewTicker(settleEvery)
	defer t.Stop()
	for {
		select {
		case <-settled:
			return
		case <-t.C:
		}
		if active := caddy.ActiveContext().Context; active != c.prev {
			c.mu.Lock()
			if active == c.self {
				c.undos = nil
			}
			c.mu.Unlock()
			return
		}
	}
}

const settleEvery = 50 * time.Millisecond

// revert undoes the changes if the config that was active when they were
// made still is: this one stops because it failed to start or to finish
// setting up. (A config that ran stops once the next one is active.)
func (c *changes) revert() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.settled != nil {
		close(c.settled)
		c.settled = nil
	}
	if caddy.ActiveContext().Context == c.prev {
		for _, undo := range slices.Backward(c.undos) {
			undo()
		}
	}
	c.undos, c.pending = nil, nil
}

// configPool returns the cache_pool app of the config being provisioned,
// made with its defaults when the config has none: the app whose Start
// applies what the config changes in shared state.
func configPool(ctx caddy.Context) (*Pool, error) {
	app, err := ctx.App("cache_pool")
	if err != nil {
		return nil, fmt.Errorf("loading cache_pool app: %v", err)
	}
	return app.(*Pool), nil
}

// Stop undoes what a config that never became active changed. It keeps
// the bus: Caddy stops apps in no set order, and the HTTP app's Stop is
// where the server drains (shutdown_delay, grace_period), still serving
// from the caches, which must still hear other nodes' invalidations.
func (p *Pool) Stop() error {
	if p.changes != nil {
		p.changes.revert()
	}
	return nil
}

// Cleanup leaves the bus, which stays up while a newer config uses it, and
// releases every cache this config acquired. A cache no config holds any
// longer is closed. Caddy cleans up a config after stopping all its apps.
func (p *Pool) Cleanup() error {
	// A config that fails to finish setting up is cleaned up without a
	// stop.
	if p.changes != nil {
		p.changes.revert()
	}
	releaseBus(p.bus)
	p.bus = nil
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

// namedCache is a store as the running configs hold it: shared through the
// usage pool, and bound to the invalidation bus of the config that runs it.
type namedCache struct {
	*cachestore.Store
	bus atomic.Pointer[bus] // other nodes to invalidate, if any
}

// Destruct closes the store when no config holds the cache any longer.
func (c *namedCache) Destruct() error {
	c.Close()
	return nil
}

// flushEverywhere flushes the cache here and on every node of its bus,
// and returns how many nodes flushed it.
func (c *namedCache) flushEverywhere(ctx context.Context) (nodes int, err error) {
	c.Flush()
	return c.broadcast(ctx, busMessage{Cache: c.Name(), Flush: true})
}

// purgeEverywhere purges here and on every node of the cache's bus. It
// returns how many entries this node removed and how many nodes purged.
func (c *namedCache) purgeEverywhere(ctx context.Context, t cachestore.Target) (removed, nodes int, err error) {
	removed = c.Purge(t)
	nodes, err = c.broadcast(ctx, busMessage{Cache: c.Name(), Target: t})
	return removed, nodes, err
}

func (c *namedCache) broadcast(ctx context.Context, m busMessage) (int, error) {
	b := c.bus.Load()
	if b == nil {
		return 1, nil
	}
	return b.publish(ctx, m)
}

// Interface guards
var (
	_ caddy.App          = (*Pool)(nil)
	_ caddy.Provisioner  = (*Pool)(nil)
	_ caddy.Validator    = (*Pool)(nil)
	_ caddy.CleanerUpper = (*Pool)(nil)
	_ caddy.Destructor   = (*namedCache)(nil)
)
