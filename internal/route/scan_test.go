package route

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/capkv/capkv/api"
)

// TestMergePagesPaginates checks MergePages against the brute-force truth:
// paging through random partitions with random limits returns every key
// exactly once, in order.
func TestMergePagesPaginates(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	for round := range 300 {
		parts := make([][]string, 1+rng.IntN(5))
		var all []string
		for i := range parts {
			for range rng.IntN(20) {
				key := fmt.Sprintf("k%03d", rng.IntN(1000)*10+i) // unique per partition
				if !slices.Contains(parts[i], key) {
					parts[i] = append(parts[i], key)
					all = append(all, key)
				}
			}
			sort.Strings(parts[i])
		}
		sort.Strings(all)
		limit := 1 + rng.IntN(7)
		var got []string
		after := ""
		for pages := 0; ; pages++ {
			if pages > 1000 {
				t.Fatalf("round %d: no progress", round)
			}
			var ps []Page
			for _, keys := range parts {
				var p Page
				for _, k := range keys {
					if k > after {
						if len(p.KVs) == limit {
							p.More = true
							break
						}
						p.KVs = append(p.KVs, &api.KeyValue{Key: k})
					}
				}
				ps = append(ps, p)
			}
			kvs, more := MergePages(ps, limit)
			if len(kvs) > limit {
				t.Fatalf("round %d: page of %d keys, limit %d", round, len(kvs), limit)
			}
			for _, kv := range kvs {
				got = append(got, kv.Key)
			}
			if !more {
				break
			}
			if len(kvs) == 0 {
				t.Fatalf("round %d: more without keys", round)
			}
			after = kvs[len(kvs)-1].Key
		}
		if !slices.Equal(got, all) {
			t.Fatalf("round %d (limit %d): paged %v, want %v", round, limit, got, all)
		}
	}
}
