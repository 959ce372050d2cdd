package redisstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caddy-gateway/gateway/internal/limiter"
	"github.com/caddy-gateway/gateway/internal/redistest"
)

func batcher(t *testing.T, srv *redistest.Server, timeout time.Duration) *Batcher {
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, ReadTimeout: timeout, WriteTimeout: timeout, MaxRetries: -1, ContextTimeoutEnabled: true})
	b := NewBatcher(c, 2, 64, timeout/100, 0)
	t.Cleanup(func() { b.Close(); c.Close() })
	return b
}

// Many callers at once through the batcher: every decision comes back to
// its own caller, and the limit holds exactly, with one Redis and with a
// Redis Cluster, where a batch's keys lie in several slots.
func TestBatcherKeepsEachAnswerWithItsCaller(t *testing.T) {
	t.Run("redis", func(t *testing.T) { testBatcherKeepsEachAnswer(t, batcher(t, redistest.Start(t), time.Second)) })
	t.Run("cluster", func(t *testing.T) {
		testBatcherKeepsEachAnswer(t, clusterBatcher(t, redistest.StartCluster(t, 3)))
	})
}

// clusterBatcher is a batcher over a client of the cluster.
func clusterBatcher(t *testing.T, rc *redistest.Cluster) *Batcher {
	var addrs []string
	for _, s := range rc.Nodes {
		addrs = append(addrs, s.Addr)
	}
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, ReadTimeout: time.Second, WriteTimeout: time.Second})
	b := NewBatcher(c, 1, 64, 0, 0)
	t.Cleanup(func() { b.Close(); c.Close() })
	return b
}

