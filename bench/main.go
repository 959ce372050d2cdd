// Command bench measures the gateway against Caddy's own handlers on this
// machine: throughput and p99 latency with wrk, each comparison
// interleaved (A B A B …) in one run and summarized by the median of its
// rounds' ratios;
// resident memory per rate-limit key and of a flooded cache; and the time
// to first byte of a streamed response. It prints a Markdown table and
// writes an SVG chart. Run it through bench/run, which installs wrk.
package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddy-gateway/gateway/internal/redistest"
)

var (
	duration = flag.Duration("duration", 5*time.Second, "length of one wrk round")
	rounds   = flag.Int("rounds", 5, "rounds per comparison")
	conns    = flag.Int("connections", 64, "wrk connections")
	keys     = flag.Int("keys", 1_000_000, "distinct rate-limit keys for the memory figures")
	urls     = flag.Int("urls", 1_000_000, "unique URLs for the cache flood")
	out      = flag.String("out", "bench", "folder for results.md and chart.svg")
	only     = flag.String("only", "", "run only the throughput comparisons whose name holds this text, and no memory or streaming figure")
)

func main() {
	flag.Parse()
	log.SetFlags(0)
	dir, err := os.MkdirTemp("", "gateway-bench-")
	check(err)
	defer os.RemoveAll(dir)

	log.Printf("building cmd/caddy")
	caddyBin := filepath.Join(dir, "caddy-gateway")
	run("go", "build", "-o", caddyBin, "./cmd/caddy")

	up := startUpstream()
	defer up.Close()
	redisAddr, stopRedis := startRedis(dir)
	defer stopRedis()

	var rows []row
	ports := newPorts()
	body1k, body64k := jsonBody(1024), jsonBody(64<<10)

	// Throughput comparisons: one Caddy serves every site.
	sites := map[string]string{
		"respond1k":  respondSite(body1k),
		"hit1k":      cacheSite("hit1k", up.addr, "/1k"),
		"respond64k": respondSite(body64k),
		"hit64k":     cacheSite("hit64k", up.addr, "/64k"),
		"proxy":      fmt.Sprintf("reverse_proxy %s", up.addr),
		"miss":       cacheSite("miss", up.addr, ""),
		"revalidate": originSite("revalidate", up.addr),
		"cold":       originSite("cold", up.addr),
		"rl_memory":  rateSite("rl_memory", "{client_ip}", "events 1000000000", "", body1k),
		"rl_redis":   rateSite("rl_redis", "{client_ip}", "events 1000000000", "redis redis://"+redisAddr, body1k),
		"rl_refused": rateSite("rl_refused", "{client_ip}", "events 1", "", body1k),
		"rl_redis_refused": rateSite("rl_redis_refused", "{client_ip}", "events 1",
			"redis redis://"+redisAddr, body1k),
	}
	c := startCaddy(caddyBin, dir, "throughput", sites, ports)
	for _, p := range []string{"/", "/1k", "/64k"} {
		for _, s := range []string{"hit1k", "hit64k", "rl_refused", "rl_redis_refused"} {
			get(c.url(s, p)) // fill the caches; use up the refusing zone
		}
	}
	for i := range revalidatedPaths {
		get(c.url("revalidate", "/r/"+strconv.Itoa(i))) // stored, to be validated on every use
	}
	comparisons := []struct {
		name, base, subject, path string
		load                      load
		minRatio, maxP99          float64
	}{
		{"cache hit, 1 KiB vs respond", "respond1k", "hit1k", "/1k", sameURL, 0.90, 1.2},
		{"cache miss that stores vs reverse_proxy", "proxy", "miss", "/", uniqueURLs, 0.90, 0},
		{"revalidation answered 304 vs a proxied 304", "proxy", "revalidate", "/", revalidations, 0, 0},
		{"rate_limit in memory vs respond", "respond1k", "rl_memory", "/", sameURL, 0.95, 0},
		{"rate_limit in Redis vs respond", "respond1k", "rl_redis", "/", sameURL, 0.70, 0},
		{"rate_limit refusing (429) vs respond", "respond1k", "rl_refused", "/", sameURL, 1.0, 0},
		{"rate_limit in Redis refusing (429) vs respond", "respond1k", "rl_redis_refused", "/", sameURL, 1.0, 0},
		{"cache hit, 64 KiB vs respond", "respond64k", "hit64k", "/64k", sameURL, 0.90, 0},
	}
	for _, cm := range comparisons {
		if !strings.Contains(cm.name, *only) {
			continue
		}
		log.Printf("%s: %d interleaved rounds of %v", cm.name, *rounds, *duration)
		var base, subject []wrkResult
		calls := redisCalls(redisAddr)
		for range *rounds {
			base = append(base, wrk(c.url(cm.base, cm.path), cm.load))
			subject = append(subject, wrk(c.url(cm.subject, cm.path), cm.load))
		}
		r := compare(cm.name, base, subject, cm.minRatio, cm.maxP99)
		if cm.subject == "rl_redis_refused" {
			// Refusals Redis made once are repeated by the node itself.
			r.subject += fmt.Sprintf("; %d Redis calls in all rounds", redisCalls(redisAddr)-calls)
		}
		rows = append(rows, r)
	}
	if strings.Contains(coldName, *only) {
		rows = append(rows, coldKey(c, up))
	}
	c.stop()

	if *only == "" {
		rows = append(rows, rateLimitMemory(caddyBin, dir, ports, body1k)...)
		rows = append(rows, cacheFlood(caddyBin, dir, ports, up.addr)...)
		rows = append(rows, streaming(caddyBin, dir, ports, up.addr))
	}

	table := render(rows)
	fmt.Print(table)
	check(os.MkdirAll(*out, 0o755))
	check(os.WriteFile(filepath.Join(*out, "results.md"), []byte(table), 0o644))
	check(os.WriteFile(filepath.Join(*out, "chart.svg"), []byte(chart(rows)), 0o644))
	log.Printf("wrote %s and %s", filepath.Join(*out, "results.md"), filepath.Join(*out, "chart.svg"))
}

