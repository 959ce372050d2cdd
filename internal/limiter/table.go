package limiter

import (
	"sync"
	"sync/atomic"
)

// shardCount spreads keys over locks; a power of two.
const shardCount = 64

// Table holds per-key state for one zone, bounded by a number of keys. A
// key's state is dropped once it is back at rest (its state would equal a
// fresh one), so idle keys cost nothing; when the table is full, a new key
// evicts the sampled key closest to rest, which loses the least.
//
// The bound is exact: count holds the keys of every shard, and a new key
// reserves its place in it before it is stored. The lock rules: a shard's
// map changes only under its lock, and count changes with it; a Put that
// must evict from another shard only tries that shard's lock, so two Puts
// never wait for each other.
type Table[S any] struct {
	shards    [shardCount]shard[S]
	maxKeys   atomic.Int64
	count     atomic.Int64
	restAt    atomic.Pointer[func(S) int64]
	evictions atomic.Uint64
}

type shard[S any] struct {
	mu        sync.Mutex
	m         map[uint64]S
	lastSweep int64
}

// NewTable returns a table that holds at most maxKeys keys; restAt tells
// when a state is back at rest (Unix microseconds).
func NewTable[S any](maxKeys int, restAt func(S) int64) *Table[S] {
	t := new(Table[S])
	t.SetMaxKeys(maxKeys)
	t.SetRestAt(restAt)
	for i := range t.shards {
		t.shards[i].m = make(map[uint64]S)
	}
	return t
}

// SetMaxKeys changes the bound, at least 1; a smaller one takes effect as
// new keys arrive, each evicting until the table is within it.
func (t *Table[S]) SetMaxKeys(maxKeys int) {
	t.maxKeys.Store(int64(max(maxKeys, 1)))
}

// SetRestAt changes how the table tells a state at rest.
func (t *Table[S]) SetRestAt(restAt func(S) int64) { t.restAt.Store(&restAt) }

// Shard returns the index of the shard that holds key.
func (t *Table[S]) Shard(key uint64) int { return int(key % shardCount) }

// Lock locks the shard with index i; the caller then uses Get and Put on
// keys of that shard and unlocks it.
func (t *Table[S]) Lock(i int) { t.shards[i].mu.Lock() }

// Unlock unlocks the shard with index i.
func (t *Table[S]) Unlock(i int) { t.shards[i].mu.Unlock() }

// Get returns the state of key, or the zero state. Its shard must be locked.
func (t *Table[S]) Get(key uint64) S { return t.shards[t.Shard(key)].m[key] }

// Put stores the state of key at now (Unix µs). Its shard must be locked.
// A new key takes a place in the table; when there is none, states of the
// shard back at rest are dropped first (at most once per millisecond of
// now), then the sampled state closest to rest, of this shard or, when it
// has none, of another.
func (t *Table[S]) Put(key uint64, s S, now int64) {
	i := t.Shard(key)
	sh := &t.shards[i]
	if _, ok := sh.m[key]; !ok {
		for !t.reserve() {
			if !t.makeRoom(i, now) {
				// Every other shard is locked, or empty, right now: take
				// the place anyway rather than wait on locks whose holders
				// may wait on this one. Trim, called once the caller holds
				// no lock, gives it back.
				t.count.Add(1)
				break
			}
		}
	}
	sh.m[key] = s
}

// Trim evicts until the table is within its bound. Call it holding no
// shard lock of the table: it waits for each.
func (t *Table[S]) Trim() {
	for i := 0; i < shardCount && t.count.Load() > t.maxKeys.Load(); i++ {
		sh := &t.shards[i]
		sh.mu.Lock()
		for len(sh.m) > 0 && t.count.Load() > t.maxKeys.Load() {
			t.evictOne(sh)
		}
		sh.mu.Unlock()
	}
}

// over reports whether the table holds more keys than its bound.
func (t *Table[S]) over() bool { return t.count.Load() > t.maxKeys.Load() }

// reserve takes a place for a new key, if the table has one.
func (t *Table[S]) reserve() bool {
	for {
		n := t.count.Load()
		if n >= t.maxKeys.Load() {
			return false
		}
		if t.count.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// makeRoom drops a state, the locked shard i's if it has any, else one of
// another shard whose lock it can take without waiting. It reports
// whether there may be room now.
func (t *Table[S]) makeRoom(i int, now int64) bool {
	sh := &t.shards[i]
	if len(sh.m) > 0 {
		if now-sh.lastSweep >= 1000 {
			sh.lastSweep = now
			if t.sweepShard(sh, now) > 0 {
				return true
			}
		}
		t.evictOne(sh)
		return true
	}
	for j := 1; j < shardCount; j++ {
		other := &t.shards[(i+j)%shardCount]
		if !other.mu.TryLock() {
			continue
		}
		evicted := len(other.m) > 0
		if evicted {
			t.evictOne(other)
		}
		other.mu.Unlock()
		if evicted {
			return true
		}
	}
	return t.count.Load() < t.maxKeys.Load()
}

// evictOne drops, among a few keys of a locked shard in map order (which
// Go randomises), the one that comes to rest first.
func (t *Table[S]) evictOne(sh *shard[S]) {
	const samples = 8
	var victim uint64
	best := int64(1<<63 - 1)
	restAt := *t.restAt.Load()
	n := 0
	for k, s := range sh.m {
		if r := restAt(s); r < best {
			best, victim = r, k
		}
		if n++; n == samples {
			break
		}
	}
	delete(sh.m, victim)
	t.count.Add(-1)
	t.evictions.Add(1)
}

func (t *Table[S]) sweepShard(sh *shard[S], now int64) int {
	n := 0
	restAt := *t.restAt.Load()
	for k, s := range sh.m {
		if restAt(s) <= now {
			delete(sh.m, k)
			n++
		}
	}
	t.count.Add(int64(-n))
	return n
}

// Sweep drops every state back at rest at now (Unix µs) and returns how many.
func (t *Table[S]) Sweep(now int64) int {
	n := 0
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		n += t.sweepShard(sh, now)
		sh.mu.Unlock()
	}
	return n
}

// Delete drops the state of key, reporting whether it had one.
func (t *Table[S]) Delete(key uint64) bool {
	sh := &t.shards[t.Shard(key)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	_, ok := sh.m[key]
	if ok {
		delete(sh.m, key)
		t.count.Add(-1)
	}
	return ok
}

// Clear drops every state and returns how many there were.
func (t *Table[S]) Clear() int {
	n := 0
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		t.count.Add(int64(-len(sh.m)))
		sh.m = make(map[uint64]S)
		sh.mu.Unlock()
	}
	return n
}

// Len returns how many keys the table holds.
func (t *Table[S]) Len() int { return int(t.count.Load()) }

// Evictions returns how many keys were evicted for room.
func (t *Table[S]) Evictions() uint64 { return t.evictions.Load() }
