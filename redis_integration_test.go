package gateway_test

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-gateway/gateway/internal/redistest"
)

// redisDeployment is a Redis that gateways share.
type redisDeployment struct {
	url   string
	calls func(commands ...string) int // INFO commandstats, summed over the masters
}

// forEachRedis runs a test against one Redis, a Redis Cluster of three
// masters, and a master that a Sentinel watches, each named by its URL.
func forEachRedis(t *testing.T, test func(t *testing.T, rds redisDeployment)) {
	t.Run("redis", func(t *testing.T) {
		s := redistest.Start(t)
		test(t, redisDeployment{s.URL, s.Calls})
	})
	t.Run("cluster", func(t *testing.T) {
		c := redistest.StartCluster(t, 3)
		test(t, redisDeployment{c.URL, c.Calls})
	})
	t.Run("sentinel", func(t *testing.T) {
		s := redistest.StartSentinel(t)
		test(t, redisDeployment{s.URL, s.Master.Calls})
	})
}

// cluster starts n gateways with the same site, sharing one Redis.
func cluster(t *testing.T, n int, globals, site, upstream string) []*gateway {
	var nodes []*gateway
	for range n {
		nodes = append(nodes, startGateway(t, globals, site, upstream))
	}
	return nodes
}

func TestClusterLimitsHoldExactly(t *testing.T) { forEachRedis(t, testClusterLimitsHoldExactly) }

func testClusterLimitsHoldExactly(t *testing.T, rds redisDeployment) {
	tests := []struct {
		algorithm, extra string
		allowed          int
	}{
		{"fixed_window", "window 24h", 7},
		{"sliding_window", "window 1h", 7},
		{"token_bucket", "window 1h\n\t\t\tburst 4", 4},
		{"leaky_bucket", "window 1h\n\t\t\tburst 2", 1}, // and 2 queued for minutes
	}
	for _, tt := range tests {
		t.Run(tt.algorithm, func(t *testing.T) {
			zone := "c_" + tt.algorithm
			nodes := cluster(t, 3, "", fmt.Sprintf(`
	rate_limit {
		zone %s {
			key {http.request.header.X-Client}
			events 7
			%s
			algorithm %s
		}
		redis %s
		# Exactness is Redis': a node that gave up on it under this load
		# would decide alone, so give it time, and answer 503 rather
		# than decide alone if it still fails.
		timeout 2s
		fail_mode closed
	}
	respond ok
`, zone, tt.extra, tt.algorithm, rds.url), "")
			queued := 0
			if tt.algorithm == "leaky_bucket" {
				queued = 2
			}
			var admitted, refused, waiting atomic.Int64
			var wg sync.WaitGroup
			// 384 requests for one key: 64 concurrent callers on each of
			// the three nodes, two requests each. A request still waiting
			// for its leaky-bucket slot after a second counts as queued.
			const callers, each = 3 * 64, 2
			for c := range callers {
				wg.Go(func() {
					for range each {
						switch nodes[c%3].statusWithin(time.Second, "/", "X-Client: shared") {
						case 0:
							waiting.Add(1)
						case 200:
							admitted.Add(1)
						case 429:
							refused.Add(1)
						}
					}
				})
			}
			wg.Wait()
			if admitted.Load() != int64(tt.allowed) || waiting.Load() != int64(queued) || refused.Load() != int64(callers*each-tt.allowed-queued) {
				t.Errorf("cluster admitted %d, queued %d, refused %d; want exactly %d admitted and %d queued",
					admitted.Load(), waiting.Load(), refused.Load(), tt.allowed, queued)
			}
		})
	}
}

// TestLocalRefusalsSpareRedis: once Redis refused a key until a moment,
// each node refuses it again without asking until then, and asks again
// after.
func TestLocalRefusalsSpareRedis(t *testing.T) { forEachRedis(t, testLocalRefusalsSpareRedis) }

