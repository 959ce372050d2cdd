package gateway

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-gateway/gateway/internal/limiter"
	"github.com/caddy-gateway/gateway/internal/redisstore"
)

// arrival returns when Caddy began to handle the request, which it has
// read from the clock already: reading it again costs about a quarter of a
// microsecond per request under load on a virtual machine. A request
// decided after a later arrival is fine: every limiter counts a time
// behind the key's state as the key's own, which is never more lenient.
func (h *RateLimit) arrival(r *http.Request) time.Time {
	if t, ok := caddyhttp.GetVar(r.Context(), "start_time").(time.Time); ok {
		return t
	}
	return h.now()
}

// errStoreDown refuses requests while Redis fails under fail_mode closed.
var errStoreDown = errors.New("rate-limit store unavailable")

// storeVerdict tells how a decision was made.
type storeVerdict int

const (
	storeDecided storeVerdict = iota // by Redis or in memory
	storeOpen                        // Redis failed; fail_mode open admits
	storeClosed                      // Redis failed; fail_mode closed refuses
	storeGone                        // the client left before Redis answered
)

// decide makes the decision in Redis when the handler has one, else in
// memory. When Redis fails, fail_mode says what happens: local decides in
// memory, open admits undecided, closed refuses with 503.
func (h *RateLimit) decide(ctx context.Context, now time.Time, refs []*zoneRef, digests []redisstore.Digest, reqs []limiter.Request, out []limiter.Decision) (bool, storeVerdict) {
	if h.redis == nil {
		return limiter.Decide(now, reqs, out), storeDecided
	}
	if h.breaker.allow(now) {
		admitted, err := h.decideInRedis(ctx, now, refs, digests, reqs, out)
		if err == nil {
			return admitted, storeDecided
		}
		if ctx.Err() != nil {
			// The client went away: no fault of Redis.
			return false, storeGone
		}
		// From the failure, not from the request's arrival, which was at
		// least the timeout ago: with a timeout of a second or more the
		// breaker would never open.
		failed := h.now()
		h.breaker.fail(failed)
		for _, ref := range refs {
			ref.zone.storeErrors.Add(1)
		}
		h.breaker.log.warn(h.logger, failed, "rate-limit store failing; using fail_mode",
			zap.String("fail_mode", h.failMode()), zap.Error(err))
	}
	switch h.failMode() {
	case "open":
		return true, storeOpen
	case "closed":
		return false, storeClosed
	}
	return limiter.Decide(now, reqs, out), storeDecided
}

// decideInRedis decides in Redis, on its clock, within the timeout, and
// remembers each zone that refused until when: now, read before the call,
// is no later than Redis' decision, so the moment it gives is never late.
// The timeout counts from here, not from the request's arrival: handlers
// before this one may have taken a while.
func (h *RateLimit) decideInRedis(ctx context.Context, now time.Time, refs []*zoneRef, digests []redisstore.Digest, reqs []limiter.Request, out []limiter.Decision) (bool, error) {
	deadline := time.Now().Add(time.Duration(h.Timeout))
	var buf [maxZonesInline]redisstore.Request
	var gensBuf [maxZonesInline]uint64
	rr, gens := buf[:0], gensBuf[:0]
	for i, ref := range refs {
		rr = append(rr, redisstore.Request{StateKey: digests[i].StateKey(ref.stateSuffix), Limit: ref.limit, Params: ref.params, Cost: reqs[i].Cost, DryRun: reqs[i].DryRun})
		gens = append(gens, ref.zone.refusals.Generation())
	}
	var admitted bool
	var err error
	if h.redis.cluster && !sameDigest(digests) {
		admitted, err = decideAcrossSlots(ctx, deadline, h.redis.batcher(), rr, digests, out)
	} else {
		admitted, err = h.redis.batcher().Decide(ctx, deadline, rr, out)
	}
	if err != nil || admitted {
		return admitted, err
	}
	for i, ref := range refs {
		// A refusal holds for the Redis that made it: not once the zone
		// went back to another (a failed config's, undone meanwhile).
		if !out[i].Allowed && !reqs[i].DryRun && sameRedis(ref.zone.redis.Load(), h.redis) {
			ref.zone.refusals.Record(digests[i].Short(), now, ref.limit, reqs[i].Cost, out[i], gens[i])
		}
	}
	return false, nil
}

