// Package httpcache holds the HTTP caching rules the gateway applies, free of
// any Caddy type: Cache-Control parsing, freshness and age (RFC 9111),
// conditional requests (RFC 9110 section 13), the storage rules and the
// encoding of cache keys. Every function takes the current time as a value.
package httpcache

import (
	"net/http"
	"strings"
)

// maxDeltaSeconds is the largest delta-seconds value a cache must handle
// (RFC 9111 section 1.2.2); larger values are clamped to it.
const maxDeltaSeconds = 2147483648

// CacheControl holds the Cache-Control directives this cache acts on, from a
// request or a response. A delta-seconds directive that is absent is -1.
type CacheControl struct {
	NoStore         bool
	NoCache         bool // unqualified: every use needs validation
	Private         bool // unqualified: no shared cache may store it
	Public          bool
	MustRevalidate  bool
	ProxyRevalidate bool
	MustUnderstand  bool
	Immutable       bool
	OnlyIfCached    bool

	// NoCacheFields and PrivateFields are the field names that a qualified
	// no-cache="..." or private="..." names, in canonical form: the
	// response may be stored without them.
	NoCacheFields []string
	PrivateFields []string

	MaxAge               int64
	SMaxAge              int64
	MaxStale             int64
	MinFresh             int64
	StaleWhileRevalidate int64
	StaleIfError         int64
}

// unsetCacheControl is a CacheControl with no directive.
var unsetCacheControl = CacheControl{MaxAge: -1, SMaxAge: -1, MaxStale: -1, MinFresh: -1, StaleWhileRevalidate: -1, StaleIfError: -1}

// ParseCacheControl reads every Cache-Control field line of h. Unknown
// directives are ignored. Directive names are case-insensitive and their
// arguments may be tokens or quoted strings (RFC 9111 section 5.2). A
// delta-seconds value that does not parse, or a max-age or s-maxage given
// twice with different values, makes the directive 0: the response is
// stale rather than fresh (RFC 9111 section 4.2.1). Other repeated
// directives keep their first value.
func ParseCacheControl(h http.Header) CacheControl {
	cc := unsetCacheControl
	for _, line := range h["Cache-Control"] {
		cc.parseLine(line)
	}
	return cc
}

// parseLine reads one Cache-Control line. A damaged line takes its most
// restrictive reading, as RFC 9111 section 4.2.1 has conflicting
// directives do: a quote left open, which would hide every directive after
// it inside one string (`ext=a"b, private`), makes the line read member by
// member at every comma; and a no-cache or private whose qualifier is
// missing (`private=`), names no field (`private=""`) or is on such a line
// counts as unqualified.
func (cc *CacheControl) parseLine(s string) {
	damaged := !quotesClosed(s)
	for s != "" {
		var item string
		if damaged {
			item, s, _ = strings.Cut(s, ",")
		} else {
			item, s = nextListItem(s)
		}
		name, raw, hasValue := strings.Cut(item, "=")
		name = strings.TrimSpace(name)
		raw = strings.TrimSpace(raw)
		value := unquote(raw)
		qualified := hasValue && raw != "" && !damaged
		switch {
		case strings.EqualFold(name, "no-store"):
			cc.NoStore = true
		case strings.EqualFold(name, "no-cache"):
			if fields := qualifiedFields(qualified, value); fields != nil {
				cc.NoCacheFields = append(cc.NoCacheFields, fields...)
			} else {
				cc.NoCache = true
			}
		case strings.EqualFold(name, "private"):
			if fields := qualifiedFields(qualified, value); fields != nil {
				cc.PrivateFields = append(cc.PrivateFields, fields...)
			} else {
				cc.Private = true
			}
		case strings.EqualFold(name, "public"):
			cc.Public = true
		case strings.EqualFold(name, "must-revalidate"):
			cc.MustRevalidate = true
		case strings.EqualFold(name, "proxy-revalidate"):
			cc.ProxyRevalidate = true
		case strings.EqualFold(name, "must-understand"):
			cc.MustUnderstand = true
		case strings.EqualFold(name, "immutable"):
			cc.Immutable = true
		case strings.EqualFold(name, "only-if-cached"):
			cc.OnlyIfCached = true
		case strings.EqualFold(name, "max-age"):
			setFreshness(&cc.MaxAge, value)
		case strings.EqualFold(name, "s-maxage"):
			setFreshness(&cc.SMaxAge, value)
		case strings.EqualFold(name, "min-fresh"):
			setDelta(&cc.MinFresh, value)
		case strings.EqualFold(name, "stale-while-revalidate"):
			setDelta(&cc.StaleWhileRevalidate, value)
		case strings.EqualFold(name, "stale-if-error"):
			setDelta(&cc.StaleIfError, value)
		case strings.EqualFold(name, "max-stale"):
			if !hasValue {
				// A bare max-stale accepts any staleness.
				value = "2147483648"
			}
			setDelta(&cc.MaxStale, value)
		}
	}
}

// qualifiedFields returns the field names of a qualified no-cache or
// private, or nil when it names none: RFC 9111 sections 5.2.2.4 and
// 5.2.2.7 give the qualified meaning "with one or more field names", so
// private="" means what private does.
func qualifiedFields(qualified bool, list string) []string {
	if !qualified {
		return nil
	}
	return appendFieldNames(nil, list)
}

// appendFieldNames adds the field names of a qualified directive's
// argument, a comma-separated list, in canonical form.
func appendFieldNames(names []string, list string) []string {
	for list != "" {
		var name string
		name, list = nextListItem(list)
		if name = trimOWS(name); name != "" {
			names = append(names, http.CanonicalHeaderKey(name))
		}
	}
	return names
}

// nextListItem splits off the first member of a comma-separated list,
// keeping commas inside quoted strings.
func nextListItem(s string) (item, rest string) {
	end, _ := listItemEnd(s)
	if end == len(s) {
		return s, ""
	}
	return s[:end], s[end+1:]
}

// quotesClosed reports whether every quoted string in s ends, as
// nextListItem reads them.
func quotesClosed(s string) bool {
	for {
		end, closed := listItemEnd(s)
		if !closed || end == len(s) {
			return closed
		}
		s = s[end+1:]
	}
}

// listItemEnd returns where the first member of a comma-separated list
// ends, at its comma or at the end of s, and whether the quoted strings
// in it end too.
func listItemEnd(s string) (end int, closed bool) {
	inQuote := false
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			if inQuote {
				i++
			}
		case '"':
			inQuote = !inQuote
		case ',':
			if !inQuote {
				return i, true
			}
		}
	}
	return len(s), !inQuote
}

func unquote(s string) string {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		return s[1 : len(s)-1]
	}
	return s
}

// setDelta stores the delta-seconds value v in *dst unless a value is
// already there.
func setDelta(dst *int64, v string) {
	if *dst >= 0 {
		return
	}
	*dst = ParseDeltaSeconds(v)
}

// setFreshness stores a freshness lifetime: a second value that differs
// from the first makes the lifetime 0.
func setFreshness(dst *int64, v string) {
	if n := ParseDeltaSeconds(v); *dst < 0 {
		*dst = n
	} else if n != *dst {
		*dst = 0
	}
}

// ParseDeltaSeconds parses a non-negative decimal number of seconds, clamped
// at 2^31. Anything else yields 0.
func ParseDeltaSeconds(v string) int64 {
	if v == "" {
		return 0
	}
	var n int64
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + int64(c-'0')
		if n > maxDeltaSeconds {
			return maxDeltaSeconds
		}
	}
	return n
}
