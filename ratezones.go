package gateway

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dunglas/httpsfv"

	"github.com/caddy-gateway/gateway/internal/limiter"
	"github.com/caddy-gateway/gateway/internal/redisstore"
)

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
	// stateSuffix ends the names of the zone's keys in Redis, and params
	// are the zone's limit as the script takes it.
	stateSuffix string
	params      *redisstore.Params
}

// provisionZone acquires a zone, validated already, for the handler.
func (h *RateLimit) provisionZone(ctx caddy.Context, pool *Pool, name string, cfg *ZoneConfig) (*zoneRef, error) {
	limit, err := cfg.limit()
	if err != nil {
		return nil, err
	}
	cost, err := cfg.constantCost()
	if err != nil {
		return nil, err
	}
	ref := &zoneRef{name: name, cfg: cfg, limit: limit, cost: cost, remKey: "http.rate_limit." + name + ".remaining",
		stateSuffix: redisstore.ZoneSuffix(name, limit), params: redisstore.ParamsOf(limit)}
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
	// A zone the running config uses changes when this config starts: if
	// it fails to load, the zone keeps its limit, Redis and refusals, and
	// points at no client that the failed config closes.
	configure := func() (undo func()) {
		undo = ref.zone.restorer()
		if loaded {
			ref.zone.Reconfigure(ref.limit, h.MaxKeys)
			// What another Redis refused says nothing of this one. (A
			// refusal holds only under its own limit, so a changed limit
			// needs nothing here; a changed timeout is the same Redis.)
			if !sameRedis(ref.zone.redis.Load(), h.redis) {
				ref.zone.refusals.Clear()
			}
		}
		ref.zone.redis.Store(h.redis)
		ref.zone.bus.Store(h.bus)
		ref.zone.fallback.Store(&zoneFallback{failMode: h.failMode(), breaker: h.breaker})
		return undo
	}
	if loaded {
		pool.onStart(configure)
	} else {
		configure() // no running config knows it
	}
	ref.keyVar = singlePlaceholder(cfg.Key)
	ref.err = fmt.Errorf("%w in zone %s", errRateLimited, name)
	ref.policy = policyMember(name, ref.limit)
	ref.sfName, _ = httpsfv.Marshal(httpsfv.NewItem(name))
	return ref, nil
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
	bus           atomic.Pointer[bus]         // that store's invalidation bus
	fallback      atomic.Pointer[zoneFallback]
	// refusals are the keys the shared store refused until a moment still
	// to come, which this node refuses again without asking it.
	refusals *limiter.Refusals
	stop     chan struct{}
	done     chan struct{}
}

func newZoneEntry(name string, l limiter.Limit, maxKeys int, sweep time.Duration, now func() time.Time) *zoneEntry {
	z := &zoneEntry{
		Zone:     limiter.NewZone(name, l, maxKeys),
		refusals: limiter.NewRefusals(MaxLocalRefusals),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	go z.sweep(sweep, now)
	return z
}

// MaxLocalRefusals bounds the refusals each zone remembers: at most
// limiter.RefusalBytes each, 8 MiB.
const MaxLocalRefusals = 1 << 16

// restorer returns what puts the zone's settings back as they are now:
// its limit, key bound and keys' state, its Redis, bus and fail_mode. The
// refusals it remembers may be fewer; none is wrong: those another Redis
// made meanwhile are forgotten with it.
func (z *zoneEntry) restorer() func() {
	zone := z.Zone.Restorer()
	redis, bus, fallback := z.redis.Load(), z.bus.Load(), z.fallback.Load()
	return func() {
		zone()
		if !sameRedis(z.redis.Swap(redis), redis) {
			z.refusals.Clear()
		}
		z.bus.Store(bus)
		z.fallback.Store(fallback)
	}
}

// forget drops the remembered refusals of the key with the digest, written
// as redisstore.Digest.String does, or of every key when digest is empty.
func (z *zoneEntry) forget(digest string) error {
	if digest == "" {
		z.refusals.Clear()
		return nil
	}
	d, err := redisstore.ParseDigest(digest)
	if err != nil {
		return err
	}
	z.refusals.Forget(d.Short())
	return nil
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

// zoneFallback is what a zone with a shared store does while the store
// fails, as the health report tells it.
type zoneFallback struct {
	failMode string   // local, open or closed
	breaker  *breaker // open while the zone serves from its fallback; nil without Redis
}

// rangeZones calls f for each live zone, in name order.
func rangeZones(f func(*zoneEntry)) { rangePool(rateZones, f) }