// row is one line of the results table.
type row struct {
	name, base, subject, ratio, target, p99 string
	value, goal                             float64 // for the chart: measured and target ratio
	met                                     bool
}

// compare summarizes interleaved rounds: round i of the subject ran right
// after round i of the baseline, under the same load from the rest of the
// machine, so each round gives a ratio and the median of those is the
// figure, shown with the smallest and largest.
func compare(name string, base, subject []wrkResult, minRatio, maxP99 float64) row {
	n := len(base)
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	ratioOf := func(i int) float64 { return subject[i].rps / base[i].rps }
	slices.SortFunc(order, func(i, j int) int { return cmp.Compare(ratioOf(i), ratioOf(j)) })
	mid := order[n/2]
	b, s := base[mid], subject[mid]
	ratio := ratioOf(mid)
	p99s := make([]float64, n)
	for i := range p99s {
		p99s[i] = subject[i].p99 / base[i].p99
	}
	slices.Sort(p99s)
	p99 := p99s[n/2]
	met := ratio >= minRatio && (maxP99 == 0 || p99 <= maxP99)
	target := "report"
	if minRatio > 0 {
		target = fmt.Sprintf("≥ %.2f", minRatio)
	}
	if maxP99 > 0 {
		target += fmt.Sprintf(", p99 ≤ %.1f×", maxP99)
	}
	return row{
		name:    name,
		base:    fmt.Sprintf("%.0f req/s, p99 %.2f ms", b.rps, b.p99),
		subject: fmt.Sprintf("%.0f req/s, p99 %.2f ms", s.rps, s.p99),
		ratio:   fmt.Sprintf("%.2f (%.2f–%.2f)", ratio, ratioOf(order[0]), ratioOf(order[n-1])),
		p99:     fmt.Sprintf("%.2f×", p99),
		target:  target,
		value:   ratio,
		goal:    minRatio,
		met:     met || minRatio == 0,
	}
}

type wrkResult struct{ rps, p99 float64 }

var (
	rpsLine = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	p99Line = regexp.MustCompile(`\s99%\s+([0-9.]+)(us|ms|s)`)
)

// load is what a wrk round sends.
type load int

const (
	sameURL       load = iota // one URL, again and again
	uniqueURLs                // a path of its own for every request
	revalidations             // revalidatedPaths paths in turn, each with If-None-Match
)

// revalidatedPaths is how many resources the revalidation row spreads its
// requests over, so that concurrent requests seldom share one.
const revalidatedPaths = 1000

