// Package cachestore is the engine of a named response cache: a store
// bounded in bytes (ristretto underneath), the index that finds entries by
// path and tag, the invalidation epochs that make flushes and purges exact
// against stores in flight, the key rules of the writers, and the
// counters. It knows nothing of Caddy: the handlers at the repository's
// root build entries and hand them over, and every time is a parameter.
package cachestore

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"

	"github.com/caddy-gateway/gateway/internal/httpcache"
)

// Size defaults and bounds of a store, in bytes.
const (
	DefaultMaxSize      = 64 << 20
	DefaultMaxEntrySize = 1 << 20
	MinMaxSize          = 1 << 20
)

// Config is what a store is made with.
type Config struct {
	// Name identifies the store in errors and in Cache-Status.
	Name string
	// MaxSize bounds the memory the store holds, in bytes: bodies,
	// headers, keys and bookkeeping. At least MinMaxSize.
	MaxSize int64
	// MaxEntrySize is the largest entry, headers and body, the store
	// takes. Positive and at most half of MaxSize.
	MaxEntrySize int64
}

// Validate reports what is wrong with the config's name and sizes, naming
// the fields as the cache_pool app's JSON does.
func (c Config) Validate() error {
	if err := CheckName(c.Name); err != nil {
		return err
	}
	if err := CheckMaxSize(c.MaxSize); err != nil {
		return err
	}
	if err := CheckMaxEntrySize(c.MaxEntrySize); err != nil {
		return err
	}
	if c.MaxEntrySize > c.MaxSize/2 {
		return fmt.Errorf("max_entry_size %d exceeds half of max_size %d", c.MaxEntrySize, c.MaxSize)
	}
	return nil
}

// CheckName reports what is wrong with a cache's name. The admin API
// names a cache in its paths (/cache/<name>/purge), which its router
// cleans: a name holds no '/' and is neither "." nor "..". Cache-Status
// names it as a Structured Field token or string: a name is printable
// ASCII.
func CheckName(name string) error {
	switch {
	case strings.Contains(name, "/"):
		return fmt.Errorf("a cache name may not contain '/'")
	case name == "." || name == "..":
		return fmt.Errorf("a cache may not be named %q", name)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < 0x20 || c > 0x7e {
			return fmt.Errorf("a cache name holds printable ASCII only, as Cache-Status names it, not %q", name)
		}
	}
	return nil
}

// CheckMaxSize reports what is wrong with a store's bound on its own.
func CheckMaxSize(n int64) error {
	if n < MinMaxSize {
		return fmt.Errorf("max_size %d is below the minimum of 1MiB", n)
	}
	return nil
}

// CheckMaxEntrySize reports what is wrong with an entry bound on its own.
func CheckMaxEntrySize(n int64) error {
	if n <= 0 {
		return fmt.Errorf("max_entry_size must be positive")
	}
	return nil
}

// invalidationSlots spreads per-path invalidation counters: a store that
// started before an invalidation of its path, or of the whole cache, is
// dropped rather than written after it.
const invalidationSlots = 256

// slotLogSize is how many of its latest URL invalidations a slot
// remembers, so that a store that saw its slot move on can tell whether
// its own path was among them. A store that saw more is dropped.
const slotLogSize = 8

// slotLog holds a slot's latest URL invalidations: the hash of each path,
// at the slot's epoch its invalidation made, modulo slotLogSize. It is
// written and read under Store.mu.
type slotLog struct {
	hashes [slotLogSize]uint64
	epochs [slotLogSize]uint64
}

func (l *slotLog) record(epoch, hash uint64) {
	l.hashes[epoch%slotLogSize], l.epochs[epoch%slotLogSize] = hash, epoch
}

// holds reports whether the path of hash may have been invalidated after
// epoch since, the slot being at epoch now: true when it was, or when
// the slot no longer remembers every invalidation since.
func (l *slotLog) holds(hash, since, now uint64) bool {
	if now-since > slotLogSize {
		return true
	}
	for epoch := since + 1; epoch <= now; epoch++ {
		i := epoch % slotLogSize
		if l.epochs[i] != epoch || l.hashes[i] == hash {
			return true
		}
	}
	return false
}

// pathHash hashes the path with 64-bit FNV-1a. It picks the path's slot
// and stands for the path in the slot's log: a collision only drops a
// store that could have been kept.
func pathHash(path string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(path); i++ {
		h ^= uint64(path[i])
		h *= 1099511628211
	}
	return h
}

