package gateway

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-gateway/gateway/internal/httpcache"
)

func init() {
	caddy.RegisterModule(CacheWrite{})
}

// Bounds on the tags one entry carries, so a hostile origin header cannot
// grow the index beyond what the entry's cost accounts for.
const (
	maxTagsPerEntry = 64
	maxTagLen       = 256
)

// CacheWrite stores the responses that pass through it in a named cache,
// while streaming them to the client unchanged but for a Cache-Status
// member. Only complete responses to GET requests that the storage rules
// allow are stored.
type CacheWrite struct {
	// Cache is the name of the cache to write to. Required.
	Cache string `json:"cache"`

	// TTL selects operator-TTL mode: every stored response is fresh this
	// long, whatever the origin says. Without it, the origin's s-maxage,
	// max-age or Expires decide, and a response without them is not stored.
	TTL caddy.Duration `json:"ttl,omitempty"`

	// KeyQuery lists the query parameters that are part of the key. By
	// default every parameter is, in any order.
	KeyQuery []string `json:"key_query,omitempty"`

	// KeyHeaders lists request headers whose values are part of the key.
	KeyHeaders []string `json:"key_headers,omitempty"`

	// KeyPlaceholders lists placeholder templates, such as
	// {http.auth.user.id}, whose expanded values are part of the key.
	KeyPlaceholders []string `json:"key_placeholders,omitempty"`

	// Status lists the storable statuses. Default in operator-TTL mode:
	// 200 203 204 300 301 308 410; in origin mode: any final status this
	// cache understands, when the origin gives explicit freshness.
	Status []int `json:"status,omitempty"`

	// MaxEntrySize overrides the pool's largest storable response, headers
	// and body, in bytes.
	MaxEntrySize int64 `json:"max_entry_size,omitempty"`

	// MaxTTL caps the freshness taken from the origin. Default: no cap.
	MaxTTL caddy.Duration `json:"max_ttl,omitempty"`

	// TagsFrom lists response headers whose space- or comma-separated
	// values tag the entry for invalidation. Default: Surrogate-Key.
	TagsFrom []string `json:"tags_from,omitempty"`

	// ETag gives stored responses that have no ETag a strong one, computed
	// from the body, so that hits can answer If-None-Match.
	ETag bool `json:"etag,omitempty"`

	cache  *namedCache
	rule   *keyRule
	policy httpcache.Policy
	logger *zap.Logger
	now    func() time.Time
}

// CaddyModule returns the Caddy module information.
func (CacheWrite) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.cache_write",
		New: func() caddy.Module { return new(CacheWrite) },
	}
}

// Provision acquires the named cache and registers the key rule with it.
func (h *CacheWrite) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	if h.now == nil {
		h.now = time.Now
	}
	if h.TTL < 0 || h.MaxTTL < 0 || h.MaxEntrySize < 0 {
		return fmt.Errorf("cache_write %s: ttl, max_ttl and max_entry_size must not be negative", h.Cache)
	}
	if len(h.TagsFrom) == 0 {
		h.TagsFrom = []string{"Surrogate-Key"}
	}
	cache, err := poolCache(ctx, h.Cache)
	if err != nil {
		return err
	}
	h.cache = cache
	h.rule = newKeyRule(h.KeyQuery, h.KeyHeaders, h.KeyPlaceholders)
	h.policy = httpcache.Policy{
		TTL:           time.Duration(h.TTL),
		MaxTTL:        time.Duration(h.MaxTTL),
		Statuses:      h.Status,
		IdentityInKey: identityInKey(h.KeyHeaders, h.KeyPlaceholders),
	}
	for _, name := range h.KeyHeaders {
		if strings.ContainsAny(name, "_.") {
			h.logger.Warn("Caddy drops request headers whose names hold '_' or '.' unless the server option expected_underscore_headers or expected_dot_headers lists them; until then this key header is always absent",
				zap.String("header", name))
		}
	}
	h.cache.addRule(h.rule)
	return nil
}

// Cleanup unregisters the key rule.
func (h *CacheWrite) Cleanup() error {
	if h.cache != nil && h.rule != nil {
		h.cache.removeRule(h.rule)
	}
	return nil
}

// poolCache returns the named cache from the config's cache_pool app.
func poolCache(ctx caddy.Context, name string) (*namedCache, error) {
	if name == "" {
		return nil, fmt.Errorf("missing cache name")
	}
	app, err := ctx.App("cache_pool")
	if err != nil {
		return nil, fmt.Errorf("loading cache_pool app: %v", err)
	}
	return app.(*Pool).Cache(name)
}

