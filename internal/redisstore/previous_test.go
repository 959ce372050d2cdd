package redisstore

import (
	"context"
	_ "embed"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caddy-gateway/gateway/internal/limiter"
)

// The script as released before its sliding window was made cheaper, at
// commit b88be84, which decided one request a call. The states it wrote
// are the states this one writes: what one reads, the other reads alike.
//
//go:embed testdata/ratelimit_previous.lua
var previousSource string

var previousScript = redis.NewScript(previousSource)

// runScript calls a script with Decide's arguments and returns its reply
// and the state it left in each key. The previous script decided one
// request a call, with the same reply for it.
func runScript(ctx context.Context, c *redis.Client, s *redis.Script, now int64, keys []string, limits []limiter.Limit, costs []int64, dry []bool) ([]int64, []string, error) {
	args := []any{now}
	if s == decideScript {
		var b batch
		b.start(now)
		var reqs []Request
		for i, l := range limits {
			reqs = append(reqs, Request{StateKey: keys[i], Limit: l, Cost: costs[i], DryRun: dry[i]})
		}
		b.add(reqs)
		args = b.args
	}
	for i, l := range limits {
		if s == decideScript {
			break
		}
		burst := l.Burst
		if burst == 0 {
			burst = l.Events
		}
		d := 0
		if dry[i] {
			d = 1
		}
		args = append(args, int(l.Algorithm), l.Events, l.Window.Microseconds(), burst, costs[i], d)
	}
	res, err := s.Run(ctx, c, keys, args...).Int64Slice()
	if err != nil {
		return nil, nil, err
	}
	states := make([]string, len(keys))
	for i, k := range keys {
		states[i], err = c.Get(ctx, k).Result()
		if err == redis.Nil {
			states[i], err = "<none>", nil
		}
		if err != nil {
			return nil, nil, err
		}
	}
	return res, states, nil
}

// TestSameAsPreviousScript plays random arrivals against the previous
// script and this one, each on its own keys and both in turn on shared
// keys: every reply and every state written must be the same, byte for
// byte, so that either reads what the other wrote. Some keys start from states that neither writes for their
// algorithm (a zone whose algorithm changed, stray spaces), read as before.
func TestSameAsPreviousScript(t *testing.T) {
	c := client(t)
	ctx := context.Background()
	base := time.Now().Add(time.Hour).UnixMicro()
	// Each algorithm from each of these, then from random states.
	starts := []string{"", " ", "17 4", "  3  1 0  2 ", "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20"}
	for seed := range uint64(8 * len(starts)) {
		r := rand.New(rand.NewPCG(seed, 11))
		algo := limiter.Algorithm(seed % 4)
		// Even milliseconds: multiples of 16 µs, where the previous script's
		// sub-window (the window over 16, rounded down) is this one's
		// (rounded up). Other windows lie on another grid of sub-windows.
		l := limiter.Limit{Algorithm: algo, Events: 1 + r.Int64N(10), Window: time.Duration(16+2*r.Int64N(1000)) * time.Millisecond}
		if algo == limiter.TokenBucket || algo == limiter.LeakyBucket {
			l.Burst = r.Int64N(5)
		}
		now := base + r.Int64N(1e6)
		start := ""
		if int(seed/4) < len(starts) {
			start = starts[seed/4]
		} else if algo == limiter.SlidingWindow {
			// A sliding state close to now, as either script writes it.
			q := l.Window.Microseconds() / limiter.SlidingBuckets
			start = fmt.Sprint(now/q - r.Int64N(20))
			for range limiter.SlidingBuckets + 1 {
				start += fmt.Sprint(" ", r.Int64N(3))
			}
		}
		prev := fmt.Sprintf("%sprev%d:a", KeyPrefix, seed)
		cur := fmt.Sprintf("%scur%d:a", KeyPrefix, seed)
		mixed := fmt.Sprintf("%smixed%d:a", KeyPrefix, seed)
		if start != "" {
			for _, k := range []string{prev, cur, mixed} {
				if err := c.Set(ctx, k, start, 0).Err(); err != nil {
					t.Fatal(err)
				}
			}
		}
		for step := range 120 {
			now += r.Int64N(l.Window.Microseconds()/6+1) - r.Int64N(l.Window.Microseconds()/40+1)
			cost := []int64{1 + r.Int64N(3)}
			dry := []bool{r.IntN(8) == 0}
			lim := []limiter.Limit{l}
			wantRes, wantStates, wantErr := runScript(ctx, c, previousScript, now, []string{prev}, lim, cost, dry)
			gotRes, gotStates, gotErr := runScript(ctx, c, decideScript, now, []string{cur}, lim, cost, dry)
			turn := decideScript
			if r.IntN(2) == 0 {
				turn = previousScript
			}
			mixRes, mixStates, mixErr := runScript(ctx, c, turn, now, []string{mixed}, lim, cost, dry)
			if (gotErr != nil) != (wantErr != nil) || (mixErr != nil) != (wantErr != nil) {
				t.Fatalf("seed %d step %d (%v, from %q): errors: previous %v, this %v, in turn %v", seed, step, algo, start, wantErr, gotErr, mixErr)
			}
			if wantErr != nil {
				break // a state neither reads: both fail alike
			}
			if !slices.Equal(gotRes, wantRes) || !slices.Equal(mixRes, wantRes) {
				t.Fatalf("seed %d step %d (%v, from %q): replies: previous %v, this %v, in turn %v", seed, step, algo, start, wantRes, gotRes, mixRes)
			}
			if gotStates[0] != wantStates[0] || mixStates[0] != wantStates[0] {
				t.Fatalf("seed %d step %d (%v, from %q): states: previous %q, this %q, in turn %q", seed, step, algo, start, wantStates[0], gotStates[0], mixStates[0])
			}
		}
	}
}
