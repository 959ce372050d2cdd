package httpcache

import (
	"crypto/sha256"
	"encoding/binary"
	"hash/fnv"
	"net/http"
	"slices"
	"strings"
)

// MaxRawKeyLen bounds a key: an encoding longer than this is replaced by
// its SHA-256 digest.
const MaxRawKeyLen = 1024

// Key encodings start with one of these bytes, so a raw encoding never
// equals a digest.
const (
	keyRaw    = 0x01
	keyDigest = 'H'
)

// The last field of a key says whether it addresses the primary entry of a
// resource or one of its Vary variants.
const (
	keyPrimary = 'P'
	keyVariant = 'V'
)

// KeySpec says which parts of a request, beyond its method class, scheme,
// host and path, make up its cache key. It is immutable once built.
type KeySpec struct {
	// Query lists the query parameters that are part of the key, sorted;
	// nil means every parameter.
	Query []string
	// Headers lists the request headers that are part of the key, in
	// canonical form.
	Headers []string
	// Cookies lists the cookies whose values are part of the key, sorted:
	// those of key_cookies and those a {http.request.cookie.NAME}
	// placeholder names. A placeholder expands as Go's cookie parser reads
	// the request, which drops some values an origin reads and takes the
	// first of several; the key holds every value, as key_cookies does.
	Cookies []string

	id [8]byte
}

// NewKeySpec builds the spec of a writer's key options. Of the
// placeholders, only their templates enter the spec's fingerprint; the
// caller expands them.
func NewKeySpec(o KeyOptions) *KeySpec {
	s := new(KeySpec)
	if o.Query != nil {
		// A parameter that a {http.request.uri.query.NAME} placeholder
		// names is keyed as key_query keys it too: the placeholder
		// expands to the first value as Go parses queries, which drops a
		// pair holding ';', while an origin may read every value.
		names := slices.Concat(o.Query, o.placeholdersUnder("http.request.uri.query."))
		s.Query = slices.Compact(slices.Sorted(slices.Values(names)))
	}
	for _, h := range o.Headers {
		s.Headers = append(s.Headers, http.CanonicalHeaderKey(h))
	}
	s.Cookies = o.keyedCookies()
	// The fingerprint keeps the keys of different specs apart: a spec that
	// ignores a parameter must not find an entry written by one that
	// does not, and the other way round. Ignored cookies do not change
	// keys, but they change which requests an entry may answer.
	f := fnv.New64a()
	var b []byte
	b = appendList(b, s.Query, s.Query == nil)
	b = appendList(b, s.Headers, false)
	b = appendList(b, o.Placeholders, false)
	if len(s.Cookies) > 0 || len(o.IgnoreCookies) > 0 {
		b = appendList(b, s.Cookies, false)
		b = appendList(b, slices.Sorted(slices.Values(o.IgnoreCookies)), false)
	}
	f.Write(b)
	binary.BigEndian.PutUint64(s.id[:], f.Sum64())
	return s
}

// ID returns the spec's fingerprint.
func (s *KeySpec) ID() uint64 { return binary.BigEndian.Uint64(s.id[:]) }

func appendList(b []byte, list []string, isNil bool) []byte {
	if isNil {
		return append(b, 0)
	}
	b = append(b, 1)
	b = binary.AppendUvarint(b, uint64(len(list)))
	for _, v := range list {
		b = appendField(b, v)
	}
	return b
}

