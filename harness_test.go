package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The Caddy binary with our modules is built on first use, once per test
// run, so unit tests that start no Caddy do not wait for it.
var (
	caddyOnce  sync.Once
	caddyPath  string
	caddyErr   error
	caddyBuild string // the build's temporary directory, removed by TestMain
)

func TestMain(m *testing.M) {
	code := m.Run()
	if caddyBuild != "" {
		os.RemoveAll(caddyBuild)
	}
	os.Exit(code)
}

// caddyBin returns the path of the Caddy binary: the one that
// GATEWAY_TEST_CADDY names (test.sh builds it beforehand, so the build is a
// stage of its own), or one it builds the first time it is called. A
// failed build fails every test that needs it.
func caddyBin(t testing.TB) string {
	t.Helper()
	caddyOnce.Do(func() {
		if path := os.Getenv("GATEWAY_TEST_CADDY"); path != "" {
			caddyPath = path
			return
		}
		dir, err := os.MkdirTemp("", "gateway-test-")
		if err != nil {
			caddyErr = err
			return
		}
		caddyBuild = dir
		caddyPath = filepath.Join(dir, "caddy")
		out, err := exec.Command("go", "build", "-o", caddyPath, "./cmd/caddy").CombinedOutput()
		if err != nil {
			caddyErr = fmt.Errorf("building caddy: %v\n%s", err, out)
		}
	})
	if caddyErr != nil {
		t.Fatal(caddyErr)
	}
	return caddyPath
}

// freePorts returns n distinct loopback addresses that were free a moment
// ago. The listeners stay open until all are chosen: closed one by one, the
// kernel could hand the same port out twice.
func freePorts(t testing.TB, n int) []string {
	t.Helper()
	addrs := make([]string, n)
	for i := range addrs {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		addrs[i] = l.Addr().String()
	}
	return addrs
}

// gateway is a Caddy process started from a Caddyfile.
type gateway struct {
	t     testing.TB
	admin string // host:port of the admin endpoint
	addr  string // host:port of the site
	dir   string
	cmd   *exec.Cmd
	logs  *lockedBuffer // Caddy's output, written while tests read it
}

// startGateway runs Caddy with the global options block globals (without
// braces) and one site whose body is site. In both, {upstream} stands for
// the upstream's address.
func startGateway(t testing.TB, globals, site, upstream string) *gateway {
	t.Helper()
	ports := freePorts(t, 2)
	g := &gateway{t: t, admin: ports[0], addr: ports[1], dir: t.TempDir(), logs: new(lockedBuffer)}
	g.start(g.writeCaddyfile(globals, site, upstream))
	return g
}

// portOf returns the port of a host:port address.
func portOf(addr string) string { return addr[strings.LastIndexByte(addr, ':')+1:] }

// startEdited runs Caddy from the Caddyfile at path, each edit's first
// text, which must be there, replaced by its second: an example with its
// ports moved to free ones.
func (g *gateway) startEdited(path string, edits ...[2]string) {
	g.t.Helper()
	text, err := os.ReadFile(path)
	if err != nil {
		g.t.Fatal(err)
	}
	caddyfile := string(text)
	for _, e := range edits {
		if !strings.Contains(caddyfile, e[0]) {
			g.t.Fatalf("%s no longer holds %q", path, e[0])
		}
		caddyfile = strings.ReplaceAll(caddyfile, e[0], e[1])
	}
	edited := filepath.Join(g.dir, "Caddyfile")
	if err := os.WriteFile(edited, []byte(caddyfile), 0o600); err != nil {
		g.t.Fatal(err)
	}
	g.start(edited)
}

// start runs Caddy from the Caddyfile at path and waits until the site
// at g.addr accepts connections.
func (g *gateway) start(path string) {
	t := g.t
	t.Helper()
	g.cmd = exec.Command(caddyBin(t), "run", "--config", path, "--adapter", "caddyfile")
	g.cmd.Env = append(os.Environ(), "HOME="+g.dir, "XDG_DATA_HOME="+g.dir, "XDG_CONFIG_HOME="+g.dir)
	g.cmd.Stdout, g.cmd.Stderr = g.logs, g.logs
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { g.cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		g.cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			g.cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("caddy output (tail):\n%s", tail(g.logs.String(), 30))
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-done:
			t.Fatalf("caddy exited: %s", g.logs.String())
		default:
		}
		// A dial, not a request: a request would reach the handlers.
		if conn, err := net.Dial("tcp", g.addr); err == nil {
			conn.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("caddy did not start: %s", g.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (g *gateway) caddyfile(globals, site, upstream string) string {
	r := strings.NewReplacer("{upstream}", upstream)
	return fmt.Sprintf("{\n\tadmin %s\n\tpersist_config off\n\tauto_https off\n%s\n}\n\nhttp://%s {\n%s\n}\n",
		g.admin, r.Replace(globals), g.addr, r.Replace(site))
}

func (g *gateway) writeCaddyfile(globals, site, upstream string) string {
	path := filepath.Join(g.dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(g.caddyfile(globals, site, upstream)), 0o600); err != nil {
		g.t.Fatal(err)
	}
	return path
}

// reload loads a new Caddyfile through the admin endpoint.
func (g *gateway) reload(globals, site, upstream string) {
	g.t.Helper()
	resp := g.adminDo("POST", "/load", "text/caddyfile", g.caddyfile(globals, site, upstream))
	if resp.status != http.StatusOK {
		g.t.Fatalf("reload: %d %s", resp.status, resp.body)
	}
	// The old servers stop after /load answers, closing their connections,
	// and one accepted just then is reset: let them finish, then dial the
	// new ones.
	time.Sleep(100 * time.Millisecond)
	client.CloseIdleConnections()
}

// loadFails loads a Caddyfile that must fail through the admin endpoint.
// A load that fails may have replaced the admin server all the same,
// closing its connections: none is reused across it.
func (g *gateway) loadFails(caddyfile string) {
	g.t.Helper()
	client.CloseIdleConnections()
	resp := g.adminDo("POST", "/load", "text/caddyfile", caddyfile)
	client.CloseIdleConnections()
	if resp.status == http.StatusOK {
		g.t.Fatalf("the config loaded: %s", caddyfile)
	}
}

// adaptedJSON returns a Caddyfile as the admin endpoint adapts it to
// JSON.
func (g *gateway) adaptedJSON(caddyfile string) map[string]any {
	g.t.Helper()
	resp := g.adminDo("POST", "/adapt", "text/caddyfile", caddyfile)
	var out struct {
		Result map[string]any `json:"result"`
	}
	if err := json.Unmarshal([]byte(resp.body), &out); err != nil || resp.status != http.StatusOK || out.Result == nil {
		g.t.Fatalf("adapting: %d %s", resp.status, resp.body)
	}
	return out.Result
}

// response is a finished exchange.
type response struct {
	status int
	header http.Header
	body   string
}

var client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}

func do(t testing.TB, method, url string, header http.Header, body string) response {
	t.Helper()
	resp, err := send(method, url, header, body)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// waitFor polls cond every 5 ms, and fails the test when it does not hold
// within 10 s; what names what is awaited.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waited 10 s for %s", what)
		}
	}
}

