package cachestore

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/caddy-gateway/gateway/internal/httpcache"
)

// TestFlights checks collapsing's bookkeeping: one leader per key, waiters
// released with its outcome, a key that proved uncachable skipping the
// queue for HitForMiss, and a waiter that gives up at its bound.
func TestFlights(t *testing.T) {
	s := newTestStore(t, 4<<20)
	key := []byte("k")
	f, leader := s.Join(key, now)
	if f == nil || !leader {
		t.Fatal("the first request does not lead")
	}
	var wg sync.WaitGroup
	outcomes := make([]httpcache.Outcome, 5)
	for i := range outcomes {
		g, lead := s.Join(key, now)
		if g != f || lead {
			t.Fatal("a second request leads too")
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			o, ok := g.Wait(context.Background(), time.Minute)
			if !ok {
				t.Error("a waiter was not released")
			}
			outcomes[i] = o
		}()
	}
	for f.Waiters() < len(outcomes) {
		time.Sleep(time.Millisecond)
	}
	s.Land(key, f, httpcache.ReasonPrivate, false, now)
	wg.Wait()
	for i, o := range outcomes {
		if o != httpcache.ReasonPrivate {
			t.Errorf("waiter %d learnt %v", i, o)
		}
	}
	if o, ok := f.Wait(context.Background(), time.Minute); !ok || o != httpcache.ReasonPrivate {
		t.Error("a late waiter on a landed flight waits")
	}
	if g, _ := s.Join(key, now.Add(HitForMiss-time.Second)); g != nil {
		t.Error("an uncachable key was collapsed within HitForMiss")
	}
	g, lead := s.Join(key, now.Add(HitForMiss))
	if g == nil || !lead {
		t.Fatal("the key is not collapsed again after HitForMiss")
	}
	h, _ := s.Join(key, now)
	if _, ok := h.Wait(context.Background(), 10*time.Millisecond); ok {
		t.Error("a waiter outlived its bound")
	}
	s.Land(key, g, httpcache.Stored, false, now)
	if g, lead := s.Join(key, now); g == nil || !lead {
		t.Error("a stored key is not collapsed")
	}
}

// TestPersonalLandingAndAbandon: a flight that lands unstored for a reason
// of its leader's request alone tells its waiters so and does not make the
// key skip the queue; a leader whose client left is abandoned when the
// last waiter gives up, and at once when none waits.
func TestPersonalLandingAndAbandon(t *testing.T) {
	s := newTestStore(t, 4<<20)
	key := []byte("k")
	f, _ := s.Join(key, now)
	w, _ := s.Join(key, now)
	released := make(chan bool)
	go func() {
		_, ok := w.Wait(context.Background(), time.Minute)
		released <- ok && w.Personal()
	}()
	for f.Waiters() < 1 {
		time.Sleep(time.Millisecond)
	}
	s.Land(key, f, httpcache.ReasonStatus, true, now)
	if !<-released {
		t.Error("the waiter was not told the landing was personal")
	}
	g, lead := s.Join(key, now)
	if g == nil || !lead {
		t.Fatal("a personal landing made the key skip the queue")
	}

	abandoned := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	h, _ := s.Join(key, now)
	go h.Wait(ctx, time.Minute)
	for g.Waiters() < 1 {
		time.Sleep(time.Millisecond)
	}
	var once sync.Once // abandon may be called again, as a cancel may
	g.LeaderLeft(func() { once.Do(func() { close(abandoned) }) })
	select {
	case <-abandoned:
		t.Fatal("abandoned while a request still waits")
	case <-time.After(20 * time.Millisecond):
	}
	cancel()
	select {
	case <-abandoned:
	case <-time.After(time.Second):
		t.Fatal("not abandoned when the last waiter gave up")
	}
	s.Land(key, g, httpcache.ReasonIncomplete, true, now)

	alone, _ := s.Join([]byte("alone"), now)
	left := false
	alone.LeaderLeft(func() { left = true })
	if !left {
		t.Error("a leader alone was not abandoned when its client left")
	}
}

// TestRefreshesOnePerKey checks that a stale entry is refreshed by one
// request at a time, and that refreshes are bounded.
func TestRefreshesOnePerKey(t *testing.T) {
	s := newTestStore(t, 4<<20)
	if !s.StartRefresh([]byte("a")) || s.StartRefresh([]byte("a")) {
		t.Fatal("two refreshes of one key at once")
	}
	s.EndRefresh([]byte("a"))
	if !s.StartRefresh([]byte("a")) {
		t.Fatal("a key cannot be refreshed again")
	}
	for i := 1; i < MaxRefreshes; i++ {
		if !s.StartRefresh([]byte{byte(i), byte(i >> 8), 'x'}) {
			t.Fatalf("refresh %d refused below the bound", i)
		}
	}
	if s.StartRefresh([]byte("one too many")) {
		t.Error("refreshes are not bounded")
	}
}
