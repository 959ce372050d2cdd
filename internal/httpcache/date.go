package httpcache

import (
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// ParseHTTPDate parses an HTTP-date exactly as RFC 9110 section 5.6.7
// defines it: the IMF-fixdate "Sun, 06 Nov 1994 08:49:37 GMT", or one of
// the obsolete rfc850-date "Sunday, 06-Nov-94 08:49:37 GMT" and asctime-date
// "Sun Nov  6 08:49:37 1994". Names are case-sensitive, spaces are single,
// every number has its fixed width, and the date must exist. A two-digit
// year that would lie more than 50 years ahead of now is taken in the past
// century, as the RFC says. Anything else is not a date.
func ParseHTTPDate(s string, now time.Time) (time.Time, bool) {
	switch {
	case len(s) == len("Sun, 06 Nov 1994 08:49:37 GMT") && s[3] == ',':
		return parseIMFFixdate(s)
	case len(s) == len("Sun Nov  6 08:49:37 1994") && s[3] == ' ':
		return parseASCTime(s)
	default:
		return parseRFC850(s, now)
	}
}

var shortDays = []string{"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"}
var longDays = []string{"Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"}
var months = []string{"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"}

// "Sun, 06 Nov 1994 08:49:37 GMT"
func parseIMFFixdate(s string) (time.Time, bool) {
	if !slices.Contains(shortDays, s[:3]) || s[4] != ' ' || s[7] != ' ' || s[11] != ' ' || s[16] != ' ' || s[25:] != " GMT" {
		return time.Time{}, false
	}
	day, ok1 := digits(s[5:7])
	month, ok2 := monthOf(s[8:11])
	year, ok3 := digits(s[12:16])
	if !ok1 || !ok2 || !ok3 {
		return time.Time{}, false
	}
	return build(year, month, day, s[17:25])
}

// "Sun Nov  6 08:49:37 1994"
func parseASCTime(s string) (time.Time, bool) {
	if !slices.Contains(shortDays, s[:3]) || s[7] != ' ' || s[10] != ' ' || s[19] != ' ' {
		return time.Time{}, false
	}
	month, ok1 := monthOf(s[4:7])
	dayText := s[8:10]
	if dayText[0] == ' ' {
		dayText = dayText[1:]
	}
	day, ok2 := digits(dayText)
	year, ok3 := digits(s[20:24])
	if !ok1 || !ok2 || !ok3 {
		return time.Time{}, false
	}
	return build(year, month, day, s[11:19])
}

// "Sunday, 06-Nov-94 08:49:37 GMT"
func parseRFC850(s string, now time.Time) (time.Time, bool) {
	name, rest, ok := strings.Cut(s, ", ")
	if !ok || !slices.Contains(longDays, name) || len(rest) != len("06-Nov-94 08:49:37 GMT") ||
		rest[2] != '-' || rest[6] != '-' || rest[9] != ' ' || rest[18:] != " GMT" {
		return time.Time{}, false
	}
	day, ok1 := digits(rest[0:2])
	month, ok2 := monthOf(rest[3:6])
	yy, ok3 := digits(rest[7:9])
	if !ok1 || !ok2 || !ok3 {
		return time.Time{}, false
	}
	year := now.UTC().Year()/100*100 + yy
	t, ok := build(year, month, day, rest[10:18])
	if ok && t.After(now.UTC().AddDate(50, 0, 0)) {
		// More than 50 years ahead: the most recent past year with
		// those two digits (RFC 9110 section 5.6.7).
		t, ok = build(year-100, month, day, rest[10:18])
	}
	return t, ok
}

// build checks a time of day "08:49:37" and the date, and returns them in
// UTC. A leap second (60) is read as the last second of its minute.
func build(year int, month time.Month, day int, clock string) (time.Time, bool) {
	if clock[2] != ':' || clock[5] != ':' {
		return time.Time{}, false
	}
	hour, ok1 := digits(clock[0:2])
	minute, ok2 := digits(clock[3:5])
	sec, ok3 := digits(clock[6:8])
	if !ok1 || !ok2 || !ok3 || hour > 23 || minute > 59 || sec > 60 || day < 1 {
		return time.Time{}, false
	}
	t := time.Date(year, month, day, hour, minute, min(sec, 59), 0, time.UTC)
	if t.Day() != day {
		return time.Time{}, false // such as February 30
	}
	return t, true
}

// digits parses a string of ASCII digits of its own width.
func digits(s string) (int, bool) {
	if s == "" {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int(s[i]-'0')
	}
	return n, true
}

func monthOf(s string) (time.Month, bool) {
	for i, m := range months {
		if s == m {
			return time.Month(i + 1), true
		}
	}
	return 0, false
}

// parsedDate is an HTTP date and the time it names.
type parsedDate struct {
	value string
	t     time.Time
}

// lastDate is the Date value parsed last. An origin's responses within one
// second share their Date, so most stores find it here rather than parse.
var lastDate atomic.Pointer[parsedDate]

// parseDate is ParseHTTPDate, remembering its last success.
func parseDate(v string, now time.Time) (time.Time, bool) {
	if p := lastDate.Load(); p != nil && p.value == v {
		return p.t, true
	}
	t, ok := ParseHTTPDate(v, now)
	if ok {
		lastDate.Store(&parsedDate{v, t})
	}
	return t, ok
}
