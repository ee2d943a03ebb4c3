package cp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/capkv/capkv/internal/kverrors"
	"github.com/capkv/capkv/internal/trace"
	"github.com/capkv/capkv/internal/watch"
)

// Tuning is the Raft timing of every group of a node.
type Tuning struct {
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	// LeaderHeartbeatTimeout is the HeartbeatTimeout a replica runs with
	// while it leads (raft reloads it on every leadership change). A leader
	// heartbeats each follower every LeaderHeartbeatTimeout/10 to /5, so a
	// longer value means fewer idle heartbeats; followers keep
	// HeartbeatTimeout, so failover is as fast as before. It must keep the
	// longest interval (LeaderHeartbeatTimeout/5) below both HeartbeatTimeout
	// and LeaderLeaseTimeout, or followers would call elections and the
	// leader would lose its lease. 0: 3 x min(HeartbeatTimeout,
	// LeaderLeaseTimeout), a longest interval of 60% of the tighter bound.
	// Set it to HeartbeatTimeout for raft's own pacing.
	LeaderHeartbeatTimeout time.Duration
	// ReadLease is how long after a majority of voters confirmed one of
	// its requests a leader serves linearizable reads without a quorum
	// round of its own (ReadBarrier). It rests on followers rejecting other
	// candidates for a HeartbeatTimeout after they heard from their leader
	// (hashicorp/raft does), on replicas that restart not voting for as
	// long (the transport's vote fence), and on clock rates: it must stay below
	// HeartbeatTimeout, and the margin covers the clocks' drift. Every node
	// must run the same HeartbeatTimeout. 0: 4/5 of HeartbeatTimeout;
	// negative: off, every linearizable read makes a quorum round.
	ReadLease         time.Duration
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	TrailingLogs      uint64
}

// DefaultTuning keeps failover at about a second: followers notice a dead
// leader after 500ms-1s and elect a new one within another election timeout.
// Idle CPU goes mostly to heartbeats, so leaders pace theirs by
// LeaderHeartbeatTimeout (derived: 1.5s, a heartbeat every 150-300ms per
// follower per group instead of raft's 50-100ms); the lease is 500ms so that
// the longest interval fits in it with room for a slow round trip. That
// lease (LeaderLeaseTimeout) decides when an isolated leader steps down.
// CommitTimeout only paces the commit notices an idle leader sends its
// followers (writes carry them anyway); 250ms instead of raft's 50ms cuts
// idle traffic, at the cost of followers applying up to 250ms later when idle.
// Linearizable reads need no quorum round of their own while the read
// lease (4/5 of HeartbeatTimeout, ReadLease) holds: the paced heartbeats
// renew it, so a leader confirms most reads locally.
func DefaultTuning() Tuning {
	return Tuning{
		HeartbeatTimeout:   500 * time.Millisecond,
		ElectionTimeout:    500 * time.Millisecond,
		LeaderLeaseTimeout: 500 * time.Millisecond,
		CommitTimeout:      250 * time.Millisecond,
		SnapshotThreshold:  8192,
		SnapshotInterval:   2 * time.Minute,
		TrailingLogs:       10240,
	}
}

// leaderHeartbeatTimeout is LeaderHeartbeatTimeout with its default applied.
func (t Tuning) leaderHeartbeatTimeout() time.Duration {
	if t.LeaderHeartbeatTimeout > 0 {
		return t.LeaderHeartbeatTimeout
	}
	return 3 * min(t.HeartbeatTimeout, t.LeaderLeaseTimeout)
}

// LeaderHeartbeatPeriod is the shortest interval between a leader's periodic
// heartbeats to one follower (raft's HeartbeatTimeout/10 of a leader).
func (t Tuning) LeaderHeartbeatPeriod() time.Duration {
	return t.leaderHeartbeatTimeout() / 10
}

