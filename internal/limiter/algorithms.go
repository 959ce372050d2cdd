package limiter

import "time"

// Cell is the state of one key under the fixed window, token bucket or
// leaky bucket: 16 bytes.
//
//   - fixed window: A is the window's index since the epoch, B the units
//     counted in it;
//   - token bucket and leaky bucket: A is the theoretical arrival time, in
//     Unix microseconds, of the next unit (GCRA); B is unused.
type Cell struct{ A, B int64 }

// Window is the state of one key under the sliding window: per-sub-window
// counts over the last Window plus one sub-window, and the index of the
// newest sub-window. 76 bytes.
type Window struct {
	Head   int64
	Counts [SlidingBuckets + 1]uint32
}

// DecideCell decides a request of cost units at now (Unix microseconds)
// against a key in state c, returning the state to keep if the request is
// admitted. c is not changed.
func (l Limit) DecideCell(c Cell, now, cost int64) (Cell, Decision) {
	if l.Algorithm == FixedWindow {
		return l.fixedWindow(c, now, cost)
	}
	return l.gcra(c, now, cost)
}

func (l Limit) fixedWindow(c Cell, now, cost int64) (Cell, Decision) {
	w := l.window()
	// A time before the stored window, from a request that raced past a
	// later one, counts in that window rather than resetting it.
	idx := max(floorDiv(now, w), c.A)
	if c.A != idx {
		c = Cell{A: idx}
	}
	end := micros((idx+1)*w - now)
	// Compared so that no cost, however large (a placeholder's), can
	// overflow the sum and pass.
	if cost > l.Events-c.B {
		retry := end
		if cost > l.Events {
			retry = never
		}
		return c, Decision{Remaining: max(l.Events-c.B, 0), Reset: end, RetryAfter: retry}
	}
	c.B += cost
	return c, Decision{Allowed: true, Remaining: l.Events - c.B, Reset: end}
}

// gcra runs the generic cell rate algorithm, which is the token bucket
// exactly: a bucket of Burst tokens refilled at one token per interval.
// The leaky bucket is the same arithmetic with a queue instead of tokens:
// an admitted request waits until its slot, the time the previous units
// have drained.
func (l Limit) gcra(c Cell, now, cost int64) (Cell, Decision) {
	t := l.interval()
	tolerance := l.burst() * t
	tat := max(c.A, now)
	if cost > l.burst() {
		return c, Decision{Remaining: max(floorDiv(tolerance-(tat-now), t), 0), Reset: micros(tat - now), RetryAfter: never}
	}
	if l.Algorithm == LeakyBucket {
		wait := tat - now
		if wait > tolerance {
			return c, Decision{Remaining: 0, Reset: micros(tat - now), RetryAfter: micros(wait - tolerance)}
		}
		next := tat + cost*t
		return Cell{A: next}, Decision{
			Allowed:   true,
			Remaining: max(floorDiv(tolerance-(next-now), t)+1, 0),
			Reset:     micros(next - now),
			Wait:      micros(wait),
		}
	}
	next := tat + cost*t
	if next-now > tolerance {
		return c, Decision{Remaining: max(floorDiv(tolerance-(tat-now), t), 0), Reset: micros(tat - now), RetryAfter: micros(next - tolerance - now)}
	}
	return Cell{A: next}, Decision{Allowed: true, Remaining: floorDiv(tolerance-(next-now), t), Reset: micros(next - now)}
}

// DecideWindow decides a request of cost units at now against a key in
// sliding-window state w, returning the state to keep if it is admitted.
// Every sub-window that overlaps the last Window counts whole, so no
// interval of length Window ever holds more than Events.
func (l Limit) DecideWindow(w Window, now, cost int64) (Window, Decision) {
	q := l.subWindow()
	i := floorDiv(now, q)
	w = w.advance(i)
	var total int64
	for _, n := range w.Counts {
		total += int64(n)
	}
	reset := micros(dropsAt(w.Head, q) - now)
	if cost > l.Events-total { // as in fixedWindow: no overflow
		return w, Decision{Remaining: max(l.Events-total, 0), Reset: reset, RetryAfter: w.retryAfter(l, q, now, total, cost)}
	}
	w.Counts[slot(w.Head)] += uint32(cost)
	return w, Decision{Allowed: true, Remaining: l.Events - total - cost, Reset: reset}
}

// subWindow is the length of a sliding window's sub-window in µs: the
// window over SlidingBuckets, rounded up, so that the sub-windows counted
// always span the whole window. Rounded down, a window that is not a
// multiple of 16 µs would let a sub-window go up to 15 µs before it has
// left the window.
func (l Limit) subWindow() int64 { return (l.window() + SlidingBuckets - 1) / SlidingBuckets }

// dropsAt is when sub-window j stops counting: when the newest sub-window
// is SlidingBuckets after it.
func dropsAt(j, q int64) int64 { return (j + 1 + SlidingBuckets) * q }

func slot(i int64) int {
	return int(((i % (SlidingBuckets + 1)) + SlidingBuckets + 1) % (SlidingBuckets + 1))
}

// advance moves the newest sub-window to index i, clearing the ones that
// slid out. A time before the newest sub-window counts in it.
func (w Window) advance(i int64) Window {
	if i <= w.Head {
		return w
	}
	if i-w.Head > SlidingBuckets {
		return Window{Head: i}
	}
	for j := w.Head + 1; j <= i; j++ {
		w.Counts[slot(j)] = 0
	}
	w.Head = i
	return w
}

// retryAfter finds when enough of the oldest sub-windows have slid out of
// the window for cost more units to fit.
func (w Window) retryAfter(l Limit, q, now, total, cost int64) time.Duration {
	if cost > l.Events {
		return never
	}
	for j := w.Head - SlidingBuckets; j <= w.Head; j++ {
		total -= int64(w.Counts[slot(j)])
		if total+cost <= l.Events {
			// Sub-window j covers [j*q, (j+1)*q) and stops counting
			// once it is SlidingBuckets sub-windows old, when now-Window
			// has passed its end.
			return micros(dropsAt(j, q) - now)
		}
	}
	return micros(dropsAt(w.Head, q) - now)
}

// RestAtCell returns when a key in state c is back at rest (Unix µs):
// its state then equals a fresh key's, so it can be dropped.
func (l Limit) RestAtCell(c Cell) int64 {
	if l.Algorithm == FixedWindow {
		return (c.A + 1) * l.window()
	}
	return c.A
}

// RestAtWindow returns when a sliding-window key is back at rest.
func (l Limit) RestAtWindow(w Window) int64 {
	return dropsAt(w.Head, l.subWindow())
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}