func sameDigest(digests []redisstore.Digest) bool {
	for _, d := range digests[1:] {
		if d != digests[0] {
			return false
		}
	}
	return true
}

// decideAcrossSlots decides, in a Redis Cluster, a request whose zones
// use different keys: their states lie in different hash slots, which no
// one script can touch. The zones of each key are decided together,
// atomically, one key after another; once one refuses, the rest are
// decided without a charge (peeked at), so that the answer still tells
// each zone's state and Retry-After the latest moment any zone admits the
// request, but the keys decided before keep their charge. A request that
// Redis alone decides is charged nowhere unless every zone admits it; this
// one may be charged by a zone before another refuses it, never admitted
// by fewer zones than it needs.
func decideAcrossSlots(ctx context.Context, deadline time.Time, b *redisstore.Batcher, reqs []redisstore.Request, digests []redisstore.Digest, out []limiter.Decision) (bool, error) {
	admitted := true
	done := make([]bool, len(reqs))
	group := make([]redisstore.Request, 0, len(reqs))
	where := make([]int, 0, len(reqs))
	decided := make([]limiter.Decision, len(reqs))
	for i := range reqs {
		if done[i] {
			continue
		}
		group, where = group[:0], where[:0]
		for j := i; j < len(reqs); j++ {
			if digests[j] == digests[i] {
				r := reqs[j]
				r.Peek = !admitted
				group, where, done[j] = append(group, r), append(where, j), true
			}
		}
		ok, err := b.Decide(ctx, deadline, group, decided[:len(group)])
		if err != nil {
			return false, err
		}
		for k, j := range where {
			out[j] = decided[k]
		}
		admitted = admitted && ok
	}
	return admitted, nil
}

// refusedLocally finds the zones that Redis told this node refuse the
// request's key, at its cost, until a moment still to come, and of them the
// one that refuses longest: Redis would answer with the latest moment. It
// fills that zone's decision and returns its index, or -1. Without Redis,
// digests is empty and nothing is refused here.
func (h *RateLimit) refusedLocally(now time.Time, refs []*zoneRef, digests []redisstore.Digest, reqs []limiter.Request, out []limiter.Decision) int {
	found := -1
	var late time.Duration // how long after now the request is decided
	for i := range digests {
		if reqs[i].DryRun {
			continue
		}
		if reqs[i].Cost > refs[i].limit.Capacity() {
			// No zone could tell when it would be admitted: Redis
			// answers without Retry-After.
			return -1
		}
		if !sameRedis(refs[i].zone.redis.Load(), h.redis) {
			continue // the refusals are another Redis'
		}
		d, ok := refs[i].zone.refusals.Check(digests[i].Short(), now, refs[i].limit, reqs[i].Cost)
		if !ok {
			continue
		}
		// now is when Caddy began the request; handlers before this one
		// may have taken a while. Redis would decide at this moment:
		// the refusal must still hold then.
		if found < 0 {
			late = max(h.now().Sub(now), 0)
		}
		if late >= d.RetryAfter {
			continue
		}
		d.RetryAfter -= late
		d.Reset = max(d.Reset-late, 0)
		if found < 0 || d.RetryAfter > out[found].RetryAfter {
			out[i], found = d, i
		}
	}
	return found
}

func (h *RateLimit) failMode() string {
	if h.FailMode == "" {
		return "local"
	}
	return h.FailMode
}

// sleep waits for a leaky bucket's slot; the wait ends early, with an
// error, when the client goes away.
func (h *RateLimit) sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (h *RateLimit) count(refs []*zoneRef, out []limiter.Decision, admitted bool) {
	if h.DisableMetrics {
		return
	}
	for i, ref := range refs {
		switch {
		case out[i].Allowed && admitted:
			ref.zone.allowed.Add(1)
		case !out[i].Allowed && ref.cfg.DryRun:
			ref.zone.dryRunLimited.Add(1)
		case !out[i].Allowed:
			ref.zone.limited.Add(1)
		}
	}
}
