package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"sync"
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
	busChannel   = "caddy-gateway:cache:invalidate"
	busAckPrefix = "caddy-gateway:cache:ack:"
	busAckWait   = 2 * time.Second
	busTimeout   = 2 * time.Second
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

// buses holds one bus per Redis URL, started by the cache_pool app and
// kept across reloads.
var buses = caddy.NewUsagePool()

type bus struct {
	client *redisClient
	mu     sync.Mutex // guards ps, which listen makes and replaces
	ps     *redis.PubSub
	key    string
	logger *zap.Logger
	warns  logThrottle
	stop   context.CancelFunc
	tried  chan struct{} // closed once the first subscription was sent or failed
	done   chan struct{}
}

// acquireBus returns the bus of a Redis URL, which subscribes in the
// background: acquiring it dials nothing.
func acquireBus(url string, logger *zap.Logger) (*bus, error) {
	val, _, err := buses.LoadOrNew(url, func() (caddy.Destructor, error) {
		c, err := acquireRedis(url, busTimeout)
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithCancel(context.Background())
		b := &bus{client: c, key: url, logger: logger, stop: cancel, tried: make(chan struct{}), done: make(chan struct{})}
		go b.listen(ctx)
		return b, nil
	})
	if err != nil {
		return nil, err
	}
	return val.(*bus), nil
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
	b.mu.Unlock()
	<-b.done
	releaseRedis(b.client)
	return nil
}

// listen applies what other nodes publish. After a lost connection it
// flushes every cache on the bus: what was published meanwhile is lost,
// and a node must not serve an entry invalidated while it was away.
func (b *bus) listen(ctx context.Context) {
	defer close(b.done)
	// A failed subscription is tried again by Receive, which redials and
	// resubscribes.
	b.subscribe(ctx)
	close(b.tried)
	subscribed, lost := false, false
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
			lost, subscribed = lost || subscribed, false
			b.warns.warn(b.logger, time.Now(), "cache invalidation bus: Redis unreachable", zap.Error(err))
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			if b.client.cluster {
				// go-redis redials after a lost connection, but stays on
				// a node that answered MOVED: the slot's owner changed
				// while its map was stale. Subscribe anew, at the owner
				// the map names now.
				b.subscribe(ctx)
			}
			continue
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "sunsubscribe" {
				// The cluster gave the channel's slot to another node,
				// which carries its messages from now on: subscribe
				// there. What was published meanwhile is lost.
				lost, subscribed = lost || subscribed, false
				b.subscribe(ctx)
				continue
			}
			if m.Kind != "subscribe" && m.Kind != "ssubscribe" {
				continue
			}
			if lost {
				b.flushAll()
				b.logger.Info("invalidation bus reconnected; flushed every cache and rate-limit refusal it serves")
			}
			subscribed, lost = true, false
		case *redis.Message:
			b.apply(ctx, m.Payload)
		}
	}
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
	b.ps = b.client.subscribe(ctx, busChannel)
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
	if err := json.Unmarshal([]byte(payload), &m); err != nil || m.ID == "" {
		b.logger.Warn("cache invalidation bus: unreadable message", zap.Error(err))
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
	ctx, cancel := context.WithTimeout(ctx, busAckWait+busTimeout)
	defer cancel()
	receivers, err := b.client.publish(ctx, busChannel, payload).Result()
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
			return max(acked, 1), errors.New("not every node acknowledged in time")
		}
		if _, err := b.client.BLPop(ctx, left, ack).Result(); err != nil {
			return max(acked, 1), err
		}
		acked++
	}
	return max(acked, 1), nil
}
