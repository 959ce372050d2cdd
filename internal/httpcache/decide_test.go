package httpcache

import (
	"net/http"
	"reflect"
	"testing"
	"time"
)

// TestParseCacheControlDirectives checks the response and request
// directives, RFC 9111 section 5.2.
func TestParseCacheControlDirectives(t *testing.T) {
	zeroAge := unset(CacheControl{})
	zeroAge.MaxAge = 0
	tests := []struct {
		name  string
		lines []string
		want  CacheControl
	}{
		{"qualified private", []string{`private="Set-Cookie, X-A"`}, unset(CacheControl{PrivateFields: []string{"Set-Cookie", "X-A"}})},
		{"qualified private canonical", []string{`private="set-cookie,x-a"`}, unset(CacheControl{PrivateFields: []string{"Set-Cookie", "X-A"}})},
		{"qualified private token", []string{`private=Set-Cookie`}, unset(CacheControl{PrivateFields: []string{"Set-Cookie"}})},
		{"qualified private naming no field", []string{`private=""`}, unset(CacheControl{Private: true})},
		{"qualified private of empty members", []string{`private=", ,"`}, unset(CacheControl{Private: true})},
		{"qualified no-cache naming no field", []string{`no-cache=","`}, unset(CacheControl{NoCache: true})},
		{"qualified no-cache", []string{`no-cache="a"`}, unset(CacheControl{NoCacheFields: []string{"A"}})},
		// Malformed directives take their most restrictive reading (RFC
		// 9111 section 4.2.1's rule for conflicts, applied to damage): a
		// qualifier without a value, an unterminated quoted string, or a
		// stray quote elsewhere on the line that would hide what follows.
		{"private without a value", []string{`private=, max-age=60`}, unset(CacheControl{Private: true, MaxAge: 60})},
		{"no-cache without a value", []string{`no-cache=`}, unset(CacheControl{NoCache: true})},
		{"private unterminated", []string{`max-age=60, private="Set-Cookie`}, unset(CacheControl{Private: true, MaxAge: 60})},
		{"stray quote hides private", []string{`max-age=60, ext=a"b, private`}, unset(CacheControl{Private: true, MaxAge: 60})},
		{"stray quote hides no-store", []string{`ext="a, no-store`}, unset(CacheControl{NoStore: true})},
		{"stray quote, qualified no-cache", []string{`x="y, no-cache="a"`}, unset(CacheControl{NoCache: true})},
		{"bare private", []string{"private"}, unset(CacheControl{Private: true})},
		{"bare no-cache", []string{"no-cache"}, unset(CacheControl{NoCache: true})},
		{"bare and qualified", []string{`private, private="X", no-cache="Y", no-cache`},
			unset(CacheControl{Private: true, NoCache: true, PrivateFields: []string{"X"}, NoCacheFields: []string{"Y"}})},
		{"newer directives", []string{"must-understand, immutable, stale-while-revalidate=30, stale-if-error=60"},
			unset(CacheControl{MustUnderstand: true, Immutable: true, StaleWhileRevalidate: 30, StaleIfError: 60})},
		{"revalidation", []string{"must-revalidate, proxy-revalidate, public"},
			unset(CacheControl{MustRevalidate: true, ProxyRevalidate: true, Public: true})},
		{"max-age twice, different", []string{"max-age=60, max-age=120"}, zeroAge},
		{"max-age on two lines, different", []string{"max-age=60", "max-age=120"}, zeroAge},
		{"max-age twice, same", []string{"max-age=60, max-age=60"}, unset(CacheControl{MaxAge: 60})},
		{"max-age thrice, last different", []string{"max-age=60, max-age=60, max-age=61"}, zeroAge},
		{"max-age once quoted, once not", []string{`max-age=60, max-age="60"`}, unset(CacheControl{MaxAge: 60})},
		{"s-maxage twice, same", []string{"s-maxage=10", "s-maxage=10"}, unset(CacheControl{SMaxAge: 10})},
		{"stale-while-revalidate twice keeps the first", []string{"stale-while-revalidate=30, stale-while-revalidate=60"},
			unset(CacheControl{StaleWhileRevalidate: 30})},
		{"single quotes", []string{"max-age='3600'"}, zeroAge},
		{"max-age inside another directive's string", []string{`foo="max-age=3600"`}, unset(CacheControl{})},
		{"comma inside another directive's string", []string{`foo="a, max-age=3600", no-store`}, unset(CacheControl{NoStore: true})},
		{"case-insensitive names", []string{"MAX-AGE=60, Must-Revalidate, S-MaxAge=5, NO-CACHE, Stale-If-Error=7"},
			unset(CacheControl{MaxAge: 60, MustRevalidate: true, SMaxAge: 5, NoCache: true, StaleIfError: 7})},
		{"request directives", []string{"min-fresh=5, max-stale=10, only-if-cached"},
			unset(CacheControl{MinFresh: 5, MaxStale: 10, OnlyIfCached: true})},
	}
	for _, tt := range tests {
		if got := ParseCacheControl(http.Header{"Cache-Control": tt.lines}); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: %q gives %+v, want %+v", tt.name, tt.lines, got, tt.want)
		}
	}
}

