package gateway_test

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
)

// validateJSON runs `caddy validate` on a JSON config and returns its
// output and whether it passed.
func validateJSON(t *testing.T, config string) (string, bool) {
	t.Helper()
	return validateFile(t, "caddy.json", config)
}

// jsonConfig is a whole config: one server whose route runs handler, and
// the cache_pool app when pool is not empty.
func jsonConfig(pool, handler string) string {
	apps := ""
	if pool != "" {
		apps = `"cache_pool": ` + pool + `,`
	}
	return fmt.Sprintf(`{"admin": {"disabled": true}, "apps": {%s "http": {"servers": {"s": {"listen": [":0"],
		"routes": [{"handle": [%s, {"handler": "static_response", "body": "ok"}]}]}}}}}`, apps, handler)
}

// caddyfileIn is a Caddyfile with the global options globals and one site
// whose body is site; line 1 is the opening brace of the globals.
func caddyfileIn(globals, site string) string {
	return "{\n\tadmin off\n" + globals + "}\n:0 {\n" + site + "\trespond ok\n}\n"
}

// TestValidationRules: every rule refuses the same bad value in JSON, through
// `caddy validate`, and in a Caddyfile, with the file and line; both
// messages name the field. A rule that a Caddyfile cannot express (a
// negative number, which its parsers refuse as such) has no Caddyfile.
func TestValidationRules(t *testing.T) {
	const read = `{"handler": "cache_read", "cache": "products"}`
	zone := func(fields string) string {
		return `{"handler": "rate_limit", "rate_limits": {"z": {"key": "k", "max_events": 3, "window": 60000000000` + fields + `}}}`
	}
	zoneBlock := func(lines string) string {
		return "\trate_limit {\n\t\tzone z {\n\t\t\tkey k\n\t\t\tevents 3\n\t\t\twindow 1m\n" + lines + "\t\t}\n\t}\n"
	}
	tests := []struct {
		name          string
		pool, handler string // the JSON config's
		globals, site string // the Caddyfile's; both empty when it cannot say it
		want          string
		line          int
	}{
		{"pool max_size", `{"max_size": 524288}`, read, "\tcache_pool {\n\t\tmax_size 512KiB\n\t}\n", "\tcache_read products\n",
			"cache_pool: max_size 524288 is below the minimum of 1MiB", 5},
		{"cache max_entry_size", `{"caches": {"products": {"max_size": 2097152, "max_entry_size": 1536000}}}`, read,
			"\tcache_pool {\n\t\tcache products {\n\t\t\tmax_size 2MiB\n\t\t\tmax_entry_size 1500KiB\n\t\t}\n\t}\n", "\tcache_read products\n",
			`cache_pool: cache "products": max_entry_size 1536000 exceeds half of max_size 2097152`, 8},
		{"negative pool size", `{"max_entry_size": -1}`, read, "", "", "cache_pool: max_entry_size must be positive", 0},
		{"pool redis", `{"redis": "http://127.0.0.1:1"}`, read, "\tcache_pool {\n\t\tredis http://127.0.0.1:1\n\t}\n", "\tcache_read products\n",
			"cache_pool: redis: invalid URL", 5},
		{"cache_write name", "", `{"handler": "cache_write"}`, "", "\tcache_write\n", "cache_write: missing cache name", 5},
		{"cache name", "", `{"handler": "cache_write", "cache": "a/b"}`, "", "\tcache_write a/b\n", `cache "a/b": a cache name may not contain '/'`, 5},
		{"pool cache name", `{"caches": {"a/b": {}}}`, read, "\tcache_pool {\n\t\tcache a/b\n\t}\n", "\tcache_read products\n",
			`cache_pool: cache "a/b": a cache name may not contain '/'`, 4},
		{"cache name dots", "", `{"handler": "cache_write", "cache": ".."}`, "", "\tcache_write ..\n", `cache "..": a cache may not be named ".."`, 5},
		{"cache name not ASCII", "", `{"handler": "cache_write", "cache": "caché"}`, "", "\tcache_write caché\n",
			`a cache name holds printable ASCII only, as Cache-Status names it`, 5},
		{"cache_invalidate targets", "", `{"handler": "cache_invalidate", "cache": "p", "tags": [` + strings.Repeat(`"t",`, 256) + `"t"]}`, "", "",
			"cache_invalidate p: 257 urls, prefixes and tags: at most 256 per invalidation", 0},
		// A placeholder that no '}' closes is the same text for every
		// request: refused wherever a template is taken.
		{"cache_write key_placeholders unclosed", "", `{"handler": "cache_write", "cache": "p", "key_placeholders": ["{http.auth.user.id"]}`, "", "",
			`cache_write p: key_placeholders: "{http.auth.user.id": the '{' at offset 0 opens a placeholder that no '}' closes`, 0},
		{"cache_invalidate template unclosed", "", `{"handler": "cache_invalidate", "cache": "p", "tags": ["user-{http.request.header.X"]}`, "", "",
			`cache_invalidate p: "user-{http.request.header.X": the '{' at offset 5 opens a placeholder`, 0},
		{"cors origin template unclosed", "", `{"handler": "cors", "allow_origins": ["https://{env.SITE"]}`, "", "",
			`cors: allow_origins: "https://{env.SITE": the '{' at offset 8 opens a placeholder`, 0},
		{"cache_write status", "", `{"handler": "cache_write", "cache": "p", "status": [99]}`, "", "\tcache_write p {\n\t\tstatus 99\n\t}\n",
			"cache_write p: status: 99 is not a final status code", 6},
		{"cache_write ttl", "", `{"handler": "cache_write", "cache": "p", "ttl": -1}`, "", "", "cache_write p: ttl must not be negative", 0},
		{"cache_write max_ttl", "", `{"handler": "cache_write", "cache": "p", "max_ttl": -1}`, "", "", "cache_write p: max_ttl must not be negative", 0},
		{"cache_write key_headers", "", `{"handler": "cache_write", "cache": "p", "key_headers": ["a b"]}`, "", "\tcache_write p {\n\t\tkey_headers \"a b\"\n\t}\n",
			`cache_write p: key_headers: "a b" is not a header field name`, 6},
		{"cache_write tags_from", "", `{"handler": "cache_write", "cache": "p", "tags_from": ["x:y"]}`, "", "\tcache_write p {\n\t\ttags_from x:y\n\t}\n",
			`cache_write p: tags_from: "x:y" is not a header field name`, 6},
		{"cache_read name", "", `{"handler": "cache_read"}`, "", "\tcache_read\n", "cache_read: missing cache name", 5},
		{"cache_invalidate prefixes", "", `{"handler": "cache_invalidate", "cache": "p", "prefixes": ["p/"]}`, "", "\tcache_invalidate p {\n\t\tprefixes p/\n\t}\n",
			`cache_invalidate p: prefixes: "p/" must start with /`, 6},
		{"cache_invalidate urls", "", `{"handler": "cache_invalidate", "cache": "p", "urls": ["ftp://h/a"]}`, "", "\tcache_invalidate p {\n\t\turls ftp://h/a\n\t}\n",
			`cache_invalidate p: urls: "ftp://h/a": unsupported scheme "ftp"`, 6},
		{"cache_invalidate methods", "", `{"handler": "cache_invalidate", "cache": "p", "methods": ["GET POST"]}`, "", "\tcache_invalidate p {\n\t\tmethods \"GET POST\"\n\t}\n",
			`cache_invalidate p: methods: "GET POST" is not a method`, 6},
		{"rate_limit headers", "", `{"handler": "rate_limit", "headers": "x", "rate_limits": {"z": {"key": "k", "max_events": 1, "window": 60000000000}}}`, "",
			"\trate_limit {\n\t\theaders x\n\t}\n", "rate_limit: headers must be ietf, legacy, both or off", 6},
		{"rate_limit fail_mode", "", `{"handler": "rate_limit", "fail_mode": "x", "rate_limits": {"z": {"key": "k", "max_events": 1, "window": 60000000000}}}`, "",
			"\trate_limit {\n\t\tfail_mode x\n\t}\n", "rate_limit: fail_mode must be local, open or closed", 6},
		{"rate_limit jitter", "", `{"handler": "rate_limit", "jitter": 2, "rate_limits": {"z": {"key": "k", "max_events": 1, "window": 60000000000}}}`, "",
			"\trate_limit {\n\t\tjitter 2\n\t}\n", "rate_limit: jitter must be a fraction between 0 and 1", 6},
		{"rate_limit max_keys", "", `{"handler": "rate_limit", "max_keys": -1, "rate_limits": {"z": {"key": "k", "max_events": 1, "window": 60000000000}}}`, "",
			"", "rate_limit: max_keys must be positive", 0},
		{"rate_limit max_keys bound", "", `{"handler": "rate_limit", "max_keys": 100000000000, "rate_limits": {"z": {"key": "k", "max_events": 1, "window": 60000000000}}}`, "",
			"\trate_limit {\n\t\tmax_keys 100000000000\n\t}\n", "rate_limit: max_keys must be at most 2147483648, not 100000000000", 6},
		{"rate_limit max_keys above int32", "", `{"handler": "rate_limit", "max_keys": 3000000000, "rate_limits": {"z": {"key": "k", "max_events": 1, "window": 60000000000}}}`, "",
			"\trate_limit {\n\t\tmax_keys 3000000000\n\t}\n", "rate_limit: max_keys must be at most 2147483648, not 3000000000", 6},
		{"rate_limit redis", "", `{"handler": "rate_limit", "redis": "http://h", "rate_limits": {"z": {"key": "k", "max_events": 1, "window": 60000000000}}}`, "",
			"\trate_limit {\n\t\tredis http://h\n\t}\n", "rate_limit: redis: invalid URL", 6},
		{"rate_limit cluster redis", "", `{"handler": "rate_limit", "redis": "redis+cluster://a:1/2", "rate_limits": {"z": {"key": "k", "max_events": 1, "window": 60000000000}}}`, "",
			"\trate_limit {\n\t\tredis redis+cluster://a:1/2\n\t}\n", "rate_limit: redis: invalid URL: a cluster URL has no database", 6},
		{"pool sentinel redis", `{"redis": "redis+sentinel://u:s3cret@s:1"}`, read, "\tcache_pool {\n\t\tredis redis+sentinel://u:s3cret@s:1\n\t}\n", "\tcache_read products\n",
			"cache_pool: redis: invalid URL: a sentinel URL's path is /master", 5},
		{"rate_limit no zone", "", `{"handler": "rate_limit"}`, "", "\trate_limit {\n\t\tfail_mode open\n\t}\n",
			"rate_limit: at least one zone is required", 7},
		{"zone name", "", `{"handler": "rate_limit", "rate_limits": {"a/b": {"key": "k", "max_events": 1, "window": 60000000000}}}`, "",
			"\trate_limit {\n\t\tzone a/b {\n\t\t\tkey k\n\t\t\tevents 1\n\t\t\twindow 1m\n\t\t}\n\t}\n", "rate_limit: zone a/b: a zone name holds only letters", 10},
		{"zone name dots", "", `{"handler": "rate_limit", "rate_limits": {"..": {"key": "k", "max_events": 1, "window": 60000000000}}}`, "",
			"\trate_limit {\n\t\tzone .. {\n\t\t\tkey k\n\t\t\tevents 1\n\t\t\twindow 1m\n\t\t}\n\t}\n", `rate_limit: zone ..: a zone may not be named ".."`, 10},
		{"zone key", "", `{"handler": "rate_limit", "rate_limits": {"z": {"max_events": 1, "window": 60000000000}}}`, "",
			"\trate_limit {\n\t\tzone z {\n\t\t\tevents 1\n\t\t\twindow 1m\n\t\t}\n\t}\n", "rate_limit: zone z: key is required", 9},
		{"zone algorithm", "", zone(`, "algorithm": "gcra"`), "", zoneBlock("\t\t\talgorithm gcra\n"), `rate_limit: zone z: unknown algorithm "gcra"`, 11},
		{"zone events", "", `{"handler": "rate_limit", "rate_limits": {"z": {"key": "k", "max_events": 0, "window": 60000000000}}}`, "",
			"\trate_limit {\n\t\tzone z {\n\t\t\tkey k\n\t\t\tevents 0\n\t\t\twindow 1m\n\t\t}\n\t}\n", "rate_limit: zone z: events (max_events) must be a positive integer, not 0", 10},
		{"zone window", "", `{"handler": "rate_limit", "rate_limits": {"z": {"key": "k", "max_events": 1}}}`, "",
			"\trate_limit {\n\t\tzone z {\n\t\t\tkey k\n\t\t\tevents 1\n\t\t}\n\t}\n", "rate_limit: zone z: window must be a positive duration, not 0s", 9},
		{"zone cost above events", "", zone(`, "cost": "5"`), "", zoneBlock("\t\t\tcost 5\n"), "rate_limit: zone z: cost 5 is above events (max_events) 3", 11},
		{"zone burst below cost", "", zone(`, "algorithm": "token_bucket", "burst": 2, "cost": "3"`), "",
			zoneBlock("\t\t\talgorithm token_bucket\n\t\t\tburst 2\n\t\t\tcost 3\n"), "rate_limit: zone z: burst 2 is below cost 3", 13},
		{"zone cost", "", zone(`, "cost": "abc"`), "", zoneBlock("\t\t\tcost abc\n"), `rate_limit: zone z: cost must be a positive number or a placeholder, not "abc"`, 11},
		{"zone cost zero", "", zone(`, "cost": "0"`), "", zoneBlock("\t\t\tcost 0\n"), `rate_limit: zone z: cost must be a positive number or a placeholder, not "0"`, 11},
		{"zone cost template", "", zone(`, "cost": "{http.request.header.X-Cost"`), "", zoneBlock("\t\t\tcost {http.request.header.X-Cost\n"),
			`rate_limit: zone z: cost "{http.request.header.X-Cost": the '{' at offset 0 opens a placeholder that no '}' closes`, 11},
		{"zone key template", "", `{"handler": "rate_limit", "rate_limits": {"z": {"key": "{http.request.header.X", "max_events": 1, "window": 60000000000}}}`, "",
			"\trate_limit {\n\t\tzone z {\n\t\t\tkey {http.request.header.X\n\t\t\tevents 1\n\t\t\twindow 1m\n\t\t}\n\t}\n",
			`rate_limit: zone z: key "{http.request.header.X": the '{' at offset 0 opens a placeholder that no '}' closes`, 10},
		{"zone ipv4_prefix", "", zone(`, "ipv4_prefix": 40`), "", zoneBlock("\t\t\tipv4_prefix 40\n"), "rate_limit: zone z: ipv4_prefix must be 1 to 32, not 40", 10},
		{"zone ipv6_prefix", "", zone(`, "ipv6_prefix": -1`), "", "", "rate_limit: zone z: ipv6_prefix must be 1 to 128, not -1", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, ok := validateJSON(t, jsonConfig(tt.pool, tt.handler))
			if ok || !strings.Contains(out, tt.want) {
				t.Errorf("JSON: validate passed=%v, want a failure saying %q:\n%s", ok, tt.want, tail(out, 3))
			}
			if tt.globals == "" && tt.site == "" {
				return
			}
			_, err := adapt(caddyfileIn(tt.globals, tt.site), "Caddyfile")
			where := fmt.Sprintf("Caddyfile:%d", tt.line)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !regexp.MustCompile(regexp.QuoteMeta(where)+`\b`).MatchString(err.Error()) {
				t.Errorf("Caddyfile: got %v, want %q at %s", err, tt.want, where)
			}
		})
	}
}

