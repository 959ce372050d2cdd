package gateway_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// originSite is a cache in origin mode in front of the upstream.
const originSite = `
	cache_read products
	cache_write products
	reverse_proxy {upstream}
`

// ownFieldSite is originSite with a targeted field of the gateway's own.
const ownFieldSite = `
	cache_read products
	cache_write products {
		targeted_cache_control Gateway-Cache-Control
	}
	reverse_proxy {upstream}
`

// validating answers with an ETag that names the version, and 304 to a
// request whose If-None-Match names the current version. It counts the
// conditional requests it received.
type validating struct {
	version     atomic.Int64
	conditional atomic.Int64
	header      func(w http.ResponseWriter, notModified bool)
}

func (v *validating) serve(w http.ResponseWriter, r *http.Request) {
	etag := fmt.Sprintf(`"v%d"`, v.version.Load())
	if inm := r.Header.Get("If-None-Match"); inm != "" {
		v.conditional.Add(1)
		if inm == etag {
			w.Header().Set("Etag", etag)
			v.header(w, true)
			w.WriteHeader(http.StatusNotModified)
			return
		}
	}
	w.Header().Set("Etag", etag)
	v.header(w, false)
	fmt.Fprintf(w, "body of %s", etag)
}

// TestRevalidationMergesA304 checks RFC 9111 sections 4.3.1, 4.3.3 and
// 4.3.4: a stale entry is validated with its ETag; the 304 freshens it and
// updates its fields but Content-Length; the client gets the stored body,
// or its own 304; a full response replaces the entry.
func TestRevalidationMergesA304(t *testing.T) {
	v := &validating{}
	v.version.Store(1)
	v.header = func(w http.ResponseWriter, notModified bool) {
		if notModified {
			w.Header().Set("Cache-Control", "max-age=60")
			w.Header().Set("X-Version", "updated")
			return
		}
		// Stale on arrival: the next request must validate.
		w.Header().Set("Cache-Control", "max-age=10")
		w.Header().Set("Age", "10")
		w.Header().Set("X-Version", "first")
	}
	up := newUpstream(t, v.serve)
	g := startGateway(t, "", originSite, up.addr())

	first := g.get("/r")
	if first.body != `body of "v1"` || !strings.Contains(first.cacheStatus(), "stored") {
		t.Fatalf("first: %q %q", first.body, first.cacheStatus())
	}
	second := g.get("/r")
	if v.conditional.Load() != 1 {
		t.Fatalf("the stale entry was not validated: %d conditional requests", v.conditional.Load())
	}
	if second.status != 200 || second.body != first.body || second.header.Get("X-Version") != "updated" ||
		second.header.Get("Content-Length") != fmt.Sprint(len(first.body)) {
		t.Fatalf("after the 304: %d %q X-Version %q Content-Length %q", second.status, second.body,
			second.header.Get("X-Version"), second.header.Get("Content-Length"))
	}
	if cs := second.cacheStatus(); !strings.Contains(cs, "fwd=stale; fwd-status=304") || !strings.Contains(cs, "stored") {
		t.Errorf("after the 304: Cache-Status %q", cs)
	}
	third := g.get("/r")
	if !third.isHit() || third.header.Get("X-Version") != "updated" || up.count("/r") != 2 {
		t.Errorf("the freshened entry is not served: %q, %d upstream requests", third.cacheStatus(), up.count("/r"))
	}

	// The client's own condition is answered from the validated entry.
	g.get("/own") // stored stale
	own := g.get("/own", `If-None-Match: "v1"`)
	if own.status != http.StatusNotModified || own.body != "" {
		t.Errorf("a client's matching If-None-Match after validation: %d %q", own.status, own.body)
	}

	// A full response to the validation replaces the entry.
	g.get("/replaced")
	v.version.Store(2)
	replaced := g.get("/replaced")
	if replaced.body != `body of "v2"` {
		t.Errorf("full response to a validation: %q", replaced.body)
	}
}

// TestA304OfAnotherRepresentationIsNotUsed checks RFC 9111 section
// 4.3.4: a 304 whose ETag is not the stored response's may not update
// it. The cache asks again for the whole response, which replaces the
// entry, rather than serve the old body under the new ETag.
func TestA304OfAnotherRepresentationIsNotUsed(t *testing.T) {
	var conditional, full atomic.Int64
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("If-None-Match") != "" {
			conditional.Add(1)
			w.Header().Set("Etag", `"v2"`) // not what was asked about
			w.Header().Set("Cache-Control", "max-age=60")
			w.WriteHeader(http.StatusNotModified)
			return
		}
		if full.Add(1) == 1 {
			w.Header().Set("Etag", `"v1"`)
			w.Header().Set("Cache-Control", "max-age=10")
			w.Header().Set("Age", "10") // stale on arrival
			fmt.Fprint(w, "body of v1")
			return
		}
		w.Header().Set("Etag", `"v2"`)
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprint(w, "body of v2")
	})
	g := startGateway(t, "", originSite, up.addr())
	g.get("/x")
	second := g.get("/x")
	if second.status != 200 || second.body != "body of v2" || second.header.Get("Etag") != `"v2"` {
		t.Errorf("after a 304 naming v2: %d %q ETag %q (%q), want v2's body", second.status, second.body,
			second.header.Get("Etag"), second.cacheStatus())
	}
	if conditional.Load() != 1 || full.Load() != 2 {
		t.Errorf("%d conditional and %d full requests, want 1 and 2", conditional.Load(), full.Load())
	}
	if third := g.get("/x"); !third.isHit() || third.body != "body of v2" {
		t.Errorf("then: %q %q, want v2 stored", third.body, third.cacheStatus())
	}
	// A client that holds v2 already asks with its own condition: the
	// cache still asks again without it, and stores the answer.
	full.Store(0)
	g.get("/z") // v1, stale on arrival
	if r := g.get("/z", `If-None-Match: "v2"`); r.status != 200 || r.body != "body of v2" {
		t.Errorf("a client's If-None-Match \"v2\": %d %q (%q)", r.status, r.body, r.cacheStatus())
	}
	if r := g.get("/z"); !r.isHit() || r.body != "body of v2" {
		t.Errorf("after it: %q %q, want v2 stored", r.body, r.cacheStatus())
	}
	// A 304 with the same tag, made strong, updates the entry.
	var updated atomic.Int64
	same := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		if r.Header.Get("If-None-Match") == `W/"v1"` {
			updated.Add(1)
			w.Header().Set("Etag", `"v1"`)
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("Etag", `W/"v1"`)
		w.Header().Set("Age", "60")
		fmt.Fprint(w, "gzipped v1")
	})
	g2 := startGateway(t, "", originSite, same.addr())
	g2.get("/y")
	if r := g2.get("/y"); updated.Load() != 1 || r.body != "gzipped v1" || !strings.Contains(r.cacheStatus(), "fwd-status=304; stored") {
		t.Errorf("a 304 with the stored tag made strong: %q %q", r.body, r.cacheStatus())
	}
}

// TestRefetchKeepsTheOuterHeader checks that asking again after a 304 of
// another representation starts from the header the handlers before
// cache_write set, even when the 304 added to one of its fields.
func TestRefetchKeepsTheOuterHeader(t *testing.T) {
	var full atomic.Int64
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("If-None-Match") != "" {
			w.Header().Set("Etag", `"v2"`)
			w.Header().Set("X-Outer", "from the 304")
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("Etag", fmt.Sprintf(`"v%d"`, full.Add(1)))
		w.Header().Set("Cache-Control", "max-age=10")
		w.Header().Set("Age", "10") // stale on arrival
		fmt.Fprint(w, "body")
	})
	g := startGateway(t, "", `
	header X-Outer outer
	cache_read products
	cache_write products
	reverse_proxy {upstream}
`, up.addr())
	g.get("/o")
	r := g.get("/o")
	if full.Load() != 2 {
		t.Fatalf("%d full requests, want 2: no refetch", full.Load())
	}
	if got := r.header.Values("X-Outer"); !slices.Equal(got, []string{"outer"}) {
		t.Errorf("after the refetch: X-Outer %q, want the outer handler's alone", got)
	}
}

