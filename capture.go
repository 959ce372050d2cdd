package gateway

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
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

	status   int
	ttl      time.Duration
	e        *cachestore.Entry // what is stored once the body is complete
	vary     []string          // the request fields that select it, if any
	body     []byte
	limit    int64
	declared int64
}

// WriteHeader decides from the status and headers whether the response
// may be stored, says so in Cache-Status, and sends the header on.
func (cw *cacheWriter) WriteHeader(status int) {
	if cw.wroteHeader || (status >= 100 && status < 200 && status != http.StatusSwitchingProtocols) {
		cw.ResponseWriter.WriteHeader(status)
		return
	}
	cw.wroteHeader = true
	cw.status = status
	cw.responseTime = cw.h.now()
	stale := cw.found != nil && cw.found.Stale != nil
	var member string
	if outcome := cw.decide(); outcome != httpcache.Stored {
		cw.h.cache.Record(outcome)
		member = cw.h.members.miss
		if stale {
			member = cw.h.members.stale
		}
		member += "; detail=" + outcome.String()
	} else {
		member = cw.h.members.storedMiss
		if stale {
			member = cw.h.members.storedStale
		}
	}
	cw.Header().Add("Cache-Status", member)
	cw.ResponseWriter.WriteHeader(status)
}

// decide applies the storage rules to the response header and, when the
// response may be stored, prepares its entry from the header as it is
// now: later changes to the header map are not the stored response's.
func (cw *cacheWriter) decide() httpcache.Outcome {
	hdr := cw.Header()
	ttl, outcome := cw.h.policy.Decide(httpcache.Exchange{
		RequestHeader: cw.r.Header,
		Status:        cw.status,
		Header:        hdr,
		RequestTime:   cw.requestTime,
		ResponseTime:  cw.responseTime,
	})
	if outcome != httpcache.Stored {
		return outcome
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
	cw.ttl = ttl
	fields, cacheStatus := cachestore.StoredFields(hdr, cw.outer)
	r := cw.r
	cw.vary = httpcache.VaryNames(hdr)
	cw.e = &cachestore.Entry{
		Host:        httpcache.CanonicalHost(r.Host, r.TLS != nil),
		Path:        cw.path,
		Tags:        cachestore.Tags(hdr, cw.h.TagsFrom),
		Status:      cw.status,
		Fields:      fields,
		CacheStatus: cacheStatus,
		Validators:  httpcache.ValidatorsOf(hdr),
		StoredAt:    cw.responseTime,
		InitialAge:  httpcache.InitialAge(hdr, cw.requestTime, cw.responseTime),
		Expires:     cw.responseTime.Add(ttl),
	}
	if cw.declared >= 0 {
		cw.body = make([]byte, 0, cw.declared)
	}
	return httpcache.Stored
}

// Write sends p on and keeps a copy while the copy fits. Once a response
// of declared length is complete, it is stored before its last bytes leave,
// so a client that sends the same request next finds it.
func (cw *cacheWriter) Write(p []byte) (int, error) {
	if !cw.wroteHeader {
		cw.WriteHeader(http.StatusOK)
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
	return cw.ResponseWriter.Write(p)
}

// FlushError passes a flush on, so streamed responses stay streamed.
func (cw *cacheWriter) FlushError() error {
	if !cw.wroteHeader {
		cw.WriteHeader(http.StatusOK)
	}
	return http.NewResponseController(cw.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (cw *cacheWriter) Unwrap() http.ResponseWriter { return cw.ResponseWriter }

func (cw *cacheWriter) drop(outcome httpcache.Outcome) {
	cw.storing = false
	cw.body = nil
	cw.e = nil
	cw.h.cache.Record(outcome)
}

// finish stores a response whose end is only known now, when the next
// handler returned: one of unknown length, or none at all.
func (cw *cacheWriter) finish(err error) {
	if !cw.storing || cw.done {
		return
	}
	if err != nil || cw.r.Context().Err() != nil ||
		(cw.declared >= 0 && int64(len(cw.body)) != cw.declared) {
		cw.drop(httpcache.ReasonIncomplete)
		return
	}
	cw.commit()
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
	kb := cachestore.GetKeyBuilder()
	primary := cw.primary
	if primary == nil {
		primary = slices.Clone(h.rule.Build(kb, cw.r, cw.repl, nil))
	}
	var marker *cachestore.Entry
	if cw.vary == nil {
		e.Key = primary
	} else {
		e.Key = slices.Clone(h.rule.Build(kb, cw.r, cw.repl, cw.vary))
		marker = &cachestore.Entry{Key: primary, Host: e.Host, Path: e.Path, Vary: cw.vary, Expires: e.Expires}
	}
	cachestore.PutKeyBuilder(kb)
	outcome := h.cache.Put(cw.snap, cw.ttl, e, marker)
	h.cache.Record(outcome)
	if ce := h.logger.Check(zap.DebugLevel, "cache store"); ce != nil {
		ce.Write(zap.String("cache", h.Cache), zap.Stringer("outcome", outcome),
			zap.Int("bytes", len(cw.body)), zap.Duration("ttl", cw.ttl))
	}
	cw.body = nil
	cw.e = nil
}
