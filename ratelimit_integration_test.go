package gateway_test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// countStatuses sends n requests for path with the header lines and counts
// the answers by status.
func (g *gateway) countStatuses(n int, path string, headers ...string) map[int]int {
	g.t.Helper()
	counts := map[int]int{}
	for range n {
		counts[g.get(path, headers...).status]++
	}
	return counts
}

func TestRateLimitAlgorithms(t *testing.T) {
	tests := []struct {
		algorithm string
		extra     string
		allowed   int
	}{
		{"fixed_window", "window 24h", 5},
		{"sliding_window", "window 1h", 5},
		{"token_bucket", "window 1h\n\t\t\tburst 3", 3},
		{"leaky_bucket", "window 1h", 1}, // one slot per 12 minutes: only the first leaves now
	}
	for _, tt := range tests {
		t.Run(tt.algorithm, func(t *testing.T) {
			g := startGateway(t, "", fmt.Sprintf(`
	rate_limit {
		zone z {
			key {http.request.header.X-Client}
			events 5
			%s
			algorithm %s
		}
	}
	respond ok
`, tt.extra, tt.algorithm), "")
			var got map[int]int
			if tt.algorithm == "leaky_bucket" {
				// The queue holds 5 slots of 12 minutes: a request waiting
				// that long is within burst, so use short client timeouts
				// and count only the refusals.
				got = map[int]int{}
				first := g.get("/", "X-Client: a")
				got[first.status]++
				for range 9 {
					got[g.statusWithin(200*time.Millisecond, "/", "X-Client: a")]++ // 0: queued
				}
				if got[200] != 1 || got[0] != 5 || got[429] != 4 {
					t.Errorf("leaky bucket: %v, want 1 served, 5 queued, 4 refused", got)
				}
				return
			}
			got = g.countStatuses(10, "/", "X-Client: a")
			if got[200] != tt.allowed || got[429] != 10-tt.allowed {
				t.Errorf("statuses %v, want %d × 200 and %d × 429", got, tt.allowed, 10-tt.allowed)
			}
			if other := g.get("/", "X-Client: b"); other.status != 200 {
				t.Errorf("another key was refused: %d", other.status)
			}
		})
	}
}

func TestRateLimitHeadersAndRetryAfter(t *testing.T) {
	g := startGateway(t, "", `
	rate_limit {
		zone per_client {
			key {http.request.header.X-Client}
			events 3
			window 1m
		}
		headers both
	}
	respond ok
`, "")
	for want := 2; want >= 0; want-- {
		r := g.get("/", "X-Client: a")
		if r.status != 200 {
			t.Fatalf("request %d: %d %q %v", 3-want, r.status, r.body, r.header)
		}
		if p := r.header.Get("RateLimit-Policy"); p != `"per_client";q=3;w=60` {
			t.Errorf("RateLimit-Policy %q", p)
		}
		rl := r.header.Get("RateLimit")
		m := regexp.MustCompile(`^"per_client";r=(\d+);t=(\d+)$`).FindStringSubmatch(rl)
		if m == nil || m[1] != strconv.Itoa(want) {
			t.Fatalf("RateLimit %q, want r=%d", rl, want)
		}
		if secs, _ := strconv.Atoi(m[2]); secs < 59 || secs > 64 {
			t.Errorf("RateLimit t=%d, want about a window", secs)
		}
		if r.header.Get("X-RateLimit-Limit") != "3" || r.header.Get("X-RateLimit-Remaining") != strconv.Itoa(want) {
			t.Errorf("legacy headers %v", r.header)
		}
	}
	refused := g.get("/", "X-Client: a")
	if refused.status != http.StatusTooManyRequests {
		t.Fatalf("fourth request: %d", refused.status)
	}
	retry, err := strconv.Atoi(refused.header.Get("Retry-After"))
	if err != nil || retry < 59 || retry > 64 {
		t.Errorf("Retry-After %q, want about a minute", refused.header.Get("Retry-After"))
	}
	if !strings.HasPrefix(refused.header.Get("RateLimit"), `"per_client";r=0;`) {
		t.Errorf("RateLimit on the 429: %q", refused.header.Get("RateLimit"))
	}
}

