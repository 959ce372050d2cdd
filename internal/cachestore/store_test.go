package cachestore

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-gateway/gateway/internal/httpcache"
)

// now is the explicit time of every test here.
var now = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

func newTestStore(t testing.TB, maxSize int64) *Store {
	t.Helper()
	s, err := New(Config{Name: "test", MaxSize: maxSize, MaxEntrySize: maxSize / 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// noPlaceholders expands nothing: the rules of these tests have none.
type noPlaceholders struct{}

func (noPlaceholders) ReplaceAll(s, _ string) string { return s }

// put stores a response with body under the target's primary key, fresh
// for an hour from now.
func put(t testing.TB, s *Store, rule *KeyRule, target string, body []byte, tags ...string) *Entry {
	t.Helper()
	r := httptest.NewRequest("GET", target, nil)
	var kb httpcache.KeyBuilder
	e := &Entry{
		Key:     slices.Clone(rule.Build(&kb, r, noPlaceholders{}, nil)),
		Host:    "example.com",
		Path:    r.URL.EscapedPath(),
		Tags:    tags,
		Status:  200,
		Fields:  []Field{{"Content-Type", []string{"text/plain"}}},
		Body:    body,
		Expires: now.Add(time.Hour),
	}
	s.Put(s.Snapshot(e.Path), time.Hour, e, nil)
	return e
}

// checkIndex fails unless the index and the store agree: every indexed
// entry is the one the store holds under its key, by path as by tag.
func checkIndex(t testing.TB, s *Store) {
	t.Helper()
	s.store.Wait()
	s.index.mu.Lock()
	defer s.index.mu.Unlock()
	var indexed []*Entry
	for _, head := range s.index.byPath {
		for e := head; e != nil; e = e.nextPath {
			indexed = append(indexed, e)
		}
	}
	if len(indexed) != s.index.count {
		t.Errorf("index lists %d entries but counts %d", len(indexed), s.index.count)
	}
	for _, e := range indexed {
		if got, _ := s.store.Get(e.Key); got != e {
			t.Fatalf("index holds %s, which the store does not", e.Path)
		}
	}
	for tag, set := range s.index.byTag {
		for e := range set {
			if !slices.Contains(e.Tags, tag) || !e.indexed {
				t.Fatalf("tag %s lists an entry it should not", tag)
			}
		}
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		cfg  Config
		want string
	}{
		{Config{Name: "a", MaxSize: MinMaxSize, MaxEntrySize: MinMaxSize / 2}, ""},
		{Config{Name: "a", MaxSize: MinMaxSize - 1, MaxEntrySize: 1}, "max_size 1048575 is below the minimum of 1MiB"},
		{Config{Name: "a", MaxSize: 4 << 20, MaxEntrySize: 0}, "max_entry_size must be positive"},
		{Config{Name: "a", MaxSize: 4 << 20, MaxEntrySize: 2<<20 + 1}, "exceeds half of max_size"},
	}
	for _, tt := range tests {
		err := tt.cfg.Validate()
		if (err == nil) != (tt.want == "") || (err != nil && !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%+v: got %v, want %q", tt.cfg, err, tt.want)
		}
		if _, err := New(tt.cfg); (err == nil) != (tt.want == "") {
			t.Errorf("New(%+v) gave %v, unlike Validate", tt.cfg, err)
		}
	}
	if _, err := New(Config{MaxSize: 4 << 20, MaxEntrySize: 1 << 20}); err == nil {
		t.Error("New accepted a store without a name")
	}
}

func TestPutGetPurgeFlush(t *testing.T) {
	s := newTestStore(t, 4<<20)
	rule := NewKeyRule(httpcache.KeyOptions{})
	a := put(t, s, rule, "/a", []byte("a"), "t1")
	b := put(t, s, rule, "/b/1", []byte("b"), "t2")
	c := put(t, s, rule, "/c/2", []byte("c"), "t2")
	d := put(t, s, rule, "http://other.example/d", []byte("d"))
	for _, e := range []*Entry{a, b, c, d} {
		if s.Get(e.Key) != e {
			t.Fatalf("%s is not found at once", e.Path)
		}
	}
	if st := s.Stats(); st.Entries != 4 || st.UsedBytes <= 0 || st.MaxSize != 4<<20 {
		t.Errorf("stats %+v", st)
	}
	if n := s.Purge(Target{Tags: []string{"t2"}}); n != 2 || s.Get(b.Key) != nil || s.Get(c.Key) != nil {
		t.Errorf("purge by tag removed %d", n)
	}
	if n := s.Purge(Target{URLs: []URL{{Host: "elsewhere.example", Path: "/a"}}}); n != 0 || s.Get(a.Key) != a {
		t.Errorf("a purge on another host removed %d", n)
	}
	if n := s.Purge(Target{URLs: []URL{{Path: "/a"}}}); n != 1 || s.Get(a.Key) != nil {
		t.Errorf("purge by URL on any host removed %d", n)
	}
	e := put(t, s, rule, "/p/x", []byte("x"))
	if n := s.Purge(Target{Prefixes: []string{"/p/"}}); n != 1 || s.Get(e.Key) != nil || s.Get(d.Key) != d {
		t.Errorf("purge by prefix removed %d", n)
	}
	s.Flush()
	if s.Stats().Entries != 0 || s.Get(d.Key) != nil {
		t.Error("entries remain after a flush")
	}
	if s.Stats().Evicted != 0 {
		t.Error("purges and a flush counted evictions")
	}
	checkIndex(t, s)
}

// TestEpochsDropLateStores: a store whose snapshot was taken before an
// invalidation of its path, or of the whole store, is dropped; one whose
// only neighbours in its invalidation slot were invalidated is not, unless
// the slot saw more invalidations than it remembers.
func TestEpochsDropLateStores(t *testing.T) {
	s := newTestStore(t, 4<<20)
	late := func(path string) *Entry {
		return &Entry{Key: []byte("k" + path), Path: path, Expires: now.Add(time.Hour)}
	}
	purge := func(paths ...string) func() {
		return func() {
			for _, p := range paths {
				s.Purge(Target{URLs: []URL{{Path: p}}})
			}
		}
	}
	nb := neighbours("/f", slotLogSize+1)
	for _, tt := range []struct {
		name       string
		invalidate func()
		path       string
		want       httpcache.Outcome
	}{
		{"same path", func() { s.Purge(Target{URLs: []URL{{Path: "/a"}}}) }, "/a", httpcache.ReasonInvalidated},
		{"prefix", func() { s.Purge(Target{Prefixes: []string{"/zzz"}}) }, "/b", httpcache.ReasonInvalidated},
		{"tag", func() { s.Purge(Target{Tags: []string{"none"}}) }, "/c", httpcache.ReasonInvalidated},
		{"flush", s.Flush, "/d", httpcache.ReasonInvalidated},
		{"nothing", func() {}, "/e", httpcache.Stored},
		{"a neighbour in its slot", purge(nb[0]), "/f", httpcache.Stored},
		{"as many neighbours as the slot remembers", purge(nb[:slotLogSize]...), "/f", httpcache.Stored},
		{"itself among neighbours", purge(nb[0], "/f", nb[1]), "/f", httpcache.ReasonInvalidated},
		{"more neighbours than the slot remembers", purge(nb...), "/f", httpcache.ReasonInvalidated},
	} {
		snap := s.Snapshot(tt.path)
		tt.invalidate()
		e := late(tt.path)
		if got := s.Put(snap, time.Hour, e, nil); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
		if found := s.Get(e.Key) != nil; found != (tt.want == httpcache.Stored) {
			t.Errorf("%s: found %v after %v", tt.name, found, tt.want)
		}
	}
	if st := s.Stats(); st.Outcomes[httpcache.ReasonInvalidated] != 6 || st.Outcomes[httpcache.Stored] != 3 {
		t.Errorf("Put counted %d invalidated and %d stored, want 6 and 3",
			st.Outcomes[httpcache.ReasonInvalidated], st.Outcomes[httpcache.Stored])
	}
}

// neighbours returns n paths other than path in its invalidation slot.
func neighbours(path string, n int) []string {
	var out []string
	for i := 0; len(out) < n; i++ {
		if p := fmt.Sprint("/n/", i); pathSlot(p) == pathSlot(path) {
			out = append(out, p)
		}
	}
	return out
}

// Put does not wait for the store to take an entry, yet a Get right after
// it, from the same goroutine or after a hand-off to another, finds it.
func TestPutIsReadYourWrites(t *testing.T) {
	now := time.Now()
	s := newTestStore(t, 64<<20)
	const workers, each = 4, 3000
	var wg sync.WaitGroup
	var lost atomic.Int64
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				e := &Entry{Key: fmt.Appendf(nil, "k/%d/%d", w, i), Path: "/p", Body: make([]byte, 512), Expires: now.Add(time.Hour)}
				if s.Put(s.Snapshot("/p"), time.Hour, e, nil) != httpcache.Stored {
					continue
				}
				found := make(chan *Entry)
				go func() { found <- s.Get(e.Key) }()
				if <-found != e {
					lost.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if n := lost.Load(); n > 0 {
		t.Errorf("%d of %d entries were not found right after Put", n, workers*each)
	}
}

// Every Put counts one final outcome, also when the admission policy
// refuses the entry after Put returned: stored plus refused is what was
// offered. Ristretto refuses outright an entry that costs more than the
// whole store, which the handlers never offer; every tenth entry here
// does, so that refusals come whatever the policy's counts (the race
// detector loses most of them).
func TestOutcomesAreCountedOnce(t *testing.T) {
	now := time.Now()
	s := newTestStore(t, 1<<20)
	small, huge := make([]byte, 1024), make([]byte, 3<<19)
	const offered = 3000
	for i := range offered {
		body := small
		if i%10 == 0 {
			body = huge
		}
		e := &Entry{Key: fmt.Append(nil, "k/", i), Path: "/p", Body: body, Expires: now.Add(time.Hour)}
		if got := s.Put(s.Snapshot("/p"), time.Hour, e, nil); got != httpcache.Stored {
			t.Fatalf("Put %d: %v", i, got)
		}
	}
	st := s.Stats()
	stored, refused := st.Outcomes[httpcache.Stored], st.Outcomes[httpcache.ReasonRefused]
	t.Logf("stored %d, refused %d (by the policy %d), evicted %d", stored, refused, st.Rejected, st.Evicted)
	if stored+refused != offered {
		t.Errorf("stored %d + refused %d = %d, want the %d offered", stored, refused, stored+refused, offered)
	}
	if refused < offered/10 {
		t.Errorf("refused %d, want at least the %d entries larger than the store", refused, offered/10)
	}
}

// TestEpochsRaceStores runs stores against flushes and purges: whatever
// the interleaving, nothing whose snapshot predates the last invalidation
// survives it, and the index agrees with the store.
func TestEpochsRaceStores(t *testing.T) {
	s := newTestStore(t, 8<<20)
	rule := NewKeyRule(httpcache.KeyOptions{})
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				put(t, s, rule, fmt.Sprintf("/r/%d/%d", g, i%64), []byte("x"), "t")
			}
		})
	}
	for i := range 300 {
		switch i % 3 {
		case 0:
			s.Purge(Target{URLs: []URL{{Path: fmt.Sprintf("/r/0/%d", i%64)}}})
		case 1:
			s.Purge(Target{Tags: []string{"t"}})
		default:
			s.Flush()
		}
	}
	close(stop)
	wg.Wait()
	checkIndex(t, s)
	snap := s.Snapshot("/r/0/1")
	s.Flush()
	if s.Stats().Entries != 0 {
		t.Errorf("%d entries after the last flush", s.Stats().Entries)
	}
	if s.Put(snap, time.Hour, &Entry{Key: []byte("late"), Path: "/r/0/1"}, nil) != httpcache.ReasonInvalidated {
		t.Error("a store from before the last flush was kept")
	}
}

