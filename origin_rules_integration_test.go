package gateway_test

import (
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// originRulesSite is a cache in origin mode, without a ttl: the origin's
// own freshness information decides.
const originRulesSite = `
	cache_read products
	cache_write products
	reverse_proxy {upstream}
`

// originRulesNoRedirect is the harness's client but that it does not follow
// redirects, so that a 3xx is seen as the gateway sent it.
var originRulesNoRedirect = &http.Client{
	Transport:     client.Transport,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// originRulesFetch requests path from the site without following
// redirects; header lines are "Name: value".
func originRulesFetch(g *gateway, method, path string, headers ...string) response {
	g.t.Helper()
	req, err := http.NewRequest(method, "http://"+g.addr+path, nil)
	if err != nil {
		g.t.Fatal(err)
	}
	for _, line := range headers {
		name, value, _ := strings.Cut(line, ":")
		req.Header.Add(name, strings.TrimSpace(value))
	}
	resp, err := originRulesNoRedirect.Do(req)
	if err != nil {
		g.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		g.t.Fatal(err)
	}
	return response{resp.StatusCode, resp.Header, string(b)}
}

var originRulesTTL = regexp.MustCompile(`; ttl=(-?[0-9]+)$`)

// originRulesTTLOf returns the ttl of a hit's Cache-Status member.
func originRulesTTLOf(r response) (int64, bool) {
	m := originRulesTTL.FindStringSubmatch(r.cacheStatus())
	if m == nil {
		return 0, false
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	return n, err == nil
}

// originRulesStored requests path twice and checks that the first response
// was stored and the second is a hit that repeats it, with one upstream
// request. It returns both responses.
func originRulesStored(t *testing.T, g *gateway, up *upstream, path string, headers ...string) (first, second response) {
	t.Helper()
	first = originRulesFetch(g, "GET", path, headers...)
	second = originRulesFetch(g, "GET", path, headers...)
	if !strings.HasSuffix(first.cacheStatus(), "; stored") {
		t.Errorf("%s: first Cache-Status %q, want it stored", path, first.cacheStatus())
	}
	if !second.isHit() || second.status != first.status || second.body != first.body {
		t.Errorf("%s: second %d %q %q, want a hit repeating %d %q", path, second.status, second.cacheStatus(),
			second.body, first.status, first.body)
	}
	if n := up.count(path); n != 1 {
		t.Errorf("%s reached the upstream %d times, want 1", path, n)
	}
	return first, second
}

// originRulesNotStored requests path twice and checks that neither was
// stored: the second is no hit and the upstream saw both. A non-empty
// detail is the Cache-Status detail the first response must end with.
func originRulesNotStored(t *testing.T, g *gateway, up *upstream, path, detail string, headers ...string) (first, second response) {
	t.Helper()
	first = originRulesFetch(g, "GET", path, headers...)
	second = originRulesFetch(g, "GET", path, headers...)
	if strings.Contains(first.cacheStatus(), "; stored") {
		t.Errorf("%s: first Cache-Status %q, want it not stored", path, first.cacheStatus())
	}
	if detail != "" && !strings.HasSuffix(first.cacheStatus(), "; detail="+detail) {
		t.Errorf("%s: first Cache-Status %q, want detail=%s", path, first.cacheStatus(), detail)
	}
	if second.isHit() {
		t.Errorf("%s: second request was a hit: %q", path, second.cacheStatus())
	}
	if n := up.count(path); n != 2 {
		t.Errorf("%s reached the upstream %d times, want 2", path, n)
	}
	return first, second
}

// TestOriginStatusesWithFreshness checks RFC 9111 section 3: any final status the cache understands is storable with explicit freshness, 206 is not, and must-understand refuses an unknown status.
func TestOriginStatusesWithFreshness(t *testing.T) {
	var n atomic.Int64
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		kind, codeText, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		code, err := strconv.Atoi(codeText)
		if err != nil {
			http.Error(w, "bad path", http.StatusTeapot)
			return
		}
		switch kind {
		case "status":
			w.Header().Set("Cache-Control", "max-age=60")
		case "understand":
			w.Header().Set("Cache-Control", "max-age=3600, no-store, must-understand")
		}
		switch code {
		case http.StatusSeeOther:
			w.Header().Set("Location", "/elsewhere")
		case http.StatusPartialContent:
			w.Header().Set("Content-Range", "bytes 0-9/100")
		}
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(code)
		fmt.Fprintf(w, "%s #%d", r.URL.Path, n.Add(1))
	})
	g := startGateway(t, "", originRulesSite, up.addr())

	for _, code := range []int{200, 299, 303, 400, 404, 500, 503} {
		path := fmt.Sprintf("/status/%d", code)
		first, second := originRulesStored(t, g, up, path)
		if first.status != code || second.status != code {
			t.Errorf("%s: statuses %d then %d, want %d both", path, first.status, second.status, code)
		}
		if want := fmt.Sprintf("products; fwd=uri-miss; fwd-status=%d; stored", code); first.cacheStatus() != want {
			t.Errorf("%s: Cache-Status %q, want %q", path, first.cacheStatus(), want)
		}
		if code == http.StatusSeeOther && second.header.Get("Location") != "/elsewhere" {
			t.Errorf("%s: the hit's Location is %q", path, second.header.Get("Location"))
		}
	}

	first, _ := originRulesNotStored(t, g, up, "/status/206", "STATUS")
	if first.status != http.StatusPartialContent {
		t.Errorf("/status/206: status %d", first.status)
	}
	// must-understand: an unknown status is not stored, whatever no-store
	// says; a known one is, and no-store gives way (RFC 9111 section 5.2.2.3).
	first, _ = originRulesNotStored(t, g, up, "/understand/599", "STATUS")
	if first.status != 599 {
		t.Errorf("/understand/599: status %d", first.status)
	}
	originRulesStored(t, g, up, "/understand/200")
}

// TestOriginExpiresAndAge checks RFC 9110 section 5.6.7 and RFC 9111 sections 4.2.1, 4.2.3 and 5.1: HTTP-date forms of Expires, invalid dates, the Age field's first member, and the 2^31 s clamp.
func TestOriginExpiresAndAge(t *testing.T) {
	var n atomic.Int64
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		now := time.Now().UTC()
		hour := now.Add(time.Hour)
		h := w.Header()
		h.Set("Date", now.Format(http.TimeFormat))
		switch r.URL.Path {
		case "/imf":
			h.Set("Expires", hour.Format(http.TimeFormat))
		case "/asctime":
			h.Set("Expires", hour.Format("Mon Jan _2 15:04:05 2006"))
		case "/one-digit-hour":
			h.Set("Expires", "Thu, 18 Aug 2050 2:01:18 GMT")
		case "/double-space":
			h.Set("Expires", strings.Replace(hour.Format(http.TimeFormat), " ", "  ", 1))
		case "/age-first-large":
			h.Set("Cache-Control", "max-age=3600")
			h.Set("Age", "7200, 0")
		case "/age-first-zero":
			h.Set("Cache-Control", "max-age=3600")
			h.Set("Age", "0, 7200")
		case "/age-abc":
			h.Set("Cache-Control", "max-age=3600")
			h.Set("Age", "abc")
		case "/far":
			h.Set("Expires", now.AddDate(300, 0, 0).Format(http.TimeFormat))
		}
		fmt.Fprintf(w, "%s #%d", r.URL.Path, n.Add(1))
	})
	g := startGateway(t, "", originRulesSite, up.addr())

	originRulesStored(t, g, up, "/imf")
	originRulesStored(t, g, up, "/asctime")
	originRulesNotStored(t, g, up, "/one-digit-hour", "NO-FRESHNESS")
	originRulesNotStored(t, g, up, "/double-space", "NO-FRESHNESS")
	// Only the first member of Age counts; one that is no delta-seconds is
	// ignored.
	originRulesNotStored(t, g, up, "/age-first-large", "")
	originRulesStored(t, g, up, "/age-first-zero")
	originRulesStored(t, g, up, "/age-abc")

	_, hit := originRulesStored(t, g, up, "/far")
	const clamp = 2147483648
	if ttl, ok := originRulesTTLOf(hit); !ok || ttl > clamp || ttl < clamp-60 {
		t.Errorf("/far: Cache-Status %q, want a ttl of about 2^31 s, at most %d", hit.cacheStatus(), clamp)
	}
}

