package gateway_test

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const productsSite = `
	cache_read products
	cache_write products {
		ttl 60s
	}
	reverse_proxy {upstream}
`

func TestMissThenHit(t *testing.T) {
	up := newUpstream(t, serial("Cache-Control", "max-age=5"))
	g := startGateway(t, "", productsSite, up.addr())

	first := g.get("/products")
	if first.status != 200 || first.cacheStatus() != "products; fwd=uri-miss; fwd-status=200; stored" {
		t.Fatalf("first: %d %q", first.status, first.cacheStatus())
	}
	second := g.get("/products")
	if !second.isHit() || second.body != first.body {
		t.Fatalf("second: %q %q, want a hit with %q", second.cacheStatus(), second.body, first.body)
	}
	// Bounds leave a loaded machine a few seconds between the requests.
	if !regexp.MustCompile(`^products; hit; ttl=(5[5-9]|60)$`).MatchString(second.cacheStatus()) {
		t.Errorf("Cache-Status %q, want the operator ttl of 60s left", second.cacheStatus())
	}
	if age, err := strconv.Atoi(second.header.Get("Age")); err != nil || age < 0 || age > 5 {
		t.Errorf("Age %q, want the few seconds since the miss", second.header.Get("Age"))
	}
	if second.header.Get("Content-Type") != "application/json" || second.header.Get("Content-Length") != strconv.Itoa(len(first.body)) {
		t.Errorf("hit headers %v", second.header)
	}
	if n := up.count("/products"); n != 1 {
		t.Errorf("upstream saw %d requests, want 1", n)
	}
}

func TestResourcesAreDistinct(t *testing.T) {
	up := newUpstream(t, serial())
	g := startGateway(t, "", productsSite, up.addr())
	paths := []string{"/products", "/products/123", "/products/456"}
	bodies := map[string]string{}
	for _, p := range paths {
		r := g.get(p)
		if r.isHit() {
			t.Fatalf("%s: first request is a hit", p)
		}
		bodies[p] = r.body
	}
	for _, p := range paths {
		r := g.get(p)
		if !r.isHit() || r.body != bodies[p] {
			t.Errorf("%s: %q %q, want a hit with %q", p, r.cacheStatus(), r.body, bodies[p])
		}
		if up.count(p) != 1 {
			t.Errorf("%s reached the upstream %d times", p, up.count(p))
		}
	}
}

func TestKeyQueryAndHeaders(t *testing.T) {
	up := newUpstream(t, serial())
	// Caddy drops request headers with underscores unless told to keep them.
	g := startGateway(t, `
	servers {
		expected_underscore_headers client_id
	}`, `
	cache_read products
	cache_write products {
		ttl 60s
		key_query orderBy page
		key_headers client_id
	}
	reverse_proxy {upstream}
`, up.addr())

	steps := []struct {
		path    string
		headers []string
		hit     bool
	}{
		{"/p?orderBy=date", nil, false},
		{"/p?orderBy=price", nil, false},
		{"/p?orderBy=date", nil, true},
		{"/p?orderBy=date&utm_source=x", nil, true},
		{"/p?utm_source=y&orderBy=price", nil, true},
		{"/p?orderBy=date&page=2", nil, false},
		{"/p?page=2&orderBy=date", nil, true},
		{"/p?orderBy=date", []string{"client_id: a"}, false},
		{"/p?orderBy=date", []string{"client_id: b"}, false},
		{"/p?orderBy=date", []string{"client_id: a"}, true},
		{"/p?orderBy=date", []string{"client_id:"}, false},
		{"/p?orderBy=date", []string{"client_id:"}, true},
	}
	for i, s := range steps {
		r := g.get(s.path, s.headers...)
		if r.isHit() != s.hit {
			t.Errorf("step %d %s %v: Cache-Status %q, want hit=%v", i, s.path, s.headers, r.cacheStatus(), s.hit)
		}
	}
}

func TestVaryIsHonoured(t *testing.T) {
	up := newUpstream(t, serial("Vary", "Accept"))
	g := startGateway(t, "", productsSite, up.addr())
	if r := g.get("/v", "Accept: application/json"); r.isHit() {
		t.Fatal("first request is a hit")
	}
	if r := g.get("/v", "Accept: text/csv"); r.isHit() {
		t.Error("a different Accept was served the stored variant")
	}
	if r := g.get("/v", "Accept: application/json"); !r.isHit() {
		t.Errorf("the same Accept missed: %q", r.cacheStatus())
	}
	if r := g.get("/v"); r.isHit() {
		t.Error("a request without Accept was served a variant")
	}
}

