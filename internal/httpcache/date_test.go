package httpcache

import (
	"net/http"
	"testing"
	"time"
)

// TestParseHTTPDate checks the three HTTP-date forms, RFC 9110 section 5.6.7.
func TestParseHTTPDate(t *testing.T) {
	now := time.Date(2026, 6, 15, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		v    string
		want time.Time
	}{
		{"IMF-fixdate", "Sun, 06 Nov 1994 08:49:37 GMT", time.Date(1994, 11, 6, 8, 49, 37, 0, time.UTC)},
		{"IMF-fixdate ahead", "Thu, 18 Aug 2050 02:01:18 GMT", time.Date(2050, 8, 18, 2, 1, 18, 0, time.UTC)},
		{"IMF-fixdate 29 February", "Thu, 29 Feb 2024 00:00:00 GMT", time.Date(2024, 2, 29, 0, 0, 0, 0, time.UTC)},
		{"rfc850 previous century", "Sunday, 06-Nov-94 08:49:37 GMT", time.Date(1994, 11, 6, 8, 49, 37, 0, time.UTC)},
		{"rfc850 past in this century", "Thursday, 01-Jan-26 00:00:00 GMT", time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"rfc850 50 years ahead", "Sunday, 01-Mar-76 00:00:00 GMT", time.Date(2076, 3, 1, 0, 0, 0, 0, time.UTC)},
		{"rfc850 51 years ahead is past", "Friday, 01-Jan-77 00:00:00 GMT", time.Date(1977, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"asctime padded day", "Sun Nov  6 08:49:37 1994", time.Date(1994, 11, 6, 8, 49, 37, 0, time.UTC)},
		{"asctime two-digit day", "Sun Nov 06 08:49:37 1994", time.Date(1994, 11, 6, 8, 49, 37, 0, time.UTC)},
		{"asctime ahead", "Thu Aug  8 02:01:18 2050", time.Date(2050, 8, 8, 2, 1, 18, 0, time.UTC)},
		{"leap second", "Sat, 31 Dec 2016 23:59:60 GMT", time.Date(2016, 12, 31, 23, 59, 59, 0, time.UTC)},
	}
	for _, tt := range tests {
		got, ok := ParseHTTPDate(tt.v, now)
		if !ok || !got.Equal(tt.want) || got.Location() != time.UTC {
			t.Errorf("%s: %q gives %v %v, want %v", tt.name, tt.v, got, ok, tt.want)
		}
	}
}

// TestParseHTTPDateTwoDigitYear checks the 50-year rule from both sides of
// a fixed now, RFC 9110 section 5.6.7.
func TestParseHTTPDateTwoDigitYear(t *testing.T) {
	const v = "Sunday, 06-Nov-94 08:49:37 GMT"
	tests := []struct {
		now  time.Time
		year int
	}{
		{time.Date(2026, 6, 15, 0, 0, 0, 0, time.UTC), 1994},  // 2094 is 68 years ahead
		{time.Date(2044, 12, 15, 0, 0, 0, 0, time.UTC), 2094}, // 2094-11-06 is under 50 years ahead
		{time.Date(2044, 6, 15, 0, 0, 0, 0, time.UTC), 1994},  // 2094-11-06 is 50 years and 5 months ahead
		{time.Date(2043, 6, 15, 0, 0, 0, 0, time.UTC), 1994},  // 2094 is 51 years ahead
		{time.Date(1990, 6, 15, 0, 0, 0, 0, time.UTC), 1994},  // 4 years ahead
	}
	for _, tt := range tests {
		if got, ok := ParseHTTPDate(v, tt.now); !ok || got.Year() != tt.year {
			t.Errorf("now %v: %v %v, want year %d", tt.now, got, ok, tt.year)
		}
	}
}

// TestParseHTTPDateFiftyYearInstant checks the 50-year rule at the instant,
// not the year, RFC 9110 section 5.6.7.
func TestParseHTTPDateFiftyYearInstant(t *testing.T) {
	now := time.Date(2026, 6, 15, 0, 0, 0, 0, time.UTC)
	if got, ok := ParseHTTPDate("Tuesday, 01-Dec-76 00:00:00 GMT", now); !ok || got.Year() != 1976 {
		t.Errorf("%v %v, want 1976", got, ok)
	}
}

// TestParseHTTPDateRejects checks that nothing looser than the grammar of
// RFC 9110 section 5.6.7 parses.
func TestParseHTTPDateRejects(t *testing.T) {
	now := time.Date(2026, 6, 15, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		v    string
	}{
		{"zero", "0"},
		{"empty", ""},
		{"UTC for GMT", "Thu, 18 Aug 2050 02:01:18 UTC"},
		{"lowercase gmt", "Thu, 18 Aug 2050 02:01:18 gmt"},
		{"one-digit hour", "Thu, 18 Aug 2050 2:01:18 GMT"},
		{"one-digit day", "Thu, 8 Aug 2050 02:01:18 GMT"},
		{"doubled space", "Thu,  18 Aug 2050 02:01:18 GMT"},
		{"missing comma", "Thu 18 Aug 2050 02:01:18 GMT"},
		{"two-digit year in IMF form", "Thu, 18 Aug 50 02:01:18 GMT"},
		{"dashes in IMF form", "Thu, 18-Aug-2050 02:01:18 GMT"},
		{"lowercase month", "Thu, 18 aug 2050 02:01:18 GMT"},
		{"lowercase day", "thu, 18 Aug 2050 02:01:18 GMT"},
		{"uppercase day", "THU, 18 Aug 2050 02:01:18 GMT"},
		{"long day in IMF form", "Thursday, 18 Aug 2050 02:01:18 GMT"},
		{"30 February", "Wed, 30 Feb 2050 02:01:18 GMT"},
		{"29 February of a common year", "Sat, 29 Feb 2025 02:01:18 GMT"},
		{"31 April", "Sat, 31 Apr 2050 02:01:18 GMT"},
		{"day 00", "Thu, 00 Aug 2050 02:01:18 GMT"},
		{"hour 24", "Thu, 18 Aug 2050 24:01:18 GMT"},
		{"minute 60", "Thu, 18 Aug 2050 02:60:18 GMT"},
		{"second 61", "Thu, 18 Aug 2050 02:01:61 GMT"},
		{"signed number", "Thu, 18 Aug 2050 +2:01:18 GMT"},
		{"dots for colons", "Thu, 18 Aug 2050 02.01.18 GMT"},
		{"leading space", " Thu, 18 Aug 2050 02:01:18 GMT"},
		{"trailing space", "Thu, 18 Aug 2050 02:01:18 GMT "},
		{"numeric offset", "Thu, 18 Aug 2050 02:01:18 +0000"},
		{"rfc850 short day", "Sun, 06-Nov-94 08:49:37 GMT"},
		{"rfc850 lowercase day", "sunday, 06-Nov-94 08:49:37 GMT"},
		{"rfc850 four-digit year", "Sunday, 06-Nov-1994 08:49:37 GMT"},
		{"rfc850 30 February", "Sunday, 30-Feb-94 08:49:37 GMT"},
		{"rfc850 hour 24", "Sunday, 06-Nov-94 24:49:37 GMT"},
		{"asctime unpadded day", "Sun Nov 6 08:49:37 1994"},
		{"asctime lowercase month", "Sun nov  6 08:49:37 1994"},
		{"asctime with zone", "Sun Nov  6 08:49:37 1994 GMT"},
		{"asctime minute 60", "Sun Nov  6 08:60:37 1994"},
		{"RFC 3339", "2050-08-18T02:01:18Z"},
	}
	for _, tt := range tests {
		if got, ok := ParseHTTPDate(tt.v, now); ok {
			t.Errorf("%s: %q parsed as %v", tt.name, tt.v, got)
		}
	}
}

// FuzzHTTPDate checks that whatever parses is a UTC instant that survives
// formatting as an IMF-fixdate, RFC 9110 section 5.6.7.
func FuzzHTTPDate(f *testing.F) {
	for _, v := range []string{
		"Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994",
		"Thu Aug  8 02:01:18 2050", "Sat, 31 Dec 2016 23:59:60 GMT", "Wed, 30 Feb 2050 02:01:18 GMT", "0", "",
	} {
		f.Add(v)
	}
	now := time.Date(2026, 6, 15, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, v string) {
		got, ok := ParseHTTPDate(v, now)
		if !ok {
			return
		}
		if got.Location() != time.UTC {
			t.Fatalf("%q: %v is not UTC", v, got)
		}
		formatted := got.Format(http.TimeFormat)
		again, ok := ParseHTTPDate(formatted, now)
		if !ok || !again.Equal(got) {
			t.Fatalf("%q: %v formats as %q, which parses as %v %v", v, got, formatted, again, ok)
		}
		// An IMF-fixdate naming the right day and no leap second is
		// exactly what formatting gives back: nothing looser parses.
		if len(v) == len(formatted) && v[3] == ',' && v[:3] == formatted[:3] && v[23:25] != "60" && v != formatted {
			t.Fatalf("%q parses as %v, which formats as %q", v, got, formatted)
		}
		// An rfc850-date's year lies within 50 years of now.
		if len(v) != len(formatted) && len(v) != len("Sun Nov  6 08:49:37 1994") &&
			(got.Year() <= now.Year()-50 || got.Year() > now.Year()+50) {
			t.Fatalf("%q: year %d too far from %d", v, got.Year(), now.Year())
		}
	})
}

