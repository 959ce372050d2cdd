package gateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/caddy-gateway/gateway/internal/redistest"
)

// cliResult is what a run of the caddy binary as a command printed, and its
// exit status.
type cliResult struct {
	args           []string
	stdout, stderr string
	code           int
}

// cli runs the Caddy binary with args, as an operator would.
func cli(t *testing.T, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	cmd := exec.CommandContext(ctx, caddyBin(t), args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := cliResult{args: args, stdout: stdout.String(), stderr: stderr.String()}
	if exit, ok := errors.AsType[*exec.ExitError](err); ok {
		r.code = exit.ExitCode()
	} else if err != nil {
		t.Fatalf("caddy %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// ok fails the test unless the command succeeded, and returns its output.
func (r cliResult) ok(t *testing.T) string {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("caddy %s: exit status %d\nstdout: %s\nstderr: %s", strings.Join(r.args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// failed fails the test unless the command failed with one line on stderr,
// and returns that line's message. Caddy logs a command's error as JSON
// when stderr is not a terminal.
func (r cliResult) failed(t *testing.T) string {
	t.Helper()
	if r.code == 0 {
		t.Fatalf("caddy %s: exit status 0, want a failure\nstdout: %s", strings.Join(r.args, " "), r.stdout)
	}
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	if len(lines) != 1 {
		t.Errorf("caddy %s: %d lines on stderr, want one:\n%s", strings.Join(r.args, " "), len(lines), r.stderr)
	}
	var entry struct {
		Level, Msg string
	}
	last := lines[len(lines)-1]
	if json.Unmarshal([]byte(last), &entry) != nil || entry.Level != "error" {
		return last
	}
	return entry.Msg
}

// column returns where a table's column starts in the line, or -1.
func column(line, value string) int { return strings.Index(line, value) }

// row finds the line of a table that matches pattern.
func row(t *testing.T, table, pattern string) string {
	t.Helper()
	re := regexp.MustCompile(pattern)
	for line := range strings.SplitSeq(table, "\n") {
		if re.MatchString(line) {
			return line
		}
	}
	t.Fatalf("no row matches %s in:\n%s", pattern, table)
	return ""
}

func TestCLICache(t *testing.T) {
	g, up := startTwoCaches(t)
	paths := []string{"/a", "/b/1", "/b/2", "/c"}
	for _, p := range paths {
		g.get(p)
		g.get(p)
	}
	caddy := func(args ...string) cliResult { return cli(t, append(args, "--address", g.admin)...) }
	// missedAgain checks that a request for path is not a hit and reaches
	// the upstream again.
	missedAgain := func(path string) {
		t.Helper()
		before := up.count(path)
		if r := g.get(path); r.isHit() || up.count(path) != before+1 {
			t.Errorf("%s: %q, upstream %d → %d; want a miss that reaches the upstream", path, r.cacheStatus(), before, up.count(path))
		}
	}
	entries := func(name string) float64 {
		t.Helper()
		return g.adminJSON("GET", "/cache/"+name, "", 200)["entries"].(float64)
	}

	t.Run("list", func(t *testing.T) {
		out := caddy("cache", "list").ok(t)
		header := row(t, out, `^NAME +ENTRIES +SIZE / BOUND +HIT RATIO +STORED +EVICTED$`)
		products := row(t, out, `^products +4 +[0-9.]+ (B|KiB) / 32 MiB +50\.0% +4 +0$`)
		users := row(t, out, `^users +0 +[0-9.]+ (B|KiB) / 2\.0 MiB +- +0 +0$`) // bookkeeping counts when empty
		if column(header, "HIT RATIO") != column(products, "50.0%") || column(header, "HIT RATIO") != column(users, "-") {
			t.Errorf("columns not aligned:\n%s", out)
		}
		if n := strings.Count(out, "\n"); n != 3 {
			t.Errorf("%d lines, want a header and two caches:\n%s", n, out)
		}
	})

	t.Run("list --json", func(t *testing.T) {
		out := caddy("cache", "list", "--json").ok(t)
		if want := g.adminDo("GET", "/cache/", "", "").body; out != want {
			t.Errorf("--json printed\n%q\nthe admin API answers\n%q", out, want)
		}
	})

	t.Run("show", func(t *testing.T) {
		out := caddy("cache", "show", "products").ok(t)
		for _, pattern := range []string{`^name: +products$`, `^entries: +4$`, `^size / bound: +[0-9.]+ (B|KiB) / 32 MiB$`,
			`^hits: +4$`, `^misses: +4$`, `^hit ratio: +50\.0%$`, `^stored: +4$`, `^evicted: +0$`, `^rejected: +0$`} {
			row(t, out, pattern)
		}
		if column(row(t, out, "^name:"), "products") != column(row(t, out, "^hit ratio:"), "50.0%") {
			t.Errorf("values not aligned:\n%s", out)
		}
		out = caddy("cache", "show", "products", "--json").ok(t)
		if want := g.adminDo("GET", "/cache/products", "", "").body; out != want {
			t.Errorf("--json printed\n%q\nthe admin API answers\n%q", out, want)
		}
	})

	t.Run("purge", func(t *testing.T) {
		if out := caddy("cache", "purge", "products", "--url", "/a").ok(t); out != "removed 1 response from products on 1 node\n" {
			t.Errorf("purge by URL printed %q", out)
		}
		missedAgain("/a")
		if out := caddy("cache", "purge", "products", "--prefix", "/b/").ok(t); out != "removed 2 responses from products on 1 node\n" {
			t.Errorf("purge by prefix printed %q", out)
		}
		missedAgain("/b/1")
		missedAgain("/b/2")
		if out := caddy("cache", "purge", "products", "--tag", "k-c").ok(t); out != "removed 1 response from products on 1 node\n" {
			t.Errorf("purge by tag printed %q", out)
		}
		missedAgain("/c")
		// Repeated flags and mixed kinds make one purge.
		out := caddy("cache", "purge", "products", "--url", "/a", "--url", "http://"+g.addr+"/b/1", "--tag", "k-c").ok(t)
		if out != "removed 3 responses from products on 1 node\n" {
			t.Errorf("mixed purge printed %q", out)
		}
		missedAgain("/a")
		missedAgain("/b/1")
		missedAgain("/c")
		if !g.get("/b/2").isHit() {
			t.Error("/b/2 was purged too")
		}
	})

	t.Run("purge errors", func(t *testing.T) {
		msg := caddy("cache", "purge", "products", "--prefix", "no-slash").failed(t)
		if !strings.Contains(msg, `prefix "no-slash" must start with /`) || strings.Contains(msg, `{"error"`) {
			t.Errorf("bad prefix: %q, want the admin API's message without its JSON", msg)
		}
		if msg := caddy("cache", "purge", "products").failed(t); !strings.Contains(msg, "--url") {
			t.Errorf("nothing to purge: %q", msg)
		}
	})

	t.Run("unknown cache", func(t *testing.T) {
		before := entries("products")
		for _, args := range [][]string{
			{"cache", "show", "nope"},
			{"cache", "show", "nope", "--json"},
			{"cache", "purge", "nope", "--url", "/a"},
			{"cache", "flush", "nope"},
			{"cache", "flush", "products", "nope"},
		} {
			msg := caddy(args...).failed(t)
			if !strings.Contains(msg, `unknown cache "nope"`) || !strings.Contains(msg, "products, users") {
				t.Errorf("%s: %q, want the unknown name and the existing ones", args, msg)
			}
		}
		if entries("products") != before {
			t.Error("a flush naming an unknown cache flushed products")
		}
	})

	t.Run("flush", func(t *testing.T) {
		before := entries("products")
		for _, args := range [][]string{{"cache", "flush"}, {"cache", "flush", "products", "--all"}} {
			r := caddy(args...)
			if msg := r.failed(t); !strings.Contains(msg, "--all") || !strings.Contains(msg, "name") {
				t.Errorf("%s: %q, want a refusal that names --all", args, msg)
			}
			if r.stdout != "" {
				t.Errorf("%s printed %q", args, r.stdout)
			}
		}
		if entries("products") != before || before == 0 {
			t.Fatalf("entries %v → %v: a refused flush flushed", before, entries("products"))
		}
		if !g.get("/b/2").isHit() {
			t.Error("miss after a refused flush")
		}

		if out := caddy("cache", "flush", "products").ok(t); out != "flushed products on 1 node\n" {
			t.Errorf("flush products printed %q", out)
		}
		missedAgain("/a")
		if out := caddy("cache", "flush", "--all").ok(t); out != "flushed products, users on 1 node\n" {
			t.Errorf("flush --all printed %q", out)
		}
		missedAgain("/a")
	})
}

func TestCLIRateLimit(t *testing.T) {
	g := startGateway(t, "", `
	rate_limit {
		zone z {
			key {http.request.header.X-Client}
			events 2
			window 1h
		}
		zone tb {
			match {
				path /tb/*
			}
			key {http.request.header.X-Client}
			events 10
			window 1m
			algorithm token_bucket
			burst 3
		}
	}
	respond ok
`, "")
	caddy := func(args ...string) cliResult { return cli(t, append(args, "--address", g.admin)...) }
	// limit uses up key a's allowance in zone z.
	limit := func() {
		t.Helper()
		for range 3 {
			g.get("/", "X-Client: a")
		}
	}
	limit()

	t.Run("list", func(t *testing.T) {
		out := caddy("rate-limit", "list").ok(t)
		header := row(t, out, `^ZONE +ALGORITHM +LIMIT +KEYS +ALLOWED +LIMITED$`)
		tb := row(t, out, `^tb +token_bucket +10 per 1m, burst 3 +0 +0 +0$`)
		z := row(t, out, `^z +sliding_window +2 per 1h +1 +2 +1$`)
		if column(header, "LIMIT ") != column(tb, "10 per") || column(header, "LIMIT ") != column(z, "2 per") ||
			column(header, "LIMITED") != strings.LastIndex(z, "1") {
			t.Errorf("columns not aligned:\n%s", out)
		}
		if strings.Index(out, "\ntb ") > strings.Index(out, "\nz ") {
			t.Errorf("zones out of the admin API's order:\n%s", out)
		}
		out = caddy("rate-limit", "list", "--json").ok(t)
		if want := g.adminDo("GET", "/rate_limit/", "", "").body; out != want {
			t.Errorf("--json printed\n%q\nthe admin API answers\n%q", out, want)
		}
	})

	t.Run("reset key", func(t *testing.T) {
		if g.get("/", "X-Client: a").status != 429 {
			t.Fatal("key a is not limited")
		}
		if out := caddy("rate-limit", "reset", "z", "--key", "a").ok(t); out != "reset key \"a\" of zone z on 1 node\n" {
			t.Errorf("reset printed %q", out)
		}
		if s := g.get("/", "X-Client: a").status; s != 200 {
			t.Errorf("key a after its reset: %d, want 200", s)
		}
		if out := caddy("rate-limit", "reset", "z", "--key", "nobody").ok(t); out != "key \"nobody\" of zone z held nothing; nothing to reset\n" {
			t.Errorf("reset of an empty key printed %q", out)
		}
	})

	t.Run("reset zone", func(t *testing.T) {
		limit()
		if out := caddy("rate-limit", "reset", "z").ok(t); out != "reset 1 key of zone z on 1 node\n" {
			t.Errorf("reset printed %q", out)
		}
		if s := g.get("/", "X-Client: a").status; s != 200 {
			t.Errorf("key a after the zone's reset: %d, want 200", s)
		}
	})

	t.Run("unknown zone", func(t *testing.T) {
		for _, args := range [][]string{{"rate-limit", "reset", "nope"}, {"rate-limit", "reset", "nope", "--key", "a"}} {
			msg := caddy(args...).failed(t)
			if !strings.Contains(msg, `unknown zone "nope"`) || !strings.Contains(msg, "tb, z") {
				t.Errorf("%s: %q, want the unknown name and the existing ones", args, msg)
			}
		}
		if msg := caddy("rate-limit", "reset").failed(t); !strings.Contains(msg, "<zone>") {
			t.Errorf("reset without a zone: %q", msg)
		}
	})
}

func TestCLINotRunning(t *testing.T) {
	addr := freePorts(t, 1)[0] // free a moment ago, and closed: nothing answers
	for _, args := range [][]string{
		{"cache", "list"},
		{"cache", "show", "products", "--json"},
		{"cache", "flush", "--all"},
		{"cache", "purge", "products", "--url", "/a"},
		{"rate-limit", "list"},
		{"rate-limit", "reset", "z", "--key", "a"},
	} {
		r := cli(t, append(args, "--address", addr)...)
		msg := r.failed(t)
		if !strings.Contains(msg, "cannot reach the admin endpoint at "+addr) || !strings.Contains(msg, "--address") {
			t.Errorf("%s: %q, want the address and a hint", args, msg)
		}
		if r.stdout != "" {
			t.Errorf("%s printed %q", args, r.stdout)
		}
	}
}

// An endpoint that accepts connections and never answers holds a command
// no longer than --timeout.
func TestCLITimeout(t *testing.T) {
	addr := tcpServer(t, func(c net.Conn) { io.Copy(io.Discard, c) }) // answer nothing
	msg := cli(t, "cache", "list", "--address", addr, "--timeout", "500ms").failed(t)
	if want := "the admin endpoint at " + addr + " did not answer GET /cache/ within 500ms"; !strings.Contains(msg, want) {
		t.Errorf("%q, want %q", msg, want)
	}
	if msg := cli(t, "cache", "list", "--address", addr, "--timeout", "0s").failed(t); !strings.Contains(msg, "--timeout must be a positive duration") {
		t.Errorf("--timeout 0s: %q", msg)
	}
}

// A flush of several caches whose bus fails flushes every one on the node
// reached, and says once that other nodes may not have been told.
func TestCLIFlushGoesOnAfterABusError(t *testing.T) {
	rds := redistest.Start(t)
	rds.Stop()
	up := newUpstream(t, serial())
	site := productsSite + "\tcache_write users {\n\t\tttl 60s\n\t}\n"
	g := startGateway(t, poolOn(rds.URL), site, up.addr())
	g.get("/x")
	for _, name := range []string{"products", "users"} {
		if n := g.adminJSON("GET", "/cache/"+name, "", 200)["entries"]; n != 1.0 {
			t.Fatalf("%s holds %v entries, want 1", name, n)
		}
	}
	r := cli(t, "cache", "flush", "products", "users", "--address", g.admin)
	msg := r.failed(t)
	if !strings.HasPrefix(msg, "flushed products, users on this node, but other nodes may not have been told: ") {
		t.Errorf("%q, want both caches named", msg)
	}
	for _, name := range []string{"products", "users"} {
		if n := g.adminJSON("GET", "/cache/"+name, "", 200)["entries"]; n != 0.0 {
			t.Errorf("%s holds %v entries after the flush", name, n)
		}
	}
}

// The admin address comes from the config's admin option, as for caddy stop.
func TestCLIAdminAddressFromConfig(t *testing.T) {
	g := startGateway(t, "\tcache_pool {\n\t\tcache from_config {\n\t\t\tmax_size 4MiB\n\t\t}\n\t}", "respond ok", "")
	caddyfile := filepath.Join(g.dir, "Caddyfile") // the one Caddy runs, with "admin <g.admin>"
	out := cli(t, "cache", "list", "--config", caddyfile, "--adapter", "caddyfile").ok(t)
	row(t, out, `^from_config +0 +[0-9.]+ (B|KiB) / 4\.0 MiB +- +0 +0$`)
	cli(t, "rate-limit", "list", "--config", caddyfile, "--adapter", "caddyfile").ok(t)

	// A config whose admin address nothing listens on: the error names it.
	dead := freePorts(t, 1)[0]
	other := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(other, []byte("{\n\tadmin "+dead+"\n}\n\nhttp://127.0.0.1:1 {\n\trespond ok\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := cli(t, "cache", "list", "--config", other, "--adapter", "caddyfile")
	if r.code == 0 || !strings.Contains(r.stderr, "cannot reach the admin endpoint at "+dead) {
		t.Errorf("exit status %d, stderr %q; want the config's admin address in the error", r.code, r.stderr)
	}
	// --address wins over the config, as for caddy stop.
	out = cli(t, "cache", "list", "--config", other, "--adapter", "caddyfile", "--address", g.admin).ok(t)
	row(t, out, `^from_config `)
}

func TestCLIHelp(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want []string
	}{
		{[]string{"help", "cache"}, []string{"list", "show", "flush", "purge", "--address", "--config", "--adapter", "--json", "$ caddy cache"}},
		{[]string{"help", "rate-limit"}, []string{"list", "reset", "--address", "--config", "--adapter", "$ caddy rate-limit"}},
		{[]string{"cache", "purge", "--help"}, []string{"--url", "--prefix", "--tag", "--address"}},
		{[]string{"cache", "flush", "--help"}, []string{"--all"}},
		{[]string{"rate-limit", "reset", "--help"}, []string{"--key"}},
	} {
		out := cli(t, tt.args...).ok(t)
		for _, w := range tt.want {
			if !strings.Contains(out, w) {
				t.Errorf("caddy %s does not mention %q:\n%s", strings.Join(tt.args, " "), w, out)
			}
		}
	}
}