func TestRateLimitRefusingZoneChargesNoOther(t *testing.T) {
	g := startGateway(t, "", `
	rate_limit {
		zone wide {
			key {http.request.header.X-Client}
			events 5
			window 1h
		}
		zone narrow {
			match {
				path /narrow
			}
			key {http.request.header.X-Client}
			events 1
			window 1h
		}
	}
	handle_errors 429 {
		respond "refused by {http.rate_limit.exceeded.name}" 429
	}
	respond "ok, {http.rate_limit.wide.remaining} left"
`, "")
	if r := g.get("/narrow", "X-Client: a"); r.status != 200 || r.body != "ok, 4 left" {
		t.Fatalf("first: %d %q", r.status, r.body)
	}
	for range 3 {
		r := g.get("/narrow", "X-Client: a")
		if r.status != 429 || r.body != "refused by narrow" {
			t.Fatalf("refused request: %d %q", r.status, r.body)
		}
		if !strings.Contains(r.header.Get("RateLimit"), `"wide";r=4;`) {
			t.Errorf("the wide zone was charged by a refused request: %q", r.header.Get("RateLimit"))
		}
	}
	if got := g.countStatuses(5, "/wide", "X-Client: a"); got[200] != 4 || got[429] != 1 {
		t.Errorf("wide zone after the refusals: %v, want 4 more admitted", got)
	}
}

func TestRateLimitDryRun(t *testing.T) {
	g := startGateway(t, "", `
	rate_limit {
		zone dry {
			key {http.request.header.X-Client}
			events 2
			window 1h
			dry_run
		}
	}
	respond ok
`, "")
	if got := g.countStatuses(5, "/", "X-Client: a"); got[200] != 5 {
		t.Fatalf("dry run refused: %v", got)
	}
	zone := g.adminJSON("GET", "/rate_limit/dry", "", 200)
	if zone["allowed"] != 2.0 || zone["dry_run_limited"] != 3.0 || zone["limited"] != 0.0 {
		t.Errorf("dry-run counts %v", zone)
	}
}

// clientZoneSite limits each X-Client to events an hour in zone z.
func clientZoneSite(events int) string {
	return fmt.Sprintf(`
	rate_limit {
		zone z {
			key {http.request.header.X-Client}
			events %d
			window 1h
		}
	}
	respond ok
`, events)
}

func TestRateLimitStateSurvivesReload(t *testing.T) {
	site := clientZoneSite(3)
	g := startGateway(t, "", site, "")
	g.countStatuses(3, "/", "X-Client: a")
	g.reload("", site, "")
	if r := g.get("/", "X-Client: a"); r.status != 429 {
		t.Errorf("after a reload: %d, want 429 (no free refill)", r.status)
	}
}

// TestFailedReloadLeavesZonesAlone checks that a config that fails to
// load changes nothing of the zones the running config uses: neither
// their limit nor their Redis client, which the failed config closes.
func TestFailedReloadLeavesZonesAlone(t *testing.T) {
	site := clientZoneSite(2)
	g := startGateway(t, "", site, "")
	g.countStatuses(2, "/", "X-Client: a")
	// The first handler is provisioned, then the second one fails the
	// config: it gives zone z other settings.
	failing := `
	route /other {
		rate_limit {
			zone z {
				key {http.request.header.X-Client}
				events 3
				window 1h
			}
		}
	}
	rate_limit {
		zone z {
			key {http.request.header.X-Client}
			events 1000
			window 1h
		}
	}
	respond ok
`
	g.loadFails(g.caddyfile("", failing, ""))
	r := g.get("/", "X-Client: a")
	if r.status != 429 || r.header.Get("Ratelimit-Policy") != `"z";q=2;w=3600` {
		t.Errorf("after a failed reload: %d, RateLimit-Policy %q, RateLimit %q; want 429 under q=2",
			r.status, r.header.Get("Ratelimit-Policy"), r.header.Get("Ratelimit"))
	}
	if zone := g.adminJSON("GET", "/rate_limit/z", "", 200); zone["events"] != 2.0 {
		t.Errorf("the admin API shows %v, want the running limit", zone)
	}
	// Nor does one that fails to start: its listener's port is taken.
	// Caddy starts apps in no set order, so the cache_pool app, which
	// applies the zone's new settings, may start before the http app
	// fails: tries enough that it surely does.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	unstartable := g.caddyfile("", clientZoneSite(1000), "") +
		"\nhttp://" + busy.Addr().String() + " {\n\trespond ok\n}\n"
	for i := range 12 {
		g.loadFails(unstartable)
		if zone := g.adminJSON("GET", "/rate_limit/z", "", 200); zone["events"] != 2.0 {
			t.Fatalf("try %d: after a config failed to start, the zone has %v", i+1, zone)
		}
	}
	if r := g.get("/", "X-Client: a"); r.status != 429 {
		t.Errorf("after configs failed to start: %d, want 429", r.status)
	}
	// Nor does one that fails once every app started, as it finishes
	// setting up: its config loader cannot be reached. Caddy then cleans
	// it up without stopping it.
	cfg := g.adaptedJSON(g.caddyfile("", clientZoneSite(1000), ""))
	cfg["admin"].(map[string]any)["config"] = map[string]any{"load": map[string]any{"module": "http", "url": "http://127.0.0.1:1/"}}
	body, _ := json.Marshal(cfg)
	client.CloseIdleConnections()
	if r := g.adminDo("POST", "/load", "application/json", string(body)); r.status == http.StatusOK {
		t.Fatal("the config with an unreachable loader loaded")
	}
	client.CloseIdleConnections()
	if zone := g.adminJSON("GET", "/rate_limit/z", "", 200); zone["events"] != 2.0 {
		t.Errorf("after a config failed to finish setting up, the zone has %v", zone)
	}
	// A config that starts changes the zone.
	g.reload("", clientZoneSite(1000), "")
	if r := g.get("/", "X-Client: a"); r.status != 200 || r.header.Get("Ratelimit-Policy") != `"z";q=1000;w=3600` {
		t.Errorf("after a reload to 1000: %d, RateLimit-Policy %q", r.status, r.header.Get("Ratelimit-Policy"))
	}
	if zone := g.adminJSON("GET", "/rate_limit/z", "", 200); zone["events"] != 1000.0 {
		t.Errorf("the admin API shows %v after the reload", zone)
	}
}

