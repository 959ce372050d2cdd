package gateway_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caddy-gateway/gateway/internal/redistest"
)

// poolOn is the global options of a cache_pool on a Redis.
func poolOn(url string) string { return fmt.Sprintf("\tcache_pool {\n\t\tredis %s\n\t}\n", url) }

// eventually polls cond every 100ms for up to ten seconds.
func eventually(cond func() bool) bool {
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

// TestBusServesWhileDraining: a node in its shutdown_delay still serves
// from its caches, so it must still hear other nodes' invalidations. Caddy
// stops apps in no set order: each of three draining nodes used to leave
// the bus when cache_pool happened to stop before the HTTP app's delay.
func TestBusServesWhileDraining(t *testing.T) {
	rds := redistest.Start(t)
	up := newUpstream(t, serial())
	nodes := cluster(t, 4, "\tshutdown_delay 5s\n"+poolOn(rds.URL), productsSite, up.addr())
	if out := nodes[3].adminJSON("DELETE", "/cache/products", "", 200); out["nodes"] != 4.0 {
		t.Fatalf("flush before the stop: %v, want 4 nodes", out)
	}
	draining := nodes[:3]
	for i, g := range draining {
		g.get("/x")
		if !g.get("/x").isHit() {
			t.Fatalf("/x not cached on node %d", i)
		}
		if err := g.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
	}
	for i, g := range draining {
		if !g.logged("shutdown scheduled") {
			t.Fatalf("node %d did not schedule its shutdown", i)
		}
	}
	if out := nodes[3].adminJSON("DELETE", "/cache/products", "", 200); out["nodes"] != 4.0 || out["bus_error"] != nil {
		t.Errorf("flush while three nodes drain: %v, want 4 nodes", out)
	}
	for i, g := range draining {
		if r := g.get("/x"); r.status != 200 || r.isHit() {
			t.Errorf("node %d, draining, answers %d %q after the flush", i, r.status, r.cacheStatus())
		}
	}
}

// TestBusFlushesAfterFailingToSubscribe: a node that starts while Redis
// is down cannot hear what others publish meanwhile; once it subscribes,
// it flushes, as after a lost subscription.
func TestBusFlushesAfterFailingToSubscribe(t *testing.T) {
	rds := redistest.Start(t)
	rds.Stop()
	up := newUpstream(t, serial())
	g := startGateway(t, poolOn(rds.URL), productsSite, up.addr())
	g.get("/x")
	if !g.get("/x").isHit() {
		t.Fatal("/x not cached while Redis is down")
	}
	rds.Restart()
	if !eventually(func() bool { return !g.get("/x").isHit() }) {
		t.Error("the node still serves /x ten seconds after Redis came back")
	}
}

// TestBusRefusedSubscription: a Redis user without the channel's
// permission is refused the subscription. The report says the bus is not
// subscribed, and why; once the permission is given, the bus subscribes
// by itself.
func TestBusRefusedSubscription(t *testing.T) {
	rds := redistest.Start(t)
	rds.Do("ACL", "SETUSER", "gw", "on", ">pw", "~*", "+@all", "resetchannels")
	url := "redis://gw:pw@" + rds.Addr + "/0"
	g := startGateway(t, poolOn(url), healthRoutes+"\trespond ok\n", "")
	busOf := func() (status, message string) {
		rep := decodeReport(t, g.get("/health"))
		if len(rep.Checks.Bus) != 1 {
			t.Fatalf("bus checks: %+v", rep.Checks.Bus)
		}
		return rep.Checks.Bus[0].Status, rep.Checks.Bus[0].Error
	}
	if !eventually(func() bool { _, msg := busOf(); return strings.Contains(msg, "NOPERM") }) {
		status, msg := busOf()
		t.Fatalf("bus refused its channel: %s %q, want degraded, not subscribed: NOPERM", status, msg)
	}
	if status, msg := busOf(); status != "degraded" || !strings.HasPrefix(msg, "not subscribed: ") {
		t.Errorf("bus refused its channel: %s %q, want degraded, not subscribed: NOPERM", status, msg)
	}
	rds.Do("ACL", "SETUSER", "gw", "allchannels")
	if !eventually(func() bool { status, _ := busOf(); return status == "ok" }) {
		status, msg := busOf()
		t.Fatalf("bus given its channel: %s %q, want ok", status, msg)
	}
	if n := subscribers(t, rds.Addr, "caddy-gateway:cache:invalidate:0"); n != 1 {
		t.Errorf("%d subscribers to the bus's channel, want 1", n)
	}
}

// listen subscribes to the bus's channel of database 0, as a node that
// never acknowledges.
func listen(t *testing.T, addr string) *redis.PubSub {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { c.Close() })
	ps := c.Subscribe(context.Background(), "caddy-gateway:cache:invalidate:0")
	t.Cleanup(func() { ps.Close() })
	if _, err := ps.Receive(context.Background()); err != nil {
		t.Fatal(err)
	}
	return ps
}

