package cp

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/raft"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/internal/fault"
)

func ackOK(term uint64) (*raft.AppendEntriesRequest, *raft.AppendEntriesResponse) {
	return &raft.AppendEntriesRequest{Term: term}, &raft.AppendEntriesResponse{Term: term, Success: true}
}

// The lease base is the newest send time a majority of voters confirmed,
// counting only voters, only the current term, and nothing once fenced.
func TestQuorumContact(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	voters := func(ids ...string) []raft.Server {
		var out []raft.Server
		for _, id := range ids {
			out = append(out, raft.Server{ID: raft.ServerID(id), Address: raft.ServerAddress(id), Suffrage: raft.Voter})
		}
		return out
	}
	var a Acks
	req, resp := ackOK(3)
	a.observe("b", req, resp, at(10))
	a.observe("c", req, resp, at(30))
	a.observe("d", req, resp, at(50))
	a.observe("b", req, &raft.AppendEntriesResponse{Term: 3}, at(90)) // failed: no contact
	a.observe("b", req, resp, at(5))                                  // older send: kept at 10
	old, oldResp := ackOK(2)
	a.observe("e", old, oldResp, at(80)) // an older term does not count

	for _, tc := range []struct {
		name    string
		term    uint64
		servers []raft.Server
		want    time.Time
		always  bool
		ok      bool
	}{
		{"three voters: one other needed, the newest", 3, voters("a", "b", "c"), at(30), false, true},
		{"five voters: two others needed", 3, voters("a", "b", "c", "d", "e"), at(30), false, true},
		{"five voters, e of an old term", 3, voters("a", "b", "e", "f", "g"), time.Time{}, false, false},
		{"another term", 4, voters("a", "b", "c"), time.Time{}, false, false},
		{"self not a voter", 3, voters("b", "c", "d"), time.Time{}, false, false},
		{"alone", 3, voters("a"), time.Time{}, true, true},
		{"non-voters do not count", 3, append(voters("a", "x", "y"),
			raft.Server{ID: "c", Address: "c", Suffrage: raft.Nonvoter}), time.Time{}, false, false},
	} {
		got, always, ok := a.quorumContact(tc.term, "a", tc.servers)
		if ok != tc.ok || always != tc.always || !got.Equal(tc.want) {
			t.Errorf("%s: quorumContact = %v, %v, %v; want %v, %v, %v", tc.name, got, always, ok, tc.want, tc.always, tc.ok)
		}
	}

	a.fence()
	if _, _, ok := a.quorumContact(3, "a", voters("a", "b", "c")); ok {
		t.Error("a fenced term still has a lease")
	}
	req4, resp4 := ackOK(4)
	a.observe("b", req4, resp4, at(100))
	if got, _, ok := a.quorumContact(4, "a", voters("a", "b", "c")); !ok || !got.Equal(at(100)) {
		t.Errorf("the next term: %v, %v; want %v, true", got, ok, at(100))
	}
}

// A leader cut off from both followers serves lease reads only until its
// lease runs out, and never once another replica has been elected: at
// every instant (fake time) the test checks for a new leader first, then
// reads from the old one. Raft's own lease (LeaderLeaseTimeout) is as long
// as the follower timeout, as by default, so the old leader keeps its
// leadership past the read lease and only the read lease stops its reads.
func TestReadLeaseEndsBeforeANewLeader(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tuning := testTuning()
		tuning.LeaderLeaseTimeout = tuning.HeartbeatTimeout
		g := newTestGroupWith(t, tuning, "a", "b", "c")
		old := g.leader()
		ctx, cancel := ctxFor(2 * time.Second)
		if _, err := old.Propose(ctx, put("k", "v1", 1)); err != nil {
			t.Fatal(err)
		}
		cancel()
		time.Sleep(100 * time.Millisecond) // heartbeats renew the lease
		leaseBefore, _ := old.ReadStats()

		cut := time.Now()
		g.faults.Partition([]string{old.cfg.Self}, g.others(old.cfg.Self), fault.Rule{Drop: true})
		var lastOK time.Time
		var elected time.Time
		for time.Since(cut) < 3*time.Second {
			for _, id := range g.others(old.cfg.Self) {
				if elected.IsZero() && g.reps[id].IsLeader() {
					elected = time.Now()
				}
			}
			rctx, rcancel := ctxFor(5 * time.Millisecond)
			_, err := old.ReadBarrier(rctx)
			rcancel()
			if err == nil {
				lastOK = time.Now()
				if !elected.IsZero() {
					t.Fatalf("the old leader confirmed a read %s after the cut, %s after a new leader was elected", lastOK.Sub(cut), lastOK.Sub(elected))
				}
			}
			time.Sleep(2 * time.Millisecond)
		}
		leaseAfter, _ := old.ReadStats()
		if elected.IsZero() {
			t.Fatal("no new leader within 3s of the cut")
		}
		if leaseAfter == leaseBefore || lastOK.IsZero() {
			t.Fatal("the old leader served no lease read after the cut: the test did not exercise the lease")
		}
		lease := g.tuning.readLease()
		t.Logf("cut at 0; last lease read at %s; new leader at %s; lease %s", lastOK.Sub(cut), elected.Sub(cut), lease)
		if lastOK.Sub(cut) >= lease {
			t.Errorf("a lease read %s after the cut, past the %s lease", lastOK.Sub(cut), lease)
		}
	})
}

