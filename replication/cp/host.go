package cp

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/capkv/capkv/internal/watch"
	"github.com/capkv/capkv/shard"
)

// LogOpener opens the Raft log of one group; *shard.Store implements it, so
// every group's log shares the node's store and its group commit.
type LogOpener interface {
	RaftLog(group string) (*shard.RaftLog, error)
}

// Host runs every cp group replica of one node over one store and one Raft
// network.
type Host struct {
	self        string
	logs        LogOpener
	net         *Network
	snapshotDir string
	tuning      Tuning
	log         *slog.Logger
	// Watch, when set before groups start, receives what they apply.
	Watch *watch.Hub
	// Tracing, when set before groups start, records the spans of traced
	// entries (package trace; set the Network's too).
	Tracing oteltrace.TracerProvider
	// raftLog rate-limits the raft lines of every group together.
	raftLog *raftLogLimiter

	mu struct {
		sync.Mutex
		groups map[string]*Group
		closed bool
	}
}

// NewHost creates the host of node self, keeping the groups' Raft logs in
// logs.
func NewHost(self string, logs LogOpener, net *Network, snapshotDir string, tuning Tuning, log *slog.Logger) *Host {
	h := &Host{self: self, logs: logs, net: net, snapshotDir: snapshotDir, tuning: tuning, log: log, raftLog: newRaftLogLimiter(time.Now)}
	h.mu.groups = make(map[string]*Group)
	return h
}

// Network is the host's Raft network (register it on the gRPC server).
func (h *Host) Network() *Network { return h.net }

// Ensure starts the replica of partition id over storage if this node is
// among peers and it is not running yet. It returns nil, nil when this node
// holds no replica of the partition.
func (h *Host) Ensure(id string, peers []string, storage Storage) (*Group, error) {
	if !slices.Contains(peers, h.self) {
		return nil, nil
	}
	return h.ensure(id, peers, storage, false)
}

// Join starts this node's replica of partition id as a new member of the
// running group (rebalancing): it never bootstraps, and waits for the
// leader to add it. A replica already running is returned as is.
func (h *Host) Join(id string, storage Storage) (*Group, error) {
	return h.ensure(id, nil, storage, true)
}

func (h *Host) ensure(id string, peers []string, storage Storage, join bool) (*Group, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.mu.closed {
		return nil, errors.New("cp host is shut down")
	}
	if g, ok := h.mu.groups[id]; ok {
		return g, nil
	}
	rl, err := h.logs.RaftLog(id)
	if err != nil {
		return nil, fmt.Errorf("open raft log of %s: %w", id, err)
	}
	g, err := StartGroup(GroupConfig{ID: id, Self: h.self, Peers: peers, Join: join, Storage: storage, LogStore: NewLogStore(rl),
		Network: h.net, SnapshotDir: h.snapshotDir, Tuning: h.tuning, Logger: h.log, Watch: h.Watch, Tracing: h.Tracing, raftLog: h.raftLog})
	if err != nil {
		return nil, fmt.Errorf("start replica of %s: %w", id, err)
	}
	h.mu.groups[id] = g
	return g, nil
}

// Group returns the running replica of partition id.
func (h *Host) Group(id string) (*Group, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	g, ok := h.mu.groups[id]
	return g, ok
}

// Groups lists running replicas sorted by id.
func (h *Host) Groups() []*Group {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]*Group, 0, len(h.mu.groups))
	for _, g := range h.mu.groups {
		out = append(out, g)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID() < out[j].ID() })
	return out
}

// Remove stops this node's replica of partition id, if it runs, and deletes
// its Raft log, stable values and snapshots: the partition left the map (its
// keyspace was dropped). The partition's data is its storage owner's.
func (h *Host) Remove(id string) error {
	h.mu.Lock()
	g, ok := h.mu.groups[id]
	delete(h.mu.groups, id)
	h.mu.Unlock()
	var errs []error
	if ok {
		if err := g.Shutdown(); err != nil {
			errs = append(errs, fmt.Errorf("stop replica of %s: %w", id, err))
		}
	}
	// After Shutdown: the group's own RaftLog is no longer used.
	rl, err := h.logs.RaftLog(id)
	if err == nil {
		err = rl.Drop()
	}
	if err != nil {
		errs = append(errs, fmt.Errorf("drop raft log of %s: %w", id, err))
	}
	if h.snapshotDir != "" {
		if err := os.RemoveAll(filepath.Join(h.snapshotDir, url.PathEscape(id))); err != nil {
			errs = append(errs, fmt.Errorf("remove raft snapshots of %s: %w", id, err))
		}
	}
	return errors.Join(errs...)
}

// Close shuts every replica down and waits for them.
func (h *Host) Close() error {
	h.mu.Lock()
	if h.mu.closed {
		h.mu.Unlock()
		return nil
	}
	h.mu.closed = true
	groups := h.mu.groups
	h.mu.groups = nil
	h.mu.Unlock()
	var wg sync.WaitGroup
	errs := make([]error, 0, len(groups))
	var mu sync.Mutex
	for _, g := range groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := g.Shutdown(); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("%s: %w", g.ID(), err))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