// TestParseAge checks the Age field, RFC 9111 section 5.1.
func TestParseAge(t *testing.T) {
	tests := []struct {
		name string
		h    http.Header
		want time.Duration
	}{
		{"absent", header(), 0},
		{"plain", header("Age", "7200"), 7200 * time.Second},
		{"zero", header("Age", "0"), 0},
		{"first member of a list", header("Age", "7200, 0"), 7200 * time.Second},
		{"first member zero", header("Age", "0, 7200"), 0},
		{"first of two lines", header("Age", "7200", "Age", "0"), 7200 * time.Second},
		{"surrounding spaces", header("Age", " 60 "), 60 * time.Second},
		{"not a number", header("Age", "abc"), 0},
		{"negative", header("Age", "-7200"), 0},
		{"decimal", header("Age", "7200.0"), 0},
		{"trailing letters", header("Age", "7200s"), 0},
		{"empty", header("Age", ""), 0},
		{"parameter", header("Age", "7200;foo=bar"), 7200 * time.Second},
		{"2^31", header("Age", "2147483648"), maxDeltaSeconds * time.Second},
		{"2^31 + 1", header("Age", "2147483649"), maxDeltaSeconds * time.Second},
		{"huge", header("Age", "99999999999999999999999999"), maxDeltaSeconds * time.Second},
	}
	for _, tt := range tests {
		if got := ParseAge(tt.h); got != tt.want {
			t.Errorf("%s: %q gives %v, want %v", tt.name, tt.h["Age"], got, tt.want)
		}
	}
}

