package limiter

import (
	"math/rand/v2"
	"testing"
	"time"
)

// at is a moment given in milliseconds after a window-aligned origin.
func at(ms int64) int64 { return time.Unix(1_700_000_040, 0).UnixMicro() + ms*1000 }

type step struct {
	ms      int64
	cost    int64
	allowed bool
	retry   time.Duration // checked when refused
	wait    time.Duration // checked for the leaky bucket when admitted
	remain  int64         // checked when >= 0
}

// run plays steps against one key of limit l and checks each decision.
func run(t *testing.T, l Limit, steps []step) {
	t.Helper()
	var c Cell
	var w Window
	for i, s := range steps {
		cost := s.cost
		if cost == 0 {
			cost = 1
		}
		var d Decision
		if l.Algorithm == SlidingWindow {
			var next Window
			next, d = l.DecideWindow(w, at(s.ms), cost)
			if d.Allowed {
				w = next
			}
		} else {
			var next Cell
			next, d = l.DecideCell(c, at(s.ms), cost)
			if d.Allowed {
				c = next
			}
		}
		if d.Allowed != s.allowed {
			t.Fatalf("step %d at %dms: allowed=%v, want %v (%+v)", i, s.ms, d.Allowed, s.allowed, d)
		}
		if !d.Allowed && s.retry != 0 && d.RetryAfter != s.retry {
			t.Errorf("step %d at %dms: retry after %v, want %v", i, s.ms, d.RetryAfter, s.retry)
		}
		if d.Allowed && s.wait != d.Wait {
			t.Errorf("step %d at %dms: wait %v, want %v", i, s.ms, d.Wait, s.wait)
		}
		if s.remain >= 0 && d.Remaining != s.remain {
			t.Errorf("step %d at %dms: remaining %d, want %d", i, s.ms, d.Remaining, s.remain)
		}
	}
}

const anyRemaining = -1

func TestFixedWindow(t *testing.T) {
	l := Limit{Algorithm: FixedWindow, Events: 3, Window: time.Second}
	run(t, l, []step{
		{ms: 0, allowed: true, remain: 2},
		{ms: 10, allowed: true, remain: 1},
		{ms: 999, allowed: true, remain: 0},
		{ms: 999, allowed: false, retry: time.Millisecond, remain: 0},
		{ms: 1000, allowed: true, remain: 2},                                          // a new window at its edge
		{ms: 999, allowed: true, remain: 1},                                           // late: counts in the newer window
		{ms: 1500, cost: 2, allowed: false, retry: 500 * time.Millisecond, remain: 1}, // cost > 1
		{ms: 1500, allowed: true, remain: 0},
		{ms: 1600, allowed: false, retry: 400 * time.Millisecond, remain: 0},
		{ms: 5000, cost: 4, allowed: false, retry: never, remain: anyRemaining}, // more than the limit, ever
		{ms: 5000, cost: 3, allowed: true, remain: 0},
	})
}

func TestSlidingWindowIsExactAtTheEdge(t *testing.T) {
	// Every event clustered at the end of one window: none may pass until
	// a whole window has gone by since then.
	l := Limit{Algorithm: SlidingWindow, Events: 4, Window: 1600 * time.Millisecond}
	run(t, l, []step{
		{ms: 1590, allowed: true, remain: 3},
		{ms: 1595, cost: 3, allowed: true, remain: 0},
		{ms: 1600, allowed: false, remain: 0},
		{ms: 1700, allowed: false, remain: 0},
		{ms: 3100, allowed: false, retry: 100 * time.Millisecond, remain: 0},
		{ms: 3199, allowed: false, remain: 0},
		{ms: 3200, allowed: true, remain: 3}, // the sub-window [1500,1600) slid out
	})
}

