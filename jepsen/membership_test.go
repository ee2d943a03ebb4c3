package jepsen

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/grpc"

	"github.com/capkv/capkv/internal/kverrors"
)

// fakeMembers is a cluster whose membership the nemesis changes, and the
// metadata leader's answers: a join's moves finish after movePolls status
// checks, a drain after drainPolls map checks, and the first refuse
// RemoveNode calls after a join are refused (a rebalancing in progress).
type fakeMembers struct {
	mu         sync.Mutex
	nodes      []string
	retired    []string
	next       int
	movePolls  int
	drainPolls int
	refuse     int
	movesLeft  int
	drainLeft  int
	refuseLeft int
	refusals   int // RemoveNode calls refused
	removes    []string
}

func newFakeMembers(n int) *fakeMembers {
	f := &fakeMembers{next: n + 1, movePolls: 3, drainPolls: 4, refuse: 2}
	for i := 1; i <= n; i++ {
		f.nodes = append(f.nodes, fmt.Sprintf("n%d", i))
	}
	return f
}

func (f *fakeMembers) Nodes() []NodeInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []NodeInfo
	for _, id := range f.nodes {
		out = append(out, NodeInfo{ID: id, Addr: id + ":7001"})
	}
	return out
}
func (f *fakeMembers) AllNodes() []NodeInfo                              { return f.Nodes() }
func (f *fakeMembers) Cut(context.Context, []Link) error                 { return nil }
func (f *fakeMembers) Kill(string) error                                 { return nil }
func (f *fakeMembers) Restart(context.Context, string) error             { return nil }
func (f *fakeMembers) Pause(string) error                                { return nil }
func (f *fakeMembers) Resume(string) error                               { return nil }
func (f *fakeMembers) Loss(context.Context, int) error                   { return nil }
func (f *fakeMembers) Skew(context.Context, string, time.Duration) error { return nil }
func (f *fakeMembers) DialOptions() []grpc.DialOption                    { return nil }
func (f *fakeMembers) Close() error                                      { return nil }

func (f *fakeMembers) Join(context.Context) (NodeInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := fmt.Sprintf("n%d", f.next)
	f.next++
	f.nodes = append(f.nodes, id)
	f.movesLeft, f.refuseLeft = f.movePolls, f.refuse
	return NodeInfo{ID: id, Addr: id + ":7001"}, nil
}

func (f *fakeMembers) Retire(id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !slices.Contains(f.nodes, id) {
		return fmt.Errorf("retire %s: not running", id)
	}
	f.nodes = slices.DeleteFunc(f.nodes, func(n string) bool { return n == id })
	f.retired = append(f.retired, id)
	return nil
}

func (f *fakeMembers) RemoveNode(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.refuseLeft > 0 {
		f.refuseLeft--
		f.refusals++
		return fmt.Errorf("%w: a rebalancing is in progress", kverrors.ErrInvalidArgument)
	}
	if len(f.nodes)-1 < 3 {
		return fmt.Errorf("%w: removing %s leaves %d nodes, needs 3 replicas", kverrors.ErrInvalidArgument, id, len(f.nodes)-1)
	}
	f.removes = append(f.removes, id)
	f.drainLeft = f.drainPolls
	return nil
}

func (f *fakeMembers) JoinMoved(context.Context, string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.movesLeft--
	return f.movesLeft < 0, nil
}

func (f *fakeMembers) InMap(_ context.Context, id string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !slices.Contains(f.removes, id) {
		return true, nil
	}
	f.drainLeft--
	return f.drainLeft >= 0, nil
}

func testMembership(f *fakeMembers) *Membership {
	m := NewMembership()
	m.admin = func(Cluster) memberAdmin { return f }
	return m
}

// TestMembershipSteps: with 3 nodes the nemesis joins first, waits for the
// join's moves, then drains an original node (retrying while RemoveNode is
// refused), retires it once it left the map, and joins again: never fewer
// than 3 nodes, never two changes at once.
func TestMembershipSteps(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeMembers(3)
		m := testMembership(f)
		rng := rand.New(rand.NewPCG(1, 2))
		ctx := context.Background()
		var got []string
		for range 4 {
			fault, err := m.Inject(ctx, f, rng)
			if err != nil {
				t.Fatalf("inject after %v: %v", got, err)
			}
			if err := fault.Heal(ctx); err != nil {
				t.Fatalf("heal %s: %v", fault, err)
			}
			got = append(got, fault.String())
			if strings.HasPrefix(fault.String(), "join") && f.movesLeft >= 0 {
				t.Fatalf("heal of %s returned before its moves were done", fault)
			}
			if n := len(f.Nodes()); n < 3 || n > 4 {
				t.Fatalf("after %v the cluster has %d nodes, want 3 or 4", got, n)
			}
		}
		if !strings.HasPrefix(got[0], "join n4") || !strings.HasPrefix(got[2], "join n5") {
			t.Fatalf("steps %v: want join n4, remove, join n5, remove", got)
		}
		for i, s := range []string{got[1], got[3]} {
			victim := strings.TrimPrefix(s, "remove ")
			if victim == s || !slices.Contains([]string{"n1", "n2", "n3"}, victim) {
				t.Fatalf("step %d is %q: want the drain of an original node", 2*i+2, s)
			}
		}
		if len(f.retired) != 2 || f.retired[0] == f.retired[1] {
			t.Fatalf("retired %v, want the two drained nodes", f.retired)
		}
		if f.refusals == 0 {
			t.Fatal("RemoveNode was never refused: the test does not cover the retry")
		}
	})
}