func TestTTLExpiry(t *testing.T) {
	up := newUpstream(t, serial())
	g := startGateway(t, "", `
	cache_read products
	cache_write products {
		ttl 1s
	}
	reverse_proxy {upstream}
`, up.addr())
	g.get("/t")
	if r := g.get("/t"); !r.isHit() {
		t.Fatalf("second request missed: %q", r.cacheStatus())
	}
	time.Sleep(1100 * time.Millisecond)
	r := g.get("/t")
	if r.isHit() || !strings.Contains(r.cacheStatus(), "fwd=stale") {
		t.Errorf("after the ttl: %q, want a stale miss", r.cacheStatus())
	}
	if up.count("/t") != 2 {
		t.Errorf("upstream saw %d requests, want 2", up.count("/t"))
	}
}

func TestUnsafeResponsesAreNotStored(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/cookie":
			w.Header().Set("Set-Cookie", "session=secret")
		case "/private":
			w.Header().Set("Cache-Control", "private, max-age=60")
		case "/no-store":
			w.Header().Set("Cache-Control", "no-store")
		case "/public":
			w.Header().Set("Cache-Control", "public")
		case "/error":
			w.WriteHeader(http.StatusInternalServerError)
		}
		fmt.Fprintf(w, "user data for %s", r.Header.Get("Authorization"))
	})
	g := startGateway(t, "", productsSite, up.addr())
	tests := []struct {
		path    string
		headers []string
		status  int
		detail  string
	}{
		{"/cookie", nil, 200, "SET-COOKIE"},
		{"/private", nil, 200, "PRIVATE"},
		{"/no-store", nil, 200, "NO-STORE"},
		{"/request-no-store", []string{"Cache-Control: no-store"}, 200, "NO-STORE"},
		{"/auth", []string{"Authorization: Bearer alice"}, 200, "AUTHORIZATION"},
		{"/error", nil, 500, "STATUS"},
	}
	for _, tt := range tests {
		for i := range 2 {
			r := g.get(tt.path, tt.headers...)
			want := fmt.Sprintf("products; fwd=uri-miss; fwd-status=%d; detail=%s", tt.status, tt.detail)
			if r.cacheStatus() != want {
				t.Errorf("%s request %d: Cache-Status %q, want %q", tt.path, i+1, r.cacheStatus(), want)
			}
		}
		if n := up.count(tt.path); n != 2 {
			t.Errorf("%s reached the upstream %d times, want 2", tt.path, n)
		}
	}
	// A response that says public may be shared even for an authorized request.
	g.get("/public", "Authorization: Bearer alice")
	if r := g.get("/public"); !r.isHit() {
		t.Errorf("public response to an authorized request: %q, want a hit", r.cacheStatus())
	}
}

func TestIdentityInKeyAllowsAuthorized(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "data of %s", r.Header.Get("Authorization"))
	})
	g := startGateway(t, "", `
	cache_read products
	cache_write products {
		ttl 60s
		key_headers Authorization
	}
	reverse_proxy {upstream}
`, up.addr())
	g.get("/me", "Authorization: Bearer alice")
	bob := g.get("/me", "Authorization: Bearer bob")
	if bob.isHit() || bob.body != "data of Bearer bob" {
		t.Fatalf("bob got %q (%q)", bob.body, bob.cacheStatus())
	}
	alice := g.get("/me", "Authorization: Bearer alice")
	if !alice.isHit() || alice.body != "data of Bearer alice" {
		t.Errorf("alice got %q (%q), want her own stored response", alice.body, alice.cacheStatus())
	}
}

