package gateway

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-gateway/gateway/internal/cachestore"
	"github.com/caddy-gateway/gateway/internal/httpcache"
)

func newTestCache(t testing.TB, maxSize int64) *namedCache {
	t.Helper()
	s, err := cachestore.New(cachestore.Config{Name: "test", MaxSize: maxSize, MaxEntrySize: maxSize / 4})
	if err != nil {
		t.Fatal(err)
	}
	c := &namedCache{Store: s}
	t.Cleanup(func() { c.Destruct() })
	return c
}

func FuzzDecodePurge(f *testing.F) {
	f.Add(`{"urls":["/a","http://h/b?x"],"prefixes":["/p"],"tags":["t"]}`)
	f.Add(`{"urls":[":"]}`)
	f.Add(`{}`)
	f.Fuzz(func(t *testing.T, body string) {
		target, err := decodePurge(strings.NewReader(body))
		if err != nil {
			return
		}
		if target.Empty() {
			t.Fatal("accepted a purge that selects nothing")
		}
		for _, p := range target.Prefixes {
			if !strings.HasPrefix(p, "/") {
				t.Fatalf("accepted prefix %q", p)
			}
		}
		for _, u := range target.URLs {
			if !strings.HasPrefix(u.Path, "/") {
				t.Fatalf("accepted url path %q", u.Path)
			}
		}
	})
}

// hitChain builds cache_read → cache_write → an origin, wired as Caddy
// wires them, over one cache.
func hitChain(tb testing.TB, body []byte) (caddyhttp.Handler, *namedCache) {
	chain, c, _ := countingChain(tb, body)
	return chain, c
}

// countingChain is hitChain with a count of the calls that reach the origin.
func countingChain(tb testing.TB, body []byte) (caddyhttp.Handler, *namedCache, *atomic.Int64) {
	var calls atomic.Int64
	c := newTestCache(tb, 64<<20)
	w := &CacheWrite{Cache: "test", TTL: caddy.Duration(time.Hour), TagsFrom: []string{"Surrogate-Key"}}
	rd := wire(c, w, time.Now)
	origin := caddyhttp.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) error {
		calls.Add(1)
		rw.Header().Set("Content-Type", "application/json")
		rw.Header().Set("Content-Length", fmt.Sprint(len(body)))
		_, err := rw.Write(body)
		return err
	})
	write := caddyhttp.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) error { return w.ServeHTTP(rw, r, origin) })
	return caddyhttp.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) error { return rd.ServeHTTP(rw, r, write) }), c, &calls
}

// wire sets up w over c as Provision would, in operator-TTL mode with the
// clock now, and returns a cache_read of the same cache.
func wire(c *namedCache, w *CacheWrite, now func() time.Time) *CacheRead {
	w.cache, w.logger, w.now = c, zap.NewNop(), now
	w.rule = cachestore.NewKeyRule(w.keyOptions())
	w.statusID = httpcache.CacheStatusID(w.Cache)
	w.members = newCacheStatusMembers(w.statusID)
	w.policy = httpcache.Policy{TTL: time.Duration(w.TTL)}
	c.AddRule(w.rule)
	return &CacheRead{Cache: w.Cache, cache: c, nameVal: w.Cache, statusID: w.statusID, logger: zap.NewNop(), now: now}
}

func newCaddyRequest(target string) *http.Request {
	r := httptest.NewRequest("GET", target, nil)
	repl := caddy.NewReplacer()
	return r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, repl))
}

// discardWriter is a ResponseWriter that keeps nothing but its header map.
type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardWriter) WriteHeader(int)             {}

func TestHitDoesNotCallNext(t *testing.T) {
	chain, c, calls := countingChain(t, []byte(`{"ok":true}`))
	for i := range 3 {
		rec := httptest.NewRecorder()
		if err := chain.ServeHTTP(rec, newCaddyRequest("http://api.example.com/x")); err != nil {
			t.Fatal(err)
		}
		if rec.Body.String() != `{"ok":true}` {
			t.Fatalf("request %d: body %q", i, rec.Body.String())
		}
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("the origin was called %d times for one miss and two hits", n)
	}
	st := c.Stats()
	if hits, stored := st.Requests[cachestore.Hit], st.Outcomes[httpcache.Stored]; hits != 2 || stored != 1 {
		t.Errorf("hits %d stored %d, want 2 and 1", hits, stored)
	}
}