// TestRateLimitMaxKeysHolds: max_keys is a hard bound, as the admin API
// counts keys, under a flood of distinct keys.
func TestRateLimitMaxKeysHolds(t *testing.T) {
	g := startGateway(t, "", `
	rate_limit {
		zone flood {
			key {http.request.header.X-Client}
			events 10
			window 1h
		}
		max_keys 1000
	}
	respond ok
`, "")
	most := 0.0
	for i := range 3000 {
		g.get("/", "X-Client: c"+strconv.Itoa(i))
		if i%500 == 499 {
			most = max(most, g.adminJSON("GET", "/rate_limit/flood", "", 200)["keys"].(float64))
		}
	}
	zone := g.adminJSON("GET", "/rate_limit/flood", "", 200)
	if keys := max(most, zone["keys"].(float64)); keys > 1000 {
		t.Errorf("zone held %v keys with max_keys 1000", keys)
	}
	if zone["keys"].(float64) != 1000 || zone["evicted"].(float64) != 2000 {
		t.Errorf("keys %v, evicted %v: want 1000 and 2000", zone["keys"], zone["evicted"])
	}
	if g.get("/", "X-Client: fresh").status != 200 {
		t.Error("a new key is refused after the flood")
	}
}

func TestRateLimitAdmin(t *testing.T) {
	g := startGateway(t, "", `
	rate_limit {
		zone z {
			key {http.request.header.X-Client}
			events 1
			window 1h
			algorithm fixed_window
		}
	}
	respond ok
`, "")
	g.get("/", "X-Client: a")
	g.get("/", "X-Client: b")
	if g.get("/", "X-Client: a").status != 429 {
		t.Fatal("not limited")
	}
	list := g.adminJSON("GET", "/rate_limit/", "", 200)["zones"].([]any)
	z := list[0].(map[string]any)
	if len(list) != 1 || z["name"] != "z" || z["keys"] != 2.0 || z["allowed"] != 2.0 || z["limited"] != 1.0 || z["algorithm"] != "fixed_window" || z["burst"] != 1.0 {
		t.Errorf("zones %v", list)
	}
	if out := g.adminJSON("DELETE", "/rate_limit/z?key=a", "", 200); out["reset"] != true {
		t.Errorf("reset a: %v", out)
	}
	if g.get("/", "X-Client: a").status != 200 {
		t.Error("key a still limited after its reset")
	}
	if g.get("/", "X-Client: b").status != 429 {
		t.Error("key b was reset too")
	}
	// A key the query cannot carry as written is refused, not dropped:
	// without a key the call would reset the whole zone.
	for _, query := range []string{"key=50%", "key=a%zz", "key=tenant;42"} {
		if out := g.adminJSON("DELETE", "/rate_limit/z?"+query, "", 400); out["error"] == nil {
			t.Errorf("%s: %v", query, out)
		}
	}
	if g.get("/", "X-Client: b").status != 429 {
		t.Error("key b was reset by a key the query could not carry")
	}
	if out := g.adminJSON("DELETE", "/rate_limit/z", "", 200); out["reset_keys"] != 2.0 {
		t.Errorf("reset zone: %v", out)
	}
	if g.get("/", "X-Client: b").status != 200 {
		t.Error("key b still limited after the zone's reset")
	}
	g.adminJSON("GET", "/rate_limit/nope", "", 404)
	g.adminJSON("DELETE", "/rate_limit/nope", "", 404)
	g.adminJSON("POST", "/rate_limit/z", "", 405)
	g.adminJSON("DELETE", "/rate_limit/", "", 405)
}

