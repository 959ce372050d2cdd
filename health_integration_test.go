package gateway_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-gateway/gateway/internal/redistest"
)

// healthReport is the full report, as a client reads it.
type healthReport struct {
	Status        string `json:"status"`
	Draining      bool   `json:"draining"`
	UptimeSeconds *int64 `json:"uptime_seconds"`
	CheckedAt     string `json:"checked_at"`
	Version       struct {
		Gateway string `json:"gateway"`
		Caddy   string `json:"caddy"`
	} `json:"version"`
	Checks struct {
		Caches []struct {
			Name      string `json:"name"`
			Status    string `json:"status"`
			Entries   int    `json:"entries"`
			SizeBytes int64  `json:"size_bytes"`
			MaxSize   int64  `json:"max_size"`
		} `json:"caches"`
		Redis []struct {
			URL       string   `json:"url"`
			UsedBy    []string `json:"used_by"`
			TimeoutMS float64  `json:"timeout_ms"`
			Status    string   `json:"status"`
			LatencyMS *float64 `json:"latency_ms"`
			Error     string   `json:"error"`
		} `json:"redis"`
		Zones []struct {
			Name     string `json:"name"`
			Status   string `json:"status"`
			Store    string `json:"store"`
			FailMode string `json:"fail_mode"`
			Fallback bool   `json:"fallback"`
			Error    string `json:"error"`
		} `json:"zones"`
		Bus []struct {
			Status string `json:"status"`
			Error  string `json:"error"`
		} `json:"bus"`
	} `json:"checks"`
}

func decodeReport(t *testing.T, r response) healthReport {
	t.Helper()
	var rep healthReport
	if err := json.Unmarshal([]byte(r.body), &rep); err != nil {
		t.Fatalf("report is not JSON: %v: %q", err, r.body)
	}
	return rep
}

// probeStatus returns a probe's status and its "status" member.
func probeStatus(t *testing.T, r response) (int, string) {
	t.Helper()
	var out struct {
		Status  string   `json:"status"`
		Reasons []string `json:"reasons"`
	}
	if err := json.Unmarshal([]byte(r.body), &out); err != nil {
		t.Fatalf("probe answer is not JSON: %v: %q", err, r.body)
	}
	return r.status, out.Status
}

const healthRoutes = `
	health /live live
	health /ready ready {
		cache_checks 1ms
	}
	health /health {
		cache_checks 1ms
	}
`

func TestHealthProbesAndReport(t *testing.T) {
	g := startGateway(t, "\tcache_pool {\n\t\tcache products {\n\t\t\tmax_size 2MiB\n\t\t}\n\t}", healthRoutes+`
	rate_limit {
		zone mem {
			key {client_ip}
			events 100
			window 1m
		}
	}
	cache_read products
	cache_write products {
		ttl 1h
	}
	respond "stored"
`, "")
	g.get("/page") // one entry in the cache

	for path, want := range map[string]string{"/live": "alive", "/ready": "ready", "/health": "ok"} {
		r := g.get(path)
		if code, status := probeStatus(t, r); code != 200 || status != want {
			t.Errorf("GET %s: %d %q, want 200 %q: %s", path, code, status, want, r.body)
		}
		if ct, cc := r.header.Get("Content-Type"), r.header.Get("Cache-Control"); ct != "application/json" || cc != "no-store" {
			t.Errorf("GET %s: Content-Type %q, Cache-Control %q", path, ct, cc)
		}
		head := g.request("HEAD", path)
		if head.status != 200 || head.body != "" || head.header.Get("Content-Type") != "application/json" {
			t.Errorf("HEAD %s: %d, body %q, Content-Type %q", path, head.status, head.body, head.header.Get("Content-Type"))
		}
		post := g.request("POST", path)
		if post.status != 405 || post.header.Get("Allow") != "GET, HEAD" {
			t.Errorf("POST %s: %d, Allow %q; want 405 with Allow: GET, HEAD", path, post.status, post.header.Get("Allow"))
		}
	}

	rep := decodeReport(t, g.get("/health"))
	if rep.Version.Gateway != "(devel)" || !strings.HasPrefix(rep.Version.Caddy, "v2.") {
		t.Errorf("version: %+v, want (devel) and Caddy's v2.x", rep.Version)
	}
	if rep.UptimeSeconds == nil || *rep.UptimeSeconds < 0 || rep.CheckedAt == "" || rep.Draining {
		t.Errorf("uptime %v, checked_at %q, draining %v", rep.UptimeSeconds, rep.CheckedAt, rep.Draining)
	}
	if c := rep.Checks.Caches; len(c) != 1 || c[0].Name != "products" || c[0].Entries != 1 || c[0].SizeBytes <= 0 || c[0].MaxSize != 2<<20 || c[0].Status != "ok" {
		t.Errorf("caches: %+v, want products with one entry, its bytes and its 2 MiB bound", c)
	}
	if z := rep.Checks.Zones; len(z) != 1 || z[0].Name != "mem" || z[0].Store != "memory" || z[0].Status != "ok" || z[0].Fallback {
		t.Errorf("zones: %+v, want mem in memory", z)
	}
	if len(rep.Checks.Redis) != 0 || len(rep.Checks.Bus) != 0 {
		t.Errorf("redis %+v, bus %+v; want none", rep.Checks.Redis, rep.Checks.Bus)
	}
}

