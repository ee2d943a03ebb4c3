package cp

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/raft"

	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/internal/fault"
	"github.com/capkv/capkv/shard"
)

func TestNextStepTable(t *testing.T) {
	v := func(id string) Member { return Member{ID: id, Voter: true} }
	l := func(id string) Member { return Member{ID: id} }
	for _, tc := range []struct {
		name   string
		cur    []Member
		target []string
		leader string
		want   Step
	}{
		{"done", []Member{v("a"), v("b"), v("c")}, []string{"c", "b", "a"}, "a", Step{Kind: StepDone}},
		{"add first", []Member{v("a"), v("b"), v("c")}, []string{"b", "c", "d"}, "a", Step{StepAddLearner, "d"}},
		{"promote a learner", []Member{v("a"), v("b"), v("c"), l("d")}, []string{"b", "c", "d"}, "a", Step{StepPromote, "d"}},
		{"leader leaves by transfer", []Member{v("a"), v("b"), v("c"), v("d")}, []string{"b", "c", "d"}, "a", Step{StepTransfer, "a"}},
		{"follower leaves", []Member{v("a"), v("b"), v("c"), v("d")}, []string{"b", "c", "d"}, "b", Step{StepRemove, "a"}},
		{"stray learner before voters", []Member{v("a"), v("b"), l("x"), v("d")}, []string{"b", "d"}, "b", Step{StepRemove, "x"}},
		{"adds in target order", []Member{v("a")}, []string{"a", "c", "b"}, "a", Step{StepAddLearner, "c"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := NextStep(tc.cur, tc.target, tc.leader); got != tc.want {
				t.Fatalf("NextStep = %v, want %v", got, tc.want)
			}
		})
	}
}

// Every move, from any configuration to any target, ends at the target in
// at most two steps per server that joins or leaves plus one transfer; each
// step changes one server; the group never has fewer voters than the
// smaller of where it started and where it goes; and the leader never
// removes itself. Leadership after a transfer goes to a random voter.
func TestNextStepReachesEveryTarget(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	ids := []string{"a", "b", "c", "d", "e", "f"}
	for trial := range 5000 {
		var cur []Member
		for _, id := range ids {
			switch rng.IntN(3) {
			case 1:
				cur = append(cur, Member{ID: id, Voter: true})
			case 2:
				cur = append(cur, Member{ID: id})
			}
		}
		var voters []string
		for _, m := range cur {
			if m.Voter {
				voters = append(voters, m.ID)
			}
		}
		if len(voters) == 0 {
			continue
		}
		leader := voters[rng.IntN(len(voters))]
		target := slices.Clone(ids)
		rng.Shuffle(len(target), func(i, j int) { target[i], target[j] = target[j], target[i] })
		target = target[:1+rng.IntN(len(target))]
		floor := min(len(voters), len(target))
		start := fmt.Sprint(cur, " leader ", leader, " -> ", target)

		for steps := 0; ; steps++ {
			if steps > 2*len(ids)+1 {
				t.Fatalf("trial %d: %s: no end after %d steps, at %v", trial, start, steps, cur)
			}
			st := NextStep(cur, target, leader)
			i := slices.IndexFunc(cur, func(m Member) bool { return m.ID == st.Server })
			switch st.Kind {
			case StepDone:
			case StepAddLearner:
				if i >= 0 {
					t.Fatalf("trial %d: %s: adds %s, already a member", trial, start, st.Server)
				}
				cur = append(cur, Member{ID: st.Server})
			case StepPromote:
				if i < 0 || cur[i].Voter {
					t.Fatalf("trial %d: %s: promotes %s, not a learner in %v", trial, start, st.Server, cur)
				}
				cur[i].Voter = true
			case StepTransfer:
				if st.Server != leader {
					t.Fatalf("trial %d: %s: transfer from %s, leader is %s", trial, start, st.Server, leader)
				}
				var others []string
				for _, m := range cur {
					if m.Voter && m.ID != leader {
						others = append(others, m.ID)
					}
				}
				if len(others) == 0 {
					t.Fatalf("trial %d: %s: transfer with no other voter in %v", trial, start, cur)
				}
				leader = others[rng.IntN(len(others))]
			case StepRemove:
				if st.Server == leader {
					t.Fatalf("trial %d: %s: the leader %s removes itself", trial, start, leader)
				}
				cur = slices.Delete(cur, i, i+1)
			}
			n := 0
			for _, m := range cur {
				if m.Voter {
					n++
				}
			}
			if n < floor {
				t.Fatalf("trial %d: %s: %d voters after %v, below %d", trial, start, n, st, floor)
			}
			if st.Kind == StepDone {
				got := make([]string, 0, len(cur))
				for _, m := range cur {
					if !m.Voter {
						t.Fatalf("trial %d: %s: done with learner %s", trial, start, m.ID)
					}
					got = append(got, m.ID)
				}
				slices.Sort(got)
				want := slices.Sorted(slices.Values(target))
				if !slices.Equal(got, want) {
					t.Fatalf("trial %d: %s: done at %v, want %v", trial, start, got, want)
				}
				break
			}
		}
	}
}

