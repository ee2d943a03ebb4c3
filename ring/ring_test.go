package ring

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/internal/kverrors"
)

var seedFlag = flag.Uint64("ring.seed", 0, "seed for randomized ring tests (0: time-based)")

// newRand returns a seeded generator and logs the seed so a failure can be
// replayed with -ring.seed.
func newRand(t testing.TB) *rand.Rand {
	seed := *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (replay with -ring.seed=%d)", seed, seed)
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

func makeNodes(n int, region string) []Node {
	nodes := make([]Node, n)
	for i := range nodes {
		nodes[i] = Node{ID: fmt.Sprintf("%s-node-%02d", cmp.Or(region, "x"), i), Addr: fmt.Sprintf("10.0.0.%d:7000", i), Region: region}
	}
	return nodes
}

func mustNew(t testing.TB, topo Topology, o Options) *Ring {
	t.Helper()
	r, err := New(topo, o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return r
}

// prefs returns the preference lists of a keyspace in one region, by index.
func prefs(t testing.TB, r *Ring, keyspace, region string) [][]string {
	t.Helper()
	var out [][]string
	for _, p := range r.Partitions(keyspace) {
		if p.ID.Region != region {
			continue
		}
		if p.Err != "" {
			t.Fatalf("partition %s: %s", p.ID, p.Err)
		}
		if p.ID.Index != len(out) {
			t.Fatalf("partition %s listed out of order", p.ID)
		}
		out = append(out, p.Replicas)
	}
	return out
}

var nodeCounts = []int{3, 4, 5, 7, 10, 16, 32, 64}

// TestPreferenceListsAndBalance checks that every preference list has N
// distinct existing nodes and measures how evenly partitions spread.
func TestPreferenceListsAndBalance(t *testing.T) {
	const q, n = 1024, 3
	for _, count := range nodeCounts {
		nodes := makeNodes(count, "")
		r := mustNew(t, Topology{Nodes: nodes, Keyspaces: []KeyspaceConfig{{Name: "s", Mode: consistency.AP, Partitions: q, Replicas: n}}}, Options{})
		primaries := map[string]int{}
		replicas := map[string]int{}
		for i, list := range prefs(t, r, "s", "") {
			if len(list) != n {
				t.Fatalf("%d nodes: partition %d has %d replicas, want %d", count, i, len(list), n)
			}
			for j, id := range list {
				if _, ok := r.Node(id); !ok {
					t.Fatalf("%d nodes: partition %d: unknown node %q", count, i, id)
				}
				if slices.Contains(list[:j], id) {
					t.Fatalf("%d nodes: partition %d: node %q twice in %v", count, i, id, list)
				}
				replicas[id]++
			}
			primaries[list[0]]++
		}
		pMax, pMean := maxMean(primaries, nodes)
		rMax, rMean := maxMean(replicas, nodes)
		t.Logf("%2d nodes: primaries max/mean = %.2f (max %d, mean %.1f); replicas max/mean = %.2f (max %d, mean %.1f)",
			count, float64(pMax)/pMean, pMax, pMean, float64(rMax)/rMean, rMax, rMean)
		// Bounds measured with 64 vnodes, plus headroom: the spread comes from the
		// token positions (about 1/sqrt(64) per node) and from Q/nodes sampling.
		if got := float64(rMax) / rMean; got > 1.6 {
			t.Errorf("%d nodes: replicas max/mean = %.2f, want <= 1.6", count, got)
		}
		if got := float64(pMax) / pMean; got > 2.0 {
			t.Errorf("%d nodes: primaries max/mean = %.2f, want <= 2.0", count, got)
		}
	}
}

func maxMean(counts map[string]int, nodes []Node) (int, float64) {
	total, most := 0, 0
	for _, n := range nodes {
		total += counts[n.ID]
		most = max(most, counts[n.ID])
	}
	return most, float64(total) / float64(len(nodes))
}

// isSubsequence reports whether every element of sub appears in seq in the same order.
func isSubsequence(sub, seq []string) bool {
	i := 0
	for _, s := range seq {
		if i < len(sub) && sub[i] == s {
			i++
		}
	}
	return i == len(sub)
}

// TestMinimalMovement checks Dynamo's promise: a membership change moves only
// the partitions whose preference list gains or loses that node.
func TestMinimalMovement(t *testing.T) {
	const q, n = 1024, 3
	rng := newRand(t)
	ks := []KeyspaceConfig{{Name: "s", Mode: consistency.AP, Partitions: q, Replicas: n}}
	for _, count := range nodeCounts {
		nodes := makeNodes(count, "")
		before := prefs(t, mustNew(t, Topology{Nodes: nodes, Keyspaces: ks}, Options{}), "s", "")

		// Add one node.
		added := Node{ID: "added", Region: ""}
		after := prefs(t, mustNew(t, Topology{Nodes: append(slices.Clone(nodes), added), Keyspaces: ks}, Options{}), "s", "")
		moved, changed := 0, 0
		for i := range before {
			if slices.Equal(before[i], after[i]) {
				continue
			}
			changed++
			if !slices.Contains(after[i], added.ID) {
				t.Fatalf("%d nodes + 1: partition %d changed %v -> %v without the new node", count, i, before[i], after[i])
			}
			kept := slices.DeleteFunc(slices.Clone(after[i]), func(id string) bool { return id == added.ID })
			if !isSubsequence(kept, before[i]) {
				t.Fatalf("%d nodes + 1: partition %d: old members reordered %v -> %v", count, i, before[i], after[i])
			}
			moved++ // exactly one replica (the new node's) is new in this list
		}
		addFrac := float64(moved) / float64(q*n)

		// Remove one random node.
		gone := nodes[rng.IntN(count)].ID
		rest := slices.DeleteFunc(slices.Clone(nodes), func(nd Node) bool { return nd.ID == gone })
		var removed [][]string
		if count-1 >= n {
			removed = prefs(t, mustNew(t, Topology{Nodes: rest, Keyspaces: ks}, Options{}), "s", "")
		}
		moved = 0
		for i := range removed {
			had := slices.Contains(before[i], gone)
			if !had {
				if !slices.Equal(before[i], removed[i]) {
					t.Fatalf("%d nodes - %s: partition %d changed %v -> %v though it did not hold the node", count, gone, i, before[i], removed[i])
				}
				continue
			}
			moved++
			stayed := slices.DeleteFunc(slices.Clone(before[i]), func(id string) bool { return id == gone })
			if !isSubsequence(stayed, removed[i]) || slices.Contains(removed[i], gone) {
				t.Fatalf("%d nodes - %s: partition %d: %v -> %v does not keep the survivors in order", count, gone, i, before[i], removed[i])
			}
		}
		removeFrac := float64(moved) / float64(q*n)
		removed1 := fmt.Sprintf("remove %s -> moved %.4f (ideal 1/%d = %.4f)", gone, removeFrac, count, 1/float64(count))
		if removed == nil {
			removed1 = "remove: n/a (fewer nodes than replicas)"
		}
		t.Logf("%2d nodes: add 1 -> %4d/%d partitions changed, moved replicas %.4f (ideal 1/%d = %.4f); %s",
			count, changed, q, addFrac, count+1, 1/float64(count+1), removed1)
		// A node's share is within the replica balance bound of the mean.
		if addFrac > 1.6/float64(count+1) {
			t.Errorf("%d nodes + 1: moved %.4f of replicas, want <= 1.6/%d", count, addFrac, count+1)
		}
		if count-1 >= n && removeFrac > 1.6/float64(count) {
			t.Errorf("%d nodes - 1: moved %.4f of replicas, want <= 1.6/%d", count, removeFrac, count)
		}
	}
}

// refLocate is a brute-force reference: it recomputes every token per lookup,
// orders them by clockwise distance from the walk start with big-integer
// arithmetic for the partition boundaries, and takes the first N distinct nodes.
func refLocate(nodes []Node, vnodes int, k KeyspaceConfig, key string) (PartitionID, []string, error) {
	k = k.WithDefaults()
	tm, err := ParseTemplate(k.Template)
	if err != nil {
		return PartitionID{}, nil, err
	}
	loc, part, err := tm.Extract(key)
	if err != nil {
		return PartitionID{}, nil, err
	}
	var idx int
	if len(k.Ranges) > 0 {
		var id uint64
		if _, err := fmt.Sscanf(part, "%d", &id); err != nil || fmt.Sprint(id) != part {
			return PartitionID{}, nil, kverrors.ErrInvalidArgument
		}
		idx = -1
		for _, rg := range k.Ranges {
			if rg.Lo <= id && id <= rg.Hi {
				idx = rg.Partition
			}
		}
		if idx < 0 {
			return PartitionID{}, nil, kverrors.ErrInvalidArgument
		}
	} else {
		h := new(big.Int).SetUint64(xxhash.Sum64String(part))
		idx = int(h.Mul(h, big.NewInt(int64(k.Partitions))).Rsh(h, 64).Int64())
	}
	two64 := new(big.Int).Lsh(big.NewInt(1), 64)
	start := new(big.Int).Mul(big.NewInt(int64(idx)), two64)
	start.Add(start, big.NewInt(int64(k.Partitions-1))).Div(start, big.NewInt(int64(k.Partitions))) // ceil
	start.Add(start, new(big.Int).SetUint64(xxhash.Sum64String(k.Name))).Mod(start, two64)
	s := start.Uint64()

	type tok struct {
		dist uint64
		node string
	}
	var toks []tok
	eligible := 0
	for _, nd := range nodes {
		if tm.LocalityAttr() != "" && nd.Region != loc {
			continue
		}
		eligible++
		for i := range vnodes {
			toks = append(toks, tok{xxhash.Sum64String(fmt.Sprintf("%s#%d", nd.ID, i)) - s, nd.ID})
		}
	}
	id := PartitionID{Keyspace: k.Name, Region: loc, Index: idx}
	if eligible < k.Replicas {
		return id, nil, kverrors.ErrUnavailable
	}
	slices.SortFunc(toks, func(a, b tok) int { return cmp.Or(cmp.Compare(a.dist, b.dist), strings.Compare(a.node, b.node)) })
	var out []string
	for _, tk := range toks {
		if len(out) < k.Replicas && !slices.Contains(out, tk.node) {
			out = append(out, tk.node)
		}
	}
	return id, out, nil
}

func TestLocateMatchesReference(t *testing.T) {
	rng := newRand(t)
	regions := []string{"eu", "us", "ap"}
	for round := range 40 {
		var nodes []Node
		for i := range 1 + rng.IntN(20) {
			nodes = append(nodes, Node{ID: fmt.Sprintf("n%d-%d", round, i), Region: regions[rng.IntN(len(regions))]})
		}
		vnodes := 1 + rng.IntN(32)
		hashed := KeyspaceConfig{Name: "h", Mode: consistency.AP, Partitions: 1 + rng.IntN(300), Replicas: 1 + rng.IntN(5)}
		local := KeyspaceConfig{Name: "l", Mode: consistency.CP, Partitions: 1 + rng.IntN(300), Replicas: 1 + rng.IntN(4),
			Template: "l/{region}/{user}/..."}
		ranged := KeyspaceConfig{Name: "r", Mode: consistency.CP, Replicas: 1 + rng.IntN(3), Template: "r/{id}",
			Ranges: []Range{{0, 99, 0}, {100, 199, 2}, {300, 1 << 40, 1}}}
		ks := []KeyspaceConfig{hashed, local, ranged}
		r := mustNew(t, Topology{Nodes: nodes, Keyspaces: ks}, Options{VNodes: vnodes})
		for range 200 {
			var key string
			var k KeyspaceConfig
			switch rng.IntN(3) {
			case 0:
				k, key = hashed, fmt.Sprintf("h/%x/%d", rng.Uint64(), rng.IntN(5))
			case 1:
				k, key = local, fmt.Sprintf("l/%s/%d/x", append(regions, "mars")[rng.IntN(4)], rng.Uint64())
			case 2:
				k, key = ranged, fmt.Sprintf("r/%d", rng.IntN(400))
			}
			wantID, wantReplicas, wantErr := refLocate(nodes, vnodes, k, key)
			p, err := r.Locate(key)
			if wantErr != nil {
				if !errors.Is(err, wantErr) {
					t.Fatalf("round %d: Locate(%q) = %v, %v; reference says %v", round, key, p, err, wantErr)
				}
				continue
			}
			if err != nil || p.Partition != wantID || !slices.Equal(p.Replicas, wantReplicas) || p.Keyspace.Name != k.Name {
				t.Fatalf("round %d (vnodes %d, %+v): Locate(%q) = %s %v, %v; reference %s %v",
					round, vnodes, k, key, p.Partition, p.Replicas, err, wantID, wantReplicas)
			}
		}
	}
}

func regionTopology() Topology {
	nodes := append(append(makeNodes(5, "eu"), makeNodes(3, "us")...), makeNodes(1, "ap")...)
	return Topology{
		Epoch: 7,
		Nodes: nodes,
		Keyspaces: []KeyspaceConfig{
			{Name: "accounts", Mode: consistency.CP, Template: "accounts/{region}/{account}/...", Partitions: 64},
			{Name: "sessions", Mode: consistency.AP},
		},
	}
}

func TestRegionPinning(t *testing.T) {
	rng := newRand(t)
	r := mustNew(t, regionTopology(), Options{})
	if got := r.Regions(); !slices.Equal(got, []string{"ap", "eu", "us"}) {
		t.Errorf("Regions() = %v", got)
	}
	for range 2000 {
		region := []string{"eu", "us"}[rng.IntN(2)]
		key := fmt.Sprintf("accounts/%s/%d/balance", region, rng.Uint64())
		p, err := r.Locate(key)
		if err != nil {
			t.Fatalf("Locate(%q): %v", key, err)
		}
		if p.Partition.Region != region || len(p.Replicas) != 3 {
			t.Fatalf("Locate(%q) = %s %v", key, p.Partition, p.Replicas)
		}
		for _, id := range p.Replicas {
			if n, _ := r.Node(id); n.Region != region {
				t.Fatalf("Locate(%q): replica %s is in region %q", key, id, n.Region)
			}
		}
	}
	for key, want := range map[string]string{
		"accounts/ap/1":   `region "ap" has 1 node(s) but keyspace "accounts" needs 3 replicas`,
		"accounts/mars/1": `region "mars" has 0 node(s) but keyspace "accounts" needs 3 replicas`,
	} {
		_, err := r.Locate(key)
		if !errors.Is(err, kverrors.ErrUnavailable) || !strings.Contains(err.Error(), want) {
			t.Errorf("Locate(%q) = %v, want ErrUnavailable containing %q", key, err, want)
		}
	}
	// Sessions has no locality attribute: any node, region "".
	p, err := r.Locate("sessions/abc")
	if err != nil || p.Partition.Region != "" || len(p.Replicas) != 3 {
		t.Errorf("Locate(sessions/abc) = %+v, %v", p, err)
	}
	// Partitions lists the small region with its reason.
	infos := r.Partitions("accounts")
	if len(infos) != 3*64 {
		t.Fatalf("Partitions(accounts) has %d entries, want %d", len(infos), 3*64)
	}
	for _, info := range infos {
		small := info.ID.Region == "ap"
		if small != (info.Err != "") || small != (len(info.Replicas) == 0) {
			t.Errorf("partition %s: replicas %v, err %q", info.ID, info.Replicas, info.Err)
		}
		if !small {
			if got, err := r.PreferenceList(info.ID); err != nil || !slices.Equal(got, info.Replicas) {
				t.Errorf("PreferenceList(%s) = %v, %v; want %v", info.ID, got, err, info.Replicas)
			}
		}
	}
	if got := r.Partitions("nope"); got != nil {
		t.Errorf("Partitions(nope) = %v, want nil", got)
	}

	// Adding a node to eu changes no us preference list.
	topo := regionTopology()
	topo.Nodes = append(topo.Nodes, Node{ID: "eu-new", Region: "eu"})
	r2 := mustNew(t, topo, Options{})
	if !reflect.DeepEqual(prefs(t, r, "accounts", "us"), prefs(t, r2, "accounts", "us")) {
		t.Error("adding an eu node changed us placements")
	}
}

func TestPreferenceListErrors(t *testing.T) {
	r := mustNew(t, regionTopology(), Options{})
	for _, tc := range []struct {
		id   PartitionID
		want error
	}{
		{PartitionID{"nope", "", 0}, kverrors.ErrUnknownKeyspace},
		{PartitionID{"accounts", "eu", 64}, kverrors.ErrInvalidArgument},
		{PartitionID{"accounts", "eu", -1}, kverrors.ErrInvalidArgument},
		{PartitionID{"accounts", "", 0}, kverrors.ErrInvalidArgument},
		{PartitionID{"sessions", "eu", 0}, kverrors.ErrInvalidArgument},
		{PartitionID{"accounts", "ap", 0}, kverrors.ErrUnavailable},
		{PartitionID{"accounts", "mars", 0}, kverrors.ErrUnavailable},
	} {
		if _, err := r.PreferenceList(tc.id); !errors.Is(err, tc.want) {
			t.Errorf("PreferenceList(%s) = %v, want %v", tc.id, err, tc.want)
		}
	}
}

func TestLocateErrors(t *testing.T) {
	r := mustNew(t, regionTopology(), Options{})
	_, err := r.Locate("orders/1")
	if !errors.Is(err, kverrors.ErrUnknownKeyspace) || !strings.Contains(err.Error(), `"orders"`) ||
		!strings.Contains(err.Error(), "accounts, sessions") {
		t.Errorf("Locate(orders/1) = %v, want ErrUnknownKeyspace naming it and listing accounts, sessions", err)
	}
	for _, key := range []string{"", "/accounts/eu/1", "accounts/eu", "accounts//1", "sessions/a//b"} {
		if _, err := r.Locate(key); !errors.Is(err, kverrors.ErrInvalidArgument) {
			t.Errorf("Locate(%q) = %v, want ErrInvalidArgument", key, err)
		}
	}
	small := mustNew(t, Topology{Nodes: makeNodes(2, ""), Keyspaces: []KeyspaceConfig{{Name: "s", Mode: consistency.AP}}}, Options{})
	_, err = small.Locate("s/x")
	if !errors.Is(err, kverrors.ErrUnavailable) || !strings.Contains(err.Error(), `has 2 node(s) but keyspace "s" needs 3 replicas`) {
		t.Errorf("Locate on 2 nodes = %v", err)
	}
	empty := mustNew(t, Topology{}, Options{})
	if _, err := empty.Locate("s/x"); !errors.Is(err, kverrors.ErrUnknownKeyspace) || !strings.Contains(err.Error(), "none") {
		t.Errorf("Locate on empty ring = %v", err)
	}
}

func TestDeterminism(t *testing.T) {
	rng := newRand(t)
	topo := regionTopology()
	topo.Keyspaces = append(topo.Keyspaces, KeyspaceConfig{Name: "ids", Mode: consistency.CP, Template: "ids/{id}/...",
		Ranges: []Range{{0, 999, 0}, {1000, 1999, 1}}})
	a := mustNew(t, topo, Options{})
	shuffled := a.Topology()
	rng.Shuffle(len(shuffled.Nodes), func(i, j int) { shuffled.Nodes[i], shuffled.Nodes[j] = shuffled.Nodes[j], shuffled.Nodes[i] })
	rng.Shuffle(len(shuffled.Keyspaces), func(i, j int) {
		shuffled.Keyspaces[i], shuffled.Keyspaces[j] = shuffled.Keyspaces[j], shuffled.Keyspaces[i]
	})
	b := mustNew(t, shuffled, Options{})
	for _, k := range a.Keyspaces() {
		if !reflect.DeepEqual(a.Partitions(k.Name), b.Partitions(k.Name)) {
			t.Errorf("keyspace %s: placements differ after shuffling the topology", k.Name)
		}
	}
	// Pin a few placements so that a change of hash or walk (which would move
	// data between versions of a running cluster) fails loudly.
	golden := map[string]string{}
	for _, key := range []string{"sessions/a", "sessions/b/c", "accounts/eu/1", "accounts/us/42/x", "ids/1500"} {
		pa, errA := a.Locate(key)
		pb, errB := b.Locate(key)
		if errA != nil || errB != nil || pa.Partition != pb.Partition || !slices.Equal(pa.Replicas, pb.Replicas) {
			t.Errorf("Locate(%q): %v %v / %v %v", key, pa, errA, pb, errB)
		}
		golden[key] = fmt.Sprintf("%s %v", pa.Partition, pa.Replicas)
	}
	want := map[string]string{
		"sessions/a":       "sessions/*/6 [us-node-01 us-node-02 eu-node-04]",
		"sessions/b/c":     "sessions/*/4 [eu-node-03 us-node-00 us-node-01]",
		"accounts/eu/1":    "accounts/eu/45 [eu-node-02 eu-node-01 eu-node-04]",
		"accounts/us/42/x": "accounts/us/27 [us-node-02 us-node-00 us-node-01]",
		"ids/1500":         "ids/*/1 [ap-node-00 us-node-01 us-node-02]",
	}
	for key, got := range golden {
		if want[key] != got {
			t.Errorf("Locate(%q) = %s, want %s", key, got, want[key])
		}
	}
}

func TestRangePartitioning(t *testing.T) {
	rng := newRand(t)
	rs, err := ParseRanges("0-999999:0,1000000-1999999:1,5000000-5000000:3")
	if err != nil {
		t.Fatal(err)
	}
	topo := Topology{Nodes: makeNodes(5, ""), Keyspaces: []KeyspaceConfig{
		{Name: "ids", Mode: consistency.CP, Template: "ids/{id}/...", Ranges: rs},
	}}
	r := mustNew(t, topo, Options{})
	if k, _ := r.Keyspace("ids"); k.Partitions != 4 {
		t.Errorf("partitions = %d, want 4 (highest range partition + 1)", k.Partitions)
	}
	check := func(id uint64, want int) {
		t.Helper()
		key := fmt.Sprintf("ids/%d/doc", id)
		p, err := r.Locate(key)
		if err != nil || p.Partition.Index != want {
			t.Fatalf("Locate(%q) = %s, %v; want partition %d", key, p.Partition, err, want)
		}
		if pl, _ := r.PreferenceList(p.Partition); !slices.Equal(pl, p.Replicas) {
			t.Fatalf("Locate(%q) replicas %v, PreferenceList %v", key, p.Replicas, pl)
		}
	}
	for _, c := range []struct {
		id   uint64
		want int
	}{{0, 0}, {999999, 0}, {1000000, 1}, {1999999, 1}, {5000000, 3}} {
		check(c.id, c.want)
	}
	for range 1000 {
		id := rng.Uint64N(2000000)
		check(id, int(id/1000000))
	}
	for _, key := range []string{"ids/2000000", "ids/4999999", "ids/5000001", "ids/18446744073709551615", "ids/abc", "ids/-1", "ids/18446744073709551616", "ids/1e6"} {
		_, err := r.Locate(key)
		if !errors.Is(err, kverrors.ErrInvalidArgument) || !strings.Contains(err.Error(), key) {
			t.Errorf("Locate(%q) = %v, want ErrInvalidArgument naming the key", key, err)
		}
	}
}

func TestNewValidates(t *testing.T) {
	_, err := New(Topology{
		Nodes: []Node{{ID: "a"}, {ID: ""}, {ID: "a"}, {ID: "b", Region: "e/u"}, {ID: "c", Region: "*"}},
		Keyspaces: []KeyspaceConfig{
			{Name: "s", Mode: consistency.AP},
			{Name: "s", Mode: consistency.AP},
			{Name: "t", Mode: "ca"},
		},
	}, Options{VNodes: -1})
	if !errors.Is(err, kverrors.ErrInvalidArgument) {
		t.Fatalf("New = %v, want ErrInvalidArgument", err)
	}
	for _, want := range []string{"vnodes = -1", "node 1", "empty ID", `node "a" listed twice`, `region "e/u"`, `region "*"`,
		`keyspace "s" listed twice`, `mode "ca"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("New error lacks %q:\n%v", want, err)
		}
	}
}

func TestRingAccessors(t *testing.T) {
	topo := regionTopology()
	r := mustNew(t, topo, Options{})
	if r.Epoch() != 7 {
		t.Errorf("Epoch() = %d", r.Epoch())
	}
	got := r.Topology()
	if !reflect.DeepEqual(got, topo) {
		t.Errorf("Topology() = %+v, want the input", got)
	}
	// Neither the input nor the returned copy aliases the ring's state.
	topo.Nodes[0].Region = "us"
	got.Keyspaces[0].Name = "changed"
	if n, _ := r.Node("eu-node-00"); n.Region != "eu" {
		t.Error("ring aliases the input nodes")
	}
	if r.Topology().Keyspaces[0].Name != "accounts" {
		t.Error("Topology() aliases the ring's copy")
	}
	if _, ok := r.Node("nope"); ok {
		t.Error("Node(nope) found")
	}
	var names []string
	for _, k := range r.Keyspaces() {
		names = append(names, k.Name)
	}
	if !slices.Equal(names, []string{"accounts", "sessions"}) {
		t.Errorf("Keyspaces() = %v", names)
	}
	k, ok := r.Keyspace("sessions")
	if !ok || k.Replicas != 3 || k.Partitions != 8 || k.Resolve != ResolveSiblings || k.DefaultLevel != consistency.Quorum {
		t.Errorf("Keyspace(sessions) = %+v, %v; want defaults applied", k, ok)
	}
	if p, _ := r.Locate("sessions/x"); p.Keyspace != k {
		t.Error("Placement.Keyspace does not point at the ring's copy")
	}
	if _, ok := r.Keyspace("nope"); ok {
		t.Error("Keyspace(nope) found")
	}
	// Replicas slices are capped, so a careless append cannot clobber a neighbour.
	p, _ := r.Locate("sessions/x")
	if cap(p.Replicas) != len(p.Replicas) {
		t.Errorf("Replicas cap %d > len %d", cap(p.Replicas), len(p.Replicas))
	}
}

func TestPartitionID(t *testing.T) {
	for _, tc := range []struct {
		id PartitionID
		s  string
	}{
		{PartitionID{"accounts", "eu", 3}, "accounts/eu/3"},
		{PartitionID{"sessions", "", 3}, "sessions/*/3"},
		{PartitionID{"a", "us-east-1", 65535}, "a/us-east-1/65535"},
	} {
		if got := tc.id.String(); got != tc.s {
			t.Errorf("%+v.String() = %q, want %q", tc.id, got, tc.s)
		}
		if got, err := ParsePartitionID(tc.s); err != nil || got != tc.id {
			t.Errorf("ParsePartitionID(%q) = %+v, %v; want %+v", tc.s, got, err, tc.id)
		}
	}
	for _, s := range []string{"", "accounts", "accounts/eu", "accounts/eu/", "accounts/eu/03", "accounts/eu/+3", "accounts/eu/-1",
		"accounts/eu/65536", "Accounts/eu/1", "accounts//1", "accounts/e u/1", "accounts/eu/1/2", "/eu/1"} {
		if _, err := ParsePartitionID(s); !errors.Is(err, kverrors.ErrInvalidArgument) {
			t.Errorf("ParsePartitionID(%q) = %v, want ErrInvalidArgument", s, err)
		}
	}
}

func TestLocateDoesNotAllocate(t *testing.T) {
	topo := regionTopology()
	topo.Keyspaces = append(topo.Keyspaces, KeyspaceConfig{Name: "ids", Mode: consistency.CP, Template: "ids/{id}/...",
		Ranges: []Range{{0, 999, 0}, {1000, 1999, 1}}})
	r := mustNew(t, topo, Options{})
	for _, key := range []string{"accounts/eu/42/balance", "sessions/abc/def", "ids/1500/x"} {
		allocs := testing.AllocsPerRun(200, func() {
			if _, err := r.Locate(key); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("Locate(%q) allocates %v times, want 0", key, allocs)
		}
	}
}

// Pinned assignments override the computed preference lists, and survive a
// node joining (which would otherwise move some partitions).
func TestAssignmentsPinPartitions(t *testing.T) {
	ks := []KeyspaceConfig{{Name: "accounts", Mode: "cp", Replicas: 3, Partitions: 16, Template: "accounts/{region}/{account}/..."}}
	three := []Node{{ID: "n1", Region: "eu"}, {ID: "n2", Region: "eu"}, {ID: "n3", Region: "eu"}}
	r3, err := New(Topology{Nodes: three, Keyspaces: ks}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	pinned := map[string][]string{}
	for _, p := range r3.Partitions("accounts") {
		pinned[p.ID.String()] = p.Replicas
	}
	five := append(slices.Clone(three), Node{ID: "n4", Region: "eu"}, Node{ID: "n5", Region: "eu"})
	free, _ := New(Topology{Nodes: five, Keyspaces: ks}, Options{})
	r5, err := New(Topology{Nodes: five, Keyspaces: ks, Assignments: pinned}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	moved := 0
	for i, p := range r5.Partitions("accounts") {
		if !slices.Equal(p.Replicas, pinned[p.ID.String()]) {
			t.Errorf("%s: pinned %v, got %v", p.ID, pinned[p.ID.String()], p.Replicas)
		}
		if !slices.Equal(free.Partitions("accounts")[i].Replicas, p.Replicas) {
			moved++
		}
	}
	if moved == 0 {
		t.Error("without pins no partition would move: the test proves nothing")
	}
	pl, err := r5.Locate("accounts/eu/42/balance")
	if err != nil || !slices.Equal(pl.Replicas, pinned[pl.Partition.String()]) {
		t.Fatalf("Locate = %v, %v", pl.Replicas, err)
	}
	// Partly assigned region that is too small: unassigned partitions are unplaceable.
	two := []Node{{ID: "n1", Region: "us"}, {ID: "n2", Region: "us"}}
	r2, err := New(Topology{Nodes: two, Keyspaces: ks, Assignments: map[string][]string{"accounts/us/0": {"n1", "n2"}}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r2.PreferenceList(PartitionID{Keyspace: "accounts", Region: "us", Index: 1}); err == nil {
		t.Error("unassigned partition of a too-small region was placed")
	}
	if _, err := New(Topology{Nodes: two, Keyspaces: ks, Assignments: map[string][]string{"accounts/us/0": {"n1", "n9"}}}, Options{}); err == nil {
		t.Error("assignment to an unknown node accepted")
	}
}