// TestTargetedCacheControl checks RFC 9213 sections 2.1 to 2.3: a valid targeted field replaces Cache-Control, an invalid one is ignored, the fields honoured are configurable and the gateway's own are not forwarded.
func TestTargetedCacheControl(t *testing.T) {
	var n atomic.Int64
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		// The path is /<case>/<gateway>: each gateway has its own.
		c, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		switch c {
		case "cdn-allows":
			h.Set("Cache-Control", "no-store")
			h.Set("CDN-Cache-Control", "max-age=60")
		case "cdn-no-store":
			h.Set("Cache-Control", "max-age=60")
			h.Set("CDN-Cache-Control", "no-store")
		case "cdn-private":
			h.Set("Cache-Control", "max-age=60")
			h.Set("CDN-Cache-Control", "private")
		case "cdn-zero":
			h.Set("Cache-Control", "max-age=60")
			h.Set("CDN-Cache-Control", "max-age=0")
		case "cdn-invalid":
			h.Set("Cache-Control", "no-store")
			h.Set("CDN-Cache-Control", "max-age=10000, &&&&&")
		case "cdn-wrong-type":
			h.Set("Cache-Control", "no-store")
			h.Set("CDN-Cache-Control", `max-age="60"`)
		case "own":
			h.Set("Cache-Control", "no-store")
			h.Set("Gateway-Cache-Control", "max-age=60")
		}
		fmt.Fprintf(w, "%s #%d", r.URL.Path, n.Add(1))
	})

	g := startGateway(t, "", originRulesSite, up.addr())
	first, _ := originRulesStored(t, g, up, "/cdn-allows/default")
	if got := first.header.Values("Cdn-Cache-Control"); len(got) != 1 || got[0] != "max-age=60" {
		t.Errorf("the miss's CDN-Cache-Control is %q, want it forwarded unchanged", got)
	}
	originRulesNotStored(t, g, up, "/cdn-no-store/default", "NO-STORE")
	originRulesNotStored(t, g, up, "/cdn-private/default", "PRIVATE")
	originRulesNotStored(t, g, up, "/cdn-zero/default", "")
	// An invalid targeted field is ignored: Cache-Control applies.
	originRulesNotStored(t, g, up, "/cdn-invalid/default", "NO-STORE")
	// A directive of the wrong type is ignored; the field still replaces
	// Cache-Control, and leaves no freshness.
	originRulesNotStored(t, g, up, "/cdn-wrong-type/default", "")

	own := startGateway(t, "", `
	cache_read products
	cache_write products {
		targeted_cache_control Gateway-Cache-Control CDN-Cache-Control
	}
	reverse_proxy {upstream}
`, up.addr())
	first, second := originRulesStored(t, own, up, "/own/own")
	// Nor does it leave with a response that passes through unstored.
	post := own.request("POST", "/own/post")
	head := own.request("HEAD", "/own/head")
	options := own.request("OPTIONS", "/own/options")
	for i, r := range []response{first, second, post, head, options} {
		if r.status != 200 {
			t.Errorf("response %d: status %d", i+1, r.status)
		}
		if v, ok := r.header["Gateway-Cache-Control"]; ok {
			t.Errorf("response %d carries the gateway's own field: %q", i+1, v)
		}
	}
	originRulesStored(t, own, up, "/cdn-allows/own")

	off := startGateway(t, "", `
	cache_read products
	cache_write products {
		targeted_cache_control off
	}
	reverse_proxy {upstream}
`, up.addr())
	originRulesNotStored(t, off, up, "/cdn-allows/off", "NO-STORE")
}

