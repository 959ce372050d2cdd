package limiter

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestDecideIsAtomicAcrossZones(t *testing.T) {
	wide := NewZone("wide", Limit{Algorithm: FixedWindow, Events: 10, Window: time.Minute}, 100)
	narrow := NewZone("narrow", Limit{Algorithm: TokenBucket, Events: 1, Window: time.Minute, Burst: 1}, 100)
	now := time.Unix(1_700_000_000, 0)
	out := make([]Decision, 2)
	reqs := []Request{{Zone: wide, Key: 1, Cost: 1}, {Zone: narrow, Key: 1, Cost: 1}}
	if !Decide(now, reqs, out) {
		t.Fatal("first request refused")
	}
	for range 3 {
		if Decide(now, reqs, out) {
			t.Fatal("admitted past the narrow zone")
		}
		if !out[0].Allowed || out[1].Allowed || out[0].Remaining != 9 {
			t.Fatalf("decisions %+v, want the wide zone to admit with 9 left uncharged", out)
		}
	}
	// The wide zone was charged once only: nine more fit alone.
	for i := range 9 {
		if !Decide(now, reqs[:1], out[:1]) {
			t.Fatalf("wide zone refused request %d: the refused requests were charged", i+2)
		}
	}
	if Decide(now, reqs[:1], out[:1]) {
		t.Error("wide zone admitted an eleventh request")
	}
}

func TestDryRunNeverRefuses(t *testing.T) {
	z := NewZone("dry", Limit{Algorithm: SlidingWindow, Events: 2, Window: time.Minute}, 100)
	now := time.Unix(1_700_000_000, 0)
	out := make([]Decision, 1)
	refusals := 0
	for range 5 {
		if !Decide(now, []Request{{Zone: z, Key: 7, Cost: 1, DryRun: true}}, out) {
			t.Fatal("a dry-run zone refused")
		}
		if !out[0].Allowed {
			refusals++
		}
	}
	if refusals != 3 {
		t.Errorf("dry run reported %d refusals, want 3", refusals)
	}
}

func TestSameZoneTwiceInOneDecision(t *testing.T) {
	z := NewZone("z", Limit{Algorithm: FixedWindow, Events: 5, Window: time.Minute}, 100)
	out := make([]Decision, 2)
	// Keys 1 and 65 share a shard: the lock must be taken once.
	if !Decide(time.Unix(1_700_000_000, 0), []Request{{Zone: z, Key: 1, Cost: 1}, {Zone: z, Key: 1 + shardCount, Cost: 1}}, out) {
		t.Fatal("refused")
	}
}

// TestTableIsBounded: max_keys is exact, whatever the bound, also when
// keys gather in few shards, and also after the bound shrinks.
func TestTableIsBounded(t *testing.T) {
	for _, maxKeys := range []int{1, 5, 63, 1000} {
		z := NewZone("flood", Limit{Algorithm: FixedWindow, Events: 100, Window: time.Hour}, maxKeys)
		now := time.Unix(1_700_000_000, 0)
		out := make([]Decision, 1)
		for k := range uint64(3 * maxKeys) {
			Decide(now, []Request{{Zone: z, Key: k*2654435761 + 1, Cost: 1}}, out)
			if n := z.Keys(); n > maxKeys {
				t.Fatalf("max_keys %d: zone holds %d keys", maxKeys, n)
			}
		}
		// Keys of one shard only: the room comes from the others.
		for k := range uint64(maxKeys) {
			Decide(now, []Request{{Zone: z, Key: 7 + k*shardCount, Cost: 1}}, out)
		}
		if n, held := z.Keys(), heldKeys(z); n != maxKeys || held != n {
			t.Errorf("max_keys %d: counts %d keys, holds %d", maxKeys, n, held)
		}
		if z.Evictions() == 0 {
			t.Errorf("max_keys %d: no eviction counted", maxKeys)
		}
	}
	z := NewZone("shrink", Limit{Algorithm: TokenBucket, Events: 100, Window: time.Hour}, 1000)
	now := time.Unix(1_700_000_000, 0)
	out := make([]Decision, 1)
	for k := range uint64(1000) {
		Decide(now, []Request{{Zone: z, Key: k, Cost: 1}}, out)
	}
	z.Reconfigure(Limit{Algorithm: TokenBucket, Events: 100, Window: time.Hour}, 10)
	Decide(now, []Request{{Zone: z, Key: 5000, Cost: 1}}, out)
	if n := z.Keys(); n != 10 || heldKeys(z) != 10 {
		t.Errorf("after shrinking to 10, a new key leaves %d keys (%d held)", n, heldKeys(z))
	}
}

// TestTableIsBoundedUnderConcurrency decides many new keys from many
// goroutines, in one zone and in two at once: the bound holds and the
// count agrees with the maps.
func TestTableIsBoundedUnderConcurrency(t *testing.T) {
	a := NewZone("a", Limit{Algorithm: SlidingWindow, Events: 100, Window: time.Hour}, 100)
	b := NewZone("b", Limit{Algorithm: FixedWindow, Events: 100, Window: time.Hour}, 3)
	now := time.Unix(1_700_000_000, 0)
	var wg sync.WaitGroup
	for g := range uint64(8) {
		wg.Go(func() {
			out := make([]Decision, 2)
			for k := range uint64(5000) {
				key := g<<32 | k
				Decide(now, []Request{{Zone: a, Key: key, Cost: 1}, {Zone: b, Key: key * 7, Cost: 1}}, out)
				// Within a decision, a Put that finds every other shard
				// locked may take a place beyond the bound, for an instant.
				if n := a.Keys(); n > 100+8 {
					t.Errorf("zone a holds %d keys", n)
					return
				}
			}
		})
	}
	wg.Wait()
	for _, z := range []*Zone{a, b} {
		if n, held := z.Keys(), heldKeys(z); n != held || n > int(z.state.Load().maxKeys()) {
			t.Errorf("zone %s counts %d keys, holds %d", z.Name, n, held)
		}
	}
}

