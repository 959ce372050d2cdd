package health

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

func TestWorst(t *testing.T) {
	tests := []struct{ a, b, want Status }{
		{OK, OK, OK},
		{OK, Degraded, Degraded},
		{Fail, Degraded, Fail},
		{Degraded, OK, Degraded},
	}
	for _, tt := range tests {
		if got := Worst(tt.a, tt.b); got != tt.want {
			t.Errorf("Worst(%v, %v) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
	for s, name := range map[Status]string{OK: "ok", Degraded: "degraded", Fail: "fail"} {
		if b, _ := s.MarshalText(); string(b) != name {
			t.Errorf("%d marshals as %q, want %q", s, b, name)
		}
	}
}

func TestCacheReusesWithinMaxAge(t *testing.T) {
	var c Cache[int]
	runs := 0
	check := func() int { runs++; return runs }
	t0 := time.Unix(1000, 0)
	steps := []struct {
		at   time.Duration
		want int
	}{
		{0, 1},
		{999 * time.Millisecond, 1}, // still fresh
		{time.Second, 2},            // exactly maxAge old: run again
		{1500 * time.Millisecond, 2},
		{10 * time.Second, 3},
	}
	for _, s := range steps {
		got, err := c.Get(context.Background(), t0.Add(s.at), time.Second, check)
		if err != nil || got != s.want {
			t.Errorf("at +%v: got %d, %v; want %d", s.at, got, err, s.want)
		}
	}
}

func TestCacheSharesOneRunInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var c Cache[int]
		var runs atomic.Int32
		release := make(chan struct{})
		check := func() int {
			runs.Add(1)
			<-release
			return 7
		}
		now := time.Unix(1000, 0)
		var wg sync.WaitGroup
		results := make([]int, 20)
		for i := range results {
			// maxAge 0: nothing is ever fresh, so only the flight is shared.
			wg.Go(func() { results[i], _ = c.Get(context.Background(), now, 0, check) })
		}
		synctest.Wait() // every caller runs the check or waits for it
		close(release)
		wg.Wait()
		if n := runs.Load(); n != 1 {
			t.Errorf("%d runs for %d concurrent callers, want 1", n, len(results))
		}
		for i, v := range results {
			if v != 7 {
				t.Errorf("caller %d got %d, want 7", i, v)
			}
		}
	})
}

func TestCacheWaiterLeavesWhenItsContextEnds(t *testing.T) {
	var c Cache[int]
	release := make(chan struct{})
	started := make(chan struct{})
	go c.Get(context.Background(), time.Unix(0, 0), 0, func() int { close(started); <-release; return 1 })
	<-started
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Get(ctx, time.Unix(0, 0), 0, func() int { t.Error("a second run started"); return 2 }); err != context.Canceled {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	close(release)
}