// TestQualifiedPrivateAndNoCache checks RFC 9111 sections 5.2.2.4 and 5.2.2.7: a response with qualified private or no-cache is stored without the fields they name.
func TestQualifiedPrivateAndNoCache(t *testing.T) {
	var n atomic.Int64
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Keep", "1")
		switch r.URL.Path {
		case "/private-field":
			h.Set("Cache-Control", `max-age=60, private="Set-Cookie"`)
			h.Set("Set-Cookie", "s=1")
		case "/no-cache-field":
			h.Set("Cache-Control", `no-cache="X-Secret", max-age=60`)
			h.Set("X-Secret", "hush")
		}
		fmt.Fprintf(w, "%s #%d", r.URL.Path, n.Add(1))
	})
	g := startGateway(t, "", originRulesSite, up.addr())

	_, hit := originRulesStored(t, g, up, "/private-field")
	if hit.header.Get("X-Keep") != "1" {
		t.Errorf("/private-field: the hit lacks X-Keep: %v", hit.header)
	}
	if v, ok := hit.header["Set-Cookie"]; ok {
		t.Errorf("/private-field: the hit carries Set-Cookie %q", v)
	}

	_, hit = originRulesStored(t, g, up, "/no-cache-field")
	if hit.header.Get("X-Keep") != "1" {
		t.Errorf("/no-cache-field: the hit lacks X-Keep: %v", hit.header)
	}
	if v, ok := hit.header["X-Secret"]; ok {
		t.Errorf("/no-cache-field: the hit carries X-Secret %q", v)
	}
}

