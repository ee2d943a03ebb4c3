package ap

import (
	"bytes"
	"slices"
	"time"

	"github.com/capkv/capkv/consistency"
)

// The decisions of an anti-entropy repair (antientropy.go), as pure
// functions of what the replicas sent: Repair does the RPCs and the merges
// around them.

// otherReplicas is the preference list without self, in its order.
func otherReplicas(self string, replicas []string) []string {
	var out []string
	for _, r := range replicas {
		if r != self {
			out = append(out, r)
		}
	}
	return out
}

// differingLeaves lists, in leaf order, the leaves of mine whose hash theirs
// does not share: only those are exchanged. A leaf theirs lacks (a digest
// too short) differs, so a bad digest costs a leaf fetch, never a skipped
// leaf or a panic.
func differingLeaves(mine, theirs []uint64) []uint32 {
	var out []uint32
	for leaf, h := range mine {
		if leaf >= len(theirs) || theirs[leaf] != h {
			out = append(out, uint32(leaf))
		}
	}
	return out
}

// keysToPush lists, sorted, the keys of a leaf whose local encoded clock the
// peer lacks or holds differently. Encodings are canonical, so equal bytes
// are equal clocks; keys only the peer holds were pulled before the push and
// need nothing. (A peer's different clock may be newer: storing ours merges,
// it never overwrites.)
func keysToPush(local, remote map[string][]byte) []string {
	var out []string
	for key, enc := range local {
		if !bytes.Equal(remote[key], enc) {
			out = append(out, key)
		}
	}
	slices.Sort(out)
	return out
}

// purgeCutoff is the HLC time before which a tombstone is old enough to
// purge at now: grace earlier (DefaultTombstoneGrace when grace <= 0). A
// clock younger than the grace purges nothing rather than wrap around.
func purgeCutoff(now consistency.Timestamp, grace time.Duration) consistency.Timestamp {
	if grace <= 0 {
		grace = DefaultTombstoneGrace
	}
	g := consistency.MakeTimestamp(grace.Milliseconds(), 0)
	if now < g {
		return 0
	}
	return now - g
}

// purgeCandidates lists, sorted, the keys of a leaf whose clock holds only
// tombstones older than cutoff (purgeable). A clock that does not decode is
// left alone: a repair never deletes what it cannot read.
func purgeCandidates(local map[string][]byte, cutoff consistency.Timestamp) []string {
	var out []string
	for key, enc := range local {
		if d, err := consistency.DecodeDVV(enc); err == nil && purgeable(d, cutoff) {
			out = append(out, key)
		}
	}
	slices.Sort(out)
	return out
}

// purgeLocally reports whether this replica may drop its copy of a
// candidate: only if every other replica dropped its own (purged[node], a
// compare-and-delete that found the pushed clock unchanged). A tombstone is
// garbage only once every replica has let it go; one that kept the key (a
// write landed after the push) keeps it here too, and the next repair
// spreads the newer clock.
func purgeLocally(others []string, purged map[string]bool) bool {
	for _, n := range others {
		if !purged[n] {
			return false
		}
	}
	return true
}