// leaderRetry is how long the test's clients wait before asking again.
const leaderRetry = 20 * time.Millisecond

// join adds a replica that is not in the group yet: it starts empty, with
// Join, connected to every other replica.
func (g *testGroup) join(id string) {
	_, tr := raft.NewInmemTransport(raft.ServerAddress(id))
	g.trans[id] = tr
	g.logs[id] = raft.NewInmemStore()
	g.stores[id] = newMemStorage()
	for _, other := range g.ids {
		tr.Connect(raft.ServerAddress(other), g.trans[other])
		g.trans[other].Connect(raft.ServerAddress(id), tr)
	}
	g.ids = append(g.ids, id)
	r, err := StartGroup(GroupConfig{ID: "ks/*/0", Self: id, Peers: nil, Join: true, Storage: g.stores[id], LogStore: g.logs[id],
		Transport: &FaultyTransport{Transport: tr, Self: id, Faults: g.faults, Timeout: 200 * time.Millisecond},
		Tuning:    g.tuning})
	if err != nil {
		g.t.Fatal(err)
	}
	g.reps[id] = r
}

// caughtUp waits (in fake time) for a replica of the test group to apply index.
func (g *testGroup) caughtUp(ctx context.Context, id string, index uint64) error {
	for {
		if r := g.reps[id]; r != nil && r.raft.AppliedIndex() >= index {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// move drives a move to its end, following leadership as a mover on the
// metadata leader would.
func (g *testGroup) move(ctx context.Context, target []string) error {
	for {
		l := g.leader()
		err := l.Move(ctx, target, g.caughtUp)
		var nl *NotLeaderError
		if err == nil || !errors.As(err, &nl) {
			return err
		}
		time.Sleep(leaderRetry)
	}
}

// A partition moves from {n1,n2,n3} to {n2,n3,n4} while it serves: the new
// replica gets everything written before and during the move, the old one
// leaves the configuration, and afterwards the group commits without it
// and with one more of the old replicas down.
func TestMoveReplacesAReplica(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newTestGroup(t, "n1", "n2", "n3")
		ctx, cancel := ctxFor(time.Minute)
		defer cancel()
		write := func(k, v string) {
			t.Helper()
			for {
				_, err := g.leader().Propose(ctx, put(k, v, consistency.MakeTimestamp(1, 0)))
				if err == nil {
					return
				}
				var nl *NotLeaderError
				if !errors.As(err, &nl) {
					t.Fatalf("put %s: %v", k, err)
				}
				time.Sleep(leaderRetry)
			}
		}
		for i := range 50 {
			write(fmt.Sprintf("k%02d", i), "before")
		}
		// The leader is made n1 so that the move must transfer leadership.
		for l := g.leader(); l.cfg.Self != "n1"; l = g.leader() {
			l.raft.LeadershipTransferToServer("n1", "n1").Error()
		}
		g.join("n4")
		done := make(chan error, 1)
		go func() { done <- g.move(ctx, []string{"n2", "n3", "n4"}) }()
		for i := range 20 { // writes while the group moves
			write(fmt.Sprintf("m%02d", i), "during")
		}
		if err := <-done; err != nil {
			t.Fatalf("move: %v", err)
		}
		l := g.leader()
		members, cfgIndex, err := l.Members()
		if err != nil {
			t.Fatal(err)
		}
		if cfgIndex == 0 {
			t.Fatal("no configuration index after the move: changes would go without raft's prevIndex check")
		}
		if want := []Member{{"n2", true}, {"n3", true}, {"n4", true}}; !sameMembers(members, want) {
			t.Fatalf("configuration after the move: %v, want %v", members, want)
		}
		if l.cfg.Self == "n1" {
			t.Fatal("n1 still leads after leaving")
		}
		// n1 and one more old replica down: n4 is needed for every commit.
		g.reps["n1"].Shutdown()
		other := "n2"
		if l.cfg.Self == "n2" {
			other = "n3"
		}
		g.faults.Partition([]string{other}, []string{"n1", l.cfg.Self, "n4"}, fault.Rule{Drop: true})
		write("after", "x")
		if err := g.caughtUp(ctx, "n4", l.raft.CommitIndex()); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"k00", "k49", "m00", "m19", "after"} {
			if v := g.stores["n4"].value(k); v == "<absent>" {
				t.Fatalf("n4 lacks %s after the move", k)
			}
		}
	})
}