// TestIndexFollowsEvictions fills a small store far beyond its bound: the
// index must drop what the store evicts or refuses, and hold nothing the
// store does not.
func TestIndexFollowsEvictions(t *testing.T) {
	s := newTestStore(t, 1<<20)
	rule := NewKeyRule(httpcache.KeyOptions{})
	body := make([]byte, 1024)
	for i := range 5000 {
		put(t, s, rule, fmt.Sprintf("/item/%d", i), body, fmt.Sprintf("tag-%d", i%10))
	}
	s.store.Wait()
	st := s.Stats()
	if st.UsedBytes > 1<<20 {
		t.Errorf("store holds %d bytes, over its bound of %d", st.UsedBytes, 1<<20)
	}
	if st.Entries == 0 || st.Entries >= 5000 {
		t.Fatalf("index holds %d entries after 5000 stores into 1MiB", st.Entries)
	}
	checkIndex(t, s)
	if st.Evicted+st.Rejected == 0 {
		t.Error("no eviction or rejection counted")
	}
}

// TestFloodStaysBounded stores many unique responses and measures the live
// heap: it must stay within the store's bound, whatever the flood's size.
// (Live bytes, not the spans that hold them: after heavy churn the Go
// allocator keeps partly empty spans, which the benchmarks measure as RSS.)
func TestFloodStaysBounded(t *testing.T) {
	const maxSize = 8 << 20
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	s := newTestStore(t, maxSize)
	rule := NewKeyRule(httpcache.KeyOptions{})
	for i := range 200_000 {
		put(t, s, rule, fmt.Sprintf("/flood/%d?q=%d", i, i), make([]byte, 200+i%300))
	}
	s.store.Wait()
	runtime.GC()
	runtime.ReadMemStats(&after)
	grown := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	st := s.Stats()
	t.Logf("heap grew by %d bytes for a store of %d (used %d, %d entries)", grown, maxSize, st.UsedBytes, st.Entries)
	if limit := int64(maxSize) * 110 / 100; grown > limit {
		t.Errorf("heap grew by %d bytes, over %d", grown, limit)
	}
}

