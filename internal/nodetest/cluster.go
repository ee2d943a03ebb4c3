// Package nodetest starts in-process capkv clusters for tests and examples:
// real nodes (real Badger directories, real gRPC on loopback ports) in one
// process, with a shared fault table on their Raft traffic.
package nodetest

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/internal/fault"
	"github.com/capkv/capkv/internal/node"
	"github.com/capkv/capkv/ring"
)

// Options shape a test cluster.
type Options struct {
	Nodes     int
	Regions   []string              // assigned round-robin; default "eu"
	Keyspaces []ring.KeyspaceConfig // default: accounts (cp) and sessions (ap)
	// Configure adjusts each node's config before it starts.
	Configure func(*node.Config)
}

// DefaultKeyspaces are the keyspaces `kvd dev` defines.
func DefaultKeyspaces() []ring.KeyspaceConfig {
	return []ring.KeyspaceConfig{
		{Name: "accounts", Mode: consistency.CP, Replicas: 3, Partitions: 8, Template: "accounts/{region}/{account}/..."},
		{Name: "sessions", Mode: consistency.AP, Replicas: 3, Partitions: 8, Template: "sessions/{session}/..."},
	}
}

// Cluster is a running in-process cluster.
type Cluster struct {
	Faults *fault.Table
	Peers  []ring.Node
	Nodes  []*node.Node
	dir    string
	once   sync.Once
}

// Start starts a cluster; call Close when done. dir is created if empty.
func Start(o Options) (*Cluster, error) {
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	if len(o.Regions) == 0 {
		o.Regions = []string{"eu"}
	}
	if o.Keyspaces == nil {
		o.Keyspaces = DefaultKeyspaces()
	}
	dir, err := os.MkdirTemp("", "capkv-nodetest-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{Faults: fault.NewTable(), dir: dir}
	var lis []net.Listener
	for i := range o.Nodes {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			for _, l := range lis {
				l.Close()
			}
			return nil, err
		}
		lis = append(lis, l)
		c.Peers = append(c.Peers, ring.Node{ID: fmt.Sprintf("n%d", i+1), Addr: l.Addr().String(), Region: o.Regions[i%len(o.Regions)]})
	}
	for i, p := range c.Peers {
		cfg := node.DefaultConfig()
		cfg.ID, cfg.Listen, cfg.Region, cfg.DataDir = p.ID, p.Addr, p.Region, filepath.Join(dir, p.ID)
		cfg.Peers, cfg.Keyspaces, cfg.Faults = c.Peers, o.Keyspaces, c.Faults
		if o.Configure != nil {
			o.Configure(&cfg)
		}
		n, err := node.New(cfg)
		if err == nil {
			err = n.Start(lis[i])
		}
		if err != nil {
			for _, l := range lis[i:] {
				l.Close()
			}
			c.Close()
			return nil, err
		}
		c.Nodes = append(c.Nodes, n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, n := range c.Nodes {
		if err := n.WaitReady(ctx); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// Endpoints lists the nodes' addresses.
func (c *Cluster) Endpoints() []string {
	var out []string
	for _, p := range c.Peers {
		out = append(out, p.Addr)
	}
	return out
}

// IDs lists the node IDs.
func (c *Cluster) IDs() []string {
	var out []string
	for _, p := range c.Peers {
		out = append(out, p.ID)
	}
	return out
}

// Close stops every node and removes the data.
func (c *Cluster) Close() {
	c.once.Do(func() {
		var wg sync.WaitGroup
		for _, n := range c.Nodes {
			wg.Add(1)
			go func() { defer wg.Done(); n.Close() }()
		}
		wg.Wait()
		os.RemoveAll(c.dir)
	})
}