func testLocalRefusalsSpareRedis(t *testing.T, rds redisDeployment) {
	nodes := cluster(t, 2, "", fmt.Sprintf(`
	rate_limit {
		zone spare {
			key {http.request.header.X-Client}
			events 2
			window 2s
			algorithm token_bucket
		}
		redis %s
	}
	respond ok
`, rds.url), "")
	calls := func() int { return rds.calls("evalsha", "eval") }
	for range 2 {
		if r := nodes[0].get("/", "X-Client: a"); r.status != 200 {
			t.Fatalf("within the limit: %d", r.status)
		}
	}
	if r := nodes[0].get("/", "X-Client: a"); r.status != 429 {
		t.Fatalf("over the limit: %d", r.status)
	}
	refusedAt := time.Now()
	before := calls()
	for range 20 {
		r := nodes[0].get("/", "X-Client: a")
		if r.status != 429 || r.header.Get("Retry-After") == "" || !strings.Contains(r.header.Get("RateLimit"), `"spare";r=0;t=`) {
			t.Fatalf("a refusal the node knew of: %d %v", r.status, r.header)
		}
	}
	if n := calls() - before; n != 0 {
		t.Errorf("%d Redis calls for 20 refusals the node knew of, want 0", n)
	}
	for range 5 {
		if r := nodes[1].get("/", "X-Client: a"); r.status != 429 {
			t.Fatalf("the other node admitted: %d", r.status)
		}
	}
	if n := calls() - before; n != 1 {
		t.Errorf("%d Redis calls for the other node's 5 refusals, want 1 (the first)", n)
	}
	if r := nodes[0].get("/", "X-Client: b"); r.status != 200 {
		t.Errorf("another key was refused: %d", r.status)
	}
	// The token bucket refills one token a second: once the refusal ends,
	// Redis decides again, and admits.
	time.Sleep(time.Until(refusedAt.Add(1200 * time.Millisecond)))
	before = calls()
	if r := nodes[0].get("/", "X-Client: a"); r.status != 200 {
		t.Errorf("after the refusal ended: %d", r.status)
	}
	if n := calls() - before; n != 1 {
		t.Errorf("%d Redis calls for the first request after the refusal ended, want 1", n)
	}
}

// TestLocalRefusalIsCheckedWhenItWouldRefuse: a request that waited in
// an earlier handler (here a leaky bucket) past the end of a refusal is
// decided by Redis, not refused by the time Caddy began it.
func TestLocalRefusalIsCheckedWhenItWouldRefuse(t *testing.T) {
	rds := redistest.Start(t)
	g := startGateway(t, "", fmt.Sprintf(`
	rate_limit {
		zone queue {
			key {http.request.header.X-Queue}
			events 1
			window 1500ms
			algorithm leaky_bucket
			burst 1
		}
	}
	rate_limit {
		zone shared {
			key static
			events 1
			window 1s
			algorithm token_bucket
		}
		redis %s
	}
	respond ok
`, rds.URL), "")
	if r := g.get("/", "X-Queue: a"); r.status != 200 {
		t.Fatalf("first request: %d", r.status)
	}
	if r := g.get("/", "X-Queue: b"); r.status != 429 {
		t.Fatalf("second request, over the shared limit: %d", r.status)
	}
	// Queue a waits 1.5 s for its slot; the shared refusal ends about
	// 1 s after the first request, and its token is back then.
	if r := g.get("/", "X-Queue: a"); r.status != 200 {
		t.Errorf("after waiting past the refusal's end: %d %v, want 200 from Redis", r.status, r.header)
	}
}

// TestRedisHungHoldsNoRequest: a Redis that accepts connections and
// answers nothing (SIGSTOP) holds no request past the timeout, even among
// many at once, queued behind batches stuck on it; fail_mode local then
// decides.
func TestRedisHungHoldsNoRequest(t *testing.T) {
	rds := redistest.Start(t)
	g := startGateway(t, "", fmt.Sprintf(`
	rate_limit {
		zone hung {
			key {http.request.header.X-Client}
			events 100
			window 1m
		}
		redis %s
		timeout 100ms
	}
	respond ok
`, rds.URL), "")
	if r := g.get("/", "X-Client: a"); r.status != 200 {
		t.Fatalf("with Redis up: %d", r.status)
	}
	rds.Pause()
	var wg sync.WaitGroup
	statuses := make(chan int, 32)
	for i := range 32 {
		wg.Go(func() {
			// A bound far above the timeout, for a loaded machine: what
			// it catches is a request held by the hung server.
			statuses <- g.statusWithin(3*time.Second, "/", fmt.Sprintf("X-Client: c%d", i%4))
		})
	}
	wg.Wait()
	close(statuses)
	for s := range statuses {
		if s != 200 {
			t.Errorf("with Redis hung: status %d (0: no answer within 3s), want 200 decided locally", s)
		}
	}
}

