package httpcache

import (
	"net/http"
	"reflect"
	"testing"
)

// unset turns the delta-seconds directives a table leaves out (zero) into
// absent (-1); a case that means 0 sets its directives in full.
func unset(c CacheControl) CacheControl {
	for _, d := range []*int64{&c.MaxAge, &c.SMaxAge, &c.MaxStale, &c.MinFresh, &c.StaleWhileRevalidate, &c.StaleIfError} {
		if *d == 0 {
			*d = -1
		}
	}
	return c
}

// TestParseTargeted checks targeted fields as Structured Field
// Dictionaries, RFC 9213 section 2.1 and RFC 8941 section 3.2.
func TestParseTargeted(t *testing.T) {
	none := unset(CacheControl{})
	tests := []struct {
		name string
		v    string
		want CacheControl
		ok   bool
	}{
		{"max-age", "max-age=3600", unset(CacheControl{MaxAge: 3600}), true},
		{"max-age zero", "max-age=0", CacheControl{MaxAge: 0, SMaxAge: -1, MaxStale: -1, MinFresh: -1, StaleWhileRevalidate: -1, StaleIfError: -1}, true},
		{"no-store", "no-store", unset(CacheControl{NoStore: true}), true},
		{"no-store true", "no-store=?1", unset(CacheControl{NoStore: true}), true},
		{"no-store false", "no-store=?0", none, true},
		{"every delta", "s-maxage=1, max-age=2, stale-while-revalidate=3, stale-if-error=4",
			unset(CacheControl{SMaxAge: 1, MaxAge: 2, StaleWhileRevalidate: 3, StaleIfError: 4}), true},
		{"every flag", "no-store, no-cache, private, public, must-revalidate, proxy-revalidate, must-understand, immutable",
			unset(CacheControl{NoStore: true, NoCache: true, Private: true, Public: true, MustRevalidate: true,
				ProxyRevalidate: true, MustUnderstand: true, Immutable: true}), true},
		{"flag given an integer", "no-store=1", none, true},
		{"qualified private", `private="Set-Cookie, x-a"`, unset(CacheControl{PrivateFields: []string{"Set-Cookie", "X-A"}}), true},
		{"qualified no-cache", `no-cache="a"`, unset(CacheControl{NoCacheFields: []string{"A"}}), true},
		{"string max-age ignored", `max-age="3600"`, none, true},
		{"negative max-age ignored", "max-age=-1", none, true},
		{"decimal max-age ignored", "max-age=1.5", none, true},
		{"token max-age ignored", "max-age=abc", none, true},
		{"boolean max-age ignored", "max-age", none, true},
		{"invalid member", "max-age=10000, &&&&&", none, false},
		{"space before =", "max-age =100", none, false},
		{"space after =", "max-age= 100", none, false},
		{"uppercase key", "MaX-aGe=3600", none, false},
		{"empty", "", none, false},
		{"only spaces", "   ", none, false},
		{"trailing comma", "max-age=3600,", none, false},
		{"trailing comma and space", "max-age=3600, ", none, false},
		{"leading comma", ", max-age=3600", none, false},
		{"two commas", "max-age=3600,, no-store", none, false},
		{"no comma", "max-age=3600 no-store", none, false},
		{"parameter named like a directive", "max-age=3600; no-store", unset(CacheControl{MaxAge: 3600}), true},
		{"unknown key first", "foobar, max-age=3600", unset(CacheControl{MaxAge: 3600}), true},
		{"key with digits and symbols", "*a_1.b-c*=?1, max-age=5", unset(CacheControl{MaxAge: 5}), true},
		{"spaces around members", "  max-age=5 ,\tno-store  ", unset(CacheControl{MaxAge: 5, NoStore: true}), true},
		{"parameter", "max-age=60;foo=bar", unset(CacheControl{MaxAge: 60}), true},
		{"parameters on a flag", "no-store;a;b=?0;c=\"x\", max-age=5", unset(CacheControl{NoStore: true, MaxAge: 5}), true},
		{"space after semicolon", "max-age=60; foo=bar", unset(CacheControl{MaxAge: 60}), true},
		{"uppercase parameter", "max-age=60;Foo=bar", none, false},
		{"inner list", "a=(1 2), max-age=5", unset(CacheControl{MaxAge: 5}), true},
		{"inner list of every type", `a=(1 -2.5 "s" tok :aGk=: ?1);p=1, max-age=5`, unset(CacheControl{MaxAge: 5}), true},
		{"empty inner list", "a=(), max-age=5", unset(CacheControl{MaxAge: 5}), true},
		{"inner list max-age ignored", "max-age=(5)", none, true},
		{"unclosed inner list", "a=(1 2, max-age=5", none, false},
		{"inner list without spaces", "a=(1\"b\"), max-age=5", none, false},
		{"string with escapes", `a="x\"y\\z", max-age=5`, unset(CacheControl{MaxAge: 5}), true},
		{"string with a comma", `private="a, b", max-age=5`, unset(CacheControl{PrivateFields: []string{"A", "B"}, MaxAge: 5}), true},
		{"bad escape", `a="\q", max-age=5`, none, false},
		{"unterminated string", `a="x, max-age=5`, none, false},
		{"control in string", "a=\"x\ty\", max-age=5", none, false},
		{"byte sequence", "a=:aGVsbG8=:, max-age=5", unset(CacheControl{MaxAge: 5}), true},
		{"empty byte sequence", "a=::, max-age=5", unset(CacheControl{MaxAge: 5}), true},
		{"bad byte sequence", "a=:aGV*bG8=:, max-age=5", none, false},
		{"unterminated byte sequence", "a=:aGVsbG8=, max-age=5", none, false},
		{"bad boolean", "no-store=?2", none, false},
		{"token", "a=foo/bar:baz*, max-age=5", unset(CacheControl{MaxAge: 5}), true},
		{"15 digits", "max-age=999999999999999", unset(CacheControl{MaxAge: maxDeltaSeconds}), true},
		{"16 digits", "max-age=1000000000000000", none, false},
		{"decimal with 4 fraction digits", "a=1.2345, max-age=5", none, false},
		{"decimal ending in a dot", "a=1., max-age=5", none, false},
		{"decimal with 13 integer digits", "a=1234567890123.5, max-age=5", none, false},
		{"lone minus", "a=-, max-age=5", none, false},
		{"later key overrides", "max-age=1, max-age=2", unset(CacheControl{MaxAge: 2}), true},
		{"later invalid value overrides", "max-age=1, max-age=\"2\"", none, true},
		{"later false overrides", "no-store, no-store=?0", none, true},
		{"clamped", "max-age=99999999999", unset(CacheControl{MaxAge: maxDeltaSeconds}), true},
		{"Cache-Control only directives ignored", "max-stale=5, min-fresh=5, only-if-cached", none, true},
	}
	for _, tt := range tests {
		got, ok := ParseTargeted(tt.v)
		if ok != tt.ok || (ok && !reflect.DeepEqual(got, tt.want)) {
			t.Errorf("%s: %q gives %+v %v, want %+v %v", tt.name, tt.v, got, ok, tt.want, tt.ok)
		}
	}
}