// redisHealthSite has a zone of each fail_mode on one Redis, and the
// invalidation bus on it too.
func redisHealthSite(url string, zones ...string) (globals, site string) {
	globals = fmt.Sprintf("\tcache_pool {\n\t\tredis %s\n\t}", url)
	site = healthRoutes
	for _, mode := range zones {
		site += fmt.Sprintf(`
	route /%[1]s {
		rate_limit {
			zone z_%[1]s {
				key static
				events 100
				window 1m
			}
			redis %[2]s
			fail_mode %[1]s
			timeout 300ms
		}
		respond ok
	}
`, mode, url)
	}
	return globals, site + "\trespond ok\n"
}

func TestHealthWithRedisUpAndDown(t *testing.T) {
	rds := redistest.Start(t)
	globals, site := redisHealthSite(rds.URL, "local", "open", "closed")
	g := startGateway(t, globals, site, "")

	r := g.get("/health")
	rep := decodeReport(t, r)
	if r.status != 200 || rep.Status != "ok" {
		t.Fatalf("with Redis up: %d %s", r.status, r.body)
	}
	if len(rep.Checks.Redis) != 2 {
		t.Fatalf("redis: %+v, want the zones' client and the bus's", rep.Checks.Redis)
	}
	zonesRedis, busRedis := rep.Checks.Redis[0], rep.Checks.Redis[1]
	if zonesRedis.Status != "ok" || zonesRedis.LatencyMS == nil || zonesRedis.TimeoutMS != 300 ||
		strings.Join(zonesRedis.UsedBy, ",") != "zone z_closed,zone z_local,zone z_open" || zonesRedis.URL != rds.URL {
		t.Errorf("the zones' Redis: %+v", zonesRedis)
	}
	if busRedis.Status != "ok" || strings.Join(busRedis.UsedBy, ",") != "invalidation_bus" {
		t.Errorf("the bus's Redis: %+v", busRedis)
	}
	for _, z := range rep.Checks.Zones {
		if z.Store != "redis" || z.Status != "ok" || z.Fallback || z.FailMode != strings.TrimPrefix(z.Name, "z_") {
			t.Errorf("zone with Redis up: %+v", z)
		}
	}
	if code, status := probeStatus(t, g.get("/ready")); code != 200 || status != "ready" {
		t.Errorf("ready with Redis up: %d %s", code, status)
	}

	rds.Stop()
	r = g.get("/health")
	rep = decodeReport(t, r)
	if r.status != 503 || rep.Status != "fail" {
		t.Errorf("with Redis down and a closed zone: %d %q, want 503 fail", r.status, rep.Status)
	}
	want := map[string]string{"z_local": "degraded", "z_open": "degraded", "z_closed": "fail"}
	for _, z := range rep.Checks.Zones {
		if z.Status != want[z.Name] || !z.Fallback || z.Error == "" {
			t.Errorf("zone with Redis down: %+v, want %s, on its fallback, with the error", z, want[z.Name])
		}
	}
	for _, rc := range rep.Checks.Redis {
		if rc.Status != "error" || !strings.Contains(rc.Error, "connection refused") {
			t.Errorf("redis down: %+v, want the error", rc)
		}
	}
	if b := rep.Checks.Bus; len(b) != 1 || b[0].Status != "degraded" {
		t.Errorf("invalidation bus with Redis down: %+v, want degraded", b)
	}
	r = g.get("/ready")
	if code, status := probeStatus(t, r); code != 503 || status != "unavailable" || !strings.Contains(r.body, "zone z_closed") {
		t.Errorf("ready with a closed zone's Redis down: %d %s", code, r.body)
	}
	if r := g.get("/live"); r.status != 200 {
		t.Errorf("live with Redis down: %d", r.status)
	}
}

