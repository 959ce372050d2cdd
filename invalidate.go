package gateway

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"golang.org/x/net/http/httpguts"

	"github.com/caddy-gateway/gateway/internal/cachestore"
	"github.com/caddy-gateway/gateway/internal/httpcache"
)

func init() {
	caddy.RegisterModule(CacheInvalidate{})
}

// CacheInvalidate drops entries of a named cache once the next handler
// has answered with a status below 400: every entry by default, or the
// ones its urls, prefixes and tags select. The invalidation is done before
// the response's header leaves, so a client that reads the answer and
// then asks again is not served a dropped entry. With the pool's Redis,
// it reaches every node before the header leaves.
//
// It reads the placeholders of its urls, prefixes and tags; it sets none.
type CacheInvalidate struct {
	// Cache is the name of the cache to invalidate. Required.
	Cache string `json:"cache"`

	// URLs are resources to drop with all their variants and query
	// strings: a path, or an absolute http or https URL to limit the drop
	// to one host. Placeholders work. Default: none.
	URLs []string `json:"urls,omitempty"`

	// Prefixes drop every resource whose path starts with one of them;
	// each starts with '/' (or with a placeholder). Placeholders work.
	// Default: none.
	Prefixes []string `json:"prefixes,omitempty"`

	// Tags drop every entry tagged so by its response. Placeholders work.
	// Default: none. Without urls, prefixes and tags, the whole cache is
	// dropped.
	Tags []string `json:"tags,omitempty"`

	// Methods limits the invalidation to requests of these methods, in
	// any case. Placeholders do not work. Default: any method.
	Methods []string `json:"methods,omitempty"`

	cache  *namedCache
	logger *zap.Logger
	warns  *logThrottle
}

// CaddyModule returns the Caddy module information.
func (CacheInvalidate) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.cache_invalidate",
		New: func() caddy.Module { return new(CacheInvalidate) },
	}
}

// Provision acquires the named cache.
func (h *CacheInvalidate) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	h.warns = new(logThrottle)
	if err := h.Validate(); err != nil {
		return err
	}
	for i, m := range h.Methods {
		h.Methods[i] = strings.ToUpper(m)
	}
	cache, err := poolCache(ctx, h.Cache)
	if err != nil {
		return err
	}
	h.cache = cache
	return nil
}

// Validate checks the handler's options.
func (h *CacheInvalidate) Validate() error {
	if h.Cache == "" {
		return fmt.Errorf("cache_invalidate: missing cache name (cache)")
	}
	if err := checkTargetCount(len(h.URLs) + len(h.Prefixes) + len(h.Tags)); err != nil {
		return fmt.Errorf("cache_invalidate %s: %v", h.Cache, err)
	}
	for _, t := range slices.Concat(h.URLs, h.Prefixes, h.Tags) {
		if err := checkTemplate(t); err != nil {
			return fmt.Errorf("cache_invalidate %s: %q: %v", h.Cache, t, err)
		}
	}
	for _, u := range h.URLs {
		if strings.Contains(u, "{") {
			continue // checked per request, once expanded
		}
		if _, err := parsePurgeURL(u); err != nil {
			return fmt.Errorf("cache_invalidate %s: urls: %q: %v", h.Cache, u, err)
		}
	}
	for _, p := range h.Prefixes {
		if !strings.HasPrefix(p, "/") && !strings.HasPrefix(p, "{") {
			return fmt.Errorf("cache_invalidate %s: prefixes: %q must start with /", h.Cache, p)
		}
	}
	for _, m := range h.Methods {
		// A method is a token, as a field name is.
		if !httpguts.ValidHeaderFieldName(m) {
			return fmt.Errorf("cache_invalidate %s: methods: %q is not a method", h.Cache, m)
		}
	}
	return nil
}

// ServeHTTP passes the request on and invalidates when it succeeded.
func (h *CacheInvalidate) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if len(h.Methods) > 0 && !slices.Contains(h.Methods, r.Method) {
		return next.ServeHTTP(w, r)
	}
	return serveInvalidating(w, r, next, h.invalidate)
}

// serveInvalidating passes the request on and calls invalidate, with the
// response's header, once the response turns out successful (below 400),
// before it leaves.
func serveInvalidating(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, invalidate func(*http.Request, http.Header)) error {
	hw := &headerHook{ResponseWriter: w, before: func(status int, hdr http.Header) {
		if status >= 200 && status < 400 {
			invalidate(r, hdr)
		}
	}}
	if err := next.ServeHTTP(hw, r); err != nil {
		return err
	}
	if !hw.final {
		// Nothing was written: the response is an implicit 200.
		hw.final = true
		invalidate(r, w.Header())
	}
	return nil
}

// invalidate drops what the handler selects, with placeholders expanded
// for this request.
func (h *CacheInvalidate) invalidate(r *http.Request, _ http.Header) {
	if len(h.URLs) == 0 && len(h.Prefixes) == 0 && len(h.Tags) == 0 {
		nodes, err := h.cache.flushEverywhere(r.Context())
		h.logBus(err)
		h.logger.Debug("cache flushed", zap.String("cache", h.Cache), zap.Int("nodes", nodes))
		return
	}
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	var t cachestore.Target
	for _, u := range h.URLs {
		if pu, err := parsePurgeURL(repl.ReplaceAll(u, "")); err == nil {
			t.URLs = append(t.URLs, pu)
		}
	}
	for _, p := range h.Prefixes {
		t.Prefixes = append(t.Prefixes, repl.ReplaceAll(p, ""))
	}
	for _, tag := range h.Tags {
		t.Tags = append(t.Tags, repl.ReplaceAll(tag, ""))
	}
	n, nodes, err := h.cache.purgeEverywhere(r.Context(), t)
	h.logBus(err)
	if ce := h.logger.Check(zap.DebugLevel, "cache invalidated"); ce != nil {
		ce.Write(zap.String("cache", h.Cache), zap.Int("removed", n), zap.Int("nodes", nodes))
	}
}

// logBus reports, rate-limited, an invalidation that may not have reached
// every node.
func (h *CacheInvalidate) logBus(err error) {
	if err != nil {
		h.warns.warn(h.logger, time.Now(), "invalidation may not have reached every node", zap.Error(err))
	}
}

// parsePurgeURL reads a URL to purge: a path, which matches on any host,
// or an absolute URL, which matches on its host only. Its query is ignored:
// a resource is dropped with every query string.
func parsePurgeURL(s string) (cachestore.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return cachestore.URL{}, err
	}
	if u.Scheme != "" && u.Scheme != "http" && u.Scheme != "https" {
		return cachestore.URL{}, fmt.Errorf("unsupported scheme %q", u.Scheme)
	}
	path := u.EscapedPath()
	if path == "" {
		path = "/"
	}
	if !strings.HasPrefix(path, "/") {
		return cachestore.URL{}, fmt.Errorf("%q is neither a path nor an absolute URL", s)
	}
	var host string
	if u.Host != "" {
		host = httpcache.CanonicalHost(u.Host, u.Scheme == "https")
	}
	return cachestore.URL{Host: host, Path: path}, nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*CacheInvalidate)(nil)
	_ caddy.Validator             = (*CacheInvalidate)(nil)
	_ caddyhttp.MiddlewareHandler = (*CacheInvalidate)(nil)
)
