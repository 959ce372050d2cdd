package gateway

import (
	"context"
	"errors"
	"maps"
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
// `{http.cache.status}` | `hit`, `miss`, `stale` (an entry past its freshness was served), `revalidated` (a stored entry served once the origin answered 304) or `bypass` (a method or precondition the cache leaves to the origin)
type CacheRead struct {
	// Cache is the name of the cache to read from. Required.
	Cache string `json:"cache"`

	cache    *namedCache
	nameVal  any    // the name, boxed once for the replacer
	statusID string // the name as Cache-Status gives it
	logger   *zap.Logger
	now      func() time.Time
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
	h.statusID = httpcache.CacheStatusID(h.Cache)
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

// ServeHTTP serves a fresh hit, or a stale entry that a stale window or
// the request allows, or passes the request on.
func (h *CacheRead) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	repl.Set(placeholderName, h.nameVal)
	if !readable(r) {
		h.cache.Count(cachestore.Bypass)
		repl.Set(placeholderStatus, resultValues[cachestore.Bypass])
		return next.ServeHTTP(w, r)
	}
	now := h.now()
	want := cachestore.Want{Now: now, MaxAge: -1}
	reqCC := httpcache.ParseCacheControl(nil)
	if _, ok := r.Header["Cache-Control"]; ok {
		// Of the request's directives, only those that cannot add load
		// on the origin apply: max-stale and only-if-cached. A client's
		// no-cache, max-age or min-fresh would let any client bypass
		// the cache.
		reqCC = httpcache.ParseCacheControl(r.Header)
	}
	e, found := h.cache.Find(r, repl, want)
	if e != nil {
		h.serve(w, r, repl, e, now, cachestore.Hit)
		return nil
	}
	if st := found.Stale; st != nil {
		switch {
		case !want.Validate && reqCC.MaxStale >= 0 && !st.NoStale &&
			now.Sub(st.Expires) <= time.Duration(reqCC.MaxStale)*time.Second:
			// The client accepts this much staleness (max-stale).
			h.serve(w, r, repl, st, now, cachestore.Stale)
			return nil
		case !want.Validate && st.StaleUsable(now, st.StaleWhileRevalidate):
			h.serve(w, r, repl, st, now, cachestore.Stale)
			h.refresh(r, next, found)
			return nil
		}
	}
	if reqCC.OnlyIfCached {
		return caddyhttp.Error(http.StatusGatewayTimeout, errOnlyIfCached)
	}
	if found.Result == cachestore.Bypass {
		// Only entries stored for others were found, and this request's
		// cookies may make the answer its own.
		h.cache.Count(cachestore.Bypass)
		repl.Set(placeholderStatus, resultValues[cachestore.Bypass])
		return next.ServeHTTP(w, r)
	}
	repl.Set(placeholderStatus, resultValues[cachestore.Miss])
	if found.Stale == nil {
		// A plain miss has nothing a writer needs: it keys the request
		// and takes its snapshot itself, a moment later. Only whether
		// another variant was there is told, for Cache-Status.
		h.cache.Count(cachestore.Miss)
		if found.VaryMiss {
			r = r.WithContext(withLookup(r.Context(), found))
		}
		return next.ServeHTTP(w, r)
	}
	ctx := withLookup(r.Context(), found)
	err := next.ServeHTTP(w, r.WithContext(ctx))
	if l := lookupOf(ctx); !l.Counted {
		h.cache.Count(cachestore.Miss)
	}
	return err
}

// serve answers the request from a stored entry, counted as result.
func (h *CacheRead) serve(w http.ResponseWriter, r *http.Request, repl *caddy.Replacer, e *cachestore.Entry, now time.Time, result cachestore.Result) {
	h.cache.Count(result)
	repl.Set(placeholderStatus, resultValues[result])
	if ce := h.logger.Check(zap.DebugLevel, "cache served"); ce != nil {
		ce.Write(zap.String("cache", h.Cache), zap.Stringer("result", result), zap.Int("status", e.Status))
	}
	serveStored(w, r, h.statusID, e, now, "hit")
}

// refreshDrops are the client's request fields that a background refresh
// does not send: they would ask for part of the response, or for none, or
// apply the client's wishes (no-store, only-if-cached, max-stale) to a
// request that is the cache's own.
var refreshDrops = []string{"Range", "If-Range", "If-None-Match", "If-Modified-Since", "Cache-Control", "Pragma"}

// refreshTimeout bounds a background refresh, whatever the upstream's
// own timeouts.
const refreshTimeout = time.Minute

// refresh fetches a stale entry again in the background, through the
// handlers after this one, on a context that outlives the request: at most
// one refresh per entry at a time (RFC 5861 section 3). The request is a
// GET copied from r, for the whole response, which goes nowhere but to
// the cache.
func (h *CacheRead) refresh(r *http.Request, next caddyhttp.Handler, found cachestore.Lookup) {
	key := found.Stale.Key
	if !h.cache.StartRefresh(key) {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), refreshTimeout)
	if vars, ok := ctx.Value(caddyhttp.VarsCtxKey).(map[string]any); ok {
		// The request's handlers go on using theirs.
		ctx = context.WithValue(ctx, caddyhttp.VarsCtxKey, maps.Clone(vars))
	}
	if repl, ok := ctx.Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		// What the refresh's handlers set (the upstream's address and
		// timing, say) goes to a replacer of its own, which reads the
		// request's through: the client's log shows the client's.
		own := caddy.NewReplacer()
		own.Map(repl.Get)
		ctx = context.WithValue(ctx, caddy.ReplacerCtxKey, own)
	}
	ctx = withLookup(ctx, found)
	br := r.Clone(ctx)
	br.Body = http.NoBody
	// The refresh asks for the whole stored response, whatever part or
	// condition the client asked for; cache_write adds the entry's own
	// validators.
	br.Method = http.MethodGet
	for _, name := range refreshDrops {
		br.Header.Del(name)
	}
	go func() {
		defer h.cache.EndRefresh(key)
		defer cancel()
		defer func() {
			// A handler may panic, as reverse_proxy does with
			// http.ErrAbortHandler when the upstream cuts a body short.
			// net/http recovers that for a client's request; here,
			// nothing would, and the process would die. Nothing partial
			// is stored: cache_write stores a body once it is complete.
			if v := recover(); v != nil && v != http.ErrAbortHandler {
				h.logger.Error("background refresh panicked", zap.String("cache", h.Cache),
					zap.Any("panic", v), zap.Stack("stack"))
			}
		}()
		rw := &nowhere{header: make(http.Header)}
		if err := next.ServeHTTP(rw, br); err != nil {
			h.logger.Debug("background refresh failed", zap.String("cache", h.Cache), zap.Error(err))
		}
	}()
}

// nowhere is the response writer of a background refresh: the response is
// kept by cache_write and dropped here.
type nowhere struct{ header http.Header }

func (n *nowhere) Header() http.Header         { return n.header }
func (n *nowhere) Write(p []byte) (int, error) { return len(p), nil }
func (n *nowhere) WriteHeader(int)             {}

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