// TestUserPlaceholderWithoutAuthentication checks that a user placeholder
// in the key lets an authorized response be stored only when it has a
// value: where no authentication ran it is empty, and the key would tell
// no caller from another.
func TestUserPlaceholderWithoutAuthentication(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		fmt.Fprintf(w, "data of %s", r.Header.Get("Authorization"))
	})
	// Both passwords are "secret" (caddy hash-password --bcrypt-cost 4).
	g := startGateway(t, "", `
	@members path /members/*
	basic_auth @members {
		alice $2a$04$lLF/k5rrSXJP8xd6T44ciu96R/DhNOpzU2O6fOcPC6CfCgikTex5e
		bob $2a$04$lLF/k5rrSXJP8xd6T44ciu96R/DhNOpzU2O6fOcPC6CfCgikTex5e
	}
	cache_read products
	cache_write products {
		key_placeholders {http.auth.user.id}
	}
	reverse_proxy {upstream}
`, up.addr())
	alice := g.get("/open", "Authorization: Bearer alice")
	if !strings.Contains(alice.cacheStatus(), "detail=AUTHORIZATION") {
		t.Errorf("no authentication ran, the user is empty: %q, want detail=AUTHORIZATION", alice.cacheStatus())
	}
	if r := g.get("/open", "Authorization: Bearer mallory"); r.isHit() || r.body != "data of Bearer mallory" {
		t.Errorf("mallory got %q (%q)", r.body, r.cacheStatus())
	}

	basic := func(user string) string {
		return "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(user+":secret"))
	}
	if r := g.get("/members/x", basic("alice")); !strings.Contains(r.cacheStatus(), "stored") {
		t.Errorf("alice, authenticated: %d %q, want stored", r.status, r.cacheStatus())
	}
	if r := g.get("/members/x", basic("bob")); r.isHit() || !strings.Contains(r.body, basic("bob")[len("Authorization: "):]) {
		t.Errorf("bob got %q (%q), want his own", r.body, r.cacheStatus())
	}
	if r := g.get("/members/x", basic("alice")); !r.isHit() {
		t.Errorf("alice again: %q, want her stored response", r.cacheStatus())
	}
}

// TestMustRevalidateUnderTTLKeepsAuthorizedPrivate checks that
// must-revalidate, which lets a shared cache store an authorized response
// for the validation it forces (RFC 9111 section 3.5), does not under an
// operator's ttl, which forces none.
func TestMustRevalidateUnderTTLKeepsAuthorizedPrivate(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache, must-revalidate")
		fmt.Fprintf(w, "account of %s", r.Header.Get("Authorization"))
	})
	g := startGateway(t, "", productsSite, up.addr())
	if r := g.get("/mr", "Authorization: Bearer alice"); !strings.Contains(r.cacheStatus(), "detail=AUTHORIZATION") {
		t.Errorf("alice: %q, want detail=AUTHORIZATION", r.cacheStatus())
	}
	if r := g.get("/mr", "Authorization: Bearer bob"); r.body != "account of Bearer bob" {
		t.Errorf("bob got %q (%q)", r.body, r.cacheStatus())
	}
}

func TestTooLargeIsDeliveredNotStored(t *testing.T) {
	big := strings.Repeat("x", 4096)
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/chunked" {
			for range 4 {
				fmt.Fprint(w, big[:1024])
				w.(http.Flusher).Flush()
			}
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(big)))
		fmt.Fprint(w, big)
	})
	g := startGateway(t, "", `
	cache_read products
	cache_write products {
		ttl 60s
		max_entry_size 2KiB
	}
	reverse_proxy {upstream}
`, up.addr())
	for _, path := range []string{"/big", "/chunked"} {
		for i := range 2 {
			r := g.get(path)
			if r.body != big {
				t.Errorf("%s request %d: body of %d bytes, want %d", path, i+1, len(r.body), len(big))
			}
			if r.isHit() {
				t.Errorf("%s request %d was a hit", path, i+1)
			}
		}
	}
	if r := g.get("/big"); r.cacheStatus() != "products; fwd=uri-miss; fwd-status=200; detail=TOO-LARGE" {
		t.Errorf("Cache-Status %q", r.cacheStatus())
	}
}

func TestMissStreams(t *testing.T) {
	release := make(chan struct{})
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "first;")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-time.After(30 * time.Second):
		}
		fmt.Fprint(w, "second")
	})
	g := startGateway(t, "", `
	cache_read products
	cache_write products {
		ttl 60s
	}
	reverse_proxy {upstream} {
		flush_interval -1
	}
`, up.addr())
	resp, err := http.Get("http://" + g.addr + "/slow")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	got := make(chan string, 1)
	go func() {
		s, _ := br.ReadString(';')
		got <- s
	}()
	select {
	case s := <-got:
		if s != "first;" {
			t.Fatalf("first bytes %q", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the first bytes did not reach the client while the upstream was still sending")
	}
	close(release)
	rest, _ := br.ReadString(0)
	if rest != "second" {
		t.Errorf("rest %q", rest)
	}
	if r := g.get("/slow"); !r.isHit() || r.body != "first;second" {
		t.Errorf("after the stream: %q %q, want a hit with the whole body", r.cacheStatus(), r.body)
	}
}

func TestIncompleteIsNotStored(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		fmt.Fprint(w, "only part")
		// Returning early makes the server close the connection short.
	})
	g := startGateway(t, "", productsSite, up.addr())
	for range 2 {
		req, _ := http.NewRequest("GET", "http://"+g.addr+"/cut", nil)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
		}
	}
	if up.count("/cut") != 2 {
		t.Errorf("upstream saw %d requests, want 2: a cut body was stored", up.count("/cut"))
	}
}