func slotOf(hash uint64) int { return int(hash % invalidationSlots) }

// pathSlot returns the invalidation slot of path.
func pathSlot(path string) int { return slotOf(pathHash(path)) }

// Store is one named cache.
type Store struct {
	name  string
	store *ristretto.Cache[[]byte, *Entry]
	index index

	maxSize      atomic.Int64
	maxEntrySize atomic.Int64
	fixedCost    int64

	// mu orders stores against invalidations: a store holds it shared
	// while it checks the epochs and writes; an invalidation holds it
	// exclusively while it bumps the epochs, deletes and waits for the
	// store's buffers to drain.
	mu    sync.RWMutex
	epoch atomic.Uint64
	slots [invalidationSlots]atomic.Uint64
	logs  [invalidationSlots]slotLog

	rulesMu sync.Mutex
	rules   atomic.Pointer[[]*KeyRule]
	refs    map[string]int // writers per rule ID, under rulesMu

	flushing atomic.Bool

	// The counters are written on every request, from every core: they
	// keep cache lines of their own, so that the fields read on every
	// request, such as rules, are not invalidated with them.
	_       [64]byte
	stats   counters
	_       [64]byte
	flights flights
	pending pending
}

// New returns an empty store, or what is wrong with cfg.
func New(cfg Config) (*Store, error) {
	if cfg.Name == "" {
		return nil, fmt.Errorf("a cache needs a name")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("cache %q: %v", cfg.Name, err)
	}
	counters := counterCount(cfg.MaxSize)
	s := &Store{name: cfg.Name, refs: make(map[string]int)}
	// The admission counters, the store's write buffer and the slot logs
	// are memory the cache holds; they come out of MaxSize.
	s.fixedCost = counters*4 + 256<<10 + invalidationSlots*slotLogSize*16
	store, err := ristretto.NewCache(&ristretto.Config[[]byte, *Entry]{
		NumCounters: counters,
		MaxCost:     cfg.MaxSize - s.fixedCost,
		BufferItems: 64,
		Cost:        s.costOf,
		OnEvict:     s.onEvict,
		OnReject:    s.onReject,
		OnExit:      s.onExit,
	})
	if err != nil {
		return nil, fmt.Errorf("cache %q: %v", cfg.Name, err)
	}
	s.store = store
	s.maxSize.Store(cfg.MaxSize)
	s.maxEntrySize.Store(cfg.MaxEntrySize)
	s.index.init()
	s.rules.Store(new([]*KeyRule))
	return s, nil
}

// counterCount sizes ristretto's admission counters: about one per 256
// bytes of capacity, ten per entry of 2.5 KiB.
func counterCount(maxSize int64) int64 {
	return min(max(maxSize/256, 1<<10), 1<<24)
}

// Name returns the store's name.
func (s *Store) Name() string { return s.name }

// MaxSize returns the bound on the memory the cache holds.
func (s *Store) MaxSize() int64 { return s.maxSize.Load() }

// MaxEntrySize returns the largest entry the store takes.
func (s *Store) MaxEntrySize() int64 { return s.maxEntrySize.Load() }

// Resize applies new sizes in place; entries are kept, and the store
// evicts down to a smaller bound as new entries arrive.
func (s *Store) Resize(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("cache %q: %v", s.name, err)
	}
	s.maxEntrySize.Store(cfg.MaxEntrySize)
	if s.maxSize.Swap(cfg.MaxSize) != cfg.MaxSize {
		s.store.UpdateMaxCost(cfg.MaxSize - s.fixedCost)
	}
	return nil
}

// Close releases the store's goroutines and memory.
func (s *Store) Close() { s.store.Close() }

func (s *Store) onEvict(item *ristretto.Item[*Entry]) {
	if s.flushing.Load() {
		return
	}
	if !item.Expiration.IsZero() && !item.Expiration.After(time.Now()) {
		return // expired, not evicted for room
	}
	s.stats.evicted.Add(1)
}

func (s *Store) onReject(item *ristretto.Item[*Entry]) {
	s.stats.rejected.Add(1)
	if item.Value != nil {
		item.Value.rejected = true // counted when released from pending
	}
}

// onExit runs whenever a value leaves the store, for any reason.
func (s *Store) onExit(e *Entry) {
	if e != nil {
		s.index.remove(e)
	}
}