// A learner that never catches up is never promoted: the move fails at its
// deadline, and the old replicas keep serving.
func TestMoveWaitsForTheLearner(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newTestGroup(t, "n1", "n2", "n3")
		g.join("n4")
		g.faults.Partition([]string{"n4"}, []string{"n1", "n2", "n3"}, fault.Rule{Drop: true})
		ctx, cancel := ctxFor(5 * time.Second)
		defer cancel()
		err := g.move(ctx, []string{"n2", "n3", "n4"})
		if err == nil {
			t.Fatal("move finished with the learner cut off")
		}
		members, _, _ := g.leader().Members()
		for _, m := range members {
			if m.ID == "n4" && m.Voter {
				t.Fatalf("cut-off learner promoted: %v", members)
			}
		}
		wctx, wcancel := ctxFor(5 * time.Second)
		defer wcancel()
		if _, err := g.leader().Propose(wctx, put("k", "v", consistency.MakeTimestamp(1, 0))); err != nil {
			t.Fatalf("old replicas stopped serving: %v", err)
		}
		t.Logf("move: %v", err)
	})
}

// A leader whose learner cannot catch up and that then loses leadership
// gives the move up at once with a NotLeaderError, instead of waiting for
// the learner until the move's deadline: the mover of the next leader
// could not start the move while this one held it (a drain once stalled
// so at its metadata seat step, under a partition).
func TestMoveStopsWhenLeadershipIsLost(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newTestGroup(t, "n1", "n2", "n3")
		g.join("n4")
		g.faults.Partition([]string{"n4"}, []string{"n1", "n2", "n3"}, fault.Rule{Drop: true})
		l := g.leader()
		ctx, cancel := ctxFor(2 * time.Minute)
		defer cancel()
		var target []string
		for _, id := range []string{"n1", "n2", "n3"} {
			if id != l.cfg.Self {
				target = append(target, id)
			}
		}
		target = append(target, "n4")
		began := time.Now()
		done := make(chan error, 1)
		go func() { done <- l.Move(ctx, target, g.caughtUp) }()
		// Once the learner is in, the leader is cut off from the rest.
		for {
			members, _, err := l.Members()
			if err == nil && slices.ContainsFunc(members, func(m Member) bool { return m.ID == "n4" }) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		var others []string
		for _, id := range []string{"n1", "n2", "n3", "n4"} {
			if id != l.cfg.Self {
				others = append(others, id)
			}
		}
		g.faults.Partition([]string{l.cfg.Self}, others, fault.Rule{Drop: true})
		err := <-done
		var nl *NotLeaderError
		if !errors.As(err, &nl) {
			t.Fatalf("move on the deposed leader: %v, want a NotLeaderError", err)
		}
		// Fake time: the leader steps down after its lease, the mover a
		// poll later; nowhere near the move's two minutes.
		if took := time.Since(began); took > 10*time.Second {
			t.Fatalf("the deposed leader's move returned after %v", took)
		}
		t.Logf("move returned after %v: %v", time.Since(began), err)
	})
}

func sameMembers(a, b []Member) bool {
	key := func(m Member) string { return fmt.Sprint(m) }
	as, bs := make([]string, len(a)), make([]string, len(b))
	for i, m := range a {
		as[i] = key(m)
	}
	for i, m := range b {
		bs[i] = key(m)
	}
	slices.Sort(as)
	slices.Sort(bs)
	return slices.Equal(as, bs)
}