func TestRedisFailModes(t *testing.T) {
	rds := redistest.Start(t)
	site := func(mode string) string {
		return fmt.Sprintf(`
	rate_limit {
		zone f_%s {
			key {http.request.header.X-Client}
			events 3
			window 1h
		}
		redis %s
		fail_mode %s
		timeout 50ms
	}
	respond ok
`, mode, rds.URL, mode)
	}
	nodes := map[string]*gateway{}
	for _, mode := range []string{"local", "open", "closed"} {
		nodes[mode] = startGateway(t, "", site(mode), "")
		if got := nodes[mode].countStatuses(2, "/", "X-Client: a"); got[200] != 2 {
			t.Fatalf("%s: with Redis up: %v", mode, got)
		}
	}
	rds.Stop()
	for mode, g := range nodes {
		start := time.Now()
		got := g.countStatuses(5, "/", "X-Client: a")
		// No request may hang on the dead store: a generous bound for a
		// loaded machine, far below a hang.
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("%s: five requests took %v with Redis down", mode, took)
		}
		switch mode {
		case "local":
			if got[200] != 3 || got[429] != 2 {
				t.Errorf("local: %v, want the node's own memory to admit 3 of 5", got)
			}
		case "open":
			if got[200] != 5 {
				t.Errorf("open: %v, want all admitted", got)
			}
		case "closed":
			if got[503] != 5 {
				t.Errorf("closed: %v, want all refused with 503", got)
			}
		}
	}
	metrics := nodes["local"].adminDo("GET", "/metrics", "", "").body
	if !regexpMatch(`caddy_rate_limit_store_errors_total\{zone="f_local"\} [1-9]`, metrics) {
		t.Error("store errors were not counted")
	}

	// Redis returns, empty and without the script: service resumes.
	rds.Restart()
	time.Sleep(1100 * time.Millisecond) // the breaker's pause
	for mode, g := range nodes {
		got := g.countStatuses(4, "/", "X-Client: b")
		if got[200] != 3 || got[429] != 1 {
			t.Errorf("%s after Redis returned: %v, want the shared limit again", mode, got)
		}
	}
}

func TestCaddyStartsWithRedisDown(t *testing.T) {
	rds := redistest.Start(t)
	rds.Stop()
	up := newUpstream(t, serial())
	g := startGateway(t, fmt.Sprintf("\tcache_pool {\n\t\tredis %s\n\t}", rds.URL), fmt.Sprintf(`
	rate_limit {
		zone down {
			key static
			events 2
			window 1h
		}
		redis %s
	}
	cache_read products
	cache_write products {
		ttl 1h
	}
	reverse_proxy {upstream}
`, rds.URL), up.addr())
	if got := g.countStatuses(3, "/"); got[200] != 2 || got[429] != 1 {
		t.Errorf("with Redis down from the start: %v, want local limits", got)
	}
	out := g.adminJSON("DELETE", "/cache/products", "", 200)
	if out["nodes"] != 1.0 || out["bus_error"] == nil {
		t.Errorf("flush with Redis down: %v, want a local flush and the bus error", out)
	}
}

func TestRedisRateLimitAdminReset(t *testing.T) { forEachRedis(t, testRedisRateLimitAdminReset) }

func testRedisRateLimitAdminReset(t *testing.T, rds redisDeployment) {
	// The URL comes from the environment, as operators keep secrets.
	t.Setenv("GATEWAY_TEST_REDIS_URL", rds.url)
	nodes := cluster(t, 2, "", `
	rate_limit {
		zone shared {
			key {http.request.header.X-Client}
			events 1
			window 1h
		}
		redis {env.GATEWAY_TEST_REDIS_URL}
	}
	respond ok
`, "")
	nodes[0].get("/", "X-Client: a")
	nodes[0].get("/", "X-Client: b")
	if nodes[1].get("/", "X-Client: a").status != 429 {
		t.Fatal("the limit is not shared")
	}
	// Each node now refuses key a by itself, without asking Redis; a
	// reset on one node must reach the other's refusals too.
	if nodes[0].get("/", "X-Client: b").status != 429 || nodes[1].get("/", "X-Client: b").status != 429 {
		t.Fatal("key b is not limited on both nodes")
	}
	if out := nodes[0].adminJSON("DELETE", "/rate_limit/shared?key=a", "", 200); out["reset"] != true || out["nodes"] != 2.0 {
		t.Errorf("reset: %v, want reset on 2 nodes", out)
	}
	if nodes[1].get("/", "X-Client: a").status != 200 {
		t.Error("key a still limited on the other node after its reset")
	}
	if nodes[1].get("/", "X-Client: b").status != 429 {
		t.Error("resetting key a reset key b")
	}
	if out := nodes[1].adminJSON("DELETE", "/rate_limit/shared", "", 200); out["nodes"] != 2.0 {
		t.Errorf("zone reset: %v, want 2 nodes", out)
	}
	if nodes[0].get("/", "X-Client: b").status != 200 {
		t.Error("key b still limited after the zone's reset")
	}
}

func regexpMatch(pattern, s string) bool {
	return regexpMust(pattern).MatchString(s)
}