// Snapshot is the state of the invalidation epochs that a store of one
// path started under. Take it before the response is asked for: Put drops
// the entry when the path, or the whole store, was invalidated since.
type Snapshot struct{ global, slot uint64 }

// Snapshot returns the epochs that invalidations of path bump.
func (s *Store) Snapshot(path string) Snapshot {
	return Snapshot{s.epoch.Load(), s.slots[pathSlot(path)].Load()}
}

// current reports whether nothing that concerns path was invalidated
// since snap was taken: not the whole store, nor a prefix or a tag, nor
// the path itself. The invalidation of another path of its slot does not
// count, as long as the slot remembers it. Called with s.mu held.
func (s *Store) current(snap Snapshot, path string) bool {
	if snap.global != s.epoch.Load() {
		return false
	}
	hash := pathHash(path)
	slot := slotOf(hash)
	now := s.slots[slot].Load()
	return now == snap.slot || !s.logs[slot].holds(hash, snap.slot, now)
}

// Put stores the entry written for one request, and the Vary marker that
// leads to it if there is one, unless an invalidation of their path
// happened since snap was taken. It computes their costs, and returns
// Stored or the reason nothing was stored. It counts the outcome: a reason
// at once; Stored, or Refused by the admission policy, once that is
// settled (see pending). When it returns, a later Get finds what was
// stored unless the policy refuses it. keep is how long the store holds them, stale
// windows included (see Entry.Keep); the store keeps them a second longer.
func (s *Store) Put(snap Snapshot, keep time.Duration, e, marker *Entry) httpcache.Outcome {
	var evict []byte
	if marker != nil {
		evict = s.trackVariant(marker, e.Key)
	}
	e.computeCost()
	if marker != nil {
		marker.computeCost()
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if !s.current(snap, e.Path) {
		s.stats.record(httpcache.ReasonInvalidated)
		return httpcache.ReasonInvalidated
	}
	storeTTL := max(keep, 0) + time.Second
	// The marker goes first: a variant the marker does not lead to is
	// never found.
	for _, x := range [2]*Entry{marker, e} {
		if x == nil {
			continue
		}
		s.index.add(x)
		if !s.set(x, storeTTL) {
			s.index.remove(x)
			s.stats.record(httpcache.ReasonRefused)
			return httpcache.ReasonRefused
		}
	}
	if evict != nil {
		s.store.Del(evict)
	}
	return httpcache.Stored
}

// MaxVariants bounds the variants of one resource that a store keeps: past
// it, storing another drops the one stored longest ago, so that a request
// header with many values cannot crowd out other resources.
const MaxVariants = 32

// trackVariant records in a new marker the variant keys of its resource,
// carried over from the marker it replaces, with key added; it returns the
// key of the variant to drop when there are too many. Two writers of one
// resource at once may each miss the other's key: the bound then holds
// within one variant per writer.
func (s *Store) trackVariant(marker *Entry, key []byte) (evict []byte) {
	var known [][]byte
	if old := s.Get(marker.Key); old != nil && slices.Equal(old.Vary, marker.Vary) {
		known = old.variants
	}
	variants := make([][]byte, 0, len(known)+1)
	for _, k := range known {
		if string(k) != string(key) {
			variants = append(variants, k)
		}
	}
	variants = append(variants, key)
	if len(variants) > MaxVariants {
		evict, variants = variants[0], variants[1:]
	}
	marker.variants = variants
	return evict
}

// Remove drops e if it is still the entry stored under its key.
func (s *Store) Remove(e *Entry) {
	if s.Get(e.Key) == e {
		s.store.Del(e.Key)
	}
}

// Get returns the entry stored under key, if its key matches exactly.
func (s *Store) Get(key []byte) *Entry {
	// A key stored again is deleted, then set: a Get in between finds it
	// pending and waits. Another store of the key may delete it again
	// meanwhile, so the Get looks a few times (a key replaced without
	// pause could be missed for ever).
	for range maxGetRounds {
		since := s.pending.settled.Load()
		if e := s.lookup(key); e != nil {
			return e
		}
		switch s.pending.state(key, since) {
		case unsettled:
			// Stored an instant ago: wait for the store to take it or
			// refuse it.
			s.settle()
		case settledSince:
			// Something was settled during the lookup, maybe this key.
		default:
			return nil
		}
	}
	return s.lookup(key)
}

// maxGetRounds bounds how often a Get waits for stores of its key.
const maxGetRounds = 16

// lookup returns the entry ristretto holds under key, if its key matches
// exactly.
func (s *Store) lookup(key []byte) *Entry {
	e, ok := s.store.Get(key)
	if !ok || e == nil || string(e.Key) != string(key) {
		return nil
	}
	return e
}

// Flush drops every entry. When it returns, no Get finds any entry stored
// before it, nor one from a Put whose snapshot was taken before it.
func (s *Store) Flush() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.epoch.Add(1)
	s.flushing.Store(true)
	s.store.Clear()
	s.dropPending()
	s.index.clear()
	s.flushing.Store(false)
}

