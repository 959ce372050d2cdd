package httpcache

import (
	"net/http"
	"slices"
	"strconv"
	"time"
)

// Outcome is what became of a response offered to a cache: Stored, or the
// reason it was not. The set is fixed, so counters indexed by it and metric
// labels made of it stay bounded.
type Outcome uint8

// The outcomes. Every reason but Stored is an RFC 9211 Cache-Status detail.
const (
	Stored Outcome = iota
	ReasonStatus
	ReasonNoStore
	ReasonPrivate
	ReasonSetCookie
	ReasonAuthorization
	ReasonVaryStar
	ReasonNoFreshness
	ReasonTooLarge
	ReasonIncomplete
	ReasonInvalidated
	ReasonRefused
	ReasonCookie

	// NumOutcomes is how many outcomes there are: an array of this length
	// holds a counter for each.
	NumOutcomes = iota
)

var outcomeNames = [NumOutcomes]string{
	"STORED", "STATUS", "NO-STORE", "PRIVATE", "SET-COOKIE", "AUTHORIZATION",
	"VARY-STAR", "NO-FRESHNESS", "TOO-LARGE", "INCOMPLETE", "INVALIDATED", "REFUSED", "COOKIE",
}

// String returns the outcome as a Cache-Status detail, such as NO-STORE.
func (o Outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return "OUTCOME-" + strconv.Itoa(int(o))
}

// DefaultStatuses are the statuses stored when none are configured in
// operator-TTL mode.
var DefaultStatuses = []int{200, 203, 204, 300, 301, 308, 410}

// Understood reports whether this cache knows a final status's caching
// requirements, as must-understand asks (RFC 9111 section 5.2.2.3): the
// statuses RFC 9110 defines, but for 206 and 304, which it never stores.
func Understood(status int) bool {
	switch {
	case status >= 200 && status <= 205, status >= 300 && status <= 303, status == 305,
		status == 307, status == 308, status >= 400 && status <= 417, status == 421,
		status == 422, status == 426, status == 451, status >= 500 && status <= 505:
		return true
	}
	return false
}

// Policy is what an operator configured about storing responses.
type Policy struct {
	// TTL, when positive, is the operator's freshness: every stored
	// response is fresh this long, whatever the origin says. Zero selects
	// origin mode, where the response's own freshness decides.
	TTL time.Duration
	// MaxTTL caps the freshness taken from the origin; zero is no cap.
	MaxTTL time.Duration
	// Heuristic, when positive, allows heuristic freshness (RFC 9111
	// section 4.2.2) up to this long for responses without explicit
	// freshness; zero disallows it.
	Heuristic time.Duration
	// Statuses lists the storable statuses; nil selects the mode's default.
	Statuses []int
	// IdentityInKey is true when the key holds the request's
	// Authorization, so a response to an authorized request cannot reach
	// another caller.
	IdentityInKey bool
	// Targeted lists the targeted cache-control fields honoured over
	// Cache-Control, in order, in canonical form (RFC 9213); empty honours
	// none. Own lists those of them that are this cache's alone: they are
	// not stored and not forwarded.
	Targeted []string
	Own      []string
	// StaleWhileRevalidate and StaleIfError are the windows used when the
	// response does not give its own (RFC 5861).
	StaleWhileRevalidate time.Duration
	StaleIfError         time.Duration
}

// Exchange is what the storage decision looks at: one request and the
// header of its response, with the times the request was sent and the
// response received.
type Exchange struct {
	RequestHeader http.Header
	// PrivateCookies is set when the request carries a cookie that may
	// hold the caller's identity: one the key neither holds nor ignores
	// (see CookieRule).
	PrivateCookies bool
	// UserInKey is set when the key holds the authenticated user of this
	// request: an identity placeholder that expanded to a value.
	UserInKey    bool
	Status       int
	Header       http.Header
	RequestTime  time.Time
	ResponseTime time.Time
}

// Decision is the storage decision on one response and, when it may be
// stored, how the stored response may be reused.
type Decision struct {
	Outcome Outcome

	// TTL is how long the response stays fresh from ResponseTime: its
	// freshness lifetime less its initial age. It is zero or negative for
	// a response stored stale, to be validated before use.
	TTL        time.Duration
	InitialAge time.Duration

	// StaleWhileRevalidate and StaleIfError are how long past its
	// freshness the response may be served stale (RFC 5861).
	StaleWhileRevalidate time.Duration
	StaleIfError         time.Duration

	// NoStale is set when the response may never be served stale without
	// validation: must-revalidate, proxy-revalidate, s-maxage.
	NoStale bool
	// NoCache is set when every use needs validation.
	NoCache bool
	// Immutable is set when a fresh response need not be validated even
	// when the client asks (RFC 8246).
	Immutable bool
	// Shared is set when the response says public or s-maxage: it may
	// answer requests with private cookies.
	Shared bool
	// Omit lists the fields the stored response leaves out: those of
	// private="..." and no-cache="...".
	Omit []string
}

