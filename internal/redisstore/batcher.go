package redisstore

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caddy-gateway/gateway/internal/limiter"
)

// Batcher decides concurrent requests together: while batches are on the
// wire, the requests that arrive wait, and the next batch decides them all
// in one script call, which reads and writes each state key once, however
// many of its requests share it. A caller that finds a lane idle sends at
// once, from its own goroutine, with whatever else waits, so a lone caller
// pays neither a wait nor a hand-off.
//
// In a Redis Cluster a script may only touch keys of one hash slot: the
// batch makes one call per hash tag, all in one pipeline.
//
// A caller waits no later than its deadline, without a timer of its own:
// a batch is sent within the earliest deadline of its calls, and a call
// whose deadline has passed before its batch leaves fails unsent, as does
// a call whose caller gave up.
type Batcher struct {
	client  redis.UniversalClient
	cluster bool
	calls   chan *batchCall
	lanes   chan *lane // an idle lane's buffers; taking one puts a batch on the wire
	stop    chan struct{}
	closing sync.Once
	wg      sync.WaitGroup
	max     int
	minLeft time.Duration // a call with less time left is not sent
	grace   time.Duration // how long past its deadline a batch may still run; 0: no bound

	clock clockBound // how far the servers' clocks are ahead of ours
}

// lane is what one batch on the wire reuses from the last.
type lane struct {
	batch  []*batchCall
	single scriptCall // the one script call of a batch outside a cluster
	calls  [1]*scriptCall
}

type batchCall struct {
	ctx      context.Context
	deadline time.Time
	reqs     []Request
	done     chan batchReply // buffered: a caller that gave up does not block the lane
}

// batchReply is one request's part of the script's reply; the lane never
// writes to memory the caller may have left.
type batchReply struct {
	vals []int64
	err  error
}

// callPool recycles the calls that were answered: only then has the lane
// stopped using them.
var callPool = sync.Pool{New: func() any { return &batchCall{done: make(chan batchReply, 1)} }}

// NewBatcher starts lanes goroutines, each sending one batch of at most
// maxBatch requests at a time on a pooled connection of c. A call with
// less than minLeft before its deadline when its batch leaves fails
// unsent: the batch gets the earliest deadline of its calls, and one call
// nearly out of time must not cut every other call's time short.
//
// A batch that Redis runs more than grace after its deadline decides
// nothing: its callers gave up at the deadline and were decided otherwise
// (by fail_mode), and a hung Redis that resumes must not charge them too.
// Redis judges by its own clock, which the batcher learns from each
// answer; the grace covers what that cannot know (a clock stepped since),
// so it should be far longer than a timeout. A grace of zero lets a batch
// run whenever it arrives. Close stops the lanes.
func NewBatcher(c redis.UniversalClient, lanes, maxBatch int, minLeft, grace time.Duration) *Batcher {
	_, cluster := c.(*redis.ClusterClient)
	b := &Batcher{client: c, cluster: cluster, calls: make(chan *batchCall, lanes*maxBatch),
		lanes: make(chan *lane, lanes), stop: make(chan struct{}), max: maxBatch, minLeft: minLeft, grace: grace}
	for range lanes {
		b.lanes <- &lane{batch: make([]*batchCall, 0, maxBatch)}
	}
	b.wg.Add(lanes)
	for range lanes {
		go b.run()
	}
	return b
}

// Close stops the lanes; requests still queued fail, and callers that
// queue later fail at once. It does not close the client. Closing again
// does nothing.
func (b *Batcher) Close() {
	b.closing.Do(func() { close(b.stop) })
	b.wg.Wait()
	for {
		select {
		case c := <-b.calls:
			c.done <- batchReply{err: redis.ErrClosed}
		default:
			return
		}
	}
}

// Decide decides a request against its zones, on Redis' clock, with the
// requests that wait beside it, giving up at deadline or when ctx ends.
// out receives each zone's decision and must be as long as reqs.
func (b *Batcher) Decide(ctx context.Context, deadline time.Time, reqs []Request, out []limiter.Decision) (bool, error) {
	if len(reqs) == 0 {
		return true, nil // no zone to refuse it
	}
	c := callPool.Get().(*batchCall)
	c.ctx, c.deadline, c.reqs = ctx, deadline, reqs
	r, answered := b.call(c)
	if answered {
		*c = batchCall{done: c.done}
		callPool.Put(c)
	}
	if r.err != nil {
		return false, r.err
	}
	return decode(r.vals, reqs, out)
}

