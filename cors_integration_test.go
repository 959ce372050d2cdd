package gateway_test

import (
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// corsFields are the response fields of the CORS protocol, with Vary.
var corsFields = []string{
	"Access-Control-Allow-Origin", "Access-Control-Allow-Credentials", "Access-Control-Allow-Methods",
	"Access-Control-Allow-Headers", "Access-Control-Max-Age", "Access-Control-Allow-Private-Network",
	"Access-Control-Expose-Headers", "Vary",
}

// corsOf keeps the CORS fields of a response header, and Vary.
func corsOf(h http.Header) http.Header {
	out := http.Header{}
	for _, name := range corsFields {
		if v := h.Values(name); len(v) > 0 {
			out[name] = v
		}
	}
	return out
}

func wantCORS(t *testing.T, what string, r response, want http.Header) {
	t.Helper()
	if got := corsOf(r.header); !reflect.DeepEqual(got, want) {
		t.Errorf("%s: CORS fields\n got %v\nwant %v", what, got, want)
	}
}

const corsSite = `
	cors {
		allow_origins https://app.example.com https://*.example.org
		allow_methods GET POST PUT DELETE
		allow_headers Authorization X-Request-Id
		expose_headers X-Request-Id
		allow_credentials
		allow_private_network
		max_age 10m
	}
	reverse_proxy {upstream}
`

const preflightVary = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers, Access-Control-Request-Private-Network"

func TestCORSPreflight(t *testing.T) {
	up := newUpstream(t, serial())
	g := startGateway(t, "debug", corsSite, up.addr())

	allowed := g.request("OPTIONS", "/items",
		"Origin: https://app.example.com",
		"Access-Control-Request-Method: PUT",
		"Access-Control-Request-Headers: authorization,x-request-id",
		"Access-Control-Request-Private-Network: true")
	if allowed.status != http.StatusNoContent {
		t.Fatalf("allowed preflight: status %d", allowed.status)
	}
	wantCORS(t, "allowed preflight", allowed, http.Header{
		"Access-Control-Allow-Origin":          {"https://app.example.com"},
		"Access-Control-Allow-Credentials":     {"true"},
		"Access-Control-Allow-Methods":         {"GET, POST, PUT, DELETE"},
		"Access-Control-Allow-Headers":         {"authorization,x-request-id"},
		"Access-Control-Max-Age":               {"600"},
		"Access-Control-Allow-Private-Network": {"true"},
		"Vary":                                 {preflightVary},
	})

	wildcard := g.request("OPTIONS", "/items", "Origin: https://a.b.example.org", "Access-Control-Request-Method: DELETE")
	if got := wildcard.header.Get("Access-Control-Allow-Origin"); wildcard.status != 204 || got != "https://a.b.example.org" {
		t.Errorf("pattern origin: %d, Access-Control-Allow-Origin %q", wildcard.status, got)
	}

	for _, row := range []struct {
		what    string
		headers []string
		reason  string
	}{
		{"disallowed origin", []string{"Origin: https://evil.io", "Access-Control-Request-Method: PUT"}, "origin not allowed"},
		{"disallowed method", []string{"Origin: https://app.example.com", "Access-Control-Request-Method: PATCH"}, "method not allowed"},
		{"disallowed header", []string{"Origin: https://app.example.com", "Access-Control-Request-Method: PUT", "Access-Control-Request-Headers: x-secret"}, "request headers not allowed"},
	} {
		r := g.request("OPTIONS", "/items", row.headers...)
		if r.status != http.StatusNoContent {
			t.Errorf("%s: status %d, want 204 without CORS fields", row.what, r.status)
		}
		wantCORS(t, row.what, r, http.Header{"Vary": {preflightVary}})
		if !g.logged(`"reason":"` + row.reason + `"`) {
			t.Errorf("%s: no debug line with reason %q", row.what, row.reason)
		}
	}
	if n := up.total.Load(); n != 0 {
		t.Errorf("the upstream saw %d preflights", n)
	}

	// OPTIONS without Access-Control-Request-Method is an actual request.
	if r := g.request("OPTIONS", "/items", "Origin: https://app.example.com"); up.count("/items") != 1 || r.header.Get("Access-Control-Allow-Origin") != "https://app.example.com" {
		t.Errorf("a plain OPTIONS was not passed on as an actual request: %d %v", r.status, r.header)
	}
}

func TestCORSPreflightStar(t *testing.T) {
	up := newUpstream(t, serial())
	g := startGateway(t, "", `
	cors {
		allow_origins *
		allow_methods *
		allow_headers *
	}
	reverse_proxy {upstream}
`, up.addr())
	r := g.request("OPTIONS", "/", "Origin: https://any.io", "Access-Control-Request-Method: PATCH", "Access-Control-Request-Headers: x-anything")
	wantCORS(t, "preflight", r, http.Header{
		"Access-Control-Allow-Origin":  {"*"},
		"Access-Control-Allow-Methods": {"PATCH"},
		"Access-Control-Allow-Headers": {"x-anything"},
		"Vary":                         {"Access-Control-Request-Method, Access-Control-Request-Headers"},
	})
	// '*' without credentials does not depend on the origin: no Vary.
	wantCORS(t, "actual", g.get("/", "Origin: https://any.io"), http.Header{"Access-Control-Allow-Origin": {"*"}})
	// Nor does it when the request has no Origin: the field goes out all
	// the same, for the caches that keep the response.
	wantCORS(t, "no Origin", g.get("/"), http.Header{"Access-Control-Allow-Origin": {"*"}})
	// A private network preflight is refused while the option is off.
	pna := g.request("OPTIONS", "/", "Origin: https://any.io", "Access-Control-Request-Method: GET", "Access-Control-Request-Private-Network: true")
	if pna.header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("private network preflight allowed: %v", pna.header)
	}
}