// TestParseTargetedNumberStartsWithDigit checks that a number must start
// with a digit after its sign, RFC 8941 section 4.2.4 step 6.
func TestParseTargetedNumberStartsWithDigit(t *testing.T) {
	if cc, ok := ParseTargeted("no-store, a=-.5"); ok {
		t.Errorf("an invalid Decimal parsed: %+v", cc)
	}
}

// TestTargeted checks the choice among targeted fields, RFC 9213 section
// 2.2.
func TestTargeted(t *testing.T) {
	fields := []string{"Acme-Cache-Control", "Cdn-Cache-Control"}
	tests := []struct {
		name      string
		h         http.Header
		wantField string
		wantAge   int64
	}{
		{"none", header("Cache-Control", "max-age=1"), "", -1},
		{"second listed", header("CDN-Cache-Control", "max-age=2"), "Cdn-Cache-Control", 2},
		{"first listed wins", header("CDN-Cache-Control", "max-age=2", "Acme-Cache-Control", "max-age=1"), "Acme-Cache-Control", 1},
		{"invalid first skipped", header("CDN-Cache-Control", "max-age=2", "Acme-Cache-Control", "max-age=1, &&&"), "Cdn-Cache-Control", 2},
		{"empty first skipped", header("CDN-Cache-Control", "max-age=2", "Acme-Cache-Control", ""), "Cdn-Cache-Control", 2},
		{"every one invalid", header("CDN-Cache-Control", "MAX-AGE=2", "Acme-Cache-Control", "max-age =1"), "", -1},
		{"lines joined", header("CDN-Cache-Control", "max-age=2", "CDN-Cache-Control", "max-age=3"), "Cdn-Cache-Control", 3},
		{"lines joined into an invalid value", header("CDN-Cache-Control", "max-age=2", "CDN-Cache-Control", "&"), "", -1},
		{"line split inside a member", header("CDN-Cache-Control", `a="x`, "CDN-Cache-Control", `y", max-age=4`), "Cdn-Cache-Control", 4},
	}
	for _, tt := range tests {
		got, field, ok := Targeted(tt.h, fields)
		if field != tt.wantField || ok != (tt.wantField != "") || got.MaxAge != tt.wantAge {
			t.Errorf("%s: got %q %v max-age %d, want %q max-age %d", tt.name, field, ok, got.MaxAge, tt.wantField, tt.wantAge)
		}
	}
	if got, field, ok := Targeted(header("CDN-Cache-Control", "no-store"), nil); ok || field != "" || got.NoStore {
		t.Errorf("no fields listed: got %+v %q %v", got, field, ok)
	}
	got, _, _ := Targeted(header("CDN-Cache-Control", "no-store", "CDN-Cache-Control", "max-age=5;a=1"), fields)
	if !got.NoStore || got.MaxAge != 5 {
		t.Errorf("two lines: got %+v, want both members", got)
	}
}

