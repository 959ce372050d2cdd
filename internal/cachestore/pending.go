package cachestore

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddy-gateway/gateway/internal/httpcache"
)

// pending holds the entries handed to the store whose admission is not
// settled yet. Ristretto applies writes on a goroutine of its own, so a
// Get right after a Set may not see a new entry, and its admission policy
// may still refuse it. Waiting for that on every Put cost a goroutine
// hand-off per stored response; instead Put returns at once, and a Get
// that misses a key still pending waits then, which only a request for a
// key stored an instant ago does (a collapsed waiter, a client's next
// request). Each entry's final outcome, stored or refused, is counted
// once it is settled.
//
// Entries are numbered in the order they enter ristretto's write buffer;
// the buffer is applied in that order, and ristretto asks each entry's
// cost just before it decides on it, so when it asks for entry n, every
// entry before n is settled.
type pending struct {
	mu    sync.Mutex
	seq   uint64            // the number of the last entry handed over
	byKey map[string]*Entry // the unsettled entries, by key
	queue []*Entry          // the same, in order from queue[head]
	head  int

	count   atomic.Int32  // len(byKey), read without mu
	settled atomic.Uint64 // every entry numbered up to this is settled
}

// maxIdleQueue is the longest queue array kept once the queue is empty.
const maxIdleQueue = 1024

// set hands x to ristretto, numbered; false when ristretto's write buffer
// is full and x was dropped.
func (s *Store) set(x *Entry, ttl time.Duration) bool {
	p := &s.pending
	p.mu.Lock()
	defer p.mu.Unlock()
	if prev := p.byKey[string(x.Key)]; prev != nil && prev.seq > p.settled.Load() {
		// Ristretto refuses a new key set again before it applied the
		// first set: let it apply that one, so this one replaces it.
		seq := p.seq
		p.mu.Unlock()
		s.store.Wait()
		p.advance(seq)
		p.mu.Lock()
	}
	p.seq++
	x.seq = p.seq
	if p.byKey == nil {
		p.byKey = make(map[string]*Entry)
	}
	p.byKey[string(x.Key)] = x
	p.count.Store(int32(len(p.byKey)))
	// Ristretto takes a set of a key it holds as an update, which changes
	// the key's cost but neither admits nor evicts: entries replaced by
	// larger ones (a validation, a refresh, a new 200 for one that
	// expired) would grow the store past its bound. With the old one
	// deleted first, the new one is admitted, and evicts, as any new
	// entry does. A Get meanwhile finds it pending, and waits for it.
	// The delete is unconditional: ristretto holds an expired key, which
	// no lookup reports, until its cleanup runs seconds later.
	s.store.Del(x.Key)
	// A zero cost makes ristretto call costOf as it applies the write.
	if !s.store.SetWithTTL(x.Key, x, 0, ttl) {
		delete(p.byKey, string(x.Key))
		p.count.Store(int32(len(p.byKey)))
		return false
	}
	p.queue = append(p.queue, x)
	s.release(p.settled.Load())
	return true
}

// costOf is ristretto's cost function, called in order as it applies
// each write: every entry before x is settled.
func (s *Store) costOf(x *Entry) int64 {
	s.pending.advance(x.seq - 1)
	return x.cost
}

// advance records that every entry numbered up to seq is settled.
func (p *pending) advance(seq uint64) {
	for {
		old := p.settled.Load()
		if seq <= old || p.settled.CompareAndSwap(old, seq) {
			return
		}
	}
}

// release forgets the entries numbered up to seq, counting the outcome of
// each response: refused if ristretto's policy refused it, else stored.
// Vary markers are not counted. Called with s.pending.mu held.
func (s *Store) release(seq uint64) {
	p := &s.pending
	for ; p.head < len(p.queue) && p.queue[p.head].seq <= seq; p.head++ {
		x := p.queue[p.head]
		p.queue[p.head] = nil
		if p.byKey[string(x.Key)] == x {
			delete(p.byKey, string(x.Key))
		}
		if x.Vary == nil {
			if x.rejected {
				s.stats.record(httpcache.ReasonRefused)
			} else {
				s.stats.record(httpcache.Stored)
			}
		}
	}
	switch {
	case p.head == len(p.queue) && cap(p.queue) > maxIdleQueue:
		p.queue, p.head = nil, 0 // let a burst's array go
	case p.head == len(p.queue):
		p.queue, p.head = p.queue[:0], 0
	case p.head > maxIdleQueue && 2*p.head > len(p.queue):
		n := copy(p.queue, p.queue[p.head:])
		clear(p.queue[n:])
		p.queue, p.head = p.queue[:n], 0
	}
	p.count.Store(int32(len(p.byKey)))
}

// How an entry of a key stands for a Get that missed it, having read
// p.settled before it looked.
const (
	notPending   = iota // the Get's miss holds
	settledSince        // entries were settled since; look again
	unsettled           // an entry of the key is not settled yet
)

// state says whether a Get that missed key, and read p.settled as since
// before it looked, may have missed an entry handed over before it began.
func (p *pending) state(key []byte, since uint64) int {
	if p.count.Load() == 0 {
		if p.settled.Load() != since {
			return settledSince
		}
		return notPending
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.settled.Load()
	if x := p.byKey[string(key)]; x != nil && x.seq > now {
		return unsettled
	}
	if now != since {
		return settledSince
	}
	return notPending
}

// settle waits until every entry handed over so far is settled, and
// counts their outcomes.
func (s *Store) settle() {
	p := &s.pending
	p.mu.Lock()
	seq := p.seq
	p.mu.Unlock()
	s.store.Wait()
	p.advance(seq)
	p.mu.Lock()
	s.release(p.settled.Load())
	p.mu.Unlock()
}

// dropPending settles every entry at once, after the store was cleared:
// called with s.mu held exclusively, so no Put runs beside it.
func (s *Store) dropPending() {
	p := &s.pending
	p.mu.Lock()
	defer p.mu.Unlock()
	p.advance(p.seq)
	s.release(p.seq)
}
