package redisstore

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caddy-gateway/gateway/internal/limiter"
	"github.com/caddy-gateway/gateway/internal/redistest"
)

func client(t *testing.T) *redis.Client {
	srv := redistest.Start(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { c.Close() })
	return c
}

// Decide decides a request against its zones, in a script call of its
// own, at an explicit time (Unix µs), or, with now zero, on the server's
// clock. The gateway decides through a Batcher, always on the server's
// clock; tests play tables of times.
func Decide(ctx context.Context, c redis.Scripter, now int64, reqs []Request, out []limiter.Decision) (admitted bool, err error) {
	var b batch
	b.start(now)
	b.add(reqs)
	vals, err := decideScript.Run(ctx, c, b.keys, b.args...).Int64Slice()
	if err != nil {
		return false, err
	}
	return decode(vals[min(1, len(vals)):], reqs, out)
}

// randomZones makes a zone of each algorithm (fixed, sliding, token,
// leaky) with a random limit, and returns the limits and the zones.
func randomZones(r *rand.Rand) ([]limiter.Limit, []*limiter.Zone) {
	var limits []limiter.Limit
	var zones []*limiter.Zone
	algos := []limiter.Algorithm{limiter.FixedWindow, limiter.SlidingWindow, limiter.TokenBucket, limiter.LeakyBucket}
	for i, a := range algos {
		// Any number of µs: most windows are not a multiple of 16.
		l := limiter.Limit{Algorithm: a, Events: 1 + r.Int64N(8), Window: time.Duration(16000+r.Int64N(3_000_000)) * time.Microsecond}
		if a == limiter.TokenBucket || a == limiter.LeakyBucket {
			l.Burst = r.Int64N(5)
		}
		limits = append(limits, l)
		zones = append(zones, limiter.NewZone(fmt.Sprint(i), l, 100))
	}
	return limits, zones
}

// TestSameDecisionsAsMemory plays one table of arrivals against the
// in-memory zones and against Redis, zone by zone and with several zones
// per request, and wants the same decisions to the microsecond.
func TestSameDecisionsAsMemory(t *testing.T) {
	c := client(t)
	ctx := context.Background()
	for seed := range uint64(12) {
		r := rand.New(rand.NewPCG(seed, 9))
		limits, zones := randomZones(r)
		// Ahead of the server's clock: keys expire at their rest time by
		// that clock, and must not expire before the table's time says.
		now := time.Now().Add(time.Hour).UnixMicro() + r.Int64N(1e6)
		for step := range 150 {
			now += r.Int64N(limits[0].Window.Microseconds()/4 + 1)
			// Each step matches one zone alone, or all four together.
			picks := []int{step % 4}
			if step%5 == 0 {
				picks = []int{0, 1, 2, 3}
			}
			var mem []limiter.Request
			var red []Request
			for _, p := range picks {
				cost := 1 + r.Int64N(2)
				dry := r.IntN(7) == 0
				mem = append(mem, limiter.Request{Zone: zones[p], Key: 42, Cost: cost, DryRun: dry})
				red = append(red, Request{StateKey: fmt.Sprintf("%sseed%d:%d", KeyPrefix, seed, p), Limit: limits[p], Cost: cost, DryRun: dry})
			}
			want := make([]limiter.Decision, len(mem))
			got := make([]limiter.Decision, len(red))
			wantAdmitted := limiter.Decide(time.UnixMicro(now), mem, want)
			gotAdmitted, err := Decide(ctx, c, now, red, got)
			if err != nil {
				t.Fatal(err)
			}
			if gotAdmitted != wantAdmitted {
				t.Fatalf("seed %d step %d: Redis admitted=%v, memory %v", seed, step, gotAdmitted, wantAdmitted)
			}
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("seed %d step %d zone %v: Redis %+v, memory %+v", seed, step, limits[picks[i]].Algorithm, got[i], want[i])
				}
			}
		}
	}
}

func TestKeysExpireAtRest(t *testing.T) {
	c := client(t)
	ctx := context.Background()
	now := time.Now().UnixMicro()
	l := limiter.Limit{Algorithm: limiter.TokenBucket, Events: 10, Window: time.Second, Burst: 10}
	key := StateKey("z", l, "client")
	out := make([]limiter.Decision, 1)
	if _, err := Decide(ctx, c, now, []Request{{StateKey: key, Limit: l, Cost: 3}}, out); err != nil {
		t.Fatal(err)
	}
	// Three tokens take 300ms to refill: the key lives that long, give or
	// take the millisecond that PXAT is rounded up to.
	pttl, err := c.PTTL(ctx, key).Result()
	if err != nil || pttl <= 0 || pttl > 301*time.Millisecond {
		t.Errorf("PTTL %v, want at most 301ms", pttl)
	}
}