func TestHeadAndConditional(t *testing.T) {
	up := newUpstream(t, serial("Etag", `"v7"`, "Last-Modified", "Thu, 01 Jan 2026 00:00:00 GMT"))
	g := startGateway(t, "", productsSite, up.addr())
	full := g.get("/c")
	head := g.request("HEAD", "/c")
	if !head.isHit() || head.body != "" || head.header.Get("Content-Length") != strconv.Itoa(len(full.body)) {
		t.Errorf("HEAD: %q body %q length %q", head.cacheStatus(), head.body, head.header.Get("Content-Length"))
	}
	for _, cond := range []string{`If-None-Match: "v7"`, `If-None-Match: W/"v7"`, "If-Modified-Since: Fri, 02 Jan 2026 00:00:00 GMT"} {
		r := g.get("/c", cond)
		if r.status != http.StatusNotModified || r.header.Get("Etag") != `"v7"` || r.body != "" {
			t.Errorf("%s: %d etag %q body %q, want 304", cond, r.status, r.header.Get("Etag"), r.body)
		}
		if r.header.Get("Content-Type") != "" {
			t.Errorf("%s: 304 carries Content-Type", cond)
		}
	}
	for _, cond := range []string{`If-None-Match: "v8"`, "If-Modified-Since: Wed, 31 Dec 2025 00:00:00 GMT"} {
		if r := g.get("/c", cond); r.status != 200 || r.body != full.body {
			t.Errorf("%s: %d, want 200 with the stored body", cond, r.status)
		}
	}
	if up.count("/c") != 1 {
		t.Errorf("upstream saw %d requests", up.count("/c"))
	}
}

func TestETagOption(t *testing.T) {
	up := newUpstream(t, serial())
	g := startGateway(t, "", `
	cache_read products
	cache_write products {
		ttl 60s
		etag
	}
	reverse_proxy {upstream}
`, up.addr())
	g.get("/e")
	hit := g.get("/e")
	etag := hit.header.Get("Etag")
	if !hit.isHit() || !regexp.MustCompile(`^"[0-9a-f]{32}"$`).MatchString(etag) {
		t.Fatalf("hit %q with ETag %q", hit.cacheStatus(), etag)
	}
	if r := g.get("/e", "If-None-Match: "+etag); r.status != http.StatusNotModified {
		t.Errorf("If-None-Match with the generated ETag: %d", r.status)
	}
}

func TestOnlyIfCachedAndPlaceholders(t *testing.T) {
	up := newUpstream(t, serial())
	g := startGateway(t, "", `
	header >X-Cache {http.cache.status}
	header >X-Cache-Name {http.cache.name}
	cache_read products
	cache_write products {
		ttl 60s
	}
	reverse_proxy {upstream}
`, up.addr())
	if r := g.get("/o", "Cache-Control: only-if-cached"); r.status != http.StatusGatewayTimeout {
		t.Errorf("only-if-cached without an entry: %d, want 504", r.status)
	}
	if up.count("/o") != 0 {
		t.Error("only-if-cached reached the upstream")
	}
	if r := g.get("/o"); r.header.Get("X-Cache") != "miss" || r.header.Get("X-Cache-Name") != "products" {
		t.Errorf("miss placeholders: %q %q", r.header.Get("X-Cache"), r.header.Get("X-Cache-Name"))
	}
	if r := g.get("/o", "Cache-Control: no-cache"); r.header.Get("X-Cache") != "hit" {
		t.Errorf("a client's no-cache bypassed the cache: %q", r.header.Get("X-Cache"))
	}
	if r := g.get("/o", "Cache-Control: only-if-cached"); r.status != 200 || !r.isHit() {
		t.Errorf("only-if-cached with an entry: %d %q", r.status, r.cacheStatus())
	}
	if r := g.request("POST", "/o"); r.header.Get("X-Cache") != "bypass" {
		t.Errorf("POST placeholder %q, want bypass", r.header.Get("X-Cache"))
	}
}

