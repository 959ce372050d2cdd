package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisTarget is what a Redis URL names: one server, a Redis Cluster, or
// the master that Sentinels name; exactly one of the three is set.
type redisTarget struct {
	single   *redis.Options
	cluster  *redis.ClusterOptions
	sentinel *redis.FailoverOptions
	display  string // the URL without credentials
}

// parseRedisURL reads the URL forms of the redis options:
//
//	redis://[user:password@]host:port[/db][?option=value...]
//	unix://[user:password@]/path/to/socket[?db=db&option=value...]
//	redis+cluster://[user:password@]host:port[,host:port...][?option=value...]
//	redis+sentinel://[user:password@]host:port[,host:port...]/master[/db][?option=value...]
//
// each also as rediss for TLS. A cluster URL names some of the nodes,
// which tell the client of the others; a cluster has only database 0. A
// sentinel URL names the Sentinels and the master's name; the user and
// password are the master's, and the Sentinels' own, if any, are the
// options sentinel_username and sentinel_password. A missing port is 6379
// for a node and 26379 for a Sentinel. The other options are go-redis'
// (dial_timeout, pool_size, ...); the handler's timeout overrides the
// timeouts among them.
func parseRedisURL(raw string) (*redisTarget, error) {
	t, err := parseRedisTarget(raw)
	var urlErr *url.Error
	if errors.As(err, &urlErr) {
		if strings.Contains(raw, "@") {
			// Even without the URL it could quote a piece of the password,
			// as far as it read it ("invalid port \":pa\" after host").
			return nil, errUserinfo
		}
		err = urlErr.Err // it quotes the URL
	}
	return t, err
}

// errUserinfo says why a URL with a user or password could not be read,
// quoting nothing of it.
var errUserinfo = errors.New("the URL cannot be read: percent-encode its user and password ('%' as %25, '/' as %2F, '?' as %3F, '#' as %23, '@' as %40, ':' in the user as %3A)")

func parseRedisTarget(raw string) (*redisTarget, error) {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return nil, errors.New("want redis://, rediss://, unix://, redis+cluster:// or redis+sentinel://")
	}
	if scheme == "unix" {
		opts, err := redis.ParseURL(raw)
		if err != nil {
			return nil, err
		}
		return &redisTarget{single: opts, display: fmt.Sprintf("unix://%s?db=%d", opts.Addr, opts.DB)}, nil
	}
	base, mode, _ := strings.Cut(scheme, "+")
	if base != "redis" && base != "rediss" || mode != "" && mode != "cluster" && mode != "sentinel" {
		return nil, fmt.Errorf("unknown scheme %q: want redis, rediss, redis+cluster, rediss+cluster, redis+sentinel or rediss+sentinel", scheme)
	}
	if mode == "" {
		opts, err := redis.ParseURL(raw)
		if err != nil {
			return nil, err
		}
		return &redisTarget{single: opts, display: fmt.Sprintf("%s://%s/%d", base, opts.Addr, opts.DB)}, nil
	}

	// go-redis reads one host and more in addr options; our URLs list
	// them in the host part, as operators write them.
	userinfo, hostlist, tail := splitAuthority(rest)
	defaultPort := "6379"
	if mode == "sentinel" {
		defaultPort = "26379"
	}
	var hosts []string
	for _, h := range strings.Split(hostlist, ",") {
		if h == "" {
			return nil, fmt.Errorf("an empty host in %q", hostlist)
		}
		if _, _, err := net.SplitHostPort(h); err != nil {
			h = net.JoinHostPort(strings.Trim(h, "[]"), defaultPort)
		}
		hosts = append(hosts, h)
	}
	u, err := url.Parse(base + "://" + hosts[0] + tail)
	if err != nil {
		return nil, err
	}
	if userinfo != "" {
		parsed, err := url.Parse(base + "://" + userinfo + "@" + hosts[0])
		if err != nil {
			// Not err: it quotes the password, or a piece of it.
			return nil, errUserinfo
		}
		u.User = parsed.User
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		// Not err: it may quote sentinel_password.
		return nil, errors.New("the options are not a valid URL query: percent-encode '%' as %25 and '&' as %26")
	}
	for _, h := range hosts[1:] {
		q.Add("addr", h)
	}

	if mode == "cluster" {
		if strings.Trim(u.Path, "/") != "" {
			return nil, fmt.Errorf("a cluster URL has no database (path %q): Redis Cluster has only database 0", u.Path)
		}
		u.Path, u.RawQuery = "", q.Encode()
		opts, err := redis.ParseClusterURL(u.String())
		if err != nil {
			return nil, err
		}
		if opts.TLSConfig != nil {
			opts.TLSConfig.ServerName = "" // each node's certificate names that node
		}
		return &redisTarget{cluster: opts, display: fmt.Sprintf("%s+cluster://%s", base, strings.Join(hosts, ","))}, nil
	}

	path := strings.Split(strings.Trim(u.Path, "/"), "/")
	if path[0] == "" || len(path) > 2 {
		return nil, fmt.Errorf("a sentinel URL's path is /master or /master/db, not %q", u.Path)
	}
	master, db := path[0], 0
	if len(path) == 2 {
		if db, err = strconv.Atoi(path[1]); err != nil || db < 0 {
			return nil, fmt.Errorf("invalid database number %q", path[1])
		}
	}
	if q.Has("db") {
		return nil, errors.New("a sentinel URL gives its database in the path (/master/db), not as an option")
	}
	sentinelUser, sentinelPassword := q.Get("sentinel_username"), q.Get("sentinel_password")
	q.Del("sentinel_username")
	q.Del("sentinel_password")
	q.Set("master_name", master)
	q.Set("db", strconv.Itoa(db))
	user := u.User
	u.User, u.Path, u.RawQuery = nil, "", q.Encode()
	opts, err := redis.ParseFailoverURL(u.String())
	if err != nil {
		return nil, err
	}
	opts.SentinelUsername, opts.SentinelPassword = sentinelUser, sentinelPassword
	if opts.TLSConfig != nil {
		opts.TLSConfig.ServerName = "" // each Sentinel's and the master's certificate names it
	}
	if user != nil {
		opts.Username = user.Username()
		opts.Password, _ = user.Password()
	}
	return &redisTarget{sentinel: opts, display: fmt.Sprintf("%s+sentinel://%s/%s/%d", base, strings.Join(hosts, ","), master, db)}, nil
}

