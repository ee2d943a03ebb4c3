package ap

import (
	"context"
	"fmt"
	"time"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/consistency"
)

// AntiEntropyPeers is what a repair needs from other replicas.
type AntiEntropyPeers interface {
	Peers
	Digest(ctx context.Context, node string, partition string) ([]uint64, error)
	Leaf(ctx context.Context, node string, partition string, leaf uint32) (map[string][]byte, error)
	Purge(ctx context.Context, node string, partition, key string, clock []byte) (bool, error)
}

// RepairStats counts what one repair exchanged.
type RepairStats struct {
	LeavesDiffering, Pulled, Pushed, Purged int
}

// DefaultTombstoneGrace is how old (HLC time) a tombstone must be before a
// repair that found every replica holding it purges it. The wait bounds the
// harm of a hint for an older write still on its way: handed over after the
// purge, it would bring the deleted value back.
const DefaultTombstoneGrace = 10 * time.Minute

// Repair makes this replica and the others of a partition identical: it
// pulls the differing leaves of every other replica and merges them here,
// then pushes what the others lack. With every replica reachable, one call
// leaves all of them equal (the merge of all their clocks). What to
// exchange and purge is decided by repairplan.go; this is the RPC flow.
func (c *Coordinator) Repair(ctx context.Context, peers AntiEntropyPeers, partition string, replicas []string, lww bool) (RepairStats, error) {
	var st RepairStats
	others := otherReplicas(c.Self, replicas)
	mine, err := c.Clocks.Digest(partition)
	if err != nil {
		return st, err
	}
	// Pull: merge every differing leaf of every other replica into ours.
	theirs := make(map[string][]uint64, len(others))
	for _, node := range others {
		if st.Pulled > 0 { // what the last node gave changed our leaves
			if mine, err = c.Clocks.Digest(partition); err != nil {
				return st, err
			}
		}
		d, err := peers.Digest(ctx, node, partition)
		if err != nil {
			return st, fmt.Errorf("digest of %s from %s: %w", partition, node, err)
		}
		theirs[node] = d
		for _, leaf := range differingLeaves(mine, d) {
			st.LeavesDiffering++
			remote, err := peers.Leaf(ctx, node, partition, leaf)
			if err != nil {
				return st, err
			}
			for key, enc := range remote {
				d, err := consistency.DecodeDVV(enc)
				if err != nil {
					return st, fmt.Errorf("clock of %q from %s: %w", key, node, err)
				}
				if _, err := c.Clocks.Merge(partition, key, d, lww); err != nil {
					return st, err
				}
				st.Pulled++
			}
		}
	}
	// Push: every other replica gets what it lacks of our (now merged)
	// state. Its digest from the pull still stands: nothing was sent to it
	// since, and a write it took meanwhile only makes us push a key that it
	// merges as a no-op or that the next round finds.
	if st.Pulled > 0 {
		if mine, err = c.Clocks.Digest(partition); err != nil {
			return st, err
		}
	}
	for _, node := range others {
		for _, leaf := range differingLeaves(mine, theirs[node]) {
			local, err := c.Clocks.LeafEntries(partition, leaf)
			if err != nil {
				return st, err
			}
			remote, err := peers.Leaf(ctx, node, partition, leaf)
			if err != nil {
				return st, err
			}
			for _, key := range keysToPush(local, remote) {
				if _, err := peers.Store(ctx, node, &api.ReplicaStoreRequest{Partition: partition, Key: key, Clock: local[key], Lww: lww}); err != nil {
					return st, err
				}
				st.Pushed++
			}
		}
	}
	// Every replica answered and now holds what this one holds: tombstones
	// old enough can go, from every replica, each only if unchanged since.
	// Without an HLC there is no age to judge by: nothing is purged.
	if c.Clock == nil {
		return st, nil
	}
	cutoff := purgeCutoff(c.Clock.Now(), c.TombstoneGrace)
	local, err := c.Clocks.PurgeCandidates(partition, cutoff)
	if err != nil {
		return st, err
	}
	for _, key := range purgeCandidates(local, cutoff) {
		enc := local[key]
		// Every other replica is asked, even after one refused: one that
		// dropped it gets any newer clock back from the next repair.
		purged := map[string]bool{}
		for _, node := range others {
			ok, err := peers.Purge(ctx, node, partition, key, enc)
			if err != nil {
				return st, err
			}
			purged[node] = ok
		}
		if !purgeLocally(others, purged) {
			continue
		}
		if ok, err := c.Clocks.Purge(partition, key, enc); err != nil {
			return st, err
		} else if ok {
			st.Purged++
		}
	}
	return st, nil
}