func TestCacheInvalidate(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "POST" && strings.HasSuffix(r.URL.Path, "/fail") {
			w.WriteHeader(http.StatusConflict)
			return
		}
		serial("Surrogate-Key", "product-"+strings.TrimPrefix(r.URL.Path, "/products/"))(w, r)
	})
	g := startGateway(t, "", `
	@write method POST
	handle @write {
		cache_invalidate /products/*/fail products {
			urls /products/{http.request.uri.path.1}
		}
		cache_invalidate /tag/* products {
			tags product-{http.request.uri.path.1}
		}
		cache_invalidate /prefix products {
			prefixes /products/
		}
		cache_invalidate /all products
		cache_invalidate /products/* products {
			urls /products/{http.request.uri.path.1}
		}
		reverse_proxy {upstream}
	}
	cache_read products
	cache_write products {
		ttl 60s
	}
	reverse_proxy {upstream}
`, up.addr())
	warm := func(paths ...string) {
		for _, p := range paths {
			g.get(p)
			if !g.get(p).isHit() {
				t.Fatalf("%s not stored", p)
			}
		}
	}
	expect := func(step string, hits map[string]bool) {
		t.Helper()
		for p, hit := range hits {
			if r := g.get(p); r.isHit() != hit {
				t.Errorf("%s: %s hit=%v, want %v", step, p, r.isHit(), hit)
			}
		}
	}

	warm("/products/1", "/products/2", "/products/1?page=2")
	if r := g.request("POST", "/products/1/fail"); r.status != http.StatusConflict {
		t.Fatalf("failing POST: %d", r.status)
	}
	expect("after a failed POST", map[string]bool{"/products/1": true})

	g.request("POST", "/products/1")
	expect("after POST /products/1", map[string]bool{"/products/1": false, "/products/1?page=2": false, "/products/2": true})

	warm("/products/1", "/products/2")
	g.request("POST", "/tag/2")
	expect("after POST /tag/2", map[string]bool{"/products/2": false, "/products/1": true})

	warm("/products/1", "/products/2", "/other")
	g.request("POST", "/prefix")
	expect("after the prefix", map[string]bool{"/products/1": false, "/products/2": false, "/other": true})

	warm("/products/1", "/other")
	g.request("POST", "/all")
	expect("after the flush", map[string]bool{"/products/1": false, "/other": false})
}

// startTwoCaches starts a gateway with the caches products, which
// productsSite fills, and users, in front of an upstream that answers each
// path with itself, tagged k-<path>.
func startTwoCaches(t *testing.T) (*gateway, *upstream) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Surrogate-Key", "k-"+strings.Trim(r.URL.Path, "/"))
		fmt.Fprint(w, r.URL.Path)
	})
	g := startGateway(t, `
	cache_pool {
		max_size 32MiB
		cache users {
			max_size 2MiB
		}
	}`, productsSite, up.addr())
	return g, up
}

