package gateway

import (
	"errors"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dunglas/httpsfv"

	"github.com/caddy-gateway/gateway/internal/limiter"
)

// TestRateLimitFieldIsStructured parses the RateLimit field the handler
// writes with the Structured Field Values library.
func TestRateLimitFieldIsStructured(t *testing.T) {
	refs := []*zoneRef{{name: "per_client"}, {name: "api.v2-burst"}}
	for _, ref := range refs {
		ref.sfName, _ = httpsfv.Marshal(httpsfv.NewItem(ref.name))
	}
	out := []limiter.Decision{{Remaining: 42, Reset: 36*time.Second + time.Millisecond}, {Remaining: 0, Reset: 0}}
	field := rateLimitField(refs, out)
	list, err := httpsfv.UnmarshalList([]string{field})
	if err != nil {
		t.Fatalf("%q does not parse: %v", field, err)
	}
	want := []struct {
		name string
		r, t int64
	}{{"per_client", 42, 37}, {"api.v2-burst", 0, 0}}
	if len(list) != len(want) {
		t.Fatalf("%q has %d members", field, len(list))
	}
	for i, w := range want {
		item := list[i].(httpsfv.Item)
		r, _ := item.Params.Get("r")
		tt, _ := item.Params.Get("t")
		if item.Value != w.name || r != w.r || tt != w.t {
			t.Errorf("member %d: %v r=%v t=%v, want %s r=%d t=%d", i, item.Value, r, tt, w.name, w.r, w.t)
		}
	}
}

// TestPolicyWindowRoundsUp checks RateLimit-Policy's w: whole seconds,
// rounded up, so that a client pacing itself by it never outruns the
// limit.
func TestPolicyWindowRoundsUp(t *testing.T) {
	for window, want := range map[time.Duration]string{
		time.Hour:               `"z";q=5;w=3600`,
		1500 * time.Millisecond: `"z";q=5;w=2`,
		100 * time.Millisecond:  `"z";q=5;w=1`,
	} {
		if got := policyMember("z", limiter.Limit{Events: 5, Window: window}); got != want {
			t.Errorf("window %v: %s, want %s", window, got, want)
		}
	}
}

func TestSinglePlaceholder(t *testing.T) {
	tests := map[string]string{
		"{http.vars.client_ip}":      "http.vars.client_ip",
		"{http.request.header.X-Id}": "http.request.header.X-Id",
		"static":                     "",
		"{a}{b}":                     "",
		"{a}-x":                      "",
		"{a:default}":                "",
		"{}":                         "",
	}
	for in, want := range tests {
		if got := singlePlaceholder(in); got != want {
			t.Errorf("%q: got %q, want %q", in, got, want)
		}
	}
}

func TestMaskKey(t *testing.T) {
	ref := &zoneRef{cfg: &ZoneConfig{IPv4Prefix: 24, IPv6Prefix: 48}}
	tests := map[string]string{
		"10.1.2.3":        "10.1.2.0/24",
		"::ffff:10.1.2.3": "10.1.2.0/24",
		"2001:db8:1:2::1": "2001:db8:1::/48",
		"not-an-ip":       "not-an-ip",
		"":                "",
	}
	for in, want := range tests {
		if got := ref.maskKey(in); got != want {
			t.Errorf("%q: got %q, want %q", in, got, want)
		}
	}
}

