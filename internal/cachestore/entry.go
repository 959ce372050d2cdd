package cachestore

import (
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/caddy-gateway/gateway/internal/httpcache"
)

// Entry is one stored response, or, when Vary is set, the marker that
// tells which request headers select the variants of a resource. Once
// handed to Put it is shared by every request that finds it: read-only.
type Entry struct {
	Key  []byte // the key it is stored under
	Host string // canonical host, for purges by absolute URL
	Path string // escaped path, for purges by URL and prefix
	Tags []string

	// Vary, on a marker, lists the request headers that select a variant.
	Vary []string
	// variants, on a marker, are the keys of the variants stored through
	// it, oldest first.
	variants [][]byte

	Status int
	Fields []Field
	// Targeted are the cache's own targeted cache-control fields (RFC
	// 9213) the response came with: never served, they decide its
	// freshness again when a validation's answer lacks them (RFC 9111
	// section 4.3.4).
	Targeted    []Field
	CacheStatus []string // the upstream's Cache-Status members
	Validators  httpcache.Validators
	Body        []byte
	StoredAt    time.Time
	InitialAge  time.Duration // RFC 9111 section 4.2.3 corrected_initial_age
	Expires     time.Time     // the end of freshness

	// StaleWhileRevalidate and StaleIfError are how long past Expires the
	// entry may be served stale (RFC 5861); NoStale forbids it whatever
	// the windows. Immutable marks a response that a fresh entry answers
	// even when the client asks for validation (RFC 8246).
	StaleWhileRevalidate time.Duration
	StaleIfError         time.Duration
	NoStale              bool
	Immutable            bool

	// Shared marks a response that said public or s-maxage: it may answer
	// requests whose cookies the key does not hold (see KeyRule).
	Shared bool

	cost int64

	// seq numbers the entry as it enters the store; rejected is set when
	// the store's admission policy refused it (see pending).
	seq      uint64
	rejected bool

	// The entries of one path form a list that the index owns.
	indexed            bool
	prevPath, nextPath *Entry
}

// Field is one stored header field. A slice of them costs far less than
// an http.Header map, and a hit copies them into the response as fast.
type Field struct {
	Name   string
	Values []string
}

// Memory accounted per entry beyond its strings and body, measured with
// TestFloodStaysBounded under the race detector: the entry, its slot in the
// store's maps and policy, and its place in the index. The maps keep the
// size they grew to, so the figure is the worst of several runs, not the
// mean: ristretto's expiration buckets, one map per five seconds of expiry,
// each hold their peak until their time passes.
const (
	entryOverhead       = 760
	headerValueOverhead = 40
)

// computeCost sets e.cost to the bytes the entry holds in memory.
func (e *Entry) computeCost() {
	n := int64(entryOverhead + len(e.Key) + len(e.Host) + len(e.Path) + cap(e.Body))
	for _, t := range e.Tags {
		n += int64(len(t) + 2*headerValueOverhead)
	}
	for _, v := range e.Vary {
		n += int64(len(v) + headerValueOverhead)
	}
	for _, k := range e.variants {
		n += int64(len(k) + headerValueOverhead)
	}
	for _, fields := range [...][]Field{e.Fields, e.Targeted} {
		for _, f := range fields {
			n += int64(len(f.Name)) + valuesSize(f.Values)
		}
	}
	e.cost = n + valuesSize(e.CacheStatus)
}

func valuesSize(values []string) int64 {
	n := int64(headerValueOverhead)
	for _, v := range values {
		n += int64(len(v) + 16)
	}
	return n
}

// HeaderSize estimates the bytes a header holds once stored, so a writer
// can tell before copying anything whether a response can fit.
func HeaderSize(h http.Header) int64 {
	var n int64
	for k, vs := range h {
		n += int64(len(k)) + valuesSize(vs)
	}
	return n
}

// OuterField is a header field as it was before the next handler ran: its
// name and its values slice (not a copy: an inner handler that replaces
// the field makes a slice of its own, and one that adds to it writes past
// the recorded length).
type OuterField struct {
	name   string
	values []string
}

