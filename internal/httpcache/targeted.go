package httpcache

import (
	"net/http"
	"strings"
)

// DefaultTargetedFields are the targeted cache-control fields (RFC 9213)
// a gateway cache honours unless configured otherwise: it is a CDN-like
// shared cache.
var DefaultTargetedFields = []string{"Cdn-Cache-Control"}

// Targeted returns the directives of the first of the targeted fields (RFC
// 9213 section 2.2), in the order given, that h carries with a valid,
// non-empty value, and that field's canonical name. ok is false when there
// is none: Cache-Control and Expires then apply. A field that is not a
// valid Structured Field Dictionary (RFC 8941 section 3.2) is ignored.
func Targeted(h http.Header, fields []string) (cc CacheControl, field string, ok bool) {
	for _, name := range fields {
		lines := h[name]
		if len(lines) == 0 {
			continue
		}
		if cc, ok := ParseTargeted(strings.Join(lines, ",")); ok {
			return cc, name, true
		}
	}
	return unsetCacheControl, "", false
}

// ParseTargeted parses the value of a targeted cache-control field, a
// Structured Field Dictionary whose members are cache directives. ok is
// false when the value is not a valid dictionary or has no member.
// Directives whose values break the constraints Cache-Control implies (a
// max-age that is not a non-negative Integer, say) are ignored, as RFC
// 9213 section 2.1 asks; parameters are ignored.
func ParseTargeted(v string) (cc CacheControl, ok bool) {
	cc = unsetCacheControl
	p := sfParser{s: strings.TrimLeft(v, " ")}
	p.s = strings.TrimRight(p.s, " ")
	if p.s == "" {
		return cc, false
	}
	for {
		key, ok := p.key()
		if !ok {
			return cc, false
		}
		var item sfItem
		if p.consume('=') {
			if p.peek() == '(' {
				if !p.innerList() {
					return cc, false
				}
				item = sfItem{kind: sfOther}
			} else if item, ok = p.bareItem(); !ok {
				return cc, false
			}
		} else {
			item = sfItem{kind: sfBoolean, n: 1}
		}
		if !p.parameters() {
			return cc, false
		}
		cc.applyTargeted(key, item)
		p.ows()
		if p.s == "" {
			return cc, true
		}
		if !p.consume(',') {
			return cc, false
		}
		p.ows()
		if p.s == "" {
			return cc, false // a trailing comma
		}
	}
}

// applyTargeted sets one directive of a targeted field. A later member
// with the same key replaces an earlier one, as in any dictionary.
func (cc *CacheControl) applyTargeted(key string, it sfItem) {
	flag := it.kind == sfBoolean && it.n == 1
	delta := func(dst *int64) {
		if it.kind == sfInteger && it.n >= 0 {
			*dst = min(it.n, maxDeltaSeconds)
		} else {
			*dst = -1
		}
	}
	switch key {
	case "max-age":
		delta(&cc.MaxAge)
	case "s-maxage":
		delta(&cc.SMaxAge)
	case "stale-while-revalidate":
		delta(&cc.StaleWhileRevalidate)
	case "stale-if-error":
		delta(&cc.StaleIfError)
	case "no-store":
		cc.NoStore = flag
	case "no-cache":
		cc.NoCache = flag
		if it.kind == sfString {
			cc.NoCacheFields = appendFieldNames(nil, it.s)
		}
	case "private":
		cc.Private = flag
		if it.kind == sfString {
			cc.PrivateFields = appendFieldNames(nil, it.s)
		}
	case "public":
		cc.Public = flag
	case "must-revalidate":
		cc.MustRevalidate = flag
	case "proxy-revalidate":
		cc.ProxyRevalidate = flag
	case "must-understand":
		cc.MustUnderstand = flag
	case "immutable":
		cc.Immutable = flag
	}
}

// The kinds of bare item a directive's value can be, as far as cache
// directives care.
const (
	sfOther = iota // decimal, token, byte sequence or inner list
	sfInteger
	sfString
	sfBoolean
)

type sfItem struct {
	kind int
	n    int64
	s    string
}

// sfParser parses Structured Field values (RFC 8941 section 4.2) as far
// as a dictionary of cache directives needs: every type is checked, only
// integers, strings and booleans are kept.
type sfParser struct{ s string }

func (p *sfParser) peek() byte {
	if p.s == "" {
		return 0
	}
	return p.s[0]
}

func (p *sfParser) consume(c byte) bool {
	if p.peek() == c && p.s != "" {
		p.s = p.s[1:]
		return true
	}
	return false
}

func (p *sfParser) ows() {
	for p.s != "" && (p.s[0] == ' ' || p.s[0] == '\t') {
		p.s = p.s[1:]
	}
}

func isLCAlpha(c byte) bool { return c >= 'a' && c <= 'z' }
func isAlpha(c byte) bool   { return isLCAlpha(c) || (c >= 'A' && c <= 'Z') }
func isDigit(c byte) bool   { return c >= '0' && c <= '9' }