func TestInvalidationReachesEveryNode(t *testing.T) {
	forEachRedis(t, testInvalidationReachesEveryNode)
}

func testInvalidationReachesEveryNode(t *testing.T, rds redisDeployment) {
	up := newUpstream(t, serial("Surrogate-Key", "all"))
	globals := fmt.Sprintf("\tcache_pool {\n\t\tredis %s\n\t}", rds.url)
	nodes := cluster(t, 3, globals, `
	@write method POST
	cache_invalidate @write products {
		urls {http.request.uri.path}
	}
	cache_read products
	cache_write products {
		ttl 1h
	}
	reverse_proxy {upstream}
`, up.addr())
	warm := func(path string) {
		t.Helper()
		for _, g := range nodes {
			g.get(path)
			if !g.get(path).isHit() {
				t.Fatalf("%s not cached on a node", path)
			}
		}
	}
	missesOn := func(step, path string, which ...int) {
		t.Helper()
		for _, i := range which {
			if nodes[i].get(path).isHit() {
				t.Errorf("%s: node %d still serves %s", step, i, path)
			}
		}
	}

	warm("/a")
	if out := nodes[0].adminJSON("DELETE", "/cache/products", "", 200); out["nodes"] != 3.0 {
		t.Errorf("flush answer %v, want 3 nodes", out)
	}
	missesOn("flush", "/a", 1, 2)

	warm("/b")
	out := nodes[1].adminJSON("POST", "/cache/products/purge", `{"urls":["/b"]}`, 200)
	if out["nodes"] != 3.0 || out["removed"] != 1.0 {
		t.Errorf("purge answer %v", out)
	}
	missesOn("purge by URL", "/b", 0, 2)

	warm("/c")
	nodes[2].adminJSON("POST", "/cache/products/purge", `{"tags":["all"]}`, 200)
	missesOn("purge by tag", "/c", 0, 1)

	warm("/d")
	if r := nodes[0].request("POST", "/d"); r.status != 200 {
		t.Fatalf("POST: %d", r.status)
	}
	missesOn("cache_invalidate", "/d", 1, 2)

	warm("/e")
	nodes[0].adminJSON("DELETE", "/cache/", "", 200)
	missesOn("flush all", "/e", 1, 2)
}

// TestFailedStartKeepsTheBus checks that a config that fails to start
// leaves the running config's caches on their invalidation bus: the
// cache_pool app binds them to its own when it starts, and may start
// before another app fails.
func TestFailedStartKeepsTheBus(t *testing.T) {
	rds := redistest.Start(t)
	up := newUpstream(t, serial())
	globals := fmt.Sprintf("\tcache_pool {\n\t\tredis %s\n\t}", rds.URL)
	nodes := cluster(t, 2, globals, productsSite, up.addr())
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	// No Redis, and a port already taken.
	unstartable := nodes[0].caddyfile("", productsSite, up.addr()) + "\nhttp://" + busy.Addr().String() + " {\n\trespond ok\n}\n"
	for range 12 {
		nodes[0].loadFails(unstartable)
	}
	nodes[0].get("/x")
	if !nodes[0].get("/x").isHit() {
		t.Fatal("/x not cached on node 0")
	}
	if out := nodes[1].adminJSON("DELETE", "/cache/products", "", 200); out["nodes"] != 2.0 {
		t.Errorf("flush from node 1: %v, want 2 nodes", out)
	}
	if nodes[0].get("/x").isHit() {
		t.Error("node 0 still serves /x after node 1's flush")
	}
	if out := nodes[0].adminJSON("DELETE", "/cache/products", "", 200); out["nodes"] != 2.0 {
		t.Errorf("flush from node 0: %v, want 2 nodes", out)
	}
}

func TestNodeFlushesAfterMissingInvalidations(t *testing.T) {
	rds := redistest.Start(t)
	up := newUpstream(t, serial())
	globals := fmt.Sprintf("\tcache_pool {\n\t\tredis %s\n\t}", rds.URL)
	nodes := cluster(t, 2, globals, productsSite, up.addr())
	for _, g := range nodes {
		g.get("/x")
	}
	// Let both nodes subscribe before the outage.
	nodes[0].adminJSON("DELETE", "/cache/products", "", 200)
	for _, g := range nodes {
		g.get("/x")
	}
	rds.Stop()
	// Node 0 purges while Redis is down: node 1 cannot hear it.
	out := nodes[0].adminJSON("POST", "/cache/products/purge", `{"urls":["/x"]}`, 200)
	if out["bus_error"] == nil {
		t.Errorf("purge during the outage reported no bus error: %v", out)
	}
	rds.Restart()
	// Node 1 resubscribes and flushes what it may have missed.
	deadline := time.Now().Add(10 * time.Second)
	for nodes[1].get("/x").isHit() {
		if time.Now().After(deadline) {
			t.Fatal("node 1 still serves an entry purged while it was away")
		}
		nodes[0].get("/refill") // keep node 0 busy; node 1 is polled
		time.Sleep(200 * time.Millisecond)
	}
}

