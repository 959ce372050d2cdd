package gateway

import (
	"net/http"
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
