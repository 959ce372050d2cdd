package gateway_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
)

// whoAmI answers as an API that authenticates by cookie and forgets to
// say private: the body names the caller by the request's Cookie, with a
// number that grows with each upstream request.
func whoAmI(cacheControl string) http.HandlerFunc {
	var n atomic.Int64
	return func(w http.ResponseWriter, r *http.Request) {
		if cacheControl != "" {
			w.Header().Set("Cache-Control", cacheControl)
		}
		who := "anonymous"
		if c, err := r.Cookie("session"); err == nil {
			who = c.Value
		}
		fmt.Fprintf(w, "%s #%d", who, n.Add(1))
	}
}

// cookieSite is a cache with the options given, in the mode they say.
func cookieSite(options string) string {
	return `
	cache_read accounts
	cache_write accounts {
		` + options + `
	}
	reverse_proxy {upstream}
`
}

// TestCookiesKeepResponsesPrivate: by default a request with a cookie is
// neither stored nor answered from what another request stored, in both
// modes, so that one user's cookie-authenticated response never reaches
// another.
func TestCookiesKeepResponsesPrivate(t *testing.T) {
	for _, mode := range []struct{ name, options, cacheControl string }{
		{"operator TTL", "ttl 60s", ""},
		{"origin", "", "max-age=60"},
	} {
		t.Run(mode.name, func(t *testing.T) {
			up := newUpstream(t, whoAmI(mode.cacheControl))
			g := startGateway(t, "", cookieSite(mode.options), up.addr())
			alice := g.get("/me", "Cookie: session=alice")
			bob := g.get("/me", "Cookie: session=bob")
			if !strings.HasPrefix(alice.body, "alice ") || !strings.HasPrefix(bob.body, "bob ") {
				t.Fatalf("alice got %q, bob got %q", alice.body, bob.body)
			}
			if cs := alice.cacheStatus(); !strings.Contains(cs, "detail=COOKIE") {
				t.Errorf("Cache-Status %q, want detail=COOKIE", cs)
			}
			// An anonymous response is stored, but a request with a
			// cookie is not answered from it.
			if anon := g.get("/me"); !strings.HasSuffix(anon.cacheStatus(), "; stored") {
				t.Fatalf("anonymous request: Cache-Status %q, want it stored", anon.cacheStatus())
			}
			if hit := g.get("/me"); !hit.isHit() {
				t.Fatalf("anonymous request again: Cache-Status %q, want a hit", hit.cacheStatus())
			}
			again := g.get("/me", "Cookie: session=alice")
			if !strings.HasPrefix(again.body, "alice ") || again.isHit() {
				t.Errorf("alice got %q (Cache-Status %q), want her own answer", again.body, again.cacheStatus())
			}
			if cs := again.cacheStatus(); !strings.Contains(cs, "fwd=bypass") || !strings.Contains(cs, "detail=COOKIE") {
				t.Errorf("Cache-Status %q, want fwd=bypass and detail=COOKIE", cs)
			}
			if n := up.count("/me"); n != 4 {
				t.Errorf("the origin answered %d requests, want 4 (alice, bob, anonymous, alice)", n)
			}
		})
	}
}

// TestCookiesPublicResponsesAreShared: a response that says public or
// s-maxage is the origin's decision to share it, cookies or not.
func TestCookiesPublicResponsesAreShared(t *testing.T) {
	for _, cc := range []string{"public, max-age=60", "s-maxage=60"} {
		t.Run(cc, func(t *testing.T) {
			up := newUpstream(t, whoAmI(cc))
			g := startGateway(t, "", cookieSite(""), up.addr())
			alice := g.get("/cities", "Cookie: session=alice")
			bob := g.get("/cities", "Cookie: session=bob")
			if !bob.isHit() || bob.body != alice.body {
				t.Errorf("bob got %q (Cache-Status %q), want a hit repeating %q", bob.body, bob.cacheStatus(), alice.body)
			}
		})
	}
}

