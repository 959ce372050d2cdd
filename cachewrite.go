package gateway

import (
	"bytes"
	"context"
	"errors"
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
	caddy.RegisterModule(CacheWrite{})
}

// CacheWrite stores the responses that pass through it in a named cache,
// while streaming them to the client unchanged but for a Cache-Status
// member. Only complete responses to GET requests that the storage rules
// allow are stored.
//
// Of its options, only KeyPlaceholders takes placeholders, expanded for
// each request. It sets, when no cache_read before it did:
//
// Placeholder | Description
// ------------|-------------
// `{http.cache.name}` | the cache's name
// `{http.cache.status}` | `miss`
type CacheWrite struct {
	// Cache is the name of the cache to write to. Required.
	Cache string `json:"cache"`

	// TTL selects operator-TTL mode: every stored response is fresh this
	// long, whatever the origin says. Default: none, origin mode, where
	// the origin's s-maxage, max-age or Expires decide and a response
	// without them is not stored.
	TTL caddy.Duration `json:"ttl,omitempty"`

	// KeyQuery lists the query parameters that are part of the key.
	// Default: every parameter, in any order.
	KeyQuery []string `json:"key_query,omitempty"`

	// KeyHeaders lists request headers whose values are part of the key.
	// A name with '_' or '.' must be kept by the server's
	// expected_underscore_headers or expected_dot_headers. Default: none.
	KeyHeaders []string `json:"key_headers,omitempty"`

	// KeyPlaceholders lists placeholder templates, such as
	// {http.auth.user.id}, whose values for each request are part of the
	// key. Default: none.
	KeyPlaceholders []string `json:"key_placeholders,omitempty"`

	// KeyCookies lists cookies whose values are part of the key, such as
	// a session cookie.
	KeyCookies []string `json:"key_cookies,omitempty"`

	// IgnoreCookies lists cookies that never select a response, such as
	// analytics cookies. A request that carries a cookie neither listed
	// here nor in key_cookies is neither stored nor answered from a shared
	// entry, unless the response says public or s-maxage, or the key holds
	// the caller's identity or the Cookie header.
	IgnoreCookies []string `json:"ignore_cookies,omitempty"`

	// Status lists the storable statuses, each 200 to 599. Default in
	// operator-TTL mode: 200 203 204 300 301 308 410; in origin mode: any
	// final status this cache understands, when the origin gives explicit
	// freshness.
	Status []int `json:"status,omitempty"`

	// MaxEntrySize overrides the pool's largest storable response, headers
	// and body, in bytes, up to half the cache's max_size. Default: the
	// cache's max_entry_size.
	MaxEntrySize int64 `json:"max_entry_size,omitempty"`

	// MaxTTL caps the freshness taken from the origin. Default: no cap.
	MaxTTL caddy.Duration `json:"max_ttl,omitempty"`

	// TagsFrom lists response headers whose space- or comma-separated
	// values tag the entry for invalidation. Default: Surrogate-Key.
	TagsFrom []string `json:"tags_from,omitempty"`

	// ETag gives stored responses that have no ETag a strong one, computed
	// from the body, so that hits can answer If-None-Match. Default: off.
	ETag bool `json:"etag,omitempty"`

	// Heuristic allows heuristic freshness in origin mode (RFC 9111
	// section 4.2.2): a response without explicit freshness but with a
	// Last-Modified is fresh for a tenth of its age, at most this long.
	// Default: off.
	Heuristic caddy.Duration `json:"heuristic,omitempty"`

	// StaleWhileRevalidate and StaleIfError are the stale windows (RFC
	// 5861) of responses that give none themselves. A stale entry within
	// the first is served at once while one request refreshes it in the
	// background; within the second, it is served when the origin answers
	// 500, 502, 503 or 504 or cannot be reached. Never where
	// must-revalidate, proxy-revalidate, s-maxage or no-cache forbid
	// serving stale. Default: none, only the response's own.
	StaleWhileRevalidate caddy.Duration `json:"stale_while_revalidate,omitempty"`
	StaleIfError         caddy.Duration `json:"stale_if_error,omitempty"`

	// TargetedCacheControl lists the targeted cache-control fields (RFC
	// 9213) honoured over Cache-Control and Expires, in order; the first
	// present with a valid value decides. Fields other than
	// CDN-Cache-Control are this gateway's own and are removed from the
	// response. "off" alone honours none. Default: CDN-Cache-Control.
	TargetedCacheControl []string `json:"targeted_cache_control,omitempty"`

	cache    *namedCache
	rule     *cachestore.KeyRule
	policy   httpcache.Policy
	members  cacheStatusMembers
	statusID string // the name as Cache-Status gives it
	// users are the key's placeholders of the authenticated user.
	users  []string
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
	if err := h.Validate(); err != nil {
		return err
	}
	for _, name := range h.KeyHeaders {
		if err := checkKeyHeader(ctx, name); err != nil {
			return fmt.Errorf("cache_write %s: key_headers: %v", h.Cache, err)
		}
	}
	if err := checkHeaderPlaceholders(ctx, h.KeyPlaceholders...); err != nil {
		return fmt.Errorf("cache_write %s: key_placeholders: %v", h.Cache, err)
	}
	if len(h.TagsFrom) == 0 {
		h.TagsFrom = []string{"Surrogate-Key"}
	}
	cache, err := poolCache(ctx, h.Cache)
	if err != nil {
		return err
	}
	h.cache = cache
	h.statusID = httpcache.CacheStatusID(h.Cache)
	h.members = newCacheStatusMembers(h.statusID)
	h.rule = cachestore.NewKeyRule(h.keyOptions())
	h.policy = httpcache.Policy{
		TTL:                  time.Duration(h.TTL),
		MaxTTL:               time.Duration(h.MaxTTL),
		Heuristic:            time.Duration(h.Heuristic),
		Statuses:             h.Status,
		IdentityInKey:        h.keyOptions().IdentityInKey(),
		StaleWhileRevalidate: time.Duration(h.StaleWhileRevalidate),
		StaleIfError:         time.Duration(h.StaleIfError),
	}
	h.policy.Targeted, h.policy.Own = targetedFields(h.TargetedCacheControl)
	h.users = h.keyOptions().UserPlaceholders()
	h.cache.AddRule(h.rule)
	return nil
}