// identityInKey reports whether the key holds the caller's identity: the
// Authorization header, or a placeholder of the authenticated user or of
// that header.
func identityInKey(headers, placeholders []string) bool {
	for _, h := range headers {
		if strings.EqualFold(h, "Authorization") {
			return true
		}
	}
	for _, p := range placeholders {
		p = strings.ToLower(p)
		if strings.Contains(p, "{http.auth.user.") || strings.Contains(p, "{http.request.header.authorization}") {
			return true
		}
	}
	return false
}

func (h *CacheWrite) maxEntrySize() int64 {
	if h.MaxEntrySize > 0 {
		return h.MaxEntrySize
	}
	return h.cache.maxEntrySize.Load()
}

// ServeHTTP passes the request on and stores the response on its way back.
func (h *CacheWrite) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	status, _ := repl.GetString(placeholderStatus)
	if status == "" {
		repl.Set(placeholderName, h.Cache)
		repl.Set(placeholderStatus, resultMiss)
	}
	if r.Method != http.MethodGet {
		fwd := "method"
		if r.Method == http.MethodHead {
			fwd = "uri-miss"
		}
		w.Header().Add("Cache-Status", h.Cache+"; fwd="+fwd)
		return next.ServeHTTP(w, r)
	}
	fwd := "uri-miss"
	if status == resultStale {
		fwd = "stale"
	}
	cw := &cacheWriter{
		ResponseWriter: w,
		h:              h,
		r:              r,
		fwd:            fwd,
		outer:          outerFields(w.Header()),
		snap:           h.cache.snapshot(r.URL.EscapedPath()),
		requestTime:    h.now(),
		declared:       -1,
	}
	err := next.ServeHTTP(cw, r)
	cw.finish(err)
	return err
}

// cacheWriter streams a response to the client and keeps a bounded copy
// of it to store once it is known to be complete.
type cacheWriter struct {
	http.ResponseWriter
	h    *CacheWrite
	r    *http.Request
	fwd  string
	snap snapshot

	// outer marks the fields set before this handler ran (by rate_limit or
	// header, say): they belong to this request, not to the response, and
	// are not stored unless a later handler replaced them.
	outer map[string]*string

	requestTime  time.Time
	responseTime time.Time
	wroteHeader  bool
	storing      bool
	done         bool

	status   int
	header   http.Header
	ttl      time.Duration
	body     []byte
	limit    int64
	declared int64
}

// WriteHeader decides from the status and headers whether the response
// may be stored, says so in Cache-Status, and sends the header on.
func (cw *cacheWriter) WriteHeader(status int) {
	if cw.wroteHeader || (status >= 100 && status < 200 && status != http.StatusSwitchingProtocols) {
		cw.ResponseWriter.WriteHeader(status)
		return
	}
	cw.wroteHeader = true
	cw.status = status
	cw.responseTime = cw.h.now()
	member := cw.h.Cache + "; fwd=" + cw.fwd
	if reason := cw.decide(); reason != "" {
		cw.h.cache.stats.record(reason)
		member += "; detail=" + reason
	} else {
		member += "; stored"
	}
	cw.Header().Add("Cache-Status", member)
	cw.ResponseWriter.WriteHeader(status)
}

func (cw *cacheWriter) decide() string {
	hdr := cw.Header()
	ttl, reason := cw.h.policy.Decide(httpcache.Exchange{
		RequestHeader: cw.r.Header,
		Status:        cw.status,
		Header:        hdr,
		RequestTime:   cw.requestTime,
		ResponseTime:  cw.responseTime,
	})
	if reason != "" {
		return reason
	}
	cw.limit = cw.h.maxEntrySize() - headerSize(hdr)
	if cl := hdr.Get("Content-Length"); cl != "" {
		n, err := strconv.ParseInt(cl, 10, 64)
		if err != nil || n < 0 {
			return httpcache.ReasonIncomplete
		}
		cw.declared = n
	}
	if cw.limit <= 0 || cw.declared > cw.limit {
		return httpcache.ReasonTooLarge
	}
	cw.storing = true
	cw.ttl = ttl
	cw.header = hdr.Clone()
	for name, first := range cw.outer {
		if v := hdr[name]; len(v) > 0 && &v[0] == first {
			delete(cw.header, name)
		}
	}
	if cw.declared >= 0 {
		cw.body = make([]byte, 0, cw.declared)
	}
	return ""
}

// Write sends p on and keeps a copy while the copy fits. Once a response
// of declared length is complete, it is stored before its last bytes leave,
// so a client that sends the same request next finds it.
func (cw *cacheWriter) Write(p []byte) (int, error) {
	if !cw.wroteHeader {
		cw.WriteHeader(http.StatusOK)
	}
	if cw.storing {
		if int64(len(cw.body)+len(p)) > cw.limit {
			cw.drop(httpcache.ReasonTooLarge)
		} else {
			cw.body = append(cw.body, p...)
			if int64(len(cw.body)) == cw.declared {
				cw.commit()
			}
		}
	}
	return cw.ResponseWriter.Write(p)
}

