package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/internal/dial"
	"github.com/capkv/capkv/internal/failure"
	"github.com/capkv/capkv/internal/kverrors"
	"github.com/capkv/capkv/internal/metrics"
	"github.com/capkv/capkv/internal/watch"
	"github.com/capkv/capkv/replication/ap"
	"github.com/capkv/capkv/replication/cp"
	"github.com/capkv/capkv/ring"
	"github.com/capkv/capkv/shard"
)

// Version is reported by NodeInfo.
const Version = "0.1.0-dev"

// Node is one running kvd. Create with New, run with Start, stop with Close.
type Node struct {
	cfg     Config
	log     *slog.Logger
	store   *shard.Store
	host    *cp.Host
	clocks  *ap.ClockStore
	hints   *ap.HintStore
	apc     *ap.Coordinator
	clock   *consistency.Clock
	fd      *failure.Detector
	watch   *watch.Hub // changes applied here, for Watch streams
	metrics *metrics.Metrics
	health  *health.Server
	started time.Time

	// ringp is the ring of the newest cluster map this node adopted; mapMu
	// serializes adopting. Epoch 0 means no map yet (still joining).
	ringp   atomic.Pointer[ring.Ring]
	mapMu   sync.Mutex
	metaIDs atomic.Pointer[[]string]
	stop    chan struct{}  // closed by Close; ends metaLoop
	faults  *cp.FaultTable // the test-only fault hook's rules (nil: disabled)
	// clockSkew (ns) is added to the wall clock by the test-only fault hook.
	clockSkew atomic.Int64

	srv *grpc.Server
	lis net.Listener
	wg  sync.WaitGroup // the serving goroutine

	mu struct {
		sync.Mutex
		peers  map[string]*grpc.ClientConn // node ID -> connection, dialed lazily
		byAddr map[string]*grpc.ClientConn // join targets, by address
		closed bool
	}

	api.UnimplementedKVServer
	api.UnimplementedAdminServer
}

// New validates cfg, opens the store and builds the ring. It does not listen yet.
func New(cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("node config: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	log = log.With("node", cfg.ID)
	// Check the initial cluster and keyspaces now, so a bad config fails at
	// start-up with every problem listed, not later inside the metadata group.
	if len(cfg.Peers) > 0 {
		if _, err := ring.New(ring.Topology{Nodes: cfg.Peers, Keyspaces: cfg.Keyspaces}, ring.Options{VNodes: cfg.VNodes}); err != nil {
			return nil, fmt.Errorf("initial cluster: %w", err)
		}
	}
	opts := shard.DefaultOptions(cfg.DataDir)
	opts.SyncWrites = cfg.SyncWrites
	opts.MaxKeySize = cfg.MaxKeySize
	opts.MaxValueSize = cfg.MaxValueSize
	opts.MemTableSize = cfg.MemTableSize
	opts.BlockCacheSize = cfg.BlockCacheSize
	opts.Logger = log
	st, err := shard.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("open store in %s: %w", cfg.DataDir, err)
	}
	n := &Node{cfg: cfg, log: log, store: st, stop: make(chan struct{})}
	// The wall clock behind the HLC; the test-only fault hook can skew it.
	n.clock = consistency.NewClock(func() time.Time { return time.Now().Add(time.Duration(n.clockSkew.Load())) }, 0)
	n.mu.peers = make(map[string]*grpc.ClientConn)
	n.mu.byAddr = make(map[string]*grpc.ClientConn)
	if cfg.Faults == nil && cfg.TestFaults {
		n.faults = cp.NewFaultTable()
		cfg.Faults = n.faults
		n.cfg.Faults = n.faults
	}
	net := cp.NewNetwork(cfg.ID, n.peer, cfg.Faults)
	net.HeartbeatPeriod = cfg.Raft.HeartbeatTimeout / 10
	n.clocks, n.hints = ap.NewClockStore(st), ap.NewHintStore(st)
	n.watch = watch.NewHub(0)
	n.clocks.Watch = n.watch
	n.apc = ap.NewCoordinator(cfg.ID, n.clocks, n.hints, apPeers{n}, log)
	n.apc.Clock = n.clock
	n.apc.TombstoneGrace = cfg.TombstoneGrace
	n.host = cp.NewHost(cfg.ID, st, net, filepath.Join(cfg.DataDir, "raft-snapshots"), cfg.Raft, log)
	n.host.Watch = n.watch
	n.fd = failure.New(failure.Config{Interval: cfg.ProbeInterval, DownAfter: cfg.DownAfter,
		Probe: n.probe, Peers: n.otherNodes, OnDown: n.dropPeer, Log: log})
	n.metrics = metrics.New(cfg.ID, n.stateCollector())
	return n, nil
}