// After a leadership transfer begins, the old leader confirms reads with a
// quorum round again: the target may be elected at once.
func TestLeadershipTransferEndsTheLease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newTestGroup(t, "a", "b", "c")
		old := g.leader()
		time.Sleep(100 * time.Millisecond)
		if !old.leaseHolds(time.Now()) {
			t.Fatal("a settled leader holds no lease")
		}
		if err := old.raft.LeadershipTransfer().Error(); err != nil {
			t.Fatal(err)
		}
		if old.leaseHolds(time.Now()) {
			t.Fatal("the lease outlived a leadership transfer")
		}
		g.leader(old.cfg.Self)
	})
}

// The real network's leases: a settled leader confirms reads without a
// quorum round, so they send no leadership-check heartbeats.
func TestReadLeaseSkipsQuorumRound(t *testing.T) {
	ids := []string{"n1", "n2", "n3"}
	c := startGRPCCluster(t, ids, nil)
	l := c.startGroups(t, ids, 1)[0]
	ln := c.nets[l.cfg.Self]
	time.Sleep(400 * time.Millisecond)
	before := ln.hbUrgent.Load()
	lease0, quorum0 := l.ReadStats()
	for range 50 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if _, err := l.ReadBarrier(ctx); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
	lease, quorum := l.ReadStats()
	urgent := ln.hbUrgent.Load() - before
	t.Logf("50 reads: %d by lease, %d by quorum round, %d leadership-check heartbeats", lease-lease0, quorum-quorum0, urgent)
	if lease-lease0 < 45 {
		t.Errorf("only %d of 50 reads of a settled leader were confirmed by the lease", lease-lease0)
	}
}

// A replica refuses to vote for its followers' HeartbeatTimeout after it
// starts, and takes TimeoutNow only from the leader it follows.
func TestTransportFencesVotesAndForeignTimeoutNow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := NewNetwork("n2", nil, nil)
		tr := n.Transport("g")
		tr.bind(func() raft.ServerAddress { return "n1" }, 200*time.Millisecond)
		delivered := make(chan any, 4)
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			for {
				var rpc raft.RPC
				select {
				case rpc = <-tr.Consumer():
				case <-stop:
					return
				}
				delivered <- rpc.Command
				switch rpc.Command.(type) {
				case *raft.RequestVoteRequest:
					rpc.Respond(&raft.RequestVoteResponse{Term: 7, Granted: true}, nil)
				default:
					rpc.Respond(&raft.TimeoutNowResponse{}, nil)
				}
			}
		}()
		frame := func(kind uint32, from string, v any) *api.RaftFrame {
			p, err := encode(v)
			if err != nil {
				t.Fatal(err)
			}
			return &api.RaftFrame{Group: "g", Kind: kind, From: from, Payload: p}
		}
		vote := &raft.RequestVoteRequest{Term: 7, RPCHeader: raft.RPCHeader{ID: []byte("n3"), Addr: []byte("n3")}}
		out, err := n.dispatch(context.Background(), frame(kindVote, "n3", vote), nil)
		if err != nil {
			t.Fatal(err)
		}
		var vr raft.RequestVoteResponse
		if err := frameResult(out, &vr); err != nil || vr.Granted {
			t.Fatalf("vote right after start: %+v, %v; want refused", vr, err)
		}
		time.Sleep(200 * time.Millisecond)
		out, err = n.dispatch(context.Background(), frame(kindVote, "n3", vote), nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := frameResult(out, &vr); err != nil || !vr.Granted {
			t.Fatalf("vote after the fence: %+v, %v; want raft's answer (granted)", vr, err)
		}

		tn := &raft.TimeoutNowRequest{RPCHeader: raft.RPCHeader{ID: []byte("n3"), Addr: []byte("n3")}}
		out, err = n.dispatch(context.Background(), frame(kindTimeoutNow, "n3", tn), nil)
		if err != nil {
			t.Fatal(err)
		}
		if out.GetError() == "" {
			t.Fatal("a TimeoutNow from a node that is not the leader was accepted")
		}
		out, err = n.dispatch(context.Background(), frame(kindTimeoutNow, "n1", tn), nil)
		if err != nil || out.GetError() != "" {
			t.Fatalf("the leader's TimeoutNow: %v %q", err, out.GetError())
		}
		got := 0
		for len(delivered) > 0 {
			<-delivered
			got++
		}
		if got != 2 {
			t.Errorf("%d requests reached raft, want 2 (the late vote and the leader's TimeoutNow)", got)
		}
	})
}
