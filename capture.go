package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-gateway/gateway/internal/cachestore"
	"github.com/caddy-gateway/gateway/internal/httpcache"
)

// cacheWriter streams a response to the client and keeps a bounded copy
// of it to store once it is known to be complete.
type cacheWriter struct {
	http.ResponseWriter
	h     *CacheWrite
	r     *http.Request
	ctx   context.Context // the upstream request's, which may outlive r's
	repl  *caddy.Replacer
	found *cachestore.Lookup // what cache_read found for this key, if it ran
	path  string
	snap  cachestore.Snapshot

	// primary is the key of the resource's primary entry, when it was
	// built to check a hand-off; else commit builds it.
	primary []byte

	// outer marks the fields set before this handler ran (by rate_limit or
	// header, say): they belong to this request, not to the response, and
	// are not stored unless a later handler replaced them.
	outer    []cachestore.OuterField
	outerBuf [4]cachestore.OuterField

	requestTime  time.Time
	responseTime time.Time
	wroteHeader  bool
	storing      bool
	done         bool

	// revalidating is set when the upstream request validates the stale
	// entry; absorbed once the upstream's response is replaced by a
	// stored one (validated, or stale on error) and goes nowhere, or by
	// the answer to asking again: refetch is set when the validation was
	// answered with a 304 that may not update the entry.
	revalidating bool
	absorbed     bool
	refetch      bool

	// flight is the fetch this request leads for others that wait; outcome
	// is what became of the response, which they learn.
	flight  *cachestore.Flight
	outcome httpcache.Outcome
	// unfresh is set when what is stored must be validated before every
	// use (no-cache): no waiter can be answered from it, now or later. (A
	// response stale on arrival cannot answer the waiters either, but the
	// next may well be fresh: it does not make the key skip the queue.)
	unfresh bool

	// member starts the Cache-Status member of a forwarded response.
	member string

	// background is set for cache_read's refresh of a stale entry: it
	// leads no flight, and what it answers goes nowhere.
	background bool

	status   int
	e        *cachestore.Entry // what is stored once the body is complete
	vary     []string          // the request fields that select it, if any
	body     []byte
	limit    int64
	declared int64
}

// WriteHeader decides from the status and headers whether the response
// may be stored, says so in Cache-Status, and sends the header on; or,
// when a stale entry is at hand, answers from it instead: once the origin
// validated it (304), or within its stale-if-error window when the origin
// fails.
func (cw *cacheWriter) WriteHeader(status int) {
	if cw.wroteHeader || (status >= 100 && status < 200 && status != http.StatusSwitchingProtocols) {
		if !cw.absorbed {
			cw.ResponseWriter.WriteHeader(status)
		}
		return
	}
	cw.wroteHeader = true
	cw.status = status
	cw.responseTime = cw.h.now()
	st := cw.stale()
	switch {
	case cw.revalidating && status == http.StatusNotModified && !st.Validators.UpdatedBy(cw.Header()):
		// The 304 speaks of another representation than the one stored
		// (RFC 9111 section 4.3.4): the client gets neither; cache_write
		// asks again for the whole response.
		cw.absorbed, cw.refetch = true, true
		cw.outcome = httpcache.ReasonInvalidated
		cachestore.KeepOuter(cw.Header(), cw.outer)
		return
	case cw.revalidating && status == http.StatusNotModified,
		cw.r.Method == http.MethodHead && st != nil && status == http.StatusOK && sameRepresentation(st, cw.Header()):
		cw.absorbed = true
		cw.validated(st, status)
		return
	case st != nil && serverError(status) && st.StaleUsable(cw.responseTime, st.StaleIfError):
		cw.absorbed = true
		cw.outcome = httpcache.ReasonStatus
		cw.h.cache.Record(cw.outcome)
		cw.serveStale(st, "fwd=stale; fwd-status="+strconv.Itoa(status))
		return
	}
	member := cw.member
	if st != nil {
		member = cw.h.members.stale
		cw.count(cachestore.Miss)
	}
	member += "; fwd-status=" + strconv.Itoa(status)
	if cw.r.Method == http.MethodHead { // its answer has no body to store
		cw.h.dropOwn(cw.Header())
	} else if cw.outcome = cw.decide(); cw.outcome != httpcache.Stored {
		cw.h.cache.Record(cw.outcome)
		member += "; detail=" + cw.outcome.String()
		// Nothing will be stored: the requests that wait need not wait
		// for the body, which may stream for minutes (server-sent events).
		cw.land()
	} else {
		member += "; stored"
	}
	cw.Header().Add("Cache-Status", member)
	cw.ResponseWriter.WriteHeader(status)
}