// Decide applies the storage rules to an exchange: RFC 9111 section 3 and
// the gateway's safe defaults. The request method is the caller's concern:
// only GET responses reach here.
func (p Policy) Decide(x Exchange) Decision {
	reqCC := ParseCacheControl(x.RequestHeader)
	resCC, targeted := p.directives(x.Header)
	final := x.Status >= 200 && x.Status <= 599 && x.Status != http.StatusPartialContent && x.Status != http.StatusNotModified
	d := Decision{Omit: slices.Concat(resCC.PrivateFields, resCC.NoCacheFields)}
	switch {
	case !final || !p.statusAllowed(x.Status) || (resCC.MustUnderstand && !Understood(x.Status)):
		d.Outcome = ReasonStatus
	case reqCC.NoStore || (resCC.NoStore && !(resCC.MustUnderstand && Understood(x.Status))):
		d.Outcome = ReasonNoStore
	case resCC.Private:
		d.Outcome = ReasonPrivate
	case len(x.Header["Set-Cookie"]) > 0 && !slices.Contains(d.Omit, "Set-Cookie"):
		d.Outcome = ReasonSetCookie
	case varyStar(x.Header):
		d.Outcome = ReasonVaryStar
	case len(x.RequestHeader["Authorization"]) > 0 && !p.IdentityInKey && !x.UserInKey &&
		!resCC.Public && resCC.SMaxAge < 0 && !(resCC.MustRevalidate && p.TTL == 0):
		// must-revalidate allows it for the validation it forces once
		// stale (RFC 9111 section 3.5), which an operator's ttl overrides.
		d.Outcome = ReasonAuthorization
	case x.PrivateCookies && !resCC.Public && resCC.SMaxAge < 0:
		d.Outcome = ReasonCookie
	}
	if d.Outcome != Stored {
		return d
	}
	d.Shared = resCC.Public || resCC.SMaxAge >= 0
	if p.TTL > 0 {
		// The operator's freshness, and the operator's stale windows.
		d.TTL = p.TTL
		d.StaleWhileRevalidate, d.StaleIfError = p.StaleWhileRevalidate, p.StaleIfError
		return d
	}
	lifetime, explicit := FreshnessLifetime(x.Header, resCC, x.ResponseTime)
	if targeted && resCC.SMaxAge < 0 && resCC.MaxAge < 0 {
		// A targeted field replaces Expires too (RFC 9213 section 2.2).
		lifetime, explicit = 0, false
	}
	if !explicit && p.Heuristic > 0 && (resCC.Public || slices.Contains(heuristicStatuses, x.Status)) {
		lifetime, explicit = heuristicLifetime(x.Header, x.ResponseTime, p.Heuristic)
	}
	d.NoCache = resCC.NoCache
	if !explicit && !d.NoCache && !resCC.Public {
		// Nothing says the response may be reused (RFC 9111 section 3).
		d.Outcome = ReasonNoFreshness
		return d
	}
	if p.MaxTTL > 0 {
		lifetime = min(lifetime, p.MaxTTL)
	}
	d.InitialAge = InitialAge(x.Header, x.RequestTime, x.ResponseTime)
	d.TTL = lifetime - d.InitialAge
	d.Immutable = resCC.Immutable
	d.NoStale = resCC.MustRevalidate || resCC.ProxyRevalidate || resCC.SMaxAge >= 0
	if !d.NoStale && !d.NoCache {
		d.StaleWhileRevalidate = window(resCC.StaleWhileRevalidate, p.StaleWhileRevalidate)
		d.StaleIfError = window(resCC.StaleIfError, p.StaleIfError)
	}
	if d.NoCache {
		d.TTL = min(d.TTL, 0)
	}
	if d.TTL <= 0 && x.Header.Get("Etag") == "" && x.Header.Get("Last-Modified") == "" &&
		d.TTL+max(d.StaleIfError, d.StaleWhileRevalidate) <= 0 {
		// Stale on arrival, with no validator to refresh it by and no
		// window to serve it in: storing it would help nobody.
		d.Outcome = ReasonNoFreshness
	}
	return d
}

// directives returns the response's cache directives: those of the first
// targeted field it carries, if any (targeted true), else its Cache-Control.
func (p Policy) directives(h http.Header) (cc CacheControl, targeted bool) {
	if len(p.Targeted) > 0 {
		if cc, _, ok := Targeted(h, p.Targeted); ok {
			return cc, true
		}
	}
	return ParseCacheControl(h), false
}

// window is a response's own stale window in seconds if it gives one,
// else the configured one.
func window(seconds int64, configured time.Duration) time.Duration {
	if seconds >= 0 {
		return time.Duration(seconds) * time.Second
	}
	return configured
}

func (p Policy) statusAllowed(status int) bool {
	switch {
	case p.Statuses != nil:
		return slices.Contains(p.Statuses, status)
	case p.TTL > 0:
		return slices.Contains(DefaultStatuses, status)
	}
	return true
}

func varyStar(h http.Header) bool {
	for _, line := range h["Vary"] {
		for line != "" {
			var item string
			item, line = nextListItem(line)
			if trimOWS(item) == "*" {
				return true
			}
		}
	}
	return false
}

// VaryNames returns the canonical request header names that the Vary field
// lines of h name, sorted and without duplicates, or nil.
func VaryNames(h http.Header) []string {
	var names []string
	for _, line := range h["Vary"] {
		for line != "" {
			var item string
			item, line = nextListItem(line)
			if item = trimOWS(item); item != "" && item != "*" {
				names = append(names, http.CanonicalHeaderKey(item))
			}
		}
	}
	slices.Sort(names)
	return slices.Clip(slices.Compact(names))
}

func trimOWS(s string) string {
	for s != "" && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for s != "" && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}
