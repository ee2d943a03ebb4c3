package cp

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/hashicorp/raft"

	"github.com/capkv/capkv/internal/kverrors"
	"github.com/capkv/capkv/replication"
	"github.com/capkv/capkv/ring"
	"github.com/capkv/capkv/shard"
)

// Running reports whether the replica still takes part in its group: a
// replica removed by a move shuts its Raft instance down by itself.
func (g *Group) Running() bool { return g.raft.State() != raft.Shutdown }

// Progress is Raft's applied index, which counts configuration and no-op
// entries too: what a learner is compared with before its promotion.
func (g *Group) Progress() uint64 { return g.raft.AppliedIndex() }

// Move changes the membership of t's partition to m.To, one server at a
// time, on this replica if it leads the group (see membership.go).
func (r *Replicator) Move(ctx context.Context, t replication.Target, m replication.Moving) (replication.MoveResult, error) {
	g, err := r.group(t)
	if err != nil {
		return replication.MoveResult{}, err
	}
	if !g.IsLeader() {
		return replication.MoveResult{NotLeader: true, Leader: g.Leader()}, nil
	}
	err = g.Move(ctx, m.To, PollApplied(m.Applied))
	var nl *NotLeaderError
	if errors.As(err, &nl) {
		return replication.MoveResult{NotLeader: true, Leader: nl.Leader}, nil
	}
	if err != nil {
		return replication.MoveResult{}, err
	}
	// Raft moved the data (log entries or a snapshot): say how much the
	// new replicas now hold, as an ap move says what it streamed. The move
	// is done either way: a failed count reports nothing, not a failure.
	keys, bytes, _ := liveSize(g.cfg.Storage)
	return replication.MoveResult{Keys: keys, Bytes: bytes}, nil
}

// liveSize counts the partition's live user records and their key and
// value bytes, leaving out the Raft bookkeeping records.
func liveSize(st Storage) (keys, bytes int64, err error) {
	err = st.Scan("", "", 0, false, func(key string, rec shard.Record) bool {
		if !strings.HasPrefix(key, reservedPrefix) {
			keys, bytes = keys+1, bytes+int64(len(key)+len(rec.Value))
		}
		return true
	})
	return keys, bytes, err
}

// Status is this node's replica of t's partition.
func (r *Replicator) Status(t replication.Target) replication.ReplicaStatus {
	g, ok := r.host.Group(t.Partition())
	if !ok || !g.Running() {
		return replication.ReplicaStatus{}
	}
	return replication.ReplicaStatus{Running: true, AppliedIndex: g.Progress(), Leader: g.IsLeader()}
}

// adoptPartition starts, joins or retires this node's replica of p.
func (r *Replicator) adoptPartition(p ring.PartitionInfo) error {
	id := p.ID.String()
	switch {
	case slices.Contains(p.Replicas, r.host.self):
		_, err := r.host.Ensure(id, p.Replicas, r.storage(id))
		return err
	case slices.Contains(p.Joining, r.host.self):
		_, err := r.host.Join(id, r.storage(id))
		return err
	}
	if _, ok := r.host.Group(id); !ok {
		return nil
	}
	// The partition moved away: the move removed this replica from the
	// group before the map said so. Its log and data go.
	if err := r.host.Remove(id); err != nil {
		return err
	}
	if d, ok := r.storage(id).(interface{ Drop() error }); ok {
		if err := d.Drop(); err != nil {
			return fmt.Errorf("%w: drop data of %s after it moved: %v", kverrors.ErrInternal, id, err)
		}
	}
	return nil
}