// FuzzCacheControlFields checks every delta-seconds directive and field
// name that Cache-Control lines can give, RFC 9111 sections 1.2.2 and 5.2.
func FuzzCacheControlFields(f *testing.F) {
	f.Add(`private="Set-Cookie, X-A", no-cache="a"`, "max-age=60")
	f.Add(`no-cache=", ,", private=`, `stale-while-revalidate=30, stale-if-error=99999999999`)
	f.Add(`foo="max-age=3600`, `max-stale, min-fresh=-1`)
	f.Add(`private="\"", max-age=1`, `s-maxage=1, s-maxage=2`)
	f.Fuzz(func(t *testing.T, first, second string) {
		cc := ParseCacheControl(http.Header{"Cache-Control": {first, second}})
		for _, d := range []int64{cc.MaxAge, cc.SMaxAge, cc.MaxStale, cc.MinFresh, cc.StaleWhileRevalidate, cc.StaleIfError} {
			if d < -1 || d > maxDeltaSeconds {
				t.Fatalf("%q, %q: delta %d out of range", first, second, d)
			}
		}
		for _, name := range append(cc.PrivateFields, cc.NoCacheFields...) {
			if name == "" {
				t.Fatalf("%q, %q: an empty field name", first, second)
			}
		}
	})
}