// readLease is ReadLease with its default applied (0 when off).
func (t Tuning) readLease() time.Duration {
	switch {
	case t.ReadLease < 0:
		return 0
	case t.ReadLease == 0:
		return t.HeartbeatTimeout * 4 / 5
	}
	return t.ReadLease
}

// validateReadLease reports a lease that could outlast a follower's
// loyalty to its leader.
func (t Tuning) validateReadLease() error {
	if l := t.readLease(); l >= t.HeartbeatTimeout {
		return fmt.Errorf("ReadLease %s: must be below HeartbeatTimeout (%s)", l, t.HeartbeatTimeout)
	}
	return nil
}

// validateLeaderHeartbeat reports a LeaderHeartbeatTimeout whose longest
// interval would not fit in the follower timeout or the lease.
func (t Tuning) validateLeaderHeartbeat() error {
	lh := t.leaderHeartbeatTimeout()
	if lh < t.HeartbeatTimeout {
		return fmt.Errorf("LeaderHeartbeatTimeout %s: want at least HeartbeatTimeout (%s)", lh, t.HeartbeatTimeout)
	}
	if bound := min(t.HeartbeatTimeout, t.LeaderLeaseTimeout); lh/5 >= bound {
		return fmt.Errorf("LeaderHeartbeatTimeout %s: its longest heartbeat interval (%s) must be below HeartbeatTimeout and LeaderLeaseTimeout (%s)", lh, lh/5, bound)
	}
	return nil
}

// GroupConfig configures one partition's Raft group on one node.
type GroupConfig struct {
	ID       string   // partition id
	Self     string   // this node's id
	Peers    []string // every replica's node id, self included
	Storage  Storage
	LogStore LogStorage
	// Network carries the group's Raft traffic. Transport, when set, is used
	// instead (tests: raft.InmemTransport wrapped in a FaultyTransport).
	Network   *Network
	Transport raft.Transport
	// SnapshotDir holds raft snapshots; "" keeps them in memory (tests).
	SnapshotDir string
	Tuning      Tuning
	// Join starts a replica that is being added to a running group
	// (membership.go): it waits for the leader instead of bootstrapping.
	Join   bool
	Logger *slog.Logger
	// Watch, when set, receives the changes this replica applies.
	Watch *watch.Hub
	// Tracing records the apply spans of traced entries (nil: none).
	Tracing oteltrace.TracerProvider

	// raftLog is the rate limit of raft's log lines shared by the node's
	// groups (Host sets it; nil: the group's own).
	raftLog *raftLogLimiter
}

// logCacheSize is the number of recent log entries a group keeps in
// memory (raft.LogCache); with 256-byte values about 200 KiB per busy group.
const logCacheSize = 512

// notReady is the initial ready generation: no leadership is ready until
// its Barrier completed.
const notReady = ^uint64(0)

// LogStorage is the Raft log and stable store of a group (*LogStore, or
// raft.InmemStore in tests).
type LogStorage interface {
	raft.LogStore
	raft.StableStore
}

// ErrNotLeader is returned by a replica that is not the group's leader;
// NotLeaderError says who is, when known.
var ErrNotLeader = errors.New("not the leader")

// NotLeaderError names the leader a request should go to ("" if unknown).
type NotLeaderError struct {
	Group, Leader string
}

func (e *NotLeaderError) Error() string {
	if e.Leader == "" {
		return fmt.Sprintf("partition %s has no leader this replica knows of (election in progress, or this replica is cut off from a majority)", e.Group)
	}
	return fmt.Sprintf("partition %s is led by %s", e.Group, e.Leader)
}

func (e *NotLeaderError) Unwrap() error { return ErrNotLeader }

