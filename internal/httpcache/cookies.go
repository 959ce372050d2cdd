package httpcache

import (
	"encoding/binary"
	"iter"
	"net/http"
	"slices"
	"strings"
)

// KeyOptions are a writer's key options: which parts of a request, beyond
// its method class, scheme, host and path, make up its cache key, and
// which of its cookies matter.
type KeyOptions struct {
	// Query lists the query parameters in the key; nil means every one.
	Query []string
	// Headers lists the request headers whose values join the key.
	Headers []string
	// Placeholders are the operator's templates whose values join the
	// key; the caller expands them.
	Placeholders []string
	// Cookies lists the cookies whose values join the key.
	Cookies []string
	// IgnoreCookies lists the cookies that never select a response
	// (analytics, consent): a request that carries only these and the
	// keyed ones may be answered from a shared entry.
	IgnoreCookies []string
}

// IdentityInKey reports whether the key holds the caller's credentials:
// the Authorization header, or a placeholder of it. A response to an
// authorized request may then be stored.
func (o KeyOptions) IdentityInKey() bool {
	return o.holds("Authorization")
}

// UserPlaceholders returns the names of the placeholders of the
// authenticated user ({http.auth.user.*}) that the key holds. Such a
// placeholder keeps the caller's identity only when it has a value: it is
// empty where no authentication ran, whatever Authorization says.
func (o KeyOptions) UserPlaceholders() []string {
	const prefix = "http.auth.user."
	var names []string
	for _, field := range o.placeholdersUnder(prefix) {
		names = append(names, prefix+field)
	}
	return names
}

// placeholdersUnder returns what follows the prefix in the key's
// placeholders that start with it, such as a cookie's name. The prefix
// is matched as Caddy's replacer does, case and all: a placeholder it
// does not know adds nothing to the key.
func (o KeyOptions) placeholdersUnder(prefix string) []string {
	prefix = "{" + prefix
	var names []string
	for _, p := range o.Placeholders {
		for {
			i := strings.Index(p, prefix)
			if i < 0 {
				break
			}
			p = p[i+len(prefix):]
			name, _, ok := strings.Cut(p, "}")
			if !ok {
				break
			}
			names = append(names, name)
		}
	}
	return names
}

// CookiesInKey reports whether the key holds the request's cookies
// wholesale, the Cookie header: every cookie then matters to the key, and
// none keeps a response from being stored or shared. The caller's identity
// in the key does not count: an anonymous request, whose identity is
// empty, may still carry the origin's own session cookie.
func (o KeyOptions) CookiesInKey() bool {
	return o.holds("Cookie")
}

// keyedCookies returns the cookies the key holds one by one: those of
// key_cookies, and those a {http.request.cookie.NAME} placeholder names.
func (o KeyOptions) keyedCookies() []string {
	names := slices.Concat(o.Cookies, o.placeholdersUnder("http.request.cookie."))
	return slices.Compact(slices.Sorted(slices.Values(names)))
}

// holds reports whether the key holds the header: by key_headers, or by
// an {http.request.header.NAME} placeholder.
func (o KeyOptions) holds(header string) bool {
	for _, h := range slices.Concat(o.Headers, o.placeholdersUnder("http.request.header.")) {
		if strings.EqualFold(h, header) {
			return true
		}
	}
	return false
}

// CookieRule says which of a request's cookies may carry the caller's
// identity: all but those the key holds and those the operator ignores.
// A response to a request that carries one is private to its caller,
// unless it says public or s-maxage; and such a request is not answered
// from an entry that did not. The zero rule holds every cookie private.
type CookieRule struct {
	keyed, ignored []string // sorted
	inKey          bool     // the key holds the Cookie header, every cookie
}

// NewCookieRule returns the rule of a writer's key options.
func NewCookieRule(o KeyOptions) CookieRule {
	return CookieRule{
		keyed:   o.keyedCookies(),
		ignored: slices.Compact(slices.Sorted(slices.Values(o.IgnoreCookies))),
		inKey:   o.CookiesInKey(),
	}
}

// Private reports whether h carries a cookie that is neither in the key
// nor ignored. A request without Cookie costs one map lookup.
func (c CookieRule) Private(h http.Header) bool {
	lines := h["Cookie"]
	if len(lines) == 0 || c.inKey {
		return false
	}
	for name := range cookies(lines) {
		_, keyed := slices.BinarySearch(c.keyed, name)
		_, ignored := slices.BinarySearch(c.ignored, name)
		if !keyed && !ignored {
			return true
		}
	}
	return false
}

// appendCookies writes, for each of the names, how many cookies of that
// name h carries and their values, in order; an absent cookie and an empty
// one differ.
func appendCookies(buf []byte, h http.Header, names []string) []byte {
	for _, name := range names {
		n := 0
		for k := range cookies(h["Cookie"]) {
			if k == name {
				n++
			}
		}
		buf = binary.AppendUvarint(buf, uint64(n))
		for k, v := range cookies(h["Cookie"]) {
			if k == name {
				buf = appendField(buf, trimQuotes(v))
			}
		}
	}
	return buf
}

// cookies yields the name and value of each cookie in Cookie lines, as
// RFC 6265 section 5.4 sends them; a value may still hold the double
// quotes the RFC allows around it (see trimQuotes).
func cookies(lines []string) iter.Seq2[string, string] {
	return func(yield func(name, value string) bool) {
		for _, line := range lines {
			for line != "" {
				var pair string
				pair, line, _ = strings.Cut(line, ";")
				name, value, _ := strings.Cut(pair, "=")
				name, value = trimOWS(name), trimOWS(value)
				// A value without a name is a cookie too (browsers
				// send one set without a name so), and matches no
				// listed name.
				if (name != "" || value != "") && !yield(name, value) {
					return
				}
			}
		}
	}
}

// trimQuotes removes the double quotes RFC 6265 allows around a cookie's
// value.
func trimQuotes(v string) string {
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		return v[1 : len(v)-1]
	}
	return v
}
