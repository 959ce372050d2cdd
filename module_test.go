package gateway

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-gateway/gateway/internal/httpcache"
)

func newTestCache(t testing.TB, maxSize int64) *namedCache {
	t.Helper()
	c, err := newNamedCache("test", maxSize, maxSize/4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Destruct() })
	return c
}

// storeBody stores a response of size bytes under a path of its own.
func storeBody(c *namedCache, rule *keyRule, kb *httpcache.KeyBuilder, path string, body []byte, tags ...string) *entry {
	r := httptest.NewRequest("GET", path, nil)
	e := &entry{
		key:     slices.Clone(rule.build(kb, r, nil)),
		host:    "example.com",
		path:    r.URL.EscapedPath(),
		tags:    tags,
		status:  200,
		fields:  []field{{"Content-Type", []string{"text/plain"}}},
		body:    body,
		expires: time.Now().Add(time.Hour),
	}
	e.computeCost()
	c.put(c.snapshot(e.path), time.Hour, e, nil)
	return e
}

// TestIndexFollowsEvictions fills a small cache far beyond its bound: the
// index must drop what the store evicts or refuses, and hold nothing the
// store does not.
func TestIndexFollowsEvictions(t *testing.T) {
	c := newTestCache(t, 1<<20)
	rule := newKeyRule(nil, nil, nil)
	var kb httpcache.KeyBuilder
	body := make([]byte, 1024)
	for i := range 5000 {
		storeBody(c, rule, &kb, fmt.Sprintf("/item/%d", i), body, fmt.Sprintf("tag-%d", i%10))
	}
	c.store.Wait()
	if used := c.usedBytes(); used > 1<<20 {
		t.Errorf("cache holds %d bytes, over its bound of %d", used, 1<<20)
	}
	n := c.index.entries()
	if n == 0 || n >= 5000 {
		t.Fatalf("index holds %d entries after 5000 stores into 1MiB", n)
	}
	c.index.mu.Lock()
	var indexed []*entry
	for _, head := range c.index.byPath {
		for e := head; e != nil; e = e.nextPath {
			indexed = append(indexed, e)
		}
	}
	tagged := 0
	for _, set := range c.index.byTag {
		tagged += len(set)
	}
	c.index.mu.Unlock()
	if tagged != len(indexed) {
		t.Errorf("%d entries by path but %d by tag", len(indexed), tagged)
	}
	for _, e := range indexed {
		if got := c.get([]byte(e.key)); got != e {
			t.Fatalf("index holds %s, which the store does not", e.path)
		}
	}
	if c.stats.evicted.Load()+c.stats.rejected.Load() == 0 {
		t.Error("no eviction or rejection counted")
	}
}

// TestFloodStaysBounded stores many unique responses and measures the live
// heap: it must stay within the cache's bound, whatever the flood's size.
// (Live bytes, not the spans that hold them: after heavy churn the Go
// allocator keeps partly empty spans, which the benchmarks measure as RSS.)
func TestFloodStaysBounded(t *testing.T) {
	const maxSize = 8 << 20
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	c := newTestCache(t, maxSize)
	rule := newKeyRule(nil, nil, nil)
	var kb httpcache.KeyBuilder
	for i := range 200_000 {
		storeBody(c, rule, &kb, fmt.Sprintf("/flood/%d?q=%d", i, i), make([]byte, 200+i%300))
	}
	c.store.Wait()
	runtime.GC()
	runtime.ReadMemStats(&after)
	grown := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("heap grew by %d bytes for a cache of %d (used %d, %d entries)", grown, maxSize, c.usedBytes(), c.index.entries())
	if limit := int64(maxSize) * 110 / 100; grown > limit {
		t.Errorf("heap grew by %d bytes, over %d", grown, limit)
	}
}