// call queues c for the next batch and waits for its answer, or for its
// context to end; answered tells whether the lane is done with c.
func (b *Batcher) call(c *batchCall) (r batchReply, answered bool) {
	select {
	case <-b.stop:
		return batchReply{err: redis.ErrClosed}, true
	default:
	}
	if err := c.ctx.Err(); err != nil {
		return batchReply{err: err}, true
	}
	select {
	case l := <-b.lanes:
		// A lane is idle: send now, and take along whoever waits.
		b.sendOn(l, b.gather(append(l.batch[:0], c)))
		return <-c.done, true
	default:
	}
	select {
	case b.calls <- c:
	case <-c.ctx.Done():
		return batchReply{err: c.ctx.Err()}, true
	case <-b.stop:
		return batchReply{err: redis.ErrClosed}, true
	}
	select {
	case r := <-c.done:
		return r, true
	case <-c.ctx.Done():
		return batchReply{err: c.ctx.Err()}, false
	case <-b.stop:
		select {
		case r := <-c.done:
			return r, true
		default:
			return batchReply{err: redis.ErrClosed}, false
		}
	}
}

// run sends the batches of calls that found no lane idle.
func (b *Batcher) run() {
	defer b.wg.Done()
	for {
		var first *batchCall
		select {
		case first = <-b.calls:
		case <-b.stop:
			return
		}
		// Waiting for a lane lets the batch grow meanwhile.
		var l *lane
		select {
		case l = <-b.lanes:
		case <-b.stop:
			first.done <- batchReply{err: redis.ErrClosed}
			return
		}
		// Let the handlers that are runnable now, on this core, join the
		// batch: under load this nearly doubles a batch (10 to 17 requests
		// at wrk -c64 on 2 cores) and halves the script calls Redis runs,
		// for one pass of the scheduler rather than a timer.
		runtime.Gosched()
		b.sendOn(l, b.gather(append(l.batch[:0], first)))
	}
}

// sendOn sends the batch on lane l and gives the lane back, even if the
// send panics in a handler's goroutine, which Caddy recovers: a lane lost
// would leave every later call waiting for its request's end.
func (b *Batcher) sendOn(l *lane, batch []*batchCall) {
	defer func() { b.lanes <- l }()
	b.send(l, batch)
}

// gather adds to batch the calls that wait, up to the batch size.
func (b *Batcher) gather(batch []*batchCall) []*batchCall {
	for len(batch) < b.max {
		select {
		case c := <-b.calls:
			batch = append(batch, c)
		default:
			return batch
		}
	}
	return batch
}

// scriptCall is one script call of a batch: the requests it decides.
type scriptCall struct {
	calls []*batchCall
	args  batch
	cmd   *redis.Cmd
	vals  []int64 // cmd's reply, read once
	err   error
}

// errLate fails a call whose deadline passed, or nearly, before its batch
// left.
var errLate = fmt.Errorf("rate-limit decision not sent before its deadline: %w", context.DeadlineExceeded)

// send decides one batch with the lane's buffers, within the earliest
// deadline of its calls; every call is answered, and the lane keeps none.
// A call that fails with NOSCRIPT, the server having lost its script
// cache, is sent again with the script, and one that Redis found expired,
// having decided nothing, is sent once more while it has time. No call is
// ever retried otherwise: a script that ran but whose answer was lost
// would charge its requests twice.
func (b *Batcher) send(l *lane, batch []*batchCall) {
	defer clear(batch) // let the callers' requests go
	now := time.Now()
	live := batch[:0]
	var deadline time.Time
	for _, c := range batch {
		switch {
		case c.ctx.Err() != nil:
			c.done <- batchReply{err: c.ctx.Err()} // its caller has gone: not sent
		case c.deadline.Sub(now) < max(b.minLeft, 1):
			c.done <- batchReply{err: errLate}
		default:
			if len(live) == 0 || c.deadline.Before(deadline) {
				deadline = c.deadline
			}
			live = append(live, c)
		}
	}
	if len(live) == 0 {
		return
	}
	// The batch keeps its callers' deadlines but not their cancellation: a
	// client that hangs up must not fail the others' requests.
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	calls := b.split(l, live)
	if expired := b.exec(ctx, deadline, calls); len(expired) > 0 && time.Until(deadline) >= max(b.minLeft, 1) {
		// Redis ran these after their expiry by the clock the batcher
		// knew, yet answered before the deadline: its clock is further
		// ahead than known (another master, a clock stepped). They
		// decided nothing; with the clock learnt from their answer they
		// go once more, if they have the time a first send needs
		// (otherwise they fail with errExpired, charged nothing).
		b.exec(ctx, deadline, expired)
	}
	for _, sc := range calls {
		vals, err := sc.vals, sc.err
		if err == nil && len(vals) == 1 {
			err = errExpired // now alone: no call of it was decided
		}
		off := 1 // past now
		for _, c := range sc.calls {
			n := replyLen(len(c.reqs))
			switch {
			case err != nil:
				c.done <- batchReply{err: err}
			case off+n > len(vals):
				c.done <- batchReply{err: errShortReply}
			default:
				c.done <- batchReply{vals: vals[off : off+n : off+n]}
			}
			off += n
		}
	}
}

