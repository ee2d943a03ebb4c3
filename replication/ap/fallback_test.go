package ap

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
)

// The order is pinned: internal/node computed it this way before it moved
// here, and changing the formula would move every partition's hints to
// other nodes while a cluster runs mixed versions.
func TestFallbackOrderPinned(t *testing.T) {
	nodes := []string{"n1", "n2", "n3", "n4", "n5", "n6"}
	downSet := func(ids ...string) func(string) bool { return func(n string) bool { return slices.Contains(ids, n) } }
	for _, tc := range []struct {
		partition string
		down      func(string) bool
		want      []string
	}{
		{"sessions/*/3", nil, []string{"n1", "n2", "n3", "n5", "n6", "n4"}},
		{"sessions/*/4", nil, []string{"n4", "n2", "n3", "n6", "n1", "n5"}},
		{"sessions/*/3", downSet(), []string{"n1", "n2", "n3", "n5", "n6", "n4"}},
		// Down nodes last, keeping their order among themselves.
		{"sessions/*/3", downSet("n2", "n5"), []string{"n1", "n3", "n6", "n4", "n2", "n5"}},
		{"sessions/*/3", downSet(nodes...), []string{"n1", "n2", "n3", "n5", "n6", "n4"}},
	} {
		in := slices.Clone(nodes)
		if got := FallbackOrder(tc.partition, in, tc.down); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.partition, got, tc.want)
		}
		if !slices.Equal(in, nodes) {
			t.Errorf("%s: the candidates were reordered in place: %v", tc.partition, in)
		}
	}
	if got := FallbackOrder("sessions/*/3", nil, nil); len(got) != 0 {
		t.Errorf("no candidates: %v", got)
	}
}

// Partitions spread their first fallback over the nodes: no node takes every
// partition's hints.
func TestFallbackOrderSpreads(t *testing.T) {
	nodes := []string{"n1", "n2", "n3", "n4", "n5", "n6"}
	first := map[string]int{}
	for i := range 64 {
		first[FallbackOrder(fmt.Sprintf("sessions/*/%d", i), nodes, nil)[0]]++
	}
	if len(first) != len(nodes) {
		t.Errorf("first fallbacks of 64 partitions: %v, want every node among them", first)
	}
}

// referenceFallbackOrder is the order spelled out: the up nodes by hash,
// then the down ones by hash, each picked by a linear scan for the least.
func referenceFallbackOrder(partition string, candidates []string, down map[string]bool) []string {
	var out []string
	for _, wantDown := range []bool{false, true} {
		var left []string
		for _, n := range candidates {
			if down[n] == wantDown {
				left = append(left, n)
			}
		}
		for len(left) > 0 {
			best := 0
			for i, n := range left {
				hn, hb := xxhash.Sum64String(partition+n), xxhash.Sum64String(partition+left[best])
				if hn < hb || hn == hb && n < left[best] {
					best = i
				}
			}
			out = append(out, left[best])
			left = slices.Delete(left, best, best+1)
		}
	}
	return out
}

func TestFallbackOrderMatchesReference(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	for i := range 2000 {
		partition := fmt.Sprintf("ks/%c/%d", 'a'+rng.IntN(3), rng.IntN(16))
		var cands []string
		down := map[string]bool{}
		for j := range rng.IntN(9) {
			n := fmt.Sprintf("node-%d", j*7+rng.IntN(7))
			cands = append(cands, n)
			down[n] = rng.IntN(3) == 0
		}
		rng.Shuffle(len(cands), func(a, b int) { cands[a], cands[b] = cands[b], cands[a] })
		asked := map[string]int{}
		got := FallbackOrder(partition, cands, func(n string) bool { asked[n]++; return down[n] })
		if want := referenceFallbackOrder(partition, cands, down); !slices.Equal(got, want) {
			t.Fatalf("case %d (seed %d): FallbackOrder(%q, %v, down %v) = %v, want %v", i, seed, partition, cands, down, got, want)
		}
		for _, n := range cands {
			if asked[n] != 1 {
				t.Fatalf("case %d (seed %d): down(%s) asked %d times", i, seed, n, asked[n])
			}
		}
		// The input's order does not matter.
		rng.Shuffle(len(cands), func(a, b int) { cands[a], cands[b] = cands[b], cands[a] })
		if again := FallbackOrder(partition, cands, func(n string) bool { return down[n] }); !slices.Equal(again, got) {
			t.Fatalf("case %d (seed %d): reordered input gave %v, then %v", i, seed, got, again)
		}
	}
}