// TestHeuristicFreshness checks RFC 9111 section 4.2.2: heuristic freshness only when configured, capped, and only for heuristically cacheable statuses.
func TestHeuristicFreshness(t *testing.T) {
	var n atomic.Int64
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		now := time.Now().UTC()
		w.Header().Set("Date", now.Format(http.TimeFormat))
		w.Header().Set("Last-Modified", now.Add(-10*24*time.Hour).Format(http.TimeFormat))
		if strings.HasSuffix(r.URL.Path, "/403") {
			w.WriteHeader(http.StatusForbidden)
		}
		fmt.Fprintf(w, "%s #%d", r.URL.Path, n.Add(1))
	})

	plain := startGateway(t, "", originRulesSite, up.addr())
	originRulesNotStored(t, plain, up, "/plain/200", "NO-FRESHNESS")

	g := startGateway(t, "", `
	cache_read products
	cache_write products {
		heuristic 1h
	}
	reverse_proxy {upstream}
`, up.addr())
	_, hit := originRulesStored(t, g, up, "/heuristic/200")
	if ttl, ok := originRulesTTLOf(hit); !ok || ttl <= 0 || ttl > 3600 {
		t.Errorf("/heuristic/200: Cache-Status %q, want a ttl of at most 3600", hit.cacheStatus())
	}
	first, _ := originRulesNotStored(t, g, up, "/heuristic/403", "NO-FRESHNESS")
	if first.status != http.StatusForbidden {
		t.Errorf("/heuristic/403: status %d", first.status)
	}
}

// RFC 9111 section 4.4: an unsafe request invalidates its target URI (and
// its Location and Content-Location), not its neighbours. Stores in flight
// while other paths are invalidated are all kept. Before, a store checked
// a counter shared by 1 path in 256, so each POST elsewhere dropped about
// one concurrent store in 256: a conformance suite that runs its tests
// concurrently failed a test or two in every run.
func TestUnsafeMethodsSpareOtherStoresInFlight(t *testing.T) {
	release := make(chan struct{})
	var releaseOnce sync.Once
	free := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(free) // a failed step must not leave the upstream's handlers held
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		if strings.HasPrefix(r.URL.Path, "/held/") {
			<-release // the store began before the POSTs
		}
		w.Header().Set("Cache-Control", "max-age=600")
		fmt.Fprint(w, r.URL.Path)
	})
	g := startGateway(t, "", originRulesSite, up.addr())
	const stores, posts = 40, 200
	var wg sync.WaitGroup
	for i := range stores {
		wg.Go(func() {
			if _, err := send("GET", fmt.Sprintf("http://%s/held/%d", g.addr, i), nil, ""); err != nil {
				t.Error(err)
			}
		})
	}
	for deadline := time.Now().Add(10 * time.Second); up.total.Load() < stores; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d GETs reached the upstream", up.total.Load(), stores)
		}
	}
	for j := range posts {
		if r := originRulesFetch(g, "POST", fmt.Sprint("/other/", j)); r.status != http.StatusNoContent {
			t.Fatalf("POST: status %d", r.status)
		}
	}
	free()
	wg.Wait()
	var lost []string
	for i := range stores {
		path := fmt.Sprint("/held/", i)
		if r := originRulesFetch(g, "GET", path); !r.isHit() {
			lost = append(lost, path+": "+r.cacheStatus())
		}
	}
	if len(lost) > 0 {
		t.Errorf("%d of %d stores in flight were dropped by POSTs to other paths:\n%s", len(lost), stores, strings.Join(lost, "\n"))
	}
	// The POSTs' own targets were invalidated all the same.
	originRulesFetch(g, "GET", "/other/7")
	originRulesFetch(g, "POST", "/other/7")
	if r := originRulesFetch(g, "GET", "/other/7"); r.isHit() {
		t.Errorf("a GET after a POST to its path was a hit: %q", r.cacheStatus())
	}
}