// TestNoCacheIsValidatedBeforeEachUse checks RFC 9111 section 5.2.2.4: a
// no-cache response is stored and every use validates it first.
func TestNoCacheIsValidatedBeforeEachUse(t *testing.T) {
	v := &validating{}
	v.version.Store(1)
	v.header = func(w http.ResponseWriter, _ bool) { w.Header().Set("Cache-Control", "no-cache") }
	up := newUpstream(t, v.serve)
	g := startGateway(t, "", originSite, up.addr())
	g.get("/nc")
	for i := range 3 {
		r := g.get("/nc")
		if r.body != `body of "v1"` || !strings.Contains(r.cacheStatus(), "fwd-status=304") {
			t.Fatalf("use %d: %q %q", i, r.body, r.cacheStatus())
		}
	}
	if n := v.conditional.Load(); n != 3 {
		t.Errorf("%d validations for 3 uses", n)
	}
}

// TestStaleIfError checks RFC 5861 section 4 and RFC 9111 section 4.2.4:
// within the window a stale entry is served when the origin answers 503
// or cannot be reached; past the window, the error is.
func TestStaleIfError(t *testing.T) {
	var failing atomic.Int64 // 0 healthy, 1 answering 503
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if failing.Load() == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, "origin trouble")
			return
		}
		// Stale on arrival, with two seconds to serve it on error.
		w.Header().Set("Cache-Control", "max-age=5, stale-if-error=2")
		w.Header().Set("Age", "5")
		fmt.Fprint(w, "good body")
	})
	g := startGateway(t, "", originSite, up.addr())
	g.get("/sie")
	failing.Store(1)
	r := g.get("/sie")
	if r.status != 200 || r.body != "good body" || !strings.Contains(r.cacheStatus(), "fwd-status=503") {
		t.Fatalf("503 within the window: %d %q %q", r.status, r.body, r.cacheStatus())
	}
	up.Close() // the origin is gone
	r = g.get("/sie")
	if r.status != 200 || r.body != "good body" {
		t.Fatalf("unreachable origin within the window: %d %q", r.status, r.body)
	}
	time.Sleep(2100 * time.Millisecond)
	r = g.get("/sie")
	if r.status != http.StatusBadGateway || r.body == "good body" {
		t.Errorf("past the window: %d %q, want the proxy's 502", r.status, r.body)
	}
}

// TestMustRevalidateUnreachableIs504 checks RFC 9111 section 4.2.4 and
// 5.2.2.2: a stale must-revalidate entry is never served stale; when the
// origin cannot be reached, the answer is 504.
func TestMustRevalidateUnreachableIs504(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=5, must-revalidate, stale-if-error=60")
		w.Header().Set("Age", "5")
		w.Header().Set("Etag", `"x"`)
		fmt.Fprint(w, "stored body")
	})
	g := startGateway(t, "", originSite, up.addr())
	g.get("/mr")
	up.Close()
	if r := g.get("/mr"); r.status != http.StatusGatewayTimeout || r.body == "stored body" {
		t.Errorf("must-revalidate with the origin gone: %d %q, want 504", r.status, r.body)
	}
}

// TestStaleWhileRevalidate checks RFC 5861 section 3: within the window a
// stale entry is served at once while one request refreshes it in the
// background, whatever the origin's delay.
func TestStaleWhileRevalidate(t *testing.T) {
	var n atomic.Int64
	var slow atomic.Bool
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if slow.Load() {
			time.Sleep(time.Second)
		}
		// Stale two seconds after it is stored, then served stale for 30.
		w.Header().Set("Cache-Control", "max-age=2, stale-while-revalidate=30")
		fmt.Fprintf(w, "version %d", n.Add(1))
	})
	g := startGateway(t, "", originSite, up.addr())
	g.get("/swr")
	time.Sleep(2100 * time.Millisecond)
	slow.Store(true)
	var wg sync.WaitGroup
	var slowest atomic.Int64
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			r := g.get("/swr")
			slowest.Store(max(slowest.Load(), int64(time.Since(start))))
			if r.body != "version 1" {
				t.Errorf("within the window: %q, want the stale version 1", r.body)
			}
			if !strings.Contains(r.cacheStatus(), "hit; ttl=-") {
				t.Errorf("within the window: Cache-Status %q, want a stale hit", r.cacheStatus())
			}
		}()
	}
	wg.Wait()
	t.Logf("slowest stale answer: %v, with the origin taking 1s", time.Duration(slowest.Load()))
	if time.Duration(slowest.Load()) > 500*time.Millisecond {
		t.Errorf("a stale answer waited for the origin: %v", time.Duration(slowest.Load()))
	}
	time.Sleep(1500 * time.Millisecond) // the refresh lands
	if got := up.count("/swr"); got != 2 {
		t.Errorf("the origin got %d requests, want 2: the first and one refresh", got)
	}
	if r := g.get("/swr"); !r.isHit() || r.body != "version 2" {
		t.Errorf("after the refresh: %q %q, want a fresh hit on version 2", r.body, r.cacheStatus())
	}
}

// concurrentGets sends n GETs of path at once, the i-th with the header
// lines headers(i), and returns the bodies in order.
func concurrentGets(g *gateway, n int, headers func(i int) []string, path string) []string {
	g.t.Helper()
	bodies := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			var resp response
			resp, errs[i] = send("GET", "http://"+g.addr+path, headerOf(headers(i)), "")
			bodies[i] = resp.body
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		g.t.Fatal(err)
	}
	return bodies
}

// TestCollapsedMisses checks that concurrent misses for one key reach the
// origin once and are all answered from the stored response.
func TestCollapsedMisses(t *testing.T) {
	var n atomic.Int64
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(300 * time.Millisecond)
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprintf(w, "answer %d", n.Add(1))
	})
	g := startGateway(t, "", originSite, up.addr())
	const clients = 100
	bodies := concurrentGets(g, clients, func(int) []string { return nil }, "/cold")
	if got := up.count("/cold"); got != 1 {
		t.Errorf("%d concurrent misses reached the origin %d times, want 1", clients, got)
	}
	for i, b := range bodies {
		if b != "answer 1" {
			t.Fatalf("client %d got %q", i, b)
		}
	}
}

// TestCollapsingNeverSharesAPrivateAnswer checks that when the leader's
// answer cannot be stored, every waiter fetches its own.
func TestCollapsingNeverSharesAPrivateAnswer(t *testing.T) {
	var n atomic.Int64
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(200 * time.Millisecond)
		w.Header().Set("Cache-Control", "private, max-age=60")
		fmt.Fprintf(w, "for %s #%d", r.Header.Get("X-User"), n.Add(1))
	})
	g := startGateway(t, "", originSite, up.addr())
	const clients = 20
	bodies := concurrentGets(g, clients, func(i int) []string { return []string{fmt.Sprintf("X-User: user%d", i)} }, "/me")
	for i, b := range bodies {
		if !strings.HasPrefix(b, fmt.Sprintf("for user%d #", i)) {
			t.Errorf("client %d got %q", i, b)
		}
	}
	if got := up.count("/me"); got != clients {
		t.Errorf("the origin answered %d of %d private requests", got, clients)
	}
}

// TestCollapsingReleasesWaitersAtAnUnstorableHeader checks that once the
// leader's header shows its response will not be stored, the requests
// for the key go to the origin at once, not after the leader's body ends:
// a stream (server-sent events) may last for minutes.
func TestCollapsingReleasesWaitersAtAnUnstorableHeader(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan string, 8)
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		arrived <- r.Header.Get("X-Client")
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache") // no validator: not stored
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		if r.Header.Get("X-Client") == "first" {
			<-release
		}
		fmt.Fprint(w, "data: done\n\n")
	})
	g := startGateway(t, "", originSite, up.addr())
	defer close(release)

	req, _ := http.NewRequest("GET", "http://"+g.addr+"/events", nil)
	req.Header.Set("X-Client", "first")
	first, err := client.Do(req) // returns with the header; the body streams on
	if err != nil {
		t.Fatal(err)
	}
	defer first.Body.Close()
	<-arrived
	go send("GET", "http://"+g.addr+"/events", http.Header{"X-Client": {"second"}}, "")
	select {
	case who := <-arrived:
		if who != "second" {
			t.Fatalf("the origin saw %q", who)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the second request waits for the first's stream to end")
	}
}

