package cachestore

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddy-gateway/gateway/internal/httpcache"
)

// Bounds on the fetches a store tracks at once. Past them, requests are
// not collapsed and stale entries are not refreshed in the background: a
// flood of distinct keys costs memory in proportion to these, not to the
// flood.
const (
	MaxFlights    = 4096
	MaxRefreshes  = 1024
	maxUncachable = 4096
)

// HitForMiss is how long a key whose response proved unstorable skips
// the collapsing queue: its requests go to the origin side by side, as
// Varnish's hit-for-miss objects make them.
const HitForMiss = 10 * time.Second

// Flight is one fetch of a key that other requests for the key wait on.
// Its channel is made when the first waiter comes: a leader alone costs
// one allocation.
type Flight struct {
	fl       *flights
	done     chan struct{}     // under fl.mu; nil until a waiter needs it
	landed   bool              // under fl.mu
	abandon  func()            // under fl.mu; set once the leader's client left
	waiters  atomic.Int32      // raised under fl.mu
	outcome  httpcache.Outcome // set before landed
	personal bool              // set before landed
}

// Waiters returns how many requests wait on the flight now.
func (f *Flight) Waiters() int { return int(f.waiters.Load()) }

// Personal reports whether a flight that landed without storing did so
// for a reason of its leader's request alone (its conditions or range, its
// no-store, its client leaving): a waiter may then wait on another
// request's fetch.
func (f *Flight) Personal() bool { return f.personal }

// Wait waits for the flight to land, at most timeout and no longer than
// ctx lives, and returns the outcome of its response; ok is false when it
// did not land in time. The last waiter to give up stops a fetch whose
// leader's client has left.
func (f *Flight) Wait(ctx context.Context, timeout time.Duration) (outcome httpcache.Outcome, ok bool) {
	f.fl.mu.Lock()
	if f.landed {
		f.fl.mu.Unlock()
		return f.outcome, true
	}
	if f.done == nil {
		f.done = make(chan struct{})
	}
	done := f.done
	f.waiters.Add(1)
	f.fl.mu.Unlock()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
		f.waiters.Add(-1)
		return f.outcome, true
	case <-t.C:
	case <-ctx.Done():
	}
	f.fl.mu.Lock()
	last := f.waiters.Add(-1) == 0 && !f.landed
	abandon := f.abandon
	f.fl.mu.Unlock()
	if last && abandon != nil {
		abandon()
	}
	return 0, false
}

// LeaderLeft records that the leader's client has gone: abandon stops its
// fetch at once if it landed (its waiters need no more of it: what was
// stored is stored) or no request waits on it, or else when the last one
// that does gives up.
func (f *Flight) LeaderLeft(abandon func()) {
	f.fl.mu.Lock()
	f.abandon = abandon
	idle := f.landed || f.waiters.Load() == 0
	f.fl.mu.Unlock()
	if idle {
		abandon()
	}
}

// flights are the fetches in flight, the background refreshes and the keys
// that proved uncachable, each by key.
type flights struct {
	mu          sync.Mutex
	leaders     map[string]*Flight
	refreshing  map[string]struct{}
	uncacheable map[string]time.Time
}

// Join returns the flight of a key in progress, or starts one that the
// caller leads: the caller then fetches and must call Land. f is nil when
// the key must not be collapsed: it proved uncachable within HitForMiss of
// now, or too many flights are in progress.
func (s *Store) Join(key []byte, now time.Time) (f *Flight, leader bool) {
	fl := &s.flights
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if until, ok := fl.uncacheable[string(key)]; ok {
		if now.Before(until) {
			return nil, false
		}
		delete(fl.uncacheable, string(key))
	}
	if f := fl.leaders[string(key)]; f != nil {
		return f, false
	}
	if len(fl.leaders) >= MaxFlights {
		return nil, false
	}
	if fl.leaders == nil {
		fl.leaders = make(map[string]*Flight)
	}
	f = &Flight{fl: fl}
	fl.leaders[string(key)] = f
	return f, true
}

// Land ends the flight the caller leads with the outcome of its response,
// releasing its waiters. A response that was not stored marks the key
// uncachable until HitForMiss after now, unless it was not stored for a
// reason of the leader's request alone (personal): the next request's
// answer may well be stored, and its waiters wait on it.
//
// A leader whose client left before it landed is abandoned now: its
// waiters need nothing more of its fetch.
func (s *Store) Land(key []byte, f *Flight, outcome httpcache.Outcome, personal bool, now time.Time) {
	fl := &s.flights
	fl.mu.Lock()
	if fl.leaders[string(key)] == f {
		delete(fl.leaders, string(key))
	}
	if outcome != httpcache.Stored && outcome != httpcache.ReasonInvalidated && !personal {
		fl.markUncacheable(key, now)
	}
	f.outcome = outcome
	f.personal = personal && outcome != httpcache.Stored
	f.landed = true
	if f.done != nil {
		close(f.done)
	}
	abandon := f.abandon
	fl.mu.Unlock()
	if abandon != nil {
		abandon()
	}
}

// markUncacheable records a key that proved uncachable, within the bound.
func (fl *flights) markUncacheable(key []byte, now time.Time) {
	if fl.uncacheable == nil {
		fl.uncacheable = make(map[string]time.Time)
	}
	if len(fl.uncacheable) >= maxUncachable {
		for k, until := range fl.uncacheable {
			if !now.Before(until) {
				delete(fl.uncacheable, k)
			}
		}
	}
	if len(fl.uncacheable) < maxUncachable {
		fl.uncacheable[string(key)] = now.Add(HitForMiss)
	}
}

// StartRefresh reports whether the caller may refresh the entry under key
// in the background: no other refresh of it is in progress, and not too
// many refreshes are. The caller calls EndRefresh when done.
func (s *Store) StartRefresh(key []byte) bool {
	fl := &s.flights
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if _, busy := fl.refreshing[string(key)]; busy || len(fl.refreshing) >= MaxRefreshes {
		return false
	}
	if fl.refreshing == nil {
		fl.refreshing = make(map[string]struct{})
	}
	fl.refreshing[string(key)] = struct{}{}
	return true
}

// EndRefresh ends a refresh that StartRefresh allowed.
func (s *Store) EndRefresh(key []byte) {
	s.flights.mu.Lock()
	delete(s.flights.refreshing, string(key))
	s.flights.mu.Unlock()
}
