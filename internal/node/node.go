package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/internal/kverrors"
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
	ring    *ring.Ring
	clock   *consistency.Clock
	started time.Time

	srv *grpc.Server
	lis net.Listener
	wg  sync.WaitGroup // the serving goroutine

	mu struct {
		sync.Mutex
		peers  map[string]*grpc.ClientConn // node ID -> connection, dialed lazily
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
	r, err := ring.New(ring.Topology{Epoch: cfg.Epoch, Nodes: cfg.Peers, Keyspaces: cfg.Keyspaces}, ring.Options{VNodes: cfg.VNodes})
	if err != nil {
		return nil, fmt.Errorf("cluster map: %w", err)
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
	n := &Node{cfg: cfg, log: log, store: st, ring: r, clock: consistency.NewClock(nil, 0)}
	n.mu.peers = make(map[string]*grpc.ClientConn)
	net := cp.NewNetwork(cfg.ID, n.peer, cfg.Faults)
	n.host = cp.NewHost(cfg.ID, st.DB(), net, filepath.Join(cfg.DataDir, "raft-snapshots"), cfg.Raft, log)
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
	n.srv = grpc.NewServer(grpc.ChainUnaryInterceptor(n.unaryInterceptor))
	api.RegisterKVServer(n.srv, n)
	api.RegisterAdminServer(n.srv, n)
	api.RegisterRaftServer(n.srv, n.host.Network())
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := n.srv.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			n.log.Error("grpc server stopped", "err", err)
		}
	}()
	if err := n.startGroups(); err != nil {
		n.Close()
		return err
	}
	n.log.Info("serving", "addr", lis.Addr().String(), "region", n.cfg.Region, "raft_groups", len(n.host.Groups()))
	return nil
}

// startGroups starts this node's replica of every placeable cp partition.
func (n *Node) startGroups() error {
	for _, ks := range n.ring.Keyspaces() {
		if ks.Mode != consistency.CP {
			continue
		}
		for _, p := range n.ring.Partitions(ks.Name) {
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
	n.mu.Lock()
	peers := n.mu.peers
	n.mu.peers = nil
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
	node, ok := n.ring.Node(id)
	if !ok {
		return nil, fmt.Errorf("%w: node %q is not in the cluster map", kverrors.ErrStaleEpoch, id)
	}
	c, err := grpc.NewClient(node.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("%w: dial %s at %s: %v", kverrors.ErrUnavailable, id, node.Addr, err)
	}
	n.mu.peers[id] = c
	return c, nil
}

// unaryInterceptor gives every request a deadline and maps errors to gRPC
// status codes in one place.
func (n *Node) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, n.cfg.RequestTimeout)
		defer cancel()
	}
	resp, err := handler(ctx, req)
	if err != nil {
		n.log.Debug("request failed", "method", info.FullMethod, "err", err)
		return nil, kverrors.ToStatus(err)
	}
	return resp, nil
}