func TestAdminAPI(t *testing.T) {
	g, _ := startTwoCaches(t)
	for _, p := range []string{"/a", "/b/1", "/b/2", "/c"} {
		g.get(p)
		g.get(p)
	}
	list := g.adminJSON("GET", "/cache/", "", 200)["caches"].([]any)
	if len(list) != 2 {
		t.Fatalf("list %v, want products and users", list)
	}
	products := list[0].(map[string]any)
	users := list[1].(map[string]any)
	if products["name"] != "products" || products["entries"] != 4.0 || products["hits"] != 4.0 ||
		products["misses"] != 4.0 || products["stored"] != 4.0 || products["max_size"] != float64(32<<20) {
		t.Errorf("products %v", products)
	}
	if size := products["size_bytes"].(float64); size <= 0 || size > 32<<20 {
		t.Errorf("size_bytes %v", size)
	}
	if users["name"] != "users" || users["max_size"] != float64(2<<20) || users["entries"] != 0.0 {
		t.Errorf("users %v", users)
	}
	if one := g.adminJSON("GET", "/cache/products", "", 200); one["entries"] != 4.0 {
		t.Errorf("one cache %v", one)
	}

	purge := func(body string, want float64) {
		t.Helper()
		if got := g.adminJSON("POST", "/cache/products/purge", body, 200)["removed"]; got != want {
			t.Errorf("purge %s removed %v, want %v", body, got, want)
		}
	}
	purge(`{"urls":["/a"]}`, 1)
	if g.get("/a").isHit() {
		t.Error("/a is a hit after its purge")
	}
	purge(`{"urls":["http://other.example/c"]}`, 0)
	purge(`{"urls":["http://`+g.addr+`/c"]}`, 1)
	purge(`{"prefixes":["/b/"]}`, 2)
	g.get("/b/1")
	purge(`{"tags":["k-b/1"]}`, 1)
	for _, p := range []string{"/b/1", "/b/2", "/c"} {
		if g.get(p).isHit() {
			t.Errorf("%s is a hit after its purge", p)
		}
	}

	if got := g.adminJSON("DELETE", "/cache/products", "", 200)["flushed"]; fmt.Sprint(got) != "[products]" {
		t.Errorf("flush one: %v", got)
	}
	if g.get("/a").isHit() {
		t.Error("hit after flushing the cache")
	}
	g.get("/a")
	if got := g.adminJSON("DELETE", "/cache/", "", 200)["flushed"]; fmt.Sprint(got) != "[products users]" {
		t.Errorf("flush all: %v", got)
	}
	if g.get("/a").isHit() {
		t.Error("hit after flushing every cache")
	}

	// 256 targets in one call are within the bound; 257 are past it, below.
	g.adminJSON("POST", "/cache/products/purge", `{"prefixes":["/q"`+strings.Repeat(`,"/q"`, 200)+`],"tags":["t"`+strings.Repeat(`,"t"`, 54)+`]}`, 200)
	errors := []struct {
		method, path, body string
		status             int
	}{
		{"GET", "/cache/nope", "", 404},
		{"DELETE", "/cache/nope", "", 404},
		{"POST", "/cache/nope/purge", `{"urls":["/a"]}`, 404},
		{"POST", "/cache/products/purge", `{"urls":`, 400},
		{"POST", "/cache/products/purge", `{"paths":["/a"]}`, 400},
		{"POST", "/cache/products/purge", `{}`, 400},
		{"POST", "/cache/products/purge", `{"prefixes":["no-slash"]}`, 400},
		{"POST", "/cache/products/purge", `{"urls":["ftp://x/a"]}`, 400},
		{"POST", "/cache/products/purge", `{"urls":["/a"]} x`, 400},
		{"POST", "/cache/products/purge", `{"urls":["/a"]}]`, 400},
		{"POST", "/cache/products/purge", `{"urls":["/a"]}}`, 400},
		// 257 targets: past the bound on what one call may name.
		{"POST", "/cache/products/purge", `{"prefixes":["/q"` + strings.Repeat(`,"/q"`, 200) + `],"tags":["t"` + strings.Repeat(`,"t"`, 55) + `]}`, 400},
		{"PUT", "/cache/", "", 405},
		{"POST", "/cache/products", "", 405},
		{"GET", "/cache/products/purge", "", 405},
		{"GET", "/cache/products/other", "", 404},
	}
	for _, e := range errors {
		out := g.adminJSON(e.method, e.path, e.body, e.status)
		if msg, _ := out["error"].(string); msg == "" {
			t.Errorf("%s %s: no error message in %v", e.method, e.path, out)
		}
	}
	// The admin routes are not reachable on the site.
	if r := g.get("/cache/"); strings.Contains(r.body, "caches") {
		t.Error("the site serves the admin API")
	}
}