// FuzzTargeted checks that ParseTargeted never panics and keeps its
// deltas within [-1, 2^31], RFC 9213 section 2.1 and RFC 9111 section 1.2.2.
func FuzzTargeted(f *testing.F) {
	for _, v := range []string{
		"max-age=3600", "no-store=?0", `max-age="3600"`, "max-age=10000, &&&&&", "foobar, max-age=3600",
		"max-age=60;foo=bar", "a=(1 2), max-age=5", `a="x\"y\\z"`, "a=:aGVsbG8=:", "max-age=99999999999",
		`private="Set-Cookie, X-A", no-cache="a"`, "a=-1.125", "max-age=1,",
	} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v string) {
		cc, ok := ParseTargeted(v)
		if !ok {
			return
		}
		for _, d := range []int64{cc.MaxAge, cc.SMaxAge, cc.MaxStale, cc.MinFresh, cc.StaleWhileRevalidate, cc.StaleIfError} {
			if d < -1 || d > maxDeltaSeconds {
				t.Fatalf("%q: delta %d out of range", v, d)
			}
		}
		for _, name := range append(cc.PrivateFields, cc.NoCacheFields...) {
			if name == "" {
				t.Fatalf("%q: an empty field name", v)
			}
		}
		if again, ok := ParseTargeted(" " + v + " "); !ok || !reflect.DeepEqual(again, cc) {
			t.Fatalf("%q: surrounding spaces change it to %+v %v", v, again, ok)
		}
	})
}

// TestCacheStatusID: Cache-Status names a cache by a Structured Field
// Token or String (RFC 9211 section 2, RFC 8941 sections 3.3.3 and 3.3.4).
func TestCacheStatusID(t *testing.T) {
	for name, want := range map[string]string{
		"products":     "products",
		"api-v2.cache": "api-v2.cache",
		"*edge:1":      "*edge:1",
		"1st":          `"1st"`,
		"_private":     `"_private"`,
		"api v2":       `"api v2"`,
		`say "hi" \`:   `"say \"hi\" \\"`,
	} {
		if got := CacheStatusID(name); got != want {
			t.Errorf("CacheStatusID(%q) = %s, want %s", name, got, want)
		}
	}
}