// Purge drops the entries that t selects, and returns how many responses
// it dropped (Vary markers are not counted). When it returns, no Get finds
// them, nor an entry of a selected path from a Put whose snapshot was
// taken before it.
func (s *Store) Purge(t Target) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(t.Prefixes) > 0 || len(t.Tags) > 0 {
		s.epoch.Add(1)
	}
	for _, u := range t.URLs {
		hash := pathHash(u.Path)
		slot := slotOf(hash)
		s.logs[slot].record(s.slots[slot].Add(1), hash)
	}
	victims := s.index.match(t)
	for _, e := range victims {
		s.store.Del(e.Key)
	}
	s.settle()
	removed := 0
	for _, e := range victims {
		if e.Vary == nil {
			removed++
		}
	}
	return removed
}

// Stats is a store's state and counters at one moment.
type Stats struct {
	// Entries counts responses and Vary markers held.
	Entries int
	// UsedBytes is the memory held now, bookkeeping included; MaxSize its
	// bound.
	UsedBytes, MaxSize int64
	// Requests counts lookups by result.
	Requests [NumResults]uint64
	// Outcomes counts the responses offered to the store, by outcome.
	Outcomes [httpcache.NumOutcomes]uint64
	// Evicted counts entries evicted for room; Rejected, entries the
	// store's admission policy refused.
	Evicted, Rejected uint64
}

// Stats returns the store's state and counters, every Put before it
// counted with its final outcome.
func (s *Store) Stats() Stats {
	s.settle()
	st := Stats{
		Entries:   s.index.entries(),
		UsedBytes: s.store.MaxCost() - s.store.RemainingCost() + s.fixedCost,
		MaxSize:   s.maxSize.Load(),
		Evicted:   s.stats.evicted.Load(),
		Rejected:  s.stats.rejected.Load(),
	}
	for i := range st.Requests {
		st.Requests[i] = s.stats.requests[i].Load()
	}
	for i := range st.Outcomes {
		st.Outcomes[i] = s.stats.outcomes[i].Load()
	}
	return st
}

// Count records the result of a lookup that the caller made.
func (s *Store) Count(r Result) { s.stats.requests[r].Add(1) }

// Record records the outcome of offering a response to the store, when
// the caller decided it without calling Put.
func (s *Store) Record(o httpcache.Outcome) { s.stats.record(o) }

// counters count what happens to one store.
type counters struct {
	requests [NumResults]atomic.Uint64
	outcomes [httpcache.NumOutcomes]atomic.Uint64
	evicted  atomic.Uint64
	rejected atomic.Uint64
}

func (c *counters) record(o httpcache.Outcome) { c.outcomes[o].Add(1) }

// AddRule makes a writer's key rule known to readers of the store.
func (s *Store) AddRule(r *KeyRule) {
	s.rulesMu.Lock()
	defer s.rulesMu.Unlock()
	s.refs[r.id]++
	if s.refs[r.id] > 1 {
		return
	}
	rules := slices.Clone(*s.rules.Load())
	rules = append(rules, r)
	s.rules.Store(&rules)
}

// RemoveRule forgets a writer's key rule once no writer uses it.
func (s *Store) RemoveRule(r *KeyRule) {
	s.rulesMu.Lock()
	defer s.rulesMu.Unlock()
	s.refs[r.id]--
	if s.refs[r.id] > 0 {
		return
	}
	delete(s.refs, r.id)
	rules := slices.DeleteFunc(slices.Clone(*s.rules.Load()), func(x *KeyRule) bool { return x.id == r.id })
	s.rules.Store(&rules)
}

// Rules returns the key rules of the store's writers, read-only.
func (s *Store) Rules() []*KeyRule { return *s.rules.Load() }