// TestCaddyfileOnlyRules: values that JSON cannot carry (NaN, an infinity)
// or that it cannot tell from an option left out (a prefix of 0), which a
// Caddyfile refuses with the file and line all the same.
func TestCaddyfileOnlyRules(t *testing.T) {
	zoneWith := func(lines string) string {
		return "\trate_limit {\n\t\tzone z {\n\t\t\tkey k\n\t\t\tevents 3\n\t\t\twindow 1m\n" + lines + "\t\t}\n\t}\n"
	}
	handlerWith := func(line string) string {
		return "\trate_limit {\n\t\t" + line + "\n\t\tzone z {\n\t\t\tkey k\n\t\t\tevents 3\n\t\t\twindow 1m\n\t\t}\n\t}\n"
	}
	tests := []struct {
		site, want string
		line       int
	}{
		{handlerWith("jitter nan"), "rate_limit: jitter must be a fraction between 0 and 1, not NaN", 6},
		{handlerWith("jitter NaN"), "rate_limit: jitter must be a fraction between 0 and 1, not NaN", 6},
		{handlerWith("jitter inf"), "rate_limit: jitter must be a fraction between 0 and 1, not +Inf", 6},
		{handlerWith("jitter -Infinity"), "rate_limit: jitter must be a fraction between 0 and 1, not -Inf", 6},
		{handlerWith("jitter x"), "rate_limit: jitter: 'x' is not a number", 6},
		{handlerWith("ipv4_prefix 0"), "rate_limit: ipv4_prefix must be 1 to 32, not 0", 6},
		{handlerWith("ipv6_prefix 0"), "rate_limit: ipv6_prefix must be 1 to 128, not 0", 6},
		{handlerWith("ipv6_prefix 129"), "rate_limit: ipv6_prefix must be 1 to 128, not 129", 6},
		{handlerWith("ipv4_prefix 3000000000"), "rate_limit: ipv4_prefix must be 1 to 32, not 3000000000", 6},
		{handlerWith("max_keys 99999999999999999999"), "rate_limit: max_keys: '99999999999999999999' is not an integer", 6},
		{zoneWith("\t\t\tipv4_prefix 0\n"), "rate_limit: zone z: ipv4_prefix must be 1 to 32, not 0", 10},
		{zoneWith("\t\t\tipv6_prefix 0\n"), "rate_limit: zone z: ipv6_prefix must be 1 to 128, not 0", 10},
	}
	for _, tt := range tests {
		_, err := adapt(caddyfileIn("", tt.site), "Caddyfile")
		where := fmt.Sprintf("Caddyfile:%d", tt.line)
		if err == nil || !strings.Contains(err.Error(), tt.want) || !regexp.MustCompile(regexp.QuoteMeta(where)+`\b`).MatchString(err.Error()) {
			t.Errorf("%s: got %v, want %q at %s", strings.TrimSpace(tt.site), err, tt.want, where)
		}
	}
}

