package gateway

import (
	"errors"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

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

// CacheRead answers requests from a named cache: a fresh stored response
// is served from memory without calling the next handler; anything else
// goes on to the next handler. It needs no key options: it finds what
// any cache_write of the same cache stored for an equivalent request.
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
	cache, err := poolCache(ctx, h.Cache)
	if err != nil {
		return err
	}
	h.cache = cache
	h.nameVal = h.Cache
	return nil
}

var errOnlyIfCached = errors.New("only-if-cached: no stored response")

// ServeHTTP serves a fresh hit or passes the request on.
func (h *CacheRead) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	repl.Set(placeholderName, h.nameVal)
	if !h.readable(r) {
		return h.pass(w, r, next, repl, resultBypass)
	}
	now := h.now()
	e, result := h.lookup(r, now)
	if e == nil {
		if _, ok := r.Header["Cache-Control"]; ok && httpcache.ParseCacheControl(r.Header).OnlyIfCached {
			return caddyhttp.Error(http.StatusGatewayTimeout, errOnlyIfCached)
		}
		return h.pass(w, r, next, repl, result)
	}
	h.cache.stats.count(resultHit)
	repl.Set(placeholderStatus, resultHit)
	if ce := h.logger.Check(zap.DebugLevel, "cache hit"); ce != nil {
		ce.Write(zap.String("cache", h.Cache), zap.Int("status", e.status))
	}
	h.serve(w, r, e, now)
	return nil
}

// readable reports whether the request may be answered from the cache:
// GET or HEAD, and no precondition this cache leaves to the origin.
func (h *CacheRead) readable(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	_, ifMatch := r.Header["If-Match"]
	_, ifUnmodified := r.Header["If-Unmodified-Since"]
	return !ifMatch && !ifUnmodified
}

func (h *CacheRead) pass(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, repl *caddy.Replacer, result string) error {
	h.cache.stats.count(result)
	repl.Set(placeholderStatus, resultValue(result))
	return next.ServeHTTP(w, r)
}

// lookup finds a fresh entry for r under the key rule of any writer of the
// cache. Without one, result tells whether a stale entry was found.
func (h *CacheRead) lookup(r *http.Request, now time.Time) (e *entry, result string) {
	kb := getKeyBuilder()
	defer putKeyBuilder(kb)
	result = resultMiss
	for _, rule := range *h.cache.rules.Load() {
		e = h.cache.get(rule.build(kb, r, nil))
		if e != nil && e.vary != nil {
			e = h.cache.get(rule.build(kb, r, e.vary))
		}
		switch {
		case e == nil:
		case now.Before(e.expires):
			return e, resultHit
		default:
			result = resultStale
		}
	}
	return nil, result
}

// notModifiedFields are the stored fields a 304 carries (RFC 9110
// section 15.4.5).
var notModifiedFields = []string{"Cache-Control", "Content-Location", "Date", "Etag", "Expires", "Vary"}

// serve writes the stored response, or 304 Not Modified when the request's
// preconditions allow, with Age and Cache-Status.
func (h *CacheRead) serve(w http.ResponseWriter, r *http.Request, e *entry, now time.Time) {
	hdr := w.Header()
	notModified := httpcache.NotModified(r.Header, e.validators)
	for _, f := range e.fields {
		if !notModified || slices.Contains(notModifiedFields, f.name) {
			hdr[f.name] = f.values
		}
	}
	// One allocation holds both new field values.
	vals := new([2]string)
	age := max((e.initialAge+now.Sub(e.storedAt))/time.Second, 0)
	vals[0] = strconv.FormatInt(int64(age), 10)
	ttl := (e.expires.Sub(now) + time.Second - 1) / time.Second
	var buf [128]byte
	member := append(append(buf[:0], h.Cache...), "; hit; ttl="...)
	vals[1] = string(strconv.AppendInt(member, int64(ttl), 10))
	hdr["Age"] = vals[0:1:1]
	if len(e.cacheStatus) == 0 {
		hdr["Cache-Status"] = vals[1:2:2]
	} else {
		hdr["Cache-Status"] = append(e.cacheStatus, vals[1])
	}
	if notModified {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.WriteHeader(e.status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(e.body)
	}
}

// Interface guards
var (
	_ caddy.Provisioner           = (*CacheRead)(nil)
	_ caddyhttp.MiddlewareHandler = (*CacheRead)(nil)
)