// Validate checks the handler's options.
func (h *CacheWrite) Validate() error {
	if h.Cache == "" {
		return fmt.Errorf("cache_write: missing cache name (cache)")
	}
	for _, t := range h.KeyPlaceholders {
		if err := checkTemplate(t); err != nil {
			return fmt.Errorf("cache_write %s: key_placeholders: %q: %v", h.Cache, t, err)
		}
	}
	for _, d := range []struct {
		name  string
		value caddy.Duration
	}{{"ttl", h.TTL}, {"max_ttl", h.MaxTTL}, {"heuristic", h.Heuristic},
		{"stale_while_revalidate", h.StaleWhileRevalidate}, {"stale_if_error", h.StaleIfError}} {
		if d.value < 0 {
			return fmt.Errorf("cache_write %s: %s must not be negative", h.Cache, d.name)
		}
	}
	switch {
	case h.MaxEntrySize < 0:
		return fmt.Errorf("cache_write %s: max_entry_size must not be negative", h.Cache)
	case h.Heuristic > 0 && h.TTL > 0:
		return fmt.Errorf("cache_write %s: heuristic applies in origin mode only, not with ttl", h.Cache)
	}
	for _, name := range h.KeyCookies {
		if slices.Contains(h.IgnoreCookies, name) {
			return fmt.Errorf("cache_write %s: cookie %q is both in key_cookies and in ignore_cookies", h.Cache, name)
		}
	}
	if slices.Contains(h.TargetedCacheControl, "off") && len(h.TargetedCacheControl) > 1 {
		return fmt.Errorf("cache_write %s: targeted_cache_control: off stands alone", h.Cache)
	}
	for _, code := range h.Status {
		if code < 200 || code > 599 {
			return fmt.Errorf("cache_write %s: status: %d is not a final status code (200 to 599)", h.Cache, code)
		}
	}
	for _, list := range []struct {
		field string
		names []string
	}{{"key_headers", h.KeyHeaders}, {"tags_from", h.TagsFrom}, {"targeted_cache_control", h.TargetedCacheControl},
		{"key_cookies", h.KeyCookies}, {"ignore_cookies", h.IgnoreCookies}} {
		what := "a header field name"
		if strings.HasSuffix(list.field, "_cookies") {
			what = "a cookie name" // a token too (RFC 6265 section 4.1.1)
		}
		for _, name := range list.names {
			if list.field == "targeted_cache_control" && name == "off" {
				continue
			}
			if !httpguts.ValidHeaderFieldName(name) {
				return fmt.Errorf("cache_write %s: %s: %q is not %s", h.Cache, list.field, name, what)
			}
		}
	}
	return nil
}