// TestValidConfigsStayValid: configs the rules must not refuse: pool
// options in either order, a dry-run zone whose cost exceeds its events
// (it never refuses), a Redis URL from the environment (checked when it
// is expanded, at provisioning, not when the Caddyfile is adapted).
func TestValidConfigsStayValid(t *testing.T) {
	for _, cf := range []string{
		caddyfileIn("\tcache_pool {\n\t\tmax_size 1MiB\n\t\tmax_entry_size 256KiB\n\t}\n", "\tcache_read p\n"),
		caddyfileIn("\tcache_pool {\n\t\tmax_entry_size 40MiB\n\t\tmax_size 100MiB\n\t}\n", "\tcache_read p\n"),
		caddyfileIn("", "\trate_limit {\n\t\tzone z {\n\t\t\tkey k\n\t\t\tevents 3\n\t\t\twindow 1m\n\t\t\tcost 5\n\t\t\tdry_run\n\t\t}\n\t}\n"),
		// Well-formed templates, an escaped brace among them, and the
		// prefixes at their bounds.
		caddyfileIn("", "\trate_limit {\n\t\tipv4_prefix 32\n\t\tzone z {\n\t\t\tkey {http.request.header.X-Api-Key}\\{x\\}\n\t\t\tevents 3\n\t\t\twindow 1m\n\t\t\tcost {http.request.header.X-Cost}\n\t\t\tipv6_prefix 128\n\t\t}\n\t\tmax_keys 2147483648\n\t\tjitter 1\n\t}\n"),
		// Validating dials nothing: these Redis deployments do not exist.
		caddyfileIn("\tcache_pool {\n\t\tredis redis+sentinel://127.0.0.1:1,127.0.0.1:2/mymaster/3\n\t}\n", "\tcache_read p\n"),
		caddyfileIn("", "\trate_limit {\n\t\tzone z {\n\t\t\tkey k\n\t\t\tevents 3\n\t\t\twindow 1m\n\t\t}\n\t\tredis rediss+cluster://u:p@127.0.0.1:1,127.0.0.1:2\n\t}\n"),
	} {
		if out, ok := validate(t, cf); !ok {
			t.Errorf("refused:\n%s\n%s", cf, tail(out, 3))
		}
	}
	for _, cf := range []string{
		caddyfileIn("\tcache_pool {\n\t\tredis {env.GATEWAY_TEST_UNSET}\n\t}\n", "\tcache_read p\n"),
		caddyfileIn("", "\trate_limit {\n\t\tzone z {\n\t\t\tkey k\n\t\t\tevents 3\n\t\t\twindow 1m\n\t\t}\n\t\tredis {env.GATEWAY_TEST_UNSET}\n\t}\n"),
	} {
		if _, err := adapt(cf, "Caddyfile"); err != nil {
			t.Errorf("adapt refused a Redis URL from the environment: %v", err)
		}
	}
}

