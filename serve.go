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
// Age and Cache-Status values.
func serveStored(w http.ResponseWriter, r *http.Request, cache string, e *cachestore.Entry, now time.Time, how string) {
	hdr := w.Header()
	notModified := httpcache.NotModified(r.Header, e.Validators, now)
	for _, f := range e.Fields {
		if !notModified || slices.Contains(notModifiedFields, f.Name) {
			hdr[f.Name] = f.Values
		}
	}
	// One allocation holds both new field values.
	vals := new([2]string)
	vals[0] = strconv.FormatInt(int64(e.Age(now)/time.Second), 10)
	ttl := e.Expires.Sub(now)
	if ttl > 0 {
		ttl += time.Second - 1 // rounded up while fresh, down once stale
	}
	var buf [128]byte
	member := append(append(append(append(buf[:0], cache...), "; "...), how...), "; ttl="...)
	vals[1] = string(strconv.AppendInt(member, int64(ttl/time.Second), 10))
	hdr["Age"] = vals[0:1:1]
	if len(e.CacheStatus) == 0 {
		hdr["Cache-Status"] = vals[1:2:2]
	} else {
		hdr["Cache-Status"] = append(e.CacheStatus, vals[1])
	}
	if notModified {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.WriteHeader(e.Status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(e.Body)
	}
}