// BenchmarkRateLimitAllow runs the allowed path of the handler, one zone,
// headers on, in front of a handler that does nothing. Each request gets a
// fresh replacer, as in Caddy, so what the handler puts in it counts.
func BenchmarkRateLimitAllow(b *testing.B) {
	// A config's context: the handler loads its cache_pool app.
	ctx, err := caddy.ProvisionContext(&caddy.Config{})
	if err != nil {
		b.Fatal(err)
	}
	h := &RateLimit{RateLimits: map[string]*ZoneConfig{
		"bench_allow": {Key: "client", MaxEvents: 1 << 30, Window: caddy.Duration(time.Hour)},
	}}
	if err := h.Provision(ctx); err != nil {
		b.Fatal(err)
	}
	defer h.Cleanup()
	next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		r := newCaddyRequest("http://api.example.com/")
		repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
		w := &discardWriter{h: make(http.Header, 4)}
		for pb.Next() {
			*repl = *caddy.NewReplacer()
			if err := h.ServeHTTP(w, r, next); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestRemainingPlaceholders answers each zone's remaining units, beyond
// the inline zones too, and nothing for other names.
func TestRemainingPlaceholders(t *testing.T) {
	var refs []*zoneRef
	var out []limiter.Decision
	for i := range maxZonesInline + 2 {
		name := string(rune('a' + i))
		refs = append(refs, &zoneRef{name: name, remKey: "http.rate_limit." + name + ".remaining"})
		out = append(out, limiter.Decision{Remaining: int64(10 * i)})
	}
	p := newRemainingPlaceholders(refs, out)
	for i, ref := range refs {
		if v, ok := p.replace(ref.remKey); !ok || v != int64(10*i) {
			t.Errorf("%s: %v %v, want %d", ref.remKey, v, ok, 10*i)
		}
	}
	for _, key := range []string{"", "http.rate_limit.zz.remaining", "http.rate_limit.exceeded.name"} {
		if v, ok := p.replace(key); ok {
			t.Errorf("%q answered %v", key, v)
		}
	}
}

// TestRestorerForgetsOtherRedisRefusals: a config that moved a zone to
// another Redis and failed puts the zone back on its Redis; refusals that
// the other Redis made meanwhile say nothing of this one and go too.
func TestRestorerForgetsOtherRedisRefusals(t *testing.T) {
	l := limiter.Limit{Algorithm: limiter.FixedWindow, Events: 1, Window: time.Hour}
	now := time.Now()
	z := newZoneEntry("z", l, 100, time.Minute, time.Now)
	defer z.Destruct()
	running, other := &redisClient{server: "redis://a:6379/0"}, &redisClient{server: "redis://b:6379/0"}
	z.redis.Store(running)
	refused := limiter.Decision{RetryAfter: time.Minute, Reset: time.Minute}
	z.refusals.Record(1, now, l, 1, refused, z.refusals.Generation())

	undo := z.restorer()
	z.redis.Store(other) // the failed config's
	z.refusals.Record(2, now, l, 1, refused, z.refusals.Generation())
	undo()
	if z.redis.Load() != running {
		t.Fatal("the zone's Redis was not put back")
	}
	if _, ok := z.refusals.Check(2, now, l, 1); ok {
		t.Error("a refusal the other Redis made survived the undo")
	}

	// An undo that keeps the zone's Redis keeps its refusals.
	undo = z.restorer()
	z.refusals.Record(3, now, l, 1, refused, z.refusals.Generation())
	undo()
	if _, ok := z.refusals.Check(3, now, l, 1); !ok {
		t.Error("an undo on the same Redis forgot its refusals")
	}
}

// TestValidateRefusesNonFiniteJitter: NaN compares false with every bound,
// and neither NaN nor an infinity can be marshalled to JSON, so a check
// written as "below 0 or above 1" let them through.
func TestValidateRefusesNonFiniteJitter(t *testing.T) {
	for _, jitter := range []float64{math.NaN(), math.Inf(1), math.Inf(-1), -0.1, 1.1} {
		h := &RateLimit{Jitter: jitter, RateLimits: map[string]*ZoneConfig{
			"z": {Key: "k", MaxEvents: 1, Window: caddy.Duration(time.Minute)},
		}}
		if err := h.Validate(); err == nil || !strings.Contains(err.Error(), "jitter must be a fraction between 0 and 1") {
			t.Errorf("jitter %v: %v", jitter, err)
		}
	}
}

func TestCheckTemplate(t *testing.T) {
	for tmpl, ok := range map[string]bool{
		"static":                        true,
		"{client_ip}":                   true,
		"{http.request.header.X-Cost}":  true,
		"{a}-{b}":                       true,
		"{a:default}":                   true,
		`\{literal\}`:                   true,
		`{a}\{`:                         true,
		`{a\}b}`:                        true, // the replacer skips an escaped '}'
		"stray}":                        true, // the replacer leaves it as it is
		"{http.request.header.X-Cost":   false,
		"{http.request.header.X":        false,
		"{a{b}":                         false,
		"{a}{b":                         false,
		"x{":                            false,
		`{a\}`:                          false,
		"{http.request.header.X-Cost }": true,
	} {
		if err := checkTemplate(tmpl); (err == nil) != ok {
			t.Errorf("%q: %v, want ok=%v", tmpl, err, ok)
		}
	}
}

// TestCostOf: a placeholder that expands to nothing costs the default, one
// that expands to a number costs it, 0 included, and anything else is the
// client's error, naming the zone.
func TestCostOf(t *testing.T) {
	ref := &zoneRef{name: "z", cfg: &ZoneConfig{Cost: "{x}"}, cost: 1}
	for v, want := range map[string]int64{"": 1, "0": 0, "5": 5, " 7 ": 7} {
		repl := caddy.NewReplacer()
		repl.Set("x", v)
		if got, err := ref.costOf(repl); err != nil || got != want {
			t.Errorf("%q: %d, %v; want %d", v, got, err, want)
		}
	}
	for _, v := range []string{"abc", "-1", "1.5", "9223372036854775808"} {
		repl := caddy.NewReplacer()
		repl.Set("x", v)
		if _, err := ref.costOf(repl); err == nil || !strings.Contains(err.Error(), "zone z") {
			t.Errorf("%q: %v, want an error naming the zone", v, err)
		}
	}
}

// TestBadCostIsBadRequest: a cost the client got wrong is a 400, which
// Caddy logs at debug level, not a 500 logged as an error; a dry-run zone,
// which never refuses, counts it as the default.
func TestBadCostIsBadRequest(t *testing.T) {
	ctx, err := caddy.ProvisionContext(&caddy.Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, dryRun := range []bool{false, true} {
		h := &RateLimit{RateLimits: map[string]*ZoneConfig{
			"bad_cost": {Key: "k", MaxEvents: 10, Window: caddy.Duration(time.Hour), Cost: "{cost}", DryRun: dryRun},
		}}
		if err := h.Provision(ctx); err != nil {
			t.Fatal(err)
		}
		var calls int
		next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { calls++; return nil })
		r := newCaddyRequest("http://api.example.com/")
		r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer).Set("cost", "lots")
		err := h.ServeHTTP(&discardWriter{h: make(http.Header)}, r, next)
		h.Cleanup()
		var herr caddyhttp.HandlerError
		switch {
		case dryRun && (err != nil || calls != 1):
			t.Errorf("dry run: %v, next called %d times", err, calls)
		case !dryRun && (!errors.As(err, &herr) || herr.StatusCode != http.StatusBadRequest || calls != 0):
			t.Errorf("got %v, next called %d times; want a 400", err, calls)
		}
	}
}
