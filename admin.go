package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/caddy-gateway/gateway/internal/cachestore"
	"github.com/caddy-gateway/gateway/internal/httpcache"
	"github.com/caddy-gateway/gateway/internal/redisstore"
)

func init() {
	caddy.RegisterModule(adminCache{})
	caddy.RegisterModule(adminRateLimit{})
}

// maxPurgeBody bounds the body of a purge request, and maxPurgeTargets
// the URLs, prefixes and tags it names together: a prefix is matched
// against every cached path under the cache's lock, on every node, so
// 200,000 of them held a cache of 20,000 paths for 17 s.
const (
	maxPurgeBody    = 1 << 20
	maxPurgeTargets = 256
)

// checkTargetCount refuses more than maxPurgeTargets URLs, prefixes and
// tags in one invalidation, by the admin API, cache_invalidate or the bus.
func checkTargetCount(n int) error {
	if n > maxPurgeTargets {
		return fmt.Errorf("%d urls, prefixes and tags: at most %d per invalidation", n, maxPurgeTargets)
	}
	return nil
}

// adminCache serves the /cache/ routes of Caddy's admin endpoint: list,
// inspect, flush and purge the named caches.
type adminCache struct {
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (adminCache) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.cache",
		New: func() caddy.Module { return new(adminCache) },
	}
}

// Provision sets up the logger.
func (a *adminCache) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger(a)
	return nil
}

// Routes returns the admin routes.
func (a *adminCache) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: "/cache/", Handler: caddy.AdminHandlerFunc(a.serve)}}
}

// cacheInfo is the admin view of one named cache.
type cacheInfo struct {
	Name      string `json:"name"`
	Entries   int    `json:"entries"`
	SizeBytes int64  `json:"size_bytes"`
	MaxSize   int64  `json:"max_size"`
	Hits      uint64 `json:"hits"`
	Misses    uint64 `json:"misses"`
	Stored    uint64 `json:"stored"`
	Evicted   uint64 `json:"evicted"`
	Rejected  uint64 `json:"rejected"`
}

func infoOf(c *namedCache) cacheInfo {
	st := c.Stats()
	return cacheInfo{
		Name:      c.Name(),
		Entries:   st.Entries,
		SizeBytes: st.UsedBytes,
		MaxSize:   st.MaxSize,
		Hits:      st.Requests[cachestore.Hit] + st.Requests[cachestore.Stale] + st.Requests[cachestore.Revalidated],
		Misses:    st.Requests[cachestore.Miss],
		Stored:    st.Outcomes[httpcache.Stored],
		Evicted:   st.Evicted,
		Rejected:  st.Rejected,
	}
}

// withBusError adds to an answer why the invalidation may not have reached
// every node. The local invalidation is done either way.
func withBusError(answer map[string]any, err error) map[string]any {
	if err != nil {
		answer["bus_error"] = err.Error()
	}
	return answer
}

// purgeRequest is the body of POST /cache/<name>/purge.
type purgeRequest struct {
	URLs     []string `json:"urls"`
	Prefixes []string `json:"prefixes"`
	Tags     []string `json:"tags"`
}

func (a *adminCache) serve(w http.ResponseWriter, r *http.Request) error {
	rest := strings.TrimPrefix(r.URL.Path, "/cache/")
	name, action, _ := strings.Cut(rest, "/")
	switch {
	case name == "" && action == "":
		return a.serveAll(w, r)
	case action == "":
		return a.serveOne(w, r, name)
	case action == "purge":
		return a.servePurge(w, r, name)
	}
	return apiError(http.StatusNotFound, "no such route: %s", r.URL.Path)
}

func (a *adminCache) serveAll(w http.ResponseWriter, r *http.Request) error {
	switch r.Method {
	case http.MethodGet:
		list := []cacheInfo{}
		rangeCaches(func(c *namedCache) { list = append(list, infoOf(c)) })
		return writeJSON(w, map[string]any{"caches": list})
	case http.MethodDelete:
		// One message per bus flushes every cache on it, on every node:
		// one wait for the acknowledgements, not one per cache.
		flushed := []string{}
		var onBus []*bus
		rangeCaches(func(c *namedCache) {
			c.Flush()
			flushed = append(flushed, c.Name())
			if b := c.bus.Load(); b != nil && !slices.Contains(onBus, b) {
				onBus = append(onBus, b)
			}
		})
		nodes := 1
		var errs []error
		for _, b := range onBus {
			n, err := b.publish(r.Context(), busMessage{Flush: true})
			nodes = max(nodes, n)
			errs = append(errs, err)
		}
		a.logger.Info("caches flushed", zap.Strings("caches", flushed), zap.Int("nodes", nodes), zap.Error(errors.Join(errs...)))
		return writeJSON(w, withBusError(map[string]any{"flushed": flushed, "nodes": nodes}, errors.Join(errs...)))
	}
	return methodNotAllowed(w, r, "GET, DELETE")
}

