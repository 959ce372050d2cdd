package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/caddy-gateway/gateway/internal/cachestore"
)

// The invalidation bus carries flushes and purges between the nodes that
// share a Redis: each node applies what another published, then
// acknowledges, and the publisher waits for every acknowledgement before
// its call returns.
const (
	busChannel   = "caddy-gateway:cache:invalidate:" // and the database's number
	busAckPrefix = "caddy-gateway:cache:ack:"
	busAckWait   = 2 * time.Second
	busTimeout   = 2 * time.Second

	// A subscription that failed is made anew after busRetryMin, then
	// after twice as long each time it fails again, up to busRetryMax.
	busRetryMin = 100 * time.Millisecond
	busRetryMax = 2 * time.Second

	// maxBusMessage bounds a message a node sends or applies: an admin
	// purge (at most maxPurgeTargets targets in a body of maxPurgeBody)
	// fits even when JSON writes each of its bytes as \u00XX.
	maxBusMessage = 8 << 20
)

// nodeID tells this process's messages from other nodes'.
var nodeID = randomID()

func randomID() string {
	b := make([]byte, 12)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// busMessage is one invalidation: of caches or, with Zone, of a
// rate-limit zone's local refusals. An empty Cache means every cache.
type busMessage struct {
	Node  string `json:"node"`
	ID    string `json:"id"`
	Cache string `json:"cache,omitempty"`
	Flush bool   `json:"flush,omitempty"`

	// The purge's target, its fields at the message's top level.
	cachestore.Target

	// Zone names a rate-limit zone whose key KeyDigest (or, when empty,
	// every key) an operator reset: each node forgets its refusals of it.
	Zone      string `json:"zone,omitempty"`
	KeyDigest string `json:"key_digest,omitempty"`
}

// buses holds one bus per Redis database and client settings, kept
// across reloads (see busKey).
var buses = caddy.NewUsagePool()

type bus struct {
	client  *redisClient
	channel string
	key     string
	logger  *zap.Logger
	warns   logThrottle
	ctx     context.Context
	stop    context.CancelFunc
	tried   chan struct{} // closed once the first subscription was sent or failed
	done    chan struct{} // closed when listen returns

	mu      sync.Mutex // guards ps, which listen makes and replaces, and started
	ps      *redis.PubSub
	started bool

	// subscribed is set while Redis has confirmed the subscription, and
	// lastErr is why it is not, for the health report.
	subscribed atomic.Bool
	lastErr    atomic.Pointer[string]
}

// acquireBus returns the bus of a Redis URL. Acquiring it dials nothing:
// start subscribes, in the background, once a config that uses it starts.
func acquireBus(url string, logger *zap.Logger) (*bus, error) {
	expanded := caddy.NewReplacer().ReplaceAll(url, "")
	target, err := parseRedisURL(expanded)
	if err != nil {
		return nil, fmt.Errorf("redis: invalid URL: %v", err)
	}
	key := busKey(expanded, target)
	val, _, err := buses.LoadOrNew(key, func() (caddy.Destructor, error) {
		c, err := acquireRedis(url, busTimeout)
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithCancel(context.Background())
		return &bus{
			client: c, channel: busChannel + strconv.Itoa(target.db()), key: key, logger: logger,
			ctx: ctx, stop: cancel, tried: make(chan struct{}), done: make(chan struct{}),
		}, nil
	})
	if err != nil {
		return nil, err
	}
	return val.(*bus), nil
}

// busKey tells buses apart: by the database, so that two spellings of one
// (redis://host:6379 and redis://host:6379/0) share a bus and a process
// counts as one node, and by the user, password and options, which the
// bus's client is made with: a reload that changes the password makes a
// new bus with it.
func busKey(url string, target *redisTarget) string {
	_, rest, _ := strings.Cut(url, "://")
	userinfo, _, tail := splitAuthority(rest)
	_, query, _ := strings.Cut(tail, "?")
	return target.display + "\x00" + userinfo + "\x00" + query
}

// start has the bus subscribe and listen, unless it does already.
func (b *bus) start() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.started || b.ctx.Err() != nil {
		return
	}
	b.started = true
	go b.listen(b.ctx)
}

func releaseBus(b *bus) {
	if b != nil {
		buses.Delete(b.key)
	}
}

// Destruct stops listening once no config uses the bus.
func (b *bus) Destruct() error {
	b.stop()
	b.mu.Lock()
	if b.ps != nil {
		b.ps.Close() // a blocked Receive returns
	}
	started := b.started
	b.mu.Unlock()
	if started {
		<-b.done
	}
	releaseRedis(b.client)
	return nil
}

// listen applies what other nodes publish. Whenever it subscribes after a
// failure, the first subscription's included, it flushes every cache on
// the bus: what was published meanwhile is lost, and a node must not
// serve an entry invalidated while it was away.
func (b *bus) listen(ctx context.Context) {
	defer close(b.done)
	b.subscribe(ctx)
	close(b.tried)
	lost := false
	retry := busRetryMin
	for {
		b.mu.Lock()
		ps := b.ps
		b.mu.Unlock()
		if ps == nil {
			return // stopped before it first subscribed
		}
		msg, err := ps.Receive(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			lost = true
			b.unsubscribed(err)
			b.warns.warn(b.logger, time.Now(), "cache invalidation bus: not subscribed", zap.Error(err))
			select {
			case <-ctx.Done():
				return
			case <-time.After(retry):
			}
			retry = min(2*retry, busRetryMax)
			// Subscribe anew. go-redis redials a lost connection by
			// itself, but not after Redis refused the subscription (an
			// ACL without the channel), and in a cluster it stays on a
			// node that answered MOVED: the slot's owner changed while
			// its map was stale.
			b.subscribe(ctx)
			continue
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "sunsubscribe" {
				// The cluster gave the channel's slot to another node,
				// which carries its messages from now on: subscribe
				// there. What was published meanwhile is lost.
				lost = true
				b.unsubscribed(errors.New("the cluster moved the channel's slot"))
				b.subscribe(ctx)
				continue
			}
			if m.Kind != "subscribe" && m.Kind != "ssubscribe" {
				continue
			}
			if lost {
				b.flushAll()
				b.logger.Info("invalidation bus subscribed after a failure; flushed every cache and rate-limit refusal it serves")
			}
			lost, retry = false, busRetryMin
			b.subscribed.Store(true)
		case *redis.Message:
			b.apply(ctx, m.Payload)
		}
	}
}