// Group is one replica of a partition's Raft group.
type Group struct {
	cfg   GroupConfig
	raft  *raft.Raft
	fsm   *FSM
	trans raft.Transport
	log   *slog.Logger

	// ready is the leadership generation whose Barrier completed: a new
	// leader serves linearizable reads only after applying everything
	// committed by earlier leaders.
	gen   atomic.Uint64
	ready atomic.Uint64

	lease       time.Duration // Tuning.ReadLease, 0 when off
	leaseReads  atomic.Int64  // linearizable reads the lease confirmed
	quorumReads atomic.Int64  // and those that made a quorum round

	obsCh  chan raft.Observation
	obs    *raft.Observer
	stop   chan struct{}
	wg     sync.WaitGroup
	closed sync.Once
}

// StartGroup starts the replica. On a node with no Raft state for the group
// it bootstraps the configuration from Peers; every replica does so with the
// same list, which hashicorp/raft documents as safe.
func StartGroup(cfg GroupConfig) (*Group, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	log = log.With("group", cfg.ID)
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.Self)
	rc.HeartbeatTimeout = cfg.Tuning.HeartbeatTimeout
	rc.ElectionTimeout = cfg.Tuning.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.Tuning.LeaderLeaseTimeout
	rc.CommitTimeout = cfg.Tuning.CommitTimeout
	rc.SnapshotThreshold = cfg.Tuning.SnapshotThreshold
	rc.SnapshotInterval = cfg.Tuning.SnapshotInterval
	rc.TrailingLogs = cfg.Tuning.TrailingLogs
	rc.BatchApplyCh = true
	rc.NoSnapshotRestoreOnStart = true // the FSM's state is durable in Badger already
	if cfg.raftLog == nil {
		cfg.raftLog = newRaftLogLimiter(time.Now)
	}
	rc.Logger = newSharedRaftLogger(log, cfg.raftLog)
	if err := raft.ValidateConfig(rc); err != nil {
		return nil, fmt.Errorf("raft config of %s: %w", cfg.ID, err)
	}
	if err := cfg.Tuning.validateLeaderHeartbeat(); err != nil {
		return nil, fmt.Errorf("raft config of %s: %w", cfg.ID, err)
	}
	if err := cfg.Tuning.validateReadLease(); err != nil {
		return nil, fmt.Errorf("raft config of %s: %w", cfg.ID, err)
	}
	var snaps raft.SnapshotStore = raft.NewInmemSnapshotStore()
	if cfg.SnapshotDir != "" {
		dir := filepath.Join(cfg.SnapshotDir, url.PathEscape(cfg.ID))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		fs, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, rc.Logger)
		if err != nil {
			return nil, fmt.Errorf("snapshot store of %s: %w", cfg.ID, err)
		}
		snaps = fs
	}
	trans := cfg.Transport
	if trans == nil {
		trans = cfg.Network.Transport(cfg.ID)
	}
	has, err := raft.HasExistingState(cfg.LogStore, cfg.LogStore, snaps)
	if err != nil {
		return nil, err
	}
	rebuild, err := prepareRebuild(cfg.Storage, snaps, log)
	if err != nil {
		return nil, fmt.Errorf("rebuild %s: %w", cfg.ID, err)
	}
	if rebuild {
		rc.NoSnapshotRestoreOnStart = false // NewRaft restores the newest snapshot
	}
	fsm, err := NewFSM(cfg.Storage)
	if err != nil {
		return nil, err
	}
	fsm.watch, fsm.partition, fsm.tracing, fsm.self = cfg.Watch, cfg.ID, cfg.Tracing, cfg.Self
	// The cache keeps the newest entries in memory: the leader's replication
	// to each follower reads what it just appended, which otherwise costs a
	// Badger lookup and a decode per entry and follower (5% of a loaded
	// node's CPU in a profile of 128-client puts).
	logs, err := raft.NewLogCache(logCacheSize, cfg.LogStore)
	if err != nil {
		return nil, err
	}
	r, err := raft.NewRaft(rc, fsm, logs, cfg.LogStore, snaps, trans)
	if err != nil {
		closeTransport(trans)
		return nil, fmt.Errorf("start raft group %s: %w", cfg.ID, err)
	}
	if rebuild {
		// The snapshot is restored (durably: Import syncs) or the data is
		// gone; the log tail re-applies from there as it commits.
		if err := cfg.Storage.RebuildDone(); err != nil {
			r.Shutdown()
			closeTransport(trans)
			return nil, fmt.Errorf("rebuild %s: %w", cfg.ID, err)
		}
		log.Warn("partition rebuilt from its Raft snapshot and log after a machine crash")
	}
	g := &Group{cfg: cfg, raft: r, fsm: fsm, trans: trans, log: log, stop: make(chan struct{}), obsCh: make(chan raft.Observation, 16),
		lease: cfg.Tuning.readLease()}
	g.ready.Store(notReady)
	if t, ok := trans.(*Transport); ok {
		t.bind(func() raft.ServerAddress { a, _ := r.LeaderWithID(); return a }, cfg.Tuning.HeartbeatTimeout)
	}
	if !has && !cfg.Join {
		var servers []raft.Server
		for _, p := range cfg.Peers {
			servers = append(servers, raft.Server{ID: raft.ServerID(p), Address: raft.ServerAddress(p), Suffrage: raft.Voter})
		}
		if err := r.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			g.Shutdown()
			return nil, fmt.Errorf("bootstrap %s: %w", cfg.ID, err)
		}
	}
	// Blocking: a dropped leadership observation could let a re-elected
	// leader skip its Barrier. The consumer only bumps a counter.
	g.obs = raft.NewObserver(g.obsCh, true, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	r.RegisterObserver(g.obs)
	g.wg.Add(1)
	go g.watchLeadership()
	return g, nil
}