func (a *adminCache) serveOne(w http.ResponseWriter, r *http.Request, name string) error {
	if r.Method != http.MethodGet && r.Method != http.MethodDelete {
		return methodNotAllowed(w, r, "GET, DELETE")
	}
	c := lookupCache(name)
	if c == nil {
		return apiError(http.StatusNotFound, "unknown cache %q", name)
	}
	if r.Method == http.MethodGet {
		return writeJSON(w, infoOf(c))
	}
	nodes, err := c.flushEverywhere(r.Context())
	a.logger.Info("cache flushed", zap.String("cache", name), zap.Int("nodes", nodes), zap.Error(err))
	return writeJSON(w, withBusError(map[string]any{"flushed": []string{name}, "nodes": nodes}, err))
}

func (a *adminCache) servePurge(w http.ResponseWriter, r *http.Request, name string) error {
	if r.Method != http.MethodPost {
		return methodNotAllowed(w, r, "POST")
	}
	c := lookupCache(name)
	if c == nil {
		return apiError(http.StatusNotFound, "unknown cache %q", name)
	}
	t, err := decodePurge(io.LimitReader(r.Body, maxPurgeBody+1))
	if err != nil {
		return apiError(http.StatusBadRequest, "%v", err)
	}
	removed, nodes, err := c.purgeEverywhere(r.Context(), t)
	a.logger.Info("cache purged", zap.String("cache", name), zap.Int("urls", len(t.URLs)),
		zap.Int("prefixes", len(t.Prefixes)), zap.Int("tags", len(t.Tags)), zap.Int("removed", removed),
		zap.Int("nodes", nodes), zap.Error(err))
	return writeJSON(w, withBusError(map[string]any{"removed": removed, "nodes": nodes}, err))
}

// decodePurge reads and checks a purge body.
func decodePurge(body io.Reader) (cachestore.Target, error) {
	var t cachestore.Target
	data, err := io.ReadAll(body)
	if err != nil {
		return t, fmt.Errorf("reading body: %v", err)
	}
	if len(data) > maxPurgeBody {
		return t, fmt.Errorf("body larger than %d bytes", maxPurgeBody)
	}
	var req purgeRequest
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return t, fmt.Errorf("decoding body: %v", err)
	}
	// More says false before a closing ']' or '}' too: only the end of
	// the body ends the object.
	if _, err := dec.Token(); err != io.EOF {
		return t, fmt.Errorf("decoding body: trailing data after the JSON object")
	}
	if err := checkTargetCount(len(req.URLs) + len(req.Prefixes) + len(req.Tags)); err != nil {
		return t, err
	}
	t.Prefixes, t.Tags = req.Prefixes, req.Tags
	for _, s := range req.URLs {
		u, err := parsePurgeURL(s)
		if err != nil {
			return cachestore.Target{}, fmt.Errorf("url %q: %v", s, err)
		}
		t.URLs = append(t.URLs, u)
	}
	for _, p := range t.Prefixes {
		if !strings.HasPrefix(p, "/") {
			return cachestore.Target{}, fmt.Errorf("prefix %q must start with /", p)
		}
	}
	if t.Empty() {
		return cachestore.Target{}, fmt.Errorf("nothing to purge: give urls, prefixes or tags (DELETE flushes the whole cache)")
	}
	return t, nil
}

// adminRateLimit serves the /rate_limit/ routes of Caddy's admin endpoint:
// inspect the zones and reset keys.
type adminRateLimit struct {
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (adminRateLimit) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.rate_limit",
		New: func() caddy.Module { return new(adminRateLimit) },
	}
}

// Provision sets up the logger.
func (a *adminRateLimit) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger(a)
	return nil
}

// Routes returns the admin routes.
func (a *adminRateLimit) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: "/rate_limit/", Handler: caddy.AdminHandlerFunc(a.serve)}}
}

// zoneInfo is the admin view of one zone.
type zoneInfo struct {
	Name          string `json:"name"`
	Algorithm     string `json:"algorithm"`
	Events        int64  `json:"events"`
	Window        string `json:"window"`
	Burst         int64  `json:"burst"`
	Keys          int    `json:"keys"`
	Allowed       uint64 `json:"allowed"`
	Limited       uint64 `json:"limited"`
	DryRunLimited uint64 `json:"dry_run_limited"`
	Evicted       uint64 `json:"evicted"`
}

func zoneInfoOf(z *zoneEntry) zoneInfo {
	l := z.Limit()
	return zoneInfo{
		Name:          z.Name,
		Algorithm:     l.Algorithm.String(),
		Events:        l.Events,
		Window:        l.Window.String(),
		Burst:         l.Capacity(),
		Keys:          z.Keys(),
		Allowed:       z.allowed.Load(),
		Limited:       z.limited.Load(),
		DryRunLimited: z.dryRunLimited.Load(),
		Evicted:       z.Evictions(),
	}
}

