package gateway

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/caddy-gateway/gateway/internal/redisstore"
)

// redisClients holds one client per distinct Redis URL, shared by every
// handler and the cache pool, kept across reloads.
var redisClients = caddy.NewUsagePool()

// redisClient is a shared client of one Redis, a Redis Cluster, or the
// master that Sentinels name. It dials lazily, so Caddy starts, and
// validates, while Redis is down.
type redisClient struct {
	redis.UniversalClient
	// cluster is set for a Redis Cluster: the keys of one script call must
	// share a hash slot, a scan visits every master, and the bus uses
	// sharded pub/sub, whose receiver count is exact.
	cluster bool
	display string        // the URL without credentials, for the health report
	timeout time.Duration // bounds every dial and command
	// batch sends the rate-limit decisions that arrive together in one
	// pipeline; made on first use, since the bus's client never decides.
	batch     *redisstore.Batcher
	batchOnce sync.Once
	url       string
	server    string                    // the URL, expanded: clients of one server differ only in timeout
	dialErrs  atomic.Pointer[dialError] // the last failed dial, for the health report
}

// sameRedis tells whether two clients, either nil (no Redis), talk to the
// same Redis: handlers sharing a zone may give it different timeouts.
func sameRedis(a, b *redisClient) bool {
	return a == b || a != nil && b != nil && a.server == b.server
}

// dialError is a dial that failed.
type dialError struct {
	at  time.Time
	err error
}

// lastDialError returns the error of the last dial, if it failed since t.
func (c *redisClient) lastDialError(since time.Time) error {
	if d := c.dialErrs.Load(); d != nil && !d.at.Before(since) {
		return d.err
	}
	return nil
}

// DialHook remembers failed dials: a command that times out while the pool
// dials in vain says only that its deadline passed.
func (c *redisClient) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := next(ctx, network, addr)
		if err != nil && ctx.Err() == nil {
			c.dialErrs.Store(&dialError{time.Now(), err})
		}
		return conn, err
	}
}

// ProcessHook leaves commands alone.
func (c *redisClient) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

// ProcessPipelineHook leaves pipelines alone.
func (c *redisClient) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// Destruct closes the client once no config uses it.
func (c *redisClient) Destruct() error {
	c.batchOnce.Do(func() {}) // none made from now on
	if c.batch != nil {
		c.batch.Close()
	}
	return c.Close()
}

// batcher returns the client's batcher, starting it on first use. A
// decision with less than a quarter of the timeout left when its batch
// leaves fails unsent, to fail_mode: the batch must not be cut short by it.
// A batch that Redis runs more than expiryGrace (or a timeout, if longer)
// past its deadline, a hung Redis resuming, charges nothing: its requests
// were decided by fail_mode.
func (c *redisClient) batcher() *redisstore.Batcher {
	c.batchOnce.Do(func() {
		c.batch = redisstore.NewBatcher(c.UniversalClient, batchLanes, batchSize, c.timeout/4, max(c.timeout, expiryGrace))
	})
	return c.batch
}

// expiryGrace is at least how long past its deadline a batch may still
// run in Redis: it covers clocks stepped since the node last learnt them.
const expiryGrace = time.Second

// Batching: how many batches of decisions may be on the wire at once, and
// how many decisions one holds at most. One batch at a time decides the
// most: the requests that arrive while it is out leave together in the
// next, and one script call decides them all. Measured with wrk -c64 on
// one key, 2 cores: 1 lane about 11 requests a batch and 6% more requests
// a second than 4 lanes (4 a batch); 2 lanes no better than 4.
const (
	batchLanes = 1
	batchSize  = 128
)

// acquireRedis returns the shared client for a Redis URL, in one of the
// forms parseRedisURL reads, expanding global placeholders such as
// {env.REDIS_URL}. timeout bounds every dial and command; the caller
// releases the client with releaseRedis.
func acquireRedis(rawURL string, timeout time.Duration) (*redisClient, error) {
	url := caddy.NewReplacer().ReplaceAll(rawURL, "")
	target, err := parseRedisURL(url)
	if err != nil {
		return nil, fmt.Errorf("redis: invalid URL: %v", err)
	}
	key := fmt.Sprintf("%s|%v", url, timeout)
	val, _, err := redisClients.LoadOrNew(key, func() (caddy.Destructor, error) {
		c := &redisClient{url: key, server: url, display: target.display, timeout: timeout, cluster: target.cluster != nil}
		c.UniversalClient = target.newClient(timeout, c)
		return c, nil
	})
	if err != nil {
		return nil, err
	}
	return val.(*redisClient), nil
}

// validateRedisURL checks a Redis URL as acquireRedis will read it. A URL
// with placeholders, such as {env.REDIS_URL}, is checked once they are
// expanded, when the config is provisioned: the environment that adapts a
// config is not always the one that runs it.
func validateRedisURL(rawURL string) error {
	if rawURL == "" || strings.Contains(rawURL, "{") {
		return nil
	}
	if _, err := parseRedisURL(rawURL); err != nil {
		return fmt.Errorf("invalid URL: %v", err)
	}
	return nil
}

func releaseRedis(c *redisClient) {
	if c != nil {
		redisClients.Delete(c.url)
	}
}

// breaker skips a failing Redis for a short while, so an outage costs
// requests no time, and tries it again by itself.
type breaker struct {
	openUntil atomic.Int64 // Unix ns
	log       logThrottle
}

// breakerPause is how long a failed Redis is skipped before it is tried again.
const breakerPause = time.Second

func (b *breaker) allow(now time.Time) bool { return now.UnixNano() >= b.openUntil.Load() }

func (b *breaker) fail(now time.Time) { b.openUntil.Store(now.Add(breakerPause).UnixNano()) }

// logThrottle keeps a failing Redis from flooding the logs.
type logThrottle struct{ last atomic.Int64 }

// warn logs at most once every ten seconds.
func (l *logThrottle) warn(logger *zap.Logger, now time.Time, msg string, fields ...zap.Field) {
	last := l.last.Load()
	if now.UnixNano()-last < int64(10*time.Second) || !l.last.CompareAndSwap(last, now.UnixNano()) {
		return
	}
	logger.Warn(msg, fields...)
}
