package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
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
	"github.com/capkv/capkv/internal/fault"
	"github.com/capkv/capkv/internal/kverrors"
	"github.com/capkv/capkv/internal/meta"
	"github.com/capkv/capkv/internal/metrics"
	"github.com/capkv/capkv/internal/route"
	"github.com/capkv/capkv/internal/trace"
	"github.com/capkv/capkv/internal/watch"
	"github.com/capkv/capkv/replication"
	"github.com/capkv/capkv/replication/ap"
	"github.com/capkv/capkv/replication/cp"
	"github.com/capkv/capkv/ring"
	"github.com/capkv/capkv/shard"
)

// Version is reported by NodeInfo.
const Version = "0.1.0-dev"

// Node is one running kvd. Create with New, run with Start, stop with Close.
type Node struct {
	cfg Config
	// tracing records this node's spans; ownTracing: New made it, so Close
	// stops it.
	tracing    *trace.Provider
	ownTracing bool
	log        *slog.Logger
	store      *shard.Store
	host       *cp.Host
	cpr        *cp.Replicator
	apr        *ap.Replicator
	// modes is the replicator of each keyspace mode; route picks from it.
	modes   map[consistency.Mode]replication.Replicator
	router  *route.Router
	clock   *consistency.Clock
	fd      *failure.Detector
	watch   *watch.Hub // changes applied here, for Watch streams
	metrics *metrics.Metrics
	health  *health.Server
	started time.Time

	// meta follows the cluster map (and changes it on metadata members).
	meta   *meta.Service
	stop   chan struct{} // closed by Close; ends detectLoop
	faults *fault.Table  // the test-only fault hook's rules (nil: disabled)
	// clockSkew (ns) is added to the wall clock by the test-only fault hook.
	clockSkew atomic.Int64

	srv *grpc.Server
	lis net.Listener
	wg  sync.WaitGroup // the serving goroutine

	peers *dial.Pool // one connection per peer node, dialed lazily

	identity identity // of the data directory (identity.go)
	freshDir bool     // it held no store when this process opened it

	mu struct {
		sync.Mutex
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
	// Log lines written with a request's context carry its trace ID.
	log = slog.New(trace.LogHandler(log.Handler())).With("node", cfg.ID)
	// Check the initial cluster and keyspaces now, so a bad config fails at
	// start-up with every problem listed, not later inside the metadata group.
	if len(cfg.Peers) > 0 {
		if _, err := ring.New(ring.Topology{Nodes: cfg.Peers, Keyspaces: cfg.Keyspaces}, ring.Options{VNodes: cfg.VNodes}); err != nil {
			return nil, fmt.Errorf("initial cluster: %w", err)
		}
	}
	idt, fresh, err := loadIdentity(cfg.DataDir, cfg.ID)
	if err != nil {
		return nil, err
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
	n := &Node{cfg: cfg, log: log, store: st, stop: make(chan struct{}), identity: idt, freshDir: fresh, tracing: cfg.Tracing}
	if n.tracing == nil {
		// Traced requests only (a client asked), buffered here.
		tc := trace.DefaultConfig(cfg.ID)
		tc.SampleRatio, tc.OTLPEndpoint = cfg.TraceSample, cfg.OTLPEndpoint
		if n.tracing, err = trace.New(context.Background(), tc); err != nil {
			st.Close()
			return nil, err
		}
		n.ownTracing = true
	}
	// The wall clock behind the HLC; the test-only fault hook can skew it.
	n.clock = consistency.NewClock(func() time.Time { return time.Now().Add(time.Duration(n.clockSkew.Load())) }, 0)
	n.peers = &dial.Pool{Resolve: n.resolve, Options: n.peerOptions, Security: cfg.Security}
	if cfg.Faults == nil && cfg.TestFaults {
		n.faults = fault.NewTable()
		cfg.Faults = n.faults
		n.cfg.Faults = n.faults
	}
	net := cp.NewNetwork(cfg.ID, n.peer, cfg.Faults)
	net.HeartbeatPeriod = cfg.Raft.LeaderHeartbeatPeriod()
	net.Tracing = n.tracing
	n.watch = watch.NewHub(0)
	n.host = cp.NewHost(cfg.ID, st, net, filepath.Join(cfg.DataDir, "raft-snapshots"), cfg.Raft, log)
	n.host.Watch = n.watch
	n.host.Tracing = n.tracing
	n.cpr = cp.NewReplicator(cp.ReplicatorConfig{Host: n.host, Clock: n.clock, UnsafeLocalReads: cfg.UnsafeLocalReads, Watch: n.watch,
		Storage: func(id string) cp.Storage { return st.Replica(id) }})
	n.apr = ap.New(ap.Config{Self: cfg.ID, Store: st, Clock: n.clock, Watch: n.watch, Dial: n.replicaPeer, Ring: n.r,
		Down: func(id string) bool { return n.fd.Down(id) }, AntiEntropyInterval: cfg.AntiEntropyInterval,
		TombstoneGrace: cfg.TombstoneGrace, Log: log})
	n.modes = map[consistency.Mode]replication.Replicator{consistency.CP: n.cpr, consistency.AP: n.apr}
	n.router = route.New(route.Config{Self: cfg.ID, Ring: n.r, Ready: func() error { return n.meta.Ready() },
		Refresh: func(ctx context.Context) error { return n.meta.Refresh(ctx) }, Modes: n.modes, MaxKeySize: cfg.MaxKeySize, KV: n.kvPeer,
		Down: func(id string) bool { return n.fd.Down(id) }, Reachable: n.upReplicas, Stop: n.stop})
	n.fd = failure.New(failure.Config{Interval: cfg.ProbeInterval, DownAfter: cfg.DownAfter,
		Probe: n.probe, Peers: n.otherNodes, OnDown: n.dropPeer, Log: log})
	n.metrics = metrics.New(cfg.ID, n.stateCollector())
	return n, nil
}

// Start serves on lis, or on cfg.Listen when lis is nil, until Close.
func (n *Node) Start(lis net.Listener) error {
	sopts, err := n.cfg.Security.ServerOptions()
	if err != nil {
		return err
	}
	if lis == nil {
		lis, err = net.Listen("tcp", n.cfg.Listen)
		if err != nil {
			return fmt.Errorf("listen on %s: %w", n.cfg.Listen, err)
		}
	}
	n.lis = lis
	n.started = time.Now()
	if err := n.checkNotWiped(); err != nil {
		lis.Close()
		return err
	}
	m, err := meta.New(meta.Config{Self: n.cfg.ID, Region: n.cfg.Region, Advertise: n.advertise,
		Peers: n.cfg.Peers, MetaSize: n.cfg.MetaSize, Keyspaces: n.cfg.Keyspaces, AdminIdentities: n.cfg.AdminIdentities, VNodes: n.cfg.VNodes,
		Join: n.cfg.Join, JoinTimeout: n.cfg.JoinTimeout, Host: n.host, Storage: n.store.Replica(meta.GroupID), Clock: n.clock, Incarnation: n.identity.Incarnation,
		Peer:     func(id string) (grpc.ClientConnInterface, error) { return n.peer(id) },
		DialAddr: func(addr string) (grpc.ClientConnInterface, error) { return n.dialAddr(addr) },
		Down:     n.fd.Down, Unreachable: n.down, Info: n.info, OnMap: n.adoptModes, Log: n.log},
		ring.Node{ID: n.cfg.ID, Addr: n.advertise(), Region: n.cfg.Region})
	if err != nil {
		return err
	}
	n.meta = m
	// A pool of stream workers instead of a new goroutine per call: every
	// new goroutine grew its stack again through gRPC, the interceptors and
	// the replication path (runtime.newstack was ~6% of a node's CPU under
	// ap puts). Calls past the pool still get their own goroutine.
	sopts = append(sopts, grpc.NumStreamWorkers(streamWorkers))
	// Tracing wraps the node's own interceptors, so a traced call's server
	// span covers its token check too.
	sopts = append(sopts, trace.ServerOptions(n.tracing)...)
	n.srv = grpc.NewServer(append(sopts, grpc.ChainUnaryInterceptor(n.unaryInterceptor), grpc.ChainStreamInterceptor(n.authorizeStream))...)
	api.RegisterKVServer(n.srv, n)
	api.RegisterAdminServer(n.srv, n)
	api.RegisterRaftServer(n.srv, n.host.Network())
	api.RegisterReplicaServer(n.srv, n.apr.Server())
	n.health = health.NewServer() // what other nodes' failure detectors probe
	healthpb.RegisterHealthServer(n.srv, n.health)
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := n.srv.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			n.log.Error("grpc server stopped", "err", err)
		}
	}()
	n.apr.Start()
	n.wg.Add(1)
	go n.detectLoop()
	if err := n.meta.Start(); err != nil {
		n.Close()
		return err
	}
	n.log.Info("serving", "addr", lis.Addr().String(), "region", n.cfg.Region, "transport", n.cfg.Security.String())
	return nil
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
func (n *Node) r() *ring.Ring { return n.meta.Ring() }

// ready fails until this node has a cluster map.
func (n *Node) ready() error { return n.router.Ready() }

// kvPeer is a client of another node's KV service, refused at once for a
// node the failure detector holds down.
func (n *Node) kvPeer(id string) (api.KVClient, error) {
	if err := n.down(id); err != nil {
		return nil, err
	}
	c, err := n.peer(id)
	if err != nil {
		return nil, err
	}
	return api.NewKVClient(c), nil
}

// dialAddr returns a connection to an address outside the map (join targets).
func (n *Node) dialAddr(addr string) (*grpc.ClientConn, error) {
	c, err := n.peers.Addr(addr)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", kverrors.ErrInvalidArgument, err)
	}
	return c, nil
}