// TestPreconditionsOnlyFor2xx checks RFC 9110 section 13.2.1: a stored
// response other than 2xx ignores the request's preconditions.
func TestPreconditionsOnlyFor2xx(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("Etag", `"e"`)
		w.Header().Set("Last-Modified", "Mon, 02 Jan 2006 15:04:05 GMT")
		if r.URL.Path == "/missing" {
			w.WriteHeader(http.StatusNotFound)
		}
		fmt.Fprint(w, "body")
	})
	g := startGateway(t, "", originSite, up.addr())
	for _, path := range []string{"/missing", "/found"} {
		g.get(path)
		for _, condition := range []string{`If-None-Match: "e"`, "If-Modified-Since: Tue, 03 Jan 2006 15:04:05 GMT"} {
			r := g.get(path, condition)
			want := http.StatusNotModified
			if path == "/missing" {
				want = http.StatusNotFound
			}
			if !r.isHit() || r.status != want {
				t.Errorf("%s with %s: %d (%q), want %d from the entry", path, condition, r.status, r.cacheStatus(), want)
			}
		}
	}
}

// TestPreconditionsTheOriginAnswersAreNotCollapsed checks that a request
// with If-Match, which cache_read leaves to the origin, does not wait for
// another request's fetch and get its answer: the origin would have said
// 412.
func TestPreconditionsTheOriginAnswersAreNotCollapsed(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan string, 8)
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		arrived <- r.Header.Get("If-Match")
		if r.Header.Get("If-Match") != "" {
			w.WriteHeader(http.StatusPreconditionFailed)
			return
		}
		<-release
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Etag", `"v1"`)
		fmt.Fprint(w, "v1")
	})
	g := startGateway(t, "", originSite, up.addr())
	slow := make(chan response, 1)
	go func() {
		r, _ := send("GET", "http://"+g.addr+"/slow", nil, "")
		slow <- r
	}()
	<-arrived // the slow fetch leads
	conditional := make(chan response, 1)
	go func() {
		r, _ := send("GET", "http://"+g.addr+"/slow", http.Header{"If-Match": {`"other"`}}, "")
		conditional <- r
	}()
	select {
	case <-arrived:
	case <-time.After(5 * time.Second):
		t.Error("the If-Match request waits for the other's fetch")
	}
	close(release)
	if r := <-conditional; r.status != http.StatusPreconditionFailed {
		t.Errorf("If-Match \"other\": %d %q (%q), want the origin's 412", r.status, r.body, r.cacheStatus())
	}
	if r := <-slow; r.body != "v1" {
		t.Errorf("the leader got %d %q", r.status, r.body)
	}
}

// TestLeaderDisconnectDoesNotAbortWaiters checks that a client that leaves
// while its fetch leads others does not abort that fetch.
func TestLeaderDisconnectDoesNotAbortWaiters(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(500 * time.Millisecond)
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprint(w, "shared answer")
	})
	g := startGateway(t, "", originSite, up.addr())
	leaderDone := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+g.addr+"/lead", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		leaderDone <- err
	}()
	time.Sleep(50 * time.Millisecond)
	waiter := g.get("/lead")
	if err := <-leaderDone; err == nil {
		t.Fatal("the leader did not time out")
	}
	if waiter.status != 200 || waiter.body != "shared answer" {
		t.Errorf("the waiter got %d %q", waiter.status, waiter.body)
	}
	if got := up.count("/lead"); got != 1 {
		t.Errorf("the origin was asked %d times, want 1", got)
	}
	if r := g.get("/lead"); !r.isHit() {
		t.Errorf("the leader's fetch was not stored: %q", r.cacheStatus())
	}
}

// TestRangesFromAStored200 checks RFC 9110 section 14: a Range GET on a
// complete stored 200 gets 206 with Content-Range, or 416; If-Range that
// does not match gets the whole 200; a 206 from the origin is not stored.
func TestRangesFromAStored200(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Etag", `"r1"`)
		w.Header().Set("X-Stored", "yes")
		http.ServeContent(w, r, "", time.Time{}, strings.NewReader("0123456789"))
	})
	g := startGateway(t, "", originSite, up.addr())
	if r := g.get("/partial", "Range: bytes=0-3"); r.status != http.StatusPartialContent || strings.Contains(r.cacheStatus(), "stored") {
		t.Errorf("a 206 from the origin: %d %q, want it passed on and not stored", r.status, r.cacheStatus())
	}
	g.get("/bytes")
	tests := []struct {
		headers      []string
		status       int
		body, crange string
	}{
		{[]string{"Range: bytes=2-5"}, 206, "2345", "bytes 2-5/10"},
		{[]string{"Range: bytes=7-"}, 206, "789", "bytes 7-9/10"},
		{[]string{"Range: bytes=-3"}, 206, "789", "bytes 7-9/10"},
		{[]string{"Range: bytes=5-100"}, 206, "56789", "bytes 5-9/10"},
		{[]string{"Range: bytes=10-"}, 416, "", "bytes */10"},
		{[]string{"Range: bytes=0-1,4-5"}, 200, "0123456789", ""},
		{[]string{"Range: bytes=2-5", `If-Range: "r1"`}, 206, "2345", "bytes 2-5/10"},
		{[]string{"Range: bytes=2-5", `If-Range: "old"`}, 200, "0123456789", ""},
	}
	for _, tt := range tests {
		r := g.get("/bytes", tt.headers...)
		if r.status != tt.status || r.body != tt.body || r.header.Get("Content-Range") != tt.crange || !r.isHit() {
			t.Errorf("%q: %d %q Content-Range %q (%q), want %d %q %q from the cache", tt.headers, r.status, r.body,
				r.header.Get("Content-Range"), r.cacheStatus(), tt.status, tt.body, tt.crange)
		}
		if tt.status == 206 && r.header.Get("X-Stored") != "yes" {
			t.Errorf("%q: the 206 lacks the stored fields", tt.headers)
		}
	}
	if n := up.count("/bytes"); n != 1 {
		t.Errorf("the origin served /bytes %d times, want 1", n)
	}
}

// TestVaryValuesNormalised checks RFC 9111 section 4.1: variants are
// selected by header values compared after normalising whitespace, line
// folding and, for languages, case.
func TestVaryValuesNormalised(t *testing.T) {
	up := newUpstream(t, serial("Cache-Control", "max-age=60", "Vary", "Accept-Language"))
	g := startGateway(t, "", originSite, up.addr())
	first := g.get("/lang", "Accept-Language: en, de")
	for _, h := range [][]string{{"Accept-Language: en,de"}, {"Accept-Language:  EN ,  De "}, {"Accept-Language: en", "Accept-Language: de"}} {
		if r := g.get("/lang", h...); !r.isHit() || r.body != first.body {
			t.Errorf("%q: %q, want the variant stored for \"en, de\"", h, r.cacheStatus())
		}
	}
	if r := g.get("/lang", "Accept-Language: fr"); r.isHit() || !strings.Contains(r.cacheStatus(), "fwd=vary-miss") {
		t.Errorf("another language: %q, want a vary-miss", r.cacheStatus())
	}
	if r := g.get("/lang", "Accept-Language: en, de", `If-Match: "x"`); !strings.Contains(r.cacheStatus(), "products; fwd=bypass") {
		t.Errorf("a request with If-Match: %q, want fwd=bypass", r.cacheStatus())
	}
}

// seen records the requests an upstream received, in order, as
// "METHOD path" with the conditional and Range fields that came along.
type seen struct {
	mu   sync.Mutex
	reqs []string
}

