package httpcache

import (
	"testing"
	"time"
)

// TestParseRange checks RFC 9110 section 14.1.2 for a 10-byte
// representation.
func TestParseRange(t *testing.T) {
	tests := []struct {
		v           string
		first, last int64
		result      RangeResult
	}{
		{"bytes=0-3", 0, 3, RangeSatisfiable},
		{"bytes=7-", 7, 9, RangeSatisfiable},
		{"bytes=-3", 7, 9, RangeSatisfiable},
		{"bytes=-30", 0, 9, RangeSatisfiable},
		{"bytes=5-100", 5, 9, RangeSatisfiable},
		{"Bytes = 2-2", 2, 2, RangeSatisfiable},
		{"bytes=10-", 0, 0, RangeUnsatisfiable},
		{"bytes=-0", 0, 0, RangeUnsatisfiable},
		{"bytes=5-2", 0, 0, RangeIgnored},
		{"bytes=0-1,4-5", 0, 0, RangeIgnored},
		{"items=0-1", 0, 0, RangeIgnored},
		{"bytes=a-b", 0, 0, RangeIgnored},
		{"bytes=99999999999999999999-", 0, 0, RangeIgnored},
		{"bytes=", 0, 0, RangeIgnored},
	}
	for _, tt := range tests {
		first, last, result := ParseRange(tt.v, 10)
		if result != tt.result || (result == RangeSatisfiable && (first != tt.first || last != tt.last)) {
			t.Errorf("%q: %d-%d %v, want %d-%d %v", tt.v, first, last, result, tt.first, tt.last, tt.result)
		}
	}
}

// TestIfRange checks RFC 9110 section 13.1.5: a strong entity-tag match
// or an exact Last-Modified date, one that is a strong validator (section
// 8.8.2.2: for a cache, at least 60 seconds before the stored Date).
func TestIfRange(t *testing.T) {
	lm := "Sun, 06 Nov 1994 08:49:37 GMT"
	v := Validators{ETag: `"a"`, LastModified: lm, Date: "Sun, 06 Nov 1994 08:50:37 GMT"}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for in, want := range map[string]bool{`"a"`: true, `"b"`: false, `W/"a"`: false, lm: true, "Sun, 06 Nov 1994 08:49:38 GMT": false, "garbage": false} {
		if got := IfRangeMatches(in, v, now); got != want {
			t.Errorf("If-Range %q: %v, want %v", in, got, want)
		}
	}
	if IfRangeMatches(`W/"a"`, Validators{ETag: `W/"a"`}, now) {
		t.Error("a weak entity-tag matched")
	}
	for _, date := range []string{"", lm, "Sun, 06 Nov 1994 08:50:36 GMT"} {
		if IfRangeMatches(lm, Validators{LastModified: lm, Date: date}, now) {
			t.Errorf("If-Range matched a Last-Modified with Date %q: a weak validator", date)
		}
	}
}

func FuzzRange(f *testing.F) {
	f.Add("bytes=0-3", int64(10))
	f.Add("bytes=-5", int64(3))
	f.Add("bytes=7-", int64(0))
	f.Fuzz(func(t *testing.T, v string, size int64) {
		if size < 0 {
			return
		}
		first, last, result := ParseRange(v, size)
		if result == RangeSatisfiable && (first < 0 || last < first || last >= size) {
			t.Fatalf("%q of %d: %d-%d outside the representation", v, size, first, last)
		}
	})
}