// serverError reports whether a status is one that stale-if-error covers
// (RFC 5861 section 4).
func serverError(status int) bool {
	switch status {
	case http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// stale returns the stale entry handed over for this request, if any.
func (cw *cacheWriter) stale() *cachestore.Entry {
	if cw.found == nil {
		return nil
	}
	return cw.found.Stale
}

// failed handles an upstream that gave no response at all: the stale
// entry is served within its stale-if-error window; an entry that must
// not be served stale makes the failure a 504 (RFC 9111 section 4.2.4).
func (cw *cacheWriter) failed(err error) error {
	st := cw.stale()
	if st == nil {
		return err
	}
	now := cw.h.now()
	if st.StaleUsable(now, st.StaleIfError) {
		cw.wroteHeader, cw.absorbed = true, true
		cw.responseTime = now
		cw.serveStale(st, "fwd=stale; detail=ORIGIN-UNREACHABLE")
		return nil
	}
	if st.NoStale {
		// Not %w: the upstream's own status must not win over 504.
		return caddyhttp.Error(http.StatusGatewayTimeout, fmt.Errorf("the stale entry must be validated and the origin failed: %v", err))
	}
	return err
}

// count counts the request's result, which only the writer knows once the
// origin answered a request that found a stale entry. A background
// refresh is no client's request: cache_read counted the one that started
// it.
func (cw *cacheWriter) count(r cachestore.Result) {
	cw.found.Counted = true
	if !cw.background {
		cw.h.cache.Count(r)
	}
}

// serveStale answers from the stale entry, in place of the origin's
// response.
func (cw *cacheWriter) serveStale(st *cachestore.Entry, how string) {
	cw.land() // the waiters go on now, not once this client has the body
	cw.count(cachestore.Stale)
	cw.repl.Set(placeholderStatus, resultValues[cachestore.Stale])
	cachestore.KeepOuter(cw.Header(), cw.outer)
	serveStored(cw.ResponseWriter, cw.r, cw.h.statusID, st, cw.responseTime, how)
}

// sameRepresentation reports whether a 200 answering a HEAD may update
// the stored 200 st (RFC 9111 section 4.3.5): each ETag, Last-Modified
// and Content-Length it has matches st's. One with none of them updates
// st too: the section is meant for stored responses without validators,
// and the origin says a GET would now have that header.
func sameRepresentation(st *cachestore.Entry, hdr http.Header) bool {
	if st.Status != http.StatusOK {
		return false
	}
	for _, f := range [...]struct{ got, stored string }{
		{hdr.Get("Etag"), st.Validators.ETag},
		{hdr.Get("Last-Modified"), st.Validators.LastModified},
		{hdr.Get("Content-Length"), strconv.Itoa(len(st.Body))},
	} {
		if f.got != "" && f.got != f.stored {
			return false
		}
	}
	return true
}

// validated answers from the stale entry that the origin validated, with
// a 304 or a 200 to a HEAD, after updating it with the answer's header
// fields (RFC 9111 sections 3.2, 4.3.4 and 4.3.5) and storing it again
// with its new freshness.
func (cw *cacheWriter) validated(st *cachestore.Entry, status int) {
	h := cw.h
	fresh, upstreamStatus := cachestore.StoredFields(cw.Header(), cw.outer, nil)
	merged := make(http.Header, len(st.Fields)+len(st.Targeted)+len(fresh))
	for _, f := range st.Fields {
		merged[f.Name] = f.Values
	}
	// The stored response's own targeted fields decide its freshness
	// again, unless the answer brings new ones; those that this config
	// no longer calls its own (a reload kept the entry) are never
	// served.
	for _, f := range st.Targeted {
		if slices.Contains(h.policy.Own, f.Name) {
			merged[f.Name] = f.Values
		}
	}
	for _, f := range fresh {
		if !keptOnUpdate(f.Name) {
			merged[f.Name] = f.Values
		}
	}
	// The entry's age starts again from the validating response's (RFC
	// 9111 section 4.2.3): its Age or none, and its Date or, without one,
	// the moment it arrived (RFC 9110 section 6.6.1).
	if _, ok := cw.Header()["Age"]; !ok {
		delete(merged, "Age")
	}
	if _, ok := cw.Header()["Date"]; !ok {
		merged["Date"] = []string{cw.responseTime.UTC().Format(http.TimeFormat)}
	}
	d := h.policy.Decide(httpcache.Exchange{
		RequestHeader:  cw.r.Header,
		PrivateCookies: h.rule.PrivateCookies(cw.r),
		UserInKey:      h.userInKey(cw.r, cw.repl),
		Status:         st.Status,
		Header:         merged,
		RequestTime:    cw.requestTime,
		ResponseTime:   cw.responseTime,
	})
	// Whether the response's own fields forbid storing it is read
	// before this cache's own fields leave the header.
	forbids := d.Outcome != httpcache.Stored && h.forbidsStoring(st.Status, merged)
	own := h.dropOwn(merged)
	e := h.newEntry(cw.r, cw.path, st.Status, merged, nil, d, cw.responseTime)
	e.Key, e.Body, e.Targeted = st.Key, st.Body, own
	// What the caches before this one said of the response: the
	// validating response's, or else the stored one's.
	e.CacheStatus = upstreamStatus
	if len(e.CacheStatus) == 0 {
		e.CacheStatus = st.CacheStatus
	}
	if vals := merged["Content-Length"]; len(vals) > 0 {
		e.Fields = append(e.Fields, cachestore.Field{Name: "Content-Length", Values: vals})
	}
	cw.outcome = d.Outcome
	stored := false
	switch cur := h.cache.Get(st.Key); {
	case cur != nil && cur != st:
		// Another request stored a newer response meanwhile, which the
		// older one validated here must not replace.
	case d.Outcome == httpcache.Stored:
		// The updated response is selected by the headers its Vary names
		// now (RFC 9111 section 4.1), which the 304 may have added or
		// changed.
		marker := cw.place(e, cw.found.Primary, httpcache.VaryNames(merged))
		cw.outcome = h.cache.Put(cw.snap, e.Keep(cw.responseTime), e, marker)
		cw.unfresh = d.NoCache
		stored = cw.outcome == httpcache.Stored
	default:
		if forbids {
			// The stored response, updated, may no longer be stored
			// (RFC 9111 section 4.3.4): kept, it would be served stale
			// later under the directives it had before.
			h.cache.Remove(st)
		}
		h.cache.Record(cw.outcome)
	}
	// The waiters go on now, not once this client has the whole body.
	cw.land()
	cw.count(cachestore.Revalidated)
	cw.repl.Set(placeholderStatus, resultValues[cachestore.Revalidated])
	cachestore.KeepOuter(cw.Header(), cw.outer)
	how := "fwd=stale; fwd-status=" + strconv.Itoa(status)
	if stored {
		how += "; stored"
	}
	serveStored(cw.ResponseWriter, cw.r, h.statusID, e, cw.responseTime, how)
}

// forbidsStoring reports whether a response's own fields keep it from
// being stored at all: no-store, private, Vary: *. It is decided apart
// from the request, whose reasons (its own no-store, its cookies, its
// Authorization) leave the stored response fit to serve others.
func (h *CacheWrite) forbidsStoring(status int, hdr http.Header) bool {
	d := h.policy.Decide(httpcache.Exchange{RequestHeader: http.Header{}, Status: status, Header: hdr})
	switch d.Outcome {
	case httpcache.ReasonNoStore, httpcache.ReasonPrivate, httpcache.ReasonVaryStar:
		return true
	}
	return false
}

// dropOwn removes this cache's own targeted cache-control fields (RFC
// 9213), which end here: they are never served nor sent on. It returns
// them, for an entry to keep for its next validation.
func (h *CacheWrite) dropOwn(hdr http.Header) []cachestore.Field {
	var own []cachestore.Field
	for _, name := range h.policy.Own {
		if values, ok := hdr[name]; ok {
			own = append(own, cachestore.Field{Name: name, Values: values})
			delete(hdr, name)
		}
	}
	return own
}

// keptOnUpdate reports whether a stored field keeps its value when a 304
// updates the stored response: Content-Length describes the stored body,
// whatever a 304 says (RFC 9111 section 3.2).
func keptOnUpdate(name string) bool {
	return name == "Content-Length"
}

// decide applies the storage rules to the response header and, when the
// response may be stored, prepares its entry from the header as it is
// now: later changes to the header map are not the stored response's.
func (cw *cacheWriter) decide() httpcache.Outcome {
	hdr := cw.Header()
	d := cw.h.policy.Decide(httpcache.Exchange{
		RequestHeader:  cw.r.Header,
		PrivateCookies: cw.h.rule.PrivateCookies(cw.r),
		UserInKey:      cw.h.userInKey(cw.r, cw.repl),
		Status:         cw.status,
		Header:         hdr,
		RequestTime:    cw.requestTime,
		ResponseTime:   cw.responseTime,
	})
	own := cw.h.dropOwn(hdr)
	if d.Outcome != httpcache.Stored {
		return d.Outcome
	}
	cw.limit = cw.h.maxEntrySize() - cachestore.HeaderSize(hdr)
	if cl := hdr.Get("Content-Length"); cl != "" {
		n, err := strconv.ParseInt(cl, 10, 64)
		if err != nil || n < 0 {
			return httpcache.ReasonIncomplete
		}
		cw.declared = n
	}
	if cw.limit <= 0 || cw.declared > cw.limit {
		return httpcache.ReasonTooLarge
	}
	cw.storing = true
	cw.unfresh = d.NoCache
	cw.e = cw.h.newEntry(cw.r, cw.path, cw.status, hdr, cw.outer, d, cw.responseTime)
	cw.e.Targeted = own
	cw.vary = httpcache.VaryNames(hdr)
	if cw.declared >= 0 {
		cw.body = make([]byte, 0, cw.declared)
	}
	return httpcache.Stored
}

// newEntry prepares the entry of a response that the decision d allows
// to be stored, from its header as it is now, without its body.
func (h *CacheWrite) newEntry(r *http.Request, path string, status int, hdr http.Header, outer []cachestore.OuterField, d httpcache.Decision, responseTime time.Time) *cachestore.Entry {
	fields, cacheStatus := cachestore.StoredFields(hdr, outer, d.Omit)
	return &cachestore.Entry{
		Host:                 httpcache.CanonicalHost(r.Host, r.TLS != nil),
		Path:                 path,
		Tags:                 cachestore.Tags(hdr, h.TagsFrom),
		Status:               status,
		Fields:               fields,
		CacheStatus:          cacheStatus,
		Validators:           httpcache.ValidatorsOf(hdr),
		StoredAt:             responseTime,
		InitialAge:           d.InitialAge,
		Expires:              responseTime.Add(d.TTL),
		StaleWhileRevalidate: d.StaleWhileRevalidate,
		StaleIfError:         d.StaleIfError,
		NoStale:              d.NoStale || d.NoCache,
		Immutable:            d.Immutable,
		Shared:               d.Shared,
	}
}

// Write sends p on and keeps a copy while the copy fits. Once a response
// of declared length is complete, it is stored before its last bytes leave,
// so a client that sends the same request next finds it.
func (cw *cacheWriter) Write(p []byte) (int, error) {
	if !cw.wroteHeader {
		cw.WriteHeader(http.StatusOK)
	}
	if cw.absorbed {
		return len(p), nil
	}
	if cw.storing {
		if int64(len(cw.body)+len(p)) > cw.limit {
			cw.drop(httpcache.ReasonTooLarge)
		} else {
			cw.body = append(cw.body, p...)
			if int64(len(cw.body)) == cw.declared {
				cw.commit()
			}
		}
	}
	n, err := cw.ResponseWriter.Write(p)
	if err != nil && cw.storing && cw.flight != nil {
		// The leader's client left; the requests that wait still get
		// what is stored.
		return len(p), nil
	}
	return n, err
}

// FlushError passes a flush on, so streamed responses stay streamed.
func (cw *cacheWriter) FlushError() error {
	if !cw.wroteHeader {
		cw.WriteHeader(http.StatusOK)
	}
	if cw.absorbed {
		return nil
	}
	return http.NewResponseController(cw.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (cw *cacheWriter) Unwrap() http.ResponseWriter { return cw.ResponseWriter }

func (cw *cacheWriter) drop(outcome httpcache.Outcome) {
	cw.storing = false
	cw.body = nil
	cw.e = nil
	cw.outcome = outcome
	cw.h.cache.Record(outcome)
	cw.land()
}

// land ends the flight this request leads, if any, with its outcome: as
// soon as that is known, so that the requests that wait go on, to the
// entry stored or to the origin.
func (cw *cacheWriter) land() {
	if cw.flight != nil {
		outcome := cw.outcome
		if outcome == httpcache.Stored && cw.unfresh {
			// Its waiters go to the origin at once rather than look up
			// an entry they may not use, and the next ones for a while
			// without waiting: hit-for-miss.
			outcome = httpcache.ReasonNoFreshness
		}
		cw.h.cache.Land(cw.primary, cw.flight, outcome, cw.personal(), cw.h.now())
		cw.flight = nil
	}
}

// personal reports whether the response went unstored for a reason of
// this request alone, which another request for the key would not share:
// its own no-store, its own conditions or range (a 304 or a 206 is no
// response to store), or its client gone. Private cookies and
// Authorization are not: the requests that wait likely carry their own,
// and are better sent on side by side, as hit-for-miss does.
func (cw *cacheWriter) personal() bool {
	h := cw.r.Header
	switch cw.outcome {
	case httpcache.ReasonNoStore:
		return httpcache.ParseCacheControl(h).NoStore
	case httpcache.ReasonStatus:
		_, inm := h["If-None-Match"]
		_, ims := h["If-Modified-Since"]
		_, rng := h["Range"]
		return (cw.status == http.StatusNotModified && (inm || ims)) ||
			(cw.status == http.StatusPartialContent && rng)
	case httpcache.ReasonIncomplete:
		// Abandoned, its client gone and no one waiting; not an upstream
		// failure, after which the handler's end cancels the fetch too.
		return errors.Is(context.Cause(cw.ctx), errAbandoned)
	}
	return false
}

// finish stores a response whose end is only known now, when the next
// handler returned: one of unknown length, or none at all.
func (cw *cacheWriter) finish(err error) {
	if !cw.storing || cw.done {
		return
	}
	if err != nil || cw.ctx.Err() != nil ||
		(cw.declared >= 0 && int64(len(cw.body)) != cw.declared) {
		cw.drop(httpcache.ReasonIncomplete)
		return
	}
	cw.commit()
}

// place keys the entry e of the request: at the resource's primary key,
// or, when the response's Vary names headers, as the variant those select,
// led to by the Vary marker it returns for the primary key.
func (cw *cacheWriter) place(e *cachestore.Entry, primary []byte, vary []string) (marker *cachestore.Entry) {
	if vary == nil {
		e.Key = primary
		return nil
	}
	kb := cachestore.GetKeyBuilder()
	e.Key = slices.Clone(cw.h.rule.Build(kb, cw.r, cw.repl, vary))
	cachestore.PutKeyBuilder(kb)
	return &cachestore.Entry{Key: primary, Host: e.Host, Path: e.Path, Vary: vary, Expires: e.Expires}
}

// commit writes the copy to the cache.
func (cw *cacheWriter) commit() {
	cw.done = true
	cw.storing = false
	h, e := cw.h, cw.e
	if cw.status != http.StatusNoContent && cw.status != http.StatusNotModified {
		e.Fields = append(e.Fields, cachestore.Field{Name: "Content-Length", Values: []string{strconv.Itoa(len(cw.body))}})
	}
	if h.ETag && e.Validators.ETag == "" {
		sum := sha256.Sum256(cw.body)
		e.Validators.ETag = `"` + hex.EncodeToString(sum[:16]) + `"`
		e.Fields = append(e.Fields, cachestore.Field{Name: "Etag", Values: []string{e.Validators.ETag}})
	}
	if cw.declared < 0 && cap(cw.body) > len(cw.body)+len(cw.body)/8 {
		// A body of unknown length grew by doubling; keep only its bytes.
		cw.body = slices.Clone(cw.body)
	}
	e.Body = cw.body
	primary := cw.primary
	if primary == nil {
		kb := cachestore.GetKeyBuilder()
		primary = slices.Clone(h.rule.Build(kb, cw.r, cw.repl, nil))
		cachestore.PutKeyBuilder(kb)
	}
	marker := cw.place(e, primary, cw.vary)
	outcome := h.cache.Put(cw.snap, e.Keep(cw.responseTime), e, marker)
	cw.outcome = outcome
	if ce := h.logger.Check(zap.DebugLevel, "cache store"); ce != nil {
		ce.Write(zap.String("cache", h.Cache), zap.Stringer("outcome", outcome),
			zap.Int("bytes", len(cw.body)), zap.Duration("ttl", e.Expires.Sub(e.StoredAt)))
	}
	cw.body = nil
	cw.e = nil
	cw.land()
}