func TestServerClockAndScriptReload(t *testing.T) {
	c := client(t)
	ctx := context.Background()
	l := limiter.Limit{Algorithm: limiter.FixedWindow, Events: 2, Window: time.Hour}
	req := []Request{{StateKey: StateKey("z", l, "a"), Limit: l, Cost: 1}}
	out := make([]limiter.Decision, 1)
	for i, want := range []bool{true, true} {
		ok, err := Decide(ctx, c, 0, req, out)
		if err != nil || ok != want {
			t.Fatalf("request %d: %v %v", i, ok, err)
		}
	}
	// After SCRIPT FLUSH the script is sent again.
	if err := c.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	ok, err := Decide(ctx, c, 0, req, out)
	if err != nil || ok {
		t.Errorf("third request after a script flush: admitted=%v err=%v", ok, err)
	}
	if reset := out[0].Reset; reset <= 0 || reset > time.Hour {
		t.Errorf("reset %v from the server's clock", reset)
	}
}

// A request whose time falls before the window the key already counts in,
// having raced past a later one, counts in that window, as in memory.
func TestLateRequestCountsInNewerWindow(t *testing.T) {
	c := client(t)
	ctx := context.Background()
	l := limiter.Limit{Algorithm: limiter.FixedWindow, Events: 3, Window: time.Second}
	req := []Request{{StateKey: StateKey("z", l, "late"), Limit: l, Cost: 1}}
	out := make([]limiter.Decision, 1)
	base := time.Now().Truncate(time.Second).Add(time.Hour).UnixMicro()
	for _, at := range []int64{base + 1_000_000, base + 999_000} {
		if ok, err := Decide(ctx, c, at, req, out); err != nil || !ok {
			t.Fatalf("request at %d: admitted=%v err=%v", at, ok, err)
		}
	}
	if out[0].Remaining != 1 {
		t.Errorf("remaining %d after two requests in one window of 3, want 1", out[0].Remaining)
	}
}