// TestFind looks up fresh, stale, varied and missing entries under the
// rules of two writers, at explicit times.
func TestFind(t *testing.T) {
	s := newTestStore(t, 4<<20)
	all := NewKeyRule(httpcache.KeyOptions{})
	pageOnly := NewKeyRule(httpcache.KeyOptions{Query: []string{"page"}})
	s.AddRule(all)
	s.AddRule(pageOnly)
	s.AddRule(NewKeyRule(httpcache.KeyOptions{})) // a second writer with an equal rule
	if n := len(s.Rules()); n != 2 {
		t.Fatalf("%d rules, want 2", n)
	}
	fresh := put(t, s, pageOnly, "/f?page=1", []byte("f"))
	stale := put(t, s, all, "/s", []byte("s"))

	if e, _ := s.Find(httptest.NewRequest("GET", "/f?page=1&utm=x", nil), noPlaceholders{}, Want{Now: now, MaxAge: -1}); e != fresh {
		t.Error("a fresh entry stored under the second rule is not found")
	}
	e, l := s.Find(httptest.NewRequest("GET", "/s", nil), noPlaceholders{}, Want{Now: now.Add(2 * time.Hour), MaxAge: -1})
	if e != nil || l.Result != Stale || l.Stale != stale || l.Rule != all || string(l.Primary) != string(stale.Key) {
		t.Errorf("stale lookup: %v %+v", e, l)
	}
	if l.Snapshot != s.Snapshot("/s") || l.Path != "/s" || l.Store != s {
		t.Errorf("the lookup does not carry its snapshot and request: %+v", l)
	}
	e, l = s.Find(httptest.NewRequest("GET", "/none", nil), noPlaceholders{}, Want{Now: now, MaxAge: -1})
	if e != nil || l.Result != Miss || l.Stale != nil || l.Rule != nil || l.Primary != nil || l.Path != "" {
		t.Errorf("miss: %v %+v", e, l)
	}

	// A Vary marker leads to the variant of the request's header values.
	r := httptest.NewRequest("GET", "/v", nil)
	r.Header.Set("Accept", "text/html")
	var kb httpcache.KeyBuilder
	primary := slices.Clone(all.Build(&kb, r, noPlaceholders{}, nil))
	variant := &Entry{Key: slices.Clone(all.Build(&kb, r, noPlaceholders{}, []string{"Accept"})), Path: "/v", Expires: now.Add(time.Hour)}
	marker := &Entry{Key: primary, Path: "/v", Vary: []string{"Accept"}, Expires: now.Add(time.Hour)}
	if got := s.Put(s.Snapshot("/v"), time.Hour, variant, marker); got != httpcache.Stored {
		t.Fatalf("variant: %v", got)
	}
	if e, _ := s.Find(r, noPlaceholders{}, Want{Now: now, MaxAge: -1}); e != variant {
		t.Error("the variant is not found through its marker")
	}
	r.Header.Set("Accept", "application/json")
	if e, l := s.Find(r, noPlaceholders{}, Want{Now: now, MaxAge: -1}); e != nil || l.Result != Miss {
		t.Error("another Accept found the variant")
	}
	if n := s.Purge(Target{URLs: []URL{{Path: "/v"}}}); n != 1 {
		t.Errorf("purging a varied resource counted %d responses", n)
	}
}