// TestSlidingWindowOddWindows: with a window that is not a multiple of 16
// µs, an event still counts until a whole window has gone by, to the
// microsecond, and RetryAfter names the first microsecond that admits.
func TestSlidingWindowOddWindows(t *testing.T) {
	for _, us := range []int64{1_000_007, 1_000_015, 17_001, 3_600_000_001} {
		l := Limit{Algorithm: SlidingWindow, Events: 1, Window: time.Duration(us) * time.Microsecond}
		q := l.subWindow()
		for _, t0 := range []int64{at(0) + 1, at(0) + q - 1, at(0) + q/2, 40*q - 1} {
			w, d := l.DecideWindow(Window{}, t0, 1)
			if !d.Allowed {
				t.Fatalf("window %dµs: the first event refused", us)
			}
			for now := t0 + us - 20; now < t0+us; now++ {
				_, d := l.DecideWindow(w, now, 1)
				if d.Allowed {
					t.Fatalf("window %dµs: admitted %dµs after an event, within the window", us, now-t0)
				}
				retry := now + d.RetryAfter.Microseconds()
				if _, early := l.DecideWindow(w, retry-1, 1); early.Allowed {
					t.Fatalf("window %dµs: admitted a µs before its RetryAfter", us)
				}
				if _, then := l.DecideWindow(w, retry, 1); !then.Allowed {
					t.Fatalf("window %dµs: refused at its RetryAfter", us)
				}
				if rest := l.RestAtWindow(w); rest < retry {
					t.Fatalf("window %dµs: the key is at rest at %d, before its refusal ends at %d", us, rest, retry)
				}
			}
		}
	}
}

func TestSlidingWindowSlides(t *testing.T) {
	l := Limit{Algorithm: SlidingWindow, Events: 2, Window: 1600 * time.Millisecond}
	run(t, l, []step{
		{ms: 0, allowed: true, remain: 1},
		{ms: 800, allowed: true, remain: 0},
		{ms: 1000, allowed: false, retry: 700 * time.Millisecond, remain: 0}, // [0,100) leaves at 1700
		{ms: 1700, allowed: true, remain: 0},
		{ms: 1800, allowed: false, retry: 700 * time.Millisecond, remain: 0}, // [800,900) leaves at 2500
		{ms: 10_000, cost: 2, allowed: true, remain: 0},                      // all slid out
		{ms: 10_000, cost: 3, allowed: false, retry: never, remain: 0},
	})
}

func TestTokenBucket(t *testing.T) {
	l := Limit{Algorithm: TokenBucket, Events: 10, Window: time.Second, Burst: 3} // a token per 100ms
	run(t, l, []step{
		{ms: 0, allowed: true, remain: 2},
		{ms: 0, allowed: true, remain: 1},
		{ms: 0, allowed: true, remain: 0},
		{ms: 0, allowed: false, retry: 100 * time.Millisecond, remain: 0},
		{ms: 100, allowed: true, remain: 0},
		{ms: 350, cost: 2, allowed: true, remain: 0},                                 // 2.5 tokens refilled
		{ms: 400, cost: 2, allowed: false, retry: 100 * time.Millisecond, remain: 1}, // 1 token now, 2 in 100ms
		{ms: 10_000, cost: 3, allowed: true, remain: 0},                              // full again, never beyond burst
		{ms: 10_000, cost: 4, allowed: false, retry: never, remain: anyRemaining},
	})
}

func TestLeakyBucket(t *testing.T) {
	l := Limit{Algorithm: LeakyBucket, Events: 10, Window: time.Second, Burst: 2} // a slot per 100ms
	run(t, l, []step{
		{ms: 0, allowed: true, wait: 0, remain: 2},
		{ms: 0, allowed: true, wait: 100 * time.Millisecond, remain: 1},
		{ms: 0, allowed: true, wait: 200 * time.Millisecond, remain: 0},
		{ms: 0, allowed: false, retry: 100 * time.Millisecond, remain: 0}, // would wait 3 slots
		{ms: 150, allowed: true, wait: 150 * time.Millisecond, remain: anyRemaining},
		{ms: 1000, allowed: true, wait: 0, remain: anyRemaining}, // drained
		{ms: 1010, allowed: true, wait: 90 * time.Millisecond, remain: anyRemaining},
	})
}

// The property tests drive each algorithm with random arrivals and check
// it against a plain model of its definition.

type arrival struct{ t, cost int64 }

func randomArrivals(r *rand.Rand, n int, span time.Duration) []arrival {
	out := make([]arrival, n)
	now := at(0)
	for i := range out {
		// Bursts and gaps: most arrivals close together, some far apart.
		gap := r.Int64N(span.Microseconds() / int64(n) * 2)
		if r.IntN(10) == 0 {
			gap = 0
		}
		now += gap
		out[i] = arrival{now, 1 + r.Int64N(3)}
	}
	return out
}