func TestLeakyBucketSpacesRequests(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {})
	var mu sync.Mutex
	var arrivals []time.Time
	up.handler.Store(ptr(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		arrivals = append(arrivals, time.Now())
		mu.Unlock()
	})))
	g := startGateway(t, "", `
	rate_limit {
		zone leak {
			key static
			events 10
			window 1s
			algorithm leaky_bucket
			burst 3
		}
	}
	reverse_proxy {upstream}
`, up.addr())
	var wg sync.WaitGroup
	statuses := make([]int, 6)
	for i := range statuses {
		wg.Go(func() { statuses[i] = g.get("/").status })
		time.Sleep(5 * time.Millisecond) // arrive in order, within one slot
	}
	wg.Wait()
	slices.Sort(statuses)
	if !slices.Equal(statuses, []int{200, 200, 200, 200, 429, 429}) {
		t.Fatalf("statuses %v, want 4 admitted (one now, three queued) and 2 refused", statuses)
	}
	mu.Lock()
	defer mu.Unlock()
	slices.SortFunc(arrivals, func(a, b time.Time) int { return a.Compare(b) })
	// Slots are 100ms apart. An arrival at the origin can only be later
	// than its slot, which shortens the gap after it by as much: under
	// -race on a busy machine, by 10 ms or more. Each gap gets 20 ms of
	// that, and the span of all of them, shortened only by the first
	// arrival's lateness, 20 ms as well.
	const slot, jitter = 100 * time.Millisecond, 20 * time.Millisecond
	for i := 1; i < len(arrivals); i++ {
		if gap := arrivals[i].Sub(arrivals[i-1]); gap < slot-jitter {
			t.Errorf("requests %d and %d reached the origin %v apart, want a slot of 100ms", i-1, i, gap)
		}
	}
	if n := len(arrivals); n > 1 {
		if span := arrivals[n-1].Sub(arrivals[0]); span < time.Duration(n-1)*slot-jitter {
			t.Errorf("%d requests reached the origin within %v, want %d slots of 100ms", n, span, n-1)
		}
	}

	// A client that goes away while it waits never reaches the origin.
	before := up.total.Load()
	for range 3 {
		g.statusWithin(20*time.Millisecond, "/gone")
	}
	time.Sleep(500 * time.Millisecond)
	if n := up.count("/gone"); n > 1 {
		t.Errorf("%d requests whose clients left reached the origin (before: %d)", n, before)
	}
}

func ptr[T any](v T) *T { return &v }

// TestMholtCaddyfileBehavesTheSame runs the example of mholt/caddy-ratelimit's
// README, without its distributed option.
func TestMholtCaddyfileBehavesTheSame(t *testing.T) {
	g := startGateway(t, "\torder rate_limit before basicauth", `
	rate_limit {
		zone static_example {
			match {
				method GET
			}
			key    static
			events 100
			window 1m
		}
		zone dynamic_example {
			key    {remote_host}
			events 2
			window 5s
		}
		log_key
	}
	respond "I'm behind the rate limiter!"
`, "")
	got := g.countStatuses(3, "/")
	if got[200] != 2 || got[429] != 1 {
		t.Errorf("statuses %v, want 2 admitted and 1 refused per client in 5s", got)
	}
}

