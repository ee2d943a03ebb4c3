package ring

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/internal/kverrors"
)

// pinAll pins every placeable partition of t where the ring puts it now, as
// the metadata group does when it first places a partition.
func pinAll(t testing.TB, topo Topology) Topology {
	t.Helper()
	r := mustNew(t, topo, Options{})
	topo.Assignments = map[string][]string{}
	for _, ks := range r.Keyspaces() {
		for _, p := range r.Partitions(ks.Name) {
			if p.Err == "" {
				topo.Assignments[p.ID.String()] = slices.Clone(p.Replicas)
			}
		}
	}
	return topo
}

// refMoves is the brute-force answer: every pinned partition whose set of
// replicas differs from the one the new node set computes.
func refMoves(t testing.TB, topo Topology, leaving []string) map[string][2][]string {
	t.Helper()
	next := Topology{Keyspaces: topo.Keyspaces}
	for _, n := range topo.Nodes {
		if !slices.Contains(leaving, n.ID) {
			next.Nodes = append(next.Nodes, n)
		}
	}
	r := mustNew(t, next, Options{})
	out := map[string][2][]string{}
	for id, from := range topo.Assignments {
		pid, _ := ParsePartitionID(id)
		to, err := r.PreferenceList(pid)
		if err != nil {
			t.Fatalf("reference: %s: %v", id, err)
		}
		if !slices.Equal(slices.Sorted(slices.Values(from)), slices.Sorted(slices.Values(to))) {
			out[id] = [2][]string{from, to}
		}
	}
	return out
}

func checkPlan(t *testing.T, topo Topology, leaving []string, plan MovePlan) {
	t.Helper()
	want := refMoves(t, topo, leaving)
	if len(plan.Moves) != len(want) {
		t.Fatalf("%d moves, reference has %d", len(plan.Moves), len(want))
	}
	moved := 0
	for _, m := range plan.Moves {
		w, ok := want[m.Partition.String()]
		if !ok || !slices.Equal(m.From, w[0]) || !slices.Equal(m.To, w[1]) {
			t.Fatalf("move %v, reference %v", m, w)
		}
		for _, l := range leaving {
			if slices.Contains(m.To, l) {
				t.Fatalf("move %v keeps leaving node %s", m, l)
			}
		}
		moved += len(m.Joining())
	}
	if moved != plan.Moved {
		t.Fatalf("Moved = %d, the moves add %d replicas", plan.Moved, moved)
	}
}

// A join moves only the replicas the new node takes over, about 1/N of
// them, and each moving partition changes one replica.
func TestPlanMovesOnJoin(t *testing.T) {
	for _, n := range []int{3, 5, 10, 20} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			topo := pinAll(t, Topology{Nodes: makeNodes(n, "eu"), Keyspaces: []KeyspaceConfig{
				{Name: "accounts", Mode: consistency.CP, Template: "accounts/{region}/{account}/...", Partitions: 64},
				{Name: "sessions", Mode: consistency.AP, Partitions: 64},
			}})
			newNode := Node{ID: "new", Addr: "10.0.1.1:7000", Region: "eu"}
			topo.Nodes = append(topo.Nodes, newNode)
			plan, err := PlanMoves(topo, Options{}, nil)
			if err != nil {
				t.Fatal(err)
			}
			checkPlan(t, topo, nil, plan)
			for _, m := range plan.Moves {
				if j, l := m.Joining(), m.Leaving(); len(j) != 1 || j[0] != "new" || len(l) != 1 {
					t.Fatalf("move %v: joining %v leaving %v, want the new node in for one old one", m, j, l)
				}
			}
			ideal := 1 / float64(n+1)
			t.Logf("%d -> %d nodes: %d of %d replicas move (%.3f; ideal %.3f)", n, n+1, plan.Moved, plan.Replicas, plan.MovedFraction(), ideal)
			if f := plan.MovedFraction(); f < ideal/2 || f > ideal*2 {
				t.Fatalf("moved fraction %.3f, want within 2x of %.3f", f, ideal)
			}
		})
	}
}

