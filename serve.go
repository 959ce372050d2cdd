package gateway

import (
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/caddy-gateway/gateway/internal/cachestore"
	"github.com/caddy-gateway/gateway/internal/httpcache"
)

// notModifiedFields are the stored fields a 304 carries (RFC 9110
// section 15.4.5).
var notModifiedFields = []string{"Cache-Control", "Content-Location", "Date", "Etag", "Expires", "Vary"}

// serveStored writes a stored response of the named cache at now, or 304
// Not Modified when the request's preconditions allow, with its Age (RFC
// 9111 section 4.2.3) and a Cache-Status member: the cache's name, then
// how (such as "hit"), then the entry's ttl. Its two allocations are the
// field values and the Cache-Status value.
//
// The response's field values are copies, in one block: handlers change
// values in place (Caddy's header replace does), which must not reach
// the entry that every hit shares.
func serveStored(w http.ResponseWriter, r *http.Request, cache string, e *cachestore.Entry, now time.Time, how string) {
	hdr := w.Header()
	// A stored 404 or 500 answers with itself, whatever the request's
	// preconditions: a server ignores them when its answer would not be
	// 2xx (RFC 9110 section 13.2.1).
	notModified := e.Status >= 200 && e.Status < 300 && httpcache.NotModified(r.Header, e.Validators, now)
	n := 2 + len(e.CacheStatus)
	for _, f := range e.Fields {
		n += len(f.Values)
	}
	vals := make([]string, 0, n)
	for _, f := range e.Fields {
		if !notModified || slices.Contains(notModifiedFields, f.Name) {
			vals = append(vals, f.Values...)
			hdr[f.Name] = vals[len(vals)-len(f.Values) : len(vals) : len(vals)]
		}
	}
	vals = append(vals, strconv.FormatInt(int64(e.Age(now)/time.Second), 10))
	hdr["Age"] = vals[len(vals)-1 : len(vals) : len(vals)]
	// Whole seconds away from zero: a fresh entry never shows 0 nor a
	// stale one a fresh-looking 0.
	ttl := e.Expires.Sub(now)
	if ttl > 0 {
		ttl += time.Second - 1
	} else {
		ttl -= time.Second - 1
	}
	var buf [128]byte
	member := append(append(append(append(buf[:0], cache...), "; "...), how...), "; ttl="...)
	start := len(vals)
	vals = append(vals, e.CacheStatus...)
	vals = append(vals, string(strconv.AppendInt(member, int64(ttl/time.Second), 10)))
	hdr["Cache-Status"] = vals[start:len(vals):len(vals)]
	if notModified {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	body := e.Body
	status := e.Status
	if rng, ok := r.Header["Range"]; ok && status == http.StatusOK && r.Method == http.MethodGet && len(rng) == 1 {
		status, body = serveRange(hdr, r, e, rng[0], now)
	}
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

// serveRange answers a Range request from a complete stored 200 (RFC 9110
// section 14): 206 with the one range asked for, 416 when it is not
// satisfiable, or the whole 200 when If-Range does not match or the range
// is one this cache leaves whole (several ranges, another unit).
func serveRange(hdr http.Header, r *http.Request, e *cachestore.Entry, rng string, now time.Time) (int, []byte) {
	if ir := r.Header.Get("If-Range"); ir != "" && !httpcache.IfRangeMatches(ir, e.Validators, now) {
		return e.Status, e.Body
	}
	size := int64(len(e.Body))
	first, last, result := httpcache.ParseRange(rng, size)
	switch result {
	case httpcache.RangeSatisfiable:
		hdr["Content-Range"] = []string{"bytes " + strconv.FormatInt(first, 10) + "-" + strconv.FormatInt(last, 10) + "/" + strconv.FormatInt(size, 10)}
		hdr["Content-Length"] = []string{strconv.FormatInt(last-first+1, 10)}
		return http.StatusPartialContent, e.Body[first : last+1]
	case httpcache.RangeUnsatisfiable:
		hdr["Content-Range"] = []string{"bytes */" + strconv.FormatInt(size, 10)}
		hdr["Content-Length"] = []string{"0"}
		delete(hdr, "Content-Type")
		return http.StatusRequestedRangeNotSatisfiable, nil
	}
	return e.Status, e.Body
}

// headerHook calls before with the status and header of a response just
// before its header leaves, interim ones included, until the final one
// has: a handler can act on the response, or change its header, before
// any of it reaches the client.
type headerHook struct {
	http.ResponseWriter
	before func(status int, hdr http.Header)
	final  bool // the final header has left
}

func (hw *headerHook) WriteHeader(status int) {
	if !hw.final {
		hw.before(status, hw.Header())
		hw.final = status >= 200 || status == http.StatusSwitchingProtocols
	}
	hw.ResponseWriter.WriteHeader(status)
}

func (hw *headerHook) Write(p []byte) (int, error) {
	if !hw.final {
		hw.WriteHeader(http.StatusOK)
	}
	return hw.ResponseWriter.Write(p)
}

// FlushError passes a flush on; a flush before any header implies 200.
func (hw *headerHook) FlushError() error {
	if !hw.final {
		hw.WriteHeader(http.StatusOK)
	}
	return http.NewResponseController(hw.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (hw *headerHook) Unwrap() http.ResponseWriter { return hw.ResponseWriter }
