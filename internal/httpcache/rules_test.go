package httpcache

import (
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func header(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

// cc fills in the windows a table leaves out: absent.
func cc(c CacheControl) CacheControl {
	c.StaleWhileRevalidate, c.StaleIfError = -1, -1
	return c
}

func TestParseCacheControl(t *testing.T) {
	tests := []struct {
		lines []string
		want  CacheControl
	}{
		{nil, cc(CacheControl{MaxAge: -1, SMaxAge: -1, MaxStale: -1, MinFresh: -1})},
		{[]string{"max-age=60, s-maxage=30"}, cc(CacheControl{MaxAge: 60, SMaxAge: 30, MaxStale: -1, MinFresh: -1})},
		{[]string{`Private="Set-Cookie, X", NO-STORE`}, cc(CacheControl{PrivateFields: []string{"Set-Cookie", "X"}, NoStore: true, MaxAge: -1, SMaxAge: -1, MaxStale: -1, MinFresh: -1})},
		{[]string{"public", "max-age=\"10\""}, cc(CacheControl{Public: true, MaxAge: 10, SMaxAge: -1, MaxStale: -1, MinFresh: -1})},
		{[]string{"max-age=abc"}, cc(CacheControl{MaxAge: 0, SMaxAge: -1, MaxStale: -1, MinFresh: -1})},
		{[]string{"max-age=5, max-age=100"}, cc(CacheControl{MaxAge: 0, SMaxAge: -1, MaxStale: -1, MinFresh: -1})},
		{[]string{"max-age=99999999999999999999"}, cc(CacheControl{MaxAge: maxDeltaSeconds, SMaxAge: -1, MaxStale: -1, MinFresh: -1})},
		{[]string{"only-if-cached, max-stale, no-cache, must-revalidate"}, cc(CacheControl{OnlyIfCached: true, NoCache: true, MustRevalidate: true, MaxAge: -1, SMaxAge: -1, MaxStale: maxDeltaSeconds, MinFresh: -1})},
		{[]string{" , ,max-age=-1"}, cc(CacheControl{MaxAge: 0, SMaxAge: -1, MaxStale: -1, MinFresh: -1})},
	}
	for _, tt := range tests {
		if got := ParseCacheControl(http.Header{"Cache-Control": tt.lines}); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%q: got %+v, want %+v", tt.lines, got, tt.want)
		}
	}
}

func FuzzCacheControl(f *testing.F) {
	f.Add(`max-age=60, private="a,b", s-maxage=1`)
	f.Add(`"unterminated, max-age=1`)
	f.Add(`\`)
	f.Fuzz(func(t *testing.T, line string) {
		cc := ParseCacheControl(http.Header{"Cache-Control": {line}})
		for _, v := range []int64{cc.MaxAge, cc.SMaxAge, cc.MaxStale, cc.MinFresh} {
			if v < -1 || v > maxDeltaSeconds {
				t.Fatalf("%q: delta %d out of range", line, v)
			}
		}
	})
}

func TestFreshnessLifetime(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	date := now.Format(http.TimeFormat)
	tests := []struct {
		name string
		h    http.Header
		want time.Duration
		ok   bool
	}{
		{"none", header(), 0, false},
		{"s-maxage wins", header("Cache-Control", "max-age=10, s-maxage=20"), 20 * time.Second, true},
		{"max-age over Expires", header("Cache-Control", "max-age=10", "Expires", now.Add(time.Hour).Format(http.TimeFormat)), 10 * time.Second, true},
		{"Expires minus Date", header("Date", date, "Expires", now.Add(90*time.Second).Format(http.TimeFormat)), 90 * time.Second, true},
		{"Expires in the past", header("Date", date, "Expires", now.Add(-time.Hour).Format(http.TimeFormat)), 0, true},
		{"invalid Expires", header("Expires", "0"), 0, true},
		{"two Expires", header("Expires", date, "Expires", date), 0, true},
	}
	for _, tt := range tests {
		got, ok := FreshnessLifetime(tt.h, ParseCacheControl(tt.h), now)
		if got != tt.want || ok != tt.ok {
			t.Errorf("%s: got %v %v, want %v %v", tt.name, got, ok, tt.want, tt.ok)
		}
	}
}

func TestInitialAge(t *testing.T) {
	sent := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	received := sent.Add(2 * time.Second)
	tests := []struct {
		name string
		h    http.Header
		want time.Duration
	}{
		{"fresh from origin", header("Date", received.Format(http.TimeFormat)), 2 * time.Second},
		{"Age from upstream cache", header("Date", received.Format(http.TimeFormat), "Age", "30"), 32 * time.Second},
		{"old Date", header("Date", sent.Add(-time.Minute).Format(http.TimeFormat)), 62 * time.Second},
		{"Date in the future", header("Date", received.Add(time.Hour).Format(http.TimeFormat)), 2 * time.Second},
	}
	for _, tt := range tests {
		if got := InitialAge(tt.h, sent, received); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestDecide(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	ttl := Policy{TTL: time.Minute}
	origin := Policy{}
	capped := Policy{MaxTTL: 10 * time.Second}
	identity := Policy{TTL: time.Minute, IdentityInKey: true}
	auth := header("Authorization", "Bearer x")
	tests := []struct {
		name    string
		p       Policy
		reqH    http.Header
		status  int
		h       http.Header
		wantTTL time.Duration
		outcome Outcome
	}{
		{"operator ttl beats max-age", ttl, header(), 200, header("Cache-Control", "max-age=5"), time.Minute, Stored},
		{"operator ttl without freshness", ttl, header(), 200, header(), time.Minute, Stored},
		{"status not listed", ttl, header(), 500, header(), 0, ReasonStatus},
		{"206 never by default", ttl, header(), 206, header(), 0, ReasonStatus},
		{"configured status", Policy{TTL: time.Minute, Statuses: []int{404}}, header(), 404, header(), time.Minute, Stored},
		{"no-store response", ttl, header(), 200, header("Cache-Control", "no-store"), 0, ReasonNoStore},
		{"no-store request", ttl, header("Cache-Control", "no-store"), 200, header(), 0, ReasonNoStore},
		{"private", ttl, header(), 200, header("Cache-Control", "private, max-age=60"), 0, ReasonPrivate},
		{"set-cookie", ttl, header(), 200, header("Set-Cookie", "a=b"), 0, ReasonSetCookie},
		{"vary star", ttl, header(), 200, header("Vary", "Accept, *"), 0, ReasonVaryStar},
		{"authorization", ttl, auth, 200, header(), 0, ReasonAuthorization},
		{"authorization public", ttl, auth, 200, header("Cache-Control", "public"), time.Minute, Stored},
		{"authorization s-maxage", ttl, auth, 200, header("Cache-Control", "s-maxage=5"), time.Minute, Stored},
		// The validation must-revalidate forces once stale is what lets it
		// store the response; an operator's ttl forces none.
		{"authorization must-revalidate under ttl", ttl, auth, 200, header("Cache-Control", "no-cache, must-revalidate"), 0, ReasonAuthorization},
		{"authorization must-revalidate", origin, auth, 200, header("Cache-Control", "must-revalidate, max-age=60"), time.Minute, Stored},
		{"authorization identity in key", identity, auth, 200, header(), time.Minute, Stored},
		{"origin max-age", origin, header(), 200, header("Cache-Control", "max-age=60"), time.Minute, Stored},
		{"origin age subtracted", origin, header(), 200, header("Cache-Control", "max-age=60", "Age", "20"), 40 * time.Second, Stored},
		{"origin no freshness", origin, header(), 200, header(), 0, ReasonNoFreshness},
		{"origin stale on arrival", origin, header(), 200, header("Cache-Control", "max-age=10", "Age", "10"), 0, ReasonNoFreshness},
		{"origin no-cache without validator", origin, header(), 200, header("Cache-Control", "no-cache, max-age=60"), 0, ReasonNoFreshness},
		{"origin no-cache with validator", origin, header(), 200, header("Cache-Control", "no-cache, max-age=60", "Etag", `"a"`), 0, Stored},
		{"origin stale with validator", origin, header(), 200, header("Cache-Control", "max-age=0", "Etag", `"a"`), 0, Stored},
		{"origin 404 with freshness", origin, header(), 404, header("Cache-Control", "max-age=60"), time.Minute, Stored},
		{"origin 500 with freshness", origin, header(), 500, header("Cache-Control", "max-age=60"), time.Minute, Stored},
		{"origin 206", origin, header(), 206, header("Cache-Control", "max-age=60"), 0, ReasonStatus},
		{"origin capped", capped, header(), 200, header("Cache-Control", "max-age=600"), 10 * time.Second, Stored},
	}
	for _, tt := range tests {
		d := tt.p.Decide(Exchange{RequestHeader: tt.reqH, Status: tt.status, Header: tt.h, RequestTime: now, ResponseTime: now})
		if got := d.TTL; (d.Outcome == Stored && got != tt.wantTTL) || d.Outcome != tt.outcome {
			t.Errorf("%s: got %v %v, want %v %v", tt.name, got, d.Outcome, tt.wantTTL, tt.outcome)
		}
	}
	// The authenticated user in the key, as the caller found it for this
	// request, stores an authorized response.
	if d := ttl.Decide(Exchange{RequestHeader: auth, UserInKey: true, Status: 200, Header: header(), RequestTime: now, ResponseTime: now}); d.Outcome != Stored {
		t.Errorf("authorization with the user in the key: %v, want STORED", d.Outcome)
	}
}

func TestUserPlaceholders(t *testing.T) {
	// Caddy's replacer knows no {HTTP.AUTH.USER.*} nor {HTTP.REQUEST.COOKIE.*}:
	// they add nothing to the key.
	o := KeyOptions{Placeholders: []string{"{http.auth.user.id}/{http.request.cookie.s}", "t={http.auth.user.tenant}",
		"{HTTP.AUTH.USER.id}", "{HTTP.REQUEST.COOKIE.t}", "{HTTP.REQUEST.HEADER.AUTHORIZATION}"}}
	if got, want := o.UserPlaceholders(), []string{"http.auth.user.id", "http.auth.user.tenant"}; !slices.Equal(got, want) {
		t.Errorf("UserPlaceholders: %q, want %q", got, want)
	}
	if o.IdentityInKey() {
		t.Error("user placeholders count as the Authorization in the key")
	}
	if got := o.keyedCookies(); !slices.Equal(got, []string{"s"}) {
		t.Errorf("keyedCookies: %q", got)
	}
	for _, o := range []KeyOptions{{Headers: []string{"authorization"}}, {Placeholders: []string{"{http.request.header.Authorization}"}}} {
		if !o.IdentityInKey() {
			t.Errorf("%+v: the Authorization is in the key", o)
		}
	}
}

func TestOutcomeNames(t *testing.T) {
	seen := map[string]bool{}
	for o := range Outcome(NumOutcomes) {
		name := o.String()
		if name == "" || seen[name] || strings.HasPrefix(name, "OUTCOME-") {
			t.Errorf("outcome %d is named %q", o, name)
		}
		seen[name] = true
	}
	if got := Outcome(NumOutcomes).String(); got != "OUTCOME-13" {
		t.Errorf("an unknown outcome is named %q", got)
	}
}

func TestVaryNames(t *testing.T) {
	got := VaryNames(header("Vary", "accept-encoding, Accept", "Vary", "ACCEPT"))
	want := []string{"Accept", "Accept-Encoding"}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("got %q, want %q", got, want)
	}
	if VaryNames(header()) != nil {
		t.Error("no Vary gives names")
	}
}

func TestNotModified(t *testing.T) {
	lm := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	stored := header("Etag", `"v1"`, "Last-Modified", lm.Format(http.TimeFormat))
	tests := []struct {
		name string
		req  http.Header
		want bool
	}{
		{"no precondition", header(), false},
		{"matching etag", header("If-None-Match", `"v1"`), true},
		{"weak match", header("If-None-Match", `W/"v1"`), true},
		{"list with match", header("If-None-Match", `"a", "v1"`), true},
		{"star", header("If-None-Match", "*"), true},
		{"other etag", header("If-None-Match", `"v2"`), false},
		{"etag decides over date", header("If-None-Match", `"v2"`, "If-Modified-Since", lm.Add(time.Hour).Format(http.TimeFormat)), false},
		{"not modified since", header("If-Modified-Since", lm.Format(http.TimeFormat)), true},
		{"modified since", header("If-Modified-Since", lm.Add(-time.Hour).Format(http.TimeFormat)), false},
		{"invalid date", header("If-Modified-Since", "yesterday"), false},
	}
	for _, tt := range tests {
		if got := NotModified(tt.req, ValidatorsOf(stored), lm); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
	if NotModified(header("If-None-Match", `"v1"`), Validators{}, lm) {
		t.Error("a response without ETag matched an entity-tag")
	}
}

// TestParseDateRemembersOnlyTheSameValue alternates Date values: the one
// remembered must never answer for another.
func TestParseDateRemembersOnlyTheSameValue(t *testing.T) {
	a := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	b := a.Add(time.Second)
	for i, want := range []time.Time{a, a, b, a, b, b} {
		got, ok := parseDate(want.Format(http.TimeFormat), a)
		if !ok || !got.Equal(want) {
			t.Fatalf("step %d: %v %v, want %v", i, got, ok, want)
		}
	}
	if _, ok := parseDate("yesterday", a); ok {
		t.Error("an invalid date parsed")
	}
}