// watchLeadership runs a Barrier after every leadership change that makes
// this replica leader, and marks the generation ready when it completes.
func (g *Group) watchLeadership() {
	defer g.wg.Done()
	for {
		select {
		case <-g.stop:
			return
		case o := <-g.obsCh:
			lo, _ := o.Data.(raft.LeaderObservation)
			gen := g.gen.Add(1)
			leads := string(lo.LeaderID) == g.cfg.Self
			// Observations arrive in order, so the last reload matches
			// the last change: a replica that stops leading is back on
			// the follower timeout at once (the shorter value also resets
			// raft's running follower timer).
			g.pace(leads)
			if !leads {
				continue
			}
			g.wg.Add(1)
			go func() {
				defer g.wg.Done()
				for g.gen.Load() == gen && g.raft.State() == raft.Leader {
					done, err := g.await(context.Background(), g.raft.Barrier(5*time.Second))
					if !done {
						return // stopped
					}
					if err == nil {
						if g.gen.Load() == gen {
							g.ready.Store(gen)
						}
						return
					}
					select {
					case <-g.stop:
						return
					case <-time.After(50 * time.Millisecond):
					}
				}
			}()
		}
	}
}

// pace sets raft's heartbeat timing for the role: a leader heartbeats by
// LeaderHeartbeatTimeout, anyone else waits HeartbeatTimeout for its leader.
// raft requires ElectionTimeout >= HeartbeatTimeout, so a leader's grows
// along; a leader only uses it to time out a leadership transfer.
func (g *Group) pace(leader bool) {
	t := g.cfg.Tuning
	rc := g.raft.ReloadableConfig()
	rc.HeartbeatTimeout, rc.ElectionTimeout = t.HeartbeatTimeout, t.ElectionTimeout
	if leader {
		rc.HeartbeatTimeout = t.leaderHeartbeatTimeout()
		rc.ElectionTimeout = max(t.ElectionTimeout, rc.HeartbeatTimeout)
	}
	if err := g.raft.ReloadConfig(rc); err != nil {
		g.log.Warn("raft heartbeat timing not changed", "leader", leader, "err", err)
	}
}

