package httpcache

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
)

// req builds a request; header lines are "Name: value".
func req(target string, headers ...string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, target, nil)
	for _, h := range headers {
		name, value, _ := strings.Cut(h, ":")
		r.Header.Add(name, strings.TrimSpace(value))
	}
	return r
}

func key(spec *KeySpec, r *http.Request, placeholders []string, vary []string) string {
	var b KeyBuilder
	return string(b.Build(spec, r, placeholders, vary))
}

func TestKeyDistinguishes(t *testing.T) {
	all := NewKeySpec(KeyOptions{})
	withHeader := NewKeySpec(KeyOptions{Headers: []string{"client_id", "X-Sep"}})
	listed := NewKeySpec(KeyOptions{Query: []string{"orderBy", "page"}})
	tlsReq := req("https://example.com/a")
	tlsReq.TLS = &tls.ConnectionState{}

	tests := []struct {
		name string
		spec *KeySpec
		a, b *http.Request
	}{
		{"resource and sub-resource", all, req("/products"), req("/products/123")},
		{"two sub-resources", all, req("/products/123"), req("/products/456")},
		{"escaped query mark in path", all, req("/a%3Fb=c"), req("/a?b=c")},
		{"escaped slash in path", all, req("/a%2Fb"), req("/a/b")},
		{"query value differs", all, req("/p?orderBy=date"), req("/p?orderBy=price")},
		{"separator inside a value", all, req("/p?a=1%262&b=3"), req("/p?a=1&2&b=3")},
		{"equals inside a value", all, req("/p?a=b%3Dc"), req("/p?a%3Db=c")},
		{"repeated values keep order", all, req("/p?a=1&a=2"), req("/p?a=2&a=1")},
		{"undecodable versus decoded", all, req("/p?a=%zz"), req("/p?a=%25zz")},
		// Origins read these apart: '+' is a space to form decoding and a
		// plus to RFC 3986; ';' separates parameters to some; an escaped
		// '%' is not the escape it spells.
		{"plus versus escaped space", all, req("/s?q=a+b"), req("/s?q=a%20b")},
		{"plus versus escaped plus", all, req("/s?q=a+b"), req("/s?q=a%2Bb")},
		{"escaped space versus escaped plus", all, req("/s?q=a%20b"), req("/s?q=a%2Bb")},
		{"semicolon versus escaped semicolon", all, req("/s?a=1;b=2"), req("/s?a=1%3Bb=2")},
		{"escaped percent versus the escape it spells", all, req("/s?a=%252B"), req("/s?a=%2B")},
		{"listed: plus versus escaped space", listed, req("/p?page=a+b"), req("/p?page=a%20b")},
		{"host differs", all, req("http://a.example/x"), req("http://b.example/x")},
		{"scheme differs", all, req("http://example.com/a"), tlsReq},
		{"listed parameter differs", listed, req("/p?orderBy=date"), req("/p?orderBy=price")},
		{"listed absent versus empty", listed, req("/p"), req("/p?page=")},
		{"header absent versus empty", withHeader, req("/x"), req("/x", "Client_id:")},
		{"header values differ", withHeader, req("/x", "Client_id: a"), req("/x", "Client_id: b")},
		{"separator in header value", withHeader, req("/x", "Client_id: a", "X-Sep: b"), req("/x", "Client_id: a\x01b")},
		{"header moved between names", withHeader, req("/x", "Client_id: ab"), req("/x", "X-Sep: ab")},
		{"two lines versus one", withHeader, req("/x", "Client_id: a", "Client_id: b"), req("/x", "Client_id: a, b")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if ka, kb := key(tt.spec, tt.a, nil, nil), key(tt.spec, tt.b, nil, nil); ka == kb {
				t.Errorf("%s and %s share the key %q", tt.a.URL, tt.b.URL, ka)
			}
		})
	}
}

func TestKeyEquates(t *testing.T) {
	all := NewKeySpec(KeyOptions{})
	listed := NewKeySpec(KeyOptions{Query: []string{"page", "orderBy"}})
	tests := []struct {
		name string
		spec *KeySpec
		a, b *http.Request
	}{
		{"parameter order", all, req("/p?a=1&b=2"), req("/p?b=2&a=1")},
		{"percent-encoded value", all, req("/p?a=%41"), req("/p?a=A")},
		{"percent-encoded name", listed, req("/p?pag%65=2"), req("/p?page=2")},
		{"hex digits' case", all, req("/p?a=%3b&b=%2b"), req("/p?a=%3B&b=%2B")},
		{"escaped bracket", all, req("/p?filter%5Bs%5D=1"), req("/p?filter[s]=1")},
		{"host case and default port", all, req("http://Example.COM:80/x"), req("http://example.com/x")},
		{"unlisted parameter ignored", listed, req("/p?page=2&utm_source=x"), req("/p?page=2")},
		{"listed parameters in any order", listed, req("/p?page=2&orderBy=date"), req("/p?orderBy=date&page=2")},
		{"empty pairs ignored", all, req("/p?a=1&&b=2"), req("/p?a=1&b=2")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if ka, kb := key(tt.spec, tt.a, nil, nil), key(tt.spec, tt.b, nil, nil); ka != kb {
				t.Errorf("%s and %s have different keys", tt.a.URL, tt.b.URL)
			}
		})
	}
}