// Cleanup unregisters the key rule.
func (h *CacheWrite) Cleanup() error {
	if h.cache != nil && h.rule != nil {
		h.cache.RemoveRule(h.rule)
	}
	return nil
}

// targetedFields returns the targeted cache-control fields to honour, in
// canonical form, and those of them that are this cache's own.
func targetedFields(names []string) (honoured, own []string) {
	switch {
	case len(names) == 0:
		return httpcache.DefaultTargetedFields, nil
	case len(names) == 1 && names[0] == "off":
		return nil, nil
	}
	for _, name := range names {
		name = http.CanonicalHeaderKey(name)
		honoured = append(honoured, name)
		if name != "Cdn-Cache-Control" {
			own = append(own, name)
		}
	}
	return honoured, own
}

// poolCache returns the named cache from the config's cache_pool app.
func poolCache(ctx caddy.Context, name string) (*namedCache, error) {
	if name == "" {
		return nil, fmt.Errorf("missing cache name")
	}
	pool, err := configPool(ctx)
	if err != nil {
		return nil, err
	}
	return pool.Cache(name)
}

// keyOptions gathers the handler's key options.
func (h *CacheWrite) keyOptions() httpcache.KeyOptions {
	return httpcache.KeyOptions{
		Query:         h.KeyQuery,
		Headers:       h.KeyHeaders,
		Placeholders:  h.KeyPlaceholders,
		Cookies:       h.KeyCookies,
		IgnoreCookies: h.IgnoreCookies,
	}
}

// userInKey reports whether the key holds the authenticated user of a
// request with Authorization: one of its user placeholders has a value.
// Where no authentication ran they are empty, and the key tells no caller
// from another.
func (h *CacheWrite) userInKey(r *http.Request, repl *caddy.Replacer) bool {
	if len(r.Header["Authorization"]) == 0 {
		return false
	}
	for _, name := range h.users {
		if v, _ := repl.GetString(name); v != "" {
			return true
		}
	}
	return false
}

// maxEntrySize is the largest response the handler stores: its own
// max_entry_size, or the cache's, and never more than half the cache's
// max_size, as the pool's rule for the cache's own, whatever the cache
// was resized to.
func (h *CacheWrite) maxEntrySize() int64 {
	if h.MaxEntrySize > 0 {
		return min(h.MaxEntrySize, h.cache.MaxSize()/2)
	}
	return h.cache.MaxEntrySize()
}