// TestRedisClusterSpreadsKeys: in a Redis Cluster the keys of a zone lie
// on every master; a zone's reset finds them on each, and the zones of
// one request decide together when they share its key, one key after
// another when they do not.
func TestRedisClusterSpreadsKeys(t *testing.T) {
	rc := redistest.StartCluster(t, 3)
	nodes := cluster(t, 2, "", fmt.Sprintf(`
	rate_limit {
		zone per_client {
			key {http.request.header.X-Client}
			events 2
			window 1h
		}
		zone per_client_strict {
			key {http.request.header.X-Client}
			events 1
			window 1h
			algorithm token_bucket
		}
		zone per_team {
			key {http.request.header.X-Team}
			events 1
			window 1h
		}
		redis %s
	}
	respond ok
`, rc.URL), "")

	// Thirty clients, one request each: admitted, and their states spread
	// over the masters.
	for i := range 30 {
		if r := nodes[i%2].get("/", fmt.Sprintf("X-Client: c%d", i), fmt.Sprintf("X-Team: t%d", i)); r.status != 200 {
			t.Fatalf("client %d: %d", i, r.status)
		}
	}
	for _, s := range rc.Nodes {
		if n := s.Do("DBSIZE"); n == "0" {
			t.Errorf("master %s holds no key", s.Addr)
		}
	}
	if out := nodes[0].adminJSON("DELETE", "/rate_limit/per_team", "", 200); out["reset_keys"] != 30.0 || out["nodes"] != 2.0 {
		t.Errorf("zone reset: %v, want 30 keys on 2 nodes", out)
	}
	for i := range 30 {
		if r := nodes[1].get("/", fmt.Sprintf("X-Client: d%d", i), fmt.Sprintf("X-Team: t%d", i)); r.status != 200 {
			t.Fatalf("team %d after its zone's reset: %d", i, r.status)
		}
	}

	// One key, two zones: one script. The strict zone refuses, and the
	// other zone is not charged: per_client has one of its two events
	// left after the reset.
	nodes[0].get("/", "X-Client: solo", "X-Team: a")
	for range 3 {
		if r := nodes[0].get("/", "X-Client: solo", "X-Team: b"); r.status != 429 {
			t.Fatalf("over the strict zone: %d", r.status)
		}
	}
	nodes[0].adminJSON("DELETE", "/rate_limit/per_client_strict?key=solo", "", 200)
	if r := nodes[1].get("/", "X-Client: solo", "X-Team: c"); r.status != 200 {
		t.Errorf("the refused requests were charged to per_client: %d", r.status)
	}

	// Two keys in two slots: per_team is decided after the client's zones
	// admitted, and keeps nothing of a request they refuse.
	nodes[0].get("/", "X-Client: pair", "X-Team: first")
	if r := nodes[0].get("/", "X-Client: pair", "X-Team: second"); r.status != 429 {
		t.Fatalf("over the strict zone: %d", r.status)
	}
	if r := nodes[1].get("/", "X-Client: new", "X-Team: second"); r.status != 200 {
		t.Errorf("a request that its client's zone refused was charged to its team: %d", r.status)
	}
}