func (s *seen) add(r *http.Request) {
	line := r.Method + " " + r.URL.Path
	for _, name := range []string{"If-None-Match", "If-Modified-Since", "Range"} {
		if v := r.Header.Get(name); v != "" {
			line += " " + name + "=" + v
		}
	}
	s.mu.Lock()
	s.reqs = append(s.reqs, line)
	s.mu.Unlock()
}

// of returns the requests received for path.
func (s *seen) of(path string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, line := range s.reqs {
		if strings.Fields(line)[1] == path {
			out = append(out, line)
		}
	}
	return out
}

// TestHeadValidatesAndFreshens checks RFC 9111 sections 4.3.1 and 4.3.5: a
// HEAD that finds a stale entry validates it; a 304, or a 200 whose
// validators and Content-Length match the stored response, freshens the
// entry and updates its fields, and the client gets the stored header;
// a 200 that describes another body leaves the entry stale.
func TestHeadValidatesAndFreshens(t *testing.T) {
	var log seen
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		log.add(r)
		path := r.URL.Path
		if path == "/etag" || path == "/etag2" {
			w.Header().Set("Etag", `"v1"`)
		}
		if r.Method == http.MethodGet {
			// Stale on arrival, with a field only the GET sends; kept
			// for its stale-if-error window, validator or not.
			w.Header().Set("Cache-Control", "max-age=10, stale-if-error=60")
			w.Header().Set("Age", "10")
			w.Header().Set("X-Version", "first")
			w.Header().Set("X-From-Get", "kept")
			fmt.Fprint(w, "stored body")
			return
		}
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("X-Version", "updated")
		switch {
		case path == "/etag" && r.Header.Get("If-None-Match") == `"v1"`:
			w.WriteHeader(http.StatusNotModified)
		case path == "/other":
			w.Header().Set("Content-Length", "99") // another body
		case path == "/bare":
			// Nothing to compare: section 4.3.5 updates the entry.
		case path == "/etag2":
			w.Header().Set("Etag", `"v2"`) // another version, same length
			w.Header().Set("Content-Length", fmt.Sprint(len("stored body")))
		case path == "/sie":
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		case path == "/gone":
			// Section 4.3.5 updates from a 200 only.
			w.WriteHeader(http.StatusGone)
			return
		default:
			w.Header().Set("Content-Length", fmt.Sprint(len("stored body")))
		}
	})
	g := startGateway(t, "", originSite, up.addr())
	for _, tc := range []struct {
		path, upstream, status string
		fresh                  bool
	}{
		{"/etag", `HEAD /etag If-None-Match="v1"`, "fwd=stale; fwd-status=304", true},
		{"/length", "HEAD /length", "fwd=stale; fwd-status=200; stored", true},
		{"/other", "HEAD /other", "fwd=stale; fwd-status=200", false},
		{"/bare", "HEAD /bare", "fwd=stale; fwd-status=200; stored", true},
		{"/etag2", `HEAD /etag2 If-None-Match="v1"`, "fwd=stale; fwd-status=200", false},
		// The origin fails: the stale entry answers within stale-if-error.
		{"/sie", "HEAD /sie", "fwd=stale; fwd-status=503", false},
		{"/gone", "HEAD /gone", "fwd=stale; fwd-status=410", false},
	} {
		g.get(tc.path) // stored stale
		head := g.request("HEAD", tc.path)
		if got := log.of(tc.path); len(got) != 2 || got[1] != tc.upstream {
			t.Errorf("%s: the upstream saw %q, want the GET then %q", tc.path, got, tc.upstream)
		}
		if !strings.Contains(head.cacheStatus(), tc.status) || (!tc.fresh && strings.Contains(head.cacheStatus(), "stored")) {
			t.Errorf("%s: HEAD Cache-Status %q, want %q", tc.path, head.cacheStatus(), tc.status)
		}
		if tc.path == "/sie" && (head.status != 200 || head.header.Get("X-Version") != "first") {
			t.Errorf("/sie: HEAD answered %d with %v, want the stale entry's header", head.status, head.header)
		}
		if tc.fresh && (head.status != 200 || head.header.Get("X-Version") != "updated" ||
			head.header.Get("X-From-Get") != "kept" || head.header.Get("Content-Length") != "11") {
			t.Errorf("%s: HEAD answered %d with %v, want the updated stored header", tc.path, head.status, head.header)
		}
		r := g.get(tc.path)
		switch {
		case tc.fresh && (!r.isHit() || r.body != "stored body" || r.header.Get("X-Version") != "updated"):
			t.Errorf("%s: after the HEAD: %q %q X-Version %q, want a hit on the updated entry",
				tc.path, r.body, r.cacheStatus(), r.header.Get("X-Version"))
		case !tc.fresh && r.isHit():
			t.Errorf("%s: a HEAD describing another body freshened the entry: %q", tc.path, r.cacheStatus())
		}
	}
}

// TestHeadFreshensItsOwnVariant: a HEAD updates the one stored response
// its request selects (RFC 9111 sections 4.1 and 4.3.5), not the
// resource's other variants.
func TestHeadFreshensItsOwnVariant(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Vary", "Accept-Language")
		if r.Method == http.MethodHead {
			w.Header().Set("Cache-Control", "max-age=60")
			return
		}
		w.Header().Set("Cache-Control", "max-age=10, stale-if-error=60")
		w.Header().Set("Age", "10") // stale on arrival, kept for its window
		fmt.Fprint(w, "in "+r.Header.Get("Accept-Language"))
	})
	g := startGateway(t, "", originSite, up.addr())
	g.get("/v", "Accept-Language: en")
	g.get("/v", "Accept-Language: fr")
	if head := g.request("HEAD", "/v", "Accept-Language: en"); !strings.Contains(head.cacheStatus(), "fwd-status=200; stored") {
		t.Fatalf("HEAD in English: %q, want the English variant freshened", head.cacheStatus())
	}
	if r := g.get("/v", "Accept-Language: en"); !r.isHit() || r.body != "in en" {
		t.Errorf("English after the HEAD: %q %q, want a hit", r.body, r.cacheStatus())
	}
	if r := g.get("/v", "Accept-Language: fr"); r.isHit() {
		t.Errorf("French after an English HEAD: %q %q, want it still stale", r.body, r.cacheStatus())
	}
}

// TestHeadWhenAHandlerChangedTheKey: a handler between cache_read and
// cache_write that changes the key makes the stale entry cache_read found
// another request's. A HEAD then passes through as a plain miss and
// updates nothing: the entry stays stale for the requests it belongs to.
func TestHeadWhenAHandlerChangedTheKey(t *testing.T) {
	var log seen
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		log.add(r)
		w.Header().Set("Cache-Control", "max-age=60")
		if r.Method == http.MethodGet {
			w.Header().Set("Cache-Control", "max-age=10, stale-if-error=60")
			w.Header().Set("Age", "10") // stale on arrival
			fmt.Fprint(w, "stored body")
		}
	})
	g := startGateway(t, "", `
	@head method HEAD
	route {
		cache_read products
		request_header @head X-User alice
		cache_write products {
			key_headers X-User
		}
		reverse_proxy {upstream}
	}
`, up.addr())
	g.get("/p") // stored stale, under the key without X-User
	head := g.request("HEAD", "/p")
	if head.status != 200 || !strings.Contains(head.cacheStatus(), "fwd=uri-miss") {
		t.Errorf("HEAD: %d %q, want 200 passed on as a miss", head.status, head.cacheStatus())
	}
	if got := log.of("/p"); len(got) != 2 || got[1] != "HEAD /p" {
		t.Errorf("the upstream saw %q, want the GET then the HEAD", got)
	}
	if r := g.get("/p"); r.isHit() {
		t.Errorf("another key's HEAD freshened the entry: %q", r.cacheStatus())
	}
}