func TestHealthDegradedWithoutClosedZone(t *testing.T) {
	rds := redistest.Start(t)
	globals, site := redisHealthSite(rds.URL, "local", "open")
	g := startGateway(t, globals, site, "")
	rds.Stop()
	r := g.get("/health")
	if rep := decodeReport(t, r); r.status != 200 || rep.Status != "degraded" {
		t.Errorf("Redis down, no closed zone: %d %q, want 200 degraded", r.status, rep.Status)
	}
	if code, status := probeStatus(t, g.get("/ready")); code != 200 || status != "ready" {
		t.Errorf("ready with fallbacks serving: %d %s, want 200", code, status)
	}
}

func TestHealthWithRedisHung(t *testing.T) {
	rds := redistest.Start(t)
	// The invalidation bus that rate_limit joins has a timeout of its own, 2s.
	_, site := redisHealthSite(rds.URL, "local", "closed")
	g := startGateway(t, "", site, "")
	if r := g.get("/health"); r.status != 200 {
		t.Fatalf("with Redis up: %d %s", r.status, r.body)
	}
	rds.Pause()
	// The zones' timeout is 300ms: a probe that waited for the hung Redis
	// would never answer. A generous bound for a loaded machine.
	ctxTimeout := 5 * time.Second
	c := &http.Client{Timeout: ctxTimeout}
	resp, err := c.Get("http://" + g.addr + "/health")
	if err != nil {
		t.Fatalf("the probe did not answer within %v with Redis hung: %v", ctxTimeout, err)
	}
	defer resp.Body.Close()
	var rep healthReport
	json.NewDecoder(resp.Body).Decode(&rep)
	if resp.StatusCode != 503 || rep.Status != "fail" {
		t.Errorf("with Redis hung: %d %q, want 503 fail", resp.StatusCode, rep.Status)
	}
	if len(rep.Checks.Redis) != 2 || !strings.Contains(rep.Checks.Redis[0].Error, "no answer within the timeout of 300ms") ||
		!strings.Contains(rep.Checks.Redis[1].Error, "no answer within the timeout of 2s") {
		t.Errorf("redis: %+v, want the zones' client and the bus's, each saying why: no answer within its timeout", rep.Checks.Redis)
	}
	resp, err = c.Get("http://" + g.addr + "/ready")
	if err != nil {
		t.Fatalf("ready did not answer with Redis hung: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Errorf("ready with a closed zone's Redis hung: %d, want 503", resp.StatusCode)
	}
}

func TestHealthProbeStormSharesOneCheck(t *testing.T) {
	rds := redistest.Start(t)
	g := startGateway(t, "", fmt.Sprintf(`
	health /health {
		cache_checks 1h
	}
	health /ready ready {
		cache_checks 1h
	}
	rate_limit {
		zone storm {
			key static
			events 10
			window 1m
		}
		redis %s
	}
	respond ok
`, rds.URL), "")
	before := rds.Calls("ping")
	var wg sync.WaitGroup
	var mu sync.Mutex
	checkedAt := map[string]int{}
	statuses := map[int]int{}
	for i := range 40 {
		wg.Go(func() {
			path := []string{"/health", "/ready"}[i%2]
			r, err := send("GET", "http://"+g.addr+path, nil, "")
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				statuses[0]++
				return
			}
			statuses[r.status]++
			var rep healthReport
			if json.Unmarshal([]byte(r.body), &rep) == nil && rep.CheckedAt != "" {
				checkedAt[rep.CheckedAt]++
			}
		})
	}
	wg.Wait()
	if statuses[200] != 40 {
		t.Errorf("statuses %v, want 40 × 200", statuses)
	}
	// One check pings each client once: the zone's and the invalidation
	// bus's.
	if pings := rds.Calls("ping") - before; pings != 2 {
		t.Errorf("40 concurrent probes pinged Redis %d times, want once per client, twice", pings)
	}
	if len(checkedAt) != 1 {
		t.Errorf("the reports come from %d checks (%v), want one", len(checkedAt), checkedAt)
	}
}

