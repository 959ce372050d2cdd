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

	// NumOutcomes is how many outcomes there are: an array of this length
	// holds a counter for each.
	NumOutcomes = iota
)

var outcomeNames = [NumOutcomes]string{
	"STORED", "STATUS", "NO-STORE", "PRIVATE", "SET-COOKIE", "AUTHORIZATION",
	"VARY-STAR", "NO-FRESHNESS", "TOO-LARGE", "INCOMPLETE", "INVALIDATED", "REFUSED",
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

// understoodStatuses are the final statuses whose semantics this cache
// knows well enough to store them in origin mode when the origin gives
// explicit freshness. 206 and 304 need handling this cache does not do.
var understoodStatuses = []int{200, 203, 204, 300, 301, 302, 307, 308, 404, 405, 410, 414, 451, 501}

// Policy is what an operator configured about storing responses.
type Policy struct {
	// TTL, when positive, is the operator's freshness: every stored
	// response is fresh this long, whatever the origin says. Zero selects
	// origin mode, where the response's own freshness decides.
	TTL time.Duration
	// MaxTTL caps the freshness taken from the origin; zero is no cap.
	MaxTTL time.Duration
	// Statuses lists the storable statuses; nil selects the mode's default.
	Statuses []int
	// IdentityInKey is true when the key holds the caller's identity, so a
	// response to an authorized request cannot reach another caller.
	IdentityInKey bool
}

// Exchange is what the storage decision looks at: one request and the
// header of its response, with the times the request was sent and the
// response received.
type Exchange struct {
	RequestHeader http.Header
	Status        int
	Header        http.Header
	RequestTime   time.Time
	ResponseTime  time.Time
}

// Decide applies the storage rules to an exchange. It returns how long the
// stored response stays fresh from ResponseTime and Stored, or the reason
// it must not be stored. The request method is the caller's concern: only GET
// responses reach here.
func (p Policy) Decide(x Exchange) (ttl time.Duration, outcome Outcome) {
	resCC := ParseCacheControl(x.Header)
	reqCC := ParseCacheControl(x.RequestHeader)
	switch {
	case !p.statusAllowed(x.Status):
		return 0, ReasonStatus
	case resCC.NoStore || reqCC.NoStore:
		return 0, ReasonNoStore
	case resCC.Private:
		return 0, ReasonPrivate
	case len(x.Header["Set-Cookie"]) > 0:
		return 0, ReasonSetCookie
	case varyStar(x.Header):
		return 0, ReasonVaryStar
	case len(x.RequestHeader["Authorization"]) > 0 && !p.IdentityInKey &&
		!resCC.Public && resCC.SMaxAge < 0 && !resCC.MustRevalidate:
		return 0, ReasonAuthorization
	}
	if p.TTL > 0 {
		return p.TTL, Stored
	}
	if resCC.NoCache {
		// Each use would need validation with the origin.
		return 0, ReasonNoFreshness
	}
	lifetime, ok := FreshnessLifetime(x.Header, resCC, x.ResponseTime)
	if !ok {
		return 0, ReasonNoFreshness
	}
	if p.MaxTTL > 0 {
		lifetime = min(lifetime, p.MaxTTL)
	}
	ttl = lifetime - InitialAge(x.Header, x.RequestTime, x.ResponseTime)
	if ttl <= 0 {
		return 0, ReasonNoFreshness
	}
	return ttl, Stored
}

func (p Policy) statusAllowed(status int) bool {
	switch {
	case p.Statuses != nil:
		return slices.Contains(p.Statuses, status)
	case p.TTL > 0:
		return slices.Contains(DefaultStatuses, status)
	default:
		return slices.Contains(understoodStatuses, status)
	}
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