// TestUnsafeMethodsInvalidate checks RFC 9111 section 4.4: a non-error response to an unsafe method invalidates the target URI and same-origin Location and Content-Location, every variant.
func TestUnsafeMethodsInvalidate(t *testing.T) {
	var mu sync.Mutex
	gets := map[string]int{}
	getCount := func(path string) int {
		mu.Lock()
		defer mu.Unlock()
		return gets[path]
	}
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			mu.Lock()
			gets[r.URL.Path]++
			n := gets[r.URL.Path]
			mu.Unlock()
			w.Header().Set("Cache-Control", "max-age=600")
			if r.URL.Path == "/v" {
				w.Header().Set("Vary", "Accept")
			}
			fmt.Fprintf(w, "%s for %q #%d", r.URL.Path, r.Header.Get("Accept"), n)
			return
		}
		switch r.URL.Path {
		case "/kept":
			w.WriteHeader(http.StatusInternalServerError)
		case "/form":
			w.Header().Set("Location", "/item2")
			w.Header().Set("Content-Location", "/item3")
			w.WriteHeader(http.StatusCreated)
		case "/elsewhere":
			w.Header().Set("Location", "http://other.example/item4")
			w.WriteHeader(http.StatusCreated)
		}
		fmt.Fprintf(w, "%s done", r.Method)
	})
	g := startGateway(t, "", originRulesSite, up.addr())

	// warm stores path (and the variant the headers select).
	warm := func(path string, headers ...string) {
		t.Helper()
		originRulesFetch(g, "GET", path, headers...)
		if r := originRulesFetch(g, "GET", path, headers...); !r.isHit() {
			t.Fatalf("%s %v: not stored: %q", path, headers, r.cacheStatus())
		}
	}
	expect := func(step, path string, hit bool, headers ...string) {
		t.Helper()
		if r := originRulesFetch(g, "GET", path, headers...); r.isHit() != hit {
			t.Errorf("%s: GET %s %v: Cache-Status %q, want hit=%v", step, path, headers, r.cacheStatus(), hit)
		}
	}

	for _, c := range []struct{ method, path string }{
		{"POST", "/item"}, {"PUT", "/put"}, {"DELETE", "/delete"}, {"PATCH", "/patch"}, {"M-SEARCH", "/m-search"},
	} {
		warm(c.path)
		if r := originRulesFetch(g, c.method, c.path); r.status != http.StatusOK {
			t.Errorf("%s %s: status %d", c.method, c.path, r.status)
		}
		expect("after "+c.method, c.path, false)
		if n := getCount(c.path); n != 2 {
			t.Errorf("after %s: GET %s reached the upstream %d times, want 2", c.method, c.path, n)
		}
	}

	// An error leaves the entry.
	warm("/kept")
	if r := originRulesFetch(g, "POST", "/kept"); r.status != http.StatusInternalServerError {
		t.Fatalf("POST /kept: status %d", r.status)
	}
	expect("after a failed POST", "/kept", true)

	// Location and Content-Location of the same origin are invalidated;
	// another host's are not.
	warm("/item2")
	warm("/item3")
	warm("/item4")
	if r := originRulesFetch(g, "POST", "/form"); r.status != http.StatusCreated {
		t.Fatalf("POST /form: status %d", r.status)
	}
	expect("after POST /form", "/item2", false)
	expect("after POST /form", "/item3", false)
	if r := originRulesFetch(g, "POST", "/elsewhere"); r.status != http.StatusCreated {
		t.Fatalf("POST /elsewhere: status %d", r.status)
	}
	expect("after a Location on another host", "/item4", true)

	// Every variant goes.
	warm("/v", "Accept: application/json")
	warm("/v", "Accept: text/csv")
	originRulesFetch(g, "POST", "/v")
	expect("after POST /v", "/v", false, "Accept: application/json")
	expect("after POST /v", "/v", false, "Accept: text/csv")
}

// TestStaleForbidden checks RFC 9111 sections 4.2.4 and 5.2.2.2 (with 5.2.2.8 and 5.2.2.10): must-revalidate, proxy-revalidate and s-maxage forbid serving the entry stale, even within its stale-if-error window.
func TestStaleForbidden(t *testing.T) {
	cases := map[string]string{
		"/must-revalidate":  "max-age=1, must-revalidate, stale-if-error=60",
		"/proxy-revalidate": "max-age=1, proxy-revalidate, stale-if-error=60",
		"/s-maxage":         "s-maxage=1, stale-if-error=60",
	}
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", cases[r.URL.Path])
		w.Header().Set("Etag", `"e1"`)
		fmt.Fprintf(w, "stored body of %s", r.URL.Path)
	})
	g := startGateway(t, "", originRulesSite, up.addr())
	for path := range cases {
		if r := originRulesFetch(g, "GET", path); r.status != 200 || !strings.HasSuffix(r.cacheStatus(), "; stored") {
			t.Fatalf("%s: %d %q, want it stored", path, r.status, r.cacheStatus())
		}
	}

	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(w, "origin trouble")
	})
	up.handler.Store(&h)
	time.Sleep(1200 * time.Millisecond) // every entry is stale

	for path := range cases {
		r := originRulesFetch(g, "GET", path)
		if (r.status != http.StatusServiceUnavailable && r.status != http.StatusGatewayTimeout) ||
			r.body == "stored body of "+path {
			t.Errorf("%s: stale with the origin failing: %d %q (%q), want the 503 or a 504, never the stale entry",
				path, r.status, r.body, r.cacheStatus())
		}
	}
}