func TestPropertySlidingWindow(t *testing.T) {
	for seed := range uint64(200) {
		r := rand.New(rand.NewPCG(seed, 1))
		// Windows of any number of µs: most are not a multiple of 16.
		l := Limit{Algorithm: SlidingWindow, Events: 1 + r.Int64N(20), Window: time.Duration(16000+r.Int64N(2_000_000)) * time.Microsecond}
		var w Window
		var admitted []arrival
		for _, a := range randomArrivals(r, 300, 5*l.Window) {
			next, d := l.DecideWindow(w, a.t, a.cost)
			// The model: the units admitted in (t-W, t].
			var inWindow, inWider int64
			for _, p := range admitted {
				if p.t > a.t-l.window() {
					inWindow += p.cost
				}
				if p.t > a.t-(SlidingBuckets+1)*l.subWindow() {
					inWider += p.cost
				}
			}
			if d.Allowed {
				if inWindow+a.cost > l.Events {
					t.Fatalf("seed %d: admitted %d units with %d already in the window of %d", seed, a.cost, inWindow, l.Events)
				}
				w = next
				admitted = append(admitted, a)
			} else if inWider+a.cost <= l.Events {
				t.Fatalf("seed %d: refused %d units though a window and a sub-window back held only %d of %d", seed, a.cost, inWider, l.Events)
			}
		}
	}
}

func TestPropertyFixedWindow(t *testing.T) {
	for seed := range uint64(200) {
		r := rand.New(rand.NewPCG(seed, 2))
		l := Limit{Algorithm: FixedWindow, Events: 1 + r.Int64N(20), Window: time.Duration(16+r.Int64N(2000)) * time.Millisecond}
		var c Cell
		used := map[int64]int64{}
		for _, a := range randomArrivals(r, 300, 5*l.Window) {
			next, d := l.DecideCell(c, a.t, a.cost)
			win := floorDiv(a.t, l.window())
			if fits := used[win]+a.cost <= l.Events; d.Allowed != fits {
				t.Fatalf("seed %d: allowed=%v with %d used of %d in the window", seed, d.Allowed, used[win], l.Events)
			}
			if d.Allowed {
				c = next
				used[win] += a.cost
			}
		}
	}
}

func TestPropertyTokenBucket(t *testing.T) {
	for seed := range uint64(200) {
		r := rand.New(rand.NewPCG(seed, 3))
		l := Limit{Algorithm: TokenBucket, Events: 1 + r.Int64N(20), Window: time.Duration(16+r.Int64N(2000)) * time.Millisecond, Burst: 3 + r.Int64N(10)}
		interval := l.interval()
		var c Cell
		// The model: credit in nanoseconds of refill, capped at the burst.
		credit, last := l.burst()*interval, int64(0)
		for i, a := range randomArrivals(r, 300, 5*l.Window) {
			if i > 0 {
				credit = min(credit+a.t-last, l.burst()*interval)
			}
			last = a.t
			next, d := l.DecideCell(c, a.t, a.cost)
			if fits := credit >= a.cost*interval; d.Allowed != fits {
				t.Fatalf("seed %d: allowed=%v with credit for %d of cost %d", seed, d.Allowed, credit/interval, a.cost)
			}
			if d.Allowed {
				c = next
				credit -= a.cost * interval
			}
		}
	}
}

func TestPropertyLeakyBucket(t *testing.T) {
	for seed := range uint64(200) {
		r := rand.New(rand.NewPCG(seed, 4))
		l := Limit{Algorithm: LeakyBucket, Events: 1 + r.Int64N(20), Window: time.Duration(16+r.Int64N(2000)) * time.Millisecond, Burst: r.Int64N(5)}
		interval := l.interval()
		var c Cell
		// The model: a queue whose next free slot is free; requests leave
		// one unit per interval, never two in less.
		free := int64(0)
		var lastStart, lastCost int64
		for _, a := range randomArrivals(r, 300, 5*l.Window) {
			next, d := l.DecideCell(c, a.t, a.cost)
			start := max(free, a.t)
			fits := start-a.t <= l.burst()*interval && a.cost <= l.burst()
			if d.Allowed != fits {
				t.Fatalf("seed %d: allowed=%v, model says %v", seed, d.Allowed, fits)
			}
			if !d.Allowed {
				continue
			}
			c = next
			if got := a.t + d.Wait.Microseconds(); got != start {
				t.Fatalf("seed %d: leaves at %d, model at %d", seed, got, start)
			}
			if lastCost > 0 && start-lastStart < lastCost*interval {
				t.Fatalf("seed %d: two requests left %dns apart", seed, start-lastStart)
			}
			lastStart, lastCost = start, a.cost
			free = start + a.cost*interval
		}
	}
}