// heldKeys counts the keys in a zone's maps.
func heldKeys(z *Zone) int {
	s := z.state.Load()
	if s.cells != nil {
		return s.cells.held()
	}
	return s.windows.held()
}

func TestKeysAtRestAreSwept(t *testing.T) {
	for _, algo := range []Algorithm{FixedWindow, SlidingWindow, TokenBucket, LeakyBucket} {
		z := NewZone("rest", Limit{Algorithm: algo, Events: 10, Window: time.Second}, 100)
		now := time.Unix(1_700_000_000, 0)
		out := make([]Decision, 1)
		for k := range uint64(20) {
			Decide(now, []Request{{Zone: z, Key: k, Cost: 1}}, out)
		}
		if n := z.Sweep(now); n != 0 {
			t.Errorf("%v: swept %d active keys", algo, n)
		}
		if n := z.Sweep(now.Add(2*time.Second + 100*time.Millisecond)); n != 20 || z.Keys() != 0 {
			t.Errorf("%v: swept %d, %d left", algo, n, z.Keys())
		}
	}
}

func TestReconfigure(t *testing.T) {
	z := NewZone("r", Limit{Algorithm: FixedWindow, Events: 2, Window: time.Minute}, 100)
	now := time.Unix(1_700_000_000, 0)
	out := make([]Decision, 1)
	req := []Request{{Zone: z, Key: 3, Cost: 1}}
	Decide(now, req, out)
	Decide(now, req, out)
	z.Reconfigure(Limit{Algorithm: FixedWindow, Events: 3, Window: time.Minute}, 100)
	if !Decide(now, req, out) || Decide(now, req, out) {
		t.Error("raising events did not keep the count")
	}
	z.Reconfigure(Limit{Algorithm: TokenBucket, Events: 3, Window: time.Minute}, 100)
	if z.Keys() != 0 || !Decide(now, req, out) {
		t.Error("a new algorithm did not start fresh")
	}
}

// TestBytesPerKey measures the live heap of a million keys per algorithm.
func TestBytesPerKey(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates a million keys per algorithm")
	}
	limits := map[Algorithm]int64{FixedWindow: 64, TokenBucket: 64, LeakyBucket: 64, SlidingWindow: 256}
	for _, algo := range []Algorithm{FixedWindow, SlidingWindow, TokenBucket, LeakyBucket} {
		perKey := bytesPerKey(algo, 1_000_000)
		t.Logf("%-14v %4d bytes per key", algo, perKey)
		if perKey > limits[algo] {
			t.Errorf("%v: %d bytes per key, want at most %d", algo, perKey, limits[algo])
		}
	}
}

func bytesPerKey(algo Algorithm, n int) int64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	z := NewZone("mem", Limit{Algorithm: algo, Events: 100, Window: time.Minute}, n)
	now := time.Unix(1_700_000_000, 0)
	out := make([]Decision, 1)
	req := make([]Request, 1)
	for k := range uint64(n) {
		req[0] = Request{Zone: z, Key: k*0x9E3779B97F4A7C15 + 1, Cost: 1}
		Decide(now, req, out)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(z)
	return (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / int64(n)
}

func BenchmarkDecide(b *testing.B) {
	for _, algo := range []Algorithm{FixedWindow, SlidingWindow, TokenBucket, LeakyBucket} {
		for _, keys := range []int{1, 1_000_000} {
			b.Run(fmt.Sprintf("%v/keys=%d", algo, keys), func(b *testing.B) {
				// A limit no benchmark reaches: the allow path.
				z := NewZone("bench", Limit{Algorithm: algo, Events: 1 << 40, Window: time.Hour, Burst: 1 << 40}, keys)
				now := time.Unix(1_700_000_000, 0)
				out := make([]Decision, 1)
				for k := range uint64(keys) {
					Decide(now, []Request{{Zone: z, Key: k, Cost: 1}}, out)
				}
				var next atomic.Uint64
				b.ReportAllocs()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					out := make([]Decision, 1)
					req := make([]Request, 1)
					k := next.Add(7919)
					for pb.Next() {
						k = k*6364136223846793005 + 1442695040888963407
						req[0] = Request{Zone: z, Key: k % uint64(keys), Cost: 1}
						if !Decide(now, req, out) {
							b.Fatal("refused")
						}
					}
				})
			})
		}
	}
}

// held counts the keys in the shards' maps, for tests of the count.
func (t *Table[S]) held() int {
	n := 0
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}

// maxKeys returns the bound of the zone's table.
func (s *zoneState) maxKeys() int64 {
	if s.cells != nil {
		return s.cells.maxKeys.Load()
	}
	return s.windows.maxKeys.Load()
}