// Start serves on lis, or on cfg.Listen when lis is nil, until Close.
func (n *Node) Start(lis net.Listener) error {
	if lis == nil {
		var err error
		lis, err = net.Listen("tcp", n.cfg.Listen)
		if err != nil {
			return fmt.Errorf("listen on %s: %w", n.cfg.Listen, err)
		}
	}
	n.lis = lis
	n.started = time.Now()
	// Until the first map arrives the ring knows the initial cluster (so the
	// metadata group can talk) or only this node, and no keyspaces.
	boot := cfg0Nodes(n.cfg.Peers, ring.Node{ID: n.cfg.ID, Addr: n.advertise(), Region: n.cfg.Region})
	r, err := ring.New(ring.Topology{Nodes: boot}, ring.Options{VNodes: n.cfg.VNodes})
	if err != nil {
		return err
	}
	n.ringp.Store(r)
	if len(n.cfg.Peers) > 0 {
		ids := metaMembers(n.cfg.Peers, n.cfg.MetaSize)
		n.metaIDs.Store(&ids)
	}
	n.srv = grpc.NewServer(append(dial.ServerOptions(), grpc.ChainUnaryInterceptor(n.unaryInterceptor))...)
	api.RegisterKVServer(n.srv, n)
	api.RegisterAdminServer(n.srv, n)
	api.RegisterRaftServer(n.srv, n.host.Network())
	api.RegisterReplicaServer(n.srv, replicaServer{n: n})
	n.health = health.NewServer() // what other nodes' failure detectors probe
	healthpb.RegisterHealthServer(n.srv, n.health)
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := n.srv.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			n.log.Error("grpc server stopped", "err", err)
		}
	}()
	if ids := n.meta(); slices.Contains(ids, n.cfg.ID) {
		if _, err := n.host.Ensure(metaGroupID, ids, n.store.Replica(metaGroupID)); err != nil {
			n.Close()
			return err
		}
	}
	n.wg.Add(4)
	go n.metaLoop()
	go n.handoffLoop()
	go n.antiEntropyLoop()
	go n.detectLoop()
	if len(n.cfg.Join) > 0 {
		if err := n.joinCluster(); err != nil {
			n.Close()
			return err
		}
	}
	n.log.Info("serving", "addr", lis.Addr().String(), "region", n.cfg.Region)
	return nil
}

// cfg0Nodes is the initial cluster, or just this node when joining.
func cfg0Nodes(initial []ring.Node, self ring.Node) []ring.Node {
	if len(initial) > 0 {
		return initial
	}
	return []ring.Node{self}
}

// advertise is the address other nodes reach this one at.
func (n *Node) advertise() string {
	if n.cfg.Advertise != "" {
		return n.cfg.Advertise
	}
	return n.lis.Addr().String()
}

// Epoch is the epoch of the cluster map this node has (0: none yet).
func (n *Node) Epoch() uint64 { return n.r().Epoch() }

// KeyspaceCount is the number of keyspaces in this node's map.
func (n *Node) KeyspaceCount() int { return len(n.r().Keyspaces()) }

