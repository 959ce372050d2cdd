package httpcache

import (
	"net/http"
	"strings"
	"time"
)

// Validators are the fields of a stored response that preconditions are
// evaluated against.
type Validators struct {
	ETag         string
	LastModified string
	Date         string
}

// ValidatorsOf returns the validators of a response header.
func ValidatorsOf(h http.Header) Validators {
	return Validators{ETag: h.Get("Etag"), LastModified: h.Get("Last-Modified"), Date: h.Get("Date")}
}

// UpdatedBy reports whether a 304 with header h, the answer to a
// validation of the stored response with validators v, may update it (RFC
// 9111 section 4.3.4): its entity-tag, when it has one, is v's, and
// otherwise its Last-Modified, when both have one, is v's. A 304 with
// neither validator is taken as the answer to the condition sent. The
// entity-tags are compared weakly: an origin that weakens the tag of its
// compressed 200s (nginx's gzip does) may send it strong on a 304.
func (v Validators) UpdatedBy(h http.Header) bool {
	if etag := h.Get("Etag"); etag != "" {
		return v.ETag != "" && weakEqual(etag, v.ETag)
	}
	if lm := h.Get("Last-Modified"); lm != "" && v.LastModified != "" {
		return lm == v.LastModified
	}
	return true
}

// NotModified reports whether a GET or HEAD request carrying the
// preconditions in reqHeader is answered with 304 Not Modified from a stored
// response with the validators v (RFC 9110 sections 13.1.2, 13.1.3 and
// 13.2.2) at now. If-None-Match, when present, decides alone with the weak
// comparison; otherwise If-Modified-Since is compared with Last-Modified, or
// with Date when the response has no Last-Modified.
func NotModified(reqHeader http.Header, v Validators, now time.Time) bool {
	if inm := reqHeader.Values("If-None-Match"); len(inm) > 0 {
		return etagListMatchesWeak(inm, v.ETag)
	}
	ims := reqHeader.Get("If-Modified-Since")
	if ims == "" {
		return false
	}
	since, ok := ParseHTTPDate(ims, now)
	if !ok {
		return false
	}
	var modified time.Time
	switch {
	case v.LastModified != "":
		modified, ok = ParseHTTPDate(v.LastModified, now)
	case v.Date != "":
		modified, ok = parseDate(v.Date, now)
	default:
		return false
	}
	return ok && !modified.After(since)
}

// etagListMatchesWeak reports whether any entity-tag in the If-None-Match
// field lines matches etag under the weak comparison, or the list is "*".
func etagListMatchesWeak(lines []string, etag string) bool {
	for _, line := range lines {
		for line != "" {
			var tag string
			tag, line = nextListItem(line)
			tag = strings.TrimSpace(tag)
			if tag == "*" {
				return true
			}
			if etag != "" && weakEqual(tag, etag) {
				return true
			}
		}
	}
	return false
}

// weakEqual compares two entity-tags ignoring their weakness indicators.
func weakEqual(a, b string) bool {
	return strings.TrimPrefix(a, "W/") == strings.TrimPrefix(b, "W/")
}