// ServeHTTP passes the request on and stores the response on its way back.
func (h *CacheWrite) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	status, _ := repl.GetString(placeholderStatus)
	if status == "" {
		repl.Set(placeholderName, h.Cache)
		repl.Set(placeholderStatus, resultValues[cachestore.Miss])
	}
	head := r.Method == http.MethodHead
	switch r.Method {
	case http.MethodGet, http.MethodHead:
	case http.MethodOptions, http.MethodTrace:
		w.Header().Add("Cache-Status", h.members.method)
		return next.ServeHTTP(h.passOn(w), r)
	default:
		w.Header().Add("Cache-Status", h.members.method)
		return serveInvalidating(h.passOn(w), r, next, h.invalidateUnsafe)
	}
	cw := &cacheWriter{
		ResponseWriter: w,
		h:              h,
		r:              r,
		ctx:            r.Context(),
		repl:           repl,
		requestTime:    h.now(),
		declared:       -1,
		outcome:        httpcache.ReasonIncomplete,
	}
	cw.member = h.members.miss
	if status == "bypass" {
		cw.member = h.members.bypass
	}
	if handed := lookupOf(r.Context()); handed != nil {
		if handed.VaryMiss {
			cw.member = h.members.varyMiss
		} else {
			cw.primary, cw.found = h.takeHandOff(r, repl, handed)
		}
	}
	if head && cw.stale() == nil {
		// A HEAD stores nothing of its own. Only with a stale entry of
		// its key at hand does it go through: its answer validates the
		// entry and may freshen it (RFC 9111 sections 4.3.1 and 4.3.5).
		w.Header().Add("Cache-Status", cw.member)
		return next.ServeHTTP(h.passOn(w), r)
	}
	if cw.found != nil {
		cw.path, cw.snap = cw.found.Path, cw.found.Snapshot
	} else {
		cw.path = r.URL.EscapedPath()
		cw.snap = h.cache.Snapshot(cw.path)
	}
	cw.outer = cachestore.OuterFields(cw.outerBuf[:0], w.Header())
	upstream := r
	if st := cw.stale(); st != nil && (st.Validators.ETag != "" || st.Validators.LastModified != "") {
		// Validate the stale entry (RFC 9111 section 4.3.1): the client's
		// own preconditions are answered from the entry once validated.
		upstream = r.Clone(r.Context())
		upstream.Header.Del("If-None-Match")
		upstream.Header.Del("If-Modified-Since")
		if st.Validators.ETag != "" {
			upstream.Header.Set("If-None-Match", st.Validators.ETag)
		}
		if st.Validators.LastModified != "" {
			upstream.Header.Set("If-Modified-Since", st.Validators.LastModified)
		}
		cw.revalidating = true
	}
	_, cw.background = w.(*nowhere)
	// A request with preconditions that only the origin answers (If-Match)
	// neither waits for another's fetch, whose answer it could not be
	// given, nor makes others wait for its own.
	if !cw.background && !head && readable(r) {
		if h.collapse(cw) {
			return nil
		}
		if cw.flight != nil {
			defer cw.land()
			// The leader's fetch outlives its client while others wait on it.
			// It stops once its client and every waiter have gone.
			ctx, cancel := context.WithCancelCause(context.WithoutCancel(r.Context()))
			flight := cw.flight
			stop := context.AfterFunc(r.Context(), func() {
				flight.LeaderLeft(func() { cancel(errAbandoned) })
			})
			defer stop()
			defer cancel(nil)
			cw.ctx = ctx
			upstream = upstream.WithContext(ctx)
		}
	}
	err := next.ServeHTTP(cw, upstream)
	if cw.refetch && err == nil {
		return h.refetch(cw, w, r, next)
	}
	if err != nil && !cw.wroteHeader {
		err = cw.failed(err)
	}
	cw.finish(err)
	return err
}

// errAbandoned ends a leader's fetch once its client and every waiter
// have gone. It is a context.Canceled, which reverse_proxy answers 499
// and Caddy logs at debug level, as for any client that leaves.
var errAbandoned = fmt.Errorf("the client left and no request waits for the response: %w", context.Canceled)

// errOtherRepresentation fails a request whose validation named another
// representation than the one stored, when its body cannot be sent again.
var errOtherRepresentation = errors.New("the origin's 304 names another representation than the stored one, and the request's body cannot be sent again")