func BenchmarkHit(b *testing.B) {
	for _, size := range []int{1 << 10, 64 << 10} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			chain, _ := hitChain(b, make([]byte, size))
			chain.ServeHTTP(&discardWriter{h: http.Header{}}, newCaddyRequest("http://api.example.com/products/1?page=2"))
			b.ReportAllocs()
			b.SetBytes(int64(size))
			b.RunParallel(func(pb *testing.PB) {
				r := newCaddyRequest("http://api.example.com/products/1?page=2")
				w := &discardWriter{h: make(http.Header, 8)}
				for pb.Next() {
					clear(w.h)
					chain.ServeHTTP(w, r)
				}
			})
		})
	}
}

// TestConcurrentUse runs hits, stores, purges and flushes through the
// handlers at once, for the race detector; afterwards the cache still
// misses, stores and hits.
func TestConcurrentUse(t *testing.T) {
	chain, c, calls := countingChain(t, []byte("body"))
	done := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				r := newCaddyRequest(fmt.Sprintf("http://h/p/%d?g=%d", i%50, g))
				chain.ServeHTTP(&discardWriter{h: http.Header{}}, r)
			}
		})
	}
	for i := range 200 {
		switch i % 3 {
		case 0:
			c.Purge(cachestore.Target{URLs: []cachestore.URL{{Path: fmt.Sprintf("/p/%d", i%50)}}})
		case 1:
			c.Purge(cachestore.Target{Prefixes: []string{"/p/1"}})
		default:
			c.Flush()
		}
	}
	close(done)
	wg.Wait()
	c.Flush()
	if n := c.Stats().Entries; n != 0 {
		t.Errorf("%d entries after a flush", n)
	}
	before := calls.Load()
	for range 2 {
		chain.ServeHTTP(&discardWriter{h: http.Header{}}, newCaddyRequest("http://h/p/1?g=0"))
	}
	if n := calls.Load() - before; n != 1 {
		t.Errorf("a miss then a hit reached the origin %d times", n)
	}
}

// BenchmarkMissStore runs a miss that stores through the chain, every
// request with a path of its own, into a cache small enough to evict.
func BenchmarkMissStore(b *testing.B) {
	chain, _ := hitChain(b, make([]byte, 1<<10))
	r := newCaddyRequest("http://api.example.com/products/1?page=2")
	w := &discardWriter{h: make(http.Header, 8)}
	paths := make([]string, 1<<16)
	for i := range paths {
		paths[i] = fmt.Sprintf("/products/%d", i)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		clear(w.h)
		r.URL.Path = paths[i%len(paths)] + strconv.Itoa(i/len(paths))
		chain.ServeHTTP(w, r)
	}
}

// TestHandOffCarriesTheStaleEntry: cache_read hands what it found to
// cache_write in the request's context. A handler between them flushes
// the cache: cache_write must still see the stale entry cache_read found
// (looked up again, it would find nothing), and store under the primary
// key cache_read built.
func TestHandOffCarriesTheStaleEntry(t *testing.T) {
	clock := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	now := func() time.Time { return clock }
	c := newTestCache(t, 8<<20)
	w := &CacheWrite{Cache: "test", TTL: caddy.Duration(time.Minute), TagsFrom: []string{"Surrogate-Key"}}
	rd := wire(c, w, now)

	var handed *cachestore.Lookup
	origin := caddyhttp.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) error {
		handed = nil
		if cw, ok := rw.(*cacheWriter); ok {
			handed = cw.found
		}
		_, err := rw.Write([]byte("fresh"))
		return err
	})
	write := caddyhttp.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) error { return w.ServeHTTP(rw, r, origin) })
	var between func(r *http.Request)
	middle := caddyhttp.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) error {
		if between != nil {
			between(r)
		}
		return write.ServeHTTP(rw, r)
	})
	serve := func(target string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		if err := rd.ServeHTTP(rec, newCaddyRequest(target), middle); err != nil {
			t.Fatal(err)
		}
		return rec
	}

	serve("http://api.example.com/s") // stored
	clock = clock.Add(2 * time.Minute)
	e, found := c.Find(newCaddyRequest("http://api.example.com/s"), caddy.NewReplacer(), cachestore.Want{Now: clock, MaxAge: -1})
	if e != nil || found.Stale == nil {
		t.Fatalf("setup: no stale entry (%v, %+v)", e, found)
	}
	stale := found.Stale

	between = func(*http.Request) { c.Flush() }
	rec := serve("http://api.example.com/s")
	if handed == nil || handed.Stale != stale {
		t.Fatalf("cache_write got %+v, not the stale entry cache_read found", handed)
	}
	if string(handed.Primary) != string(stale.Key) {
		t.Error("the handed primary key is not the stale entry's")
	}
	if cs := rec.Header().Get("Cache-Status"); !strings.HasPrefix(cs, "test; fwd=stale") {
		t.Errorf("Cache-Status %q", cs)
	}
	// The snapshot came with the lookup, from before the flush: the store
	// is dropped.
	if n := c.Stats().Outcomes[httpcache.ReasonInvalidated]; n != 1 || c.Stats().Entries != 0 {
		t.Errorf("%d stores dropped, %d entries: the flush after the lookup must drop the store", n, c.Stats().Entries)
	}

	// A request rewritten between the two is not the one looked up:
	// cache_write ignores the hand-off and keys the request it sees.
	between = func(r *http.Request) { r.URL.Path = "/rewritten" }
	serve("http://api.example.com/s")
	if handed != nil {
		t.Error("cache_write took the hand-off of another request")
	}
	between = nil
	if rec := serve("http://api.example.com/rewritten"); !strings.Contains(rec.Header().Get("Cache-Status"), "hit") {
		t.Errorf("the rewritten request was not stored under its own key: %q", rec.Header().Get("Cache-Status"))
	}
}

