package cachestore

import (
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/caddy-gateway/gateway/internal/httpcache"
)

// Result is what a lookup found.
type Result uint8

// The results, as counted and as the {http.cache.status} placeholder.
const (
	Hit         Result = iota // a fresh entry, served
	Miss                      // forwarded: no usable entry
	Stale                     // an entry past its freshness, served stale
	Bypass                    // the request may not be answered from a cache
	Revalidated               // a stored entry, served once the origin validated it

	// NumResults is how many results there are.
	NumResults = iota
)

var resultNames = [NumResults]string{"hit", "miss", "stale", "bypass", "revalidated"}

// String returns the result's name, such as "hit".
func (r Result) String() string {
	if int(r) < len(resultNames) {
		return resultNames[r]
	}
	return fmt.Sprintf("result(%d)", r)
}

// Expander expands the placeholders of a template for one request;
// *caddy.Replacer is one.
type Expander interface {
	ReplaceAll(input, empty string) string
}

// KeyRule is how one writer builds keys: the spec and the placeholder
// templates whose values join the key; and which of a request's cookies
// keep it from shared entries. Writers with equal rules share one.
type KeyRule struct {
	spec         *httpcache.KeySpec
	placeholders []string
	cookies      httpcache.CookieRule
	id           string
}

// NewKeyRule returns the rule of a writer's key options.
func NewKeyRule(o httpcache.KeyOptions) *KeyRule {
	spec := httpcache.NewKeySpec(o)
	return &KeyRule{spec: spec, placeholders: o.Placeholders, cookies: httpcache.NewCookieRule(o), id: fmt.Sprintf("%016x", spec.ID())}
}

// ID tells rules apart: equal rules have equal IDs.
func (k *KeyRule) ID() string { return k.id }

// PrivateCookies reports whether r carries a cookie that the rule's key
// neither holds nor ignores: one that may carry the caller's identity.
func (k *KeyRule) PrivateCookies(r *http.Request) bool { return k.cookies.Private(r.Header) }

// Build returns the key of r under the rule, for the resource's primary
// entry (vary nil) or for one of its variants. x expands the rule's
// placeholders. The result is valid until b's next use.
func (k *KeyRule) Build(b *httpcache.KeyBuilder, r *http.Request, x Expander, vary []string) []byte {
	var values []string
	if len(k.placeholders) > 0 {
		values = make([]string, len(k.placeholders))
		for i, t := range k.placeholders {
			values[i] = x.ReplaceAll(t, "")
		}
	}
	return b.Build(k.spec, r, values, vary)
}

var keyBuilders = sync.Pool{New: func() any { return new(httpcache.KeyBuilder) }}

// GetKeyBuilder takes a key builder from a pool shared by every store.
func GetKeyBuilder() *httpcache.KeyBuilder { return keyBuilders.Get().(*httpcache.KeyBuilder) }

// PutKeyBuilder returns a key builder to the pool.
func PutKeyBuilder(b *httpcache.KeyBuilder) {
	b.Reset()
	keyBuilders.Put(b)
}

// Lookup is what a reader found for one request without a fresh entry,
// handed to the writer that fetches the response so it need not look
// again: the store, and when it found a stale entry, that entry, the
// primary key under the writer's rule that found it and the epochs under
// which it was still stored. A writer
// uses it only when its own key of the request equals Primary.
type Lookup struct {
	Store *Store
	// Result is Miss, or Stale when Stale is set, or Bypass when only
	// entries were found that the request's cookies keep it from.
	Result Result

	// Counted is set by the writer that counted the request's result,
	// which only it knows once the origin answered.
	Counted bool

	// VaryMiss is set on a miss where the resource is stored, but not
	// the variant the request's headers select.
	VaryMiss bool

	// Snapshot and Path are set with Stale: the epochs of the request's
	// path while Stale was still stored. An invalidation after them drops
	// what the writer stores.
	Snapshot Snapshot
	Path     string

	// Rule is the writer's rule that found Stale, and Primary the key of
	// the resource's primary entry under it; both nil on a plain miss.
	Rule    *KeyRule
	Primary []byte

	// Stale is the entry found past its freshness, if any.
	Stale *Entry
}

// Want is what a request accepts as fresh (RFC 9111 section 5.2.1).
type Want struct {
	Now time.Time
	// MaxAge, when not negative, is the oldest entry the request accepts
	// (max-age); MinFresh how long it must stay fresh still (min-fresh).
	MaxAge   time.Duration
	MinFresh time.Duration
	// Validate asks for every entry found to be validated (no-cache).
	Validate bool
}

// Fresh reports whether the entry may answer the request without
// validation. A fresh immutable entry always may (RFC 8246).
func (w Want) Fresh(e *Entry) bool {
	if !w.Now.Before(e.Expires) {
		return false
	}
	if e.Immutable {
		return true
	}
	return !w.Validate && (w.MaxAge < 0 || e.Age(w.Now) <= w.MaxAge) &&
		w.Now.Add(w.MinFresh).Before(e.Expires)
}

// Age is the entry's age at now (RFC 9111 section 4.2.3).
func (e *Entry) Age(now time.Time) time.Duration {
	return max(e.InitialAge+now.Sub(e.StoredAt), 0)
}

// Find looks r up under the rule of every writer of the store. It returns
// an entry that want accepts as fresh, or nil and what was found instead.
// x expands the rules' placeholders. A fresh hit and a plain miss allocate
// nothing.
func (s *Store) Find(r *http.Request, x Expander, want Want) (*Entry, Lookup) {
	l := Lookup{Store: s, Result: Miss}
	rules := s.Rules()
	if len(rules) == 0 {
		return nil, l
	}
	kb := GetKeyBuilder()
	defer PutKeyBuilder(kb)
	varyMiss := false
	cookieMiss := false
	for _, rule := range rules {
		e := s.Get(rule.Build(kb, r, x, nil))
		if e != nil && e.Vary != nil {
			e = s.Get(rule.Build(kb, r, x, e.Vary))
			varyMiss = varyMiss || e == nil
		}
		if e != nil && !e.Shared && rule.PrivateCookies(r) {
			// Stored for whoever asked without such cookies; this
			// request may be someone's own.
			e, cookieMiss = nil, true
		}
		switch {
		case e == nil:
		case want.Fresh(e):
			return e, Lookup{}
		case l.Stale == nil:
			l.Result, l.Stale, l.Rule = Stale, e, rule
		}
	}
	if l.Stale != nil && s.snapshotHolding(l.Stale, r, &l) {
		l.Primary = slices.Clone(l.Rule.Build(kb, r, x, nil))
		return nil, l
	}
	if cookieMiss {
		return nil, Lookup{Store: s, Result: Bypass}
	}
	return nil, Lookup{Store: s, Result: Miss, VaryMiss: varyMiss}
}

// snapshotHolding takes the epochs of the request's path into l, and
// reports whether the stale entry e is still stored under them: either
// an invalidation dropped it before, or the snapshot predates the
// invalidation, which then drops what the writer stores. Only a stale
// entry needs this, so a hit and a plain miss do not pay for it.
func (s *Store) snapshotHolding(e *Entry, r *http.Request, l *Lookup) bool {
	l.Path = r.URL.EscapedPath()
	s.mu.RLock()
	defer s.mu.RUnlock()
	l.Snapshot = s.Snapshot(l.Path)
	return s.Get(e.Key) == e
}
