package cp

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/internal/kverrors"
	"github.com/capkv/capkv/internal/watch"
	"github.com/capkv/capkv/replication"
	"github.com/capkv/capkv/ring"
	"github.com/capkv/capkv/shard"
)

// Replicator is the cp mode's replication.Replicator: every request runs on
// this node's replica of the key's partition. Writes and linearizable reads
// need the leader (a follower answers a *NotLeaderError naming it); stale
// reads are served by any replica.
type Replicator struct {
	host    *Host
	clock   *consistency.Clock
	storage func(partition string) Storage
	// unsafeLocalReads serves linearizable reads without ReadIndex. TEST
	// ONLY: the harness shows its checker catches the stale reads it causes.
	unsafeLocalReads bool
	watch            *watch.Hub
}

var _ replication.Replicator = (*Replicator)(nil)

// ReplicatorConfig wires a cp replicator.
type ReplicatorConfig struct {
	Host *Host
	// Clock stamps writes before they are proposed (the FSM must not read a
	// clock: every replica applies the same timestamp).
	Clock *consistency.Clock
	// Storage opens the partition replica a group applies to.
	Storage          func(partition string) Storage
	UnsafeLocalReads bool
	Watch            *watch.Hub
}

// NewReplicator returns the cp replicator over host's groups.
func NewReplicator(c ReplicatorConfig) *Replicator {
	return &Replicator{host: c.Host, clock: c.Clock, storage: c.Storage, unsafeLocalReads: c.UnsafeLocalReads, watch: c.Watch}
}

// Forwarding: a request waits for an election until shortly before its
// deadline, and is refused at once where no majority is reachable.
func (r *Replicator) Forwarding() replication.Forwarding {
	return replication.Forwarding{WaitForLeader: true}
}

// Serves reports whether this node runs a replica of t's partition.
func (r *Replicator) Serves(t replication.Target) bool {
	g, ok := r.host.Group(t.Partition())
	return ok && g.Running()
}

func (r *Replicator) group(t replication.Target) (*Group, error) {
	g, ok := r.host.Group(t.Partition())
	if !ok {
		return nil, fmt.Errorf("%w: %s runs no replica of %s", kverrors.ErrUnavailable, r.host.self, t.Partition())
	}
	return g, nil
}

// receipt says what Raft guaranteed: a committed write or a confirmed read
// needed a majority; a stale read says how far behind it may be.
func (r *Replicator) receipt(g *Group, index uint64, majority bool) replication.Receipt {
	rc := replication.Receipt{AckedBy: []string{r.host.self}, AppliedIndex: index, MajorityReachable: majority}
	if !majority {
		rc.AppliedIndex = g.AppliedIndex()
		if lc := g.LastContact(); !lc.IsZero() {
			rc.StalenessMs = max(time.Since(lc).Milliseconds(), 0)
		} else {
			rc.StalenessMs = -1 // never heard from a leader
		}
	}
	return rc
}

// barrier confirms leadership for a linearizable read (ReadIndex) and
// returns the receipt of what the read may rely on.
func (r *Replicator) barrier(ctx context.Context, g *Group, level consistency.Level) (replication.Receipt, error) {
	if level != consistency.Linearizable || r.unsafeLocalReads {
		return r.receipt(g, 0, false), nil
	}
	idx, err := g.ReadBarrier(ctx)
	if err != nil {
		return replication.Receipt{}, err
	}
	return r.receipt(g, idx, true), nil
}

// Get reads a key: after a ReadIndex barrier on the leader for linearizable
// reads, from this replica as it is for stale ones.
func (r *Replicator) Get(ctx context.Context, t replication.Target, key string) (replication.ReadResult, error) {
	g, err := r.group(t)
	if err != nil {
		return replication.ReadResult{}, err
	}
	rc, err := r.barrier(ctx, g, t.Level)
	if err != nil {
		return replication.ReadResult{}, err
	}
	rec, found, err := g.cfg.Storage.Get(key)
	if err != nil {
		return replication.ReadResult{}, err
	}
	if !found || rec.Tombstone {
		return replication.ReadResult{Receipt: rc}, fmt.Errorf("%w: key %q", kverrors.ErrNotFound, key)
	}
	return replication.ReadResult{Receipt: rc, Item: item(key, rec)}, nil
}

func item(key string, rec shard.Record) replication.Item {
	return replication.Item{Key: key, Value: rec.Value, Version: rec.Version, Timestamp: uint64(rec.Timestamp)}
}

