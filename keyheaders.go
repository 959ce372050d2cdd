package gateway

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// checkKeyHeader refuses a request header as part of a key when Caddy
// would drop it before any handler runs: since 2.11, a server deletes
// request headers whose names hold '_' or '.' unless its
// expected_underscore_headers or expected_dot_headers option lists them,
// and a key made of an absent header keys every client alike. The check
// passes when a server of the config keeps the header; the servers
// cannot tell which of them runs the handler.
func checkKeyHeader(ctx caddy.Context, name string) error {
	canon := http.CanonicalHeaderKey(name)
	underscore, dot := strings.Contains(canon, "_"), strings.Contains(canon, ".")
	if !underscore && !dot {
		return nil
	}
	app := httpApp(ctx)
	if app == nil {
		return nil
	}
	for _, srv := range app.Servers {
		if keepsHeader(srv, canon, underscore, dot) {
			return nil
		}
	}
	option := "expected_underscore_headers"
	if dot && !underscore {
		option = "expected_dot_headers"
	}
	both := ""
	if dot && underscore {
		both = " (a name with both '_' and '.' must be listed exactly, without '*')"
	}
	return fmt.Errorf("request header %q: Caddy drops request headers whose names hold '_' or '.', so this key would be empty for every request; "+
		"list the header in the server option %s%s: in a Caddyfile, servers { %s %s } among the global options", name, option, both, option, name)
}

// keepsHeader reports whether a server lets a request header of that
// canonical name through, as caddyhttp.Server's filter decides.
func keepsHeader(srv *caddyhttp.Server, canon string, underscore, dot bool) bool {
	exact := func(entries []string) bool {
		for _, e := range entries {
			if http.CanonicalHeaderKey(e) == canon {
				return true
			}
		}
		return false
	}
	prefix := func(entries []string) bool {
		for _, e := range entries {
			if p, ok := strings.CutSuffix(e, "*"); ok && strings.HasPrefix(canon, http.CanonicalHeaderKey(p)) {
				return true
			}
		}
		return false
	}
	switch {
	case underscore && dot:
		return exact(srv.ExpectedUnderscoreHeaders) || exact(srv.ExpectedDotHeaders)
	case underscore:
		return exact(srv.ExpectedUnderscoreHeaders) || prefix(srv.ExpectedUnderscoreHeaders)
	default:
		return exact(srv.ExpectedDotHeaders) || prefix(srv.ExpectedDotHeaders)
	}
}

// checkHeaderPlaceholders applies checkKeyHeader to every request header
// that the templates read through {http.request.header.*}.
func checkHeaderPlaceholders(ctx caddy.Context, templates ...string) error {
	const prefix = "{http.request.header."
	for _, t := range templates {
		for {
			i := strings.Index(t, prefix)
			if i < 0 {
				break
			}
			t = t[i+len(prefix):]
			end := strings.IndexByte(t, '}')
			if end < 0 {
				break
			}
			name, _, _ := strings.Cut(t[:end], ":") // a default value follows ':'
			if err := checkKeyHeader(ctx, name); err != nil {
				return err
			}
			t = t[end:]
		}
	}
	return nil
}

// httpApp returns the HTTP app whose provisioning runs this handler's, or
// nil outside of one.
func httpApp(ctx caddy.Context) *caddyhttp.App {
	for _, m := range ctx.Modules() {
		if app, ok := m.(*caddyhttp.App); ok {
			return app
		}
	}
	return nil
}

// checkTemplate refuses a template with a placeholder that is not closed:
// Caddy's replacer leaves a '{' that no '}' closes as it is, so such a
// template is the same text for every request (a rate-limit key shared by
// all, a cache key part that tells no one apart, a CORS origin that
// matches none) or no number (a cost). A
// brace right after a '\' is a literal one, as the replacer reads it, and
// a '}' that closes nothing is text.
func checkTemplate(t string) error {
	open := -1
	for i := 0; i < len(t); i++ {
		if i > 0 && t[i-1] == '\\' {
			continue
		}
		switch t[i] {
		case '{':
			if open >= 0 {
				return fmt.Errorf("the '{' at offset %d opens a placeholder that no '}' closes before the next '{'; write \\{ for a literal brace", open)
			}
			open = i
		case '}':
			open = -1
		}
	}
	if open >= 0 {
		return fmt.Errorf("the '{' at offset %d opens a placeholder that no '}' closes; write \\{ for a literal brace", open)
	}
	return nil
}
