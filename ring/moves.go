package ring

import (
	"fmt"
	"slices"
	"strings"

	"github.com/capkv/capkv/internal/kverrors"
)

// Rebalancing: a partition keeps the replica set it was pinned to
// (Topology.Assignments) until it is moved. When nodes join or leave, the
// preference lists the ring computes for the new node set differ from the
// pinned sets for only the partitions the consistent hash moves (about 1/N
// of the replicas on a join of the Nth node); PlanMoves finds exactly those.

// Move is one partition whose replica set changes.
type Move struct {
	Partition PartitionID
	From, To  []string // pinned now; the preference list of the new node set
}

// Joining returns the replicas of To that are not in From.
func (m Move) Joining() []string { return minus(m.To, m.From) }

// Leaving returns the replicas of From that are not in To.
func (m Move) Leaving() []string { return minus(m.From, m.To) }

func (m Move) String() string {
	return fmt.Sprintf("%s: %s -> %s", m.Partition, strings.Join(m.From, ","), strings.Join(m.To, ","))
}

// MovePlan is every move a change of the node set needs.
type MovePlan struct {
	Moves []Move // sorted by partition
	// Replicas counts the pinned replicas of every partition considered;
	// Moved those that change node.
	Replicas, Moved int
}

// MovedFraction is the share of replicas that change node.
func (p MovePlan) MovedFraction() float64 {
	if p.Replicas == 0 {
		return 0
	}
	return float64(p.Moved) / float64(p.Replicas)
}

// PlanMoves compares the pinned replica sets of t with the preference lists
// of t's nodes without the leaving ones. Partitions not pinned yet are not
// moves (they are placed on the new node set when first pinned). When the
// remaining nodes cannot hold a partition's replication factor, PlanMoves
// fails with ErrInvalidArgument naming the region and both numbers, and
// plans nothing: a drain never leaves a partition short of replicas.
func PlanMoves(t Topology, o Options, leaving []string) (MovePlan, error) {
	next := Topology{Epoch: t.Epoch, Keyspaces: t.Keyspaces}
	for _, n := range t.Nodes {
		if !slices.Contains(leaving, n.ID) {
			next.Nodes = append(next.Nodes, n)
		}
	}
	for _, id := range leaving {
		if !slices.ContainsFunc(t.Nodes, func(n Node) bool { return n.ID == id }) {
			return MovePlan{}, fmt.Errorf("%w: node %q is not in the cluster map", kverrors.ErrInvalidArgument, id)
		}
	}
	r, err := New(next, o)
	if err != nil {
		return MovePlan{}, err
	}
	var plan MovePlan
	short := map[string]int{} // why partitions cannot be placed -> how many
	for _, ks := range r.Keyspaces() {
		for _, p := range r.Partitions(ks.Name) {
			from := t.Assignments[p.ID.String()]
			if from == nil {
				continue
			}
			plan.Replicas += len(from)
			if p.Err != "" {
				short[p.Err]++
				continue
			}
			if moved := len(minus(p.Replicas, from)); moved > 0 || len(from) != len(p.Replicas) {
				plan.Moved += moved
				plan.Moves = append(plan.Moves, Move{Partition: p.ID, From: slices.Clone(from), To: slices.Clone(p.Replicas)})
			}
		}
	}
	// A pinned partition of a region left without nodes is not listed by
	// Partitions at all.
	for id, from := range t.Assignments {
		pid, err := ParsePartitionID(id)
		if err != nil {
			return MovePlan{}, err
		}
		ks, ok := r.Keyspace(pid.Keyspace)
		if !ok || pid.Region == "" || slices.Contains(r.Regions(), pid.Region) {
			continue
		}
		plan.Replicas += len(from)
		short[tooFewNodes(pid.Region, 0, ks).Error()]++
	}
	if len(short) > 0 {
		var why []string
		for msg, n := range short {
			why = append(why, fmt.Sprintf("%d partition(s): %s", n, strings.TrimPrefix(msg, kverrors.ErrUnavailable.Error()+": ")))
		}
		slices.Sort(why)
		return MovePlan{}, fmt.Errorf("%w: without node(s) %s the cluster cannot hold every partition: %s",
			kverrors.ErrInvalidArgument, strings.Join(leaving, ","), strings.Join(why, "; "))
	}
	slices.SortFunc(plan.Moves, func(a, b Move) int { return strings.Compare(a.Partition.String(), b.Partition.String()) })
	return plan, nil
}

// minus returns the elements of a not in b, in a's order.
func minus(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}