// adoptModes tells every replicator about the newest map (cp starts the
// Raft replicas it assigns to this node and stops those of dropped
// keyspaces), then deletes the data of every keyspace the map no longer has.
func (n *Node) adoptModes(r *ring.Ring) error {
	var errs []error
	for _, rep := range n.modes {
		errs = append(errs, rep.Adopt(r))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return n.dropGone(r)
}

// streamWorkers is the size of a node's pool of gRPC stream workers: about
// the calls in flight under a 128-client load, a few MB of parked stacks.
const streamWorkers = 128

// dropGone deletes the stored partitions of keyspaces r does not have (a
// drop; also one that happened while this node was down). Partition ids
// starting with '_' are the node's own (metadata, hints).
func (n *Node) dropGone(r *ring.Ring) error {
	parts, err := n.store.Partitions()
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range parts {
		pid, err := ring.ParsePartitionID(p)
		if strings.HasPrefix(p, "_") || err != nil {
			continue
		}
		if _, ok := r.Keyspace(pid.Keyspace); ok {
			continue
		}
		if err := n.store.Replica(p).Drop(); err != nil {
			errs = append(errs, fmt.Errorf("drop data of %s: %w", p, err))
			continue
		}
		n.log.Info("data of dropped keyspace deleted", "partition", p, "epoch", r.Epoch())
	}
	return errors.Join(errs...)
}

// Addr is the bound listen address (valid after Start).
func (n *Node) Addr() string { return n.lis.Addr().String() }

// ID is the node's ID.
func (n *Node) ID() string { return n.cfg.ID }

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
	if n.meta != nil {
		n.meta.Close()
	}
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
	n.apr.Close() // hint handoff, anti-entropy, background replica stores and repairs
	if err := n.peers.Close(); err != nil {
		errs = append(errs, err)
	}
	if err := n.store.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close store: %w", err))
	}
	if n.ownTracing {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		n.tracing.Close(ctx)
		cancel()
	}
	n.log.Info("stopped")
	return errors.Join(errs...)
}

