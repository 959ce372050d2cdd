package limiter

import (
	"container/heap"
	"sync"
	"sync/atomic"
	"time"
)

// Refusals remembers the keys a shared store refused, each until the
// moment before which the store can admit no request of the same cost or
// more: the refusal's RetryAfter, counted from a time no later than the
// store's decision. Until then a node refuses such requests itself,
// exactly as the store would, without asking it. Admissions elsewhere only
// push that moment later; a reset of the key is the one thing that brings
// it closer, and must Forget the key.
//
// A refusal holds only for the limit it was made under: after a reload
// that changed the limit, the store decides again. Times are measured on
// the monotonic clock, from the table's creation, so a step of the wall
// clock does not stretch a refusal.
//
// The table is bounded: when it is full, the refusal that ends first goes,
// so those kept are those that spare the store the most calls.
type Refusals struct {
	shards   [refusalShards]refusalShard
	perShard int
	base     time.Time
	gen      atomic.Uint64 // advanced by every Forget and Clear
}

const refusalShards = 16

// RefusalBytes bounds what one remembered refusal costs in memory, its
// heap entry and its map entry, in a full table (TestRefusalBytes).
const RefusalBytes = 128

// refusal is one remembered refusal, all times in Unix microseconds.
type refusal struct {
	key       uint64
	limit     Limit // the limit it was made under
	until     int64 // no request of cost or more is admitted before
	resetAt   int64 // when the key is back at rest, as the store said
	cost      int64
	remaining int64
}

type refusalShard struct {
	mu    sync.Mutex
	index map[uint64]int // key → position in byUntil
	heap  refusalHeap
}

// NewRefusals returns a table that holds up to max refusals; max is
// rounded up to a multiple of 16.
func NewRefusals(max int) *Refusals {
	r := &Refusals{perShard: (max + refusalShards - 1) / refusalShards, base: time.Now()}
	for i := range r.shards {
		r.shards[i].index = make(map[uint64]int)
		r.shards[i].heap.index = r.shards[i].index
	}
	return r
}

func (r *Refusals) shard(key uint64) *refusalShard { return &r.shards[key%refusalShards] }

// Generation returns a number that every Forget and Clear advance. A
// caller reads it before it asks the store, and gives it to Record: a
// refusal the store made before a reset that Forget or Clear carried out
// meanwhile is not remembered.
func (r *Refusals) Generation() uint64 { return r.gen.Load() }

// micros returns t on the table's clock.
func (r *Refusals) micros(t time.Time) int64 { return t.Sub(r.base).Microseconds() }

// Record remembers that the store refused a request of cost for key under
// limit, at a time no earlier than now, unless the table's generation has
// moved past gen. A decision that never admits (a cost above the limit's
// capacity) is not remembered: no moment ends it.
func (r *Refusals) Record(key uint64, now time.Time, limit Limit, cost int64, d Decision, gen uint64) {
	if d.Allowed || d.RetryAfter >= never || r.perShard == 0 {
		return
	}
	t := r.micros(now)
	e := refusal{key: key, limit: limit, until: t + d.RetryAfter.Microseconds(), resetAt: t + d.Reset.Microseconds(), cost: cost, remaining: d.Remaining}
	s := r.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.gen.Load() != gen {
		return // a reset came between the question and the answer
	}
	if i, ok := s.index[key]; ok {
		s.heap.entries[i] = e
		heap.Fix(&s.heap, i)
		return
	}
	if len(s.heap.entries) >= r.perShard {
		if e.until <= s.heap.entries[0].until {
			return // it would end first: it is the one to go
		}
		heap.Pop(&s.heap)
	}
	heap.Push(&s.heap, e)
}

// Check reports whether a request of cost for key under limit, at now, is
// refused by a remembered refusal, and the decision to answer it with.
func (r *Refusals) Check(key uint64, now time.Time, limit Limit, cost int64) (Decision, bool) {
	s := r.shard(key)
	s.mu.Lock()
	i, ok := s.index[key]
	if !ok {
		s.mu.Unlock()
		return Decision{}, false
	}
	e := s.heap.entries[i]
	t := r.micros(now)
	if t >= e.until {
		heap.Remove(&s.heap, i)
		s.mu.Unlock()
		return Decision{}, false
	}
	s.mu.Unlock()
	if cost < e.cost || limit != e.limit {
		// A smaller request may fit, or the limit changed: the store
		// decides it.
		return Decision{}, false
	}
	return Decision{
		Remaining:  e.remaining,
		Reset:      time.Duration(max(e.resetAt-t, 0)) * time.Microsecond,
		RetryAfter: time.Duration(e.until-t) * time.Microsecond,
	}, true
}

// Forget drops the refusal of one key, after the key was reset.
func (r *Refusals) Forget(key uint64) {
	s := r.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	r.gen.Add(1)
	if i, ok := s.index[key]; ok {
		heap.Remove(&s.heap, i)
	}
}

// Clear drops every refusal, after the zone was reset or its limit changed.
func (r *Refusals) Clear() {
	r.gen.Add(1)
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		clear(s.index)
		s.heap.entries = nil
		s.mu.Unlock()
	}
}

// Len returns how many refusals the table holds, ended ones included
// until they are looked up or pushed out.
func (r *Refusals) Len() int {
	n := 0
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		n += len(s.heap.entries)
		s.mu.Unlock()
	}
	return n
}

// refusalHeap orders a shard's refusals by the moment they end, earliest
// first, keeping index up to date.
type refusalHeap struct {
	entries []refusal
	index   map[uint64]int
}

func (h *refusalHeap) Len() int           { return len(h.entries) }
func (h *refusalHeap) Less(i, j int) bool { return h.entries[i].until < h.entries[j].until }
func (h *refusalHeap) Swap(i, j int) {
	h.entries[i], h.entries[j] = h.entries[j], h.entries[i]
	h.index[h.entries[i].key] = i
	h.index[h.entries[j].key] = j
}
func (h *refusalHeap) Push(x any) {
	e := x.(refusal)
	h.index[e.key] = len(h.entries)
	h.entries = append(h.entries, e)
}
func (h *refusalHeap) Pop() any {
	e := h.entries[len(h.entries)-1]
	h.entries = h.entries[:len(h.entries)-1]
	delete(h.index, e.key)
	return e
}