// tcpServer accepts connections on a loopback port until the test ends,
// hands each to handle on a goroutine of its own and closes it when handle
// returns, and returns the address: an upstream or an endpoint that
// misbehaves below HTTP.
func tcpServer(t testing.TB, handle func(net.Conn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return l.Addr().String()
}

// send is do for goroutines other than the test's, which must not call
// t.Fatal.
func send(method, url string, header http.Header, body string) (response, error) {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return response{}, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, err
	}
	return response{resp.StatusCode, resp.Header, string(b)}, nil
}

// get requests path from the site; header lines are "Name: value".
func (g *gateway) get(path string, headers ...string) response {
	g.t.Helper()
	return g.request("GET", path, headers...)
}

func (g *gateway) request(method, path string, headers ...string) response {
	g.t.Helper()
	return do(g.t, method, "http://"+g.addr+path, headerOf(headers), "")
}

// headerOf parses header lines, "Name: value".
func headerOf(lines []string) http.Header {
	h := http.Header{}
	for _, line := range lines {
		name, value, _ := strings.Cut(line, ":")
		h.Add(name, strings.TrimSpace(value))
	}
	return h
}

func (g *gateway) adminDo(method, path, contentType, body string) response {
	g.t.Helper()
	h := http.Header{}
	if contentType != "" {
		h.Set("Content-Type", contentType)
	}
	return do(g.t, method, "http://"+g.admin+path, h, body)
}

// adminJSON calls the admin endpoint and decodes its JSON answer.
func (g *gateway) adminJSON(method, path, body string, wantStatus int) map[string]any {
	g.t.Helper()
	resp := g.adminDo(method, path, "application/json", body)
	if resp.status != wantStatus {
		g.t.Fatalf("%s %s: status %d, want %d: %s", method, path, resp.status, wantStatus, resp.body)
	}
	var out map[string]any
	if err := json.Unmarshal([]byte(resp.body), &out); err != nil {
		g.t.Fatalf("%s %s: answer is not JSON: %q", method, path, resp.body)
	}
	return out
}

// upstream is an origin on loopback that counts the requests it gets,
// by path, and answers through a replaceable handler.
type upstream struct {
	*httptest.Server
	mu      sync.Mutex
	counts  map[string]int
	total   atomic.Int64
	handler atomic.Pointer[http.HandlerFunc]
}

func newUpstream(t testing.TB, h http.HandlerFunc) *upstream {
	u := &upstream{counts: map[string]int{}}
	u.handler.Store(&h)
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.counts[r.URL.Path]++
		u.mu.Unlock()
		u.total.Add(1)
		(*u.handler.Load())(w, r)
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) addr() string { return strings.TrimPrefix(u.URL, "http://") }

func (u *upstream) count(path string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.counts[path]
}

// serial answers with a body that names the request's path and a number
// that grows with each upstream request, so a hit repeats an old number.
func serial(headers ...string) http.HandlerFunc {
	var n atomic.Int64
	return func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i+1 < len(headers); i += 2 {
			w.Header().Add(headers[i], headers[i+1])
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"path":%q,"query":%q,"n":%d}`, r.URL.Path, r.URL.RawQuery, n.Add(1))
	}
}

// cacheStatus returns the Cache-Status field of a response.
func (r response) cacheStatus() string { return strings.Join(r.header.Values("Cache-Status"), ", ") }

func (r response) isHit() bool { return strings.Contains(r.cacheStatus(), "; hit") }

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}

func regexpMust(pattern string) *regexp.Regexp { return regexp.MustCompile(pattern) }

// statusWithin requests path and returns the status, or 0 when no answer
// came within the timeout (a request waiting for its leaky-bucket slot).
func (g *gateway) statusWithin(timeout time.Duration, path string, headers ...string) int {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+g.addr+path, nil)
	if err != nil {
		g.t.Fatal(err)
	}
	for _, line := range headers {
		name, value, _ := strings.Cut(line, ":")
		req.Header.Add(name, strings.TrimSpace(value))
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// lockedBuffer is a buffer that a process writes while a test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// logged waits a moment for Caddy's output, copied from its pipe, to
// hold s.
func (g *gateway) logged(s string) bool {
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(g.logs.String(), s) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}