// The default dev layout (3 nodes, 8 partitions, RF 3): a 4th node takes
// over a fair share of the 24 replicas of each keyspace (at least 4, as
// the rebalancing issue asks).
func TestPlanMovesDevJoin(t *testing.T) {
	topo := pinAll(t, Topology{Nodes: makeNodes(3, "eu"), Keyspaces: []KeyspaceConfig{
		{Name: "accounts", Mode: consistency.CP, Template: "accounts/{region}/{account}/..."},
		{Name: "sessions", Mode: consistency.AP},
	}})
	topo.Nodes = append(topo.Nodes, Node{ID: "n4", Addr: "127.0.0.1:7004", Region: "eu"})
	plan, err := PlanMoves(topo, Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkPlan(t, topo, nil, plan)
	per := map[string]int{}
	for _, m := range plan.Moves {
		per[m.Partition.Keyspace]++
	}
	for _, ks := range []string{"accounts", "sessions"} {
		t.Logf("%s: n4 takes %d of 24 replicas", ks, per[ks])
		if per[ks] < 4 {
			t.Fatalf("%s: n4 takes %d of 24 replicas, want at least 4", ks, per[ks])
		}
	}
}

// A drain moves every replica off the leaving node and nothing else that
// does not have to move.
func TestPlanMovesOnDrain(t *testing.T) {
	rng := newRand(t)
	for trial := range 50 {
		n := 4 + rng.IntN(12)
		topo := pinAll(t, Topology{Nodes: makeNodes(n, "eu"), Keyspaces: []KeyspaceConfig{
			{Name: "sessions", Mode: consistency.AP, Partitions: 1 + rng.IntN(64), Replicas: 1 + rng.IntN(3)},
		}})
		leaving := []string{topo.Nodes[rng.IntN(n)].ID}
		plan, err := PlanMoves(topo, Options{}, leaving)
		if err != nil {
			t.Fatalf("trial %d: %v", trial, err)
		}
		checkPlan(t, topo, leaving, plan)
		for id, reps := range topo.Assignments {
			moves := slices.ContainsFunc(plan.Moves, func(m Move) bool { return m.Partition.String() == id })
			if slices.Contains(reps, leaving[0]) && !moves {
				t.Fatalf("trial %d: partition %s keeps leaving node %s", trial, id, leaving[0])
			}
		}
	}
}

// A drain the remaining nodes cannot hold is refused with the region and
// both numbers, and plans nothing.
func TestPlanMovesRefusesShortDrain(t *testing.T) {
	topo := pinAll(t, regionTopology()) // 5 eu, 3 us, 1 ap
	_, err := PlanMoves(topo, Options{}, []string{"us-node-00"})
	if !errors.Is(err, kverrors.ErrInvalidArgument) {
		t.Fatalf("err = %v, want InvalidArgument (a definite refusal)", err)
	}
	t.Logf("refused: %v", err)
	for _, want := range []string{"us-node-00", `region "us" has 2 node(s)`, "needs 3 replicas"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error %q does not say %q", err, want)
		}
	}
	if _, err := PlanMoves(topo, Options{}, []string{"nope"}); !errors.Is(err, kverrors.ErrInvalidArgument) {
		t.Fatalf("unknown node: err = %v, want InvalidArgument", err)
	}
	// Draining an eu node is fine: 4 remain for RF 3.
	plan, err := PlanMoves(topo, Options{}, []string{"eu-node-01"})
	if err != nil {
		t.Fatal(err)
	}
	checkPlan(t, topo, []string{"eu-node-01"}, plan)
	for _, m := range plan.Moves {
		if m.Partition.Region == "us" {
			t.Fatalf("an eu drain moves %v", m)
		}
	}
}
