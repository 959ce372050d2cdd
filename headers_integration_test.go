package gateway_test

import (
	"net/http"
	"testing"
)

// TestHeaderReplaceChangesOneResponse checks that the field values the
// handlers set are each response's own: Caddy's header replace changes
// values in place, and a value shared between responses (a stored
// entry's field, a zone's RateLimit-Policy, a CORS field) would carry
// one response's change into every later one, or one user's value to
// another.
func TestHeaderReplaceChangesOneResponse(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Test", "a")
		w.Write([]byte("body"))
	})
	g := startGateway(t, "", `
	header >X-Test "a" "aa"
	header >Vary "Origin" "Origin, Accept"
	header >Ratelimit-Policy "w=3600" "w=3600;x=1"
	header >Access-Control-Expose-Headers "X-Id" "X-Id, X-Other"
	cors {
		allow_origins https://app.example.com
		expose_headers X-Id
	}
	rate_limit {
		zone z {
			key {client_ip}
			events 100
			window 1h
		}
	}
	cache_read products
	cache_write products {
		ttl 1h
	}
	reverse_proxy {upstream}
`, up.addr())
	want := map[string]string{
		"X-Test":                        "aa",
		"Vary":                          "Origin, Accept",
		"Ratelimit-Policy":              `"z";q=100;w=3600;x=1`,
		"Access-Control-Expose-Headers": "X-Id, X-Other",
	}
	for i := range 3 {
		r := g.get("/", "Origin: https://app.example.com")
		if i > 0 && !r.isHit() {
			t.Errorf("request %d: not a hit: %q", i+1, r.cacheStatus())
		}
		for name, value := range want {
			if got := r.header.Values(name); len(got) != 1 || got[0] != value {
				t.Errorf("request %d: %s %q, want %q", i+1, name, got, value)
			}
		}
	}
}