func TestReloadKeepsEntriesAndResizes(t *testing.T) {
	up := newUpstream(t, serial())
	globals := func(size string) string { return "\tcache_pool {\n\t\tmax_size " + size + "\n\t}" }
	g := startGateway(t, globals("16MiB"), productsSite, up.addr())
	first := g.get("/r")
	g.reload(globals("16MiB"), productsSite, up.addr())
	if r := g.get("/r"); !r.isHit() || r.body != first.body {
		t.Fatalf("after a reload: %q, want a hit", r.cacheStatus())
	}
	g.reload(globals("8MiB"), productsSite, up.addr())
	if r := g.get("/r"); !r.isHit() {
		t.Errorf("after a resize: %q, want a hit", r.cacheStatus())
	}
	if got := g.adminJSON("GET", "/cache/products", "", 200)["max_size"]; got != float64(8<<20) {
		t.Errorf("max_size after the resize: %v", got)
	}
	// A config that fails to load resizes nothing: here two handlers
	// that give one zone two limits fail it once the cache's handlers
	// were provisioned.
	zone := func(events string) string {
		return "\t\trate_limit {\n\t\t\tzone z {\n\t\t\t\tkey x\n\t\t\t\tevents " + events + "\n\t\t\t\twindow 1m\n\t\t\t}\n\t\t}\n"
	}
	failing := productsSite + "\troute /x {\n" + zone("3") + zone("4") + "\t}\n"
	g.loadFails(g.caddyfile(globals("2MiB"), failing, up.addr()))
	if got := g.adminJSON("GET", "/cache/products", "", 200)["max_size"]; got != float64(8<<20) {
		t.Errorf("max_size after a failed reload: %v", got)
	}
	// A config without the cache releases it.
	g.reload("", "\trespond ok", up.addr())
	if list := g.adminJSON("GET", "/cache/", "", 200)["caches"].([]any); len(list) != 0 {
		t.Errorf("caches after removing them from the config: %v", list)
	}
}

func TestMetrics(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/cookie" {
			w.Header().Set("Set-Cookie", "a=b")
		}
		fmt.Fprint(w, "ok")
	})
	g := startGateway(t, "", productsSite, up.addr())
	g.get("/m")
	g.get("/m")
	g.get("/m")
	g.get("/cookie")
	metrics := g.adminDo("GET", "/metrics", "", "").body
	for _, want := range []string{
		`caddy_cache_requests_total{cache="products",result="hit"} 2`,
		`caddy_cache_requests_total{cache="products",result="miss"} 2`,
		`caddy_cache_stores_total{cache="products",outcome="stored"} 1`,
		`caddy_cache_stores_total{cache="products",outcome="set-cookie"} 1`,
		`caddy_cache_entries{cache="products"} 1`,
		`caddy_cache_evictions_total{cache="products"} 0`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if !regexp.MustCompile(`caddy_cache_size_bytes\{cache="products"\} [1-9]`).MatchString(metrics) {
		t.Error("metrics lack a positive caddy_cache_size_bytes")
	}
}

// TestStoreOutcomesAddUp floods a small cache whose admission policy
// refuses newcomers once popular entries fill it: every miss counts one
// final outcome, so the outcomes of caddy_cache_stores_total add up to
// the misses, refusals included once, not also as stored.
func TestStoreOutcomesAddUp(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, strings.Repeat("x", 1000))
	})
	g := startGateway(t, "\tcache_pool {\n\t\tcache small {\n\t\t\tmax_size 1MiB\n\t\t\tmax_entry_size 64KiB\n\t\t}\n\t}", `
	cache_read small
	cache_write small {
		ttl 1h
	}
	reverse_proxy {upstream}
`, up.addr())
	const popular, flood = 300, 3000
	for range 10 {
		for i := range popular {
			g.get(fmt.Sprint("/popular/", i))
		}
	}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < flood; i += 8 {
				if _, err := send("GET", fmt.Sprintf("http://%s/flood/%d", g.addr, i), nil, ""); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	metrics := g.adminDo("GET", "/metrics", "", "").body
	outcomes := map[string]int{}
	for _, m := range regexp.MustCompile(`caddy_cache_stores_total\{cache="small",outcome="([a-z-]+)"\} ([0-9]+)`).FindAllStringSubmatch(metrics, -1) {
		outcomes[m[1]], _ = strconv.Atoi(m[2])
	}
	m := regexp.MustCompile(`caddy_cache_requests_total\{cache="small",result="miss"\} ([0-9]+)`).FindStringSubmatch(metrics)
	if m == nil {
		t.Fatalf("no miss count in the metrics:\n%s", metrics)
	}
	misses, _ := strconv.Atoi(m[1])
	sum := 0
	for _, n := range outcomes {
		sum += n
	}
	t.Logf("%d misses; outcomes %v", misses, outcomes)
	if sum != misses {
		t.Errorf("the outcomes add up to %d, the misses to %d: %v", sum, misses, outcomes)
	}
	if outcomes["refused"] == 0 {
		t.Errorf("nothing refused: the flood did not show what it tests (%v)", outcomes)
	}
}