// TestValidationDoesNotReplaceANewerEntry: a HEAD validates a stale
// entry and the origin's 304 is slow; meanwhile a GET stores the newer
// version. The 304 answers the HEAD but must not put the older version
// back (RFC 9111 section 4.3.4 updates the response that was validated,
// not whatever the key holds since).
func TestValidationDoesNotReplaceANewerEntry(t *testing.T) {
	var log seen
	gets := 0
	var mu sync.Mutex
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		log.add(r)
		if r.Method == http.MethodHead {
			time.Sleep(300 * time.Millisecond)
			w.Header().Set("Cache-Control", "max-age=60")
			w.WriteHeader(http.StatusNotModified)
			return
		}
		mu.Lock()
		gets++
		n := gets
		mu.Unlock()
		if n == 1 {
			w.Header().Set("Cache-Control", "max-age=10")
			w.Header().Set("Age", "10") // stale on arrival
			w.Header().Set("Etag", `"v1"`)
			fmt.Fprint(w, "v1")
			return
		}
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Etag", `"v2"`)
		fmt.Fprint(w, "v2")
	})
	g := startGateway(t, "", originSite, up.addr())
	g.get("/r")
	done := make(chan response)
	go func() { done <- g.request("HEAD", "/r") }()
	deadline := time.Now().Add(2 * time.Second)
	for len(log.of("/r")) < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if r := g.get("/r"); r.body != "v2" || !strings.Contains(r.cacheStatus(), "stored") {
		t.Fatalf("setup: the GET during the HEAD's validation got %q %q, want v2 stored", r.body, r.cacheStatus())
	}
	head := <-done
	if head.status != 200 || strings.Contains(head.cacheStatus(), "stored") {
		t.Errorf("HEAD: %d %q, want 200 from the validated entry, not stored", head.status, head.cacheStatus())
	}
	if r := g.get("/r"); !r.isHit() || r.body != "v2" {
		t.Errorf("after the HEAD's late 304: %q %q, want a hit on v2", r.body, r.cacheStatus())
	}
}

// TestValidationUpdatesAsTheAnswerSays checks what a 304 update keeps
// and drops (RFC 9111 sections 3.2 and 4.3.4, RFC 9110 section 6.6.1,
// RFC 9211, RFC 9213): the entry's age starts from the 304's, not from
// the stored response's Age or Date (a 304 without a Date is dated when
// received);
// the cache's own targeted field honoured in the 304 is neither stored
// nor sent on; what the caches before this one said in Cache-Status stays.
func TestValidationUpdatesAsTheAnswerSays(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Etag", `"v1"`)
		if r.Header.Get("If-None-Match") == `"v1"` {
			w.Header().Set("Gateway-Cache-Control", "max-age=60")
			w.Header().Set("Cache-Control", "max-age=5")
			w.Header()["Date"] = nil // dated by the cache when received
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("Cache-Control", "max-age=60")
		// Stale on arrival, by its Age and by its Date alike.
		w.Header().Set("Age", "60")
		w.Header().Set("Date", time.Now().Add(-time.Minute).UTC().Format(http.TimeFormat))
		w.Header().Set("Cache-Status", "edge; fwd=uri-miss")
		fmt.Fprint(w, "body")
	})
	g := startGateway(t, "", ownFieldSite, up.addr())
	g.get("/u")
	for i, want := range []string{"fwd=stale; fwd-status=304; stored; ttl=60", "hit; ttl="} {
		r := g.get("/u")
		if !strings.Contains(r.cacheStatus(), want) || r.body != "body" {
			t.Errorf("request %d: %q %q, want %q", i+2, r.body, r.cacheStatus(), want)
		}
		if !strings.HasPrefix(r.cacheStatus(), "edge; fwd=uri-miss, products;") {
			t.Errorf("request %d: Cache-Status %q lost the upstream cache's member", i+2, r.cacheStatus())
		}
		if v := r.header.Get("Gateway-Cache-Control"); v != "" {
			t.Errorf("request %d: the cache's own field went out: %q", i+2, v)
		}
		if age := r.header.Get("Age"); age != "0" {
			t.Errorf("request %d: Age %q, want 0: the 304 had none", i+2, age)
		}
	}
}

// TestValidationKeepsTheOwnTargetedField checks RFC 9111 section 4.3.4
// with RFC 9213: the gateway's own targeted field, removed from every
// response that leaves, stays part of the stored response, and a 304
// without it leaves it in force rather than the Cache-Control meant for
// browsers.
func TestValidationKeepsTheOwnTargetedField(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Etag", `"v1"`)
		if r.Header.Get("If-None-Match") == `"v1"` {
			w.WriteHeader(http.StatusNotModified) // no freshness of its own
			return
		}
		w.Header().Set("Gateway-Cache-Control", "max-age=60")
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("Age", "60") // stale on arrival
		fmt.Fprint(w, "body")
	})
	g := startGateway(t, "", ownFieldSite, up.addr())
	for i, want := range []string{"stored", "fwd=stale; fwd-status=304; stored; ttl=60", "hit; ttl="} {
		r := g.get("/t")
		if !strings.Contains(r.cacheStatus(), want) || r.body != "body" {
			t.Errorf("request %d: %q %q, want %q", i+1, r.body, r.cacheStatus(), want)
		}
		if v, ok := r.header["Gateway-Cache-Control"]; ok {
			t.Errorf("request %d: the cache's own field went out: %q", i+1, v)
		}
		if r.header.Get("Cache-Control") != "no-cache" {
			t.Errorf("request %d: Cache-Control %q, want the origin's no-cache", i+1, r.header.Get("Cache-Control"))
		}
	}
	if n := up.count("/t"); n != 2 {
		t.Errorf("%d upstream requests, want 2: the freshened entry must serve the third", n)
	}
	// A reload to a config that does not call the field its own keeps
	// the entry: the field is never served.
	g.get("/after-reload")
	g.reload("", originSite, up.addr())
	for i := range 2 {
		r := g.get("/after-reload")
		if v, ok := r.header["Gateway-Cache-Control"]; ok || r.body != "body" {
			t.Errorf("after the reload, request %d: %q, Gateway-Cache-Control %q (%q)", i+1, r.body, v, r.cacheStatus())
		}
	}
}

// TestRefreshAsksForTheWholeResponse checks RFC 5861 section 3 with the
// requests that start a refresh: a HEAD, or a Range GET, served from a
// stale entry, refreshes it with a plain GET whose full response is
// stored.
func TestRefreshAsksForTheWholeResponse(t *testing.T) {
	var log seen
	var n atomic.Int64
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		log.add(r)
		if len(log.of(r.URL.Path)) == 1 {
			// Stale on arrival, within its stale-while-revalidate window.
			w.Header().Set("Cache-Control", "max-age=10, stale-while-revalidate=60")
			w.Header().Set("Age", "10")
		} else {
			w.Header().Set("Cache-Control", "max-age=60")
		}
		body := fmt.Sprintf("version %d", n.Add(1))
		if r.Header.Get("Range") == "bytes=0-1" {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes 0-1/%d", len(body)))
			w.WriteHeader(http.StatusPartialContent)
			fmt.Fprint(w, body[:2])
			return
		}
		fmt.Fprint(w, body)
	})
	g := startGateway(t, "", originSite, up.addr())
	for _, tc := range []struct {
		path   string
		method string
		header []string
	}{
		{"/head", "HEAD", nil},
		{"/range", "GET", []string{"Range: bytes=0-1"}},
		// The client's wishes are for its own request, not the cache's.
		{"/no-store", "GET", []string{"Cache-Control: no-store"}},
	} {
		first := g.get(tc.path)
		stored := g.adminJSON("GET", "/cache/products", "", 200)["stored"]
		if r := g.request(tc.method, tc.path, tc.header...); r.status >= 300 {
			t.Fatalf("%s: %s answered %d", tc.path, tc.method, r.status)
		}
		deadline := time.Now().Add(2 * time.Second)
		for g.adminJSON("GET", "/cache/products", "", 200)["stored"] == stored && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond) // until the refresh's store lands
		}
		if got := log.of(tc.path); len(got) != 2 || got[1] != "GET "+tc.path {
			t.Errorf("%s: the upstream saw %q, want the GET, then the refresh's plain GET", tc.path, got)
		}
		if r := g.get(tc.path); !r.isHit() || r.body == first.body {
			t.Errorf("%s: after the refresh: %q %q, want a fresh hit on a new version", tc.path, r.body, r.cacheStatus())
		}
	}
}