// appendField writes s with its length in front, which keeps the encoding
// unambiguous whatever bytes s holds.
func appendField(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// queryParam is one name=value pair of a query string, decoded. A component
// that does not decode is kept raw and flagged, so it never equals a decoded
// one.
type queryParam struct {
	name, value       string
	rawName, rawValue bool
}

// KeyBuilder encodes keys into a buffer it reuses. It is not safe for
// concurrent use; pool it.
type KeyBuilder struct {
	buf    []byte
	params []queryParam
}

// Reset drops what the builder retained when it grew large, so a hostile
// request cannot pin memory in a pool.
func (b *KeyBuilder) Reset() {
	if cap(b.buf) > 4*MaxRawKeyLen {
		b.buf = nil
	}
	if cap(b.params) > 256 {
		b.params = nil
	}
	clear(b.params[:cap(b.params)])
	b.params = b.params[:0]
}

// Build returns the key of r under spec, given the expanded values of the
// spec's placeholders. With vary == nil it is the resource's primary key;
// otherwise the key of the variant selected by the request headers named in
// vary. The result is valid until the next call.
func (b *KeyBuilder) Build(spec *KeySpec, r *http.Request, placeholders []string, vary []string) []byte {
	buf := append(b.buf[:0], keyRaw)
	buf = append(buf, spec.id[:]...)
	https := r.TLS != nil
	if https {
		buf = appendField(buf, "https")
	} else {
		buf = appendField(buf, "http")
	}
	buf = appendHost(buf, trimDefaultPort(r.Host, https))
	buf = appendField(buf, r.URL.EscapedPath())
	buf = b.appendQuery(buf, spec, r.URL.RawQuery)
	for _, name := range spec.Headers {
		buf = appendHeader(buf, r.Header, name)
	}
	if len(spec.Cookies) > 0 {
		buf = appendCookies(buf, r.Header, spec.Cookies)
	}
	buf = binary.AppendUvarint(buf, uint64(len(placeholders)))
	for _, v := range placeholders {
		buf = appendField(buf, v)
	}
	if vary == nil {
		buf = append(buf, keyPrimary)
	} else {
		buf = append(buf, keyVariant)
		buf = binary.AppendUvarint(buf, uint64(len(vary)))
		for _, name := range vary {
			buf = appendField(buf, name)
			buf = appendVaryHeader(buf, r.Header, name)
		}
	}
	if len(buf) > MaxRawKeyLen {
		sum := sha256.Sum256(buf)
		buf = append(append(buf[:0], keyDigest), sum[:]...)
	}
	b.buf = buf
	return buf
}

// CanonicalHost returns host lower-cased and without the default port of
// its scheme, as keys and purges compare hosts.
func CanonicalHost(host string, https bool) string {
	host = trimDefaultPort(host, https)
	for i := 0; i < len(host); i++ {
		if c := host[i]; 'A' <= c && c <= 'Z' {
			return string(appendLower(make([]byte, 0, len(host)), host))
		}
	}
	return host
}

func trimDefaultPort(host string, https bool) string {
	if https {
		return strings.TrimSuffix(host, ":443")
	}
	return strings.TrimSuffix(host, ":80")
}

// appendHost writes host lower-cased, without allocating.
func appendHost(buf []byte, host string) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(host)))
	return appendLower(buf, host)
}

