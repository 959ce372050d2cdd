package httpcache

import (
	"net/http"
	"testing"
	"time"
)

// TestCookieRulePrivate: a cookie is private unless the key holds it, the
// operator ignores it, or the key holds every cookie or the caller's
// identity.
func TestCookieRulePrivate(t *testing.T) {
	plain := NewCookieRule(KeyOptions{})
	chosen := NewCookieRule(KeyOptions{Cookies: []string{"session"}, IgnoreCookies: []string{"_ga", "consent"}})
	for _, tt := range []struct {
		name   string
		rule   CookieRule
		cookie []string // Cookie lines
		want   bool
	}{
		{"no Cookie", plain, nil, false},
		{"empty Cookie", plain, []string{""}, false},
		{"any cookie, no options", plain, []string{"theme=dark"}, true},
		{"a keyed cookie", chosen, []string{"session=alice"}, false},
		{"ignored cookies", chosen, []string{"_ga=GA1.2; consent=yes"}, false},
		{"ignored and keyed, two lines", chosen, []string{"_ga=1", "session=bob"}, false},
		{"one more cookie", chosen, []string{"_ga=1; session=bob; theme=dark"}, true},
		{"names are case-sensitive", chosen, []string{"Session=alice"}, true},
		{"whitespace around names", chosen, []string{"  session=a ;  _ga=1  "}, false},
		{"a name without value", chosen, []string{"theme"}, true},
		{"empty members", chosen, []string{";;session=a;"}, false},
		{"Cookie header in the key", NewCookieRule(KeyOptions{Headers: []string{"cookie"}}), []string{"theme=dark"}, false},
		{"a cookie placeholder's cookie", NewCookieRule(KeyOptions{Placeholders: []string{"{http.request.cookie.sid}"}}), []string{"sid=a"}, false},
		{"a cookie placeholder keys that cookie only", NewCookieRule(KeyOptions{Placeholders: []string{"/{http.request.cookie.lang}"}}), []string{"lang=en; sid=alice"}, true},
		{"the user in the key keeps cookies private", NewCookieRule(KeyOptions{Placeholders: []string{"{http.auth.user.id}"}}), []string{"theme=dark"}, true},
		{"Authorization in the key keeps cookies private", NewCookieRule(KeyOptions{Headers: []string{"Authorization"}}), []string{"theme=dark"}, true},
		{"a value without a name", chosen, []string{"=secret; session=a"}, true},
		{"a name-less member alone", chosen, []string{"secret"}, true},
		{"another header in the key", NewCookieRule(KeyOptions{Headers: []string{"X-Client"}}), []string{"theme=dark"}, true},
	} {
		h := http.Header{}
		if tt.cookie != nil {
			h["Cookie"] = tt.cookie
		}
		if got := tt.rule.Private(h); got != tt.want {
			t.Errorf("%s: Private(%q) = %v, want %v", tt.name, tt.cookie, got, tt.want)
		}
	}
}

// TestKeyCookies: the values of key_cookies join the key, and nothing
// else of Cookie does.
func TestKeyCookies(t *testing.T) {
	spec := NewKeySpec(KeyOptions{Cookies: []string{"session"}, IgnoreCookies: []string{"_ga"}})
	k := func(cookie ...string) string {
		r := req("/x")
		r.Header["Cookie"] = cookie
		return key(spec, r, nil, nil)
	}
	alice, bob := k("session=alice"), k("session=bob")
	if alice == bob {
		t.Error("two sessions share a key")
	}
	if k("session=alice; _ga=1") != alice || k("_ga=2; session=alice") != alice || k("_ga=3", "session=alice") != alice {
		t.Error("an ignored cookie changed the key")
	}
	if k(`session="alice"`) != alice {
		t.Error("a quoted value keyed apart from the bare one (RFC 6265 allows the quotes)")
	}
	absent, empty := k(), k("session=")
	if absent == empty || absent == alice || empty == alice {
		t.Error("an absent session, an empty one and alice's do not all differ")
	}
	if k("session=a; session=b") == k("session=ab") || k("session=a; session=b") == k("session=b; session=a") {
		t.Error("repeated cookies are not keyed in order, one by one")
	}
	if NewKeySpec(KeyOptions{}).ID() == spec.ID() ||
		NewKeySpec(KeyOptions{Cookies: []string{"session"}}).ID() == spec.ID() {
		t.Error("specs with different cookie options share an ID")
	}
	if NewKeySpec(KeyOptions{IgnoreCookies: []string{}}).ID() != NewKeySpec(KeyOptions{}).ID() {
		t.Error("no cookie options changed the ID of a spec")
	}
}

// TestDecideCookies: a response to a request with private cookies is not
// stored, in either mode, unless it says public or s-maxage; one that says
// so is marked shared.
func TestDecideCookies(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	for _, p := range []Policy{{}, {TTL: time.Minute}} {
		for _, tt := range []struct {
			cc          string
			private     bool
			want        Outcome
			wantsShared bool
		}{
			{"max-age=60", true, ReasonCookie, false},
			{"max-age=60", false, Stored, false},
			{"public, max-age=60", true, Stored, true},
			{"s-maxage=60", true, Stored, true},
			{"max-age=60, must-revalidate", true, ReasonCookie, false},
		} {
			d := p.Decide(Exchange{RequestHeader: http.Header{}, PrivateCookies: tt.private, Status: 200,
				Header: http.Header{"Cache-Control": {tt.cc}}, RequestTime: now, ResponseTime: now})
			if d.Outcome != tt.want || (d.Outcome == Stored && d.Shared != tt.wantsShared) {
				t.Errorf("ttl %v, %q, private cookies %v: %v shared %v, want %v shared %v",
					p.TTL, tt.cc, tt.private, d.Outcome, d.Shared, tt.want, tt.wantsShared)
			}
		}
	}
}
