package gateway

import (
	"errors"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-gateway/gateway/internal/cachestore"
	"github.com/caddy-gateway/gateway/internal/httpcache"
)

func init() {
	caddy.RegisterModule(CacheRead{})
}

// Placeholders that cache_read and cache_write set for logs and handlers.
const (
	placeholderStatus = "http.cache.status"
	placeholderName   = "http.cache.name"
)

// resultValues holds each lookup result's name boxed once, so that setting
// the status placeholder allocates nothing.
var resultValues = func() (values [cachestore.NumResults]any) {
	for i := range values {
		values[i] = cachestore.Result(i).String()
	}
	return values
}()

// CacheRead answers requests from a named cache: a fresh stored response
// is served from memory without calling the next handler; anything else
// goes on to the next handler, with the stale entry the lookup found, if
// any, handed to a cache_write of the same cache. It needs no key options: it finds what
// any cache_write of the same cache stored for an equivalent request.
//
// It reads the placeholders of the writers' key_placeholders, and sets:
//
// Placeholder | Description
// ------------|-------------
// `{http.cache.name}` | the cache's name
// `{http.cache.status}` | `hit`, `miss`, `stale` (an entry past its freshness was found) or `bypass` (a method or precondition the cache leaves to the origin)
type CacheRead struct {
	// Cache is the name of the cache to read from. Required.
	Cache string `json:"cache"`

	cache   *namedCache
	nameVal any // the name, boxed once for the replacer
	logger  *zap.Logger
	now     func() time.Time
}

// CaddyModule returns the Caddy module information.
func (CacheRead) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.cache_read",
		New: func() caddy.Module { return new(CacheRead) },
	}
}

// Provision acquires the named cache.
func (h *CacheRead) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	if h.now == nil {
		h.now = time.Now
	}
	if err := h.Validate(); err != nil {
		return err
	}
	cache, err := poolCache(ctx, h.Cache)
	if err != nil {
		return err
	}
	h.cache = cache
	h.nameVal = h.Cache
	return nil
}

// Validate checks the handler's options.
func (h *CacheRead) Validate() error {
	if h.Cache == "" {
		return errors.New("cache_read: missing cache name (cache)")
	}
	return nil
}

var errOnlyIfCached = errors.New("only-if-cached: no stored response")

// ServeHTTP serves a fresh hit or passes the request on.
func (h *CacheRead) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	repl.Set(placeholderName, h.nameVal)
	if !readable(r) {
		h.cache.Count(cachestore.Bypass)
		repl.Set(placeholderStatus, resultValues[cachestore.Bypass])
		return next.ServeHTTP(w, r)
	}
	now := h.now()
	e, found := h.cache.Find(r, repl, now)
	if e == nil {
		if _, ok := r.Header["Cache-Control"]; ok && httpcache.ParseCacheControl(r.Header).OnlyIfCached {
			return caddyhttp.Error(http.StatusGatewayTimeout, errOnlyIfCached)
		}
		h.cache.Count(found.Result)
		repl.Set(placeholderStatus, resultValues[found.Result])
		if found.Stale == nil {
			// A plain miss has nothing a writer needs: it keys the request
			// and takes its snapshot itself, a moment later.
			return next.ServeHTTP(w, r)
		}
		return next.ServeHTTP(w, r.WithContext(withLookup(r.Context(), found)))
	}
	h.cache.Count(cachestore.Hit)
	repl.Set(placeholderStatus, resultValues[cachestore.Hit])
	if ce := h.logger.Check(zap.DebugLevel, "cache hit"); ce != nil {
		ce.Write(zap.String("cache", h.Cache), zap.Int("status", e.Status))
	}
	serveStored(w, r, h.Cache, e, now)
	return nil
}

// readable reports whether the request may be answered from the cache:
// GET or HEAD, and no precondition this cache leaves to the origin.
func readable(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	_, ifMatch := r.Header["If-Match"]
	_, ifUnmodified := r.Header["If-Unmodified-Since"]
	return !ifMatch && !ifUnmodified
}

// Interface guards
var (
	_ caddy.Provisioner           = (*CacheRead)(nil)
	_ caddy.Validator             = (*CacheRead)(nil)
	_ caddyhttp.MiddlewareHandler = (*CacheRead)(nil)
)