// wrk drives one round of load.
func wrk(url string, l load) wrkResult {
	args := []string{"-t2", fmt.Sprintf("-c%d", *conns), "-d" + duration.String(), "--latency"}
	switch l {
	case sameURL:
		args = append(args, url)
	case uniqueURLs:
		// Each round's paths start with a number of its own, so no round
		// hits what an earlier one stored.
		args = append(args, "-s", luaScript("unique", uniqueScript), url, "--", strconv.FormatInt(time.Now().UnixNano(), 36))
	case revalidations:
		args = append(args, "-s", luaScript("revalidate", revalidateScript), url, "--", strconv.Itoa(revalidatedPaths))
	}
	outb, err := exec.Command("wrk", args...).CombinedOutput()
	check(err)
	o := string(outb)
	m, p := rpsLine.FindStringSubmatch(o), p99Line.FindStringSubmatch(o)
	if m == nil || p == nil {
		log.Fatalf("unreadable wrk output:\n%s", o)
	}
	rps, _ := strconv.ParseFloat(m[1], 64)
	lat, _ := strconv.ParseFloat(p[1], 64)
	switch p[2] {
	case "us":
		lat /= 1000
	case "s":
		lat *= 1000
	}
	return wrkResult{rps, lat}
}

// luaScript writes a wrk script to a file and returns its path.
func luaScript(name, text string) string {
	path := filepath.Join(os.TempDir(), "gateway-bench-"+name+".lua")
	check(os.WriteFile(path, []byte(text), 0o644))
	return path
}

// uniqueScript gives every request of every wrk thread a new path; the
// round's number comes as the script's argument.
const uniqueScript = `
local threads = 0
local counter = 0
local prefix = ""
function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end
function init(args)
  prefix = "/u/" .. args[1] .. "/" .. id .. "/"
end
function request()
  counter = counter + 1
  return wrk.format("GET", prefix .. counter)
end
`

// revalidateScript asks for /r/0 to /r/(n-1) in turn, where n is the
// script's argument, each with the validator the origin gives them.
const revalidateScript = `
local counter = 0
local n = 1
function init(args)
  n = tonumber(args[1])
  counter = math.random(n)
end
function request()
  counter = counter + 1
  return wrk.format("GET", "/r/" .. (counter % n), {["If-None-Match"] = '"v1"'})
end
`

// coldName names the row of coldKey.
const coldName = "64 concurrent misses of one cold key"

// coldKey sends 64 requests at once for a key the cache has never seen,
// several times, and counts the requests that reach the origin, which
// takes coldDelay to answer: collapsing sends one.
func coldKey(c *caddy, up *upstream) row {
	const clients = 64
	log.Printf("%s: %d rounds", coldName, *rounds)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	worst := 0
	var p99s []time.Duration
	for round := range *rounds {
		path := fmt.Sprintf("/cold/%d-%d", time.Now().UnixNano(), round)
		latencies := make([]time.Duration, clients)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range clients {
			wg.Go(func() {
				<-start
				t := time.Now()
				resp, err := client.Get(c.url("cold", path))
				check(err)
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				latencies[i] = time.Since(t)
			})
		}
		close(start)
		wg.Wait()
		slices.Sort(latencies)
		p99s = append(p99s, latencies[(clients*99+99)/100-1])
		worst = max(worst, up.requests(path))
	}
	slices.Sort(p99s)
	p99 := p99s[len(p99s)/2]
	return row{
		name:    coldName,
		base:    fmt.Sprintf("the origin answers in %.0f ms", ms(coldDelay)),
		subject: fmt.Sprintf("at most %d upstream request(s) in %d rounds; p99 %.1f ms", worst, *rounds, ms(p99)),
		ratio:   fmt.Sprintf("%d upstream", worst),
		p99:     fmt.Sprintf("%.2f×", float64(p99)/float64(coldDelay)),
		target:  "1 upstream request",
		met:     worst == 1,
	}
}