// WaitReady waits until the node has a cluster map.
func (n *Node) WaitReady(ctx context.Context) error {
	for n.Epoch() == 0 {
		select {
		case <-ctx.Done():
			return n.ready()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// r is the current ring.
func (n *Node) r() *ring.Ring { return n.ringp.Load() }

// ready fails until this node has a cluster map.
func (n *Node) ready() error {
	if n.r().Epoch() == 0 {
		return fmt.Errorf("%w: node %s has no cluster map yet (joining, or the metadata group has no leader)", kverrors.ErrUnavailable, n.cfg.ID)
	}
	return nil
}

// dialAddr returns a connection to an address outside the map (join targets).
func (n *Node) dialAddr(addr string) (*grpc.ClientConn, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.mu.byAddr == nil {
		return nil, fmt.Errorf("%w: node %s is shutting down", kverrors.ErrUnavailable, n.cfg.ID)
	}
	if c, ok := n.mu.byAddr[addr]; ok {
		return c, nil
	}
	c, err := dial.Conn(addr)
	if err != nil {
		return nil, fmt.Errorf("%w: dial %s: %v", kverrors.ErrInvalidArgument, addr, err)
	}
	n.mu.byAddr[addr] = c
	return c, nil
}

// startGroups starts this node's replica of every placeable cp partition.
func (n *Node) startGroups() error {
	r := n.r()
	for _, ks := range r.Keyspaces() {
		if ks.Mode != consistency.CP {
			continue
		}
		for _, p := range r.Partitions(ks.Name) {
			if p.Err != "" {
				continue
			}
			id := p.ID.String()
			if _, err := n.host.Ensure(id, p.Replicas, n.store.Replica(id)); err != nil {
				return err
			}
		}
	}
	return nil
}

// Addr is the bound listen address (valid after Start).
func (n *Node) Addr() string { return n.lis.Addr().String() }

// ID is the node's ID.
func (n *Node) ID() string { return n.cfg.ID }

// Leader returns the leader of cp partition id as this node sees it ("" if
// it holds no replica or knows no leader).
func (n *Node) Leader(id string) string {
	if g, ok := n.host.Group(id); ok {
		return g.Leader()
	}
	return ""
}

// RaftSnapshot makes this node's replica of cp partition id take a Raft
// snapshot now (operators and tests; raft also snapshots on its own).
func (n *Node) RaftSnapshot(id string) error {
	g, ok := n.host.Group(id)
	if !ok {
		return fmt.Errorf("%w: node %s holds no replica of %s", kverrors.ErrInvalidArgument, n.cfg.ID, id)
	}
	return g.Snapshot()
}

// RaftLeader reports whether this node leads cp partition id.
func (n *Node) RaftLeader(id string) bool {
	g, ok := n.host.Group(id)
	return ok && g.IsLeader()
}

// Close stops serving, waits for in-flight requests up to the shutdown grace,
// closes peer connections and the store. It is safe to call more than once.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.mu.closed {
		n.mu.Unlock()
		return nil
	}
	n.mu.closed = true
	n.mu.Unlock()
	close(n.stop)
	if n.health != nil {
		n.health.Shutdown() // peers' probes fail from now on
	}
	n.watch.Close() // watch streams end, so the graceful stop below does not wait on them

	var errs []error
	// Raft groups first: in-flight proposals fail instead of waiting on
	// peers, and peers see this node leave.
	if err := n.host.Close(); err != nil {
		errs = append(errs, fmt.Errorf("stop raft groups: %w", err))
	}

	if n.srv != nil {
		done := make(chan struct{})
		go func() { n.srv.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-time.After(n.cfg.ShutdownGrace):
			n.log.Warn("graceful stop timed out; closing connections", "grace", n.cfg.ShutdownGrace)
			n.srv.Stop()
			<-done
		}
		n.wg.Wait()
	}
	n.apc.Close() // background replica stores and repairs
	n.mu.Lock()
	peers := n.mu.peers
	for a, c := range n.mu.byAddr {
		peers["addr:"+a] = c
	}
	n.mu.peers, n.mu.byAddr = nil, nil
	n.mu.Unlock()
	for id, c := range peers {
		if err := c.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close connection to %s: %w", id, err))
		}
	}
	if err := n.store.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close store: %w", err))
	}
	n.log.Info("stopped")
	return errors.Join(errs...)
}