// TestA304ThatAddsVarySelectsVariants checks RFC 9111 sections 4.1 and
// 4.3.4: a 304 updates the stored response's Vary too, and the updated
// response is then selected by the headers it names. An entry stored
// without Vary must not go on answering every request, whatever its
// Accept-Language.
func TestA304ThatAddsVarySelectsVariants(t *testing.T) {
	var n atomic.Int64
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			w.Header().Set("Etag", `"en1"`)
			w.Header().Set("Cache-Control", "max-age=0")
			fmt.Fprint(w, "english")
			return
		}
		w.Header().Set("Vary", "Accept-Language")
		w.Header().Set("Cache-Control", "max-age=60")
		if strings.HasPrefix(r.Header.Get("Accept-Language"), "fr") {
			w.Header().Set("Etag", `"fr1"`)
			fmt.Fprint(w, "français")
			return
		}
		w.Header().Set("Etag", `"en1"`)
		if r.Header.Get("If-None-Match") == `"en1"` {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		fmt.Fprint(w, "english")
	})
	g := startGateway(t, "", originSite, up.addr())
	g.get("/v", "Accept-Language: en") // stored stale, without Vary
	if r := g.get("/v", "Accept-Language: en"); r.body != "english" || !strings.Contains(r.cacheStatus(), "fwd-status=304; stored") {
		t.Fatalf("validation: %q %q", r.body, r.cacheStatus())
	}
	if r := g.get("/v", "Accept-Language: fr"); r.body != "français" {
		t.Errorf("Accept-Language: fr after a 304 that added Vary: %q (%q), want the origin's French", r.body, r.cacheStatus())
	}
	if r := g.get("/v", "Accept-Language: en"); !r.isHit() || r.body != "english" {
		t.Errorf("Accept-Language: en then: %q (%q), want the validated entry", r.body, r.cacheStatus())
	}
	if r := g.get("/v", "Accept-Language: fr"); !r.isHit() || r.body != "français" {
		t.Errorf("Accept-Language: fr then: %q (%q), want its own entry", r.body, r.cacheStatus())
	}
}

// TestA304ThatForbidsStoringDropsTheEntry checks RFC 9111 section 4.3.4:
// the 304's fields update the stored response, and once they say
// no-store or private the stored response may not be kept to be served
// stale later, under the directives it had before.
func TestA304ThatForbidsStoringDropsTheEntry(t *testing.T) {
	for _, tc := range []struct{ cc, request string }{
		{"no-store", ""}, {"private, max-age=60", ""},
		// The request's own no-store does not hide the response's.
		{"no-store", "Cache-Control: no-store"},
	} {
		cc := tc.cc
		t.Run(cc+" "+tc.request, func(t *testing.T) {
			var n, conditional atomic.Int64
			up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Etag", `"v1"`)
				switch n.Add(1) {
				case 1:
					w.Header().Set("Cache-Control", "max-age=1, stale-if-error=600")
					w.Header().Set("Age", "1") // stale on arrival
					fmt.Fprint(w, "v1")
				case 2:
					conditional.Add(1)
					w.Header().Set("Cache-Control", cc)
					w.WriteHeader(http.StatusNotModified)
				default:
					w.WriteHeader(http.StatusServiceUnavailable)
				}
			})
			g := startGateway(t, "", originSite, up.addr())
			g.get("/s")
			var headers []string
			if tc.request != "" {
				headers = append(headers, tc.request)
			}
			if r := g.get("/s", headers...); r.status != 200 || r.body != "v1" || conditional.Load() != 1 {
				t.Fatalf("validation: %d %q (%q)", r.status, r.body, r.cacheStatus())
			}
			if r := g.get("/s"); r.status != http.StatusServiceUnavailable {
				t.Errorf("the origin failing after a 304 with %q: %d %q (%q), want its 503, not the entry served stale",
					cc, r.status, r.body, r.cacheStatus())
			}
		})
	}
}

// TestRefreshWithATruncatedBodyDoesNotCrash: a background refresh
// (RFC 5861 stale-while-revalidate) whose upstream cuts the body short
// makes reverse_proxy panic with http.ErrAbortHandler, in a goroutine
// that no client's connection recovers; the gateway must live on, and
// nothing partial may be stored.
func TestRefreshWithATruncatedBodyDoesNotCrash(t *testing.T) {
	var n atomic.Int64
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=1, stale-while-revalidate=30")
		if n.Add(1) == 1 {
			fmt.Fprint(w, "version 1")
			return
		}
		// Declares 100 bytes, sends 7, and closes the connection.
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		buf.WriteString("HTTP/1.1 200 OK\r\nCache-Control: max-age=1, stale-while-revalidate=30\r\nContent-Length: 100\r\n\r\npartial")
		buf.Flush()
		conn.Close()
	})
	g := startGateway(t, "", originSite, up.addr())
	g.get("/swr")
	time.Sleep(1100 * time.Millisecond)
	if r := g.get("/swr"); r.body != "version 1" || !strings.Contains(r.cacheStatus(), "hit; ttl=-") {
		t.Fatalf("within the window: %q %q, want the stale entry", r.body, r.cacheStatus())
	}
	deadline := time.Now().Add(3 * time.Second)
	for n.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // the refresh fails
	r, err := send("GET", "http://"+g.addr+"/swr", nil, "")
	if err != nil {
		t.Fatalf("the gateway died after a failed background refresh: %v\n%s", err, tail(g.logs.String(), 15))
	}
	if r.body != "version 1" {
		t.Errorf("after the failed refresh: %q (%q), want the stale entry still", r.body, r.cacheStatus())
	}
}

// TestReplacedEntriesStayWithinMaxSize: a response stored again under a
// key the cache holds (here a stale entry's validation answered with a
// new, larger 200) is admitted and evicts as a new entry does. It used to
// be an update of the key's cost, which evicts nothing: a cache of 1 MiB
// held and served about 20 MiB.
func TestReplacedEntriesStayWithinMaxSize(t *testing.T) {
	var big atomic.Bool
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if !big.Load() {
			w.Header().Set("Cache-Control", "max-age=1")
			w.Header().Set("Etag", `"small"`)
			fmt.Fprint(w, "small")
			return
		}
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("Etag", `"big"`)
		w.Write(make([]byte, 200<<10))
	})
	g := startGateway(t, "cache_pool {\n\t\tmax_size 1MiB\n\t\tmax_entry_size 512KiB\n\t}", originSite, up.addr())
	const keys = 100
	for i := range keys {
		g.get(fmt.Sprintf("/k%d", i))
	}
	time.Sleep(1100 * time.Millisecond)
	big.Store(true)
	for i := range keys {
		g.get(fmt.Sprintf("/k%d", i)) // validated; the origin answers a new 200
	}
	hits := 0
	for i := range keys {
		if r := g.get(fmt.Sprintf("/k%d", i)); r.isHit() && len(r.body) == 200<<10 {
			hits++
		}
	}
	if held := hits * 200 << 10; held > 1<<20 {
		t.Errorf("a 1 MiB cache serves %d KiB of bodies", held>>10)
	}
	stats := g.adminJSON("GET", "/cache/products", "", 200)
	if size, _ := stats["size_bytes"].(float64); size > 1<<20 {
		t.Errorf("size_bytes %v over max_size 1 MiB", stats["size_bytes"])
	}
}

