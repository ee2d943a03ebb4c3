package rebalance

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/capkv/capkv/ring"
)

var t0 = time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)

func mv(i int, from, to string) ring.Move {
	return ring.Move{Partition: ring.PartitionID{Keyspace: "ks", Index: i}, From: strings.Split(from, ","), To: strings.Split(to, ",")}
}

// A join: every move adds n4, so n4 limits the plan to Limit at a time.
func TestNextThrottlesPerNode(t *testing.T) {
	p := New(7, ring.MovePlan{Moves: []ring.Move{
		mv(0, "n1,n2,n3", "n2,n3,n4"), mv(1, "n1,n2,n3", "n1,n3,n4"), mv(2, "n1,n2,n3", "n1,n2,n4"),
	}}, 2)
	if got := p.Next(t0); fmt.Sprint(got) != "[0 1]" {
		t.Fatalf("Next = %v, want [0 1] (n4 takes two at a time)", got)
	}
	if got := p.Next(t0); len(got) != 0 {
		t.Fatalf("Next with n4 busy = %v, want none", got)
	}
	if err := p.Finish(0, t0.Add(time.Second), 10, 100, nil); err != nil {
		t.Fatal(err)
	}
	if got := p.Next(t0.Add(time.Second)); fmt.Sprint(got) != "[2]" {
		t.Fatalf("Next after one finished = %v, want [2]", got)
	}
	if s := p.Status(); s.Done != 1 || s.Running != 2 || s.Keys != 10 {
		t.Fatalf("status %+v", s)
	}
}

// A failed move is retried after its backoff, which doubles; a move put
// back to pending cannot be finished.
func TestRetryAndAbandon(t *testing.T) {
	p := New(1, ring.MovePlan{Moves: []ring.Move{mv(0, "a,b", "b,c")}}, 1)
	p.Next(t0)
	if err := p.Finish(0, t0, 0, 0, errors.New("c unreachable")); err != nil {
		t.Fatal(err)
	}
	if got := p.Next(t0.Add(500 * time.Millisecond)); len(got) != 0 {
		t.Fatalf("retried before the backoff: %v", got)
	}
	if got := p.Next(t0.Add(time.Second)); len(got) != 1 {
		t.Fatal("not retried after the backoff")
	}
	p.Finish(0, t0.Add(time.Second), 0, 0, errors.New("again"))
	if p.Moves[0].Retry != t0.Add(3*time.Second) {
		t.Fatalf("second backoff ends %v, want 2s after the failure", p.Moves[0].Retry)
	}
	// A new metadata leader puts a move no mover of its own runs back to
	// pending (meta's rebalanceTick); its old mover's Finish is refused.
	p.Moves[0].State = Pending
	if err := p.Finish(0, t0, 0, 0, nil); err == nil {
		t.Fatal("Finish of a move that is not running accepted")
	}
}

// Random plans and outcomes: the limit is never exceeded, and the plan
// completes once failures stop.
func TestThrottleProperty(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	nodes := []string{"a", "b", "c", "d", "e", "f"}
	for trial := range 300 {
		var mp ring.MovePlan
		for i := range 1 + rng.IntN(20) {
			perm := rng.Perm(len(nodes))
			from := []string{nodes[perm[0]], nodes[perm[1]], nodes[perm[2]]}
			to := []string{nodes[perm[1]], nodes[perm[2]], nodes[perm[3]]}
			mp.Moves = append(mp.Moves, ring.Move{Partition: ring.PartitionID{Keyspace: "ks", Index: i}, From: from, To: to})
		}
		limit := 1 + rng.IntN(3)
		p := New(1, mp, limit)
		now := t0
		for round := 0; !p.Complete(); round++ {
			if round > 1000 {
				t.Fatalf("trial %d: not complete after 1000 rounds: %+v", trial, p.Status())
			}
			p.Next(now)
			busy := map[string]int{}
			for _, m := range p.Moves {
				if m.State == Running {
					for _, n := range involved(m.Move) {
						if busy[n]++; busy[n] > limit {
							t.Fatalf("trial %d: node %s in %d running moves, limit %d", trial, n, busy[n], limit)
						}
					}
				}
			}
			for i, m := range p.Moves {
				if m.State == Running && rng.IntN(2) == 0 {
					var err error
					if round < 20 && rng.IntN(3) == 0 {
						err = errors.New("fault")
					}
					p.Finish(i, now, 1, 1, err)
				}
			}
			now = now.Add(time.Minute)
		}
	}
}

// An outcome is recorded only on the move that ran: another running move of
// the same partition (a later plan's, with other replicas) is not it.
func TestRunningMoveMatchesExactly(t *testing.T) {
	p := New(2, ring.MovePlan{Moves: []ring.Move{mv(0, "a,b,c", "a,b,d"), mv(1, "a,b,c", "a,c,d")}}, 2)
	if i := p.RunningMove(mv(0, "a,b,c", "a,b,d")); i != -1 {
		t.Fatalf("a pending move matched as running: %d", i)
	}
	p.Next(t0)
	if i := p.RunningMove(mv(0, "a,b,c", "a,b,d")); i != 0 {
		t.Fatalf("RunningMove of the running move = %d, want 0", i)
	}
	// An earlier plan's move of partition 0, to other replicas.
	if i := p.RunningMove(mv(0, "a,b,c", "a,b,e")); i != -1 {
		t.Fatalf("a move of partition 0 to other replicas matched move %d", i)
	}
	if i := p.RunningMove(mv(0, "a,b,e", "a,b,d")); i != -1 {
		t.Fatalf("a move of partition 0 from other replicas matched move %d", i)
	}
}