// Write proposes a put, delete or compare-and-set to the partition's group,
// stamped with the leader's HLC, and returns once it is applied here.
func (r *Replicator) Write(ctx context.Context, t replication.Target, w replication.Write) (replication.WriteResult, error) {
	g, err := r.group(t)
	if err != nil {
		return replication.WriteResult{}, err
	}
	cmd := Command{Key: w.Key, Value: w.Value, Timestamp: r.clock.Now(), RequestID: t.RequestID}
	switch w.Op {
	case replication.OpPut:
		cmd.Op = OpPut
	case replication.OpDelete:
		cmd.Op, cmd.Value = OpDelete, nil
	case replication.OpCAS:
		if !w.HasExpectValue && !w.HasExpectVersion {
			return replication.WriteResult{}, fmt.Errorf("%w: compare-and-set needs an expected value or an expected version (0 = key absent)", kverrors.ErrInvalidArgument)
		}
		cmd.Op = OpCAS
		cmd.HasExpectedVal, cmd.ExpectedValue = w.HasExpectValue, w.ExpectValue
		cmd.HasExpectedVer, cmd.ExpectedVersion = w.HasExpectVersion, w.ExpectVersion
	default:
		return replication.WriteResult{}, fmt.Errorf("%w: write op %d", kverrors.ErrInvalidArgument, w.Op)
	}
	res, err := g.Propose(ctx, cmd)
	if err != nil {
		return replication.WriteResult{}, err
	}
	rc := r.receipt(g, res.Version, true)
	rc.AckedBy = g.AckedBy(res.Index)
	return replication.WriteResult{Version: res.Version, Timestamp: uint64(res.Timestamp), Existed: res.Existed, Receipt: rc}, nil
}

// Scan lists up to limit keys of t's partition with prefix after after, in
// key order, behind the same barrier as Get.
func (r *Replicator) Scan(ctx context.Context, t replication.Target, prefix, after string, limit int) (replication.ScanResult, error) {
	g, err := r.group(t)
	if err != nil {
		return replication.ScanResult{}, err
	}
	rc, err := r.barrier(ctx, g, t.Level)
	if err != nil {
		return replication.ScanResult{}, err
	}
	out := replication.ScanResult{Receipt: rc}
	err = g.cfg.Storage.Scan(prefix, after, limit+1, false, func(key string, rec shard.Record) bool {
		out.Items = append(out.Items, item(key, rec))
		return true
	})
	if len(out.Items) > limit {
		out.Items, out.More = out.Items[:limit], true
	}
	return out, err
}

// Watch subscribes to what this replica applies.
func (r *Replicator) Watch(t replication.Target, prefix string) (*watch.Sub, error) {
	return r.watch.Subscribe(t.Partition(), prefix)
}

// Repair has nothing to do: Raft keeps the replicas identical.
func (r *Replicator) Repair(_ context.Context, t replication.Target) (replication.RepairResult, error) {
	return replication.RepairResult{}, fmt.Errorf("%w: %q is a cp keyspace: Raft keeps its replicas identical, there is nothing to repair",
		kverrors.ErrWrongMode, t.Placement.Keyspace.Name)
}

// Adopt starts this node's replica of every placeable partition of every cp
// keyspace in r, and removes the groups (running or only stored) of
// keyspaces r no longer has.
func (r *Replicator) Adopt(rg *ring.Ring) error {
	if err := r.removeDropped(rg); err != nil {
		return err
	}
	for _, ks := range rg.Keyspaces() {
		if ks.Mode != consistency.CP {
			continue
		}
		for _, p := range rg.Partitions(ks.Name) {
			if p.Err != "" {
				continue
			}
			if err := r.adoptPartition(p); err != nil {
				return err
			}
		}
	}
	return nil
}

// removeDropped removes every group whose keyspace is not in rg. Names
// starting with '_' are the node's own groups (the metadata group), never a
// keyspace's.
func (r *Replicator) removeDropped(rg *ring.Ring) error {
	ids := map[string]bool{}
	for _, g := range r.host.Groups() {
		ids[g.ID()] = true
	}
	if l, ok := r.host.logs.(interface{ RaftGroups() ([]string, error) }); ok {
		stored, err := l.RaftGroups()
		if err != nil {
			return err
		}
		for _, id := range stored {
			ids[id] = true
		}
	}
	var errs []error
	for id := range ids {
		pid, err := ring.ParsePartitionID(id)
		if strings.HasPrefix(id, "_") || err != nil {
			continue
		}
		if _, ok := rg.Keyspace(pid.Keyspace); ok {
			continue
		}
		errs = append(errs, r.host.Remove(id))
	}
	return errors.Join(errs...)
}

// RedirectTo names the leader a request should go to ("" when unknown).
func (e *NotLeaderError) RedirectTo() string { return e.Leader }