func TestGracefulDrain(t *testing.T) {
	const bodySize = 256 << 10
	body := strings.Repeat("0123456789abcdef", bodySize/16)
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(1500 * time.Millisecond)
		w.Write([]byte(body))
	})
	g := startGateway(t, "\tgrace_period 20s\n\tshutdown_delay 1500ms", `
	health /live live
	health /ready ready
	route /slow {
		rate_limit {
			zone drain {
				key static
				events 1
				window 1s
				algorithm leaky_bucket
				burst 4
			}
		}
		reverse_proxy {upstream}
	}
`, up.addr())

	// Four requests: one reaches the slow upstream at once, three wait in
	// the leaky bucket for their slots, one, two and three seconds later:
	// the last two still wait when the shutdown delay ends and the
	// listener closes. The queue holds four, not three: each request is
	// decided at the time Caddy began it, and concurrent requests may be
	// decided in another order than they began, so the last decided can
	// be a few microseconds past three slots.
	const n = 4
	type result struct {
		resp response
		err  error
	}
	results := make(chan result, n)
	for range n {
		go func() {
			r, err := send("GET", "http://"+g.addr+"/slow", nil, "")
			results <- result{r, err}
		}()
	}
	for up.total.Load() == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // the others reach the bucket

	if err := g.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	atSignal := up.total.Load()
	if !g.logged("shutdown scheduled") {
		t.Fatal("Caddy did not schedule its shutdown")
	}
	// During shutdown_delay, new connections still reach the probes.
	probe := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	for path, want := range map[string]int{"/ready": 503, "/live": 200} {
		resp, err := probe.Get("http://" + g.addr + path)
		if err != nil {
			t.Fatalf("%s during shutdown_delay: %v", path, err)
		}
		var out struct{ Status string }
		json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s during shutdown_delay: %d %q, want %d", path, resp.StatusCode, out.Status, want)
		}
		if path == "/ready" && out.Status != "draining" {
			t.Errorf("/ready during shutdown_delay says %q, want draining", out.Status)
		}
	}

	if !g.logged("grace period initiated") {
		t.Fatal("Caddy did not begin its grace period")
	}
	if queued := n - up.total.Load(); queued < 1 {
		t.Errorf("no request waited in the leaky bucket when the listener closed")
	}
	for range n {
		res := <-results
		if res.err != nil {
			t.Errorf("an in-flight request was lost: %v", res.err)
			continue
		}
		if res.resp.status != 200 || res.resp.body != body {
			t.Errorf("an in-flight request ended %d with %d of %d bytes", res.resp.status, len(res.resp.body), len(body))
		}
	}
	if atSignal >= n {
		t.Errorf("every request had reached the upstream before SIGTERM; none was queued in the bucket")
	}
	if got := up.total.Load(); got != n {
		t.Errorf("upstream served %d requests, want %d", got, n)
	}
	if !g.logged("shutdown complete") {
		t.Error("Caddy did not finish its shutdown")
	}
}

