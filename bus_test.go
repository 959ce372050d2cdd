package gateway

import (
	"context"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// A bus whose config was dropped before it first subscribed, as when
// `caddy validate` provisions and cleans up at once while a Redis Cluster
// is still being asked for its slots, stops without subscribing; it used
// to read a subscription it never made and crash the process.
func TestBusStoppedBeforeSubscribing(t *testing.T) {
	c, err := acquireRedis("redis+cluster://127.0.0.1:1,127.0.0.1:2", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer releaseRedis(c)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	b := &bus{client: c, key: "stopped", logger: zap.NewNop(), stop: cancel, tried: make(chan struct{}), done: make(chan struct{})}
	b.listen(ctx)
	select {
	case <-b.done:
	default:
		t.Error("the bus did not say it was done")
	}
}

// The warnings of a failing Redis (the bus's, invalidation's, the rate
// limiter's) are logged at most once every ten seconds, whoever calls.
func TestLogThrottle(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	logger := zap.New(core)
	var l logThrottle
	start := time.Unix(1_000_000, 0)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() { l.warn(logger, start, "failing") })
	}
	wg.Wait()
	for _, at := range []time.Duration{time.Second, 9999 * time.Millisecond} {
		l.warn(logger, start.Add(at), "failing")
	}
	if n := logs.Len(); n != 1 {
		t.Fatalf("%d warnings within ten seconds, want 1", n)
	}
	l.warn(logger, start.Add(10*time.Second), "failing again")
	if n := logs.Len(); n != 2 {
		t.Fatalf("%d warnings after ten seconds, want 2", n)
	}
	if got := logs.All()[1].Message; got != "failing again" {
		t.Errorf("second warning %q", got)
	}
}
