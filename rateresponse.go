package gateway

import (
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dunglas/httpsfv"
	"go.uber.org/zap"

	"github.com/caddy-gateway/gateway/internal/limiter"
)

// policyMember is one zone's member of RateLimit-Policy.
func policyMember(name string, l limiter.Limit) string {
	item := httpsfv.NewItem(name)
	item.Params.Add("q", l.Events)
	// Whole seconds, rounded up: a client that paces itself by the policy
	// must not go faster than the limit.
	item.Params.Add("w", ceilSeconds(l.Window))
	s, _ := httpsfv.Marshal(httpsfv.List{item})
	return s
}

// remainingPlaceholders answers {http.rate_limit.<zone>.remaining} for the
// zones of one request, when a placeholder asks. Setting each value on
// the replacer instead costs every request the replacer's map and a boxed
// value, about 2% of a small response's throughput.
type remainingPlaceholders struct {
	keys      [maxZonesInline]string
	remaining [maxZonesInline]int64
	more      map[string]int64 // zones beyond the inline ones, rare
}

func newRemainingPlaceholders(refs []*zoneRef, out []limiter.Decision) remainingPlaceholders {
	var p remainingPlaceholders
	for i, ref := range refs {
		if i < maxZonesInline {
			p.keys[i], p.remaining[i] = ref.remKey, out[i].Remaining
			continue
		}
		if p.more == nil {
			p.more = make(map[string]int64, len(refs)-maxZonesInline)
		}
		p.more[ref.remKey] = out[i].Remaining
	}
	return p
}

func (p remainingPlaceholders) replace(key string) (any, bool) {
	for i, k := range p.keys {
		if k == key && k != "" {
			return p.remaining[i], true
		}
	}
	if v, ok := p.more[key]; ok {
		return v, true
	}
	return nil, false
}

// refuse answers 429 through Caddy's error handling, with Retry-After
// never earlier than the moment the request would be admitted. The zone
// it names refuses longest, the one Retry-After speaks of, whether Redis
// or the node's own refusals decided.
func (h *RateLimit) refuse(w http.ResponseWriter, r *http.Request, repl *caddy.Replacer, refs []*zoneRef, keys []string, out []limiter.Decision) error {
	var retry time.Duration
	var refusing string
	var refusingRef *zoneRef
	for i, ref := range refs {
		if out[i].Allowed || ref.cfg.DryRun {
			continue
		}
		if refusing == "" || out[i].RetryAfter > retry {
			refusing, refusingRef, retry = ref.name, ref, out[i].RetryAfter
		}
		if ce := h.logger.Check(zap.DebugLevel, "rate limit exceeded"); ce != nil {
			ce.Write(zap.String("zone", ref.name), zap.String("key", h.loggedKey(keys[i])),
				zap.Duration("retry_after", out[i].RetryAfter))
		}
	}
	repl.Set("http.rate_limit.exceeded.name", refusing)
	if retry < time.Duration(1<<62) {
		if h.Jitter > 0 {
			retry += time.Duration(rand.Float64() * h.Jitter * float64(retry))
		}
		secs := (retry + time.Second - 1) / time.Second
		w.Header().Set("Retry-After", strconv.FormatInt(int64(secs), 10))
	}
	if !hasErrorRoutes(r) {
		// Without handle_errors, Caddy would answer a bare 429 after
		// logging the error with a stack trace and a fresh logger: write
		// the same answer directly, so a refusal costs less than a reply.
		w.WriteHeader(http.StatusTooManyRequests)
		return nil
	}
	return caddyhttp.Error(http.StatusTooManyRequests, refusingRef.refusal())
}

// hasErrorRoutes reports whether the request's server shapes errors with
// handle_errors.
func hasErrorRoutes(r *http.Request) bool {
	srv, ok := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	return !ok || (srv.Errors != nil && len(srv.Errors.Routes) > 0)
}

// errorIDs numbers refusals for the logs, cheaper than random IDs.
var errorIDs atomic.Uint64

// refusal is the error that handle_errors sees; filled in here, so that
// caddyhttp.Error spends no time on a random ID or a stack trace.
func (ref *zoneRef) refusal() caddyhttp.HandlerError {
	return caddyhttp.HandlerError{
		Err:        ref.err,
		StatusCode: http.StatusTooManyRequests,
		ID:         "rl" + strconv.FormatUint(errorIDs.Add(1), 36),
		Trace:      "gateway.(*RateLimit).refuse (ratelimit.go)",
	}
}

// setHeaders writes the rate-limit headers for the matching zones.
func (h *RateLimit) setHeaders(hdr http.Header, refs []*zoneRef, out []limiter.Decision) {
	if h.headerI {
		// Both values in one slice of the response's own: a handler such
		// as Caddy's header replace changes values in place.
		vals := make([]string, 2)
		if len(refs) == len(h.zones) {
			vals[0] = h.policy
		} else {
			policies := make([]string, len(refs))
			for i, ref := range refs {
				policies[i] = ref.policy
			}
			vals[0] = strings.Join(policies, ", ")
		}
		vals[1] = rateLimitField(refs, out)
		hdr["Ratelimit-Policy"], hdr["Ratelimit"] = vals[0:1:1], vals[1:2:2]
	}
	if h.headerL {
		// The legacy headers speak of one limit: the zone with the least left.
		m := 0
		for i := range out {
			if out[i].Remaining < out[m].Remaining {
				m = i
			}
		}
		hdr["X-Ratelimit-Limit"] = []string{strconv.FormatInt(refs[m].limit.Events, 10)}
		hdr["X-Ratelimit-Remaining"] = []string{strconv.FormatInt(out[m].Remaining, 10)}
		hdr["X-Ratelimit-Reset"] = []string{strconv.FormatInt(ceilSeconds(out[m].Reset), 10)}
	}
}

// rateLimitField serializes the RateLimit field: a list of the zones'
// names, as Structured Field strings serialized once by httpsfv at
// provisioning, each with the integer parameters r and t.
func rateLimitField(refs []*zoneRef, out []limiter.Decision) string {
	var buf [128]byte
	b := buf[:0]
	for i, ref := range refs {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = append(b, ref.sfName...)
		b = append(b, ";r="...)
		b = strconv.AppendInt(b, out[i].Remaining, 10)
		b = append(b, ";t="...)
		b = strconv.AppendInt(b, ceilSeconds(out[i].Reset), 10)
	}
	return string(b)
}

func ceilSeconds(d time.Duration) int64 { return int64((d + time.Second - 1) / time.Second) }
