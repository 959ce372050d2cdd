package cors

import (
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
)

func mustCompile(t testing.TB, c Config) *Policy {
	t.Helper()
	p, err := Compile(c)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCompileErrors(t *testing.T) {
	for _, row := range []struct {
		name string
		c    Config
		want string // in the error
	}{
		{"no origin", Config{}, "allow_origins or allow_origin_regex is required"},
		{"star with credentials", Config{AllowOrigins: []string{"*"}, AllowCredentials: true}, "allow_origins '*' cannot go with allow_credentials"},
		{"star with others", Config{AllowOrigins: []string{"*", "https://a.com"}}, "must stand alone"},
		{"star with regex", Config{AllowOrigins: []string{"*"}, AllowOriginRegex: "x"}, "must stand alone"},
		{"bad regex", Config{AllowOriginRegex: "https://(a"}, "allow_origin_regex: error parsing regexp"},
		{"negative max_age", Config{AllowOrigins: []string{"https://a.com"}, MaxAge: -time.Second}, "max_age must not be negative"},
		{"path", Config{AllowOrigins: []string{"https://a.com/"}}, "no path"},
		{"no scheme", Config{AllowOrigins: []string{"a.com"}}, "is not an origin"},
		{"bad port", Config{AllowOrigins: []string{"https://a.com:99999"}}, "port"},
		{"empty port", Config{AllowOrigins: []string{"https://a.com:"}}, "empty port"},
		{"empty host", Config{AllowOrigins: []string{"https://"}}, "host"},
		{"non-ASCII host", Config{AllowOrigins: []string{"https://bücher.de"}}, "punycode"},
		{"two wildcards", Config{AllowOrigins: []string{"https://*.*.example.com"}}, "more than one wildcard"},
		{"wildcard and port", Config{AllowOrigins: []string{"https://*.example.com:*"}}, "more than one wildcard"},
		{"wildcard mid-host", Config{AllowOrigins: []string{"https://app.*.com"}}, "wildcard stands only for subdomains"},
		{"wildcard in label", Config{AllowOrigins: []string{"https://app*.example.com"}}, "wildcard stands only for subdomains"},
		{"null", Config{AllowOrigins: []string{"null"}}, "'null' origin"},
		{"bad method", Config{AllowOrigins: []string{"https://a.com"}, AllowMethods: []string{"GE T"}}, "allow_methods: 'GE T'"},
		{"bad header", Config{AllowOrigins: []string{"https://a.com"}, AllowHeaders: []string{"X:Y"}}, "allow_headers: 'X:Y'"},
		{"expose star with credentials", Config{AllowOrigins: []string{"https://a.com"}, ExposeHeaders: []string{"*"}, AllowCredentials: true}, "expose_headers '*' cannot go with allow_credentials"},
	} {
		t.Run(row.name, func(t *testing.T) {
			_, err := Compile(row.c)
			if err == nil || !strings.Contains(err.Error(), row.want) {
				t.Fatalf("error %v, want one with %q", err, row.want)
			}
		})
	}
}

func TestAllowsOrigin(t *testing.T) {
	p := mustCompile(t, Config{
		AllowOrigins:     []string{"https://App.Example.com", "https://*.example.org", "http://localhost:*", "https://b.com:443", "http://[::1]:8080"},
		AllowOriginRegex: `https://[a-z]+\.example\.net`,
	})
	for origin, want := range map[string]bool{
		"https://app.example.com":         true,
		"https://app.example.com:443":     false, // browsers never send a default port
		"http://app.example.com":          false,
		"https://app.example.com.evil.io": false,
		"https://evil.io":                 false,
		"https://x.example.org":           true,
		"https://a.b.example.org":         true,
		"https://example.org":             false,
		"https://.example.org":            false,
		"https://.a.example.org":          false,
		"https://a..example.org":          false,
		"https://evil.io/.example.org":    false,
		"https://evil.io?.example.org":    false,
		"https://evilexample.org":         false,
		"http://localhost:3000":           true,
		"http://localhost":                false,
		"http://localhost:":               false,
		"http://localhost:03000":          false,
		"http://localhost:123456":         false,
		"http://localhost:65535":          true,
		"http://localhost:65536":          false, // no port; a browser never sends it
		"http://localhost:99999":          false,
		"http://localhost:30x0":           false,
		"https://b.com":                   true,
		"http://[::1]:8080":               true,
		"https://api.example.net":         true,
		"https://api.example.net.evil.io": false, // the regex matches whole
		"xhttps://api.example.net":        false,
		"https://API.example.net":         false,
		"":                                false,
		"null":                            false,
	} {
		if got := p.AllowsOrigin(origin); got != want {
			t.Errorf("AllowsOrigin(%q) = %v, want %v", origin, got, want)
		}
	}
	if !mustCompile(t, Config{AllowOrigins: []string{"*"}}).AllowsOrigin("https://anything.io") {
		t.Error("'*' does not allow every origin")
	}
}

// TestAllowOriginRegexStaysAnchored checks that no allow_origin_regex
// matches less than a whole origin: one that closes the group it is
// wrapped in is refused, and flags set inside it stay inside it.
func TestAllowOriginRegexStaysAnchored(t *testing.T) {
	const unbalanced = `https://app\.example\.com)|(x`
	_, err := Compile(Config{AllowOriginRegex: unbalanced, AllowCredentials: true})
	if err == nil {
		t.Fatalf("%s compiled", unbalanced)
	}
	if !strings.Contains(err.Error(), "`"+unbalanced+"`") || strings.Contains(err.Error(), "^(?:") {
		t.Fatalf("error %q, want one that quotes the regex as given", err)
	}

	// A \Q left open would swallow the closing of the group.
	_, err = Compile(Config{AllowOriginRegex: `\Qhttps://a.com`})
	if err == nil || !strings.Contains(err.Error(), `'\Qhttps://a.com'`) || !strings.Contains(err.Error(), `\E`) {
		t.Fatalf("error %v, want one that quotes the regex and asks for \\E", err)
	}

	// Each allows https://a.com and would allow the others too, were it
	// not matched whole.
	for _, re := range []string{
		`https://a\.com`,
		`(?m)https://a\.com`,
		`(?m)^https://a\.com$`,
		`https://a\.com(?m:$)`,
		`(?s)https://a\.com.??`,
		`(?U)https://a\.com(\.evil)?`,
		`https://a\.com|`,
		`|https://a\.com`,
		`\Qhttps://a.com\E`,
	} {
		p := mustCompile(t, Config{AllowOriginRegex: re})
		if !p.AllowsOrigin("https://a.com") {
			t.Errorf("%s: https://a.com refused", re)
		}
		for _, origin := range []string{"https://a.com.evil.io", "https://a.com\nhttps://evil.io", "https://evil.io\nhttps://a.com", "https://evil.io"} {
			if p.AllowsOrigin(origin) {
				t.Errorf("%s: %q allowed", re, origin)
			}
		}
	}
}

// TestPatternDefaultPort checks that a subdomain pattern with its scheme's
// default port matches the origins browsers send, which leave that port
// out, and that other ports still count.
func TestPatternDefaultPort(t *testing.T) {
	p := mustCompile(t, Config{AllowOrigins: []string{
		"https://*.example.com:443", "http://*.example.com:80", "https://*.example.org:8443", "http://localhost:*",
	}})
	for origin, want := range map[string]bool{
		"https://app.example.com":      true,
		"https://app.example.com:443":  false, // browsers never send a default port
		"http://app.example.com":       true,
		"http://app.example.com:80":    false,
		"https://app.example.com:80":   false,
		"http://app.example.com:443":   false,
		"https://app.example.org:8443": true,
		"https://app.example.org":      false,
		"http://localhost:80":          true,
		"http://localhost:443":         true,
		"http://localhost:3000":        true,
		"http://localhost":             false,
	} {
		if got := p.AllowsOrigin(origin); got != want {
			t.Errorf("AllowsOrigin(%q) = %v, want %v", origin, got, want)
		}
	}
}

func TestTemplates(t *testing.T) {
	p := mustCompile(t, Config{AllowOrigins: []string{"{env.APP_ORIGIN}", "https://a.com"}})
	if got := p.Templates(); !reflect.DeepEqual(got, []string{"{env.APP_ORIGIN}"}) {
		t.Fatalf("templates %q", got)
	}
	if p.AllowsOrigin("{env.APP_ORIGIN}") {
		t.Fatal("a template matched as a literal origin")
	}
}

func preflightRequest(method, headers string) http.Header {
	h := http.Header{Origin: {"https://a.com"}, RequestMethod: {method}}
	if headers != "" {
		h[RequestHeaders] = []string{headers}
	}
	return h
}

func TestCheckPreflight(t *testing.T) {
	p := mustCompile(t, Config{
		AllowOrigins: []string{"https://a.com"},
		AllowMethods: []string{"put", "DELETE"},
		AllowHeaders: []string{"Authorization", "X-Request-Id"},
	})
	for _, row := range []struct {
		method, headers string
		pna             bool
		want            Refusal
	}{
		{"PUT", "", false, ""},
		{"DELETE", "authorization,x-request-id", false, ""},
		{"DELETE", " Authorization , X-REQUEST-ID ", false, ""},
		{"GET", "content-type", false, ""}, // safelisted method, Starlette's always-allowed header
		{"PATCH", "", false, RefuseMethod},
		{"put", "", false, RefuseMethod}, // methods are case-sensitive
		{"PUT", "x-other", false, RefuseHeaders},
		{"PUT", "authorization, x-other", false, RefuseHeaders},
		{"PUT", "", true, RefusePrivateNetwork},
	} {
		req := preflightRequest(row.method, row.headers)
		if row.pna {
			req[RequestPrivateNetwork] = []string{"true"}
		}
		if got := p.CheckPreflight(req); got != row.want {
			t.Errorf("%s %q pna=%v: %q, want %q", row.method, row.headers, row.pna, got, row.want)
		}
	}
	anyP := mustCompile(t, Config{AllowOrigins: []string{"https://a.com"}, AllowMethods: []string{"*"}, AllowHeaders: []string{"*"}, AllowPrivateNetwork: true})
	req := preflightRequest("PATCH", "x-anything")
	req[RequestPrivateNetwork] = []string{"true"}
	if got := anyP.CheckPreflight(req); got != "" {
		t.Errorf("'*' refused: %q", got)
	}
}

func TestSetPreflight(t *testing.T) {
	p := mustCompile(t, Config{
		AllowOrigins:        []string{"https://a.com"},
		AllowMethods:        []string{"GET", "PUT"},
		AllowHeaders:        []string{"Authorization"},
		AllowCredentials:    true,
		AllowPrivateNetwork: true,
		MaxAge:              3 * time.Hour,
	})
	req := preflightRequest("PUT", "authorization")
	req[RequestPrivateNetwork] = []string{"true"}
	dst := http.Header{"Vary": {"Accept-Encoding"}}
	p.SetPreflight(dst, req, req[Origin])
	p.SetPreflightVary(dst)
	want := http.Header{
		AllowOrigin:         {"https://a.com"},
		AllowCredentials:    {"true"},
		AllowMethods:        {"GET, PUT"},
		AllowHeaders:        {"authorization"},
		MaxAge:              {"7200"}, // capped
		AllowPrivateNetwork: {"true"},
		"Vary":              {"Accept-Encoding", "Origin, Access-Control-Request-Method, Access-Control-Request-Headers, Access-Control-Request-Private-Network"},
	}
	if !reflect.DeepEqual(dst, want) {
		t.Fatalf("got %v\nwant %v", dst, want)
	}

	star := mustCompile(t, Config{AllowOrigins: []string{"*"}, AllowMethods: []string{"*"}, MaxAge: 1500 * time.Millisecond})
	dst = http.Header{}
	req = preflightRequest("PATCH", "")
	star.SetPreflight(dst, req, req[Origin])
	star.SetPreflightVary(dst)
	want = http.Header{
		AllowOrigin:  {"*"},
		AllowMethods: {"PATCH"},
		MaxAge:       {"2"}, // rounded up
		"Vary":       {"Access-Control-Request-Method, Access-Control-Request-Headers"},
	}
	if !reflect.DeepEqual(dst, want) {
		t.Fatalf("got %v\nwant %v", dst, want)
	}
}

func TestSetActual(t *testing.T) {
	p := mustCompile(t, Config{AllowOrigins: []string{"https://a.com"}, ExposeHeaders: []string{"X-Request-Id", "X-Total"}, AllowCredentials: true})
	origin := []string{"https://a.com"}
	for _, row := range []struct {
		name     string
		upstream http.Header // what inner handlers set
		origin   []string
		allowed  bool
		want     http.Header
	}{
		{"allowed", http.Header{}, origin, true, http.Header{
			AllowOrigin:      {"https://a.com"},
			AllowCredentials: {"true"},
			ExposeHeaders:    {"X-Request-Id, X-Total"},
			"Vary":           {"Origin"},
		}},
		{"refused", http.Header{}, []string{"https://evil.io"}, false, http.Header{"Vary": {"Origin"}}},
		{"no origin", http.Header{"Vary": {"Accept-Encoding"}}, nil, false, http.Header{"Vary": {"Accept-Encoding", "Origin"}}},
		{"upstream CORS, allowed", http.Header{
			AllowOrigin:      {"*"},
			AllowCredentials: {"false"},
			ExposeHeaders:    {"X-Upstream"},
			"Vary":           {"Accept-Encoding, origin"},
		}, origin, true, http.Header{
			AllowOrigin:      {"https://a.com"},
			AllowCredentials: {"true"},
			ExposeHeaders:    {"X-Request-Id, X-Total"},
			"Vary":           {"Accept-Encoding, origin"},
		}},
		{"upstream CORS, refused", http.Header{AllowOrigin: {"https://evil.io"}, "Vary": {"*"}}, []string{"https://evil.io"}, false, http.Header{"Vary": {"*"}}},
	} {
		t.Run(row.name, func(t *testing.T) {
			dst := row.upstream
			p.SetActual(dst, row.origin, row.allowed)
			if !reflect.DeepEqual(dst, row.want) {
				t.Fatalf("got %v\nwant %v", dst, row.want)
			}
		})
	}
	if origin[0] != "https://a.com" {
		t.Fatal("a shared value was written through")
	}
	// Each response's values are its own: one changed in place, as Caddy's
	// header replace does, changes no later response.
	for range 2 {
		dst := http.Header{}
		p.SetActual(dst, []string{"https://a.com"}, true)
		want := http.Header{AllowOrigin: {"https://a.com"}, AllowCredentials: {"true"},
			ExposeHeaders: {"X-Request-Id, X-Total"}, "Vary": {"Origin"}}
		if !reflect.DeepEqual(dst, want) {
			t.Fatalf("got %v\nwant %v", dst, want)
		}
		for _, values := range dst {
			values[0] += ", changed"
		}
	}

	star := mustCompile(t, Config{AllowOrigins: []string{"*"}})
	dst := http.Header{}
	star.SetActual(dst, origin, true)
	if !reflect.DeepEqual(dst, http.Header{AllowOrigin: {"*"}}) {
		t.Fatalf("'*': got %v", dst)
	}
}

// TestEchoedValuesAreCopies checks that the values a response echoes from
// its request (the origin, the requested headers, the requested method)
// are not the request's slices: Caddy's header replace changes response
// values in place, and the request's fields must stay as they came for
// the access log and every later reader.
func TestEchoedValuesAreCopies(t *testing.T) {
	request := func() http.Header {
		return http.Header{Origin: {"https://a.example"}, RequestMethod: {"PATCH"}, RequestHeaders: {"x-a"}}
	}
	for _, row := range []struct {
		name    string
		c       Config
		changed []string // the response fields changed in place
		set     func(p *Policy, dst, req http.Header)
	}{
		{"preflight", Config{AllowOrigins: []string{"https://a.example"}, AllowMethods: []string{"PATCH"}, AllowHeaders: []string{"X-A"}},
			[]string{AllowOrigin, AllowHeaders},
			func(p *Policy, dst, req http.Header) { p.SetPreflight(dst, req, req[Origin][:1:1]) }},
		{"preflight, any method", Config{AllowOrigins: []string{"https://a.example"}, AllowMethods: []string{"*"}, AllowHeaders: []string{"*"}},
			[]string{AllowOrigin, AllowMethods, AllowHeaders},
			func(p *Policy, dst, req http.Header) { p.SetPreflight(dst, req, req[Origin][:1:1]) }},
		{"actual", Config{AllowOrigins: []string{"https://a.example"}},
			[]string{AllowOrigin},
			func(p *Policy, dst, req http.Header) { p.SetActual(dst, req[Origin][:1:1], true) }},
	} {
		t.Run(row.name, func(t *testing.T) {
			p := mustCompile(t, row.c)
			req := request()
			dst := http.Header{}
			row.set(p, dst, req)
			for _, name := range row.changed {
				if len(dst[name]) != 1 {
					t.Fatalf("%s: %q, want one value", name, dst[name])
				}
				dst[name][0] = "changed"
			}
			if !reflect.DeepEqual(req, request()) {
				t.Fatalf("the request's fields changed with the response's: %v", req)
			}
		})
	}
}

// FuzzAllowsOrigin checks the matcher against what it promises: it never
// panics, and what it allows is an origin one of the rules names.
func FuzzAllowsOrigin(f *testing.F) {
	for _, s := range []string{
		"https://app.example.com", "https://x.example.org", "https://a.b.example.org",
		"https://.example.org", "https://evil.io/.example.org", "http://localhost:3000",
		"http://localhost:", "http://localhost:0", "https://api.example.net", "", "null",
		"https://app.example.com.evil.io", "http://[::1]:8080",
	} {
		f.Add(s)
	}
	p := mustCompile(f, Config{
		AllowOrigins:     []string{"https://app.example.com", "https://*.example.org", "http://localhost:*"},
		AllowOriginRegex: `https://[a-z]+\.example\.net`,
	})
	f.Fuzz(func(t *testing.T, origin string) {
		if !p.AllowsOrigin(origin) {
			return
		}
		switch {
		case origin == "https://app.example.com":
		case strings.HasPrefix(origin, "https://") && strings.HasSuffix(origin, ".example.org"):
			if _, _, _, err := splitOrigin(origin); err != nil {
				t.Fatalf("allowed %q, which is no origin: %v", origin, err)
			}
		case strings.HasPrefix(origin, "http://localhost:"):
			if _, _, _, err := splitOrigin(origin); err != nil {
				t.Fatalf("allowed %q, which is no origin: %v", origin, err)
			}
		case strings.HasPrefix(origin, "https://") && strings.HasSuffix(origin, ".example.net"):
		default:
			t.Fatalf("allowed %q", origin)
		}
	})
}