// TestKeyHeadersCaddyDrops: a key that reads a request header whose name
// holds '_' or '.' is refused at load unless a server keeps the header,
// in cache_write and in rate_limit, and the message names the option
// that fixes it.
func TestKeyHeadersCaddyDrops(t *testing.T) {
	tests := []struct {
		name, globals, site, want string
	}{
		{"cache_write", "", "\tcache_write p {\n\t\tkey_headers client_id\n\t}\n", "expected_underscore_headers"},
		{"cache_write placeholder", "", "\tcache_write p {\n\t\tkey_placeholders {http.request.header.X.Api}\n\t}\n", "expected_dot_headers"},
		{"rate_limit", "", "\trate_limit {\n\t\tzone z {\n\t\t\tkey {http.request.header.access_token}\n\t\t\tevents 1\n\t\t\twindow 1m\n\t\t}\n\t}\n", "expected_underscore_headers"},
		{"kept", "\tservers {\n\t\texpected_underscore_headers client_id access_*\n\t}\n",
			"\tcache_write p {\n\t\tkey_headers client_id\n\t}\n\trate_limit {\n\t\tzone z {\n\t\t\tkey {header.access_token}\n\t\t\tevents 1\n\t\t\twindow 1m\n\t\t}\n\t}\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, ok := validate(t, caddyfileIn(tt.globals, tt.site))
			switch {
			case tt.want == "" && !ok:
				t.Errorf("refused a header the server keeps:\n%s", tail(out, 3))
			case tt.want != "" && (ok || !strings.Contains(out, tt.want)):
				t.Errorf("validate passed=%v, want a failure naming %s:\n%s", ok, tt.want, tail(out, 3))
			}
		})
	}
}

// TestKeyHeaderWithUnderscoreKeys: once the server keeps client_id, two
// client_id values are two entries.
func TestKeyHeaderWithUnderscoreKeys(t *testing.T) {
	up := newUpstream(t, serial("Cache-Control", "max-age=60"))
	g := startGateway(t, "\tservers {\n\t\texpected_underscore_headers client_id\n\t}\n", `
	cache_read p
	cache_write p {
		key_headers client_id
	}
	reverse_proxy {upstream}
`, up.addr())
	a1 := g.get("/r", "client_id: a")
	b1 := g.get("/r", "client_id: b")
	a2 := g.get("/r", "client_id: a")
	if !a2.isHit() || a2.body != a1.body {
		t.Errorf("client a's second request: %q %s", a2.cacheStatus(), a2.body)
	}
	if b1.isHit() || b1.body == a1.body {
		t.Errorf("client b was served client a's entry: %q", b1.cacheStatus())
	}
	if n := up.count("/r"); n != 2 {
		t.Errorf("origin reached %d times, want 2", n)
	}
}
