// Package limiter holds the rate-limit algorithms and a bounded table of
// per-key state. Every decision takes the current time as a value, in Unix
// microseconds, so the same inputs give the same decisions in tests, in
// memory and in the Redis scripts that mirror these functions (Lua numbers
// are doubles: microseconds since the epoch still count exactly).
package limiter

import (
	"fmt"
	"time"
)

// Algorithm is one of the four rate-limit algorithms.
type Algorithm uint8

const (
	// SlidingWindow admits at most Events in any interval of length Window.
	SlidingWindow Algorithm = iota
	// FixedWindow admits at most Events per Window, windows aligned to
	// multiples of Window since the Unix epoch.
	FixedWindow
	// TokenBucket refills Burst tokens continuously at Events per Window;
	// a request takes Cost tokens.
	TokenBucket
	// LeakyBucket lets requests leave at a constant rate of Events per
	// Window; a request waits for its slot, and one that would wait more
	// than Burst slots is refused.
	LeakyBucket
)

var algorithmNames = [...]string{"sliding_window", "fixed_window", "token_bucket", "leaky_bucket"}

func (a Algorithm) String() string {
	if int(a) < len(algorithmNames) {
		return algorithmNames[a]
	}
	return fmt.Sprintf("algorithm(%d)", a)
}

// ParseAlgorithm reads an algorithm's name; "" is the default, sliding_window.
func ParseAlgorithm(s string) (Algorithm, error) {
	if s == "" {
		return SlidingWindow, nil
	}
	for i, n := range algorithmNames {
		if n == s {
			return Algorithm(i), nil
		}
	}
	return 0, fmt.Errorf("unknown algorithm %q (want fixed_window, sliding_window, token_bucket or leaky_bucket)", s)
}

// SlidingBuckets is how many sub-windows the sliding window divides a window
// into. Its bound is exact; capacity comes back at most Window/SlidingBuckets
// later than a log of every event would give it back, and up to 16 µs more
// when Window is not a multiple of 16 µs.
const SlidingBuckets = 16

// Limit is one zone's rate limit.
type Limit struct {
	Algorithm Algorithm
	Events    int64
	Window    time.Duration
	// Burst is the token bucket's capacity or the leaky bucket's queue
	// length, in units. Zero means Events.
	Burst int64
}

// Validate reports what is wrong with the limit.
func (l Limit) Validate() error {
	switch {
	case l.Events <= 0:
		return fmt.Errorf("events must be positive, got %d", l.Events)
	case l.Window <= 0:
		return fmt.Errorf("window must be positive, got %v", l.Window)
	case l.Window < SlidingBuckets*time.Millisecond:
		return fmt.Errorf("window must be at least %v, got %v", SlidingBuckets*time.Millisecond, l.Window)
	case l.Window > maxWindow:
		return fmt.Errorf("window must be at most %v, got %v", maxWindow, l.Window)
	case l.Burst < 0:
		return fmt.Errorf("burst must not be negative, got %d", l.Burst)
	case l.Events > maxUnits || l.Burst > maxUnits:
		return fmt.Errorf("events and burst must be at most %d", maxUnits)
	case l.Algorithm > LeakyBucket:
		return fmt.Errorf("unknown algorithm %d", l.Algorithm)
	case l.burst() > maxExact/l.interval():
		return fmt.Errorf("burst × window / events is too large to count exactly")
	}
	return nil
}

// Bounds that keep every quantity an exact integer in a double, as the
// Redis scripts compute them.
const (
	maxWindow = 366 * 24 * time.Hour
	maxUnits  = 1 << 31
	maxExact  = 1 << 52
)

// window returns the window in microseconds.
func (l Limit) window() int64 { return l.Window.Microseconds() }

// micros turns a span of microseconds into a Duration.
func micros(us int64) time.Duration {
	if us >= int64(never/time.Microsecond) {
		return never
	}
	return time.Duration(us) * time.Microsecond
}

// Capacity is the burst in effect: the token bucket's capacity or the
// leaky bucket's queue length (Events unless set), and for the windows,
// which take no burst, Events, the most a key may spend at once.
func (l Limit) Capacity() int64 {
	if l.Algorithm == FixedWindow || l.Algorithm == SlidingWindow {
		return l.Events
	}
	return l.burst()
}

func (l Limit) burst() int64 {
	if l.Burst > 0 {
		return l.Burst
	}
	return l.Events
}

// interval is the time, in microseconds, one unit takes to flow:
// Window/Events, rounded up so the rate never exceeds Events per Window.
func (l Limit) interval() int64 {
	w := l.window()
	return (w + l.Events - 1) / l.Events
}

// Decision is the outcome of one request against one limit.
type Decision struct {
	Allowed bool
	// Remaining is how many units the key has left after this request.
	Remaining int64
	// Reset is how long until the key is back at rest, its whole quota
	// available again.
	Reset time.Duration
	// RetryAfter, when the request is refused, is how long until the same
	// request would be admitted; never less than that.
	RetryAfter time.Duration
	// Wait, for the leaky bucket, is how long an admitted request waits
	// for its slot.
	Wait time.Duration
}

// never stands for a RetryAfter of a request that can never be admitted,
// such as one whose cost exceeds the limit.
const never = time.Duration(1<<63 - 1)