// refetch asks again, unconditionally and as a miss, for a request whose
// stale entry the origin's 304 may not update (RFC 9111 section 4.3.4:
// its validator names another representation). Nothing was written to
// the client yet.
func (h *CacheWrite) refetch(cw *cacheWriter, w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	// Its waiters go on, to their own fetch.
	cw.land()
	// A body was read already. (HTTP/2 and HTTP/3 requests without
	// Content-Length have ContentLength -1, with a body or not.)
	if r.ContentLength > 0 || len(r.TransferEncoding) > 0 {
		return caddyhttp.Error(http.StatusBadGateway, errOtherRepresentation)
	}
	// Without the stale entry's hand-off, and without the client's own
	// conditions: a 304 to those would leave the stale entry in place.
	again := r.Clone(context.WithValue(r.Context(), lookupKey{}, (*cachestore.Lookup)(nil)))
	again.Header.Del("If-None-Match")
	again.Header.Del("If-Modified-Since")
	return h.ServeHTTP(w, again, next)
}

// passOn returns the writer for a response that passes through unstored:
// one that removes this cache's own targeted fields, when it has any.
func (h *CacheWrite) passOn(w http.ResponseWriter) http.ResponseWriter {
	if len(h.policy.Own) == 0 {
		return w
	}
	return &headerHook{ResponseWriter: w, before: func(_ int, hdr http.Header) { h.dropOwn(hdr) }}
}

// collapseWait bounds how long a request waits for another request's fetch
// of the same key before it goes to the origin itself.
const collapseWait = 10 * time.Second

// collapse joins the request to a fetch of its key in progress (RFC 9111
// leaves collapsing to the cache; RFC 9211 calls it "collapsed"): the
// first request leads and fetches; the others wait for it, then are
// answered from what it stored. done is true when the request was
// answered so. A waiter whose leader stored nothing the request may use
// (an unstorable or private response, another variant) fetches its own.
func (h *CacheWrite) collapse(cw *cacheWriter) (done bool) {
	if cw.primary == nil {
		kb := cachestore.GetKeyBuilder()
		cw.primary = slices.Clone(h.rule.Build(kb, cw.r, cw.repl, nil))
		cachestore.PutKeyBuilder(kb)
	}
	e, waited := h.await(cw)
	if e == nil {
		if waited {
			// A request that goes upstream after waiting is sent now:
			// its wait is no delay of the response's (RFC 9111 section
			// 4.2.3 counts from the request's sending).
			cw.requestTime = h.now()
		}
		return false
	}
	serveStored(cw.ResponseWriter, cw.r, h.statusID, e, h.now(), "fwd=uri-miss; collapsed")
	return true
}

// await joins the request to the fetch of its key, and returns the entry
// that fetch stored for it, if any, and whether it waited. When a fetch's
// answer was its leader's own (a 304 to its condition, its no-store), the
// waiters follow the next leader, one of them. With no entry the request
// goes upstream, as the leader when cw.flight is set.
func (h *CacheWrite) await(cw *cacheWriter) (e *cachestore.Entry, waited bool) {
	deadline := cw.requestTime.Add(collapseWait)
	for {
		flight, leader := h.cache.Join(cw.primary, cw.requestTime)
		switch {
		case flight == nil:
			return nil, waited
		case leader:
			cw.flight = flight
			return nil, waited
		}
		outcome, ok := flight.Wait(cw.r.Context(), deadline.Sub(h.now()))
		waited = true
		switch {
		case ok && outcome != httpcache.Stored && flight.Personal():
			continue
		case !ok || outcome != httpcache.Stored:
			return nil, true
		}
		// Another variant may have been stored, or the store refused it.
		e, _ := h.cache.Find(cw.r, cw.repl, cachestore.Want{Now: h.now(), MaxAge: -1})
		return e, true
	}
}

// invalidateUnsafe drops the stored responses of the target URI of a
// request with an unsafe method that succeeded, and of the same-origin
// URIs its Location and Content-Location name (RFC 9111 section 4.4),
// every variant, on every node.
func (h *CacheWrite) invalidateUnsafe(r *http.Request, resp http.Header) {
	host := httpcache.CanonicalHost(r.Host, r.TLS != nil)
	t := cachestore.Target{URLs: []cachestore.URL{{Host: host, Path: r.URL.EscapedPath()}}}
	for _, name := range []string{"Location", "Content-Location"} {
		if path, ok := sameOrigin(r, resp.Get(name)); ok {
			t.URLs = append(t.URLs, cachestore.URL{Host: host, Path: path})
		}
	}
	_, _, err := h.cache.purgeEverywhere(r.Context(), t)
	if err != nil {
		h.logger.Warn("invalidation may not have reached every node", zap.String("cache", h.Cache), zap.Error(err))
	}
}

