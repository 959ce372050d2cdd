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

	"github.com/caddy-gateway/gateway/internal/httpcache"
)

func init() {
	caddy.RegisterModule(CacheInvalidate{})
}

// CacheInvalidate drops entries of a named cache once the next handler
// has answered with a status below 400: every entry by default, or the
// ones its urls, prefixes and tags select. The invalidation is done before
// the response's header leaves, so a client that reads the answer and
// then asks again is not served a dropped entry.
type CacheInvalidate struct {
	// Cache is the name of the cache to invalidate. Required.
	Cache string `json:"cache"`

	// URLs are resources to drop with all their variants and query
	// strings: a path, or an absolute URL to limit the drop to one host.
	// Placeholders work.
	URLs []string `json:"urls,omitempty"`

	// Prefixes drop every resource whose path starts with one of them.
	// Placeholders work.
	Prefixes []string `json:"prefixes,omitempty"`

	// Tags drop every entry tagged so by its response. Placeholders work.
	Tags []string `json:"tags,omitempty"`

	// Methods limits the invalidation to requests of these methods.
	// Default: any method.
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

// ServeHTTP passes the request on and invalidates when it succeeded.
func (h *CacheInvalidate) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if len(h.Methods) > 0 && !slices.Contains(h.Methods, r.Method) {
		return next.ServeHTTP(w, r)
	}
	iw := &invalidatingWriter{ResponseWriter: w, h: h, r: r}
	if err := next.ServeHTTP(iw, r); err != nil {
		return err
	}
	if !iw.decided {
		// Nothing was written: the response is an implicit 200.
		iw.decided = true
		h.invalidate(r)
	}
	return nil
}

// invalidate drops what the handler selects, with placeholders expanded
// for this request.
func (h *CacheInvalidate) invalidate(r *http.Request) {
	if len(h.URLs) == 0 && len(h.Prefixes) == 0 && len(h.Tags) == 0 {
		nodes, err := h.cache.flushEverywhere(r.Context())
		h.logBus(err)
		h.logger.Debug("cache flushed", zap.String("cache", h.Cache), zap.Int("nodes", nodes))
		return
	}
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	var t purgeTarget
	for _, u := range h.URLs {
		if pu, err := parsePurgeURL(repl.ReplaceAll(u, "")); err == nil {
			t.urls = append(t.urls, pu)
		}
	}
	for _, p := range h.Prefixes {
		t.prefixes = append(t.prefixes, repl.ReplaceAll(p, ""))
	}
	for _, tag := range h.Tags {
		t.tags = append(t.tags, repl.ReplaceAll(tag, ""))
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
func parsePurgeURL(s string) (purgeURL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return purgeURL{}, err
	}
	if u.Scheme != "" && u.Scheme != "http" && u.Scheme != "https" {
		return purgeURL{}, fmt.Errorf("unsupported scheme %q", u.Scheme)
	}
	path := u.EscapedPath()
	if path == "" {
		path = "/"
	}
	if !strings.HasPrefix(path, "/") {
		return purgeURL{}, fmt.Errorf("%q is neither a path nor an absolute URL", s)
	}
	var host string
	if u.Host != "" {
		host = httpcache.CanonicalHost(u.Host, u.Scheme == "https")
	}
	return purgeURL{Host: host, Path: path}, nil
}

// invalidatingWriter invalidates as soon as a successful status is
// written, before any byte of the response reaches the client.
type invalidatingWriter struct {
	http.ResponseWriter
	h       *CacheInvalidate
	r       *http.Request
	decided bool
}

func (iw *invalidatingWriter) WriteHeader(status int) {
	if !iw.decided && status >= 200 {
		iw.decided = true
		if status < 400 {
			iw.h.invalidate(iw.r)
		}
	}
	iw.ResponseWriter.WriteHeader(status)
}

func (iw *invalidatingWriter) Write(p []byte) (int, error) {
	if !iw.decided {
		iw.WriteHeader(http.StatusOK)
	}
	return iw.ResponseWriter.Write(p)
}

// FlushError passes a flush on; a flush before any header implies 200.
func (iw *invalidatingWriter) FlushError() error {
	if !iw.decided {
		iw.WriteHeader(http.StatusOK)
	}
	return http.NewResponseController(iw.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (iw *invalidatingWriter) Unwrap() http.ResponseWriter { return iw.ResponseWriter }

// Interface guards
var (
	_ caddy.Provisioner           = (*CacheInvalidate)(nil)
	_ caddyhttp.MiddlewareHandler = (*CacheInvalidate)(nil)
)