func TestRateLimitIPPrefix(t *testing.T) {
	g := startGateway(t, "", `
	rate_limit {
		zone per_network {
			key {http.request.header.X-Forwarded-Ip}
			events 2
			window 1h
			ipv4_prefix 24
			ipv6_prefix 48
		}
	}
	respond ok
`, "")
	if got := g.countStatuses(1, "/", "X-Forwarded-Ip: 10.1.2.3"); got[200] != 1 {
		t.Fatal("first refused")
	}
	if got := g.countStatuses(2, "/", "X-Forwarded-Ip: 10.1.2.200"); got[200] != 1 || got[429] != 1 {
		t.Errorf("same /24: %v, want one more admitted", got)
	}
	if got := g.countStatuses(1, "/", "X-Forwarded-Ip: 10.1.3.1"); got[200] != 1 {
		t.Errorf("another /24 was refused")
	}
	g.countStatuses(2, "/", "X-Forwarded-Ip: 2001:db8:1:2::1")
	if got := g.countStatuses(1, "/", "X-Forwarded-Ip: 2001:db8:1:ffff::9"); got[429] != 1 {
		t.Errorf("same /48 admitted a third request")
	}
}

func TestRateLimitHeadersOnCacheHits(t *testing.T) {
	up := newUpstream(t, serial())
	g := startGateway(t, "", `
	rate_limit {
		zone z {
			key {http.request.header.X-Client}
			events 5
			window 1h
		}
	}
	header X-Outer outer
	cache_read products
	cache_write products {
		ttl 1m
	}
	reverse_proxy {upstream}
`, up.addr())
	for want := 4; want >= 0; want-- {
		r := g.get("/c", "X-Client: a")
		if got := r.header.Get("RateLimit"); !strings.HasPrefix(got, fmt.Sprintf(`"z";r=%d;`, want)) {
			t.Errorf("response %d (%s): RateLimit %q, want r=%d", 5-want, r.cacheStatus(), got, want)
		}
		if r.header.Get("X-Outer") != "outer" {
			t.Errorf("X-Outer lost on %s", r.cacheStatus())
		}
	}
	if g.get("/c", "X-Client: a").status != 429 {
		t.Error("cache hits were not counted by the rate limit")
	}
}

func TestRetryAfterJitterIsNeverEarly(t *testing.T) {
	g := startGateway(t, "", `
	rate_limit {
		zone j {
			key static
			events 1
			window 1h
			algorithm fixed_window
		}
		jitter 1
	}
	respond ok
`, "")
	g.get("/")
	seen := map[int]bool{}
	soonest := 3600
	for range 20 {
		r := g.get("/")
		retry, err := strconv.Atoi(r.header.Get("Retry-After"))
		// The window ends within the hour; jitter adds up to as much again.
		if err != nil || retry < 1 || retry > 7201 {
			t.Fatalf("Retry-After %q", r.header.Get("Retry-After"))
		}
		reset, _ := strconv.Atoi(strings.Split(r.header.Get("RateLimit"), ";t=")[1])
		if retry < reset-1 {
			t.Errorf("Retry-After %d is earlier than the window's end in %ds", retry, reset)
		}
		seen[retry] = true
		soonest = min(soonest, reset)
	}
	// In the window's last seconds, whole seconds leave the jitter no
	// room: the hour's windows make that rare.
	if len(seen) < 2 && soonest >= 3 {
		t.Errorf("jitter 1 gave one Retry-After for 20 refusals: %v", seen)
	}
}

// TestRemainingPlaceholderOfTwoHandlers: two rate_limit handlers decide
// the same zone for one request; the placeholder gives the first one's
// figure, as the README says.
func TestRemainingPlaceholderOfTwoHandlers(t *testing.T) {
	g := startGateway(t, "", `
	route {
		rate_limit {
			zone shared {
				key {http.request.header.X-Client}
				events 10
				window 1h
			}
		}
		rate_limit {
			zone shared {
				key {http.request.header.X-Client}
				events 10
				window 1h
			}
		}
		respond "{http.rate_limit.shared.remaining} left"
	}
`, "")
	if r := g.get("/", "X-Client: a"); r.status != 200 || r.body != "9 left" {
		t.Fatalf("got %d %q, want the first handler's 9", r.status, r.body)
	}
	if r := g.get("/", "X-Client: a"); r.body != "7 left" {
		t.Errorf("second request: %q, want 7 (each handler charged once per request)", r.body)
	}
}