// rateLimitMemory measures the resident bytes per key of each algorithm:
// a fresh Caddy per algorithm, its RSS before and after a flood of
// distinct keys.
func rateLimitMemory(caddyBin, dir string, ports *portSet, body string) []row {
	var rows []row
	for _, algo := range []string{"fixed_window", "sliding_window", "token_bucket", "leaky_bucket"} {
		log.Printf("rate-limit memory, %s: %d keys", algo, *keys)
		extra := "events 100\n\t\t\talgorithm " + algo
		if algo == "leaky_bucket" {
			extra += "\n\t\t\tburst 100"
		}
		site := rateSite("mem", "{http.request.header.X-Key}", extra, "max_keys 2000000", "ok")
		c := startCaddy(caddyBin, dir, "mem-"+algo, map[string]string{"mem": site}, ports)
		flood(c.url("mem", "/"), *keys, func(i int) (string, string) { return "/", "X-Key: k" + strconv.Itoa(i) })
		settle()
		before := c.baseline
		after := rss(c.pid())
		c.stop()
		perKey := float64(after-before) / float64(*keys)
		rows = append(rows, row{
			name:    "rate-limit memory, " + algo,
			base:    fmt.Sprintf("RSS %s at start", mib(before)),
			subject: fmt.Sprintf("RSS %s with %d keys", mib(after), *keys),
			ratio:   fmt.Sprintf("%.0f B/key", perKey),
			target:  "report (mholt/caddy-ratelimit: ~7 KB/key)",
			met:     true,
		})
	}
	return rows
}

// cacheFlood fills a 64 MiB cache with unique URLs and compares the
// process's resident memory with its bound.
func cacheFlood(caddyBin, dir string, ports *portSet, upstream string) []row {
	log.Printf("cache flood: %d unique URLs into max_size 64MiB", *urls)
	site := map[string]string{"flood": cacheSite("flood", upstream, "")}
	c := startCaddy(caddyBin, dir, "flood", site, ports)
	rate := timedFlood(c)
	after, live := rss(c.pid()), c.liveHeap()
	c.stop()
	limit := int64(float64(c.baseline+64<<20) * 1.15)
	rows := []row{{
		name:    "cache of max_size 64MiB after the flood",
		base:    fmt.Sprintf("Caddy's baseline RSS %s", mib(c.baseline)),
		subject: fmt.Sprintf("RSS %s after %d URLs at %.0f req/s; live heap %s", mib(after), *urls, rate, mib(live)),
		ratio:   fmt.Sprintf("%s over baseline", mib(after-c.baseline)),
		target:  fmt.Sprintf("RSS ≤ %s (64 MiB + baseline, +15%%)", mib(limit)),
		met:     after <= limit,
	}}

	// Go's collector lets the heap grow to twice what is live before it
	// collects; a memory limit holds it nearer the cache's bound instead.
	memLimit := fmt.Sprintf("GOMEMLIMIT=%dMiB", 64+32)
	log.Printf("cache flood again, with %s", memLimit)
	c = startCaddy(caddyBin, dir, "flood-limited", site, ports, memLimit)
	limitedRate := timedFlood(c)
	after = rss(c.pid())
	c.stop()
	limit = int64(float64(c.baseline+64<<20) * 1.15)
	return append(rows, row{
		name:    "the same flood with " + memLimit,
		base:    fmt.Sprintf("Caddy's baseline RSS %s", mib(c.baseline)),
		subject: fmt.Sprintf("RSS %s after %d URLs at %.0f req/s", mib(after), *urls, limitedRate),
		ratio:   fmt.Sprintf("%s over baseline; flood rate %.2f× the default's", mib(after-c.baseline), limitedRate/rate),
		target:  fmt.Sprintf("RSS ≤ %s (64 MiB + baseline, +15%%)", mib(limit)),
		met:     after <= limit,
	})
}

// timedFlood floods c's flood site with unique URLs, lets it settle, and
// returns the requests per second the flood ran at.
func timedFlood(c *caddy) float64 {
	start := time.Now()
	flood(c.url("flood", "/"), *urls, func(i int) (string, string) { return "/f/" + strconv.Itoa(i), "" })
	rate := float64(*urls) / time.Since(start).Seconds()
	settle()
	return rate
}