// sameOrigin resolves a URI reference from a response to r, and returns
// its escaped path when it has r's origin: only those may be invalidated,
// so that one origin cannot drop another's entries.
func sameOrigin(r *http.Request, ref string) (string, bool) {
	if ref == "" {
		return "", false
	}
	u, err := url.Parse(ref)
	if err != nil {
		return "", false
	}
	if u.IsAbs() || u.Host != "" {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		if (u.Scheme != "" && !strings.EqualFold(u.Scheme, scheme)) ||
			httpcache.CanonicalHost(u.Host, r.TLS != nil) != httpcache.CanonicalHost(r.Host, r.TLS != nil) {
			return "", false
		}
	}
	base := &url.URL{Path: r.URL.Path, RawPath: r.URL.RawPath}
	return base.ResolveReference(u).EscapedPath(), true
}

// takeHandOff builds the key of the request's primary entry as the
// request goes upstream, and returns with it what cache_read handed over
// when that was looked up under the same key of the same cache. A handler
// between the two that changed anything the key holds (a rewrite, a key
// header, an identity placeholder) makes the hand-off another request's:
// the writer then neither uses its stale entry nor stores under its key.
// Without a hand-off, the key is built only when the response is stored.
func (h *CacheWrite) takeHandOff(r *http.Request, repl *caddy.Replacer, handed *cachestore.Lookup) ([]byte, *cachestore.Lookup) {
	kb := cachestore.GetKeyBuilder()
	defer cachestore.PutKeyBuilder(kb)
	key := h.rule.Build(kb, r, repl, nil)
	if handed.Store == h.cache.Store && handed.Rule != nil &&
		handed.Rule.ID() == h.rule.ID() && bytes.Equal(handed.Primary, key) {
		return handed.Primary, handed
	}
	return slices.Clone(key), nil
}

// cacheStatusMembers are the starts of the Cache-Status members a writer
// sends, built once.
type cacheStatusMembers struct {
	method, miss, varyMiss, stale, bypass string // the fwd values of RFC 9211
}

func newCacheStatusMembers(cache string) cacheStatusMembers {
	return cacheStatusMembers{
		method:   cache + "; fwd=method",
		miss:     cache + "; fwd=uri-miss",
		varyMiss: cache + "; fwd=vary-miss",
		stale:    cache + "; fwd=stale",
		bypass:   cache + "; fwd=bypass",
	}
}

// lookupKey is the request context key under which cache_read hands its
// lookup to cache_write.
type lookupKey struct{}

// handoff is a request context that carries what cache_read found: one
// allocation for the context and the lookup both.
type handoff struct {
	context.Context
	lookup cachestore.Lookup
}

func (h *handoff) Value(key any) any {
	if key == (lookupKey{}) {
		return &h.lookup
	}
	return h.Context.Value(key)
}

// withLookup returns ctx carrying what cache_read found.
func withLookup(ctx context.Context, l cachestore.Lookup) context.Context {
	return &handoff{ctx, l}
}

// lookupOf returns what cache_read found for the request, or nil.
func lookupOf(ctx context.Context) *cachestore.Lookup {
	l, _ := ctx.Value(lookupKey{}).(*cachestore.Lookup)
	return l
}

// Interface guards
var (
	_ caddy.Provisioner           = (*CacheWrite)(nil)
	_ caddy.Validator             = (*CacheWrite)(nil)
	_ caddy.CleanerUpper          = (*CacheWrite)(nil)
	_ caddyhttp.MiddlewareHandler = (*CacheWrite)(nil)
)