// unsubscribed records why the bus is not subscribed.
func (b *bus) unsubscribed(err error) {
	msg := err.Error()
	b.lastErr.Store(&msg)
	b.subscribed.Store(false)
}

// subscribe subscribes the bus, replacing any subscription it had. In a
// cluster the new one is at the node that owns the channel's slot now, as
// far as the client knows: it learns again in the background, and a
// subscription made before it has learnt is answered MOVED and made anew.
func (b *bus) subscribe(ctx context.Context) {
	b.client.reloadSlots()
	b.mu.Lock()
	defer b.mu.Unlock()
	if ctx.Err() != nil {
		return // Destruct closes the subscription
	}
	if b.ps != nil {
		b.ps.Close()
	}
	b.ps = b.client.subscribe(ctx, b.channel)
}

// flushAll drops what a lost message might have invalidated: every cache
// on the bus, and every zone's remembered refusals.
func (b *bus) flushAll() {
	rangeCaches(func(c *namedCache) {
		if c.bus.Load() == b {
			c.Flush()
		}
	})
	rangeZones(func(z *zoneEntry) {
		if z.bus.Load() == b {
			z.refusals.Clear()
		}
	})
}

// waitTried waits until the bus has sent its first subscription, or
// failed to: its dial is bounded by the bus's timeout.
func (b *bus) waitTried() {
	select {
	case <-b.tried:
	case <-b.done:
	}
}

// apply carries out another node's invalidation and acknowledges it.
func (b *bus) apply(ctx context.Context, payload string) {
	var m busMessage
	err := fmt.Errorf("%d bytes, over %d", len(payload), maxBusMessage)
	if len(payload) <= maxBusMessage {
		err = json.Unmarshal([]byte(payload), &m)
	}
	if err == nil && m.ID == "" {
		err = errors.New("no id")
	}
	if err == nil {
		err = checkTargetCount(len(m.URLs) + len(m.Prefixes) + len(m.Tags))
	}
	if err != nil {
		b.warns.warn(b.logger, time.Now(), "cache invalidation bus: ignored a message no node sent", zap.Error(err))
		return
	}
	switch {
	case m.Node == nodeID:
	case m.Zone != "":
		b.forgetRefusals(m.Zone, m.KeyDigest)
	default:
		rangeCaches(func(c *namedCache) {
			if c.bus.Load() != b || (m.Cache != "" && m.Cache != c.Name()) {
				return
			}
			if m.Flush {
				c.Flush()
			} else {
				c.Purge(m.Target)
			}
		})
	}
	ack := busAckPrefix + m.ID
	ctx, cancel := context.WithTimeout(ctx, busTimeout)
	defer cancel()
	pipe := b.client.TxPipeline()
	pipe.RPush(ctx, ack, nodeID)
	pipe.Expire(ctx, ack, time.Minute)
	if _, err := pipe.Exec(ctx); err != nil {
		b.warns.warn(b.logger, time.Now(), "cache invalidation bus: acknowledging", zap.Error(err))
	}
}

// forgetRefusals drops a zone's remembered refusals of one key, given by
// its digest, or of every key.
func (b *bus) forgetRefusals(zone, digest string) {
	z := lookupPool[*zoneEntry](rateZones, zone)
	if z == nil || z.bus.Load() != b {
		return
	}
	if err := z.forget(digest); err != nil {
		b.logger.Warn("invalidation bus: unreadable rate-limit key", zap.String("zone", zone), zap.Error(err))
	}
}

// publish sends an invalidation already applied on this node and waits
// until every subscribed node, this one included, has applied it. It
// returns how many nodes did.
func (b *bus) publish(ctx context.Context, m busMessage) (int, error) {
	m.Node, m.ID = nodeID, randomID()
	payload, err := json.Marshal(m)
	if err != nil {
		return 1, err
	}
	if len(payload) > maxBusMessage {
		return 1, fmt.Errorf("the invalidation takes %d bytes, over the bus's bound of %d MiB: it is applied on this node only", len(payload), maxBusMessage>>20)
	}
	ctx, cancel := context.WithTimeout(ctx, busAckWait+busTimeout)
	defer cancel()
	receivers, err := b.client.publish(ctx, b.channel, payload).Result()
	if err != nil {
		return 1, err
	}
	ack := busAckPrefix + m.ID
	defer b.client.Del(context.WithoutCancel(ctx), ack)
	deadline := time.Now().Add(busAckWait)
	acked := 0
	for int64(acked) < receivers {
		left := time.Until(deadline)
		if left <= 0 {
			return max(acked, 1), fmt.Errorf("%d of %d nodes acknowledged within %v", acked, receivers, busAckWait)
		}
		// BLPOP waits whole seconds: go-redis rounds down, and Redis
		// before 6.0 takes no fraction.
		_, err := b.client.BLPop(ctx, max(left.Truncate(time.Second), time.Second), ack).Result()
		switch {
		case errors.Is(err, redis.Nil): // none yet
		case err != nil:
			return max(acked, 1), err
		default:
			acked++
		}
	}
	return max(acked, 1), nil
}