// subscribers returns how many clients subscribe to a channel.
func subscribers(t *testing.T, addr, channel string) int64 {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	n, err := c.PubSubNumSub(context.Background(), channel).Result()
	if err != nil {
		t.Fatal(err)
	}
	return n[channel]
}

// TestReadyIgnoresTheBus: ready answers by the zones in fail_mode closed
// alone. A hung Redis that only the bus uses must not hold a ready probe
// for the bus's 2s timeout, longer than orchestrators wait (Kubernetes: 1s).
func TestReadyIgnoresTheBus(t *testing.T) {
	rds := redistest.Start(t)
	g := startGateway(t, poolOn(rds.URL), healthRoutes+"\trespond ok\n", "")
	if code, status := probeStatus(t, g.get("/ready")); code != 200 || status != "ready" {
		t.Fatalf("ready with Redis up: %d %s", code, status)
	}
	rds.Pause()
	defer rds.Resume()
	c := &http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + g.addr + "/ready")
	if err != nil {
		t.Fatalf("ready with the bus's Redis hung: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("ready with the bus's Redis hung: %d, want 200", resp.StatusCode)
	}
}

// TestBusPerDatabase: pub/sub ignores Redis' database numbers, but two
// databases are two deployments (staging and production on one Redis):
// a flush on one must neither reach the other nor wait for its nodes.
func TestBusPerDatabase(t *testing.T) {
	rds := redistest.Start(t)
	up := newUpstream(t, serial())
	a := startGateway(t, poolOn("redis://"+rds.Addr+"/0"), productsSite, up.addr())
	c := startGateway(t, poolOn("redis://"+rds.Addr+"/1"), productsSite, up.addr())
	c.get("/x")
	if !c.get("/x").isHit() {
		t.Fatal("/x not cached on the node of database 1")
	}
	if out := a.adminJSON("DELETE", "/cache/products", "", 200); out["nodes"] != 1.0 || out["bus_error"] != nil {
		t.Errorf("flush on database 0: %v, want 1 node and no bus error", out)
	}
	if !c.get("/x").isHit() {
		t.Error("a flush on database 0 flushed the node of database 1")
	}
}

// TestBusOnePerNode: a process is one node on a Redis, however its
// handlers spell the Redis' URL.
func TestBusOnePerNode(t *testing.T) {
	rds := redistest.Start(t)
	site := fmt.Sprintf(`
	rate_limit {
		zone z {
			key static
			events 100
			window 1m
		}
		redis redis://%s
	}
`, rds.Addr) + productsSite
	g := startGateway(t, poolOn("redis://"+rds.Addr+"/0"), site, "127.0.0.1:1")
	if out := g.adminJSON("DELETE", "/cache/products", "", 200); out["nodes"] != 1.0 || out["bus_error"] != nil {
		t.Errorf("flush: %v, want 1 node", out)
	}
}

// TestBusIgnoresHostileMessages: whoever can publish on the channel is
// trusted with invalidations, but not with more than a node sends: a purge
// of more targets than the admin API takes is ignored, and so is a message
// larger than any node writes.
func TestBusIgnoresHostileMessages(t *testing.T) {
	rds := redistest.Start(t)
	up := newUpstream(t, serial())
	g := startGateway(t, poolOn(rds.URL), productsSite, up.addr())
	g.get("/x")
	if !g.get("/x").isHit() {
		t.Fatal("/x not cached")
	}
	publish := func(prefixes int, tag string) {
		t.Helper()
		msg := `{"node":"other","id":"m","tags":["` + tag + `"],"prefixes":["/"` + strings.Repeat(`,"/"`, prefixes-1) + `]}`
		if n := rds.Do("PUBLISH", "caddy-gateway:cache:invalidate:0", msg); n != "1" {
			t.Fatalf("PUBLISH reached %s subscribers, want 1", n)
		}
	}
	publish(256, "t")
	publish(1, strings.Repeat("t", 9<<20))
	time.Sleep(200 * time.Millisecond)
	if !g.get("/x").isHit() {
		t.Error("a purge of 257 targets, or of 9 MiB, was applied")
	}
	publish(1, "t")
	if !eventually(func() bool { return !g.get("/x").isHit() }) {
		t.Error("a purge of one prefix was not applied")
	}
}

// TestBusReportsMissingAcknowledgements: a subscriber that never
// acknowledges is waited for 2s, and the answer says how many nodes did.
func TestBusReportsMissingAcknowledgements(t *testing.T) {
	rds := redistest.Start(t)
	g := startGateway(t, poolOn(rds.URL), productsSite, "127.0.0.1:1")
	listen(t, rds.Addr)
	out := g.adminJSON("DELETE", "/cache/products", "", 200)
	if msg, _ := out["bus_error"].(string); msg != "1 of 2 nodes acknowledged within 2s" || out["nodes"] != 1.0 {
		t.Errorf("flush with a mute subscriber: %v, want 1 node and bus_error \"1 of 2 nodes acknowledged within 2s\"", out)
	}
}