func TestCORSActual(t *testing.T) {
	up := newUpstream(t, serial("Vary", "Accept-Encoding", "X-Request-Id", "r1"))
	g := startGateway(t, "", corsSite, up.addr())

	allowed := g.get("/items", "Origin: https://app.example.com")
	if allowed.status != 200 {
		t.Fatalf("status %d", allowed.status)
	}
	wantCORS(t, "allowed origin", allowed, http.Header{
		"Access-Control-Allow-Origin":      {"https://app.example.com"},
		"Access-Control-Allow-Credentials": {"true"},
		"Access-Control-Expose-Headers":    {"X-Request-Id"},
		"Vary":                             {"Accept-Encoding", "Origin"},
	})
	wantCORS(t, "disallowed origin", g.get("/items", "Origin: https://evil.io"), http.Header{"Vary": {"Accept-Encoding", "Origin"}})
	wantCORS(t, "no Origin", g.get("/items"), http.Header{"Vary": {"Accept-Encoding", "Origin"}})
	if n := up.count("/items"); n != 3 {
		t.Errorf("the upstream saw %d actual requests, want 3", n)
	}
}

// TestCORSUpstreamFields checks that an upstream that does CORS itself
// does not make a field appear twice: the handler's win.
func TestCORSUpstreamFields(t *testing.T) {
	up := newUpstream(t, serial(
		"Access-Control-Allow-Origin", "*",
		"Access-Control-Allow-Credentials", "true",
		"Access-Control-Expose-Headers", "X-Upstream",
		"Vary", "Origin",
	))
	g := startGateway(t, "", `
	cors {
		allow_origins https://app.example.com
	}
	reverse_proxy {upstream}
`, up.addr())
	wantCORS(t, "allowed origin", g.get("/", "Origin: https://app.example.com"), http.Header{
		"Access-Control-Allow-Origin": {"https://app.example.com"},
		"Vary":                        {"Origin"},
	})
	wantCORS(t, "disallowed origin", g.get("/", "Origin: https://evil.io"), http.Header{"Vary": {"Origin"}})
}

// TestCORSVaryThroughCache checks that a cached answer serves every
// origin with its own fields: the cache stores the upstream's response,
// and cors, before it, adds the fields of each request.
func TestCORSVaryThroughCache(t *testing.T) {
	up := newUpstream(t, serial("Cache-Control", "max-age=60"))
	g := startGateway(t, "", `
	cors {
		allow_origins https://a.example.com https://b.example.com
	}
	cache_read products
	cache_write products {
		ttl 1m
	}
	reverse_proxy {upstream}
`, up.addr())
	a := g.get("/products", "Origin: https://a.example.com")
	if a.isHit() {
		t.Fatalf("first request: a hit: %q", a.cacheStatus())
	}
	for _, row := range []struct{ origin, want string }{
		{"https://b.example.com", "https://b.example.com"},
		{"https://evil.io", ""},
		{"https://a.example.com", "https://a.example.com"},
	} {
		r := g.get("/products", "Origin: "+row.origin)
		if !r.isHit() || r.body != a.body {
			t.Fatalf("%s: not a hit of the first answer: %q %q", row.origin, r.cacheStatus(), r.body)
		}
		if got := r.header.Values("Access-Control-Allow-Origin"); strings.Join(got, "|") != row.want {
			t.Errorf("%s: Access-Control-Allow-Origin %q, want %q", row.origin, got, row.want)
		}
		if got := r.header.Values("Vary"); !reflect.DeepEqual(got, []string{"Origin"}) {
			t.Errorf("%s: Vary %q, want Origin once", row.origin, got)
		}
	}
	if n := up.count("/products"); n != 1 {
		t.Errorf("the upstream saw %d requests, want 1", n)
	}
}