// streaming times the first byte of a 10 MiB response trickled over two
// seconds, through cache_write and without it.
func streaming(caddyBin, dir string, ports *portSet, upstream string) row {
	log.Printf("streaming: time to first byte of a trickled 10 MiB response")
	sites := map[string]string{
		"plain":   fmt.Sprintf("reverse_proxy %s {\n\t\tflush_interval -1\n\t}", upstream),
		"through": "cache_write trickle {\n\t\tttl 1m\n\t\tmax_entry_size 16MiB\n\t}\n\t" + fmt.Sprintf("reverse_proxy %s {\n\t\tflush_interval -1\n\t}", upstream),
	}
	c := startCaddy(caddyBin, dir, "stream", sites, ports)
	defer c.stop()
	var plain, through []time.Duration
	for i := range *rounds {
		plain = append(plain, ttfb(c.url("plain", "/trickle?"+strconv.Itoa(i))))
		through = append(through, ttfb(c.url("through", "/trickle?"+strconv.Itoa(i))))
	}
	slices.Sort(plain)
	slices.Sort(through)
	p, t := plain[len(plain)/2], through[len(through)/2]
	diff := t - p
	return row{
		name:    "time to first byte, 10 MiB over 2 s",
		base:    fmt.Sprintf("reverse_proxy %.1f ms", ms(p)),
		subject: fmt.Sprintf("cache_write %.1f ms", ms(t)),
		ratio:   fmt.Sprintf("%+.1f ms", ms(diff)),
		target:  "within 10 ms",
		met:     diff < 10*time.Millisecond,
	}
}