// HeartbeatTimeout is the heartbeat timeout raft runs with now (the leader's
// or the follower's, see Tuning.LeaderHeartbeatTimeout).
func (g *Group) HeartbeatTimeout() time.Duration {
	return g.raft.ReloadableConfig().HeartbeatTimeout
}

// ID is the partition id.
func (g *Group) ID() string { return g.cfg.ID }

// Peers is the group's bootstrap configuration.
func (g *Group) Peers() []string { return g.cfg.Peers }

// Leader returns the current leader's node id, "" when unknown.
func (g *Group) Leader() string {
	_, id := g.raft.LeaderWithID()
	return string(id)
}

// IsLeader reports whether this replica believes it leads.
func (g *Group) IsLeader() bool { return g.raft.State() == raft.Leader }

// AppliedIndex is the last log index applied to storage here.
func (g *Group) AppliedIndex() uint64 { return g.fsm.AppliedIndex() }

// LastContact is when this replica last heard from its leader (now for a leader).
func (g *Group) LastContact() time.Time {
	if g.IsLeader() {
		return time.Now()
	}
	return g.raft.LastContact()
}

func (g *Group) notLeader() error {
	return &NotLeaderError{Group: g.cfg.ID, Leader: g.Leader()}
}

// Propose replicates cmd and returns its result once applied here.
//
// Errors: a *NotLeaderError (definite: nothing was appended) when this
// replica does not lead; kverrors.ErrUnavailable when raft refused to
// enqueue; kverrors.ErrIndeterminate when the entry may or may not commit
// (deadline passed, leadership lost after appending).
func (g *Group) Propose(ctx context.Context, cmd Command) (Result, error) {
	if g.raft.State() != raft.Leader {
		return Result{}, g.notLeader()
	}
	timeout := time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	if timeout <= 0 {
		return Result{}, fmt.Errorf("%w: deadline passed before proposing", kverrors.ErrUnavailable)
	}
	ctx, span := trace.Start(ctx, "cp.propose")
	if span.IsRecording() {
		span.SetAttributes(trace.KeyPartition.String(g.cfg.ID), trace.KeyNode.String(g.cfg.Self))
	}
	res, err := g.propose(ctx, cmd, timeout)
	trace.End(span, err)
	return res, err
}

func (g *Group) propose(ctx context.Context, cmd Command, timeout time.Duration) (Result, error) {
	// A traced proposal's entry carries its span context to the followers
	// and to every replica's apply (tracing.go).
	f := g.raft.ApplyLog(raft.Log{Data: EncodeCommand(nil, cmd), Extensions: trace.Inject(ctx)}, timeout)
	switch done, err := g.await(ctx, f); {
	case done:
		switch {
		case err == nil:
		case errors.Is(err, raft.ErrNotLeader):
			return Result{}, g.notLeader()
		case errors.Is(err, raft.ErrLeadershipTransferInProgress):
			// Refused before appending (a move hands leadership on): definite,
			// and the caller's leader wait retries it on the next leader.
			return Result{}, &NotLeaderError{Group: g.cfg.ID}
		case errors.Is(err, raft.ErrEnqueueTimeout):
			return Result{}, fmt.Errorf("%w: partition %s: %v", kverrors.ErrUnavailable, g.cfg.ID, err)
		default:
			return Result{}, fmt.Errorf("%w: partition %s: %v", kverrors.ErrIndeterminate, g.cfg.ID, err)
		}
		res, ok := f.Response().(Result)
		if !ok {
			return Result{}, fmt.Errorf("%w: partition %s: unexpected apply response %T", kverrors.ErrInternal, g.cfg.ID, f.Response())
		}
		res.Index = f.Index()
		return res, res.Err
	case errors.Is(err, errStopped):
		// hashicorp/raft can drop a queued future at shutdown; waiting for
		// the deadline held the node's graceful stop that long.
		return Result{}, fmt.Errorf("%w: partition %s: replica stopped before the write was confirmed", kverrors.ErrIndeterminate, g.cfg.ID)
	default:
		return Result{}, fmt.Errorf("%w: partition %s: write proposed but not confirmed before the deadline", kverrors.ErrIndeterminate, g.cfg.ID)
	}
}

