package gateway_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// validate runs `caddy validate` on a Caddyfile and returns its output and
// whether it passed. Validation provisions every module.
func validate(t *testing.T, caddyfile string) (string, bool) {
	t.Helper()
	return validateFile(t, "Caddyfile", caddyfile, "--adapter", "caddyfile")
}

// validateFile writes a config to a file of that name and runs `caddy
// validate` on it with the extra arguments. Caddy logs the error as JSON:
// the quotes in the output are unescaped.
func validateFile(t *testing.T, name, config string, args ...string) (string, bool) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(caddyBin(t), append([]string{"validate", "--config", path}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	out, err := cmd.CombinedOutput()
	return strings.ReplaceAll(string(out), `\"`, `"`), err == nil
}

func TestProvisionErrors(t *testing.T) {
	tests := []struct {
		name, caddyfile, want string
	}{
		{"a zone given two limits", `
{
	admin off
}
:0 {
	route /a {
		rate_limit {
			zone shared {
				key static
				events 5
				window 1m
			}
		}
	}
	route /b {
		rate_limit {
			zone shared {
				key static
				events 6
				window 1m
			}
		}
	}
	respond ok
}`, "defines the zone with other settings"},
		{"a cache below 1MiB", `
{
	admin off
	cache_pool {
		max_size 512KiB
	}
}
:0 {
	cache_read products
	respond ok
}`, "below the minimum of 1MiB"},
		{"an entry larger than half the cache", `
{
	admin off
	cache_pool {
		cache products {
			max_size 2MiB
			max_entry_size 1500KiB
		}
	}
}
:0 {
	cache_read products
	respond ok
}`, "exceeds half of max_size"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, ok := validate(t, tt.caddyfile)
			if ok || !strings.Contains(out, tt.want) {
				t.Errorf("validate passed=%v, want a failure saying %q:\n%s", ok, tt.want, tail(out, 5))
			}
		})
	}
	// The same zone with the same settings in two handlers is one zone.
	if out, ok := validate(t, `
{
	admin off
}
:0 {
	route /a {
		rate_limit {
			zone shared {
				key static
				events 5
				window 1m
			}
		}
	}
	route /b {
		rate_limit {
			zone shared {
				key static
				events 5
				window 1m
			}
		}
	}
	respond ok
}`); !ok {
		t.Errorf("two handlers sharing a zone failed validation:\n%s", tail(out, 5))
	}
}

func TestRateLimitOptions(t *testing.T) {
	g := startGateway(t, "\tlog {\n\t\tlevel DEBUG\n\t}", `
	route /cost {
		rate_limit {
			zone costly {
				key static
				events 10
				window 1h
				cost {http.request.header.X-Cost}
			}
			headers off
		}
		respond ok
	}
	route /net {
		rate_limit {
			zone per_net {
				key {http.request.header.X-Ip}
				events 1
				window 1h
			}
			ipv4_prefix 16
			headers legacy
			log_key
		}
		respond ok
	}
	route /quiet {
		rate_limit {
			zone quiet {
				key {http.request.header.X-Ip}
				events 1
				window 1h
			}
			disable_metrics
		}
		respond ok
	}
	route /sweep {
		rate_limit {
			zone short {
				key {http.request.header.X-Ip}
				events 1
				window 100ms
			}
			sweep_interval 100ms
		}
		respond ok
	}
`, "")

	// cost from a placeholder: 4 + 4 fit in 10, 4 more do not, 2 do.
	for i, want := range []int{200, 200, 429, 200} {
		cost := "4"
		if i == 3 {
			cost = "2"
		}
		r := g.get("/cost", "X-Cost: "+cost)
		if r.status != want {
			t.Errorf("cost request %d: %d, want %d", i+1, r.status, want)
		}
		if r.header.Get("RateLimit") != "" || r.header.Get("X-RateLimit-Limit") != "" {
			t.Errorf("headers off sent rate-limit headers: %v", r.header)
		}
	}

	// ipv4_prefix given to the handler reaches its zone; legacy headers alone.
	r := g.get("/net", "X-Ip: 10.20.1.1")
	if r.status != 200 || r.header.Get("X-RateLimit-Limit") != "1" || r.header.Get("RateLimit") != "" {
		t.Errorf("first in 10.20/16: %d %v", r.status, r.header)
	}
	if g.get("/net", "X-Ip: 10.20.99.7").status != 429 {
		t.Error("another address of the same /16 was admitted")
	}
	if g.get("/net", "X-Ip: 10.21.0.1").status != 200 {
		t.Error("another /16 was refused")
	}
	// log_key logs the key itself (here the network) with the refusal.
	if !g.logged(`"key":"10.20.0.0/16"`) {
		t.Error("log_key did not log the refused key")
	}

	// disable_metrics: decisions happen, but are not counted.
	g.get("/quiet", "X-Ip: a")
	if g.get("/quiet", "X-Ip: a").status != 429 {
		t.Error("the quiet zone does not limit")
	}
	if z := g.adminJSON("GET", "/rate_limit/quiet", "", 200); z["allowed"] != 0.0 || z["limited"] != 0.0 {
		t.Errorf("disable_metrics still counted: %v", z)
	}

	// sweep_interval: idle keys are dropped once back at rest.
	for i := range 5 {
		g.get("/sweep", fmt.Sprintf("X-Ip: %d", i))
	}
	deadline := time.Now().Add(5 * time.Second)
	for g.adminJSON("GET", "/rate_limit/short", "", 200)["keys"] != 0.0 {
		if time.Now().After(deadline) {
			t.Fatal("the sweeper left keys at rest in the zone")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestLogsShowHashedKeysByDefault(t *testing.T) {
	g := startGateway(t, "\tlog {\n\t\tlevel DEBUG\n\t}", `
	rate_limit {
		zone z {
			key {http.request.header.X-Ip}
			events 1
			window 1h
		}
	}
	respond ok
`, "")
	g.get("/", "X-Ip: secret-client")
	if g.get("/", "X-Ip: secret-client").status != 429 {
		t.Fatal("not limited")
	}
	if !g.logged("rate limit exceeded") {
		t.Fatal("the refusal was not logged at debug")
	}
	if strings.Contains(g.logs.String(), "secret-client") {
		t.Error("a raw key reached the logs without log_key")
	}
}

func TestKeyPlaceholdersAndTagsFrom(t *testing.T) {
	up := newUpstream(t, serial("X-Tags", "catalog shelf-"+"1"))
	g := startGateway(t, "", `
	@write method POST
	cache_invalidate @write products {
		tags shelf-1
	}
	cache_read products
	cache_write products {
		ttl 1h
		key_placeholders {http.request.header.X-Tenant}
		tags_from X-Tags
	}
	reverse_proxy {upstream}
`, up.addr())
	a := g.get("/p", "X-Tenant: a")
	if b := g.get("/p", "X-Tenant: b"); b.isHit() || b.body == a.body {
		t.Errorf("tenant b was served tenant a's entry")
	}
	if r := g.get("/p", "X-Tenant: a"); !r.isHit() || r.body != a.body {
		t.Errorf("tenant a missed its own entry: %q", r.cacheStatus())
	}
	g.request("POST", "/anything")
	if g.get("/p", "X-Tenant: a").isHit() {
		t.Error("invalidating the tag from X-Tags left the entry")
	}
}
