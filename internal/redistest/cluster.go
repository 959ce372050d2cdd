package redistest

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// Cluster is a Redis Cluster of masters without replicas that a test
// started on loopback ports.
type Cluster struct {
	Nodes []*Server
	// URL names every node, as the gateway's redis option reads it.
	URL string
}

// StartCluster starts n redis-servers in cluster mode, gives each a share
// of the 16384 slots, joins them, and waits until every node says the
// cluster is ok.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	c := &Cluster{}
	var addrs []string
	for range n {
		s := startOn(t, freePort(t, 10000), []string{"--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000"})
		c.Nodes = append(c.Nodes, s)
		addrs = append(addrs, s.Addr)
	}
	c.URL = "redis+cluster://" + strings.Join(addrs, ",")
	for i, s := range c.Nodes {
		first, last := i*16384/n, (i+1)*16384/n-1
		s.Do("CLUSTER", "ADDSLOTSRANGE", fmt.Sprint(first), fmt.Sprint(last))
		s.Do("CLUSTER", "SET-CONFIG-EPOCH", fmt.Sprint(i+1))
	}
	for _, s := range c.Nodes[1:] {
		host, port, _ := strings.Cut(s.Addr, ":")
		c.Nodes[0].Do("CLUSTER", "MEET", host, port)
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, s := range c.Nodes {
		for !strings.Contains(s.Do("CLUSTER", "INFO"), "cluster_state:ok") {
			if time.Now().After(deadline) {
				t.Fatalf("the cluster did not come up on %s: %s", s.Addr, s.Do("CLUSTER", "INFO"))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return c
}

// Calls sums, over the nodes, how many times each ran the commands.
func (c *Cluster) Calls(commands ...string) int {
	n := 0
	for _, s := range c.Nodes {
		n += s.Calls(commands...)
	}
	return n
}

// Sentinel is a master, a replica and a sentinel that watches them.
type Sentinel struct {
	Master, Replica, Sentinel *Server
	// URL names the sentinel and the master's name, as the gateway's
	// redis option reads it.
	URL string
}

// SentinelMaster is the name the sentinel knows the master by.
const SentinelMaster = "gw"

// StartSentinel starts a master, a replica of it, and a sentinel that
// monitors the master under SentinelMaster with a quorum of one and
// fails over a second after the master stops answering.
func StartSentinel(t testing.TB) *Sentinel {
	t.Helper()
	// The master syncs its replica at once, not after diskless
	// replication's default wait of five seconds for more replicas.
	m := startOn(t, freePort(t, 0), []string{"--repl-diskless-sync-delay", "0"})
	mhost, mport, _ := strings.Cut(m.Addr, ":")
	r := startOn(t, freePort(t, 0), []string{"--replicaof", mhost, mport})
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(r.Do("INFO", "replication"), "master_link_status:up") {
		if time.Now().After(deadline) {
			t.Fatal("the replica did not sync with its master")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A Sentinel learns of replicas from its master's INFO, which it asks
	// for at once and then every ten seconds: start it once the replica
	// is there, and wait until it knows, or it could find nothing to
	// promote.
	s := startOn(t, freePort(t, 0), []string{"--sentinel",
		fmt.Sprintf("sentinel monitor %s %s %s 1", SentinelMaster, mhost, mport),
		fmt.Sprintf("sentinel down-after-milliseconds %s 1000", SentinelMaster),
		fmt.Sprintf("sentinel failover-timeout %s 5000", SentinelMaster),
	})
	for !strings.Contains(s.Do("INFO", "sentinel"), "slaves=1") {
		if time.Now().After(deadline) {
			t.Fatalf("the Sentinel did not learn of the replica: %s", s.Do("INFO", "sentinel"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	return &Sentinel{Master: m, Replica: r, Sentinel: s, URL: fmt.Sprintf("redis+sentinel://%s/%s", s.Addr, SentinelMaster)}
}

// Owner returns the index of the node that StartCluster gave a slot.
func (c *Cluster) Owner(slot int) int {
	n := len(c.Nodes)
	for i := range n {
		if slot <= (i+1)*16384/n-1 {
			return i
		}
	}
	return n - 1
}

// MoveSlot gives a slot that holds no key to the node at index to, as the
// last step of a resharding does: the new owner claims it under a new
// epoch, and every other node is told.
func (c *Cluster) MoveSlot(t testing.TB, slot, to int) {
	t.Helper()
	id := c.Nodes[to].Do("CLUSTER", "MYID")
	c.Nodes[to].Do("CLUSTER", "SETSLOT", fmt.Sprint(slot), "NODE", id)
	c.Nodes[to].Do("CLUSTER", "BUMPEPOCH")
	for i, s := range c.Nodes {
		if i != to {
			s.Do("CLUSTER", "SETSLOT", fmt.Sprint(slot), "NODE", id)
		}
	}
}