// exec sends the script calls in one pipeline, those that found no
// script again with it, reads each reply into its call, and learns the
// servers' clocks from them. It returns the calls that Redis ran after
// their expiry, which decided nothing.
func (b *Batcher) exec(ctx context.Context, deadline time.Time, calls []*scriptCall) (expired []*scriptCall) {
	pipe := b.client.Pipeline()
	sent := time.Now()
	ahead, known := b.clock.bound()
	for _, sc := range calls {
		sc.args.start(0)
		if b.grace > 0 && known {
			// ahead is an upper bound (the server ran the batch some
			// time after it left): the batch does not expire early,
			// unless its server is further ahead than any answer of
			// the last 30 to 60 s said.
			sc.args.expire(deadline.Add(b.grace).UnixMicro() + ahead)
		}
		for _, c := range sc.calls {
			sc.args.add(c.reqs)
		}
		sc.cmd = scriptCmd("evalsha", decideScript.Hash(), sc.args)
		pipe.Process(ctx, noRetry{sc.cmd})
	}
	pipe.Exec(ctx) // errors are in each command
	// The calls that found no script, after a failover or a SCRIPT FLUSH,
	// go again with the script, together: a cluster's batch may hold a
	// call for every tag.
	var again redis.Pipeliner
	for _, sc := range calls {
		if err := sc.cmd.Err(); err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			if again == nil {
				again = b.client.Pipeline()
			}
			sc.cmd = scriptCmd("eval", decideSource, sc.args)
			again.Process(ctx, noRetry{sc.cmd})
		}
	}
	if again != nil {
		again.Exec(ctx)
	}
	for _, sc := range calls {
		sc.vals, sc.err = sc.cmd.Int64Slice()
		if sc.err != nil || len(sc.vals) == 0 {
			continue
		}
		b.clock.learn(sc.vals[0]-sent.UnixMicro(), time.Now())
		if len(sc.vals) == 1 {
			expired = append(expired, sc)
		}
	}
	return expired
}

// errExpired fails the calls of a batch that Redis ran after it expired,
// twice: it decided nothing.
var errExpired = errors.New("rate-limit batch reached Redis after it expired: nothing decided")

// clockBound bounds how far the servers' clocks are ahead of ours, in µs:
// the most that a server's time when it ran a batch was past ours when
// the batch left. Each answer is an upper bound for its server, and the
// most of them one for every server that answered in the periods kept (a
// cluster's masters, a Sentinel's successive masters), never more than
// the largest offset plus the timeout, since an answer that comes later
// is not read. The bound keeps the samples of the last two periods that
// had any, so that a clock event (a master that ran ahead, then failed
// over; ours stepped forward) ages out rather than turning expiry off for
// good.
type clockBound struct {
	mu        sync.Mutex
	cur, prev int64 // the most of this period's samples, and the last's
	since     time.Time
	known     bool
}

const clockPeriod = 30 * time.Second

func (c *clockBound) learn(sample int64, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case !c.known:
		c.cur, c.prev, c.since, c.known = sample, sample, now, true
	case now.Sub(c.since) >= clockPeriod:
		c.prev, c.cur, c.since = c.cur, sample, now
	default:
		c.cur = max(c.cur, sample)
	}
}

// bound returns the bound, and whether any answer taught one.
func (c *clockBound) bound() (int64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return max(c.cur, c.prev), c.known
}

// scriptCmd makes an EVAL or EVALSHA of the batch's arguments.
func scriptCmd(name, script string, b batch) *redis.Cmd {
	args := make([]any, 0, 3+len(b.keys)+len(b.args))
	args = append(args, name, script, len(b.keys))
	for _, k := range b.keys {
		args = append(args, k)
	}
	return redis.NewCmd(context.Background(), append(args, b.args...)...)
}

// noRetry keeps go-redis from sending a command again. A Redis Cluster
// client retries a pipeline after a timeout or a dropped connection, and
// a node's whole pipeline after some errors of its first command, whatever
// MaxRetries says; it still follows MOVED and ASK, before which the script
// did not run.
type noRetry struct{ *redis.Cmd }

func (noRetry) NoRetry() bool { return true }

var errShortReply = errors.New("rate-limit script returned too few values for its batch")

// split makes the batch's script calls: one for all, in the lane's
// buffers, or, in a Redis Cluster, one per hash tag, every key of one
// request sharing its tag.
func (b *Batcher) split(l *lane, live []*batchCall) []*scriptCall {
	if !b.cluster {
		l.single.calls = live
		l.calls[0] = &l.single
		return l.calls[:]
	}
	var calls []*scriptCall
	byTag := map[string]*scriptCall{}
	for _, c := range live {
		tag := hashTag(c.reqs[0].StateKey)
		sc := byTag[tag]
		if sc == nil {
			sc = &scriptCall{}
			byTag[tag] = sc
			calls = append(calls, sc)
		}
		sc.calls = append(sc.calls, c)
	}
	return calls
}

// hashTag returns what Redis Cluster hashes of a key: the text between
// its first '{' and the next '}', or the whole key.
func hashTag(key string) string {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			return key[i+1 : i+1+j]
		}
	}
	return key
}