func TestHostileRequests(t *testing.T) {
	up := newUpstream(t, serial())
	g := startGateway(t, "", `
	cache_read products
	cache_write products {
		ttl 60s
		key_headers X-Key
	}
	reverse_proxy {upstream}
`, up.addr())
	var q strings.Builder
	for i := range 5000 {
		fmt.Fprintf(&q, "p%d=%%zz%d&", i, i)
	}
	long := "/h?" + q.String()
	odd := "/h/%00%ff%c3%28?a=%&b=%G1&=&&=x"
	for _, target := range []string{long, odd} {
		for i := range 2 {
			req, err := http.NewRequest("GET", "http://"+g.addr+"/x", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.URL.Opaque = target // sent as is
			req.Header.Set("X-Key", strings.Repeat("k", 32<<10))
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("%.40s: %v", target, err)
			}
			resp.Body.Close()
			if resp.StatusCode >= 500 {
				t.Errorf("%.40s request %d: %d", target, i+1, resp.StatusCode)
			}
		}
	}
	if r := g.get("/after"); r.status != 200 {
		t.Fatalf("the gateway no longer serves: %d", r.status)
	}
	if r := g.get("/after"); !r.isHit() {
		t.Errorf("the cache no longer works: %q", r.cacheStatus())
	}
}

func TestOriginFreshness(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/max-age":
			w.Header().Set("Cache-Control", "max-age=30")
			w.Header().Set("Age", "10")
		case "/s-maxage":
			w.Header().Set("Cache-Control", "max-age=1000, s-maxage=20")
		case "/expires":
			w.Header().Set("Date", time.Now().UTC().Format(http.TimeFormat))
			w.Header().Set("Expires", time.Now().Add(40*time.Second).UTC().Format(http.TimeFormat))
		case "/capped":
			w.Header().Set("Cache-Control", "max-age=3600")
		}
		fmt.Fprint(w, r.URL.Path)
	})
	g := startGateway(t, "", `
	cache_read products
	cache_write products {
		max_ttl 5m
	}
	reverse_proxy {upstream}
`, up.addr())
	tests := []struct {
		path    string
		ttl     *regexp.Regexp
		minAge  int
		noStore string
	}{
		{"/max-age", regexp.MustCompile(`ttl=(1[5-9]|20)$`), 10, ""},
		{"/s-maxage", regexp.MustCompile(`ttl=(1[5-9]|20)$`), 0, ""},
		{"/expires", regexp.MustCompile(`ttl=(3[5-9]|40)$`), 0, ""},
		{"/capped", regexp.MustCompile(`ttl=(29[5-9]|300)$`), 0, ""},
		{"/none", nil, 0, "NO-FRESHNESS"},
	}
	for _, tt := range tests {
		first := g.get(tt.path)
		second := g.get(tt.path)
		if tt.noStore != "" {
			if second.isHit() || !strings.HasSuffix(first.cacheStatus(), "detail="+tt.noStore) {
				t.Errorf("%s: %q then %q, want detail=%s and no hit", tt.path, first.cacheStatus(), second.cacheStatus(), tt.noStore)
			}
			continue
		}
		if !second.isHit() || !tt.ttl.MatchString(second.cacheStatus()) {
			t.Errorf("%s: %q, want a hit matching %s", tt.path, second.cacheStatus(), tt.ttl)
		}
		if age, _ := strconv.Atoi(second.header.Get("Age")); age < tt.minAge || age > tt.minAge+5 {
			t.Errorf("%s: Age %q, want %d", tt.path, second.header.Get("Age"), tt.minAge)
		}
	}
}

// TestCacheStatusNamesAnyCache: a cache whose name is not a Structured
// Field token (RFC 8941 section 3.3.4) is named in Cache-Status as a
// string, so the field stays valid (RFC 9211 section 2).
func TestCacheStatusNamesAnyCache(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "body") })
	g := startGateway(t, "", `
	cache_read "api v2"
	cache_write "api v2" {
		ttl 1m
	}
	reverse_proxy {upstream}
`, up.addr())
	if got := g.get("/x").cacheStatus(); got != `"api v2"; fwd=uri-miss; fwd-status=200; stored` {
		t.Errorf("miss: Cache-Status %s", got)
	}
	if got := g.get("/x").cacheStatus(); got != `"api v2"; hit; ttl=60` {
		t.Errorf("hit: Cache-Status %s", got)
	}
}
