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

	cache   *namedCache
	rule    *keyRule
	policy  httpcache.Policy
	members cacheStatusMembers
	logger  *zap.Logger
	now     func() time.Time
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
	h.members = newCacheStatusMembers(h.Cache)
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
		member := h.members.method
		if r.Method == http.MethodHead {
			member = h.members.miss
		}
		w.Header().Add("Cache-Status", member)
		return next.ServeHTTP(w, r)
	}
	path := r.URL.EscapedPath()
	cw := &cacheWriter{
		ResponseWriter: w,
		h:              h,
		r:              r,
		stale:          status == resultStale,
		path:           path,
		snap:           h.cache.snapshot(path),
		requestTime:    h.now(),
		declared:       -1,
	}
	cw.outer = outerFields(cw.outerBuf[:0], w.Header())
	err := next.ServeHTTP(cw, r)
	cw.finish(err)
	return err
}

// cacheStatusMembers are the Cache-Status members a writer sends, built
// once: only the reason a response was not stored varies.
type cacheStatusMembers struct {
	method, miss, stale     string // fwd=method, fwd=uri-miss, fwd=stale
	storedMiss, storedStale string // the same, with "stored"
}

func newCacheStatusMembers(cache string) cacheStatusMembers {
	m := cacheStatusMembers{
		method: cache + "; fwd=method",
		miss:   cache + "; fwd=uri-miss",
		stale:  cache + "; fwd=stale",
	}
	m.storedMiss, m.storedStale = m.miss+"; stored", m.stale+"; stored"
	return m
}

// cacheWriter streams a response to the client and keeps a bounded copy
// of it to store once it is known to be complete.
type cacheWriter struct {
	http.ResponseWriter
	h     *CacheWrite
	r     *http.Request
	stale bool // a stale entry was found
	path  string
	snap  snapshot

	// outer marks the fields set before this handler ran (by rate_limit or
	// header, say): they belong to this request, not to the response, and
	// are not stored unless a later handler replaced them.
	outer    []outerField
	outerBuf [4]outerField

	requestTime  time.Time
	responseTime time.Time
	wroteHeader  bool
	storing      bool
	done         bool

	status   int
	ttl      time.Duration
	e        *entry   // what is stored once the body is complete
	vary     []string // the request fields that select it, if any
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
	var member string
	if reason := cw.decide(); reason != "" {
		cw.h.cache.stats.record(reason)
		member = cw.h.members.miss
		if cw.stale {
			member = cw.h.members.stale
		}
		member += "; detail=" + reason
	} else {
		member = cw.h.members.storedMiss
		if cw.stale {
			member = cw.h.members.storedStale
		}
	}
	cw.Header().Add("Cache-Status", member)
	cw.ResponseWriter.WriteHeader(status)
}

// decide applies the storage rules to the response header and, when the
// response may be stored, prepares its entry from the header as it is
// now: later changes to the header map are not the stored response's.
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
	fields, cacheStatus := storedFields(hdr, cw.outer)
	r := cw.r
	cw.vary = httpcache.VaryNames(hdr)
	cw.e = &entry{
		host:        httpcache.CanonicalHost(r.Host, r.TLS != nil),
		path:        cw.path,
		tags:        tagsOf(hdr, cw.h.TagsFrom),
		status:      cw.status,
		fields:      fields,
		cacheStatus: cacheStatus,
		validators:  httpcache.ValidatorsOf(hdr),
		storedAt:    cw.responseTime,
		initialAge:  httpcache.InitialAge(hdr, cw.requestTime, cw.responseTime),
		expires:     cw.responseTime.Add(ttl),
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
	cw.e = nil
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
	h, e := cw.h, cw.e
	if cw.status != http.StatusNoContent && cw.status != http.StatusNotModified {
		e.fields = append(e.fields, field{"Content-Length", []string{strconv.Itoa(len(cw.body))}})
	}
	if h.ETag && e.validators.ETag == "" {
		sum := sha256.Sum256(cw.body)
		e.validators.ETag = `"` + hex.EncodeToString(sum[:16]) + `"`
		e.fields = append(e.fields, field{"Etag", []string{e.validators.ETag}})
	}
	if cw.declared < 0 && cap(cw.body) > len(cw.body)+len(cw.body)/8 {
		// A body of unknown length grew by doubling; keep only its bytes.
		cw.body = slices.Clone(cw.body)
	}
	e.body = cw.body
	kb := getKeyBuilder()
	primary := slices.Clone(h.rule.build(kb, cw.r, nil))
	var marker *entry
	if cw.vary == nil {
		e.key = primary
	} else {
		e.key = slices.Clone(h.rule.build(kb, cw.r, cw.vary))
		marker = &entry{key: primary, host: e.host, path: e.path, vary: cw.vary, expires: e.expires}
		marker.computeCost()
	}
	putKeyBuilder(kb)
	e.computeCost()
	reason := h.cache.put(cw.snap, cw.ttl, e, marker)
	if reason == "" {
		reason = outcomeStored
	}
	h.cache.stats.record(reason)
	if ce := h.logger.Check(zap.DebugLevel, "cache store"); ce != nil {
		ce.Write(zap.String("cache", h.Cache), zap.String("outcome", reason),
			zap.Int("bytes", len(cw.body)), zap.Duration("ttl", cw.ttl))
	}
	cw.body = nil
	cw.e = nil
}

// outerField is a header field as it was before the next handler ran: its
// name and the first element of its values slice.
type outerField struct {
	name  string
	first *string
}

// outerFields records in buf which value slices the header holds now, to
// tell later which fields no inner handler touched.
func outerFields(buf []outerField, h http.Header) []outerField {
	for name, v := range h {
		if len(v) > 0 {
			buf = append(buf, outerField{name, &v[0]})
		}
	}
	return buf
}

// untouched reports whether the values are still those an outer handler
// set.
func untouched(outer []outerField, name string, values []string) bool {
	for _, o := range outer {
		if o.name == name {
			return &values[0] == o.first
		}
	}
	return false
}

// storedFields copies the header fields a stored response keeps: not the
// upstream's Cache-Status, which is returned apart so a hit can add its own
// member; not the fields that describe one connection; not Content-Length,
// which commit sets from the body; and not the fields of outer handlers.
// One block holds every value, and each field's values are clipped, so a
// handler that appends to them on a hit copies them.
func storedFields(h http.Header, outer []outerField) (fields []field, cacheStatus []string) {
	n := 0
	for _, values := range h {
		n += len(values)
	}
	block := make([]string, 0, n)
	fields = make([]field, 0, len(h)+2) // room for Content-Length and Etag
	for name, values := range h {
		if len(values) == 0 || notStored(name) || untouched(outer, name, values) {
			continue
		}
		start := len(block)
		block = append(block, values...)
		kept := block[start:len(block):len(block)]
		if name == "Cache-Status" {
			cacheStatus = kept
			continue
		}
		fields = append(fields, field{name, kept})
	}
	return fields, cacheStatus
}

// notStored reports whether a header field is one that describes one
// connection, never the stored response, or Content-Length, which commit
// sets from the body.
func notStored(name string) bool {
	switch name {
	case "Connection", "Keep-Alive", "Proxy-Connection", "Te", "Trailer", "Transfer-Encoding", "Upgrade", "Content-Length":
		return true
	}
	return false
}

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