func TestFindAllocatesNothingOnAHitOrAMiss(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts under the race detector")
	}
	s := newTestStore(t, 4<<20)
	rule := NewKeyRule(httpcache.KeyOptions{Query: []string{"page"}, Headers: []string{"Accept"}})
	s.AddRule(rule)
	put(t, s, rule, "/f?page=1", []byte("f"))
	r := httptest.NewRequest("GET", "/f?page=1", nil)
	allocs := testing.AllocsPerRun(100, func() {
		if e, _ := s.Find(r, noPlaceholders{}, Want{Now: now, MaxAge: -1}); e == nil {
			t.Fatal("no hit")
		}
	})
	if allocs != 0 {
		t.Errorf("a hit allocates %v times", allocs)
	}
	miss := httptest.NewRequest("GET", "/f?page=2", nil)
	allocs = testing.AllocsPerRun(100, func() {
		if e, _ := s.Find(miss, noPlaceholders{}, Want{Now: now, MaxAge: -1}); e != nil {
			t.Fatal("a hit")
		}
	})
	if allocs != 0 {
		t.Errorf("a miss allocates %v times", allocs)
	}
}

// TestKeepOuter puts a header back to what outer handlers set, whatever
// inner handlers did since: added to a field, replaced one, deleted one,
// or set their own.
func TestKeepOuter(t *testing.T) {
	h := http.Header{"X-Added": {"outer"}, "X-Replaced": {"outer"}, "X-Deleted": {"outer"}}
	h["X-Added"] = append(make([]string, 0, 4), "outer") // room to add in place
	outer := OuterFields(nil, h)
	h.Add("X-Added", "inner")
	h.Set("X-Replaced", "inner")
	h.Del("X-Deleted")
	h.Set("X-Inner", "inner")
	KeepOuter(h, outer)
	want := http.Header{"X-Added": {"outer"}, "X-Replaced": {"outer"}, "X-Deleted": {"outer"}}
	if fmt.Sprint(h) != fmt.Sprint(want) {
		t.Errorf("kept %v, want %v", h, want)
	}
	h.Add("X-Added", "again")
	KeepOuter(h, outer)
	if got := h["X-Added"]; len(got) != 1 || got[0] != "outer" {
		t.Errorf("a field added to after it was kept: %q", got)
	}
}