func TestKeyPlaceholdersAndVary(t *testing.T) {
	spec := NewKeySpec(KeyOptions{Placeholders: []string{"{http.auth.user.id}", "{x}"}})
	r := req("/x", "Accept: json")
	if key(spec, r, []string{"ab", ""}, nil) == key(spec, r, []string{"a", "b"}, nil) {
		t.Error("placeholder values ab,'' and a,b share a key")
	}
	if key(spec, r, []string{"u1", ""}, nil) == key(spec, r, []string{"u2", ""}, nil) {
		t.Error("two users share a key")
	}
	primary := key(spec, r, []string{"u", ""}, nil)
	variant := key(spec, r, []string{"u", ""}, []string{"Accept"})
	if primary == variant {
		t.Error("a variant key equals the primary key")
	}
	other := key(spec, req("/x", "Accept: xml"), []string{"u", ""}, []string{"Accept"})
	if other == variant {
		t.Error("variants with different Accept share a key")
	}
	absent := key(spec, req("/x"), []string{"u", ""}, []string{"Accept"})
	if absent == variant || absent == other {
		t.Error("a variant without Accept shares a key with one that has it")
	}
}

func TestKeySpecsDoNotShareKeys(t *testing.T) {
	a := NewKeySpec(KeyOptions{Query: []string{"page"}})
	b := NewKeySpec(KeyOptions{})
	c := NewKeySpec(KeyOptions{Headers: []string{"X-A"}})
	r := req("/p")
	if key(a, r, nil, nil) == key(b, r, nil, nil) || key(b, r, nil, nil) == key(c, r, nil, nil) {
		t.Error("two key specs produce the same key for one request")
	}
	if NewKeySpec(KeyOptions{Query: []string{"b", "a"}}).ID() != NewKeySpec(KeyOptions{Query: []string{"a", "b"}}).ID() {
		t.Error("the order of key_query names changes the spec")
	}
}

func TestKeyIsBounded(t *testing.T) {
	spec := NewKeySpec(KeyOptions{Headers: []string{"X-Big"}})
	long := strings.Repeat("a", 100_000)
	k1 := key(spec, req("/x?"+long), nil, nil)
	k2 := key(spec, req("/x", "X-Big: "+long), nil, nil)
	k3 := key(spec, req("/x?"+long+"b"), nil, nil)
	for _, k := range []string{k1, k2, k3} {
		if len(k) > MaxRawKeyLen {
			t.Fatalf("key of %d bytes exceeds %d", len(k), MaxRawKeyLen)
		}
	}
	if k1 == k2 || k1 == k3 {
		t.Error("long requests that differ share a key")
	}
	short := key(spec, req("/x"), nil, nil)
	if strings.Contains(k1, long[:100]) || !strings.Contains(short, "/x") {
		t.Error("a long key is not hashed, or a short one is")
	}
}

func TestKeyBuilderResetDropsLargeBuffers(t *testing.T) {
	var b KeyBuilder
	var sb strings.Builder
	for i := range 2000 {
		sb.WriteString("p")
		sb.WriteString(strings.Repeat("x", i%7))
		sb.WriteString("=1&")
	}
	b.Build(NewKeySpec(KeyOptions{}), req("/x?"+sb.String()), nil, nil)
	b.Reset()
	if cap(b.params) > 256 || cap(b.buf) > 4*MaxRawKeyLen {
		t.Errorf("after Reset the builder keeps %d params and %d bytes", cap(b.params), cap(b.buf))
	}
}