// OuterFields records in buf which value slices the header holds now, to
// tell later which fields no inner handler touched.
func OuterFields(buf []OuterField, h http.Header) []OuterField {
	for name, v := range h {
		if len(v) > 0 {
			buf = append(buf, OuterField{name, v})
		}
	}
	return buf
}

// KeepOuter puts h back to the fields outer handlers set, as they set
// them, whatever inner handlers added, replaced or deleted since: they
// belong to the request, not to the response it is about to be given
// instead of the inner handlers' (a stored one, or a second fetch).
func KeepOuter(h http.Header, outer []OuterField) {
	clear(h)
	for _, o := range outer {
		h[o.name] = o.values[:len(o.values):len(o.values)]
	}
}

// untouched reports whether the values are still those an outer handler
// set.
func untouched(outer []OuterField, name string, values []string) bool {
	for _, o := range outer {
		if o.name == name {
			return &values[0] == &o.values[0]
		}
	}
	return false
}

// StoredFields copies the header fields a stored response keeps: not the
// upstream's Cache-Status, which is returned apart so a hit can add its own
// member; not the fields that describe one connection; not Content-Length,
// which the writer sets from the body; not the fields omit names (those of
// private="..." and no-cache="..."); and not the fields that outer
// handlers set (outer) and no inner handler replaced: they belong to one
// request, and a hit gets its own. One block holds every value, and each
// field's values are clipped, so a handler that appends to them on a hit
// copies them.
func StoredFields(h http.Header, outer []OuterField, omit []string) (fields []Field, cacheStatus []string) {
	n := 0
	for _, values := range h {
		n += len(values)
	}
	block := make([]string, 0, n)
	fields = make([]Field, 0, len(h)+2) // room for Content-Length and Etag
	for name, values := range h {
		if len(values) == 0 || notStored(name) || untouched(outer, name, values) || slices.Contains(omit, name) {
			continue
		}
		start := len(block)
		block = append(block, values...)
		kept := block[start:len(block):len(block)]
		if name == "Cache-Status" {
			cacheStatus = kept
			continue
		}
		fields = append(fields, Field{name, kept})
	}
	return fields, cacheStatus
}

// notStored reports whether a header field is one that describes one
// connection, never the stored response, or Content-Length, which the
// writer sets from the body.
func notStored(name string) bool {
	switch name {
	case "Connection", "Keep-Alive", "Proxy-Connection", "Te", "Trailer", "Transfer-Encoding", "Upgrade", "Content-Length":
		return true
	}
	return false
}

// Bounds on the tags one entry carries, so a hostile origin header cannot
// grow the index beyond what the entry's cost accounts for.
const (
	MaxTagsPerEntry = 64
	MaxTagLen       = 256
)

// Tags collects an entry's tags from the named response headers, whose
// values are separated by spaces or commas. Tags beyond the bounds are
// dropped.
func Tags(h http.Header, names []string) []string {
	var tags []string
	for _, name := range names {
		for _, line := range h.Values(name) {
			for _, t := range strings.FieldsFunc(line, func(r rune) bool { return r == ' ' || r == ',' || r == '\t' }) {
				if len(t) <= MaxTagLen && len(tags) < MaxTagsPerEntry {
					tags = append(tags, t)
				}
			}
		}
	}
	return tags
}

// StaleUsable reports whether the entry, stale at now, may still be served
// stale within a window: for swr, while one request revalidates it; for
// the error window, while the origin fails.
func (e *Entry) StaleUsable(now time.Time, window time.Duration) bool {
	return !e.NoStale && window > 0 && now.Before(e.Expires.Add(window))
}

// StaleKeep is how long an entry with a validator is kept past its
// freshness, to be revalidated rather than fetched again.
const StaleKeep = time.Hour

// Keep returns how long, from now, the store should hold an entry stored
// now: its freshness, then whichever of its stale windows is longest, and
// StaleKeep for an entry that can be revalidated.
func (e *Entry) Keep(now time.Time) time.Duration {
	stale := max(e.StaleWhileRevalidate, e.StaleIfError)
	if e.Validators.ETag != "" || e.Validators.LastModified != "" {
		stale = max(stale, StaleKeep)
	}
	return max(e.Expires.Sub(now), 0) + stale
}
