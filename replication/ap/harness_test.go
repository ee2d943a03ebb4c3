package ap

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/internal/kverrors"
	"github.com/capkv/capkv/shard"
)

// The test harness: a few nodes in one process, each with its own Badger
// store in t.TempDir(), a ClockStore, a HintStore and a Coordinator. They
// reach each other through tcluster, an in-process Peers (and
// AntiEntropyPeers) that serves a call on the target node the way
// internal/node's replicaServer does, unless the target is switched to fail
// fast, hang until the call's context ends, or answer after a delay.

const testPartition = "ks/0"

// base is the fake wall clock's origin: realistic, so that HLC arithmetic
// (cutoff = now - grace) never underflows.
var base = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

type mode int

const (
	modeUp    mode = iota
	modeDown       // fail fast with ErrUnavailable
	modeHang       // block until the call's context ends (or the harness is released)
	modeDelay      // answer after the node's delay
)

type tnode struct {
	id     string
	st     *shard.Store
	clocks *ClockStore
	hints  *HintStore
	coord  *Coordinator
	hlc    *consistency.Clock
	wall   atomic.Int64 // fake wall clock: milliseconds after base
}

type tcluster struct {
	t         testing.TB
	replicas  []string
	fallbacks []string
	nodes     map[string]*tnode // fixed after newCluster

	mu     sync.Mutex
	modes  map[string]mode
	delays map[string]time.Duration
	calls  map[string]int // "op:node" -> calls (whatever their outcome)
	stores []storeCall    // Store calls that reached a node

	// beforePurge, when set, runs before a node serves a Purge (to change
	// the node's state between a repair's push and its purge).
	beforePurge func(node, key string)

	release     chan struct{} // closed: hung calls return
	releaseOnce sync.Once
}

type storeCall struct{ node, key, hintFor string }

// openStore opens a small shard.Store in a fresh temporary directory. Writes
// are not fsynced: the tests check logic, not durability.
func openStore(t testing.TB) *shard.Store {
	t.Helper()
	o := shard.DefaultOptions(t.TempDir())
	o.SyncWrites = false
	o.MemTableSize = 2 << 20
	o.BlockCacheSize = 1 << 20
	o.IndexCacheSize = 1 << 20
	o.MaxValueSize = 64 << 10
	o.ValueLogFileSize = 4 << 20
	o.ValueLogGCInterval = -1
	st, err := shard.Open(o)
	if err != nil {
		t.Fatalf("shard.Open: %v", err)
	}
	return st
}

// newCluster starts replicas and fallbacks as nodes, all up.
func newCluster(t testing.TB, replicas, fallbacks []string) *tcluster {
	t.Helper()
	c := &tcluster{
		t: t, replicas: replicas, fallbacks: fallbacks, nodes: map[string]*tnode{},
		modes: map[string]mode{}, delays: map[string]time.Duration{}, calls: map[string]int{},
		release: make(chan struct{}),
	}
	for _, id := range slices.Concat(replicas, fallbacks) {
		n := &tnode{id: id, st: openStore(t)}
		n.clocks = NewClockStore(n.st)
		n.hints = NewHintStore(n.st)
		n.hlc = consistency.NewClock(func() time.Time { return base.Add(time.Duration(n.wall.Load()) * time.Millisecond) }, 0)
		n.coord = NewCoordinator(id, n.clocks, n.hints, c, nil)
		n.coord.Clock = n.hlc
		c.nodes[id] = n
	}
	t.Cleanup(func() {
		c.releaseHangs()
		for _, n := range c.nodes {
			n.coord.Close()
		}
		for _, n := range c.nodes {
			if err := n.st.Close(); err != nil {
				t.Errorf("close store of %s: %v", n.id, err)
			}
		}
	})
	return c
}

func (c *tcluster) node(id string) *tnode {
	n := c.nodes[id]
	if n == nil {
		c.t.Fatalf("no node %q", id)
	}
	return n
}

// set switches nodes to a mode.
func (c *tcluster) set(m mode, ids ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range ids {
		c.modes[id] = m
	}
}

func (c *tcluster) setDelay(id string, d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.modes[id], c.delays[id] = modeDelay, d
}

// advance moves every node's wall clock forward.
func (c *tcluster) advance(d time.Duration) {
	for _, n := range c.nodes {
		n.wall.Add(d.Milliseconds())
	}
}

func (c *tcluster) releaseHangs() { c.releaseOnce.Do(func() { close(c.release) }) }

// settle waits for every coordinator's background stores and repairs.
func (c *tcluster) settle() {
	for _, n := range c.nodes {
		n.coord.Close()
	}
}

func (c *tcluster) callCount(op, node string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[op+":"+node]
}

func (c *tcluster) storesTo(node string) []storeCall {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []storeCall
	for _, s := range c.stores {
		if s.node == node {
			out = append(out, s)
		}
	}
	return out
}

// enter applies the target's mode to one call and returns the node to serve it.
func (c *tcluster) enter(ctx context.Context, op, node string) (*tnode, error) {
	c.mu.Lock()
	m, d := c.modes[node], c.delays[node]
	c.calls[op+":"+node]++
	c.mu.Unlock()
	n := c.nodes[node]
	if n == nil {
		return nil, fmt.Errorf("%w: no node %q", kverrors.ErrUnavailable, node)
	}
	switch m {
	case modeDown:
		return nil, fmt.Errorf("%w: %s is down", kverrors.ErrUnavailable, node)
	case modeHang:
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %s did not answer: %w", kverrors.ErrIndeterminate, node, ctx.Err())
		case <-c.release:
			return nil, fmt.Errorf("%w: %s: connection closed", kverrors.ErrUnavailable, node)
		}
	case modeDelay:
		tm := time.NewTimer(d)
		defer tm.Stop()
		select {
		case <-tm.C:
		case <-c.release:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %s did not answer: %w", kverrors.ErrIndeterminate, node, ctx.Err())
		}
	}
	return n, nil
}

