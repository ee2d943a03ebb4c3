package ap

import (
	"cmp"
	"slices"

	"github.com/cespare/xxhash/v2"
)

// FallbackOrder orders a partition's sloppy-quorum fallbacks: the order in
// which a write's failed stores are retried as hints (WriteRequest.Fallbacks).
// candidates are the eligible nodes outside the preference list (in the
// partition's region when it has one); down reports the nodes the failure
// detector holds down (nil: none). The input is not modified.
//
// Nodes are sorted by xxhash64(partition + node), so each partition spreads
// its hints over different nodes instead of piling every partition's onto
// the same one; nodes held down go last, in the same order, because a hint
// is only useful on a node that takes it now.
func FallbackOrder(partition string, candidates []string, down func(string) bool) []string {
	type cand struct {
		node string
		hash uint64
		down bool
	}
	cs := make([]cand, len(candidates))
	for i, n := range candidates {
		// down is asked once per node: it may take the detector's lock, and
		// one answer per node keeps the order consistent.
		cs[i] = cand{node: n, hash: xxhash.Sum64String(partition + n), down: down != nil && down(n)}
	}
	slices.SortFunc(cs, func(a, b cand) int {
		if a.down != b.down {
			if a.down {
				return 1
			}
			return -1
		}
		// Equal hashes (never seen for distinct IDs) fall back to the ID, so
		// the order never depends on the input's.
		return cmp.Or(cmp.Compare(a.hash, b.hash), cmp.Compare(a.node, b.node))
	})
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.node
	}
	return out
}