// AckedBy lists the replicas known to hold log entry index: this node (the
// leader that committed it) and, sorted, the followers whose answers to
// this term's AppendEntries reached it. A follower that has not answered
// yet (it may well have the entry) is left out: a receipt names only what
// was acknowledged.
func (g *Group) AckedBy(index uint64) []string {
	out := []string{g.cfg.Self}
	src, ok := g.trans.(ackSource)
	if !ok || index == 0 {
		return out
	}
	for _, p := range src.Acks().Reached(g.raft.CurrentTerm(), index) {
		if p != g.cfg.Self {
			out = append(out, p)
		}
	}
	return out
}

// ReadBarrier makes a following local read linearizable (ReadIndex): it
// records the commit index, confirms leadership, and waits until the state
// machine has applied up to that index.
//
// Leadership is confirmed by the read lease when it holds (Tuning.ReadLease):
// a majority of voters, this leader included, confirmed requests of the
// current term sent less than the lease ago. Each of them rejects other
// candidates until a HeartbeatTimeout after it processed such a request,
// so no other leader can exist yet, and every write acknowledged before
// this read is at or below the commit index this leader read. Otherwise a
// quorum round (VerifyLeader) confirms it. A process paused after the check
// still returns what was true at the check, inside the read's interval.
func (g *Group) ReadBarrier(ctx context.Context) (uint64, error) {
	if g.raft.State() != raft.Leader {
		return 0, g.notLeader()
	}
	if g.ready.Load() != g.gen.Load() {
		// A new leader that has not applied its predecessors' entries yet.
		if err := g.waitReady(ctx); err != nil {
			return 0, err
		}
	}
	_, span := trace.Start(ctx, "cp.read_index")
	if span.IsRecording() {
		span.SetAttributes(trace.KeyPartition.String(g.cfg.ID), trace.KeyNode.String(g.cfg.Self))
	}
	idx, err := g.readIndex(ctx)
	trace.End(span, err)
	return idx, err
}

func (g *Group) readIndex(ctx context.Context) (uint64, error) {
	idx := g.raft.CommitIndex()
	if g.leaseHolds(time.Now()) {
		g.leaseReads.Add(1)
		if err := g.waitApplied(ctx, idx); err != nil {
			return 0, fmt.Errorf("%w: partition %s: apply did not reach %d before the deadline", kverrors.ErrUnavailable, g.cfg.ID, idx)
		}
		return idx, nil
	}
	g.quorumReads.Add(1)
	switch done, err := g.await(ctx, g.raft.VerifyLeader()); {
	case done:
		if err != nil {
			return 0, g.notLeader()
		}
	case errors.Is(err, errStopped):
		return 0, g.stopped()
	default:
		return 0, fmt.Errorf("%w: partition %s: leadership not confirmed before the deadline (cut off from a majority?)", kverrors.ErrUnavailable, g.cfg.ID)
	}
	if err := g.waitApplied(ctx, idx); err != nil {
		return 0, fmt.Errorf("%w: partition %s: apply did not reach %d before the deadline", kverrors.ErrUnavailable, g.cfg.ID, idx)
	}
	return idx, nil
}

// leaseHolds reports whether the read lease confirms this replica's
// leadership at now (see ReadBarrier).
func (g *Group) leaseHolds(now time.Time) bool {
	if g.lease <= 0 {
		return false
	}
	src, ok := g.trans.(ackSource)
	if !ok {
		return false
	}
	term := g.raft.CurrentTerm()
	servers := g.raft.GetConfiguration().Configuration().Servers
	base, always, ok := src.Acks().quorumContact(term, raft.ServerID(g.cfg.Self), servers)
	if !ok || g.raft.State() != raft.Leader || g.raft.CurrentTerm() != term {
		return false
	}
	return always || now.Sub(base) < g.lease
}

