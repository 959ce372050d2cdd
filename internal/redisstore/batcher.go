package redisstore

import (
	"context"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Batcher pipelines concurrent script calls: while batches are on the
// wire, the calls that arrive wait, and leave together in the next one, in
// one write and one read. A caller that finds a lane idle sends at once,
// from its own goroutine, with whatever else waits, so a lone caller pays
// neither a wait nor a hand-off. It passes for the client it wraps as a
// redis.Scripter: EvalSha is batched, everything else goes straight.
//
// A caller waits for its answer no longer than its context allows; a call
// whose caller gave up before its batch left is not sent.
type Batcher struct {
	redis.UniversalClient
	calls chan *batchCall
	lanes chan struct{} // a token for each batch on the wire
	stop  chan struct{}
	wg    sync.WaitGroup
	max   int
}

type batchCall struct {
	ctx  context.Context
	sha  string
	keys []string
	args []any
	done chan *redis.Cmd // buffered: a caller that gave up does not block the lane
}

// NewBatcher starts lanes goroutines, each sending one batch of at most
// maxBatch calls at a time on a pooled connection of c. Close stops them.
func NewBatcher(c redis.UniversalClient, lanes, maxBatch int) *Batcher {
	b := &Batcher{UniversalClient: c, calls: make(chan *batchCall, lanes*maxBatch), lanes: make(chan struct{}, lanes), stop: make(chan struct{}), max: maxBatch}
	b.wg.Add(lanes)
	for range lanes {
		go b.lane()
	}
	return b
}

// Close stops the lanes; calls still queued fail. It does not close the
// client.
func (b *Batcher) Close() {
	close(b.stop)
	b.wg.Wait()
	for {
		select {
		case c := <-b.calls:
			c.done <- errCmd(c.ctx, redis.ErrClosed)
		default:
			return
		}
	}
}

// EvalSha queues the call for the next batch and waits for its answer, or
// for ctx to end.
func (b *Batcher) EvalSha(ctx context.Context, sha string, keys []string, args ...any) *redis.Cmd {
	if err := ctx.Err(); err != nil {
		return errCmd(ctx, err)
	}
	c := &batchCall{ctx: ctx, sha: sha, keys: keys, args: args, done: make(chan *redis.Cmd, 1)}
	select {
	case b.lanes <- struct{}{}:
		// A lane is idle: send now, and take along whoever waits. The
		// batch keeps this caller's deadline but not its cancellation:
		// a client that hangs up must not fail the others' calls.
		batch := b.gather(append(make([]*batchCall, 0, 8), c))
		sendCtx := context.WithoutCancel(ctx)
		if deadline, ok := ctx.Deadline(); ok {
			var cancel context.CancelFunc
			sendCtx, cancel = context.WithDeadline(sendCtx, deadline)
			defer cancel()
		}
		b.send(sendCtx, batch, nil)
		<-b.lanes
		return <-c.done
	default:
	}
	select {
	case b.calls <- c:
	case <-ctx.Done():
		return errCmd(ctx, ctx.Err())
	case <-b.stop:
		return errCmd(ctx, redis.ErrClosed)
	}
	select {
	case cmd := <-c.done:
		return cmd
	case <-ctx.Done():
		return errCmd(ctx, ctx.Err())
	}
}

func (b *Batcher) lane() {
	defer b.wg.Done()
	batch := make([]*batchCall, 0, b.max)
	cmds := make([]*redis.Cmd, 0, b.max)
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
			batch[0].done <- errCmd(batch[0].ctx, redis.ErrClosed)
			return
		}
		cmds = b.send(context.Background(), b.gather(batch), cmds[:0])
		<-b.lanes
		clear(batch) // let the callers' arguments go
		clear(cmds)
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

// send runs one batch as a pipeline, cmds its scratch space. ctx (that of
// the caller who sends, or none for a lane) and the connection's read and
// write timeouts bound it; each call gets its own result, NOSCRIPT
// included, so that redis.Script falls back to EVAL for that call alone.
func (b *Batcher) send(ctx context.Context, batch []*batchCall, cmds []*redis.Cmd) []*redis.Cmd {
	live := batch[:0]
	for _, c := range batch {
		if err := c.ctx.Err(); err != nil {
			c.done <- errCmd(c.ctx, err) // its caller has gone: not sent
			continue
		}
		live = append(live, c)
	}
	if len(live) == 0 {
		return cmds
	}
	pipe := b.UniversalClient.Pipeline()
	for _, c := range live {
		cmds = append(cmds, pipe.EvalSha(context.Background(), c.sha, c.keys, c.args...))
	}
	pipe.Exec(ctx) // errors are in each command
	for i, c := range live {
		c.done <- cmds[i]
	}
	return cmds
}

func errCmd(ctx context.Context, err error) *redis.Cmd {
	cmd := redis.NewCmd(ctx)
	cmd.SetErr(err)
	return cmd
}
