package ap

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/replication"
	"github.com/capkv/capkv/ring"
)

// Rebalancing in ap. While a partition moves, its coordinators write to
// the joining nodes as well as to its replicas (Write), and one old replica
// streams what it holds to them (Move). Once the map makes the joiners
// replicas, a node that is no longer one hands what it holds to the new
// replicas once more (writes it took while other coordinators still used
// the old map) and then drops the partition (retire).

// Move streams this replica's copy of t's partition to the joining nodes.
func (r *Replicator) Move(ctx context.Context, t replication.Target, m replication.Moving) (replication.MoveResult, error) {
	var out replication.MoveResult
	for _, to := range m.Joining {
		if to == r.cfg.Self {
			continue
		}
		st, err := StreamPartition(ctx, r.clocks, r.transport, t.Partition(), to, lww(t), nil)
		out.Keys += int64(st.Keys)
		out.Bytes += st.Bytes
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// owns reports whether this node replicates or receives partition; a
// partition it cannot judge (no map yet, a keyspace it does not know, an id
// that is not a keyspace's) counts as owned.
func (r *Replicator) owns(partition string) bool {
	pid, err := ring.ParsePartitionID(partition)
	if err != nil || r.cfg.Ring == nil {
		return true
	}
	rg := r.cfg.Ring()
	if rg == nil || rg.Epoch() == 0 {
		return true
	}
	p, err := rg.PlacementOf(pid)
	if err != nil {
		return true
	}
	return slices.Contains(p.Replicas, r.cfg.Self) || slices.Contains(p.Joining, r.cfg.Self)
}

// Status: an ap replica is running whenever the node is.
func (r *Replicator) Status(replication.Target) replication.ReplicaStatus {
	return replication.ReplicaStatus{Running: true}
}

// retire hands off and drops the ap partitions this node still stores but
// neither replicates nor receives any more (they moved away).
func (u *runner) retire() {
	rg := u.r.cfg.Ring()
	if rg.Epoch() == 0 {
		return
	}
	parts, err := u.r.cfg.Store.Partitions()
	if err != nil {
		u.r.cfg.Log.Warn("retire moved partitions", "err", err)
		return
	}
	for _, id := range parts {
		if strings.HasPrefix(id, "_") {
			continue
		}
		pid, err := ring.ParsePartitionID(id)
		if err != nil {
			continue
		}
		ks, ok := rg.Keyspace(pid.Keyspace)
		if !ok || ks.Mode != consistency.AP {
			continue // dropped keyspaces are the node's to delete; cp is cp's
		}
		p, err := rg.PlacementOf(pid)
		if err != nil || slices.Contains(p.Replicas, u.r.cfg.Self) || slices.Contains(p.Joining, u.r.cfg.Self) {
			continue
		}
		select {
		case <-u.stop:
			return
		default:
		}
		if err := u.handOver(p); err != nil {
			u.r.cfg.Log.Warn("moved partition not handed over yet; retrying", "partition", id, "err", err)
			continue
		}
		if err := u.r.cfg.Store.Replica(id).Drop(); err != nil {
			u.r.cfg.Log.Warn("drop moved partition", "partition", id, "err", err)
			continue
		}
		u.r.cfg.Log.Info("partition moved away: handed over and dropped", "partition", id, "to", p.Replicas)
	}
}

// handOver streams this node's copy of p to every replica of p.
func (u *runner) handOver(p ring.Placement) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	lww := p.Keyspace.Resolve == ring.ResolveLWW
	for _, to := range p.Replicas {
		if _, err := StreamPartition(ctx, u.r.clocks, u.r.transport, p.Partition.String(), to, lww, nil); err != nil {
			return fmt.Errorf("to %s: %w", to, err)
		}
	}
	return nil
}