// TestStoredFields keeps the response's own fields, without those of one
// connection, Content-Length, and the fields outer handlers set that no
// inner handler replaced; the upstream's Cache-Status comes apart.
func TestStoredFields(t *testing.T) {
	h := http.Header{"X-Outer": {"request's"}, "X-Replaced": {"old"}}
	outer := OuterFields(nil, h)
	h["X-Replaced"] = []string{"new"}
	h["Content-Type"] = []string{"application/json"}
	h["Vary"] = []string{"Accept", "Accept-Language"}
	h["Cache-Status"] = []string{"origin; hit"}
	for _, name := range []string{"Connection", "Keep-Alive", "Transfer-Encoding", "Content-Length", "Trailer", "Upgrade"} {
		h[name] = []string{"x"}
	}
	fields, cacheStatus := StoredFields(h, outer, nil)
	got := map[string][]string{}
	for _, f := range fields {
		got[f.Name] = f.Values
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
	for _, f := range append(fields, Field{"Cache-Status", cacheStatus}) {
		if cap(f.Values) != len(f.Values) {
			t.Errorf("%s has room to grow in place", f.Name)
		}
	}
	// The stored values are copies: a later change to the live header
	// leaves them as they were.
	h["Content-Type"][0] = "text/html"
	if got["Content-Type"][0] != "application/json" {
		t.Errorf("the stored Content-Type followed the live header")
	}
}

func TestTagsAreBounded(t *testing.T) {
	h := http.Header{}
	h.Add("Surrogate-Key", "a b,c")
	h.Add("Surrogate-Key", strings.Repeat("x", MaxTagLen+1)+" d")
	h.Add("X-Tags", strings.Repeat("t ", 2*MaxTagsPerEntry))
	got := Tags(h, []string{"Surrogate-Key", "X-Tags"})
	if len(got) != MaxTagsPerEntry || !slices.Equal(got[:4], []string{"a", "b", "c", "d"}) {
		t.Errorf("tags %q (%d)", got[:min(len(got), 5)], len(got))
	}
}

func TestResultNames(t *testing.T) {
	want := []string{"hit", "miss", "stale", "bypass", "revalidated"}
	for r := range Result(NumResults) {
		if r.String() != want[r] {
			t.Errorf("result %d is %q", r, r.String())
		}
	}
	if Result(NumResults).String() != "result(5)" {
		t.Error("an unknown result has a known name")
	}
}

// TestVariantsAreBoundedPerResource stores more variants of one resource
// than MaxVariants: the oldest are dropped, the newest kept, and the
// normalised forms of one header value find one variant.
func TestVariantsAreBoundedPerResource(t *testing.T) {
	s := newTestStore(t, 64<<20)
	rule := NewKeyRule(httpcache.KeyOptions{})
	s.AddRule(rule)
	var kb httpcache.KeyBuilder
	put := func(lang string) *Entry {
		r := httptest.NewRequest("GET", "/many", nil)
		r.Header.Set("Accept-Language", lang)
		primary := slices.Clone(rule.Build(&kb, r, noPlaceholders{}, nil))
		v := &Entry{Key: slices.Clone(rule.Build(&kb, r, noPlaceholders{}, []string{"Accept-Language"})), Path: "/many", Expires: now.Add(time.Hour)}
		m := &Entry{Key: primary, Path: "/many", Vary: []string{"Accept-Language"}, Expires: now.Add(time.Hour)}
		if got := s.Put(s.Snapshot("/many"), time.Hour, v, m); got != httpcache.Stored {
			t.Fatalf("%s: %v", lang, got)
		}
		return v
	}
	find := func(lines ...string) *Entry {
		r := httptest.NewRequest("GET", "/many", nil)
		for _, l := range lines {
			r.Header.Add("Accept-Language", l)
		}
		e, _ := s.Find(r, noPlaceholders{}, Want{Now: now, MaxAge: -1})
		return e
	}
	for i := range MaxVariants + 5 {
		put(fmt.Sprintf("x-%d", i))
	}
	if find("x-0") != nil || find("x-4") != nil {
		t.Error("the oldest variants were kept past the bound")
	}
	if find("x-5") == nil || find(fmt.Sprintf("x-%d", MaxVariants+4)) == nil {
		t.Error("the newest variants were dropped")
	}
	v := put("en, DE")
	for _, lines := range [][]string{{"en,de"}, {" en ,  de "}, {"EN", "de"}, {"en", "", "De"}} {
		if find(lines...) != v {
			t.Errorf("%q does not find the variant stored for \"en, DE\"", lines)
		}
	}
	if find("de, en") == v || find("en") == v {
		t.Error("another language list found the variant")
	}
}

// TestReplacementsStayWithinMaxSize: storing a response again under a key
// the store holds (a validation, a background refresh, a new 200 for a
// stale entry) must admit and evict as a new entry does. Ristretto takes
// it as an update, which only changes the key's cost: a set of keys whose
// responses grew then held far more than max_size.
func TestReplacementsStayWithinMaxSize(t *testing.T) {
	const maxSize = 1 << 20
	s := newTestStore(t, maxSize)
	rule := NewKeyRule(httpcache.KeyOptions{})
	const keys = 200
	var small, large []*Entry
	for i := range keys {
		small = append(small, put(t, s, rule, fmt.Sprintf("/k%d", i), make([]byte, 100)))
	}
	s.settle()
	for i := range keys {
		large = append(large, put(t, s, rule, fmt.Sprintf("/k%d", i), make([]byte, 200<<10)))
	}
	s.settle()
	held := 0
	for i := range keys {
		switch s.Get(small[i].Key) {
		case large[i]:
			held += len(large[i].Body)
		case small[i]:
			t.Errorf("/k%d: the small entry outlived its replacement", i)
		}
	}
	if held > maxSize {
		t.Errorf("the store holds %d KiB of bodies, over its max_size of %d KiB", held>>10, maxSize>>10)
	}
	if st := s.Stats(); st.UsedBytes > st.MaxSize {
		t.Errorf("UsedBytes %d over MaxSize %d", st.UsedBytes, st.MaxSize)
	}
	checkIndex(t, s)
}

// TestCheckNamePrintableASCII: Cache-Status names a cache by a Structured
// Field token or string, which hold printable ASCII only.
func TestCheckNamePrintableASCII(t *testing.T) {
	if CheckName("caché") == nil || CheckName("a\tb") == nil {
		t.Error("a name that Cache-Status cannot carry was accepted")
	}
	if err := CheckName("api v2"); err != nil {
		t.Errorf("api v2: %v", err)
	}
}

// TestReplacingAnExpiredEntryStaysWithinMaxSize: ristretto holds an
// expired key until its cleanup runs, seconds later, and no lookup
// reports it; a response stored again under it must still be admitted
// and evict as a new entry, not taken as an update of the key's cost.
func TestReplacingAnExpiredEntryStaysWithinMaxSize(t *testing.T) {
	const maxSize = 1 << 20
	s := newTestStore(t, maxSize)
	rule := NewKeyRule(httpcache.KeyOptions{})
	putKeep := func(i int, body []byte, keep time.Duration) *Entry {
		r := httptest.NewRequest("GET", fmt.Sprintf("/k%d", i), nil)
		var kb httpcache.KeyBuilder
		e := &Entry{Key: slices.Clone(rule.Build(&kb, r, noPlaceholders{}, nil)),
			Host: "example.com", Path: r.URL.EscapedPath(), Status: 200, Body: body, Expires: now.Add(time.Hour)}
		s.Put(s.Snapshot(e.Path), keep, e, nil)
		return e
	}
	for i := range 200 {
		putKeep(i, make([]byte, 100), 0) // held a second
	}
	s.settle()
	time.Sleep(1100 * time.Millisecond) // expired, not yet cleaned up
	var large []*Entry
	for i := range 200 {
		large = append(large, putKeep(i, make([]byte, 200<<10), time.Hour))
	}
	s.settle()
	held := 0
	for _, e := range large {
		if s.Get(e.Key) == e {
			held += len(e.Body)
		}
	}
	if st := s.Stats(); held > maxSize || st.UsedBytes > st.MaxSize {
		t.Errorf("a 1 MiB store holds %d KiB of bodies, UsedBytes %d KiB", held>>10, st.UsedBytes>>10)
	}
}

// TestReplacedKeyIsFound: a key stored again and again, without pause, is
// never missed by a Get, although each store deletes it before it sets it.
func TestReplacedKeyIsFound(t *testing.T) {
	s := newTestStore(t, 16<<20)
	rule := NewKeyRule(httpcache.KeyOptions{})
	first := put(t, s, rule, "/hot", make([]byte, 100))
	s.settle()
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			put(t, s, rule, "/hot", make([]byte, 100+i%50))
			put(t, s, rule, fmt.Sprintf("/other%d", i%1000), make([]byte, 100))
		}
	}()
	misses, gets := 0, 0
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); gets++ {
		if s.Get(first.Key) == nil {
			misses++
		}
	}
	close(stop)
	<-done
	if misses > 0 {
		t.Errorf("%d of %d Gets missed a key that was always stored", misses, gets)
	}
}