// TestMembershipSlowDrain: a drain that outlives DrainWait leaves the node
// running; no other change starts until it has left the map, then it is
// retired before the next join.
func TestMembershipSlowDrain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeMembers(3)
		f.movePolls = 0
		f.drainPolls = 1 << 30
		m := testMembership(f)
		m.DrainWait = 5 * time.Second
		rng := rand.New(rand.NewPCG(3, 4))
		ctx := context.Background()
		join, err := m.Inject(ctx, f, rng)
		if err != nil {
			t.Fatal(err)
		}
		if err := join.Heal(ctx); err != nil {
			t.Fatal(err)
		}
		rm, err := m.Inject(ctx, f, rng)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := rm.Heal(ctx); err == nil || !strings.Contains(err.Error(), "did not complete within 5s") {
			t.Fatalf("heal of a drain that does not finish: %v", err)
		}
		if waited := time.Since(start); waited < 5*time.Second || waited > 6*time.Second {
			t.Fatalf("waited %s for the drain, want DrainWait (5s)", waited)
		}
		victim := strings.TrimPrefix(rm.String(), "remove ")
		if len(f.retired) != 0 || len(f.Nodes()) != 4 {
			t.Fatalf("a node was stopped before its drain finished: retired %v, nodes %v", f.retired, f.Nodes())
		}
		if _, err := m.Inject(ctx, f, rng); err == nil || !strings.Contains(err.Error(), "drain of "+victim+" is still running") {
			t.Fatalf("inject during a running drain: %v", err)
		}
		f.mu.Lock()
		f.drainLeft = 0
		f.mu.Unlock()
		next, err := m.Inject(ctx, f, rng)
		if err != nil {
			t.Fatal(err)
		}
		if next.String() != "join n5" || len(f.retired) != 1 || f.retired[0] != victim {
			t.Fatalf("after the drain finished: step %q, retired %v; want join n5 after retiring %s", next, f.retired, victim)
		}
	})
}

// TestMembershipNeedsMembers: a backend without Members (docker) is refused
// with a message that says which backends work.
func TestMembershipNeedsMembers(t *testing.T) {
	var c struct{ Cluster }
	_, err := NewMembership().Inject(context.Background(), c, rand.New(rand.NewPCG(1, 1)))
	if !errors.Is(err, errNoMembers) || !strings.Contains(err.Error(), "process or netns") {
		t.Fatalf("inject on a cluster without Members: %v", err)
	}
}

type countNemesis struct{ n *int }

func (countNemesis) Name() string { return "count" }
func (c countNemesis) Inject(context.Context, Cluster, *rand.Rand) (Fault, error) {
	*c.n++
	return procFault{fmt.Sprintf("fault %d", *c.n), func(context.Context) error { return nil }}, nil
}

// TestScheduleMembershipTrack: the membership nemesis takes its steps on a
// track of its own, overlapping the other nemeses' faults, its windows
// marked; the windows come back in start order.
func TestScheduleMembershipTrack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeMembers(3)
		m := testMembership(f)
		m.Poll = time.Second
		var injected int
		h := NewHistory()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		ws := Schedule(ctx, f, []Nemesis{countNemesis{&injected}, m}, 2*time.Second, time.Second, rand.New(rand.NewPCG(5, 6)), h, func(string) {})
		var member, other int
		overlap := false
		for i, w := range ws {
			if i > 0 && ws[i-1].Start > w.Start {
				t.Fatalf("windows out of order: %+v", ws)
			}
			if w.Membership != (strings.HasPrefix(w.Fault, "join") || strings.HasPrefix(w.Fault, "remove")) {
				t.Fatalf("window %+v: membership flag wrong", w)
			}
			if w.Membership {
				member++
				for _, o := range ws {
					if !o.Membership && o.Start < w.End && w.Start < o.End {
						overlap = true
					}
				}
			} else {
				other++
			}
		}
		if member < 2 || other < 5 || !overlap {
			t.Fatalf("%d membership and %d other windows (overlapping: %t), want >= 2 and >= 5 overlapping: %+v", member, other, overlap, ws)
		}
	})
}

// failingCut is a cluster on which installing cuts fails part-way (as when
// one node's rules cannot be written) while healing works.
type failingCut struct {
	*fakeMembers
	calls [][]Link
}

func (f *failingCut) Cut(_ context.Context, links []Link) error {
	f.calls = append(f.calls, links)
	if len(links) > 0 {
		return errors.New("nft in n4: no such chain")
	}
	return nil
}

// TestFailedCutIsHealed: a partition whose cut failed on some node is
// healed at once; Schedule never heals a fault that failed to inject, so the
// nodes that did get their rules would otherwise stay cut off.
func TestFailedCutIsHealed(t *testing.T) {
	for _, nm := range []Nemesis{halves{}, majoritiesRing{}} {
		c := &failingCut{fakeMembers: newFakeMembers(4)}
		if _, err := nm.Inject(context.Background(), c, rand.New(rand.NewPCG(1, 1))); err == nil {
			t.Fatalf("%s: inject with a failing cut returned no error", nm.Name())
		}
		if n := len(c.calls); n != 2 || len(c.calls[1]) != 0 {
			t.Fatalf("%s: cuts %v, want the failed cut and then a heal", nm.Name(), c.calls)
		}
	}
}