// TestAConditionalLeaderDoesNotReleaseTheHerd: when the request that leads
// a fetch of a cold key is conditional (a browser revalidating its own
// copy), its 304 is its own answer, not one to store; the requests that
// wait must then follow a next leader, not all go to the origin, and the
// key must not be taken for uncachable.
func TestAConditionalLeaderDoesNotReleaseTheHerd(t *testing.T) {
	up := newUpstream(t, slowV1(300*time.Millisecond, "max-age=60"))
	g := startGateway(t, "", originSite, up.addr())
	go send("GET", "http://"+g.addr+"/hot", http.Header{"If-None-Match": {`"v1"`}}, "")
	waitFor(t, "the conditional leader's fetch", func() bool { return up.count("/hot") == 1 })
	bodies := concurrentGets(g, 20, func(int) []string { return nil }, "/hot")
	for _, b := range bodies {
		if b != "v1" {
			t.Fatalf("a waiter got %q", b)
		}
	}
	if got := up.count("/hot"); got != 2 {
		t.Errorf("the origin got %d requests for one cold key, want 2: the leader's own 304 released its waiters", got)
	}
}

// TestLeaderStopsWhenTheLastWaiterLeaves: a leader whose client left goes
// on fetching while others wait on it, and stops when the last of them
// gives up too, not only if none waits at the moment its client leaves.
func TestLeaderStopsWhenTheLastWaiterLeaves(t *testing.T) {
	canceled := make(chan struct{}, 1)
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			canceled <- struct{}{}
		case <-time.After(8 * time.Second):
			w.Header().Set("Cache-Control", "max-age=60")
			fmt.Fprint(w, "late")
		}
	})
	g := startGateway(t, "", originSite, up.addr())
	leave := func(after time.Duration) {
		ctx, cancel := context.WithTimeout(context.Background(), after)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+g.addr+"/slow", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}
	go leave(300 * time.Millisecond) // the leader
	time.Sleep(100 * time.Millisecond)
	go leave(800 * time.Millisecond) // a waiter, still there when the leader leaves
	select {
	case <-canceled:
		if up.count("/slow") != 1 {
			t.Errorf("the origin got %d requests, want the leader's alone", up.count("/slow"))
		}
	case <-time.After(4 * time.Second):
		t.Fatal("both clients left, yet the leader's upstream request goes on")
	}
	noAbandonErrorLogged(t, g)
}

// TestABackgroundRefreshIsNotARequest: the request counters count client
// requests; a background refresh, which no client sent, is not one, as a
// 200 (a miss) or as a 304 (revalidated, which counts as a hit).
func TestABackgroundRefreshIsNotARequest(t *testing.T) {
	for _, validator := range []bool{false, true} {
		up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "max-age=1, stale-while-revalidate=30")
			if validator {
				w.Header().Set("Etag", `"v1"`)
				if r.Header.Get("If-None-Match") == `"v1"` {
					w.WriteHeader(http.StatusNotModified)
					return
				}
			}
			fmt.Fprint(w, "body")
		})
		g := startGateway(t, "", originSite, up.addr())
		g.get("/swr") // miss
		time.Sleep(1100 * time.Millisecond)
		g.get("/swr") // stale, refreshed in the background
		deadline := time.Now().Add(3 * time.Second)
		for up.count("/swr") < 2 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(200 * time.Millisecond) // the refresh lands
		st := g.adminJSON("GET", "/cache/products", "", 200)
		if st["hits"] != 1.0 || st["misses"] != 1.0 {
			t.Errorf("validator %v: two client requests, a miss and a stale hit, counted as hits %v, misses %v",
				validator, st["hits"], st["misses"])
		}
	}
}

// inFlight counts the requests an upstream serves at once.
type inFlight struct{ now, max atomic.Int64 }

func (f *inFlight) enter() {
	n := f.now.Add(1)
	for m := f.max.Load(); n > m && !f.max.CompareAndSwap(m, n); m = f.max.Load() {
	}
}

func (f *inFlight) leave() { f.now.Add(-1) }

// TestAuthorizedRequestsAreNotSerialised: a leader whose answer is not
// stored because of its Authorization does not make the requests waiting
// beside it, which carry their own, go to the origin one after another:
// they go side by side, and later ones skip the queue (hit-for-miss).
func TestAuthorizedRequestsAreNotSerialised(t *testing.T) {
	var f inFlight
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		f.enter()
		defer f.leave()
		time.Sleep(300 * time.Millisecond)
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprintf(w, "for %s", r.Header.Get("Authorization"))
	})
	g := startGateway(t, "", originSite, up.addr())
	const clients = 8
	bodies := concurrentGets(g, clients, func(i int) []string {
		return []string{fmt.Sprintf("Authorization: Bearer user%d", i)}
	}, "/api/me")
	for i, b := range bodies {
		if b != fmt.Sprintf("for Bearer user%d", i) {
			t.Errorf("client %d got %q", i, b)
		}
	}
	if f.max.Load() < 2 {
		t.Errorf("%d authorized clients reached the origin one at a time", clients)
	}
}

// TestAnUpstreamFailureIsNotTheClientLeaving: when the origin fails the
// leader's fetch, its waiters go on at once, side by side, and the key
// skips the queue; they do not queue behind one failing fetch after
// another.
func TestAnUpstreamFailureIsNotTheClientLeaving(t *testing.T) {
	addr := tcpServer(t, func(c net.Conn) { c.Read(make([]byte, 4096)); time.Sleep(400 * time.Millisecond) })
	g := startGateway(t, "", originSite, addr)
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() { send("GET", "http://"+g.addr+"/down", nil, "") })
	}
	wg.Wait()
	// The leader's failure took 400 ms; after it, the five waiters went on
	// together: at most two rounds, not six.
	start := time.Now()
	for range 3 {
		wg.Go(func() { send("GET", "http://"+g.addr+"/down", nil, "") })
	}
	wg.Wait()
	if d := time.Since(start); d > time.Second {
		t.Errorf("three requests for a key whose origin fails took %v: they queued", d)
	}
}

// TestALandedLeaderStopsWhenItsClientLeaves: a response that will not be
// stored (a stream) releases its waiters at its header; once its client
// leaves, nothing needs the fetch, which must stop.
func TestALandedLeaderStopsWhenItsClientLeaves(t *testing.T) {
	canceled := make(chan struct{}, 1)
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
			canceled <- struct{}{}
		case <-time.After(10 * time.Second):
		}
	})
	g := startGateway(t, "", originSite, up.addr())
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+g.addr+"/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	resp.Body.Close()
	select {
	case <-canceled:
	case <-time.After(3 * time.Second):
		t.Fatal("the client left 3 s ago, yet the upstream stream goes on")
	}
	noAbandonErrorLogged(t, g)
}

// noAbandonErrorLogged fails the test if Caddy logged an abandoned fetch
// as an error: a client that leaves is none of the server's, and
// reverse_proxy answers it 499, which Caddy logs at debug level only.
func noAbandonErrorLogged(t *testing.T, g *gateway) {
	t.Helper()
	time.Sleep(200 * time.Millisecond)
	for _, line := range strings.Split(g.logs.String(), "\n") {
		if strings.Contains(line, `"level":"error"`) && strings.Contains(line, "no request waits") {
			t.Errorf("the abandoned fetch was logged as an error: %s", line)
		}
	}
}