// TestValidateDialsNothing: caddy validate provisions the config, which
// must dial no Redis (a rate_limit's bus used to subscribe at once).
func TestValidateDialsNothing(t *testing.T) {
	var dials atomic.Int64
	addr := tcpServer(t, func(net.Conn) { dials.Add(1) })
	config := caddyfileIn(poolOn("redis://"+addr), fmt.Sprintf(`
	rate_limit {
		zone z {
			key static
			events 1
			window 1m
		}
		redis redis://%s
	}
`, addr))
	path := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	cli(t, "validate", "--config", path, "--adapter", "caddyfile").ok(t)
	time.Sleep(100 * time.Millisecond)
	if n := dials.Load(); n != 0 {
		t.Errorf("caddy validate dialed the Redis %d times", n)
	}
}

// TestFlushAllPublishesOnce: flushing every cache sends one message per
// bus, which each node applies to every cache on it, and waits once for
// the acknowledgements, not once per cache.
func TestFlushAllPublishesOnce(t *testing.T) {
	rds := redistest.Start(t)
	globals := fmt.Sprintf("\tcache_pool {\n\t\tredis %s\n\t\tcache a\n\t\tcache b\n\t\tcache c\n\t}\n", rds.URL)
	up := newUpstream(t, serial())
	nodes := cluster(t, 2, globals, `
	cache_read a
	cache_write a {
		ttl 60s
	}
	reverse_proxy {upstream}
`, up.addr())
	ps := listen(t, rds.Addr) // it never acknowledges
	nodes[1].get("/x")
	if !nodes[1].get("/x").isHit() {
		t.Fatal("/x not cached on node 1")
	}
	out := nodes[0].adminJSON("DELETE", "/cache/", "", 200)
	if flushed, _ := out["flushed"].([]any); len(flushed) != 3 || out["nodes"] != 2.0 {
		t.Errorf("flush of every cache: %v, want 3 caches on 2 nodes (and the listener, which never acknowledges)", out)
	}
	if nodes[1].get("/x").isHit() {
		t.Error("node 1 still serves /x after the flush of every cache")
	}
	var messages []string
	for {
		select {
		case m := <-ps.Channel():
			messages = append(messages, m.Payload)
			continue
		case <-time.After(300 * time.Millisecond):
		}
		break
	}
	if len(messages) != 1 || strings.Contains(messages[0], `"cache"`) || !strings.Contains(messages[0], `"flush":true`) {
		t.Errorf("published %q, want one flush of every cache", messages)
	}
}

// TestBusFollowsRotatedPassword: a reload with a new password gives the
// bus a client with it. The bus used to keep the first config's client, so
// once Redis dropped its connections it could not subscribe again.
func TestBusFollowsRotatedPassword(t *testing.T) {
	rds := redistest.Start(t)
	rds.Do("ACL", "SETUSER", "gw", "on", ">old", "~*", "&*", "+@all")
	up := newUpstream(t, serial())
	oldURL, newURL := "redis://gw:old@"+rds.Addr+"/0", "redis://gw:new@"+rds.Addr+"/0"
	nodes := cluster(t, 2, poolOn(oldURL), productsSite, up.addr())
	rds.Do("ACL", "SETUSER", "gw", ">new")
	for _, g := range nodes {
		g.reload(poolOn(newURL), productsSite, up.addr())
	}
	rds.Do("ACL", "SETUSER", "gw", "<old")
	rds.Do("CLIENT", "KILL", "USER", "gw") // as a restart or a failover would
	nodes[1].get("/x")
	if !nodes[1].get("/x").isHit() {
		t.Fatal("/x not cached on node 1")
	}
	if !eventually(func() bool {
		out := nodes[0].adminJSON("DELETE", "/cache/products", "", 200)
		return out["nodes"] == 2.0 && out["bus_error"] == nil
	}) {
		t.Fatal("a flush does not reach both nodes after the password changed")
	}
	if nodes[1].get("/x").isHit() {
		t.Error("node 1 still serves /x after the flush")
	}
}

// TestBusCarriesEveryAdminPurge: a purge the admin API takes reaches every
// node, though JSON writes each '&' of its tags as six bytes.
func TestBusCarriesEveryAdminPurge(t *testing.T) {
	rds := redistest.Start(t)
	up := newUpstream(t, serial())
	nodes := cluster(t, 2, poolOn(rds.URL), productsSite, up.addr())
	tags := make([]string, 200)
	for i := range tags {
		tags[i] = `"` + strings.Repeat("&", 4000) + `"`
	}
	out := nodes[0].adminJSON("POST", "/cache/products/purge", `{"tags":[`+strings.Join(tags, ",")+`]}`, 200)
	if out["nodes"] != 2.0 || out["bus_error"] != nil {
		t.Errorf("purge of 800 KB of tags: %v, want 2 nodes", out)
	}
}