func ttfb(url string) time.Duration {
	start := time.Now()
	resp, err := http.Get(url)
	check(err)
	defer resp.Body.Close()
	buf := make([]byte, 1)
	_, err = io.ReadFull(resp.Body, buf)
	check(err)
	first := time.Since(start)
	io.Copy(io.Discard, resp.Body)
	return first
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// flood sends n requests as fast as loopback allows: pipelined GETs on
// a few connections, request i built by req.
func flood(base string, n int, req func(i int) (path, header string)) {
	host := strings.TrimPrefix(base, "http://")
	host = host[:strings.Index(host, "/")]
	const streams, batch = 8, 256
	var next atomic.Int64
	var wg sync.WaitGroup
	for range streams {
		wg.Go(func() {
			conn, err := net.Dial("tcp", host)
			check(err)
			defer conn.Close()
			br := bufio.NewReaderSize(conn, 64<<10)
			bw := bufio.NewWriterSize(conn, 64<<10)
			for {
				start := int(next.Add(batch)) - batch
				if start >= n {
					return
				}
				end := min(start+batch, n)
				for i := start; i < end; i++ {
					path, header := req(i)
					fmt.Fprintf(bw, "GET %s HTTP/1.1\r\nHost: %s\r\n", path, host)
					if header != "" {
						fmt.Fprintf(bw, "%s\r\n", header)
					}
					bw.WriteString("\r\n")
				}
				check(bw.Flush())
				for i := start; i < end; i++ {
					readResponse(br)
				}
			}
		})
	}
	wg.Wait()
}

// readResponse reads one response of known length and discards it.
func readResponse(br *bufio.Reader) {
	length := 0
	for {
		line, err := br.ReadString('\n')
		check(err)
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			break
		}
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, "Content-Length") {
			length, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	_, err := io.CopyN(io.Discard, br, int64(length))
	check(err)
}

// settle lets the process return what it freed before RSS is read.
func settle() { time.Sleep(3 * time.Second) }

func rss(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	check(err)
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	log.Fatalf("no VmRSS for %d", pid)
	return 0
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// upstream is the origin the proxied sites talk to.
type upstream struct {
	*http.Server
	addr string

	mu   sync.Mutex
	seen map[string]int // requests by path, under /cold/
}

// requests returns how many requests for path reached the upstream.
func (u *upstream) requests(path string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.seen[path]
}

// coldDelay is how long the upstream takes to answer under /cold/.
const coldDelay = 100 * time.Millisecond

func startUpstream() *upstream {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	b1, b64 := jsonBody(1024), jsonBody(64<<10)
	chunk := strings.Repeat("x", 64<<10)
	u := &upstream{addr: l.Addr().String(), seen: make(map[string]int)}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		body := b1
		switch {
		case strings.HasPrefix(r.URL.Path, "/r/"):
			// Stored, and validated before every use.
			w.Header().Set("Cache-Control", "no-cache")
			w.Header().Set("ETag", `"v1"`)
			if r.Header.Get("If-None-Match") == `"v1"` {
				w.WriteHeader(http.StatusNotModified)
				return
			}
		case strings.HasPrefix(r.URL.Path, "/cold/"):
			u.mu.Lock()
			u.seen[r.URL.Path]++
			u.mu.Unlock()
			time.Sleep(coldDelay)
			w.Header().Set("Cache-Control", "max-age=60")
		case r.URL.Path == "/64k":
			body = b64
		case r.URL.Path == "/trickle":
			// 10 MiB in 160 chunks over two seconds.
			w.Header().Set("Content-Length", strconv.Itoa(160*len(chunk)))
			for range 160 {
				io.WriteString(w, chunk)
				w.(http.Flusher).Flush()
				time.Sleep(2 * time.Second / 160)
			}
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		io.WriteString(w, body)
	})
	u.Server = &http.Server{Handler: mux}
	go u.Serve(l)
	return u
}

func jsonBody(size int) string {
	const wrap = `{"data":""}`
	return `{"data":"` + strings.Repeat("x", size-len(wrap)) + `"}`
}

func startRedis(dir string) (addr string, stop func()) {
	port := newPorts().take()
	cmd := exec.Command("redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir)
	check(cmd.Start())
	addr = "127.0.0.1:" + port
	waitListening(addr)
	return addr, func() { cmd.Process.Kill(); cmd.Wait() }
}

// redisCalls counts the script calls Redis ran.
func redisCalls(addr string) int {
	n, err := redistest.CommandCalls(addr, "evalsha", "eval")
	check(err)
	return n
}

// Sites.

func respondSite(body string) string {
	return fmt.Sprintf("header Content-Type application/json\n\trespond `%s` 200", body)
}

func cacheSite(name, upstream, path string) string {
	rewrite := ""
	if path != "" {
		rewrite = "rewrite * " + path + "\n\t"
	}
	return fmt.Sprintf("%scache_read %s\n\tcache_write %s {\n\t\tttl 1h\n\t}\n\treverse_proxy %s", rewrite, name, name, upstream)
}

// originSite caches what the origin allows, for as long as it says.
func originSite(name, upstream string) string {
	return fmt.Sprintf("cache_read %s\n\tcache_write %s\n\treverse_proxy %s", name, name, upstream)
}

func rateSite(zone, key, limit, options, body string) string {
	return fmt.Sprintf(`rate_limit {
		zone %s {
			key %s
			%s
			window 1h
		}
		%s
	}
	%s`, zone, key, limit, options, respondSite(body))
}

// caddy is a running Caddy with named sites on their own ports.
type caddy struct {
	cmd      *exec.Cmd
	ports    map[string]string
	admin    string
	baseline int64
}

// startCaddy runs Caddy with the sites, its admin endpoint on a port of its
// own, and env added to the environment.
func startCaddy(bin, dir, name string, sites map[string]string, ports *portSet, env ...string) *caddy {
	c := &caddy{ports: map[string]string{}, admin: ports.take()}
	var b strings.Builder
	fmt.Fprintf(&b, "{\n\tadmin 127.0.0.1:%s\n\tauto_https off", c.admin)
	b.WriteString("\n\tpersist_config off\n\tlog {\n\t\tlevel ERROR\n\t}\n")
	b.WriteString("\tcache_pool {\n\t\tmax_size 64MiB\n\t\tcache trickle {\n\t\t\tmax_size 64MiB\n\t\t\tmax_entry_size 16MiB\n\t\t}\n\t}\n}\n")
	for _, s := range slices.Sorted(mapKeys(sites)) {
		c.ports[s] = ports.take()
		fmt.Fprintf(&b, "\nhttp://127.0.0.1:%s {\n\t%s\n}\n", c.ports[s], sites[s])
	}
	path := filepath.Join(dir, name+".Caddyfile")
	check(os.WriteFile(path, []byte(b.String()), 0o644))
	c.cmd = exec.Command(bin, "run", "--config", path, "--adapter", "caddyfile")
	c.cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	c.cmd.Env = append(c.cmd.Env, env...)
	c.cmd.Stderr = os.Stderr
	check(c.cmd.Start())
	for _, p := range c.ports {
		waitListening("127.0.0.1:" + p)
	}
	settle()
	c.baseline = rss(c.pid())
	return c
}

func (c *caddy) pid() int { return c.cmd.Process.Pid }

// liveHeap collects garbage in Caddy, through its pprof endpoint, and
// returns the bytes still allocated on its heap.
func (c *caddy) liveHeap() int64 {
	base := "http://127.0.0.1:" + c.admin
	resp, err := http.Get(base + "/debug/pprof/heap?gc=1")
	check(err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	resp, err = http.Get(base + "/debug/vars")
	check(err)
	defer resp.Body.Close()
	var vars struct{ Memstats struct{ HeapAlloc int64 } }
	check(json.NewDecoder(resp.Body).Decode(&vars))
	return vars.Memstats.HeapAlloc
}

func (c *caddy) url(site, path string) string {
	return "http://127.0.0.1:" + c.ports[site] + path
}

func (c *caddy) stop() {
	c.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		c.cmd.Process.Kill()
		<-done
	}
}

func get(url string) {
	resp, err := http.Get(url)
	check(err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

func waitListening(addr string) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	log.Fatalf("nothing listens on %s", addr)
}

// portSet hands out free loopback ports, never one twice: a port closed
// after the kernel chose it may be chosen again at once.
type portSet struct{ given map[string]bool }

func newPorts() *portSet { return &portSet{given: map[string]bool{}} }

func (p *portSet) take() string {
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		check(err)
		_, port, _ := net.SplitHostPort(l.Addr().String())
		l.Close()
		if !p.given[port] {
			p.given[port] = true
			return port
		}
	}
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func run(name string, args ...string) {
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	check(cmd.Run())
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}

// render prints the results as a Markdown table.
func render(rows []row) string {
	var b strings.Builder
	host, _ := os.Hostname()
	fmt.Fprintf(&b, "Measured %s on %s (%d-core), wrk -t2 -c%d, %d interleaved rounds of %v; ratio: the median of the rounds' ratios (smallest–largest).\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), host, numCPU(), *conns, *rounds, *duration)
	b.WriteString("| comparison | baseline | ours | ratio | p99 ratio | target | met |\n|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		met := "yes"
		if !r.met {
			met = "**no**"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", r.name, r.base, r.subject, r.ratio, r.p99, r.target, met)
	}
	return b.String()
}

func numCPU() int {
	data, _ := os.ReadFile("/proc/cpuinfo")
	return max(strings.Count(string(data), "processor\t:"), 1)
}

// chart draws the throughput ratios against their targets as bars.
func chart(rows []row) string {
	var bars []row
	for _, r := range rows {
		if r.value > 0 {
			bars = append(bars, r)
		}
	}
	const width, barH, gap, left = 760, 26, 12, 330
	height := 40 + len(bars)*(barH+gap) + 30
	scale := func(v float64) float64 { return float64(width-left-40) * v / 1.2 }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="13">`+"\n", width, height)
	fmt.Fprintf(&b, `<text x="10" y="22" font-size="15" font-weight="bold">Throughput relative to the Caddy baseline (1.0 = as fast)</text>`+"\n")
	for i, r := range bars {
		y := 40 + i*(barH+gap)
		color := "#3a7d44"
		if !r.met {
			color = "#b23a48"
		}
		w := scale(min(r.value, 1.2))
		fmt.Fprintf(&b, `<text x="10" y="%d">%s</text>`+"\n", y+18, xmlEscape(r.name))
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.0f" height="%d" fill="%s"/>`+"\n", left, y, w, barH, color)
		fmt.Fprintf(&b, `<text x="%.0f" y="%d">%.2f</text>`+"\n", float64(left)+w+6, y+18, r.value)
		if r.goal > 0 {
			x := float64(left) + scale(r.goal)
			fmt.Fprintf(&b, `<line x1="%.0f" y1="%d" x2="%.0f" y2="%d" stroke="black" stroke-dasharray="3,2"/>`+"\n", x, y-3, x, y+barH+3)
		}
	}
	x1 := float64(left) + scale(1)
	fmt.Fprintf(&b, `<line x1="%.0f" y1="34" x2="%.0f" y2="%d" stroke="#888"/>`+"\n", x1, x1, height-30)
	fmt.Fprintf(&b, `<text x="%.0f" y="%d" fill="#555">1.0</text>`+"\n", x1-8, height-12)
	fmt.Fprintf(&b, `<text x="%d" y="%d" fill="#555">dashed: target</text>`+"\n", left+10, height-12)
	b.WriteString("</svg>\n")
	return b.String()
}

func xmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}