// TestOwnFieldDecidesWhetherA304ForbidsStoring: the gateway's own targeted
// field (RFC 9213) overrides Cache-Control for the decision to drop an
// entry a 304 made unstorable too: a private Cache-Control meant for
// browsers does not drop the entry the own field keeps, whatever the
// validating request says.
func TestOwnFieldDecidesWhetherA304ForbidsStoring(t *testing.T) {
	var n, conditional atomic.Int64
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Etag", `"v1"`)
		switch n.Add(1) {
		case 1:
			w.Header().Set("Cache-Control", "private")
			w.Header().Set("Gateway-Cache-Control", "max-age=1, stale-if-error=600")
			w.Header().Set("Age", "1")
			fmt.Fprint(w, "v1")
		case 2:
			conditional.Add(1)
			w.WriteHeader(http.StatusNotModified)
		default:
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	g := startGateway(t, "", ownFieldSite, up.addr())
	g.get("/s")
	if r := g.get("/s", "Cache-Control: no-store"); r.status != 200 || r.body != "v1" || conditional.Load() != 1 {
		t.Fatalf("validation: %d %q (%q)", r.status, r.body, r.cacheStatus())
	}
	if r := g.get("/s"); r.status != 200 || r.body != "v1" {
		t.Errorf("the origin failing after a validation: %d %q (%q), want the entry served stale", r.status, r.body, r.cacheStatus())
	}
}

// TestALeaderThatLeftBeforeLandingStops: a leader whose client leaves
// while a request waits goes on fetching for it; once its answer lands
// (here a stream, not stored, which releases the waiter), nothing needs
// the fetch, which must stop.
func TestALeaderThatLeftBeforeLandingStops(t *testing.T) {
	firstCanceled := make(chan struct{}, 1)
	var n atomic.Int64
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		i := n.Add(1)
		if i == 1 {
			time.Sleep(700 * time.Millisecond)
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
			if i == 1 {
				firstCanceled <- struct{}{}
			}
		case <-time.After(15 * time.Second):
		}
	})
	g := startGateway(t, "", originSite, up.addr())
	get := func(ctx context.Context, got chan<- *http.Response) {
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+g.addr+"/events", nil)
		resp, _ := http.DefaultClient.Do(req)
		got <- resp
	}
	ctxA, cancelA := context.WithCancel(context.Background())
	gotA := make(chan *http.Response, 1)
	go get(ctxA, gotA)
	waitFor(t, "the leader's fetch", func() bool { return n.Load() == 1 })
	ctxB, cancelB := context.WithCancel(context.Background())
	defer cancelB()
	gotB := make(chan *http.Response, 1)
	go get(ctxB, gotB)
	time.Sleep(200 * time.Millisecond)
	cancelA() // the leader's client leaves while B waits
	<-gotA
	select {
	case resp := <-gotB:
		if resp == nil {
			t.Fatal("the waiter failed")
		}
		defer resp.Body.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("the waiter got no header")
	}
	select {
	case <-firstCanceled:
	case <-time.After(4 * time.Second):
		t.Error("the leader's client left and its flight landed, yet its upstream request goes on")
	}
}

// TestAValidatingLeaderReleasesWaitersOnceStored: waiters go on when the
// validated entry is stored, not once the leader's client has read the
// whole body (here never).
func TestAValidatingLeaderReleasesWaitersOnceStored(t *testing.T) {
	body := bytes.Repeat([]byte("x"), 32<<20)
	var conditional atomic.Int64
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Etag", `"v1"`)
		if r.Header.Get("If-None-Match") != "" {
			conditional.Add(1)
			time.Sleep(300 * time.Millisecond)
			w.Header().Set("Cache-Control", "max-age=60")
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("Cache-Control", "max-age=1")
		w.Header().Set("Age", "1")
		w.Write(body)
	})
	globals := "\tcache_pool {\n\t\tcache products {\n\t\t\tmax_size 256MiB\n\t\t\tmax_entry_size 64MiB\n\t\t}\n\t}"
	g := startGateway(t, globals, originSite, up.addr())
	if r := g.get("/big"); len(r.body) != len(body) {
		t.Fatalf("first: %d bytes", len(r.body))
	}
	c, err := net.Dial("tcp", g.addr) // a leader whose client never reads
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /big HTTP/1.1\r\nHost: %s\r\n\r\n", g.addr)
	waitFor(t, "the leader's validation", func() bool { return conditional.Load() == 1 })
	start := time.Now()
	r := g.get("/big")
	// Before the fix the waiter waited its whole 10 s.
	if d := time.Since(start); d > 6*time.Second || conditional.Load() != 1 || len(r.body) != len(body) {
		t.Errorf("stored at about 300 ms, yet the waiter took %v (%q); the origin saw %d validations", d, r.cacheStatus(), conditional.Load())
	}
}

// TestAWaiterThatGoesUpstreamCountsNoWait: a request that waited for
// another's fetch, then goes upstream itself, counts its response's age
// from its own sending (RFC 9111 section 4.2.3), not from its arrival: a
// max-age=2 answered at once is stored, though the wait took 3 s.
func TestAWaiterThatGoesUpstreamCountsNoWait(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("If-None-Match") != "" {
			time.Sleep(3 * time.Second)
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("Cache-Control", "max-age=2")
		fmt.Fprint(w, "fresh")
	})
	g := startGateway(t, "", originSite, up.addr())
	done := make(chan struct{})
	go func() { defer close(done); g.get("/a", `If-None-Match: "x"`) }()
	waitFor(t, "the leader's fetch", func() bool { return up.count("/a") == 1 })
	r := g.get("/a")
	<-done
	if !strings.Contains(r.cacheStatus(), "stored") {
		t.Errorf("a max-age=2 response fetched at once was not stored: %q", r.cacheStatus())
	}
}

// TestAWaiterForAnotherVariantCountsNoWait: a request that waited for a
// fetch that stored another variant goes upstream then, and counts its
// answer's age from then (RFC 9111 section 4.2.3).
func TestAWaiterForAnotherVariantCountsNoWait(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Vary", "Accept-Language")
		if r.Header.Get("Accept-Language") == "en" {
			time.Sleep(3 * time.Second)
			w.Header().Set("Cache-Control", "max-age=60")
			fmt.Fprint(w, "en")
			return
		}
		w.Header().Set("Cache-Control", "max-age=2")
		fmt.Fprint(w, "fr")
	})
	g := startGateway(t, "", originSite, up.addr())
	done := make(chan struct{})
	go func() { defer close(done); g.get("/v", "Accept-Language: en") }()
	waitFor(t, "the leader's fetch", func() bool { return up.count("/v") == 1 })
	r := g.get("/v", "Accept-Language: fr")
	<-done
	if r.body != "fr" || !strings.Contains(r.cacheStatus(), "stored") {
		t.Errorf("a max-age=2 response fetched at once: %q, not stored (%q)", r.body, r.cacheStatus())
	}
}

// TestNoCacheIsNotWaitedFor: a no-cache response must be validated before
// each use (RFC 9111 section 5.2.2.4), so no request waiting for its fetch
// can be answered from it; those that come next go upstream side by side
// at once (hit-for-miss), rather than wait for one validation and then
// make their own.
func TestNoCacheIsNotWaitedFor(t *testing.T) {
	up := newUpstream(t, slowV1(time.Second, "no-cache"))
	g := startGateway(t, "", originSite, up.addr())
	burst := func(what string) {
		t.Helper()
		start := time.Now()
		for _, b := range concurrentGets(g, 4, func(int) []string { return nil }, "/nc") {
			if b != "v1" {
				t.Fatalf("%s: got %q", what, b)
			}
		}
		// Waiting for one another, they would take two origin times.
		if d := time.Since(start); d > 1700*time.Millisecond {
			t.Errorf("%s: four requests for a no-cache entry took %v against an origin of 1 s: they waited for one another", what, d)
		}
	}
	concurrentGets(g, 4, func(int) []string { return nil }, "/nc") // stored, by a miss
	burst("within hit-for-miss")
	// Once the key may be collapsed again, the requests wait for one
	// validation; it leaves the entry no-cache, which makes the key skip
	// the queue again: the next do not wait.
	time.Sleep(cachestoreHitForMiss)
	concurrentGets(g, 4, func(int) []string { return nil }, "/nc")
	burst("after a validation")
}

// cachestoreHitForMiss is how long a key that proved uncachable skips the
// queue (cachestore.HitForMiss), and a little more.
const cachestoreHitForMiss = 10*time.Second + 100*time.Millisecond

// slowV1 answers after delay with the representation "v1", ETag "v1",
// under cacheControl: a 304 to a request that holds it already.
func slowV1(delay time.Duration, cacheControl string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(delay)
		w.Header().Set("Cache-Control", cacheControl)
		w.Header().Set("Etag", `"v1"`)
		if r.Header.Get("If-None-Match") == `"v1"` {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		fmt.Fprint(w, "v1")
	}
}