func (a *adminRateLimit) serve(w http.ResponseWriter, r *http.Request) error {
	name := strings.TrimPrefix(r.URL.Path, "/rate_limit/")
	if strings.Contains(name, "/") {
		return apiError(http.StatusNotFound, "no such route: %s", r.URL.Path)
	}
	if name == "" {
		if r.Method != http.MethodGet {
			return methodNotAllowed(w, r, "GET")
		}
		list := []zoneInfo{}
		rangeZones(func(z *zoneEntry) { list = append(list, zoneInfoOf(z)) })
		return writeJSON(w, map[string]any{"zones": list})
	}
	if r.Method != http.MethodGet && r.Method != http.MethodDelete {
		return methodNotAllowed(w, r, "GET, DELETE")
	}
	zone := lookupPool[*zoneEntry](rateZones, name)
	if zone == nil {
		return apiError(http.StatusNotFound, "unknown zone %q", name)
	}
	if r.Method == http.MethodGet {
		return writeJSON(w, zoneInfoOf(zone))
	}
	// Not r.URL.Query(), which drops a pair it cannot read: ?key=50%
	// would then reset the whole zone.
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return apiError(http.StatusBadRequest, "the query cannot be read (percent-encode the key: %% as %%25, ; as %%3B): %v", err)
	}
	rc := zone.redis.Load()
	if !q.Has("key") {
		n := zone.Clear()
		if rc != nil {
			removed, err := deleteRedisZone(r.Context(), rc, name)
			if err != nil {
				return apiError(http.StatusBadGateway, "resetting zone %s in Redis: %v", name, err)
			}
			n += removed
		}
		nodes, err := forgetRefusalsEverywhere(r.Context(), zone, name, "")
		a.logger.Info("rate-limit zone reset", zap.String("zone", name), zap.Int("keys", n), zap.Int("nodes", nodes))
		return writeJSON(w, withBusError(map[string]any{"zone": name, "reset_keys": n, "nodes": nodes}, err))
	}
	key := q.Get("key")
	found := zone.Reset(hashKey(key))
	digest := redisstore.DigestOf(key)
	if rc != nil {
		n, err := rc.Del(r.Context(), digest.StateKey(redisstore.ZoneSuffix(name, zone.Limit()))).Result()
		if err != nil {
			return apiError(http.StatusBadGateway, "resetting the key in Redis: %v", err)
		}
		found = found || n > 0
	}
	nodes, err := forgetRefusalsEverywhere(r.Context(), zone, name, digest.String())
	a.logger.Info("rate-limit key reset", zap.String("zone", name), zap.Bool("found", found), zap.Int("nodes", nodes))
	return writeJSON(w, withBusError(map[string]any{"zone": name, "key": key, "reset": found, "nodes": nodes}, err))
}

// forgetRefusalsEverywhere drops a zone's remembered refusals of one key
// (by its digest) or of every key, here and on every node of the zone's
// bus, and returns how many nodes did.
func forgetRefusalsEverywhere(ctx context.Context, zone *zoneEntry, name, digest string) (int, error) {
	zone.forget(digest)
	b := zone.bus.Load()
	if b == nil {
		return 1, nil
	}
	return b.publish(ctx, busMessage{Zone: name, KeyDigest: digest})
}

// deleteRedisZone deletes every key of a zone from Redis: from every
// master of a Redis Cluster, a key at a time (the keys of one zone lie in
// every slot), in pipelines of a thousand.
func deleteRedisZone(ctx context.Context, rc *redisClient, zone string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var n atomic.Int64
	err := rc.forEachMaster(ctx, func(ctx context.Context, node redis.Cmdable) error {
		iter := node.Scan(ctx, 0, redisstore.ZonePattern(zone), 1000).Iterator()
		var batch []string
		flush := func() error {
			if len(batch) == 0 {
				return nil
			}
			cmds, err := node.Pipelined(ctx, func(p redis.Pipeliner) error {
				for _, key := range batch {
					p.Del(ctx, key)
				}
				return nil
			})
			for _, cmd := range cmds {
				n.Add(cmd.(*redis.IntCmd).Val())
			}
			batch = batch[:0]
			return err
		}
		for iter.Next(ctx) {
			if batch = append(batch, iter.Val()); len(batch) == 1000 {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		if err := iter.Err(); err != nil {
			return err
		}
		return flush()
	})
	return int(n.Load()), err
}

func writeJSON(w http.ResponseWriter, v any) error {
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(v)
}

func apiError(status int, format string, args ...any) error {
	return caddy.APIError{HTTPStatus: status, Err: fmt.Errorf(format, args...)}
}

func methodNotAllowed(w http.ResponseWriter, r *http.Request, allow string) error {
	w.Header().Set("Allow", allow)
	return apiError(http.StatusMethodNotAllowed, "method %s not allowed", r.Method)
}

// Interface guards
var (
	_ caddy.AdminRouter = (*adminCache)(nil)
	_ caddy.Provisioner = (*adminCache)(nil)
	_ caddy.AdminRouter = (*adminRateLimit)(nil)
	_ caddy.Provisioner = (*adminRateLimit)(nil)
)