// appendLower lower-cases ASCII letters only: other bytes, valid UTF-8 or
// not, are kept, so different hosts never fold into one.
func appendLower(buf []byte, host string) []byte {
	for i := 0; i < len(host); i++ {
		c := host[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf = append(buf, c)
	}
	return buf
}

// appendHeader writes whether the header is present, then its field lines.
// An absent header and an empty one encode differently.
func appendHeader(buf []byte, h http.Header, name string) []byte {
	values, ok := h[name]
	if !ok {
		return append(buf, 0)
	}
	buf = append(buf, 1)
	buf = binary.AppendUvarint(buf, uint64(len(values)))
	for _, v := range values {
		buf = appendField(buf, v)
	}
	return buf
}

// appendVaryHeader writes a header that selects a variant, normalised as
// RFC 9111 section 4.1 allows: its field lines are one list whose members
// lose the whitespace around them and empty members, and the fields whose
// values are case-insensitive (codings, languages, charsets) are
// lower-cased. An absent header and an empty one still differ.
func appendVaryHeader(buf []byte, h http.Header, name string) []byte {
	values, ok := h[name]
	if !ok {
		return append(buf, 0)
	}
	buf = append(buf, 1)
	fold := name == "Accept-Encoding" || name == "Accept-Language" || name == "Accept-Charset"
	for _, line := range values {
		for line != "" {
			var member string
			member, line = nextListItem(line)
			if member = trimOWS(member); member == "" {
				continue
			}
			buf = binary.AppendUvarint(buf, uint64(len(member)))
			if fold {
				buf = appendLower(buf, member)
			} else {
				buf = append(buf, member...)
			}
		}
	}
	// A member's length is never 0: 0 ends the list.
	return append(buf, 0)
}

// appendQuery writes the query parameters the spec keeps: all of them
// sorted by name (repeated names keep their order), or only the listed ones.
// Names and values are compared with their escapes normalised, so ?a=%41
// and ?a=A are one key, and ?q=a+b and ?q=a%20b two (see unescapeQuery).
func (b *KeyBuilder) appendQuery(buf []byte, spec *KeySpec, raw string) []byte {
	b.params = b.params[:0]
	for raw != "" {
		var pair string
		pair, raw, _ = strings.Cut(raw, "&")
		if pair == "" {
			continue
		}
		rawName, rawValue, _ := strings.Cut(pair, "=")
		var p queryParam
		p.name, p.rawName = unescapeQuery(rawName)
		if spec.Query != nil {
			if _, listed := slices.BinarySearch(spec.Query, p.name); !listed || p.rawName {
				continue
			}
		}
		p.value, p.rawValue = unescapeQuery(rawValue)
		b.params = append(b.params, p)
	}
	slices.SortStableFunc(b.params, func(x, y queryParam) int { return strings.Compare(x.name, y.name) })
	if spec.Query == nil {
		buf = binary.AppendUvarint(buf, uint64(len(b.params)))
		for _, p := range b.params {
			buf = appendQueryField(buf, p.name, p.rawName)
			buf = appendQueryField(buf, p.value, p.rawValue)
		}
		return buf
	}
	// Listed mode: every listed name with its count of values, so absent
	// and empty stay apart.
	i := 0
	for _, name := range spec.Query {
		start := i
		for i < len(b.params) && b.params[i].name == name {
			i++
		}
		buf = binary.AppendUvarint(buf, uint64(i-start))
		for _, p := range b.params[start:i] {
			buf = appendQueryField(buf, p.value, p.rawValue)
		}
	}
	return buf
}

func appendQueryField(buf []byte, s string, raw bool) []byte {
	if raw {
		buf = append(buf, 1)
	} else {
		buf = append(buf, 0)
	}
	return appendField(buf, s)
}

// unescapeQuery normalises a query component's percent-encoding (RFC 3986
// section 6.2.2.2): each escape is decoded, whatever its hex digits' case,
// but for the characters an origin may read apart from their escapes,
// which stay escaped in upper case: '+' (a bare '+' is a space to form
// decoding, a plus to RFC 3986), ';' (a separator to some), and '%'
// itself. A bare '+' stays a '+'. One that does not decode is returned as
// it is, with raw set.
func unescapeQuery(s string) (normalised string, raw bool) {
	i := strings.IndexByte(s, '%')
	if i < 0 {
		return s, false
	}
	buf := make([]byte, 0, len(s))
	buf = append(buf, s[:i]...)
	for ; i < len(s); i++ {
		if s[i] != '%' {
			buf = append(buf, s[i])
			continue
		}
		if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
			return s, true
		}
		switch c := unhex(s[i+1])<<4 | unhex(s[i+2]); c {
		case '+', ';', '%':
			const digits = "0123456789ABCDEF"
			buf = append(buf, '%', digits[c>>4], digits[c&15])
		default:
			buf = append(buf, c)
		}
		i += 2
	}
	return string(buf), false
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}