// TestRateLimitCostFromPlaceholder: a cost read from a request header
// costs the default when the header is absent or empty, nothing when it
// says 0, and is the client's error (400, never 500) when it is not a
// non-negative integer.
func TestRateLimitCostFromPlaceholder(t *testing.T) {
	g := startGateway(t, "", `
	rate_limit {
		zone metered {
			key {http.request.header.X-Client}
			events 3
			window 1h
			cost {http.request.header.X-Cost}
		}
	}
	respond "{http.rate_limit.metered.remaining} left"
`, "")
	steps := []struct {
		headers []string
		status  int
		body    string
	}{
		{[]string{"X-Client: a"}, 200, "2 left"},
		{[]string{"X-Client: a", "X-Cost:"}, 200, "1 left"},
		{[]string{"X-Client: a", "X-Cost: 1"}, 200, "0 left"},
		{[]string{"X-Client: a", "X-Cost: 0"}, 200, "0 left"}, // free, even with nothing left
		{[]string{"X-Client: a"}, 429, ""},
		{[]string{"X-Client: b", "X-Cost: lots"}, 400, ""},
		{[]string{"X-Client: b", "X-Cost: -1"}, 400, ""},
		{[]string{"X-Client: b", "X-Cost: 99999999999999999999"}, 400, ""},
		{[]string{"X-Client: b", "X-Cost: 3"}, 200, "0 left"}, // the 400s charged nothing
	}
	for i, s := range steps {
		r := g.get("/", s.headers...)
		if r.status != s.status || (s.body != "" && r.body != s.body) {
			t.Errorf("request %d %v: %d %q, want %d %q", i+1, s.headers, r.status, r.body, s.status, s.body)
		}
	}
	// Caddy logs a handler's 4xx at debug level: a client that sends bad
	// costs does not fill the error log.
	if strings.Contains(g.logs.String(), `"level":"error"`) {
		t.Errorf("an error was logged:\n%s", tail(g.logs.String(), 5))
	}
}

// TestRateLimitKeylessClientsGetTheirOwnZone runs the README's way out of
// the empty key: a zone for requests with an API key, keyed on it, and one
// for those without, keyed on the client's address. Keyless requests do
// not use up a keyed client's limit, nor the other way round.
func TestRateLimitKeylessClientsGetTheirOwnZone(t *testing.T) {
	g := startGateway(t, "", `
	rate_limit {
		zone per_api_key {
			match {
				header X-Api-Key *
			}
			key {http.request.header.X-Api-Key}
			events 2
			window 1h
		}
		zone per_client {
			match {
				not header X-Api-Key *
			}
			key {client_ip}
			events 3
			window 1h
		}
	}
	respond ok
`, "")
	if got := g.countStatuses(4, "/"); got[200] != 3 || got[429] != 1 {
		t.Fatalf("keyless requests: %v, want 3 admitted and 1 refused", got)
	}
	r := g.get("/", "X-Api-Key: k1")
	if r.status != 200 || !strings.HasPrefix(r.header.Get("RateLimit"), `"per_api_key";r=1;`) {
		t.Errorf("a keyed request after the keyless ones ran out: %d, RateLimit %q", r.status, r.header.Get("RateLimit"))
	}
	if got := g.countStatuses(2, "/", "X-Api-Key: k1"); got[200] != 1 || got[429] != 1 {
		t.Errorf("key k1: %v, want its own limit of 2", got)
	}
	if got := g.countStatuses(1, "/", "X-Api-Key: k2"); got[200] != 1 {
		t.Errorf("key k2 was limited by k1: %v", got)
	}
	if r := g.get("/"); r.status != 429 || !strings.HasPrefix(r.header.Get("RateLimit"), `"per_client";r=0;`) {
		t.Errorf("a keyless request after the keyed ones: %d, RateLimit %q", r.status, r.header.Get("RateLimit"))
	}
}

// TestRateLimitBucketRemainingAboveQuota pins what the README says of the
// buckets' headers: the policy's q is events per window, the rate, while
// r counts what the bucket holds, which can be up to burst.
func TestRateLimitBucketRemainingAboveQuota(t *testing.T) {
	// The leaky bucket's first request leaves at once and holds none of
	// the burst slots of its queue.
	for algorithm, remaining := range map[string]int{"token_bucket": 19, "leaky_bucket": 20} {
		t.Run(algorithm, func(t *testing.T) {
			g := startGateway(t, "", `
	rate_limit {
		zone z {
			key {http.request.header.X-Client}
			events 10
			window 1m
			algorithm `+algorithm+`
			burst 20
		}
	}
	respond ok
`, "")
			r := g.get("/", "X-Client: a")
			if p := r.header.Get("RateLimit-Policy"); p != `"z";q=10;w=60` {
				t.Errorf("RateLimit-Policy %q", p)
			}
			if rl := r.header.Get("RateLimit"); !strings.HasPrefix(rl, fmt.Sprintf(`"z";r=%d;`, remaining)) {
				t.Errorf("RateLimit %q, want r=%d (burst 20)", rl, remaining)
			}
		})
	}
}