// FuzzAge checks that any Age is within [0, 2^31] seconds, RFC 9111
// section 5.1.
func FuzzAge(f *testing.F) {
	f.Add("7200, 0", "0")
	f.Add("abc", "")
	f.Add("7200;foo=bar", "1")
	f.Add("99999999999999999999", "x")
	f.Add(`"7200", 1`, "2")
	f.Fuzz(func(t *testing.T, first, second string) {
		got := ParseAge(http.Header{"Age": {first, second}})
		if got < 0 || got > maxDeltaSeconds*time.Second {
			t.Fatalf("%q, %q: %v out of range", first, second, got)
		}
	})
}

// TestInitialAgeIgnoresInvalidAge checks that an invalid Age counts as
// absent, RFC 9111 sections 4.2.3 and 5.1.
func TestInitialAgeIgnoresInvalidAge(t *testing.T) {
	sent := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	received := sent.Add(2 * time.Second)
	for _, age := range []string{"abc", "-30", "30.5", "30s"} {
		h := header("Date", received.Format(http.TimeFormat), "Age", age)
		if got := InitialAge(h, sent, received); got != 2*time.Second {
			t.Errorf("Age %q: got %v, want 2s", age, got)
		}
	}
}

// TestFreshnessLifetimeExpires checks Expires minus Date, RFC 9111 section
// 4.2.1 and 5.3.
func TestFreshnessLifetimeExpires(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	date := now.Format(http.TimeFormat)
	hour := now.Add(time.Hour)
	tests := []struct {
		name string
		h    http.Header
		want time.Duration
		ok   bool
	}{
		{"IMF-fixdate", header("Date", date, "Expires", hour.Format(http.TimeFormat)), time.Hour, true},
		{"rfc850", header("Date", date, "Expires", "Thursday, 01-Jan-26 13:00:00 GMT"), time.Hour, true},
		{"asctime", header("Date", date, "Expires", "Thu Jan  1 13:00:00 2026"), time.Hour, true},
		{"one-digit hour", header("Date", date, "Expires", "Thu, 01 Jan 2026 1:00:00 GMT"), 0, true},
		{"empty Expires", header("Date", date, "Expires", ""), 0, true},
		{"Expires equals Date", header("Date", date, "Expires", date), 0, true},
		{"Expires before Date, after the response",
			header("Date", now.Add(2*time.Hour).Format(http.TimeFormat), "Expires", hour.Format(http.TimeFormat)), 0, true},
		{"200 years ahead", header("Date", date, "Expires", "Mon, 01 Jan 2226 12:00:00 GMT"), maxDeltaSeconds * time.Second, true},
		{"bad Date", header("Date", "yesterday", "Expires", hour.Format(http.TimeFormat)), time.Hour, true},
		{"no Date", header("Expires", hour.Format(http.TimeFormat)), time.Hour, true},
		{"bad Date, Expires past", header("Date", "yesterday", "Expires", now.Add(-time.Second).Format(http.TimeFormat)), 0, true},
	}
	for _, tt := range tests {
		got, ok := FreshnessLifetime(tt.h, ParseCacheControl(tt.h), now)
		if got != tt.want || ok != tt.ok {
			t.Errorf("%s: got %v %v, want %v %v", tt.name, got, ok, tt.want, tt.ok)
		}
	}
}