func TestFlushAndPurgeAreExact(t *testing.T) {
	c := newTestCache(t, 4<<20)
	rule := newKeyRule(nil, nil, nil)
	var kb httpcache.KeyBuilder
	a := storeBody(c, rule, &kb, "/a", []byte("a"), "t1")
	b := storeBody(c, rule, &kb, "/b/1", []byte("b"), "t2")
	if c.get([]byte(a.key)) != a || c.get([]byte(b.key)) != b {
		t.Fatal("stored entries are not found at once")
	}
	if n := c.purge(purgeTarget{tags: []string{"t2"}}); n != 1 || c.get([]byte(b.key)) != nil {
		t.Errorf("purge by tag removed %d", n)
	}
	// A store that started before an invalidation of its path is dropped.
	snap := c.snapshot("/a")
	c.purge(purgeTarget{urls: []purgeURL{{Path: "/a"}}})
	late := &entry{key: a.key, path: "/a", expires: time.Now().Add(time.Hour)}
	late.computeCost()
	if reason := c.put(snap, time.Hour, late, nil); reason != httpcache.ReasonInvalidated {
		t.Errorf("a store older than the purge gave %q", reason)
	}
	if c.get([]byte(a.key)) != nil {
		t.Error("the purged entry is back")
	}
	storeBody(c, rule, &kb, "/c", []byte("c"))
	c.flush()
	if c.index.entries() != 0 || c.get([]byte(a.key)) != nil {
		t.Error("entries remain after a flush")
	}
	if c.stats.evicted.Load() != 0 {
		t.Error("a flush counted evictions")
	}
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
		if target.empty() {
			t.Fatal("accepted a purge that selects nothing")
		}
		for _, p := range target.prefixes {
			if !strings.HasPrefix(p, "/") {
				t.Fatalf("accepted prefix %q", p)
			}
		}
		for _, u := range target.urls {
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
	w.cache, w.rule, w.logger, w.now = c, newKeyRule(nil, nil, nil), zap.NewNop(), time.Now
	w.policy = httpcache.Policy{TTL: time.Hour}
	c.addRule(w.rule)
	rd := &CacheRead{Cache: "test", cache: c, nameVal: "test", logger: zap.NewNop(), now: time.Now}
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
	if hits, stored := c.stats.requestsOf(resultHit), c.stats.stored(); hits != 2 || stored != 1 {
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

// TestConcurrentUse runs hits, stores, purges and flushes at once; under
// the race detector it checks the locking, and afterwards the index and the
// store must still agree.
func TestConcurrentUse(t *testing.T) {
	chain, c := hitChain(t, []byte("body"))
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
			c.purge(purgeTarget{urls: []purgeURL{{Path: fmt.Sprintf("/p/%d", i%50)}}})
		case 1:
			c.purge(purgeTarget{prefixes: []string{"/p/1"}})
		default:
			c.flush()
		}
	}
	close(done)
	wg.Wait()
	c.store.Wait()
	c.index.mu.Lock()
	defer c.index.mu.Unlock()
	n := 0
	for _, head := range c.index.byPath {
		for e := head; e != nil; e = e.nextPath {
			n++
			if got, _ := c.store.Get([]byte(e.key)); got != e {
				t.Fatalf("index holds %s, which the store does not", e.path)
			}
		}
	}
	if n != c.index.count {
		t.Errorf("index lists %d entries but counts %d", n, c.index.count)
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

// TestStoredFields keeps the response's own fields, without those of one
// connection, Content-Length, and the fields outer handlers set that no
// inner handler replaced; the upstream's Cache-Status comes apart.
func TestStoredFields(t *testing.T) {
	h := http.Header{"X-Outer": {"request's"}, "X-Replaced": {"old"}}
	outer := outerFields(nil, h)
	h["X-Replaced"] = []string{"new"}
	h["Content-Type"] = []string{"application/json"}
	h["Vary"] = []string{"Accept", "Accept-Language"}
	h["Cache-Status"] = []string{"origin; hit"}
	for _, name := range []string{"Connection", "Keep-Alive", "Transfer-Encoding", "Content-Length", "Trailer", "Upgrade"} {
		h[name] = []string{"x"}
	}
	fields, cacheStatus := storedFields(h, outer)
	got := map[string][]string{}
	for _, f := range fields {
		got[f.name] = f.values
	}
	want := map[string][]string{
		"X-Replaced":   {"new"},
		"Content-Type": {"application/json"},
		"Vary":         {"Accept", "Accept-Language"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("stored %v, want %v", got, want)
	}
	if len(cacheStatus) != 1 || cacheStatus[0] != "origin; hit" {
		t.Errorf("Cache-Status %q", cacheStatus)
	}
	// A handler that appends to a stored value on a hit must copy it, not
	// write into the field next to it in the shared block.
	for _, f := range append(fields, field{"Cache-Status", cacheStatus}) {
		if cap(f.values) != len(f.values) {
			t.Errorf("%s has room to grow in place", f.name)
		}
	}
	// The stored values are copies: a later change to the live header
	// leaves them as they were.
	h["Content-Type"][0] = "text/html"
	if got["Content-Type"][0] != "application/json" {
		t.Errorf("the stored Content-Type followed the live header")
	}
}