// TestRedisSentinelFailover: when the master that a Sentinel watches
// dies, the Sentinel promotes its replica, and the gateways find it by
// themselves: decisions and the invalidation bus resume on the new
// master.
func TestRedisSentinelFailover(t *testing.T) {
	rs := redistest.StartSentinel(t)
	up := newUpstream(t, serial())
	globals := fmt.Sprintf("\tcache_pool {\n\t\tredis %s\n\t}", rs.URL)
	nodes := cluster(t, 2, globals, fmt.Sprintf(`
	rate_limit {
		zone failover {
			key {http.request.header.X-Client}
			events 1
			window 1h
		}
		redis %s
		timeout 500ms
		fail_mode closed
	}
	cache_read products
	cache_write products {
		ttl 1h
	}
	reverse_proxy {upstream}
`, rs.URL), up.addr())
	if r := nodes[0].get("/", "X-Client: before"); r.status != 200 {
		t.Fatalf("before the failover: %d", r.status)
	}
	if r := nodes[1].get("/", "X-Client: before"); r.status != 429 {
		t.Fatalf("the limit is not shared: %d", r.status)
	}

	rs.Master.Stop()
	deadline := time.Now().Add(30 * time.Second)
	for n, g := range nodes {
		for i := 0; ; i++ {
			r := g.get("/", fmt.Sprintf("X-Client: after%d-%d", n, i))
			if r.status == 200 {
				break
			}
			if r.status != 503 {
				t.Fatalf("node %d during the failover: %d, want 503 (fail_mode closed) or 200", n, r.status)
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %d: decisions did not resume after the failover", n)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if !strings.Contains(rs.Replica.Do("INFO", "replication"), "role:master") {
		t.Fatal("the replica was not promoted")
	}
	nodes[0].get("/", "X-Client: shared")
	if r := nodes[1].get("/", "X-Client: shared"); r.status != 429 {
		t.Errorf("the limit is not shared on the new master: %d", r.status)
	}

	// The bus subscribes again on the new master.
	flushReachesEveryNode(t, "after the failover", nodes)
}

// flushReachesEveryNode caches /page on every node and flushes products
// from the first until the answer counts every node, for a bus that may
// be subscribing anew, then checks that the flush emptied the others.
func flushReachesEveryNode(t *testing.T, step string, nodes []*gateway) {
	t.Helper()
	for _, g := range nodes {
		g.get("/page")
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		out := nodes[0].adminJSON("DELETE", "/cache/products", "", 200)
		if out["nodes"] == float64(len(nodes)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: flush answered %v, want %d nodes", step, out, len(nodes))
		}
		time.Sleep(100 * time.Millisecond)
	}
	for i, g := range nodes[1:] {
		if g.get("/page").isHit() {
			t.Errorf("%s: the flush did not reach node %d", step, i+1)
		}
	}
}

// TestRedisZoneReconfigured: as in memory, a zone's keys in Redis keep
// their state across a reload that changes only the number of events, and
// count afresh under a new algorithm or window, whose arithmetic would
// misread the old state.
func TestRedisZoneReconfigured(t *testing.T) {
	rds := redistest.Start(t)
	site := func(events int, window, algorithm string) string {
		return fmt.Sprintf(`
	rate_limit {
		zone z {
			key {http.request.header.X-Client}
			events %d
			window %s
			algorithm %s
		}
		redis %s
	}
	respond ok
`, events, window, algorithm, rds.URL)
	}
	// Hours: a minute's fixed window could turn between two steps.
	g := startGateway(t, "", site(2, "1h", "fixed_window"), "")
	if got := g.countStatuses(3, "/", "X-Client: a"); got[200] != 2 || got[429] != 1 {
		t.Fatalf("before the reloads: %v", got)
	}
	g.reload("", site(3, "1h", "fixed_window"), "")
	if got := g.countStatuses(2, "/", "X-Client: a"); got[200] != 1 || got[429] != 1 {
		t.Errorf("with one event more: %v, want the one more admitted", got)
	}
	for _, next := range []struct{ window, algorithm string }{{"2h", "fixed_window"}, {"2h", "sliding_window"}, {"2h", "token_bucket"}} {
		g.reload("", site(3, next.window, next.algorithm), "")
		if got := g.countStatuses(4, "/", "X-Client: a"); got[200] != 3 || got[429] != 1 {
			t.Errorf("under %s over %s: %v, want a fresh count of 3", next.algorithm, next.window, got)
		}
	}
	if out := g.adminJSON("DELETE", "/rate_limit/z?key=a", "", 200); out["reset"] != true {
		t.Errorf("reset of the key under its current limit: %v", out)
	}
	if r := g.get("/", "X-Client: a"); r.status != 200 {
		t.Errorf("after the key's reset: %d", r.status)
	}
}

// TestRedisClusterBusFollowsItsSlot: when the cluster gives the bus
// channel's slot to another node, that node carries the channel from then
// on; each node subscribes there, and invalidations reach every node
// again.
func TestRedisClusterBusFollowsItsSlot(t *testing.T) {
	rc := redistest.StartCluster(t, 3)
	up := newUpstream(t, serial())
	globals := fmt.Sprintf("\tcache_pool {\n\t\tredis %s\n\t}", rc.URL)
	nodes := cluster(t, 2, globals, `
	cache_read products
	cache_write products {
		ttl 1h
	}
	reverse_proxy {upstream}
`, up.addr())
	flushReachesEveryNode(t, "before the move", nodes)

	nodes[1].get("/kept")
	if !nodes[1].get("/kept").isHit() {
		t.Fatal("/kept not cached")
	}
	var slot int
	fmt.Sscan(rc.Nodes[0].Do("CLUSTER", "KEYSLOT", "caddy-gateway:cache:invalidate:0"), &slot)
	rc.MoveSlot(t, slot, (rc.Owner(slot)+1)%3)
	// What was published while a node had no subscription is lost: each
	// node flushes what it serves once it has subscribed again.
	for deadline := time.Now().Add(15 * time.Second); nodes[1].get("/kept").isHit(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the node did not flush its cache when it subscribed again")
		}
	}
	flushReachesEveryNode(t, "after the move", nodes)
}

// TestRedisBreakerOpensWithLongTimeout: after a decision fails, the node
// skips Redis for a second from the failure. It used to count the second
// from the request's arrival, at least the timeout before: with a timeout
// of a second or more, every request waited for the hung Redis.
func TestRedisBreakerOpensWithLongTimeout(t *testing.T) {
	rds := redistest.Start(t)
	g := startGateway(t, "", fmt.Sprintf(`
	rate_limit {
		zone z {
			key {http.request.header.X-Client}
			events 100
			window 1m
		}
		redis %s
		timeout 1200ms
	}
	respond ok
`, rds.URL), "")
	if r := g.get("/", "X-Client: a"); r.status != 200 {
		t.Fatalf("with Redis up: %d", r.status)
	}
	rds.Pause()
	defer rds.Resume()
	if status := g.statusWithin(5*time.Second, "/", "X-Client: a"); status != 200 {
		t.Fatalf("the request that found Redis hung: %d, want 200 from fail_mode local", status)
	}
	// Within the breaker's second, half the timeout is plenty.
	if status := g.statusWithin(600*time.Millisecond, "/", "X-Client: a"); status != 200 {
		t.Errorf("the next request: %d, want 200 without waiting for Redis", status)
	}
}

// TestLocalRefusalTellsTheLatestMoment: when several zones refused a key,
// the node's own refusal answers with the latest moment, as Redis did, not
// with the first zone's by name; and whoever refused, the zone named is
// the one that refuses longest.
func TestLocalRefusalTellsTheLatestMoment(t *testing.T) {
	rds := redistest.Start(t)
	g := startGateway(t, "", fmt.Sprintf(`
	rate_limit {
		zone a_short {
			key {http.request.header.X-Client}
			events 1
			window 3s
			algorithm token_bucket
		}
		zone b_long {
			key {http.request.header.X-Client}
			events 1
			window 1h
			algorithm token_bucket
		}
		redis %s
	}
	respond ok
	handle_errors {
		respond "{http.rate_limit.exceeded.name}" 429
	}
`, rds.URL), "")
	if r := g.get("/", "X-Client: k"); r.status != 200 {
		t.Fatalf("first request: %d", r.status)
	}
	calls := rds.Calls("evalsha", "eval")
	for i := range 3 {
		r := g.get("/", "X-Client: k")
		retry, _ := strconv.Atoi(r.header.Get("Retry-After"))
		if r.status != 429 || retry < 3500 || r.body != "b_long" {
			t.Errorf("refusal %d: %d %q with Retry-After %q, want 429 b_long and about 3600", i, r.status, r.body, r.header.Get("Retry-After"))
		}
	}
	if n := rds.Calls("evalsha", "eval") - calls; n != 1 {
		t.Errorf("%d script calls for three refusals, want 1: the others are the node's own", n)
	}
}

// TestRedisClusterRetryAfterOfEveryZone: in a Redis Cluster, zones keyed
// on different values are decided one key after another. Once one refuses,
// the rest are still decided (charged nothing), so that Retry-After is the
// latest moment any zone admits the request, as with one Redis. They used
// to be looked at cost zero, which read as admitting: Retry-After said 3s
// where the tenant's zone refused for an hour.
func TestRedisClusterRetryAfterOfEveryZone(t *testing.T) {
	rc := redistest.StartCluster(t, 3)
	g := startGateway(t, "", fmt.Sprintf(`
	rate_limit {
		zone a_client {
			key {http.request.header.X-Client}
			events 1
			window 3s
			algorithm token_bucket
		}
		zone b_tenant {
			key {http.request.header.X-Tenant}
			events 1
			window 1h
			algorithm token_bucket
		}
		redis %s
		timeout 500ms
	}
	respond ok
`, rc.URL), "")
	if r := g.get("/", "X-Client: c1", "X-Tenant: T"); r.status != 200 {
		t.Fatalf("first request: %d", r.status)
	}
	r := g.get("/", "X-Client: c1", "X-Tenant: T")
	if retry, _ := strconv.Atoi(r.header.Get("Retry-After")); r.status != 429 || retry < 3500 {
		t.Errorf("second request: %d, Retry-After %q, want 429 and about 3600 (RateLimit %q)", r.status, r.header.Get("Retry-After"), r.header.Get("RateLimit"))
	}
}

// TestRedisHungDecisionsChargeNothingLater: a decision already on the wire
// when Redis hangs times out and is decided by fail_mode; when Redis
// resumes it runs the script, long after its deadline, and must charge
// nothing: the request was answered already.
func TestRedisHungDecisionsChargeNothingLater(t *testing.T) {
	rds := redistest.Start(t)
	g := startGateway(t, "", fmt.Sprintf(`
	rate_limit {
		zone later {
			key {http.request.header.X-Client}
			events 5
			window 1h
			algorithm token_bucket
		}
		redis %s
		fail_mode closed
		timeout 100ms
	}
	respond ok
`, rds.URL), "")
	remaining := func(r response) int {
		t.Helper()
		var n int
		if _, err := fmt.Sscanf(r.header.Get("RateLimit"), `"later";r=%d`, &n); err != nil {
			t.Fatalf("RateLimit %q: %v", r.header.Get("RateLimit"), err)
		}
		return n
	}
	before := g.get("/", "X-Client: v")
	if before.status != 200 {
		t.Fatalf("with Redis up: %d", before.status)
	}
	rds.Pause()
	var wg sync.WaitGroup
	for range 5 {
		wg.Go(func() {
			if status := g.statusWithin(5*time.Second, "/", "X-Client: v"); status != 503 {
				t.Errorf("with Redis hung: %d, want 503 (fail_mode closed)", status)
			}
		})
	}
	wg.Wait()
	time.Sleep(1500 * time.Millisecond) // past the decisions' deadline and their grace of a second
	rds.Resume()
	time.Sleep(1200 * time.Millisecond) // the breaker's second
	after := g.get("/", "X-Client: v")
	if after.status != 200 || remaining(after) != remaining(before)-1 {
		t.Errorf("after Redis resumed: %d with %q, want 200 and one fewer than %q: a hung decision was charged",
			after.status, after.header.Get("RateLimit"), before.header.Get("RateLimit"))
	}
}

// TestLocalRefusalOfARequestThatCanNeverPass: a request whose cost is
// above a zone's capacity gets no Retry-After, from Redis or from the
// node, which must not answer with another zone's moment.
func TestLocalRefusalOfARequestThatCanNeverPass(t *testing.T) {
	rds := redistest.Start(t)
	g := startGateway(t, "", fmt.Sprintf(`
	rate_limit {
		zone a {
			key {http.request.header.X-Client}
			events 1
			window 1h
			cost {http.request.header.X-Cost}
		}
		zone b {
			key {http.request.header.X-Client}
			events 2
			window 1m
			algorithm token_bucket
			cost {http.request.header.X-Cost}
		}
		redis %s
	}
	respond ok
`, rds.URL), "")
	if r := g.get("/", "X-Client: k", "X-Cost: 1"); r.status != 200 {
		t.Fatalf("cost 1: %d", r.status)
	}
	for i := range 3 {
		r := g.get("/", "X-Client: k", "X-Cost: 2")
		if r.status != 429 || r.header.Get("Retry-After") != "" {
			t.Errorf("cost 2, refusal %d: %d with Retry-After %q, want 429 without one: zone a never admits it", i, r.status, r.header.Get("Retry-After"))
		}
	}
}

// TestLocalRefusalsAcrossTimeouts: two handlers that share a zone on one
// Redis with different timeouts (hence two clients) share its refusals:
// neither's refusals go to Redis once it has refused the key.
func TestLocalRefusalsAcrossTimeouts(t *testing.T) {
	rds := redistest.Start(t)
	zone := func(timeout string) string {
		return fmt.Sprintf(`rate_limit {
			zone z {
				key {http.request.header.X-Client}
				events 1
				window 1h
			}
			redis %s
			%s
		}
		respond ok`, rds.URL, timeout)
	}
	g := startGateway(t, "", fmt.Sprintf("\thandle /a {\n\t\t%s\n\t}\n\thandle /b {\n\t\t%s\n\t}\n", zone(""), zone("timeout 80ms")), "")
	if r := g.get("/a", "X-Client: k"); r.status != 200 {
		t.Fatalf("first request: %d", r.status)
	}
	calls := rds.Calls("evalsha", "eval")
	for i := range 3 {
		for _, path := range []string{"/a", "/b"} {
			if r := g.get(path, "X-Client: k"); r.status != 429 {
				t.Fatalf("refusal %d on %s: %d", i, path, r.status)
			}
		}
	}
	if n := rds.Calls("evalsha", "eval") - calls; n != 1 {
		t.Errorf("%d script calls for six refusals through two handlers, want 1", n)
	}
}
