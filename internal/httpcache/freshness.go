package httpcache

import (
	"net/http"
	"sync/atomic"
	"time"
)

// FreshnessLifetime returns how long a response stays fresh for a shared
// cache, from its explicit freshness information only: s-maxage, then
// max-age, then Expires minus Date (RFC 9111 section 4.2.1). ok is false
// when the response gives none; heuristic freshness is not applied.
// responseTime stands in for a missing or invalid Date.
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
		// Several Expires lines conflict: treat the response as stale.
		return 0, true
	}
	exp, err := http.ParseTime(expires[0])
	if err != nil {
		// An invalid Expires, such as "0", means already expired.
		return 0, true
	}
	date := responseDate(h, responseTime)
	if !exp.After(date) {
		return 0, true
	}
	return exp.Sub(date), true
}

// responseDate returns the response's Date, or fallback if it has none that
// parses.
func responseDate(h http.Header, fallback time.Time) time.Time {
	if v := h.Get("Date"); v != "" {
		if t, err := parseDate(v); err == nil {
			return t
		}
	}
	return fallback
}

// parsedDate is an HTTP date and the time it names.
type parsedDate struct {
	value string
	t     time.Time
}

// lastDate is the Date value parsed last. An origin's responses within one
// second share their Date, so most stores find it here rather than parse.
var lastDate atomic.Pointer[parsedDate]

// parseDate is http.ParseTime, remembering its last success.
func parseDate(v string) (time.Time, error) {
	if p := lastDate.Load(); p != nil && p.value == v {
		return p.t, nil
	}
	t, err := http.ParseTime(v)
	if err == nil {
		lastDate.Store(&parsedDate{v, t})
	}
	return t, err
}

// InitialAge is the corrected initial age of a response received at
// responseTime for a request sent at requestTime (RFC 9111 section 4.2.3).
// The age a cache reports later is InitialAge plus the time the response
// has been resident since responseTime.
func InitialAge(h http.Header, requestTime, responseTime time.Time) time.Duration {
	apparent := max(responseTime.Sub(responseDate(h, responseTime)), 0)
	var ageValue time.Duration
	if v := h.Get("Age"); v != "" {
		ageValue = time.Duration(ParseDeltaSeconds(v)) * time.Second
	}
	correctedAge := ageValue + max(responseTime.Sub(requestTime), 0)
	return max(apparent, correctedAge)
}