// TestPolicyDecide checks the storage decision in origin mode, RFC 9111
// sections 3, 4.2 and 5.2.2, RFC 9213 and RFC 5861.
func TestPolicyDecide(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	date := now.Format(http.TimeFormat)
	origin := Policy{}
	cdn := Policy{Targeted: DefaultTargetedFields}
	heuristic := Policy{Heuristic: time.Hour}
	windows := Policy{StaleWhileRevalidate: 10 * time.Second, StaleIfError: 20 * time.Second}
	const understood = "max-age=3600, no-store, must-understand"
	// A rejected decision is checked for its outcome alone.
	rejected := func(o Outcome) Decision { return Decision{Outcome: o} }
	tests := []struct {
		name   string
		p      Policy
		status int
		h      http.Header
		want   Decision
	}{
		{"299", origin, 299, header("Cache-Control", "max-age=60"), Decision{TTL: time.Minute}},
		{"303", origin, 303, header("Cache-Control", "max-age=60"), Decision{TTL: time.Minute}},
		{"400", origin, 400, header("Cache-Control", "max-age=60"), Decision{TTL: time.Minute}},
		{"500", origin, 500, header("Cache-Control", "max-age=60"), Decision{TTL: time.Minute}},
		{"503", origin, 503, header("Cache-Control", "max-age=60"), Decision{TTL: time.Minute}},
		{"206 never", origin, 206, header("Cache-Control", "max-age=60"), rejected(ReasonStatus)},
		{"304 never", origin, 304, header("Cache-Control", "max-age=60"), rejected(ReasonStatus)},
		{"1xx never", origin, 103, header("Cache-Control", "max-age=60"), rejected(ReasonStatus)},
		{"must-understand, unknown status", origin, 599, header("Cache-Control", understood), rejected(ReasonStatus)},
		{"must-understand, understood status", origin, 200, header("Cache-Control", understood), Decision{TTL: time.Hour}},
		{"private Set-Cookie omitted", origin, 200, header("Cache-Control", `private="Set-Cookie", max-age=60`, "Set-Cookie", "a=b"),
			Decision{TTL: time.Minute, Omit: []string{"Set-Cookie"}}},
		{"no-cache fields omitted", origin, 200, header("Cache-Control", `no-cache="X-A", private="X-B", max-age=60`),
			Decision{TTL: time.Minute, Omit: []string{"X-B", "X-A"}}},
		{"bare private", origin, 200, header("Cache-Control", "private, max-age=60"), rejected(ReasonPrivate)},
		{"CDN max-age over no-store", cdn, 200, header("CDN-Cache-Control", "max-age=600", "Cache-Control", "no-store"),
			Decision{TTL: 10 * time.Minute}},
		{"CDN no-store over max-age", cdn, 200, header("CDN-Cache-Control", "no-store", "Cache-Control", "max-age=600"),
			rejected(ReasonNoStore)},
		{"CDN max-age=0 over max-age", cdn, 200, header("CDN-Cache-Control", "max-age=0", "Cache-Control", "max-age=600"),
			rejected(ReasonNoFreshness)},
		{"invalid CDN field", cdn, 200, header("CDN-Cache-Control", "max-age=600, &&&&&", "Cache-Control", "max-age=60"),
			Decision{TTL: time.Minute}},
		{"invalid CDN field, no-store", cdn, 200, header("CDN-Cache-Control", "MAX-AGE=600", "Cache-Control", "no-store"),
			rejected(ReasonNoStore)},
		{"CDN field makes Expires ignored", cdn, 200,
			header("CDN-Cache-Control", "must-revalidate", "Date", date, "Expires", now.Add(time.Hour).Format(http.TimeFormat)),
			rejected(ReasonNoFreshness)},
		{"CDN max-age over Expires", cdn, 200,
			header("CDN-Cache-Control", "max-age=60", "Date", date, "Expires", now.Add(time.Hour).Format(http.TimeFormat)),
			Decision{TTL: time.Minute}},
		{"Expires without targeted fields", origin, 200,
			header("CDN-Cache-Control", "must-revalidate", "Date", date, "Expires", now.Add(time.Hour).Format(http.TimeFormat)),
			Decision{TTL: time.Hour}},
		{"CDN field ignored without targeted fields", origin, 200, header("CDN-Cache-Control", "max-age=600", "Cache-Control", "no-store"),
			rejected(ReasonNoStore)},
		{"heuristic capped", heuristic, 200,
			header("Date", date, "Last-Modified", now.Add(-10*24*time.Hour).Format(http.TimeFormat)), Decision{TTL: time.Hour}},
		{"heuristic tenth", heuristic, 200,
			header("Date", date, "Last-Modified", now.Add(-2*time.Hour).Format(http.TimeFormat)), Decision{TTL: 12 * time.Minute}},
		{"heuristic, status 403", heuristic, 403,
			header("Date", date, "Last-Modified", now.Add(-10*24*time.Hour).Format(http.TimeFormat)), rejected(ReasonNoFreshness)},
		{"no heuristic", origin, 200,
			header("Date", date, "Last-Modified", now.Add(-10*24*time.Hour).Format(http.TimeFormat)), rejected(ReasonNoFreshness)},
		{"response windows", origin, 200, header("Cache-Control", "max-age=60, stale-while-revalidate=30, stale-if-error=300"),
			Decision{TTL: time.Minute, StaleWhileRevalidate: 30 * time.Second, StaleIfError: 300 * time.Second}},
		{"configured window", Policy{StaleWhileRevalidate: 10 * time.Second}, 200, header("Cache-Control", "max-age=60"),
			Decision{TTL: time.Minute, StaleWhileRevalidate: 10 * time.Second}},
		{"response window over configured", windows, 200, header("Cache-Control", "max-age=60, stale-while-revalidate=30, stale-if-error=0"),
			Decision{TTL: time.Minute, StaleWhileRevalidate: 30 * time.Second}},
		{"must-revalidate", windows, 200, header("Cache-Control", "max-age=60, must-revalidate, stale-while-revalidate=30, stale-if-error=300"),
			Decision{TTL: time.Minute, NoStale: true}},
		{"proxy-revalidate", windows, 200, header("Cache-Control", "max-age=60, proxy-revalidate, stale-while-revalidate=30, stale-if-error=300"),
			Decision{TTL: time.Minute, NoStale: true}},
		{"s-maxage", windows, 200, header("Cache-Control", "s-maxage=60, stale-while-revalidate=30, stale-if-error=300"),
			Decision{TTL: time.Minute, NoStale: true, Shared: true}},
		{"no-cache with ETag", windows, 200, header("Cache-Control", "no-cache, stale-while-revalidate=30", "Etag", `"a"`),
			Decision{NoCache: true}},
		{"no-cache and max-age with ETag", origin, 200, header("Cache-Control", "no-cache, max-age=60", "Etag", `"a"`),
			Decision{NoCache: true}},
		{"immutable", origin, 200, header("Cache-Control", "max-age=60, immutable"), Decision{TTL: time.Minute, Immutable: true}},
		{"stale on arrival", origin, 200, header("Cache-Control", "max-age=3600", "Age", "7200"), rejected(ReasonNoFreshness)},
		{"stale on arrival with ETag", origin, 200, header("Cache-Control", "max-age=3600", "Age", "7200", "Etag", `"a"`),
			Decision{TTL: -time.Hour, InitialAge: 2 * time.Hour}},
		{"operator TTL takes the operator's windows", Policy{TTL: time.Minute, StaleWhileRevalidate: 10 * time.Second, StaleIfError: 20 * time.Second}, 200,
			header("Cache-Control", "max-age=5, must-revalidate, stale-while-revalidate=30"),
			Decision{TTL: time.Minute, StaleWhileRevalidate: 10 * time.Second, StaleIfError: 20 * time.Second}},
		{"stale on arrival within stale-if-error", origin, 200, header("Cache-Control", "max-age=3600, stale-if-error=7200", "Age", "7200"),
			Decision{TTL: -time.Hour, InitialAge: 2 * time.Hour, StaleIfError: 2 * time.Hour}},
	}
	for _, tt := range tests {
		got := tt.p.Decide(Exchange{RequestHeader: header(), Status: tt.status, Header: tt.h, RequestTime: now, ResponseTime: now})
		if tt.want.Outcome != Stored {
			if got.Outcome != tt.want.Outcome {
				t.Errorf("%s: got %v, want %v", tt.name, got.Outcome, tt.want.Outcome)
			}
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: got %+v, want %+v", tt.name, got, tt.want)
		}
	}
}

func TestUpdatedBy(t *testing.T) {
	v := Validators{ETag: `W/"v1"`, LastModified: "Mon, 02 Jan 2006 15:04:05 GMT"}
	for _, tt := range []struct {
		h    http.Header
		want bool
	}{
		{header(), true},
		{header("Etag", `"v1"`), true},
		{header("Etag", `W/"v1"`), true},
		{header("Etag", `"v2"`), false},
		{header("Etag", `"v1"`, "Last-Modified", "Tue, 03 Jan 2006 15:04:05 GMT"), true}, // the tag decides
		{header("Last-Modified", "Mon, 02 Jan 2006 15:04:05 GMT"), true},
		{header("Last-Modified", "Tue, 03 Jan 2006 15:04:05 GMT"), false},
	} {
		if got := v.UpdatedBy(tt.h); got != tt.want {
			t.Errorf("%v: %v, want %v", tt.h, got, tt.want)
		}
	}
	if (Validators{LastModified: "x"}).UpdatedBy(header("Etag", `"v1"`)) {
		t.Error("a tag where none was stored updates the entry")
	}
}
