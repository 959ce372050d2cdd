package cors

import (
	"net/http"
	"regexp"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// Field names of the CORS protocol.
const (
	Origin                       = "Origin"
	RequestMethod                = "Access-Control-Request-Method"
	RequestHeaders               = "Access-Control-Request-Headers"
	RequestPrivateNetwork        = "Access-Control-Request-Private-Network"
	AllowOrigin                  = "Access-Control-Allow-Origin"
	AllowCredentials             = "Access-Control-Allow-Credentials"
	AllowMethods                 = "Access-Control-Allow-Methods"
	AllowHeaders                 = "Access-Control-Allow-Headers"
	AllowPrivateNetwork          = "Access-Control-Allow-Private-Network"
	ExposeHeaders                = "Access-Control-Expose-Headers"
	MaxAge                       = "Access-Control-Max-Age"
	vary                         = "Vary"
	preflightVaryNoOrigin        = "Access-Control-Request-Method, Access-Control-Request-Headers"
	preflightVaryPrivateNetwork  = ", Access-Control-Request-Private-Network"
	preflightVaryWithOriginStart = "Origin, "
)

// Policy is a compiled configuration. It is read-only once built and safe
// for concurrent use. The field values it sets are slices of one array per
// response, each with its length for capacity, so a handler that appends
// to one copies it.
type Policy struct {
	anyOrigin bool
	exact     map[string]struct{}
	patterns  []pattern
	regex     *regexp.Regexp
	templates []string

	anyMethod bool
	methods   []string
	anyHeader bool
	headers   []string // lower case

	credentials    bool
	privateNetwork bool

	// Field values, built once. Each response gets slices of its own:
	// handlers change values in place (Caddy's header replace does).
	allowMethods, exposeHeaders, maxAge, varyPreflight string
}

// pattern is an origin with one wildcard: for subdomains, it matches
// prefix + labels + suffix; for the port, prefix + digits.
type pattern struct {
	prefix, suffix string
	port           bool
}

func (p *Policy) buildFields() {
	v := preflightVaryNoOrigin
	if p.VariesByOrigin() {
		v = preflightVaryWithOriginStart + v
	}
	if p.privateNetwork {
		v += preflightVaryPrivateNetwork
	}
	p.varyPreflight = v
}

// Templates are the allowed origins that hold placeholders: the caller
// expands each for a request and compares it with the request's origin.
func (p *Policy) Templates() []string { return p.templates }

// VariesByOrigin reports whether answers depend on the request's origin:
// always, except for '*' without credentials.
func (p *Policy) VariesByOrigin() bool { return !p.anyOrigin }

// AllowsOrigin reports whether the static part of the policy (every origin
// but the templates) allows the origin, as a request's Origin field gives
// it.
func (p *Policy) AllowsOrigin(origin string) bool {
	if p.anyOrigin {
		return true
	}
	if _, ok := p.exact[origin]; ok {
		return true
	}
	for _, pt := range p.patterns {
		if pt.match(origin) {
			return true
		}
	}
	return p.regex != nil && p.regex.MatchString(origin)
}

func (pt pattern) match(o string) bool {
	if len(o) <= len(pt.prefix)+len(pt.suffix) || !strings.HasPrefix(o, pt.prefix) || !strings.HasSuffix(o, pt.suffix) {
		return false
	}
	mid := o[len(pt.prefix) : len(o)-len(pt.suffix)]
	if pt.port {
		// A port as a browser serializes it: 1 to 65535, no leading zero.
		if len(mid) > 5 || mid[0] == '0' {
			return false
		}
		n := 0
		for i := 0; i < len(mid); i++ {
			if mid[i] < '0' || mid[i] > '9' {
				return false
			}
			n = n*10 + int(mid[i]-'0')
		}
		return n <= 65535
	}
	// One or more DNS labels: the suffix starts with '.', so mid must
	// neither start nor end with one, nor hold two in a row.
	if mid[0] == '.' || mid[len(mid)-1] == '.' || strings.Contains(mid, "..") {
		return false
	}
	for i := 0; i < len(mid); i++ {
		c := mid[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return true
}

// IsPreflight reports whether a request is a CORS preflight: OPTIONS with
// Origin and Access-Control-Request-Method.
func IsPreflight(r *http.Request) bool {
	return r.Method == http.MethodOptions && len(r.Header[Origin]) > 0 && len(r.Header[RequestMethod]) > 0
}

// Refusal says why a preflight from an allowed origin gets no CORS
// fields; empty when it gets them.
type Refusal string

// Reasons a preflight is refused.
const (
	RefuseOrigin         Refusal = "origin not allowed"
	RefuseMethod         Refusal = "method not allowed"
	RefuseHeaders        Refusal = "request headers not allowed"
	RefusePrivateNetwork Refusal = "private network access not allowed"
)

// CheckPreflight decides on a preflight whose origin is allowed, from its
// request fields.
func (p *Policy) CheckPreflight(req http.Header) Refusal {
	if !p.methodAllowed(req[RequestMethod]) {
		return RefuseMethod
	}
	if !p.headersAllowed(req[RequestHeaders]) {
		return RefuseHeaders
	}
	if !p.privateNetwork && asksPrivateNetwork(req) {
		return RefusePrivateNetwork
	}
	return ""
}

func asksPrivateNetwork(req http.Header) bool {
	v := req[RequestPrivateNetwork]
	return len(v) == 1 && strings.EqualFold(strings.TrimSpace(v[0]), "true")
}

func (p *Policy) methodAllowed(values []string) bool {
	if len(values) != 1 || !httpguts.ValidHeaderFieldName(values[0]) {
		return false
	}
	m := values[0]
	if p.anyMethod {
		return true
	}
	for _, allowed := range p.methods {
		if m == allowed {
			return true
		}
	}
	// The safelisted methods need no permission (Fetch's CORS-preflight
	// fetch): the preflight was sent for their headers.
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodPost
}

func (p *Policy) headersAllowed(values []string) bool {
	if p.anyHeader {
		return true
	}
	return !anyMember(values, func(name string) bool { return !p.headerAllowed(name) })
}

// anyMember reports whether f holds for a member of the comma-separated
// lists in values, empty members left out.
func anyMember(values []string, f func(string) bool) bool {
	for _, v := range values {
		for v != "" {
			var member string
			member, v, _ = strings.Cut(v, ",")
			if member = strings.Trim(member, " \t"); member != "" && f(member) {
				return true
			}
		}
	}
	return false
}

func (p *Policy) headerAllowed(name string) bool {
	for _, h := range p.headers {
		if strings.EqualFold(name, h) {
			return true
		}
	}
	// As Starlette does, the safelisted names are always allowed, and
	// Content-Type with them, whatever its value.
	switch strings.ToLower(name) {
	case "accept", "accept-language", "content-language", "content-type":
		return true
	}
	return false
}

// SetPreflight sets the fields of an allowed preflight's answer on dst.
// origin is the request's Origin field, one value long. The values it
// echoes from the request are copies: a handler that changes the answer's
// values in place leaves the request's fields as they came.
func (p *Policy) SetPreflight(dst, req http.Header, origin []string) {
	vals := make(block, 0, 6) // one value for each field below
	p.setOrigin(dst, origin, &vals)
	if p.anyMethod {
		dst[AllowMethods] = vals.one(req[RequestMethod][0])
	} else {
		dst[AllowMethods] = vals.one(p.allowMethods)
	}
	if acrh := req[RequestHeaders]; len(acrh) == 1 {
		dst[AllowHeaders] = vals.one(acrh[0])
	} else if len(acrh) > 1 {
		dst[AllowHeaders] = vals.one(strings.Join(acrh, ", "))
	}
	if p.maxAge != "" {
		dst[MaxAge] = vals.one(p.maxAge)
	}
	if p.privateNetwork && asksPrivateNetwork(req) {
		dst[AllowPrivateNetwork] = vals.one("true")
	}
}

// block hands out one-value field values from one allocation: each
// response's values must be its own, shared neither with other responses
// nor with its request, as handlers change them in place (Caddy's header
// replace does), and one allocation costs less than one per field.
type block []string

// one returns v as a field's values, from the block while it has room;
// a nil block gives each value an allocation of its own.
func (b *block) one(v string) []string {
	if b == nil {
		return []string{v}
	}
	*b = append(*b, v)
	n := len(*b)
	return (*b)[n-1 : n : n]
}

// SetPreflightVary adds to dst's Vary the request fields a preflight's
// answer depends on, allowed or not.
func (p *Policy) SetPreflightVary(dst http.Header) { addVary(dst, p.varyPreflight, nil) }

// SetActual sets the fields of an actual request's response on dst, once
// the inner handlers have set theirs: the CORS fields when the origin is
// allowed, and Vary: Origin whenever the answer depends on it. An
// upstream's own Access-Control-Allow-Origin, -Allow-Credentials and
// -Expose-Headers give way to the policy's, or are dropped when it gives
// none, and a Vary that names Origin already is left as it is. origin is
// the request's Origin field, one value long, or nil when it has none;
// the value echoed is a copy, as in SetPreflight.
func (p *Policy) SetActual(dst http.Header, origin []string, allowed bool) {
	delete(dst, AllowOrigin)
	delete(dst, AllowCredentials)
	delete(dst, ExposeHeaders)
	vals := make(block, 0, 4) // one value for each field below
	if allowed {
		p.setOrigin(dst, origin, &vals)
		if p.exposeHeaders != "" {
			dst[ExposeHeaders] = vals.one(p.exposeHeaders)
		}
	}
	if p.VariesByOrigin() && !varyNamesOrigin(dst[vary]) {
		addVary(dst, "Origin", &vals)
	}
}

func (p *Policy) setOrigin(dst http.Header, origin []string, vals *block) {
	if p.anyOrigin {
		dst[AllowOrigin] = vals.one("*")
	} else {
		dst[AllowOrigin] = vals.one(origin[0])
	}
	if p.credentials {
		dst[AllowCredentials] = vals.one("true")
	}
}

// addVary adds v to dst's Vary values, without replacing them; a new
// value comes from vals.
func addVary(dst http.Header, v string, vals *block) {
	if old := dst[vary]; len(old) > 0 {
		dst[vary] = append(old, v)
		return
	}
	dst[vary] = vals.one(v)
}

// varyNamesOrigin reports whether Vary values name Origin (or are "*").
func varyNamesOrigin(values []string) bool {
	return anyMember(values, func(m string) bool { return m == "*" || strings.EqualFold(m, "origin") })
}