// TestHealthValidation: JSON, through `caddy validate`, and the Caddyfile
// refuse a bad mode alike; a negative cache_checks, which the Caddyfile
// cannot say, is refused in JSON.
func TestHealthValidation(t *testing.T) {
	const want = `health: mode must be live, ready or empty (the full report), not "startup"`
	if out, ok := validateJSON(t, jsonConfig("", `{"handler": "health", "mode": "startup"}`)); ok || !strings.Contains(out, want) {
		t.Errorf("JSON mode: passed=%v, want %q:\n%s", ok, want, tail(out, 3))
	}
	if _, err := adapt(caddyfileIn("", "\thealth startup\n"), "Caddyfile"); err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "Caddyfile:5") {
		t.Errorf("Caddyfile mode: %v, want %q at Caddyfile:5", err, want)
	}
	const wantNeg = "health: cache_checks must be a positive duration"
	if out, ok := validateJSON(t, jsonConfig("", `{"handler": "health", "cache_checks": -1}`)); ok || !strings.Contains(out, wantNeg) {
		t.Errorf("JSON cache_checks: passed=%v, want %q:\n%s", ok, wantNeg, tail(out, 3))
	}
}

// TestHealthReadyDrainsDuringShutdownDelay: after SIGTERM, during the
// shutdown delay, ready says draining, live stays up, and the full report
// says so without changing its status.
func TestHealthReadyDrainsDuringShutdownDelay(t *testing.T) {
	g := startGateway(t, "\tshutdown_delay 3s", healthRoutes+"\trespond ok\n", "")
	if code, status := probeStatus(t, g.get("/ready")); code != 200 || status != "ready" {
		t.Fatalf("ready before the stop: %d %s", code, status)
	}
	if err := g.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if !g.logged("shutdown scheduled") {
		t.Fatal("Caddy did not schedule its shutdown")
	}
	probe := func(path string) response {
		c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
		resp, err := c.Get("http://" + g.addr + path)
		if err != nil {
			t.Fatalf("%s during shutdown_delay: %v", path, err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		io.Copy(&b, resp.Body)
		return response{resp.StatusCode, resp.Header, b.String()}
	}
	if code, status := probeStatus(t, probe("/ready")); code != 503 || status != "draining" {
		t.Errorf("ready while draining: %d %q, want 503 draining", code, status)
	}
	if code, status := probeStatus(t, probe("/live")); code != 200 || status != "alive" {
		t.Errorf("live while draining: %d %q, want 200 alive", code, status)
	}
	r := probe("/health")
	if rep := decodeReport(t, r); r.status != 200 || rep.Status != "ok" || !rep.Draining {
		t.Errorf("report while draining: %d %s", r.status, r.body)
	}
}

// TestHealthWithRedisClusterMasterDown: the report pings every master of
// a Redis Cluster, and one master down fails the check.
func TestHealthWithRedisClusterMasterDown(t *testing.T) {
	rc := redistest.StartCluster(t, 3)
	globals, site := redisHealthSite(rc.URL, "closed")
	g := startGateway(t, globals, site, "")

	r := g.get("/health")
	rep := decodeReport(t, r)
	if r.status != 200 || rep.Status != "ok" || len(rep.Checks.Redis) != 2 {
		t.Fatalf("with the cluster up: %d %s", r.status, r.body)
	}
	if got := rep.Checks.Redis[0]; got.Status != "ok" || got.URL != rc.URL {
		t.Errorf("the cluster's check: %+v, want ok at %s", got, rc.URL)
	}

	rc.Nodes[2].Stop()
	r = g.get("/health")
	rep = decodeReport(t, r)
	if r.status != 503 || rep.Status != "fail" {
		t.Errorf("with a master down and a closed zone: %d %q, want 503 fail", r.status, rep.Status)
	}
	for _, c := range rep.Checks.Redis {
		if c.Status != "error" || !strings.Contains(c.Error, "connection refused") {
			t.Errorf("a master down: %+v, want the error", c)
		}
	}
}
