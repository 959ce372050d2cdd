package httpcache

import (
	"net/http"
	"time"
)

// FreshnessLifetime returns how long a response stays fresh for a shared
// cache, from its explicit freshness information only: s-maxage, then
// max-age, then Expires minus Date (RFC 9111 section 4.2.1), each clamped
// at 2^31 seconds. ok is false when the response gives none. An Expires
// that is not a valid HTTP-date, or that appears on several lines, means
// already stale. responseTime stands in for a missing or invalid Date.
func FreshnessLifetime(h http.Header, cc CacheControl, responseTime time.Time) (lifetime time.Duration, ok bool) {
	switch {
	case cc.SMaxAge >= 0:
		return time.Duration(cc.SMaxAge) * time.Second, true
	case cc.MaxAge >= 0:
		return time.Duration(cc.MaxAge) * time.Second, true
	}
	expires, present := h["Expires"]
	if !present {
		return 0, false
	}
	if len(expires) != 1 {
		return 0, true
	}
	exp, valid := parseDate(expires[0], responseTime)
	if !valid {
		return 0, true
	}
	date := responseDate(h, responseTime)
	if !exp.After(date) {
		return 0, true
	}
	return min(exp.Sub(date), maxDeltaSeconds*time.Second), true
}

// Heuristically cacheable statuses (RFC 9110 section 15.1).
var heuristicStatuses = []int{200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501}

// heuristicLifetime is a tenth of the time since Last-Modified, at most
// limit (RFC 9111 section 4.2.2). ok is false without a valid
// Last-Modified in the past.
func heuristicLifetime(h http.Header, responseTime time.Time, limit time.Duration) (time.Duration, bool) {
	lm, valid := ParseHTTPDate(h.Get("Last-Modified"), responseTime)
	if !valid {
		return 0, false
	}
	since := responseDate(h, responseTime).Sub(lm)
	if since <= 0 {
		return 0, false
	}
	return min(since/10, limit), true
}

// responseDate returns the response's Date, or fallback if it has none that
// parses.
func responseDate(h http.Header, fallback time.Time) time.Time {
	if v := h.Get("Date"); v != "" {
		if t, ok := parseDate(v, fallback); ok {
			return t
		}
	}
	return fallback
}

// ParseAge reads the Age of a response (RFC 9111 section 5.1): the first
// member of its first line, whose leading digits are taken as seconds.
// Anything else is ignored, as the RFC asks, and gives 0.
func ParseAge(h http.Header) time.Duration {
	lines := h["Age"]
	if len(lines) == 0 {
		return 0
	}
	first, _ := nextListItem(lines[0])
	first = trimOWS(first)
	n := 0
	for n < len(first) && first[n] >= '0' && first[n] <= '9' {
		n++
	}
	if n == 0 || (n < len(first) && first[n] != ';') {
		return 0
	}
	return time.Duration(ParseDeltaSeconds(first[:n])) * time.Second
}

// InitialAge is the corrected initial age of a response received at
// responseTime for a request sent at requestTime (RFC 9111 section 4.2.3).
// The age a cache reports later is InitialAge plus the time the response
// has been resident since responseTime.
func InitialAge(h http.Header, requestTime, responseTime time.Time) time.Duration {
	apparent := max(responseTime.Sub(responseDate(h, responseTime)), 0)
	correctedAge := ParseAge(h) + max(responseTime.Sub(requestTime), 0)
	return max(apparent, correctedAge)
}