func testBatcherKeepsEachAnswer(t *testing.T, b *Batcher) {
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
				ok, err := b.Decide(context.Background(), inASecond(), []Request{{StateKey: StateKey("batch", l, key), Limit: l, Cost: 1}}, out)
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
// is sent again with its script.
func TestBatcherScriptReload(t *testing.T) {
	srv := redistest.Start(t)
	b := batcher(t, srv, time.Second)
	ctx := context.Background()
	l := limiter.Limit{Algorithm: limiter.FixedWindow, Events: 2, Window: time.Hour}
	out := make([]limiter.Decision, 1)
	req := []Request{{StateKey: StateKey("reload", l, "a"), Limit: l, Cost: 1}}
	if _, err := b.Decide(ctx, inASecond(), req, out); err != nil {
		t.Fatal(err)
	}
	if err := b.client.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if ok, err := b.Decide(ctx, inASecond(), req, out); err != nil || !ok || out[0].Remaining != 0 {
		t.Fatalf("after SCRIPT FLUSH: admitted=%v err=%v %+v", ok, err, out[0])
	}
}

// In a cluster, after every master lost its scripts, a batch's calls for
// many tags all fail with NOSCRIPT and go again with the script, and every
// caller gets its decision.
func TestBatcherScriptReloadInACluster(t *testing.T) {
	rc := redistest.StartCluster(t, 3)
	b := clusterBatcher(t, rc)
	l := limiter.Limit{Algorithm: limiter.FixedWindow, Events: 2, Window: time.Hour}
	decideAll := func() {
		t.Helper()
		var wg sync.WaitGroup
		errs := make(chan error, 32)
		for i := range 32 {
			wg.Go(func() {
				req := []Request{{StateKey: StateKey("flushed", l, fmt.Sprint(i)), Limit: l, Cost: 1}}
				if _, err := b.Decide(context.Background(), inASecond(), req, make([]limiter.Decision, 1)); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}
	decideAll()
	for _, s := range rc.Nodes {
		s.Do("SCRIPT", "FLUSH")
	}
	before := rc.Calls("eval")
	decideAll()
	if rc.Calls("eval") == before {
		t.Error("no call went again with its script")
	}
}

// A hung Redis holds no caller past its deadline, even one queued behind a
// batch that is waiting for the hung server: no caller has a timer, the
// batches have.
func TestBatcherGivesUpAtTheDeadline(t *testing.T) {
	srv := redistest.Start(t)
	b := batcher(t, srv, 2*time.Second)
	l := limiter.Limit{Algorithm: limiter.FixedWindow, Events: 2, Window: time.Hour}
	req := []Request{{StateKey: StateKey("hung", l, "a"), Limit: l, Cost: 1}}
	out := make([]limiter.Decision, 1)
	if _, err := b.Decide(context.Background(), inASecond(), req, out); err != nil {
		t.Fatal(err)
	}
	srv.Pause()
	var wg sync.WaitGroup
	slow := make(chan time.Duration, 16)
	for range 16 {
		wg.Go(func() {
			start := time.Now()
			_, err := b.Decide(context.Background(), start.Add(50*time.Millisecond), req, make([]limiter.Decision, 1))
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
	b := &Batcher{client: c, calls: make(chan *batchCall, 16), lanes: make(chan *lane, 1), stop: make(chan struct{}), max: 64}
	b.lanes <- &lane{batch: make([]*batchCall, 0, 64)}
	ctx := context.Background()
	l := limiter.Limit{Algorithm: limiter.FixedWindow, Events: 10, Window: time.Hour}
	var waiting []*batchCall
	for i := range 5 {
		reqs := []Request{{StateKey: StateKey("cancel", l, fmt.Sprint(i)), Limit: l, Cost: 1}}
		call := &batchCall{ctx: ctx, deadline: inASecond(), reqs: reqs, done: make(chan batchReply, 1)}
		b.calls <- call
		waiting = append(waiting, call)
	}
	gone, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := b.Decide(gone, inASecond(), []Request{{StateKey: StateKey("cancel", l, "gone"), Limit: l, Cost: 1}}, make([]limiter.Decision, 1)); err == nil {
		t.Error("a canceled caller was answered")
	}
	// A caller still there sends whatever waits.
	if _, err := b.Decide(ctx, inASecond(), []Request{{StateKey: StateKey("cancel", l, "here"), Limit: l, Cost: 1}}, make([]limiter.Decision, 1)); err != nil {
		t.Fatal(err)
	}
	for i, call := range waiting {
		select {
		case r := <-call.done:
			if err := r.err; err != nil {
				t.Errorf("waiting call %d failed with another caller's cancellation: %v", i, err)
			}
		default:
			t.Errorf("waiting call %d was not sent", i)
		}
	}
}

func TestHashTag(t *testing.T) {
	for key, want := range map[string]string{
		"caddy-gateway:rl:{0a1b}:zone:0.60": "0a1b",
		"plain":                             "plain",
		"a{}b{c}":                           "a{}b{c}", // an empty tag is none
		"a{b":                               "a{b",
		"x{y}{z}":                           "y",
	} {
		if got := hashTag(key); got != want {
			t.Errorf("hashTag(%q) = %q, want %q", key, got, want)
		}
	}
}

// inASecond is a deadline that a working Redis meets.
func inASecond() time.Time { return time.Now().Add(time.Second) }

// A caller that comes after Close fails at once, even when its call is
// queued where no lane will take it: it has no timer to end its wait.
func TestBatcherClosedFailsAtOnce(t *testing.T) {
	b := batcher(t, redistest.Start(t), time.Second)
	l := limiter.Limit{Algorithm: limiter.FixedWindow, Events: 2, Window: time.Hour}
	for range cap(b.lanes) {
		<-b.lanes // every lane busy: the call must queue
	}
	b.Close()
	done := make(chan error, 1)
	go func() {
		req := []Request{{StateKey: StateKey("closed", l, "a"), Limit: l, Cost: 1}}
		_, err := b.Decide(context.Background(), time.Now().Add(time.Hour), req, make([]limiter.Decision, 1))
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, redis.ErrClosed) {
			t.Errorf("after Close: %v, want %v", err, redis.ErrClosed)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a caller after Close is still waiting")
	}
}

// A batch whose answer is lost after Redis ran it must not be sent again:
// its requests would be charged twice. go-redis' cluster client retries a
// pipeline after a network error whatever MaxRetries says; noRetry stops
// it. A proxy in front of the key's master drops the connection instead
// of passing on the script's reply.
func TestBatcherNeverSendsABatchTwice(t *testing.T) {
	rc := redistest.StartCluster(t, 3)
	l := limiter.Limit{Algorithm: limiter.FixedWindow, Events: 10, Window: time.Hour}
	key := StateKey("lost", l, "k")
	slot, err := strconv.Atoi(rc.Nodes[0].Do("CLUSTER", "KEYSLOT", key))
	if err != nil {
		t.Fatal(err)
	}
	master := rc.Nodes[rc.Owner(slot)]
	p := startReplyDropper(t, master.Addr)
	var addrs []string
	for _, s := range rc.Nodes {
		addrs = append(addrs, s.Addr)
	}
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, ReadTimeout: time.Second, WriteTimeout: time.Second, MaxRetries: -1,
		Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if addr == master.Addr {
				addr = p.addr
			}
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}})
	b := NewBatcher(c, 1, 64, 0, 0)
	t.Cleanup(func() { b.Close(); c.Close() })

	req := []Request{{StateKey: key, Limit: l, Cost: 1}}
	if _, err := b.Decide(context.Background(), inASecond(), req, make([]limiter.Decision, 1)); err != nil {
		t.Fatal(err)
	}
	p.armed.Store(true)
	if _, err := b.Decide(context.Background(), inASecond(), req, make([]limiter.Decision, 1)); err == nil {
		t.Fatal("a decision whose reply was lost succeeded")
	}
	if p.armed.Load() {
		t.Fatal("setup: no script reply went through the proxy")
	}
	// Redis ran the script twice in all, once per decision.
	if state := master.Do("GET", key); !strings.HasSuffix(state, " 2") {
		t.Errorf("the key's state is %q: the lost batch was charged again", state)
	}
}

// replyDropper passes traffic to a Redis server, except that once armed
// it closes the connection that sends the next script call instead of
// passing on the reply.
type replyDropper struct {
	addr  string
	armed atomic.Bool
}

func startReplyDropper(t *testing.T, target string) *replyDropper {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	p := &replyDropper{addr: l.Addr().String()}
	go func() {
		for {
			client, err := l.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial("tcp", target)
			if err != nil {
				client.Close()
				continue
			}
			t.Cleanup(func() { client.Close(); server.Close() })
			var drop atomic.Bool
			go func() {
				buf := make([]byte, 64<<10)
				for {
					n, err := client.Read(buf)
					if err != nil {
						server.Close()
						return
					}
					if bytes.Contains(bytes.ToLower(buf[:n]), []byte("evalsha")) && p.armed.CompareAndSwap(true, false) {
						drop.Store(true)
					}
					if _, err := server.Write(buf[:n]); err != nil {
						return
					}
				}
			}()
			go func() {
				buf := make([]byte, 64<<10)
				for {
					n, err := server.Read(buf)
					if err != nil || drop.Load() {
						client.Close()
						server.Close()
						return
					}
					if _, err := client.Write(buf[:n]); err != nil {
						return
					}
				}
			}()
		}
	}()
	return p
}

// A caller after Close fails at once even when a lane is idle: it must
// not reach Redis through a batcher that was closed.
func TestBatcherClosedIdleLaneFails(t *testing.T) {
	b := batcher(t, redistest.Start(t), time.Second)
	l := limiter.Limit{Algorithm: limiter.FixedWindow, Events: 2, Window: time.Hour}
	b.Close()
	req := []Request{{StateKey: StateKey("closed", l, "idle"), Limit: l, Cost: 1}}
	if _, err := b.Decide(context.Background(), inASecond(), req, make([]limiter.Decision, 1)); !errors.Is(err, redis.ErrClosed) {
		t.Errorf("after Close, with a lane idle: %v, want %v", err, redis.ErrClosed)
	}
}

// A call nearly out of time does not cut its batch short: it fails unsent,
// and a caller that sends it along with its own gets its decision from a
// Redis slower than the old call's time left.
func TestBatcherLateCallDoesNotCutTheBatchShort(t *testing.T) {
	srv := redistest.Start(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, ReadTimeout: time.Second, WriteTimeout: time.Second, MaxRetries: -1, ContextTimeoutEnabled: true})
	t.Cleanup(func() { c.Close() })
	// No lane goroutines: the old call waits in the queue until a caller sends.
	b := &Batcher{client: c, calls: make(chan *batchCall, 16), lanes: make(chan *lane, 1), stop: make(chan struct{}), max: 64, minLeft: 100 * time.Millisecond}
	b.lanes <- &lane{batch: make([]*batchCall, 0, 64)}
	l := limiter.Limit{Algorithm: limiter.FixedWindow, Events: 10, Window: time.Hour}
	ctx := context.Background()
	if _, err := b.Decide(ctx, inASecond(), []Request{{StateKey: StateKey("late", l, "warm"), Limit: l, Cost: 1}}, make([]limiter.Decision, 1)); err != nil {
		t.Fatal(err) // the connection and the script are ready
	}
	old := &batchCall{ctx: ctx, deadline: time.Now().Add(30 * time.Millisecond), done: make(chan batchReply, 1),
		reqs: []Request{{StateKey: StateKey("late", l, "old"), Limit: l, Cost: 1}}}
	b.calls <- old
	srv.Do("CLIENT", "PAUSE", "60") // Redis answers in 60 ms
	if _, err := b.Decide(ctx, inASecond(), []Request{{StateKey: StateKey("late", l, "new"), Limit: l, Cost: 1}}, make([]limiter.Decision, 1)); err != nil {
		t.Errorf("a caller with a second to go failed with the old call's deadline: %v", err)
	}
	if r := <-old.done; !errors.Is(r.err, context.DeadlineExceeded) {
		t.Errorf("the old call: %v, want it late and unsent", r.err)
	}
}

// TestBatchExpiry: the batcher keeps the most a server's clock was found
// ahead of its own, so an answer from a server with a slower clock (another
// master of a cluster) cannot make a live batch to a faster one expire. A
// live batch to a server further ahead than any answer said (a clock
// stepped) expires there, decides nothing, and goes once more with the
// clock its answer taught: it is decided, and charged, once.
func TestBatchExpiry(t *testing.T) {
	srv := redistest.Start(t)
	const timeout = 50 * time.Millisecond
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, ReadTimeout: timeout, WriteTimeout: timeout, MaxRetries: -1, ContextTimeoutEnabled: true})
	b := NewBatcher(c, 1, 64, timeout/4, timeout)
	t.Cleanup(func() { b.Close(); c.Close() })
	l := limiter.Limit{Algorithm: limiter.FixedWindow, Events: 1000, Window: time.Hour}
	req := []Request{{StateKey: StateKey("expiry", l, "k"), Limit: l, Cost: 1}}
	out := make([]limiter.Decision, 1)
	decide := func() error {
		_, err := b.Decide(context.Background(), time.Now().Add(timeout), req, out)
		return err
	}
	if err := decide(); err != nil {
		t.Fatal(err)
	}
	learnt, _ := b.clock.bound()
	b.clock.learn(learnt-150_000, time.Now()) // an answer from a server 150ms behind
	if err := decide(); err != nil {
		t.Errorf("a live batch after a slower server's answer: %v", err)
	}
	remaining := out[0].Remaining
	calls := srv.Calls("evalsha", "eval")
	// As if the server's clock had stepped 10s ahead since it was learnt.
	b.clock.mu.Lock()
	b.clock.cur, b.clock.prev = learnt-10_000_000, learnt-10_000_000
	b.clock.mu.Unlock()
	if err := decide(); err != nil || out[0].Remaining != remaining-1 {
		t.Errorf("a live batch to a server further ahead than known: %v, remaining %d, want %d", err, out[0].Remaining, remaining-1)
	}
	if n := srv.Calls("evalsha", "eval") - calls; n != 2 {
		t.Errorf("%d script calls, want 2: the expired one and the one sent again", n)
	}
}

// TestClockBoundAges: a sample far above the others (a master that ran
// ahead, then failed over) stops counting after two periods with answers;
// without answers, the bound stays.
func TestClockBoundAges(t *testing.T) {
	var c clockBound
	t0 := time.Now()
	c.learn(100, t0)
	c.learn(1_000_000_000, t0.Add(time.Second))
	if got, _ := c.bound(); got != 1_000_000_000 {
		t.Fatalf("bound %d, want the largest sample", got)
	}
	c.learn(100, t0.Add(clockPeriod+time.Second))
	if got, _ := c.bound(); got != 1_000_000_000 {
		t.Errorf("bound %d one period later, want the largest sample still", got)
	}
	c.learn(120, t0.Add(2*clockPeriod+2*time.Second))
	if got, _ := c.bound(); got != 120 {
		t.Errorf("bound %d two periods later, want 120", got)
	}
}