// peer returns a connection to another node, dialing it on first use.
func (n *Node) peer(id string) (*grpc.ClientConn, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.mu.peers == nil {
		return nil, fmt.Errorf("%w: node %s is shutting down", kverrors.ErrUnavailable, n.cfg.ID)
	}
	if c, ok := n.mu.peers[id]; ok {
		return c, nil
	}
	node, ok := n.r().Node(id)
	if !ok {
		return nil, fmt.Errorf("%w: node %q is not in the cluster map", kverrors.ErrStaleEpoch, id)
	}
	// Outermost: every answer that got back (through the fault hook too)
	// tells the failure detector the node is reachable.
	opts := []grpc.DialOption{grpc.WithChainUnaryInterceptor(n.heardInterceptor(id))}
	if n.cfg.Faults != nil {
		opts = append(opts, grpc.WithChainUnaryInterceptor(n.faultInterceptor(id)))
	}
	c, err := dial.Conn(node.Addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("%w: dial %s at %s: %v", kverrors.ErrUnavailable, id, node.Addr, err)
	}
	n.mu.peers[id] = c
	return c, nil
}

// faultInterceptor applies the fault rules to forwarded KV and admin calls
// to node `to` (Raft traffic has its own check in the Raft network): the
// request may be lost on the way out, the answer on the way back.
func (n *Node) faultInterceptor(to string) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if strings.HasPrefix(method, "/capkv.v1.Raft/") {
			return invoker(ctx, method, req, reply, cc, opts...)
		}
		if err := n.cfg.Faults.Deliver(ctx, n.cfg.ID, to); err != nil {
			return fmt.Errorf("%w: %v", kverrors.ErrUnavailable, err)
		}
		if err := invoker(ctx, method, req, reply, cc, opts...); err != nil {
			return err
		}
		if err := n.cfg.Faults.Deliver(ctx, to, n.cfg.ID); err != nil {
			return fmt.Errorf("%w: answer from %s lost: %v", kverrors.ErrIndeterminate, to, err)
		}
		return nil
	}
}

// SetFaults replaces the node's fault rules (test-only hook).
func (n *Node) SetFaults(_ context.Context, req *api.SetFaultsRequest) (*api.SetFaultsResponse, error) {
	if n.faults == nil {
		return nil, fmt.Errorf("%w: fault injection is disabled on %s (start kvd with --test-faults)", kverrors.ErrWrongMode, n.cfg.ID)
	}
	var rules []cp.Rule
	for _, r := range req.GetRules() {
		var rule cp.Rule
		switch r.GetAction() {
		case "drop":
			rule.Drop = true
		case "blackhole":
			rule.Blackhole = true
		case "delay":
			rule.Delay = time.Duration(r.GetDelayMs()) * time.Millisecond
		default:
			return nil, fmt.Errorf("%w: fault action %q: want drop, blackhole or delay", kverrors.ErrInvalidArgument, r.GetAction())
		}
		rules = append(rules, rule)
	}
	n.faults.Heal()
	for i, r := range req.GetRules() {
		n.faults.Set(r.GetFrom(), r.GetTo(), rules[i])
	}
	n.clockSkew.Store(int64(time.Duration(req.GetClockOffsetMs()) * time.Millisecond))
	n.log.Info("fault rules", "rules", n.faults.String(), "clock_offset_ms", req.GetClockOffsetMs())
	return &api.SetFaultsResponse{Rules: uint32(len(rules))}, nil
}

// unaryInterceptor gives every request a deadline and maps errors to gRPC
// status codes in one place.
func (n *Node) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, n.cfg.RequestTimeout)
		defer cancel()
	}
	start := time.Now()
	resp, err := handler(ctx, req)
	err = kverrors.ToStatus(err) // once, for the caller and the metrics
	n.observe(info.FullMethod, req, resp, err, time.Since(start))
	if err != nil {
		n.log.Debug("request failed", "method", info.FullMethod, "err", err)
		return nil, err
	}
	return resp, nil
}
