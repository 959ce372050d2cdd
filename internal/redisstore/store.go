// Package redisstore makes rate-limit decisions in Redis: one Lua script
// decides each request against all its zones atomically, on Redis' clock,
// with the arithmetic of internal/limiter, and a Batcher has one call of
// it decide every request that arrived together.
package redisstore

import (
	"crypto/sha256"
	_ "embed"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caddy-gateway/gateway/internal/limiter"
)

//go:embed ratelimit.lua
var decideSource string

// decideScript is called by its SHA; when a server lost its script cache,
// the Batcher sends it again.
var decideScript = redis.NewScript(decideSource)

// KeyPrefix starts every key this package writes.
const KeyPrefix = "caddy-gateway:rl:"

// StateKey names the Redis key of one rate-limit key in a zone under a
// limit. The key is hashed: Redis never holds key material.
func StateKey(zone string, l limiter.Limit, key string) string {
	return DigestOf(key).StateKey(ZoneSuffix(zone, l))
}

// Digest is what Redis and the nodes know of a rate-limit key: the first
// 16 bytes of its SHA-256, the same on every node.
type Digest [16]byte

// DigestOf returns the digest of a rate-limit key.
func DigestOf(key string) Digest {
	sum := sha256.Sum256([]byte(key))
	return Digest(sum[:16])
}

// ParseDigest reads a digest written by String.
func ParseDigest(s string) (Digest, error) {
	var d Digest
	if hex.DecodedLen(len(s)) != len(d) {
		return d, fmt.Errorf("a key digest has %d hex digits, not %d", 2*len(d), len(s))
	}
	_, err := hex.Decode(d[:], []byte(s))
	return d, err
}

func (d Digest) String() string { return hex.EncodeToString(d[:]) }

// ZoneSuffix is what follows the digest in the Redis keys of a zone
// under a limit: the zone's name, its algorithm and its window. A zone
// whose algorithm or window changes counts afresh, as it does in memory,
// rather than misread a state kept under the old ones.
func ZoneSuffix(zone string, l limiter.Limit) string {
	return fmt.Sprintf("}:%s:%d.%d", zone, l.Algorithm, l.Window.Microseconds())
}

// StateKey names the Redis key of the digest's key in a zone, given by
// its ZoneSuffix. The digest is the key's hash tag: in a Redis Cluster,
// every zone's state of one rate-limit key lies in one slot, so one script
// decides a request whose zones share a key. The tag comes before the
// zone, so that nothing in a zone's name could be taken for it.
func (d Digest) StateKey(zoneSuffix string) string {
	var sb strings.Builder
	sb.Grow(len(KeyPrefix) + 1 + 2*len(d) + len(zoneSuffix))
	sb.WriteString(KeyPrefix)
	sb.WriteByte('{')
	var h [2 * len(Digest{})]byte
	hex.Encode(h[:], d[:])
	sb.Write(h[:])
	sb.WriteString(zoneSuffix)
	return sb.String()
}

// ZonePattern matches the Redis keys of every key in a zone, whatever its
// limit, for SCAN.
func ZonePattern(zone string) string { return KeyPrefix + "{*}:" + zone + ":*" }

// Short is the digest in 64 bits, for a node's own tables.
func (d Digest) Short() uint64 { return binary.BigEndian.Uint64(d[:8]) }

// Request is one zone's part of a decision.
type Request struct {
	StateKey string
	Limit    limiter.Limit
	// Params, when set, are ParamsOf(Limit), made once for a zone: the
	// limit's numbers, boxed for go-redis, cost three allocations a
	// request otherwise.
	Params *Params
	Cost   int64
	DryRun bool
	// Peek decides at Cost and charges nothing, as for a request that
	// another key refused already: the answer still says when this zone
	// would admit it. One zone that peeks makes its whole request peek.
	Peek bool
}

// Params are a limit's arguments to the script: algorithm, events, window
// in µs and capacity.
type Params [4]any

// ParamsOf returns a limit's arguments to the script.
func ParamsOf(l limiter.Limit) *Params {
	return &Params{int(l.Algorithm), l.Events, l.Window.Microseconds(), l.Capacity()}
}

// batch is the arguments of one script call, which decides the requests
// added to it in order.
type batch struct {
	keys  []string
	args  []any
	n     int            // requests added
	index map[string]int // a key's place in keys, once there are many
}

func (b *batch) start(now int64) {
	b.keys, b.n, b.index = b.keys[:0], 0, nil
	b.args = append(b.args[:0], "", "", 0)
	if now != 0 {
		b.args[0] = strconv.FormatInt(now, 10)
	}
}

// expire has the script decide nothing when it runs after at, in Unix
// microseconds on the server's clock.
func (b *batch) expire(at int64) { b.args[1] = strconv.FormatInt(at, 10) }

func (b *batch) add(reqs []Request) {
	b.n++
	b.args[2] = b.n
	b.args = append(b.args, len(reqs))
	for _, r := range reqs {
		flags := 0
		if r.DryRun {
			flags = 1
		}
		if r.Peek {
			flags += 2
		}
		p := r.Params
		if p == nil {
			p = ParamsOf(r.Limit)
		}
		b.args = append(b.args, b.keyIndex(r.StateKey))
		b.args = append(b.args, p[:]...)
		b.args = append(b.args, r.Cost, flags)
	}
}

// keyIndex returns the place of a key in KEYS, counted from 1 as Lua
// does, adding it the first time.
func (b *batch) keyIndex(key string) int {
	if b.index == nil {
		for i, k := range b.keys {
			if k == key {
				return i + 1
			}
		}
		if len(b.keys) < 16 {
			b.keys = append(b.keys, key)
			return len(b.keys)
		}
		b.index = make(map[string]int, 2*len(b.keys))
		for i, k := range b.keys {
			b.index[k] = i + 1
		}
	}
	if i, ok := b.index[key]; ok {
		return i
	}
	b.keys = append(b.keys, key)
	b.index[key] = len(b.keys)
	return len(b.keys)
}

// replyLen is how many values the script returns for a request with n
// zones.
func replyLen(n int) int { return 1 + 5*n }

// decode reads one request's part of the script's reply.
func decode(v []int64, reqs []Request, out []limiter.Decision) (bool, error) {
	if len(v) != replyLen(len(reqs)) {
		return false, fmt.Errorf("rate-limit script returned %d values for %d zones", len(v), len(reqs))
	}
	for i := range reqs {
		z := v[1+5*i:]
		out[i] = limiter.Decision{
			Allowed:    z[0] == 1,
			Remaining:  z[1],
			Reset:      micros(z[2]),
			RetryAfter: micros(z[3]),
			Wait:       micros(z[4]),
		}
	}
	return v[0] == 1, nil
}

func micros(us int64) time.Duration {
	if us < 0 {
		return time.Duration(1<<63 - 1) // never
	}
	return time.Duration(us) * time.Microsecond
}
