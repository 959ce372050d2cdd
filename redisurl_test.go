package gateway

import (
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestParseRedisURL(t *testing.T) {
	tests := []struct {
		url, display string
		check        func(t *testing.T, r *redisTarget)
	}{
		{"redis://u:p@h:7000/2", "redis://h:7000/2", func(t *testing.T, r *redisTarget) {
			if r.single == nil || r.single.Username != "u" || r.single.Password != "p" || r.single.DB != 2 {
				t.Errorf("%+v", r.single)
			}
		}},
		{"rediss://h", "rediss://h:6379/0", func(t *testing.T, r *redisTarget) {
			if r.single.TLSConfig == nil {
				t.Error("no TLS")
			}
		}},
		{"unix:///run/redis.sock?db=3", "unix:///run/redis.sock?db=3", nil},
		{"redis+cluster://a:7000,b:7001,[::1]:7002", "redis+cluster://a:7000,b:7001,[::1]:7002", func(t *testing.T, r *redisTarget) {
			if got := strings.Join(r.cluster.Addrs, " "); got != "a:7000 b:7001 [::1]:7002" {
				t.Errorf("addrs %s", got)
			}
		}},
		{"rediss+cluster://u:p%40ss@a,b?pool_size=7", "rediss+cluster://a:6379,b:6379", func(t *testing.T, r *redisTarget) {
			o := r.cluster
			if o.Username != "u" || o.Password != "p@ss" || o.TLSConfig == nil || o.PoolSize != 7 || len(o.Addrs) != 2 {
				t.Errorf("%+v", o)
			}
		}},
		{"redis+sentinel://:secret@s1:26380,s2/mymaster/1?sentinel_password=watch", "redis+sentinel://s1:26380,s2:26379/mymaster/1", func(t *testing.T, r *redisTarget) {
			o := r.sentinel
			if o.MasterName != "mymaster" || o.DB != 1 || o.Password != "secret" || o.SentinelPassword != "watch" ||
				strings.Join(o.SentinelAddrs, " ") != "s1:26380 s2:26379" {
				t.Errorf("%+v", o)
			}
		}},
		{"redis+sentinel://s/m", "redis+sentinel://s:26379/m/0", func(t *testing.T, r *redisTarget) {
			if r.sentinel.Password != "" || r.sentinel.SentinelPassword != "" {
				t.Errorf("%+v", r.sentinel)
			}
		}},
	}
	for _, tt := range tests {
		r, err := parseRedisURL(tt.url)
		if err != nil {
			t.Errorf("%s: %v", tt.url, err)
			continue
		}
		if r.display != tt.display {
			t.Errorf("%s: shown as %s, want %s", tt.url, r.display, tt.display)
		}
		if tt.check != nil {
			t.Run(tt.url, func(t *testing.T) { tt.check(t, r) })
		}
		// The handler's timeout bounds everything, whatever the URL said.
		c := r.newClient(1234*time.Millisecond, &redisClient{})
		var timeouts []time.Duration
		switch c := c.(type) {
		case *redis.ClusterClient:
			o := c.Options()
			timeouts = []time.Duration{o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout}
		case *redis.Client:
			o := c.Options()
			timeouts = []time.Duration{o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout}
		}
		for _, d := range timeouts {
			if d != 1234*time.Millisecond {
				t.Errorf("%s: a timeout of %v, want the handler's", tt.url, d)
			}
		}
		if len(timeouts) == 0 {
			t.Errorf("%s: a %T", tt.url, c)
		}
		c.Close()
	}

	bad := map[string]string{
		"http://h":                      "unknown scheme",
		"h:6379":                        "want redis://",
		"redis+ring://h":                "unknown scheme",
		"redis+cluster://a,,b":          "empty host",
		"redis+cluster://a/1":           "no database",
		"redis+sentinel://s":            "path is /master",
		"redis+sentinel://s/m/x":        "invalid database",
		"redis+sentinel://s/m/1/2":      "path is /master",
		"redis+cluster://a?bogus=1":     "bogus",
		"redis+sentinel://s/m?bogus=1":  "bogus",
		"redis://h/notanumber":          "invalid database",
		"redis+cluster://u:p@a:notport": "",
		"redis+sentinel://s/m?db=2":     "in the path",
	}
	for url, want := range bad {
		_, err := parseRedisURL(url)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want one that says %q", url, err, want)
		}
	}
	// An error never quotes the password.
	for _, url := range []string{"redis://u:s3cret@h:port/0", "redis+cluster://u:s3cret@a:1/%zz", "redis+sentinel://u:s3cret@s:notport/m",
		"redis+cluster://u:s3cret%zz@a:1", "redis+sentinel://u:s3cret%zz@s/m", "redis+sentinel://s/m?sentinel_password=s3cret%zz",
		"redis://:s3cret%zz@h:6379/0", "redis://:s3/cret@h:6379", "redis+cluster://:s3/cret@a:1", "rediss://u:s3?cret@h", "redis://u:s3#cret@h"} {
		if _, err := parseRedisURL(url); err == nil || strings.Contains(err.Error(), "s3") || strings.Contains(err.Error(), "cret") || strings.Contains(err.Error(), "%zz") {
			t.Errorf("%s: error %v", url, err)
		}
	}
	// Over TLS, each node's certificate is checked against that node.
	for _, url := range []string{"rediss+cluster://a:1,b:2", "rediss+sentinel://s:1/m"} {
		r, _ := parseRedisURL(url)
		if (r.cluster != nil && r.cluster.TLSConfig.ServerName != "") || (r.sentinel != nil && r.sentinel.TLSConfig.ServerName != "") {
			t.Errorf("%s: every node checked as the first one", url)
		}
	}
}
