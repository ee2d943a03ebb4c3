package ap

import (
	"github.com/cespare/xxhash/v2"

	"github.com/capkv/capkv/consistency"

	"github.com/capkv/capkv/shard"
)

// Leaves is the number of leaves of a partition's Merkle tree. Keys are
// spread over leaves by hash; a leaf's hash is the sum of its keys' hashes
// (of key and encoded clock), so it does not depend on scan order and two
// replicas agree on a leaf exactly when they hold the same clocks for its
// keys (up to hash collisions). Anti-entropy exchanges only differing leaves.
//
// The tree is flat (one level of leaves under the root): at our partition
// sizes the 64 leaf hashes are one small message, and a deeper tree would
// only save that message.
const Leaves = 64

// LeafOf is the leaf of a key.
func LeafOf(key string) uint32 { return uint32(xxhash.Sum64String(key) % Leaves) }

func entryHash(key string, clock []byte) uint64 {
	d := xxhash.New()
	d.WriteString(key)
	d.Write([]byte{0})
	d.Write(clock)
	return d.Sum64()
}

// Digest computes the leaf hashes of a partition replica.
func (s *ClockStore) Digest(partition string) ([]uint64, error) {
	leaves := make([]uint64, Leaves)
	err := s.st.Replica(partition).Scan("", "", 0, true, func(key string, rec shard.Record) bool {
		leaves[LeafOf(key)] += entryHash(key, rec.Value)
		return true
	})
	return leaves, err
}

// Root is the root hash of a digest.
func Root(leaves []uint64) uint64 {
	d := xxhash.New()
	var b [8]byte
	for _, l := range leaves {
		for i := range b {
			b[i] = byte(l >> (8 * i))
		}
		d.Write(b[:])
	}
	return d.Sum64()
}

// LeafEntries returns the keys and encoded clocks of one leaf.
func (s *ClockStore) LeafEntries(partition string, leaf uint32) (map[string][]byte, error) {
	out := map[string][]byte{}
	err := s.st.Replica(partition).Scan("", "", 0, true, func(key string, rec shard.Record) bool {
		if LeafOf(key) == leaf {
			out[key] = append([]byte(nil), rec.Value...)
		}
		return true
	})
	return out, err
}

// PurgeCandidates returns the keys and encoded clocks of the partition's
// tombstones that are purgeable at cutoff (see purgeable), in one scan: a
// repair looks for them in every leaf, and a scan per leaf made a converged
// round cost 64 scans of the partition.
func (s *ClockStore) PurgeCandidates(partition string, cutoff consistency.Timestamp) (map[string][]byte, error) {
	out := map[string][]byte{}
	err := s.st.Replica(partition).Scan("", "", 0, true, func(key string, rec shard.Record) bool {
		if d, err := consistency.DecodeDVV(rec.Value); err == nil && purgeable(d, cutoff) {
			out[key] = append([]byte(nil), rec.Value...)
		}
		return true
	})
	return out, err
}