// ReadStats counts this replica's linearizable reads by how leadership
// was confirmed: by the read lease, or by a quorum round.
func (g *Group) ReadStats() (lease, quorum int64) {
	return g.leaseReads.Load(), g.quorumReads.Load()
}

// waitApplied waits until raft has applied idx. Raft's own applied index
// counts no-op and barrier entries that never reach the FSM, so it is the
// one to compare with the commit index; FSM batches wake the waiter early.
func (g *Group) waitApplied(ctx context.Context, idx uint64) error {
	t := time.NewTicker(2 * time.Millisecond)
	defer t.Stop()
	for {
		ch := g.fsm.changed()
		if g.raft.AppliedIndex() >= idx {
			return nil
		}
		select {
		case <-ch:
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		case <-g.stop:
			return g.stopped()
		}
	}
}

func (g *Group) waitReady(ctx context.Context) error {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for g.ready.Load() != g.gen.Load() {
		if g.raft.State() != raft.Leader {
			return g.notLeader()
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return fmt.Errorf("%w: partition %s: new leader not ready before the deadline", kverrors.ErrUnavailable, g.cfg.ID)
		case <-g.stop:
			return g.stopped()
		}
	}
	return nil
}

// stopped is the error of a read that the replica's shutdown cut short.
func (g *Group) stopped() error {
	return fmt.Errorf("%w: partition %s: replica is shutting down", kverrors.ErrUnavailable, g.cfg.ID)
}

// errStopped is await's error when the group stopped before the future
// completed.
var errStopped = errors.New("replica stopped")

// await waits for raft future f until ctx ends or the group stops,
// whichever comes first. hashicorp/raft can drop a future still queued when
// it shuts down, so nothing waits for one past stop: that held a node's
// graceful stop until the request deadline, and a Barrier's waiter outlived
// the group. done reports whether f completed: then err is f's own error;
// otherwise it is ctx.Err() or errStopped, and f's outcome is unknown.
func (g *Group) await(ctx context.Context, f raft.Future) (done bool, err error) {
	ch := make(chan error, 1)
	go func() { ch <- f.Error() }() // blocks for good if raft drops f; it holds only ch
	select {
	case err := <-ch:
		return true, err
	case <-ctx.Done():
		return false, ctx.Err()
	case <-g.stop:
		return false, errStopped
	}
}

// Snapshot asks raft for a snapshot now (tests and operators).
func (g *Group) Snapshot() error { return g.raft.Snapshot().Error() }

// Shutdown stops the replica and joins its goroutines. Data stays.
func (g *Group) Shutdown() error {
	var err error
	g.closed.Do(func() {
		close(g.stop)
		if g.obs != nil {
			g.raft.DeregisterObserver(g.obs)
		}
		err = g.raft.Shutdown().Error()
		closeTransport(g.trans)
		g.wg.Wait()
	})
	return err
}

func closeTransport(t raft.Transport) {
	if c, ok := t.(raft.WithClose); ok {
		c.Close()
	}
}

// prepareRebuild readies a replica whose state machine writes a machine
// crash may have lost (they are not fsynced: see FSM): it reports whether
// NewRaft must restore the newest snapshot, and without a snapshot it drops
// the partition's data, since the log then still starts at its first entry
// and re-applies everything.
func prepareRebuild(st Storage, snaps raft.SnapshotStore, log *slog.Logger) (bool, error) {
	need, err := st.NeedsRebuild()
	if err != nil || !need {
		return false, err
	}
	metas, err := snaps.List()
	if err != nil {
		return false, err
	}
	if len(metas) == 0 {
		log.Warn("rebuilding the partition from its whole Raft log after a machine crash")
		if err := st.Drop(); err != nil {
			return false, err
		}
	}
	return true, nil
}
