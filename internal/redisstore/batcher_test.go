package redisstore

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caddy-gateway/gateway/internal/limiter"
	"github.com/caddy-gateway/gateway/internal/redistest"
)

func batcher(t *testing.T, srv *redistest.Server, timeout time.Duration) *Batcher {
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, ReadTimeout: timeout, WriteTimeout: timeout, MaxRetries: -1, ContextTimeoutEnabled: true})
	b := NewBatcher(c, 2, 64)
	t.Cleanup(func() { b.Close(); c.Close() })
	return b
}

// Many callers at once through the batcher: every decision comes back to
// its own caller, and the limit holds exactly.
func TestBatcherKeepsEachAnswerWithItsCaller(t *testing.T) {
	srv := redistest.Start(t)
	b := batcher(t, srv, time.Second)
	l := limiter.Limit{Algorithm: limiter.FixedWindow, Events: 50, Window: time.Hour}
	const callers, keys = 64, 8
	var mu sync.Mutex
	admitted := map[string]int{}
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for c := range callers {
		wg.Go(func() {
			out := make([]limiter.Decision, 1)
			for i := range 20 {
				key := fmt.Sprint("k", (c+i)%keys)
				ok, err := Decide(context.Background(), b, 0, []Request{{StateKey: StateKey("batch", l, key), Limit: l, Cost: 1}}, out)
				if err != nil {
					errs <- err
					return
				}
				if ok != out[0].Allowed {
					errs <- fmt.Errorf("admitted=%v with a decision %+v", ok, out[0])
					return
				}
				if ok {
					mu.Lock()
					admitted[key]++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// 64 callers × 20 requests over 8 keys: 160 a key, of which 50 fit.
	for k := range keys {
		if n := admitted[fmt.Sprint("k", k)]; n != 50 {
			t.Errorf("key k%d: %d admitted, want exactly 50", k, n)
		}
	}
}

// After SCRIPT FLUSH, a batched EVALSHA fails with NOSCRIPT and the call
// is sent again with its script, alone.
func TestBatcherScriptReload(t *testing.T) {
	srv := redistest.Start(t)
	b := batcher(t, srv, time.Second)
	ctx := context.Background()
	l := limiter.Limit{Algorithm: limiter.FixedWindow, Events: 2, Window: time.Hour}
	out := make([]limiter.Decision, 1)
	req := []Request{{StateKey: StateKey("reload", l, "a"), Limit: l, Cost: 1}}
	if _, err := Decide(ctx, b, 0, req, out); err != nil {
		t.Fatal(err)
	}
	if err := b.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if ok, err := Decide(ctx, b, 0, req, out); err != nil || !ok || out[0].Remaining != 0 {
		t.Fatalf("after SCRIPT FLUSH: admitted=%v err=%v %+v", ok, err, out[0])
	}
}

// A hung Redis holds no caller past its context, even one queued behind a
// batch that is waiting for the hung server.
func TestBatcherGivesUpAtTheDeadline(t *testing.T) {
	srv := redistest.Start(t)
	b := batcher(t, srv, 2*time.Second)
	l := limiter.Limit{Algorithm: limiter.FixedWindow, Events: 2, Window: time.Hour}
	req := []Request{{StateKey: StateKey("hung", l, "a"), Limit: l, Cost: 1}}
	out := make([]limiter.Decision, 1)
	if _, err := Decide(context.Background(), b, 0, req, out); err != nil {
		t.Fatal(err)
	}
	srv.Pause()
	var wg sync.WaitGroup
	slow := make(chan time.Duration, 16)
	for range 16 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err := Decide(ctx, b, 0, req, make([]limiter.Decision, 1))
			if err == nil {
				t.Error("a hung Redis decided")
			}
			slow <- time.Since(start)
		})
	}
	wg.Wait()
	close(slow)
	for d := range slow {
		// The deadline, give or take the scheduling of a busy machine;
		// the connection's own timeout is 2 s.
		if d > time.Second {
			t.Errorf("a caller waited %v for a hung Redis, its deadline 50ms", d)
		}
	}
}

// A caller whose client hung up, finding a lane idle, would send the
// calls that wait with it: they must not fail with its cancellation.
func TestBatcherCanceledSenderFailsNoOther(t *testing.T) {
	srv := redistest.Start(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, ReadTimeout: time.Second, WriteTimeout: time.Second, MaxRetries: -1, ContextTimeoutEnabled: true})
	t.Cleanup(func() { c.Close() })
	// No lane goroutines: calls wait in the queue until a caller sends.
	b := &Batcher{UniversalClient: c, calls: make(chan *batchCall, 16), lanes: make(chan struct{}, 1), stop: make(chan struct{}), max: 64}
	ctx := context.Background()
	sha := decideScript.Hash()
	if err := decideScript.Load(ctx, c).Err(); err != nil {
		t.Fatal(err)
	}
	l := limiter.Limit{Algorithm: limiter.FixedWindow, Events: 10, Window: time.Hour}
	var waiting []*batchCall
	for i := range 5 {
		keys := []string{StateKey("cancel", l, fmt.Sprint(i))}
		args := []any{"", int(l.Algorithm), l.Events, l.Window.Microseconds(), l.Events, 1, 0}
		call := &batchCall{ctx: ctx, sha: sha, keys: keys, args: args, done: make(chan *redis.Cmd, 1)}
		b.calls <- call
		waiting = append(waiting, call)
	}
	gone, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := Decide(gone, b, 0, []Request{{StateKey: StateKey("cancel", l, "gone"), Limit: l, Cost: 1}}, make([]limiter.Decision, 1)); err == nil {
		t.Error("a canceled caller was answered")
	}
	// A caller still there sends whatever waits.
	if _, err := Decide(ctx, b, 0, []Request{{StateKey: StateKey("cancel", l, "here"), Limit: l, Cost: 1}}, make([]limiter.Decision, 1)); err != nil {
		t.Fatal(err)
	}
	for i, call := range waiting {
		select {
		case cmd := <-call.done:
			if err := cmd.Err(); err != nil {
				t.Errorf("waiting call %d failed with another caller's cancellation: %v", i, err)
			}
		default:
			t.Errorf("waiting call %d was not sent", i)
		}
	}
}