func FuzzKey(f *testing.F) {
	f.Add("/a?b=c", "/a%3Fb=c", "x", "y")
	f.Add("/p?a=1&a=2", "/p?a=2&a=1", "", "\x00")
	f.Add("/p?page=&x", "/p", "a,b", "a")
	spec := NewKeySpec(KeyOptions{Headers: []string{"X-K"}})
	f.Fuzz(func(t *testing.T, target1, target2, h1, h2 string) {
		r1, err1 := http.NewRequest(http.MethodGet, "http://h"+target1, nil)
		r2, err2 := http.NewRequest(http.MethodGet, "http://h"+target2, nil)
		if err1 != nil || err2 != nil {
			return
		}
		r1.Header["X-K"] = []string{h1}
		r2.Header["X-K"] = []string{h2}
		k1, k2 := key(spec, r1, nil, nil), key(spec, r2, nil, nil)
		if len(k1) > MaxRawKeyLen+1 {
			t.Fatalf("key of %d bytes", len(k1))
		}
		same := h1 == h2 && CanonicalHost(r1.Host, false) == CanonicalHost(r2.Host, false) &&
			r1.URL.EscapedPath() == r2.URL.EscapedPath() &&
			sameQuery(r1.URL.RawQuery, r2.URL.RawQuery)
		if same != (k1 == k2) {
			t.Fatalf("requests %q/%q and %q/%q: equivalent=%v but equal keys=%v", target1, h1, target2, h2, same, k1 == k2)
		}
	})
}

// sameQuery is the reference model of query equivalence: the decoded
// pairs, ordered by name with repeated names in their original order, are
// equal, and a pair that does not decode only equals itself.
func sameQuery(a, b string) bool {
	return slices.Equal(modelQuery(a), modelQuery(b))
}

func modelQuery(raw string) []queryParam {
	var ps []queryParam
	for _, pair := range strings.Split(raw, "&") {
		if pair == "" {
			continue
		}
		n, v, _ := strings.Cut(pair, "=")
		var p queryParam
		p.name, p.rawName = unescapeQuery(n)
		p.value, p.rawValue = unescapeQuery(v)
		ps = append(ps, p)
	}
	slices.SortStableFunc(ps, func(x, y queryParam) int { return strings.Compare(x.name, y.name) })
	return ps
}

func BenchmarkKeyBuild(b *testing.B) {
	spec := NewKeySpec(KeyOptions{Query: []string{"orderBy", "page"}, Headers: []string{"Client_id"}})
	r := req("http://api.example.com/products/123?page=2&orderBy=date&utm_source=x", "Client_id: abc")
	var kb KeyBuilder
	b.ReportAllocs()
	for b.Loop() {
		kb.Build(spec, r, nil, nil)
	}
}

// A cookie that a {http.request.cookie.NAME} placeholder names counts as
// keyed (it does not make a request private), so the key must hold what
// the origin may read of it, not only what Caddy's replacer expands: Go's
// cookie parser drops a value with '"', '\' or a byte past ASCII, every
// cookie of a header with more than 3000 ';', and takes the first of
// several values. The cookie is keyed as key_cookies keys it, each value.
func TestCookiePlaceholderKeysWhatTheOriginReads(t *testing.T) {
	spec := NewKeySpec(KeyOptions{Placeholders: []string{"{http.request.cookie.lang}"}})
	expand := func(r *http.Request) []string {
		c, err := r.Cookie("lang")
		if err != nil {
			return []string{""}
		}
		return []string{c.Value}
	}
	none := req("/p")
	for _, cookie := range []string{`lang=x"evil`, "lang=evil; " + strings.Repeat(";", 3001), "lang=a; lang=evil"} {
		r := req("/p", "Cookie: "+cookie)
		other := req("/p", "Cookie: lang=a")
		if key(spec, r, expand(r), nil) == key(spec, none, expand(none), nil) {
			t.Errorf("Cookie %.30q has the key of a request without it", cookie)
		}
		if cookie == "lang=a; lang=evil" && key(spec, r, expand(r), nil) == key(spec, other, expand(other), nil) {
			t.Errorf("Cookie %q has the key of Cookie: lang=a", cookie)
		}
	}
}

// A query parameter that a {http.request.uri.query.NAME} placeholder
// names, with key_query listing others, is keyed by its every value: the
// placeholder expands to the first as Go parses queries, which drops a
// pair holding ';', so two requests an origin reads apart would share it.
func TestQueryPlaceholderKeysEveryValue(t *testing.T) {
	spec := NewKeySpec(KeyOptions{Query: []string{"page"}, Placeholders: []string{"{http.request.uri.query.lang}"}})
	expand := func(r *http.Request) []string { return []string{r.URL.Query().Get("lang")} }
	for _, p := range [][2]string{{"/p?lang=fr&lang=evil", "/p?lang=fr"}, {"/p?lang=evil;x", "/p"}} {
		a, b := req(p[0]), req(p[1])
		if key(spec, a, expand(a), nil) == key(spec, b, expand(b), nil) {
			t.Errorf("%s and %s share a key", p[0], p[1])
		}
	}
}
