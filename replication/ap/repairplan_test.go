package ap

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/capkv/capkv/consistency"
)

func TestOtherReplicas(t *testing.T) {
	for _, tc := range []struct {
		self     string
		replicas []string
		want     []string
	}{
		{"a", []string{"a", "b", "c"}, []string{"b", "c"}},
		{"b", []string{"a", "b", "c"}, []string{"a", "c"}},
		{"a", []string{"a"}, nil},
		{"x", []string{"a", "b"}, []string{"a", "b"}},
	} {
		if got := otherReplicas(tc.self, tc.replicas); !slices.Equal(got, tc.want) {
			t.Errorf("otherReplicas(%s, %v) = %v, want %v", tc.self, tc.replicas, got, tc.want)
		}
	}
}

func TestDifferingLeaves(t *testing.T) {
	for _, tc := range []struct {
		name         string
		mine, theirs []uint64
		want         []uint32
	}{
		{"equal", []uint64{1, 2, 3}, []uint64{1, 2, 3}, nil},
		{"one", []uint64{1, 2, 3}, []uint64{1, 9, 3}, []uint32{1}},
		{"all", []uint64{1, 2, 3}, []uint64{4, 5, 6}, []uint32{0, 1, 2}},
		{"empty on their side", []uint64{0, 2, 0}, []uint64{0, 0, 0}, []uint32{1}},
		{"their digest short", []uint64{1, 2, 3}, []uint64{1}, []uint32{1, 2}},
		{"their digest long", []uint64{1, 2}, []uint64{1, 2, 3}, nil},
		{"no digest", []uint64{1, 0}, nil, []uint32{0, 1}},
	} {
		if got := differingLeaves(tc.mine, tc.theirs); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestKeysToPush(t *testing.T) {
	b := func(s string) []byte { return []byte(s) }
	for _, tc := range []struct {
		name          string
		local, remote map[string][]byte
		want          []string
	}{
		{"same", map[string][]byte{"k": b("1")}, map[string][]byte{"k": b("1")}, nil},
		{"missing there", map[string][]byte{"k": b("1"), "j": b("2")}, map[string][]byte{"k": b("1")}, []string{"j"}},
		{"different there", map[string][]byte{"k": b("1")}, map[string][]byte{"k": b("2")}, []string{"k"}},
		{"only there", map[string][]byte{}, map[string][]byte{"k": b("1")}, nil},
		{"sorted", map[string][]byte{"c": b("1"), "a": b("1"), "b": b("1")}, nil, []string{"a", "b", "c"}},
	} {
		if got := keysToPush(tc.local, tc.remote); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestPurgeCutoff(t *testing.T) {
	now := ts(60 * 60 * 1000) // an hour after base
	for _, tc := range []struct {
		grace time.Duration
		want  consistency.Timestamp
	}{
		{time.Minute, ts(59 * 60 * 1000)},
		{0, ts(50 * 60 * 1000)}, // the default grace
		{-time.Second, ts(50 * 60 * 1000)},
		{time.Millisecond, ts(60*60*1000 - 1)},
	} {
		if got := purgeCutoff(now, tc.grace); got != tc.want {
			t.Errorf("purgeCutoff(now, %v) = %v, want %v", tc.grace, got, tc.want)
		}
	}
	// An HLC younger than the grace (a test clock near zero) purges nothing.
	if got := purgeCutoff(consistency.MakeTimestamp(1000, 0), time.Minute); got != 0 {
		t.Errorf("cutoff of a clock younger than the grace: %v, want 0", got)
	}
}

func TestPurgeCandidates(t *testing.T) {
	zero, none := consistency.DVV{}, consistency.VV{}
	v := mint(t, zero, none, "a", "x", ts(10), false)
	old := mint(t, v, v.Context(), "a", "", ts(20), true)
	young := mint(t, v, v.Context(), "a", "", ts(200), true)
	beside := mint(t, old, none, "b", "y", ts(15), false)
	local := map[string][]byte{
		"value": v.Encode(nil), "old-2": old.Encode(nil), "old-1": old.Encode(nil), "young": young.Encode(nil),
		"beside-a-value": beside.Encode(nil), "garbage": []byte("not a clock"),
	}
	if got, want := purgeCandidates(local, ts(100)), []string{"old-1", "old-2"}; !slices.Equal(got, want) {
		t.Errorf("cutoff 100: %v, want %v", got, want)
	}
	if got, want := purgeCandidates(local, ts(201)), []string{"old-1", "old-2", "young"}; !slices.Equal(got, want) {
		t.Errorf("cutoff 201: %v, want %v", got, want)
	}
	if got := purgeCandidates(local, ts(20)); len(got) != 0 {
		t.Errorf("cutoff at the tombstone's time: %v", got)
	}
}

func TestPurgeLocally(t *testing.T) {
	for _, tc := range []struct {
		name   string
		others []string
		purged map[string]bool
		want   bool
	}{
		{"every other purged", []string{"b", "c"}, map[string]bool{"b": true, "c": true}, true},
		{"one refused", []string{"b", "c"}, map[string]bool{"b": true, "c": false}, false},
		{"one not asked", []string{"b", "c"}, map[string]bool{"b": true}, false},
		{"an answer from a non-replica does not count", []string{"b"}, map[string]bool{"x": true}, false},
		{"no other replica", nil, nil, true},
	} {
		if got := purgeLocally(tc.others, tc.purged); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// digestOf is a leaf digest computed the way ClockStore.Digest does, from a
// map instead of a store.
func digestOf(entries map[string][]byte) []uint64 {
	leaves := make([]uint64, Leaves)
	for k, enc := range entries {
		leaves[LeafOf(k)] += entryHash(k, enc)
	}
	return leaves
}

// On random pairs of replica states: the plan agrees with a naive
// reference, a key to push always lies in a differing leaf (comparing
// digests loses nothing), and after the pushes nothing is left to push.
func TestRepairPlanProperties(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 2))
	for i := range 500 {
		local, remote := map[string][]byte{}, map[string][]byte{}
		for k := range 1 + rng.IntN(200) {
			key := fmt.Sprintf("k%d", k)
			enc := []byte(fmt.Sprintf("clock-%d", rng.IntN(3)))
			switch rng.IntN(4) {
			case 0:
				local[key] = enc
			case 1:
				remote[key] = enc
			case 2:
				local[key], remote[key] = enc, enc
			case 3:
				local[key], remote[key] = enc, append(slices.Clone(enc), '!')
			}
		}
		leaves := differingLeaves(digestOf(local), digestOf(remote))
		// A leaf differs when some key of it is held differently (or by one
		// side only); equal leaf hashes otherwise (up to 64-bit collisions).
		differs := map[uint32]bool{}
		for _, side := range []map[string][]byte{local, remote} {
			for k := range side {
				if string(local[k]) != string(remote[k]) {
					differs[LeafOf(k)] = true
				}
			}
		}
		var wantLeaves []uint32
		for leaf := range uint32(Leaves) {
			if differs[leaf] {
				wantLeaves = append(wantLeaves, leaf)
			}
		}
		if !slices.Equal(leaves, wantLeaves) {
			t.Fatalf("case %d (seed %d): differing leaves %v, want %v", i, seed, leaves, wantLeaves)
		}
		push := keysToPush(local, remote)
		var wantPush []string
		for k, enc := range local {
			if r, ok := remote[k]; !ok || string(r) != string(enc) {
				wantPush = append(wantPush, k)
			}
		}
		slices.Sort(wantPush)
		if !slices.Equal(push, wantPush) {
			t.Fatalf("case %d (seed %d): keysToPush %v, want %v", i, seed, push, wantPush)
		}
		for _, k := range push {
			if !slices.Contains(leaves, LeafOf(k)) {
				t.Fatalf("case %d (seed %d): %s must be pushed but its leaf %d does not differ", i, seed, k, LeafOf(k))
			}
		}
		for _, k := range push {
			remote[k] = local[k]
		}
		if again := keysToPush(local, remote); len(again) != 0 {
			t.Fatalf("case %d (seed %d): still to push after the push: %v", i, seed, again)
		}
	}
}
