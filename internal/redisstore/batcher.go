package redisstore

import (
	"context"
	"errors"
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
// A caller waits for its answer no longer than its context allows; a
// request whose caller gave up before its batch left is not sent.
type Batcher struct {
	client  redis.UniversalClient
	cluster bool
	timeout time.Duration // bounds a lane's batch
	calls   chan *batchCall
	lanes   chan struct{} // a token for each batch on the wire
	stop    chan struct{}
	wg      sync.WaitGroup
	max     int
}

type batchCall struct {
	ctx  context.Context
	reqs []Request
	done chan batchReply // buffered: a caller that gave up does not block the lane
}

// batchReply is one request's part of the script's reply; the lane never
// writes to memory the caller may have left.
type batchReply struct {
	vals []int64
	err  error
}

// NewBatcher starts lanes goroutines, each sending one batch of at most
// maxBatch requests at a time on a pooled connection of c, for no longer
// than timeout. Close stops them.
func NewBatcher(c redis.UniversalClient, lanes, maxBatch int, timeout time.Duration) *Batcher {
	_, cluster := c.(*redis.ClusterClient)
	b := &Batcher{client: c, cluster: cluster, timeout: timeout, calls: make(chan *batchCall, lanes*maxBatch),
		lanes: make(chan struct{}, lanes), stop: make(chan struct{}), max: maxBatch}
	b.wg.Add(lanes)
	for range lanes {
		go b.lane()
	}
	return b
}

// Close stops the lanes; requests still queued fail. It does not close
// the client.
func (b *Batcher) Close() {
	close(b.stop)
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
// requests that wait beside it. out receives each zone's decision and
// must be as long as reqs.
func (b *Batcher) Decide(ctx context.Context, reqs []Request, out []limiter.Decision) (bool, error) {
	r := b.call(ctx, reqs)
	if r.err != nil {
		return false, r.err
	}
	return decode(r.vals, reqs, out)
}

// call queues the request for the next batch and waits for its answer, or
// for ctx to end.
func (b *Batcher) call(ctx context.Context, reqs []Request) batchReply {
	if err := ctx.Err(); err != nil {
		return batchReply{err: err}
	}
	c := &batchCall{ctx: ctx, reqs: reqs, done: make(chan batchReply, 1)}
	select {
	case b.lanes <- struct{}{}:
		// A lane is idle: send now, and take along whoever waits. The
		// batch keeps this caller's deadline but not its cancellation:
		// a client that hangs up must not fail the others' requests.
		batch := b.gather(append(make([]*batchCall, 0, 8), c))
		sendCtx := context.WithoutCancel(ctx)
		if deadline, ok := ctx.Deadline(); ok {
			var cancel context.CancelFunc
			sendCtx, cancel = context.WithDeadline(sendCtx, deadline)
			defer cancel()
		}
		b.send(sendCtx, batch)
		<-b.lanes
		return <-c.done
	default:
	}
	select {
	case b.calls <- c:
	case <-ctx.Done():
		return batchReply{err: ctx.Err()}
	case <-b.stop:
		return batchReply{err: redis.ErrClosed}
	}
	select {
	case r := <-c.done:
		return r
	case <-ctx.Done():
		return batchReply{err: ctx.Err()}
	}
}

func (b *Batcher) lane() {
	defer b.wg.Done()
	batch := make([]*batchCall, 0, b.max)
	for {
		select {
		case c := <-b.calls:
			batch = append(batch[:0], c)
		case <-b.stop:
			return
		}
		// Waiting for a lane lets the batch grow meanwhile.
		select {
		case b.lanes <- struct{}{}:
		case <-b.stop:
			batch[0].done <- batchReply{err: redis.ErrClosed}
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
		b.send(ctx, b.gather(batch))
		cancel()
		<-b.lanes
		clear(batch) // let the callers' requests go
	}
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
}

// send decides one batch, within ctx: the deadline of the caller who
// sends, or the batcher's timeout for a lane. A call that fails with
// NOSCRIPT, the server having lost its script cache, is sent again with
// the script. No call is ever retried otherwise: a script that ran but
// whose answer was lost would charge its requests twice.
func (b *Batcher) send(ctx context.Context, batch []*batchCall) {
	live := batch[:0]
	for _, c := range batch {
		if err := c.ctx.Err(); err != nil {
			c.done <- batchReply{err: err} // its caller has gone: not sent
			continue
		}
		live = append(live, c)
	}
	if len(live) == 0 {
		return
	}
	calls := b.split(live)
	pipe := b.client.Pipeline()
	for _, sc := range calls {
		sc.args.start(0)
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
		vals, err := sc.cmd.Int64Slice()
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

// split makes the batch's script calls: one for all, or, in a Redis
// Cluster, one per hash tag, every key of one request sharing its tag.
func (b *Batcher) split(live []*batchCall) []*scriptCall {
	if !b.cluster {
		return []*scriptCall{{calls: live}}
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