// key parses a key: lcalpha or "*", then lcalpha, digits, "_-.*".
func (p *sfParser) key() (string, bool) {
	if p.s == "" || !(isLCAlpha(p.s[0]) || p.s[0] == '*') {
		return "", false
	}
	i := 1
	for i < len(p.s) {
		c := p.s[i]
		if !(isLCAlpha(c) || isDigit(c) || c == '_' || c == '-' || c == '.' || c == '*') {
			break
		}
		i++
	}
	k := p.s[:i]
	p.s = p.s[i:]
	return k, true
}

func (p *sfParser) parameters() bool {
	for p.consume(';') {
		for p.consume(' ') {
		}
		if _, ok := p.key(); !ok {
			return false
		}
		if p.consume('=') {
			if _, ok := p.bareItem(); !ok {
				return false
			}
		}
	}
	return true
}

func (p *sfParser) innerList() bool {
	p.consume('(')
	for {
		for p.consume(' ') {
		}
		if p.consume(')') {
			return p.parameters()
		}
		if _, ok := p.bareItem(); !ok || !p.parameters() {
			return false
		}
		if c := p.peek(); c != ' ' && c != ')' {
			return false
		}
	}
}

func (p *sfParser) bareItem() (sfItem, bool) {
	c := p.peek()
	switch {
	case c == '-' || isDigit(c):
		return p.number()
	case c == '"':
		return p.str()
	case c == '*' || isAlpha(c):
		p.token()
		return sfItem{kind: sfOther}, true
	case c == ':':
		return sfItem{kind: sfOther}, p.byteSequence()
	case c == '?':
		if len(p.s) < 2 || (p.s[1] != '0' && p.s[1] != '1') {
			return sfItem{}, false
		}
		it := sfItem{kind: sfBoolean, n: int64(p.s[1] - '0')}
		p.s = p.s[2:]
		return it, true
	}
	return sfItem{}, false
}

// number parses an Integer (at most 15 digits) or a Decimal (at most 12
// integer and 3 fractional digits).
func (p *sfParser) number() (sfItem, bool) {
	neg := p.consume('-')
	if !isDigit(p.peek()) {
		return sfItem{}, false // a digit must follow the sign
	}
	i, dot := 0, -1
	var n int64
	for i < len(p.s) {
		c := p.s[i]
		if isDigit(c) {
			n = n*10 + int64(c-'0')
		} else if c == '.' && dot < 0 {
			if i > 12 {
				return sfItem{}, false
			}
			dot = i
		} else {
			break
		}
		i++
		if dot < 0 && i > 15 {
			return sfItem{}, false
		}
	}
	text := p.s[:i]
	p.s = p.s[i:]
	switch {
	case i == 0:
		return sfItem{}, false
	case dot >= 0:
		if frac := len(text) - dot - 1; frac < 1 || frac > 3 {
			return sfItem{}, false
		}
		return sfItem{kind: sfOther}, true
	case neg:
		n = -n
	}
	return sfItem{kind: sfInteger, n: n}, true
}

func (p *sfParser) str() (sfItem, bool) {
	p.consume('"')
	var b strings.Builder
	for i := 0; i < len(p.s); i++ {
		c := p.s[i]
		switch {
		case c == '\\':
			i++
			if i == len(p.s) || (p.s[i] != '"' && p.s[i] != '\\') {
				return sfItem{}, false
			}
			b.WriteByte(p.s[i])
		case c == '"':
			p.s = p.s[i+1:]
			return sfItem{kind: sfString, s: b.String()}, true
		case c < 0x20 || c > 0x7e:
			return sfItem{}, false
		default:
			b.WriteByte(c)
		}
	}
	return sfItem{}, false
}

// token parses a Token: its first character was checked.
func (p *sfParser) token() {
	i := 1
	for i < len(p.s) && (isTChar(p.s[i]) || p.s[i] == ':' || p.s[i] == '/') {
		i++
	}
	p.s = p.s[i:]
}

func isTChar(c byte) bool {
	return isAlpha(c) || isDigit(c) || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// CacheStatusID returns how Cache-Status names a cache (RFC 9211 section
// 2): its name as a Structured Field Token when it is one, else as a
// String. The name is printable ASCII.
func CacheStatusID(name string) string {
	if isToken(name) {
		return name
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(name); i++ {
		if c := name[i]; c == '"' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(name[i])
	}
	b.WriteByte('"')
	return b.String()
}

// isToken reports whether s is a Structured Field Token (RFC 8941 section
// 3.3.4), as the parser's token reads one.
func isToken(s string) bool {
	if s == "" || !(isAlpha(s[0]) || s[0] == '*') {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !isTChar(c) && c != ':' && c != '/' {
			return false
		}
	}
	return true
}

func (p *sfParser) byteSequence() bool {
	p.consume(':')
	for i := 0; i < len(p.s); i++ {
		c := p.s[i]
		if c == ':' {
			p.s = p.s[i+1:]
			return true
		}
		if !(isAlpha(c) || isDigit(c) || c == '+' || c == '/' || c == '=') {
			return false
		}
	}
	return false
}