// TestKeyCookiesAndIgnoreCookies: key_cookies keys each session apart,
// ignore_cookies lets analytics cookies share entries, and a cookie that
// is in neither keeps the request private still.
func TestKeyCookiesAndIgnoreCookies(t *testing.T) {
	up := newUpstream(t, whoAmI(""))
	g := startGateway(t, "", cookieSite("ttl 60s\n\t\tkey_cookies session\n\t\tignore_cookies _ga consent"), up.addr())

	alice := g.get("/me", "Cookie: session=alice; _ga=GA1.1")
	if !strings.HasSuffix(alice.cacheStatus(), "; stored") {
		t.Fatalf("alice: Cache-Status %q, want it stored under her session", alice.cacheStatus())
	}
	if again := g.get("/me", "Cookie: _ga=GA1.2; session=alice"); !again.isHit() || again.body != alice.body {
		t.Errorf("alice again: %q (Cache-Status %q), want a hit repeating %q", again.body, again.cacheStatus(), alice.body)
	}
	if bob := g.get("/me", "Cookie: session=bob; _ga=GA1.1"); bob.isHit() || !strings.HasPrefix(bob.body, "bob ") {
		t.Errorf("bob got %q (Cache-Status %q), want his own answer", bob.body, bob.cacheStatus())
	}
	if other := g.get("/me", "Cookie: session=alice; theme=dark"); other.isHit() || !strings.Contains(other.cacheStatus(), "detail=COOKIE") {
		t.Errorf("a cookie in neither list: Cache-Status %q, want a forwarded request, not stored (COOKIE)", other.cacheStatus())
	}

	// Requests with only ignored cookies share one entry: an API manager
	// caching GET /cities for browsers keeps its hit ratio.
	first := g.get("/cities", "Cookie: _ga=GA1.1; consent=yes")
	second := g.get("/cities", "Cookie: _ga=GA1.9")
	third := g.get("/cities")
	if !second.isHit() || !third.isHit() || second.body != first.body || third.body != first.body {
		t.Errorf("ignored cookies: %q then %q (%q) then %q (%q), want hits repeating the first",
			first.body, second.body, second.cacheStatus(), third.body, third.cacheStatus())
	}
}

// TestCookiesAcrossRoutes: a cache_read on a route without the writer
// applies the writer's cookie rule: a request whose cookie the writer does
// not ignore is not answered from the shared entry, one with an ignored
// cookie is.
func TestCookiesAcrossRoutes(t *testing.T) {
	up := newUpstream(t, whoAmI(""))
	g := startGateway(t, "", `
	@readonly header X-Route read
	route @readonly {
		cache_read accounts
		reverse_proxy {upstream}
	}
	route {
		cache_read accounts
		cache_write accounts {
			ttl 60s
			ignore_cookies _ga
		}
		reverse_proxy {upstream}
	}
`, up.addr())
	stored := g.get("/me")
	if !strings.HasSuffix(stored.cacheStatus(), "; stored") {
		t.Fatalf("Cache-Status %q, want the anonymous response stored", stored.cacheStatus())
	}
	if r := g.get("/me", "X-Route: read", "Cookie: _ga=1"); !r.isHit() || r.body != stored.body {
		t.Errorf("read-only route, ignored cookie: %q (Cache-Status %q), want a hit", r.body, r.cacheStatus())
	}
	r := g.get("/me", "X-Route: read", "Cookie: session=alice")
	if r.isHit() || !strings.HasPrefix(r.body, "alice ") {
		t.Errorf("read-only route, alice's cookie: %q (Cache-Status %q), want her own answer", r.body, r.cacheStatus())
	}
}

// A cookie keyed by a {http.request.cookie.NAME} placeholder cannot poison
// the entry of requests without it: Caddy's replacer reads cookies as Go
// does, which drops a value holding '"' and every cookie of a header with
// more than 3000 ';', while an origin with a lenient parser still reads
// them. The key holds the cookie's every value as the origin may read it.
func TestCookiePlaceholderCannotPoison(t *testing.T) {
	var n atomic.Int64
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		lang := "none" // a lenient cookie parser, as many origins have
		for _, part := range strings.Split(r.Header.Get("Cookie"), ";") {
			if k, v, ok := strings.Cut(strings.TrimSpace(part), "="); ok && k == "lang" {
				lang = v
			}
		}
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprintf(w, "lang=%s n=%d", lang, n.Add(1))
	})
	g := startGateway(t, "", `
	cache_read products
	cache_write products {
		key_placeholders {http.request.cookie.lang}
	}
	reverse_proxy {upstream}
`, up.addr())
	for i, cookie := range []string{`lang=x"evil`, "lang=evil; " + strings.Repeat(";", 3001), "lang=fr; lang=evil"} {
		path := fmt.Sprintf("/page%d", i)
		if r := g.get(path, "Cookie: "+cookie); !strings.Contains(r.body, "evil") {
			t.Fatalf("Cookie %.30q: the origin read %q", cookie, r.body)
		}
		if r := g.get(path); strings.Contains(r.body, "evil") {
			t.Errorf("a request without the cookie got the answer to Cookie %.30q: %q (%q)", cookie, r.body, r.cacheStatus())
		}
		if r := g.get(path, "Cookie: lang=fr"); strings.Contains(r.body, "evil") {
			t.Errorf("Cookie: lang=fr got the answer to Cookie %.30q: %q (%q)", cookie, r.body, r.cacheStatus())
		}
	}
}