// Store serves a ReplicaStoreRequest as internal/node's replicaServer does.
func (c *tcluster) Store(ctx context.Context, node string, req *api.ReplicaStoreRequest) (*api.ReplicaStoreResponse, error) {
	n, err := c.enter(ctx, "store", node)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.stores = append(c.stores, storeCall{node, req.GetKey(), req.GetHintFor()})
	c.mu.Unlock()
	d, err := consistency.DecodeDVV(req.GetClock())
	if err != nil {
		return nil, fmt.Errorf("%w: %v", kverrors.ErrInvalidArgument, err)
	}
	for _, s := range d.Values() {
		n.hlc.Update(s.Timestamp)
	}
	if req.GetHintFor() != "" {
		if err := n.hints.Add(req.GetHintFor(), req.GetPartition(), req.GetKey(), d, req.GetLww()); err != nil {
			return nil, err
		}
		return &api.ReplicaStoreResponse{}, nil
	}
	merged, err := n.clocks.Merge(req.GetPartition(), req.GetKey(), d, req.GetLww())
	if err != nil {
		return nil, err
	}
	return &api.ReplicaStoreResponse{Clock: merged.Encode(nil)}, nil
}

func (c *tcluster) Fetch(ctx context.Context, node string, req *api.ReplicaFetchRequest) (*api.ReplicaFetchResponse, error) {
	n, err := c.enter(ctx, "fetch", node)
	if err != nil {
		return nil, err
	}
	d, found, err := n.clocks.Read(req.GetPartition(), req.GetKey())
	if err != nil {
		return nil, err
	}
	return &api.ReplicaFetchResponse{Clock: d.Encode(nil), Found: found}, nil
}

func (c *tcluster) Digest(ctx context.Context, node, partition string) ([]uint64, error) {
	n, err := c.enter(ctx, "digest", node)
	if err != nil {
		return nil, err
	}
	return n.clocks.Digest(partition)
}

func (c *tcluster) Leaf(ctx context.Context, node, partition string, leaf uint32) (map[string][]byte, error) {
	n, err := c.enter(ctx, "leaf", node)
	if err != nil {
		return nil, err
	}
	return n.clocks.LeafEntries(partition, leaf)
}

func (c *tcluster) Purge(ctx context.Context, node, partition, key string, clock []byte) (bool, error) {
	n, err := c.enter(ctx, "purge", node)
	if err != nil {
		return false, err
	}
	c.mu.Lock()
	hook := c.beforePurge
	c.mu.Unlock()
	if hook != nil {
		hook(node, key)
	}
	return n.clocks.Purge(partition, key, clock)
}

// handoff runs one handoff round of node id's hints, storing each on its
// target through the cluster (as internal/node's handoffLoop does).
func (c *tcluster) handoff(ctx context.Context, id string) (int, error) {
	return c.node(id).hints.Handoff(ctx, func(ctx context.Context, h Hint) error {
		_, err := c.Store(ctx, h.Target, &api.ReplicaStoreRequest{Partition: h.Partition, Key: h.Key, Clock: h.Clock.Encode(nil)})
		return err
	})
}

// wr builds a write of key through the cluster's preference list.
func (c *tcluster) wr(key, value string, level consistency.Level) WriteRequest {
	return WriteRequest{Partition: testPartition, Key: key, Replicas: c.replicas, Fallbacks: c.fallbacks, Level: level,
		Value: consistency.Value{Data: []byte(value)}}
}

func (c *tcluster) rd(key string, level consistency.Level) ReadRequest {
	return ReadRequest{Partition: testPartition, Key: key, Replicas: c.replicas, Level: level}
}

// clock is node id's stored clock of key.
func (c *tcluster) clock(id, key string) consistency.DVV {
	c.t.Helper()
	d, _, err := c.node(id).clocks.Read(testPartition, key)
	if err != nil {
		c.t.Fatalf("read %s on %s: %v", key, id, err)
	}
	return d
}

// values is node id's live values of key, sorted.
func (c *tcluster) values(id, key string) []string { return live(c.clock(id, key)) }

// dump is every key of the partition on node id with its encoded clock.
func (c *tcluster) dump(id string) map[string]string {
	return dumpStore(c.t, c.node(id).clocks, testPartition)
}

func dumpStore(t testing.TB, s *ClockStore, partition string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := s.st.Replica(partition).Scan("", "", 0, true, func(k string, rec shard.Record) bool {
		out[k] = string(rec.Value)
		return true
	})
	if err != nil {
		t.Fatalf("scan: %v", err)
	}
	return out
}

// live is a clock's live values, sorted.
func live(d consistency.DVV) []string {
	out := []string{}
	for _, s := range d.Live() {
		out = append(out, string(s.Data))
	}
	slices.Sort(out)
	return out
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// mint is a clock written by node with context ctx over d (a test shortcut
// for a coordinator's write).
func mint(t testing.TB, d consistency.DVV, ctx consistency.VV, node, data string, ts consistency.Timestamp, tombstone bool) consistency.DVV {
	t.Helper()
	v := consistency.Value{Timestamp: ts, Tombstone: tombstone}
	if !tombstone {
		v.Data = []byte(data)
	}
	out, err := d.Update(ctx, node, v)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func ts(ms int64) consistency.Timestamp {
	return consistency.MakeTimestamp(base.Add(time.Duration(ms)*time.Millisecond).UnixMilli(), 0)
}

var _ AntiEntropyPeers = (*tcluster)(nil)