// PollApplied returns once the node reports the index, and when the
// context ends first it names the last answer.
func TestPollApplied(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		asked := 0
		applied := func(ctx context.Context, server string) (uint64, error) {
			if server != "n2" {
				return 0, fmt.Errorf("asked %s", server)
			}
			asked++
			if asked < 3 {
				return 0, errors.New("not running yet")
			}
			return uint64(asked), nil
		}
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		if err := PollApplied(applied)(ctx, "n2", 5); err != nil {
			t.Fatalf("caught up: %v", err)
		}
		if asked != 5 {
			t.Fatalf("asked %d times, want 5 (until applied 5)", asked)
		}

		ctx2, cancel2 := context.WithTimeout(t.Context(), time.Second)
		defer cancel2()
		err := PollApplied(applied)(ctx2, "n2", 1000)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want the deadline", err)
		}
		if want := fmt.Sprintf("of %d", 1000); !strings.Contains(err.Error(), want) {
			t.Fatalf("err = %v, want it to say how far the node is (%q)", err, want)
		}

		ctx3, cancel3 := context.WithTimeout(t.Context(), time.Second)
		defer cancel3()
		err = PollApplied(applied)(ctx3, "n9", 1)
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "asked n9") {
			t.Fatalf("err = %v, want the deadline and the last answer", err)
		}

		// A question that hangs (a connection into a dropped partition)
		// is given up after a second and asked again.
		hung := 0
		hanging := func(ctx context.Context, server string) (uint64, error) {
			if hung++; hung == 1 {
				<-ctx.Done()
				return 0, ctx.Err()
			}
			return 10, nil
		}
		ctx4, cancel4 := context.WithTimeout(t.Context(), time.Minute)
		defer cancel4()
		began := time.Now()
		if err := PollApplied(hanging)(ctx4, "n2", 10); err != nil {
			t.Fatalf("after a hung question: %v", err)
		}
		if took := time.Since(began); took > 2*time.Second {
			t.Fatalf("a hung question held the wait %v", took)
		}
	})
}

// pendingFuture is a raft.Future that completes when its channel yields.
type pendingFuture chan error

func (f pendingFuture) Error() error { return <-f }

// await tells a completed future (with its own error) from a context that
// ended first and from a group that stopped first.
func TestAwait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := &Group{stop: make(chan struct{})}
		refused := errors.New("refused")
		f := make(pendingFuture, 1)
		f <- refused
		if done, err := g.await(t.Context(), f); !done || !errors.Is(err, refused) {
			t.Fatalf("completed future: done=%v err=%v, want true and its error", done, err)
		}

		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		never := make(pendingFuture)
		defer close(never)
		if done, err := g.await(ctx, never); done || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("deadline first: done=%v err=%v, want false and the deadline", done, err)
		}

		close(g.stop)
		if done, err := g.await(t.Context(), never); done || !errors.Is(err, errStopped) {
			t.Fatalf("stopped first: done=%v err=%v, want false and errStopped", done, err)
		}
	})
}

// A cp move reports the live records the new replicas hold: user keys and
// their bytes, not tombstones or Raft bookkeeping.
func TestLiveSizeCountsUserRecords(t *testing.T) {
	r := openShard(t, t.TempDir()).Replica("accounts/eu/1")
	for _, m := range []shard.Mutation{
		{Key: "accounts/eu/1/a", Record: shard.Record{Value: []byte("12345"), Version: 1}},
		{Key: "accounts/eu/1/b", Record: shard.Record{Value: []byte("x"), Version: 2}},
		{Key: "accounts/eu/1/gone", Record: shard.Record{Tombstone: true, Version: 3}},
		{Key: appliedKey, Record: shard.Record{Version: 3}},
		{Key: dedupPrefix + "r1", Record: shard.Record{Value: []byte{1}, Version: 2}},
	} {
		if err := r.Apply([]shard.Mutation{m}); err != nil {
			t.Fatal(err)
		}
	}
	keys, bytes, err := liveSize(r)
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(len("accounts/eu/1/a") + 5 + len("accounts/eu/1/b") + 1); keys != 2 || bytes != want {
		t.Errorf("liveSize = %d keys, %d bytes; want 2, %d", keys, bytes, want)
	}
}
