package httpcache

import (
	"strings"
	"time"
)

// RangeResult is what a Range header asks of a representation.
type RangeResult uint8

const (
	// RangeIgnored: serve the whole representation with 200, because the
	// field is absent, not a bytes range this cache answers (several
	// ranges, another unit) or syntactically invalid (RFC 9110 section
	// 14.2 lets a server ignore it).
	RangeIgnored RangeResult = iota
	// RangeSatisfiable: serve bytes [First, Last] with 206.
	RangeSatisfiable
	// RangeUnsatisfiable: answer 416 (RFC 9110 section 15.5.17).
	RangeUnsatisfiable
)

// ParseRange reads a Range field value for a representation of size
// bytes (RFC 9110 section 14.1.2): one bytes range, "first-last",
// "first-" or "-suffix". It returns the inclusive byte positions to serve.
func ParseRange(v string, size int64) (first, last int64, result RangeResult) {
	unit, spec, ok := strings.Cut(v, "=")
	if !ok || !strings.EqualFold(trimOWS(unit), "bytes") || strings.Contains(spec, ",") {
		return 0, 0, RangeIgnored
	}
	spec = trimOWS(spec)
	a, b, ok := strings.Cut(spec, "-")
	if !ok {
		return 0, 0, RangeIgnored
	}
	if a == "" {
		n, ok := rangeInt(b)
		if !ok {
			return 0, 0, RangeIgnored
		}
		if n == 0 || size == 0 {
			return 0, 0, RangeUnsatisfiable
		}
		return max(size-n, 0), size - 1, RangeSatisfiable
	}
	first, ok = rangeInt(a)
	if !ok {
		return 0, 0, RangeIgnored
	}
	last = size - 1
	if b != "" {
		if last, ok = rangeInt(b); !ok || last < first {
			return 0, 0, RangeIgnored
		}
		last = min(last, size-1)
	}
	if first >= size {
		return 0, 0, RangeUnsatisfiable
	}
	return first, last, RangeSatisfiable
}

// rangeInt parses 1*DIGIT, refusing values that would overflow.
func rangeInt(s string) (int64, bool) {
	if s == "" || len(s) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int64(s[i]-'0')
	}
	return n, true
}

// IfRangeMatches reports whether an If-Range value lets a range be served
// from a representation with the validators v (RFC 9110 section 13.1.5):
// an entity-tag must match strongly; a date must equal Last-Modified, and
// Last-Modified must be a strong validator, which for a cache means at
// least 60 seconds before the stored Date (section 8.8.2.2): within the
// same second, the representation may have changed twice, and a client
// would splice bytes of a newer one onto its older ones.
func IfRangeMatches(ifRange string, v Validators, now time.Time) bool {
	ifRange = trimOWS(ifRange)
	if strings.HasPrefix(ifRange, `"`) || strings.HasPrefix(ifRange, "W/") {
		return !strings.HasPrefix(ifRange, "W/") && !strings.HasPrefix(v.ETag, "W/") && ifRange == v.ETag
	}
	t, ok := ParseHTTPDate(ifRange, now)
	lm, lmOK := ParseHTTPDate(v.LastModified, now)
	date, dateOK := ParseHTTPDate(v.Date, now)
	return ok && lmOK && dateOK && t.Equal(lm) && !lm.After(date.Add(-time.Minute))
}