func FuzzLimits(f *testing.F) {
	f.Add(uint8(0), int64(5), int64(1000), int64(0), []byte{1, 2, 3, 200, 0, 0})
	f.Add(uint8(3), int64(1), int64(16), int64(3), []byte{0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, algo uint8, events, windowMs, burst int64, gaps []byte) {
		l := Limit{Algorithm: Algorithm(algo % 4), Events: events, Window: time.Duration(windowMs) * time.Millisecond, Burst: burst}
		if l.Validate() != nil || events > 1e6 || windowMs > 1e7 || burst > 1e6 {
			return
		}
		var c Cell
		var w Window
		now := at(0)
		var times []int64
		for _, g := range gaps {
			now += int64(g) * 1000 * windowMs / 64
			var d Decision
			if l.Algorithm == SlidingWindow {
				var next Window
				if next, d = l.DecideWindow(w, now, 1); d.Allowed {
					w = next
				}
			} else {
				var next Cell
				if next, d = l.DecideCell(c, now, 1); d.Allowed {
					c = next
				}
			}
			if !d.Allowed && d.RetryAfter <= 0 {
				t.Fatalf("refused with a retry of %v", d.RetryAfter)
			}
			if d.Remaining < 0 || d.Reset < 0 || d.Wait < 0 {
				t.Fatalf("negative decision %+v", d)
			}
			if d.Allowed && l.Algorithm != LeakyBucket && l.Algorithm != TokenBucket {
				times = append(times, now)
				n := 0
				for _, x := range times {
					if x > now-l.window() {
						n++
					}
				}
				if l.Algorithm == SlidingWindow && int64(n) > l.Events {
					t.Fatalf("%d events in one window of %d", n, l.Events)
				}
			}
		}
	})
}

func TestCapacityIsWhatPassesAtOnce(t *testing.T) {
	for _, l := range []Limit{
		{Algorithm: FixedWindow, Events: 5, Window: time.Minute},
		{Algorithm: SlidingWindow, Events: 5, Window: time.Minute, Burst: 9},
		{Algorithm: TokenBucket, Events: 5, Window: time.Minute},
		{Algorithm: TokenBucket, Events: 5, Window: time.Minute, Burst: 9},
		{Algorithm: LeakyBucket, Events: 5, Window: time.Minute, Burst: 3},
	} {
		var c Cell
		var w Window
		passed := int64(0)
		for range 20 {
			var d Decision
			if l.Algorithm == SlidingWindow {
				w, d = l.DecideWindow(w, at(0), 1)
			} else {
				c, d = l.DecideCell(c, at(0), 1)
			}
			if d.Allowed {
				passed++
			}
		}
		want := l.Capacity()
		if l.Algorithm == LeakyBucket {
			want++ // one leaves at once, burst more wait in the queue
		}
		if passed != want {
			t.Errorf("%v burst %d: %d passed at once, want %d (capacity %d)", l.Algorithm, l.Burst, passed, want, l.Capacity())
		}
	}
}

// TestHugeCostIsRefused checks that a cost too large for any window (a
// placeholder's value, say) is refused for ever by every algorithm, and
// leaves the key as it was: a sum that overflowed would pass it, and
// unlimit the key.
func TestHugeCostIsRefused(t *testing.T) {
	const huge = 1<<63 - 1
	for _, l := range []Limit{
		{Algorithm: FixedWindow, Events: 5, Window: time.Minute},
		{Algorithm: SlidingWindow, Events: 5, Window: time.Minute},
		{Algorithm: TokenBucket, Events: 5, Window: time.Minute},
		{Algorithm: LeakyBucket, Events: 5, Window: time.Minute},
	} {
		steps := []step{{ms: 0, allowed: true, remain: anyRemaining}}
		for _, cost := range []int64{huge, huge - 1, huge - 4, 1 << 62} {
			steps = append(steps, step{ms: 10, cost: cost, allowed: false, retry: never, remain: anyRemaining})
		}
		if l.Algorithm != LeakyBucket { // whose queue makes the rest wait
			// What is left of the limit is all there is.
			steps = append(steps, step{ms: 20, cost: 4, allowed: true, remain: 0},
				step{ms: 30, allowed: false, remain: 0})
		}
		t.Run(l.Algorithm.String(), func(t *testing.T) { run(t, l, steps) })
	}
}