// TestCORSPreflightBeforeLimitsAndAuth checks that the directive order
// puts cors before rate_limit and basic_auth: a preflight is answered
// even when the zone would refuse the request and without credentials.
func TestCORSPreflightBeforeLimitsAndAuth(t *testing.T) {
	up := newUpstream(t, serial())
	// The password is "secret".
	g := startGateway(t, "", `
	basic_auth {
		alice $2a$04$lLF/k5rrSXJP8xd6T44ciu96R/DhNOpzU2O6fOcPC6CfCgikTex5e
	}
	rate_limit {
		zone z {
			key {client_ip}
			events 1
			window 1h
		}
	}
	cors {
		allow_origins https://app.example.com
		allow_headers Authorization
	}
	reverse_proxy {upstream}
`, up.addr())
	preflight := []string{"Origin: https://app.example.com", "Access-Control-Request-Method: GET", "Access-Control-Request-Headers: authorization"}
	if r := g.request("OPTIONS", "/", preflight...); r.status != 204 || r.header.Get("Access-Control-Allow-Origin") == "" {
		t.Fatalf("preflight without credentials: %d %v", r.status, r.header)
	}
	// The refusals carry the CORS fields, so that scripts can read them.
	if r := g.get("/", "Origin: https://app.example.com"); r.status != 401 || r.header.Get("Access-Control-Allow-Origin") != "https://app.example.com" {
		t.Fatalf("actual request without credentials: %d %v, want 401 from basic_auth, readable", r.status, r.header)
	}
	if r := g.get("/", "Origin: https://app.example.com"); r.status != 429 || r.header.Get("Access-Control-Allow-Origin") != "https://app.example.com" {
		t.Fatalf("second actual request: %d %v, want 429 from the zone, readable", r.status, r.header)
	}
	for range 3 {
		if r := g.request("OPTIONS", "/", preflight...); r.status != 204 || r.header.Get("Access-Control-Allow-Origin") == "" {
			t.Fatalf("preflight past the limit: %d %v", r.status, r.header)
		}
	}
	if n := up.total.Load(); n != 0 {
		t.Errorf("the upstream saw %d requests", n)
	}
}

func TestCORSOriginPlaceholder(t *testing.T) {
	t.Setenv("CORS_TEST_ORIGIN", "https://tenant.example.com")
	up := newUpstream(t, serial())
	g := startGateway(t, "", `
	cors {
		allow_origins {env.CORS_TEST_ORIGIN} https://static.example.com
	}
	reverse_proxy {upstream}
`, up.addr())
	for origin, want := range map[string]string{
		"https://tenant.example.com": "https://tenant.example.com",
		"https://static.example.com": "https://static.example.com",
		"https://evil.io":            "",
	} {
		if got := g.get("/", "Origin: "+origin).header.Get("Access-Control-Allow-Origin"); got != want {
			t.Errorf("%s: Access-Control-Allow-Origin %q, want %q", origin, got, want)
		}
	}
}

// TestCORSValidationRules: JSON, through `caddy validate`, and a
// Caddyfile refuse the same bad values with the same message; the
// Caddyfile's names its line.
func TestCORSValidationRules(t *testing.T) {
	for _, tt := range []struct {
		name, handler, site, want string
		line                      int
	}{
		{"star with credentials", `{"handler": "cors", "allow_origins": ["*"], "allow_credentials": true}`,
			"\tcors {\n\t\tallow_origins *\n\t\tallow_credentials\n\t}\n", "cors: allow_origins '*' cannot go with allow_credentials", 7},
		{"bad regex", `{"handler": "cors", "allow_origin_regex": "(a"}`,
			"\tcors {\n\t\tallow_origin_regex (a\n\t}\n", "cors: allow_origin_regex: error parsing regexp", 6},
		{"negative max_age", `{"handler": "cors", "allow_origins": ["https://a.com"], "max_age": -1000000000}`,
			"\tcors {\n\t\tallow_origins https://a.com\n\t\tmax_age -1s\n\t}\n", "cors: max_age must not be negative, not -1s", 7},
		{"bad origin", `{"handler": "cors", "allow_origins": ["https://a.com/app"]}`,
			"\tcors {\n\t\tallow_origins https://a.com/app\n\t}\n", "cors: allow_origins: 'https://a.com/app' is not an origin", 6},
		{"no origin", `{"handler": "cors", "allow_methods": ["GET"]}`,
			"\tcors {\n\t\tallow_methods GET\n\t}\n", "cors: allow_origins or allow_origin_regex is required", 7},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, ok := validateJSON(t, jsonConfig("", tt.handler))
			if ok || !strings.Contains(out, tt.want) {
				t.Errorf("JSON: validate passed=%v, want a failure saying %q:\n%s", ok, tt.want, tail(out, 3))
			}
			_, err := adapt(caddyfileIn("", tt.site), "Caddyfile")
			where := fmt.Sprintf("Caddyfile:%d", tt.line)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), where) {
				t.Errorf("Caddyfile: got %v, want %q at %s", err, tt.want, where)
			}
		})
	}
}