func BenchmarkDecide(b *testing.B) {
	srv := redistest.Start(b)
	for _, tt := range []struct {
		name    string
		callers int
		auto    bool
		lanes   int // of a Batcher; 0: none
		keys    int
	}{
		{"callers=1", 1, false, 0, 1000}, {"callers=64", 64, false, 0, 1000},
		{"callers=1/auto", 1, true, 0, 1000}, {"callers=64/auto", 64, true, 0, 1000},
		{"callers=1/batcher", 1, false, 4, 1000}, {"callers=64/batcher", 64, false, 4, 1000},
		{"callers=64/batcher/one-key", 64, false, 4, 1},
	} {
		callers := tt.callers
		b.Run(tt.name, func(b *testing.B) {
			rc := redis.NewClient(&redis.Options{Addr: srv.Addr, PoolSize: 64})
			defer rc.Close()
			var c redis.Scripter = rc
			if tt.auto {
				ap, err := rc.AutoPipeline()
				if err != nil {
					b.Fatal(err)
				}
				c = ap
			}
			decide := func(ctx context.Context, reqs []Request, out []limiter.Decision) (bool, error) {
				return Decide(ctx, c, 0, reqs, out)
			}
			if tt.lanes > 0 {
				bt := NewBatcher(rc, tt.lanes, 128, 0, 0)
				defer bt.Close()
				decide = func(ctx context.Context, reqs []Request, out []limiter.Decision) (bool, error) {
					return bt.Decide(ctx, time.Now().Add(time.Second), reqs, out)
				}
			}
			l := limiter.Limit{Algorithm: limiter.SlidingWindow, Events: 1 << 30, Window: time.Hour}
			params := ParamsOf(l)               // as each zone keeps them
			b.SetParallelism(max(callers/2, 1)) // GOMAXPROCS is 2 here
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				out := make([]limiter.Decision, 1)
				i := rand.IntN(1000)
				for pb.Next() {
					i++
					req := []Request{{StateKey: StateKey("bench", l, fmt.Sprint(i%tt.keys)), Limit: l, Params: params, Cost: 1}}
					if _, err := decide(context.Background(), req, out); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
		})
	}
}

// TestBatchSameAsMemory: one script call that decides a batch of
// requests, several of them on one key, decides each as the zones in
// memory do one after another at the same moment.
func TestBatchSameAsMemory(t *testing.T) {
	c := client(t)
	ctx := context.Background()
	for seed := range uint64(12) {
		r := rand.New(rand.NewPCG(seed, 17))
		limits, zones := randomZones(r)
		now := time.Now().Add(time.Hour).UnixMicro() + r.Int64N(1e6)
		for step := range 60 {
			now += r.Int64N(limits[0].Window.Microseconds()/3 + 1)
			var b batch
			b.start(now)
			var mem [][]limiter.Request
			var red [][]Request
			for range 1 + r.IntN(12) {
				var m []limiter.Request
				var q []Request
				for z := range zones {
					if r.IntN(2) == 0 && z != 3 {
						continue
					}
					key := r.Uint64N(3)
					cost := 1 + r.Int64N(2)
					dry := r.IntN(9) == 0
					m = append(m, limiter.Request{Zone: zones[z], Key: key, Cost: cost, DryRun: dry})
					q = append(q, Request{StateKey: fmt.Sprintf("%sbatch%d:%d:%d", KeyPrefix, seed, z, key), Limit: limits[z], Cost: cost, DryRun: dry})
				}
				mem, red = append(mem, m), append(red, q)
				b.add(q)
			}
			vals, err := decideScript.Run(ctx, c, b.keys, b.args...).Int64Slice()
			if err != nil {
				t.Fatal(err)
			}
			vals = vals[1:]
			for i := range mem {
				want := make([]limiter.Decision, len(mem[i]))
				wantAdmitted := limiter.Decide(time.UnixMicro(now), mem[i], want)
				n := replyLen(len(red[i]))
				got := make([]limiter.Decision, len(red[i]))
				gotAdmitted, err := decode(vals[:n], red[i], got)
				if err != nil {
					t.Fatal(err)
				}
				vals = vals[n:]
				if gotAdmitted != wantAdmitted || !slices.Equal(got, want) {
					t.Fatalf("seed %d step %d request %d: Redis admitted=%v %+v, memory %v %+v", seed, step, i, gotAdmitted, got, wantAdmitted, want)
				}
			}
			if len(vals) != 0 {
				t.Fatalf("%d values left over", len(vals))
			}
		}
	}
}

// TestPeekChargesNothing: a peek decides at the request's cost, each zone
// as it would, and writes nothing, whatever the zones answer.
func TestPeekChargesNothing(t *testing.T) {
	c := client(t)
	ctx := context.Background()
	now := time.Now().UnixMicro() // keys expire on the server's clock
	free := limiter.Limit{Algorithm: limiter.TokenBucket, Events: 5, Window: time.Minute}
	spent := limiter.Limit{Algorithm: limiter.FixedWindow, Events: 1, Window: time.Hour}
	freeReq := Request{StateKey: StateKey("free", free, "k"), Limit: free, Cost: 1}
	spentReq := Request{StateKey: StateKey("spent", spent, "k"), Limit: spent, Cost: 1}
	out := make([]limiter.Decision, 2)
	if ok, err := Decide(ctx, c, now, []Request{spentReq}, out); !ok || err != nil {
		t.Fatalf("spending the hour's event: %v %v", ok, err)
	}
	// What a plain decision says of the spent zone: refused, until when.
	if ok, err := Decide(ctx, c, now+1, []Request{spentReq}, out); ok || err != nil {
		t.Fatalf("the spent zone alone: %v %v", ok, err)
	}
	refused := out[0]
	peek := []Request{freeReq, spentReq}
	for i := range peek {
		peek[i].Peek = true
	}
	for i := range 3 {
		ok, err := Decide(ctx, c, now+1, peek, out)
		if err != nil || ok {
			t.Fatalf("peek %d: admitted=%v err=%v, want a refusal", i, ok, err)
		}
		if !out[0].Allowed || out[0].Remaining != 5 {
			t.Errorf("peek %d, free zone: %+v, want allowed with 5 remaining, uncharged", i, out[0])
		}
		if out[1] != refused {
			t.Errorf("peek %d, spent zone: %+v, want %+v", i, out[1], refused)
		}
	}
	// A peek that every zone would admit is refused all the same.
	for i := range 3 {
		ok, err := Decide(ctx, c, now+1, peek[:1], out)
		if err != nil || ok || !out[0].Allowed || out[0].Remaining != 5 {
			t.Fatalf("peek %d at the free zone alone: admitted=%v err=%v %+v, want refused, the zone allowing with 5 remaining", i, ok, err, out[0])
		}
	}
	if n, err := c.Exists(ctx, freeReq.StateKey).Result(); err != nil || n != 0 {
		t.Errorf("the free zone's key exists after peeks only (%d, %v)", n, err)
	}
}
