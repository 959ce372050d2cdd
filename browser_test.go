package gateway_test

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// chromium returns the path of a headless-capable Chromium. Without one the
// test is skipped, except under CI=true, where that is a failure: test.sh
// installs it.
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("Chromium is needed for the browser test; ./test.sh installs it (apt-get install chromium)")
	}
	t.Skip("Chromium is needed for the browser test (apt-get install chromium)")
	return ""
}

// startProduction runs Caddy from examples/production.Caddyfile, as the
// README does, with only its ports changed. It returns the gateway and
// the app's port.
func startProduction(t *testing.T) (*gateway, string) {
	ports := freePorts(t, 4)
	g := &gateway{t: t, admin: ports[0], addr: ports[1], dir: t.TempDir(), logs: new(lockedBuffer)}
	app, up := portOf(ports[2]), portOf(ports[3])
	g.startEdited("examples/production.Caddyfile",
		[2]string{"admin localhost:2019", "admin localhost:" + portOf(g.admin)},
		[2]string{"http://:8080 {", "http://:" + portOf(g.addr) + " {"},
		[2]string{"http://:3000 {", "http://:" + app + " {"},
		[2]string{"allow_origins http://localhost:3000", "allow_origins http://localhost:" + app},
		[2]string{"http://:9090 {", "http://:" + up + " {"},
		[2]string{"reverse_proxy 127.0.0.1:9090", "reverse_proxy 127.0.0.1:" + up},
	)
	return g, app
}

// browse loads url in headless Chromium, lets its scripts run, and returns
// the page's text once they are done.
func browse(t *testing.T, chrome, url string) string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, chrome,
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--no-first-run", "--user-data-dir="+t.TempDir(),
		// Virtual time runs until the page is idle, its fetches included,
		// within this budget; then the DOM is printed.
		"--virtual-time-budget=15000", "--dump-dom", url)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium %s: %v\n%s", url, err, out)
	}
	return string(out)
}

// TestBrowserCallsTheGatewayAcrossOrigins: a page on the app's origin
// calls the gateway on another origin with its cookies and a custom
// header, so the browser sends a preflight, and reads a field the gateway
// exposes; the same page on an origin the gateway does not allow is
// refused by the browser. The outcome is read from the page.
func TestBrowserCallsTheGatewayAcrossOrigins(t *testing.T) {
	chrome := chromium(t)
	g, app := startProduction(t)
	api := "http://localhost:" + portOf(g.addr)

	allowed := browse(t, chrome, "http://localhost:"+app+"/?api="+api)
	if !regexp.MustCompile(`allowed: status 200, X-Request-Id [0-9a-f-]{36}, body \{"path":"/products/1"`).MatchString(allowed) {
		t.Errorf("from the allowed origin, the page shows:\n%s", allowed)
	}
	if !strings.Contains(g.logs.String(), `"method":"OPTIONS"`) {
		t.Error("the browser sent no preflight (the access log holds no OPTIONS)")
	}

	// 127.0.0.1 is another origin than localhost, though the same server.
	refused := browse(t, chrome, "http://127.0.0.1:"+app+"/?api="+api)
	if !strings.Contains(refused, "refused by the browser: TypeError") {
		t.Errorf("from an origin the gateway does not allow, the page shows:\n%s", refused)
	}
}