// TestHandOffIgnoredWhenTheKeyChanged: cache_read finds a stale entry and
// hands it over, then a handler between it and cache_write sets a key
// header (as authentication sets an identity). The writer must store under
// the key of the request it sees, never under the key cache_read built, or
// the next caller without that header would be served the response meant
// for the first.
func TestHandOffIgnoredWhenTheKeyChanged(t *testing.T) {
	clock := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	now := func() time.Time { return clock }
	c := newTestCache(t, 8<<20)
	w := &CacheWrite{Cache: "test", TTL: caddy.Duration(time.Minute), KeyHeaders: []string{"X-User"}}
	rd := wire(c, w, now)
	var handed *cachestore.Lookup
	origin := caddyhttp.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) error {
		handed = lookupOf(r.Context())
		_, err := rw.Write([]byte("for " + r.Header.Get("X-User")))
		return err
	})
	setUser := ""
	chain := caddyhttp.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) error {
		return rd.ServeHTTP(rw, r, caddyhttp.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) error {
			if setUser != "" {
				r.Header.Set("X-User", setUser)
			}
			return w.ServeHTTP(rw, r, origin)
		}))
	})
	serve := func() string {
		rec := httptest.NewRecorder()
		if err := chain.ServeHTTP(rec, newCaddyRequest("http://api.example.com/p")); err != nil {
			t.Fatal(err)
		}
		return rec.Body.String()
	}
	serve() // stored under the key without X-User
	clock = clock.Add(2 * time.Minute)
	setUser = "alice"
	serve()
	if handed == nil || handed.Stale == nil {
		t.Fatal("setup: cache_read handed no stale entry over")
	}
	setUser = ""
	if body := serve(); body == "for alice" {
		t.Errorf("a caller without X-User got %q", body)
	}
}

// TestRefreshHasItsOwnReplacer: a background refresh runs the handlers
// after cache_read while the client's request is still being logged. What
// they set goes to a replacer of the refresh's own, which reads the
// client's through: the client's placeholders stay the client's.
func TestRefreshHasItsOwnReplacer(t *testing.T) {
	clock := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	now := func() time.Time { return clock }
	c := newTestCache(t, 8<<20)
	w := &CacheWrite{Cache: "test", TTL: caddy.Duration(time.Minute)}
	rd := wire(c, w, now)
	w.policy.StaleWhileRevalidate = time.Hour

	refreshed := make(chan string, 1)
	origin := caddyhttp.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) error {
		repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
		repl.Set("test.upstream", "fetched")
		if _, err := rw.Write([]byte("fresh")); err != nil {
			return err
		}
		if cw, ok := rw.(*cacheWriter); ok && cw.background {
			who, _ := repl.GetString("test.client")
			refreshed <- who
		}
		return nil
	})
	write := caddyhttp.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) error { return w.ServeHTTP(rw, r, origin) })
	serve := func() *caddy.Replacer {
		r := newCaddyRequest("http://api.example.com/s")
		repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
		repl.Set("test.client", "alice")
		if err := rd.ServeHTTP(httptest.NewRecorder(), r, write); err != nil {
			t.Fatal(err)
		}
		return repl
	}

	serve() // stored
	clock = clock.Add(2 * time.Minute)
	repl := serve() // served stale, refreshed in the background
	select {
	case who := <-refreshed:
		if who != "alice" {
			t.Errorf("the refresh read the client's placeholder as %q, want alice", who)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no background refresh")
	}
	if v, ok := repl.Get("test.upstream"); ok {
		t.Errorf("the refresh's placeholder reached the client's replacer: %v", v)
	}
	if s, _ := repl.GetString(placeholderStatus); s != "stale" {
		t.Errorf("the client's {http.cache.status} is %q, want stale", s)
	}
}