// FlushError passes a flush on, so streamed responses stay streamed.
func (cw *cacheWriter) FlushError() error {
	if !cw.wroteHeader {
		cw.WriteHeader(http.StatusOK)
	}
	return http.NewResponseController(cw.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (cw *cacheWriter) Unwrap() http.ResponseWriter { return cw.ResponseWriter }

func (cw *cacheWriter) drop(reason string) {
	cw.storing = false
	cw.body = nil
	cw.header = nil
	cw.h.cache.stats.record(reason)
}

// finish stores a response whose end is only known now, when the next
// handler returned: one of unknown length, or none at all.
func (cw *cacheWriter) finish(err error) {
	if !cw.storing || cw.done {
		return
	}
	if err != nil || cw.r.Context().Err() != nil ||
		(cw.declared >= 0 && int64(len(cw.body)) != cw.declared) {
		cw.drop(httpcache.ReasonIncomplete)
		return
	}
	cw.commit()
}

// commit writes the copy to the cache.
func (cw *cacheWriter) commit() {
	cw.done = true
	cw.storing = false
	h, r := cw.h, cw.r
	hdr := cw.header
	for _, name := range hopByHop {
		delete(hdr, name)
	}
	if cw.status != http.StatusNoContent && cw.status != http.StatusNotModified {
		hdr["Content-Length"] = []string{strconv.Itoa(len(cw.body))}
	}
	if h.ETag && hdr.Get("Etag") == "" {
		sum := sha256.Sum256(cw.body)
		hdr["Etag"] = []string{`"` + hex.EncodeToString(sum[:16]) + `"`}
	}
	if cw.declared < 0 && cap(cw.body) > len(cw.body)+len(cw.body)/8 {
		// A body of unknown length grew by doubling; keep only its bytes.
		cw.body = slices.Clone(cw.body)
	}
	fields, cacheStatus := fieldsOf(hdr)
	e := &entry{
		host:        httpcache.CanonicalHost(r.Host, r.TLS != nil),
		path:        r.URL.EscapedPath(),
		tags:        tagsOf(hdr, h.TagsFrom),
		status:      cw.status,
		fields:      fields,
		cacheStatus: cacheStatus,
		validators:  httpcache.ValidatorsOf(hdr),
		body:        cw.body,
		storedAt:    cw.responseTime,
		initialAge:  httpcache.InitialAge(hdr, cw.requestTime, cw.responseTime),
		expires:     cw.responseTime.Add(cw.ttl),
	}
	vary := httpcache.VaryNames(hdr)
	kb := getKeyBuilder()
	primary := string(h.rule.build(kb, r, nil))
	entries := []*entry{e}
	if vary == nil {
		e.key = primary
	} else {
		e.key = string(h.rule.build(kb, r, vary))
		marker := &entry{key: primary, host: e.host, path: e.path, vary: vary, expires: e.expires}
		marker.computeCost()
		entries = append(entries, marker)
	}
	putKeyBuilder(kb)
	e.computeCost()
	reason := h.cache.put(cw.snap, cw.ttl, entries...)
	if reason == "" {
		reason = outcomeStored
	}
	h.cache.stats.record(reason)
	if ce := h.logger.Check(zap.DebugLevel, "cache store"); ce != nil {
		ce.Write(zap.String("cache", h.Cache), zap.String("outcome", reason),
			zap.Int("bytes", len(cw.body)), zap.Duration("ttl", cw.ttl))
	}
	cw.body = nil
	cw.header = nil
}

// outerFields records which value slices the header holds now, to tell
// later which fields no inner handler touched.
func outerFields(h http.Header) map[string]*string {
	if len(h) == 0 {
		return nil
	}
	m := make(map[string]*string, len(h))
	for name, v := range h {
		if len(v) > 0 {
			m[name] = &v[0]
		}
	}
	return m
}

// hopByHop are the header fields that describe one connection, never the
// stored response.
var hopByHop = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// tagsOf collects the entry's tags from the named response headers.
func tagsOf(h http.Header, names []string) []string {
	var tags []string
	for _, name := range names {
		for _, line := range h.Values(name) {
			for _, t := range strings.FieldsFunc(line, func(r rune) bool { return r == ' ' || r == ',' || r == '\t' }) {
				if len(t) <= maxTagLen && len(tags) < maxTagsPerEntry {
					tags = append(tags, t)
				}
			}
		}
	}
	return tags
}

// Interface guards
var (
	_ caddy.Provisioner           = (*CacheWrite)(nil)
	_ caddy.CleanerUpper          = (*CacheWrite)(nil)
	_ caddyhttp.MiddlewareHandler = (*CacheWrite)(nil)
)