// replicaPeer is how the ap mode reaches another node: at once refused when
// the failure detector holds it down, so a coordinator turns to a fallback.
func (n *Node) replicaPeer(id string) (grpc.ClientConnInterface, error) {
	if err := n.down(id); err != nil {
		return nil, err
	}
	return n.peer(id)
}

// peer returns a connection to another node, dialing it on first use.
func (n *Node) peer(id string) (*grpc.ClientConn, error) {
	c, err := n.peers.Peer(id)
	switch {
	case errors.Is(err, dial.ErrPoolClosed):
		return nil, fmt.Errorf("%w: node %s is shutting down", kverrors.ErrUnavailable, n.cfg.ID)
	case err != nil && !errors.Is(err, kverrors.ErrStaleEpoch):
		return nil, fmt.Errorf("%w: %v", kverrors.ErrUnavailable, err)
	}
	return c, err
}

func (n *Node) resolve(id string) (string, error) {
	node, ok := n.r().Node(id)
	if !ok {
		return "", fmt.Errorf("%w: node %q is not in the cluster map", kverrors.ErrStaleEpoch, id)
	}
	return node.Addr, nil
}

// peerOptions: outermost, every answer that got back (through the fault
// hook too) tells the failure detector the node is reachable; the test-only
// fault rules apply to forwarded KV and admin calls (Raft traffic has its
// own check in the Raft network).
func (n *Node) peerOptions(id string) []grpc.DialOption {
	opts := []grpc.DialOption{grpc.WithChainUnaryInterceptor(n.fd.Interceptor(id))}
	if n.cfg.Faults != nil {
		opts = append(opts, grpc.WithChainUnaryInterceptor(fault.UnaryClientInterceptor(n.cfg.Faults, n.cfg.ID, id, "/capkv.v1.Raft/")))
	}
	return opts
}

// SetFaults replaces the node's fault rules (test-only hook).
func (n *Node) SetFaults(_ context.Context, req *api.SetFaultsRequest) (*api.SetFaultsResponse, error) {
	if n.faults == nil {
		return nil, fmt.Errorf("%w: fault injection is disabled on %s (start kvd with --test-faults)", kverrors.ErrWrongMode, n.cfg.ID)
	}
	rules, err := fault.ParseRules(req)
	if err != nil {
		return nil, err
	}
	n.faults.Replace(rules)
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
	var resp any
	err := n.authorize(ctx, req)
	if err == nil {
		resp, err = handler(ctx, req)
	}
	err = kverrors.ToStatus(err) // once, for the caller and the metrics
	n.observe(info.FullMethod, req, resp, err, time.Since(start))
	if err != nil {
		n.log.DebugContext(ctx, "request failed", "method", info.FullMethod, "err", err)
		return nil, err
	}
	if r, ok := resp.(interface{ GetReceipt() *api.Receipt }); ok {
		if id := trace.TraceID(ctx); id != "" && r.GetReceipt() != nil {
			r.GetReceipt().TraceId = id
		}
	}
	return resp, nil
}
