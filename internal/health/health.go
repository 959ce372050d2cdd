// Package health holds the ideas behind the gateway's health report: the
// three states a check can be in, and a cache that runs a check at most
// once at a time and reuses its result for a while, so a storm of probes
// costs one check.
package health

import (
	"context"
	"sync"
	"time"
)

// Status is what a check found, from best to worst.
type Status int

const (
	// OK means the part works as configured.
	OK Status = iota
	// Degraded means the part serves, with a fallback.
	Degraded
	// Fail means the part cannot serve as configured.
	Fail
)

// String returns the status as the report writes it.
func (s Status) String() string {
	switch s {
	case OK:
		return "ok"
	case Degraded:
		return "degraded"
	}
	return "fail"
}

// MarshalText writes the status as its name.
func (s Status) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Worst returns the worse of two statuses.
func Worst(a, b Status) Status { return max(a, b) }

// Cache keeps the last result of a check. A caller that finds it too old
// runs the check again, unless another caller runs it already: then it
// waits for that run and shares its result. The zero value is ready.
type Cache[T any] struct {
	mu     sync.Mutex
	last   T
	at     time.Time // when the last run started; zero before the first
	flight *flight[T]
}

// flight is a run of the check in progress.
type flight[T any] struct {
	done chan struct{}
	v    T
}

// Get returns a result of the check that started no earlier than maxAge
// before now. When the last one is older, it joins the run in flight or
// runs check itself, in the caller's goroutine. A caller that waits for
// another's run stops waiting when ctx ends, and returns ctx's error; the
// run goes on for the others.
func (c *Cache[T]) Get(ctx context.Context, now time.Time, maxAge time.Duration, check func() T) (T, error) {
	c.mu.Lock()
	if !c.at.IsZero() && now.Sub(c.at) < maxAge {
		v := c.last
		c.mu.Unlock()
		return v, nil
	}
	if f := c.flight; f != nil {
		c.mu.Unlock()
		select {
		case <-f.done:
			return f.v, nil
		case <-ctx.Done():
			var zero T
			return zero, ctx.Err()
		}
	}
	f := &flight[T]{done: make(chan struct{})}
	c.flight = f
	c.mu.Unlock()

	defer func() {
		c.mu.Lock()
		c.flight = nil
		c.mu.Unlock()
		close(f.done)
	}()
	f.v = check()
	c.mu.Lock()
	c.last, c.at = f.v, now
	c.mu.Unlock()
	return f.v, nil
}
