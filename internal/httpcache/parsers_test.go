package httpcache

import (
	"net/http"
	"testing"
	"time"
)

// TestParseHTTPDateForms checks RFC 9110 section 5.6.7: the three forms,
// and nothing looser.
func TestParseHTTPDateForms(t *testing.T) {
	now := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	want := time.Date(1994, 11, 6, 8, 49, 37, 0, time.UTC)
	for _, v := range []string{"Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994"} {
		if got, ok := ParseHTTPDate(v, now); !ok || !got.Equal(want) {
			t.Errorf("%q: %v %v, want %v", v, got, ok, want)
		}
	}
	if got, ok := ParseHTTPDate("Thursday, 18-Aug-50 02:01:18 GMT", now); !ok || got.Year() != 2050 {
		t.Errorf("a two-digit year within 50 years: %v %v", got, ok)
	}
	if got, ok := ParseHTTPDate("Thursday, 18-Aug-77 02:01:18 GMT", now); !ok || got.Year() != 1977 {
		t.Errorf("a two-digit year more than 50 years ahead: %v %v", got, ok)
	}
	for _, v := range []string{"", "0", "Thu, 18 Aug 2050 02:01:18 UTC", "Thu, 18 Aug 2050 2:01:18 GMT",
		"Thu,  18 Aug 2050 02:01:18 GMT", "Thu 18 Aug 2050 02:01:18 GMT", "Thu, 18 Aug 50 02:01:18 GMT",
		"Thu, 18-Aug-2050 02:01:18 GMT", "thu, 18 aug 2050 02:01:18 GMT", "Thu, 30 Feb 2050 02:01:18 GMT",
		"Thu, 18 Aug 2050 24:01:18 GMT", "Thu, 18 Aug 2050 02:60:18 GMT"} {
		if _, ok := ParseHTTPDate(v, now); ok {
			t.Errorf("%q parsed", v)
		}
	}
}

// TestParseAgeFirstMember checks RFC 9111 section 5.1.
func TestParseAgeFirstMember(t *testing.T) {
	for v, want := range map[string]time.Duration{"7200, 0": 7200 * time.Second, "0, 7200": 0, "abc": 0, "-7200": 0,
		"7200.0": 0, "7200;foo=bar": 7200 * time.Second, "99999999999": maxDeltaSeconds * time.Second} {
		if got := ParseAge(header("Age", v)); got != want {
			t.Errorf("Age %q: %v, want %v", v, got, want)
		}
	}
	if got := ParseAge(http.Header{"Age": {"7200", "0"}}); got != 7200*time.Second {
		t.Errorf("two lines: %v, want the first", got)
	}
}

// TestParseTargetedDictionary checks RFC 9213 section 2.1 on RFC 8941
// dictionaries.
func TestParseTargetedDictionary(t *testing.T) {
	valid := map[string]int64{"max-age=3600": 3600, "foobar, max-age=60": 60, "max-age=60;x=1": 60,
		`a=(1 "b" c), max-age=5`: 5, `max-age="60"`: -1, "max-age=1.5": -1, "max-age=-1": -1,
		"max-age=1, max-age=2": 2, "max-age=99999999999": maxDeltaSeconds, "k=:aGVsbG8=:, max-age=7": 7}
	for v, want := range valid {
		cc, ok := ParseTargeted(v)
		if !ok || cc.MaxAge != want {
			t.Errorf("%q: max-age %d ok %v, want %d", v, cc.MaxAge, ok, want)
		}
	}
	for _, v := range []string{"", "   ", "max-age=10000, &&&&&", "max-age =100", "max-age= 100", "MaX-aGe=3600", "max-age=1,", `a="\q"`} {
		if _, ok := ParseTargeted(v); ok {
			t.Errorf("%q is a valid dictionary", v)
		}
	}
	if cc, _ := ParseTargeted("no-store=?0, private"); cc.NoStore || !cc.Private {
		t.Errorf("booleans: %+v", cc)
	}
}

func FuzzParseHTTPDate(f *testing.F) {
	f.Add("Sun, 06 Nov 1994 08:49:37 GMT")
	f.Add("Sunday, 06-Nov-94 08:49:37 GMT")
	f.Add("Sun Nov  6 08:49:37 1994")
	now := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, v string) {
		got, ok := ParseHTTPDate(v, now)
		if !ok {
			return
		}
		if got.Location() != time.UTC {
			t.Fatalf("%q: not UTC", v)
		}
		if again, ok := ParseHTTPDate(got.Format(http.TimeFormat), now); !ok || !again.Equal(got) {
			t.Fatalf("%q: %v does not survive formatting", v, got)
		}
	})
}

func FuzzParseAge(f *testing.F) {
	f.Add("7200, 0")
	f.Add("abc")
	f.Fuzz(func(t *testing.T, v string) {
		if got := ParseAge(header("Age", v)); got < 0 || got > maxDeltaSeconds*time.Second {
			t.Fatalf("%q: %v", v, got)
		}
	})
}

func FuzzParseTargeted(f *testing.F) {
	f.Add("max-age=60, no-store")
	f.Add(`a=(1 "b";x), b=:aGk=:, c=?1`)
	f.Fuzz(func(t *testing.T, v string) {
		cc, ok := ParseTargeted(v)
		if !ok {
			return
		}
		for _, d := range []int64{cc.MaxAge, cc.SMaxAge, cc.StaleWhileRevalidate, cc.StaleIfError} {
			if d < -1 || d > maxDeltaSeconds {
				t.Fatalf("%q: delta %d out of range", v, d)
			}
		}
	})
}
