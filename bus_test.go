package gateway

import (
	"context"
	"testing"
	"time"

	"go.uber.org/zap"
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