// splitAuthority splits what follows a URL's "scheme://" into its user
// and password, its hosts, and the path and query after them.
func splitAuthority(rest string) (userinfo, hosts, tail string) {
	authority := rest
	if i := strings.IndexAny(rest, "/?"); i >= 0 {
		authority, tail = rest[:i], rest[i:]
	}
	hosts = authority
	if i := strings.LastIndexByte(authority, '@'); i >= 0 {
		userinfo, hosts = authority[:i], authority[i+1:]
	}
	return userinfo, hosts, tail
}

// db returns the database the target names: a cluster has only 0.
func (t *redisTarget) db() int {
	switch {
	case t.cluster != nil:
		return 0
	case t.sentinel != nil:
		return t.sentinel.DB
	}
	return t.single.DB
}

// newClient makes the client, with timeout bounding every dial and
// command and no retry (a retry would outlast the timeout); hooks watches
// the dials of every connection it makes.
func (t *redisTarget) newClient(timeout time.Duration, hooks redis.Hook) redis.UniversalClient {
	switch {
	case t.cluster != nil:
		o := t.cluster
		o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout = timeout, timeout, timeout, timeout
		o.ContextTimeoutEnabled = true
		o.MaxRetries = -1
		c := redis.NewClusterClient(o)
		c.OnNewNode(func(node *redis.Client) { node.AddHook(hooks) })
		return c
	case t.sentinel != nil:
		o := t.sentinel
		o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout = timeout, timeout, timeout, timeout
		o.ContextTimeoutEnabled = true
		o.MaxRetries = -1
		c := redis.NewFailoverClient(o)
		c.AddHook(hooks)
		return c
	}
	o := t.single
	o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout = timeout, timeout, timeout, timeout
	o.ContextTimeoutEnabled = true
	o.MaxRetries = -1
	c := redis.NewClient(o)
	c.AddHook(hooks)
	return c
}

// forEachMaster calls f with the one Redis, or, concurrently, with each
// master of a Redis Cluster: what lives on every node, such as a scan's
// keys, must be asked of each.
func (c *redisClient) forEachMaster(ctx context.Context, f func(context.Context, redis.Cmdable) error) error {
	if cc, ok := c.UniversalClient.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error { return f(ctx, node) })
	}
	return f(ctx, c.UniversalClient)
}

// reloadSlots has a cluster client learn again which node serves which
// slot, in the background; other clients have nothing to learn.
func (c *redisClient) reloadSlots() {
	if cc, ok := c.UniversalClient.(*redis.ClusterClient); ok {
		cc.ReloadState(context.Background())
	}
}

// subscribe subscribes to a channel, and publish publishes on one, each
// sharded in a cluster: a Redis Cluster forwards a classic PUBLISH to every
// node but counts only the receivers on the node that ran it, while
// sharded pub/sub keeps a channel's publishers and subscribers on the node
// of its slot, so the count, which the bus waits for, is every receiver.
func (c *redisClient) subscribe(ctx context.Context, channel string) *redis.PubSub {
	if c.cluster {
		return c.SSubscribe(ctx, channel)
	}
	return c.Subscribe(ctx, channel)
}

func (c *redisClient) publish(ctx context.Context, channel string, msg []byte) *redis.IntCmd {
	if c.cluster {
		return c.SPublish(ctx, channel, msg)
	}
	return c.Publish(ctx, channel, msg)
}

// ping checks that Redis answers: every master of a cluster.
func (c *redisClient) ping(ctx context.Context) error {
	return c.forEachMaster(ctx, func(ctx context.Context, node redis.Cmdable) error { return node.Ping(ctx).Err() })
}
