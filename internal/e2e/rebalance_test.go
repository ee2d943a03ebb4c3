package e2e

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/capkv/capkv/client"
	"github.com/capkv/capkv/consistency"
)

// TestJoinMovesPartitions: a 4th node joins a 3-node cluster holding 200 cp
// and 200 ap keys; the metadata group plans the moves, the mover runs them
// (Raft membership changes for cp, a stream for ap), and within 2 minutes
// the new node holds a fair share of the replicas of both keyspaces. Then
// n1 is drained (kvctl node remove) to no replicas and out of the map, its
// metadata seat moving too; with n1 gone and n2 killed every key is still
// readable.
func TestJoinMovesPartitions(t *testing.T) {
	cl := startClusterWith(t, 3, []string{"--log-level", "info"}, "eu")
	eps := cl.endpoints()
	c := newClient(t, eps...)
	ctx := ctxT(t)
	const n = 200
	cpKey := func(i int) string { return fmt.Sprintf("accounts/eu/%d/balance", i) }
	apKey := func(i int) string { return fmt.Sprintf("sessions/u%d/k", i) }
	for i := range n {
		if _, err := c.Put(ctx, cpKey(i), []byte(fmt.Sprint(i))); err != nil {
			t.Fatalf("put %s: %v", cpKey(i), err)
		}
		if _, err := c.Put(ctx, apKey(i), []byte(fmt.Sprint(i)), client.WithConsistency(consistency.All)); err != nil {
			t.Fatalf("put %s: %v", apKey(i), err)
		}
	}

	start := time.Now()
	cl.addJoiner("n4", "eu")
	eps = cl.endpoints()
	type status struct {
		PlannedAtEpoch uint64         `json:"planned_at_epoch"`
		Complete       bool           `json:"complete"`
		Counts         map[string]int `json:"counts"`
		Replicas       int            `json:"replicas"`
		Moved          int            `json:"moved_replicas"`
		Keys           int            `json:"keys"`
		Moves          []struct {
			Partition, State, Error string
			From, To                []string
			TookMs                  int64 `json:"took_ms"`
		} `json:"moves"`
	}
	var st status
	deadline := time.Now().Add(2 * time.Minute)
	for {
		out, errOut, code := kvctl(t, eps, "", "rebalance", "status", "--json")
		if code == 0 {
			st = status{}
			if err := json.Unmarshal([]byte(out), &st); err != nil {
				t.Fatalf("rebalance status --json: %v\n%s", err, out)
			}
			if st.PlannedAtEpoch > 0 && st.Complete {
				break
			}
		}
		if time.Now().After(deadline) {
			text, _, _ := kvctl(t, eps, "", "rebalance", "status")
			t.Fatalf("rebalance not complete 2 minutes after the join (%s):\n%s\nn4 log:\n%s\nn1 log:\n%s", errOut, text, cl.proc("n4").log, cl.proc("n1").log)
		}
		time.Sleep(500 * time.Millisecond)
	}
	took := time.Since(start)
	text, _, _ := kvctl(t, eps, "", "rebalance", "status")
	t.Logf("rebalance complete %s after the join: %d moves, %d of %d replicas moved (%.1f%%), %d keys moved (ap streamed, cp caught up by Raft)\n%s",
		took.Round(time.Millisecond), len(st.Moves), st.Moved, st.Replicas, 100*float64(st.Moved)/float64(st.Replicas), st.Keys, text)

	for _, ks := range []string{"accounts", "sessions"} {
		r := replicasPerNode(t, eps, ks)
		t.Logf("%s replicas per node: %v", ks, r)
		if r["n4"] < 4 {
			t.Errorf("%s: n4 holds %d of the replicas, want at least 4 of 24", ks, r["n4"])
		}
	}

	check := func(when string) {
		t.Helper()
		var live []string
		for _, p := range cl.procs {
			select {
			case <-p.done:
			default:
				live = append(live, p.addr)
			}
		}
		c := newClient(t, live...)
		ctx := ctxT(t)
		for i := range n {
			for _, k := range []string{cpKey(i), apKey(i)} {
				it, err := c.Get(ctx, k, client.WithConsistency(consistency.Quorum))
				if strings.HasPrefix(k, "accounts/") {
					it, err = c.Get(ctx, k)
				}
				if err != nil {
					t.Fatalf("%s: get %s: %v", when, k, err)
				}
				if string(it.Value) != fmt.Sprint(i) {
					t.Fatalf("%s: get %s = %q, want %d", when, k, it.Value, i)
				}
			}
		}
	}
	check("after the moves")
	// Every ap key is on each of its replicas by now, n4 included: the
	// stream (or the writes during the move) put it there, not a read repair.
	c = newClient(t, cl.endpoints()...)
	if err := c.Refresh(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	onN4 := 0
	keyOf := map[string]string{} // partition -> one of its ap keys
	for i := range n {
		p, err := c.Locate(apKey(i))
		if err != nil {
			t.Fatal(err)
		}
		keyOf[p.Partition.String()] = apKey(i)
		for _, r := range p.Replicas {
			if v := localValues(t, cl.proc(r).addr, p.Partition.String(), apKey(i)); len(v) != 1 || v[0] != fmt.Sprint(i) {
				t.Fatalf("%s on replica %s of %s: %v, want [%d]", apKey(i), r, p.Partition, v, i)
			}
			if r == "n4" {
				onN4++
			}
		}
	}
	t.Logf("%d of %d ap keys have a replica on n4, each holding it", onN4, n)
	if onN4 == 0 {
		t.Fatal("no ap key has a replica on n4")
	}
	// The replicas that left dropped their copies (ap after handing them
	// over once more; cp with their Raft group).
	for _, m := range st.Moves {
		key, ok := keyOf[m.Partition]
		if !ok {
			continue // a cp partition, or an ap one no test key fell in
		}
		for _, old := range m.From {
			if slices.Contains(m.To, old) {
				continue
			}
			waitFor(t, 15*time.Second, fmt.Sprintf("%s to drop moved partition %s", old, m.Partition), func() bool {
				return len(localValues(t, cl.proc(old).addr, m.Partition, key)) == 0
			})
		}
	}
	// Drain n1 (a metadata member): its replicas and its metadata seat move
	// to the others, then it leaves the map.
	drainStart := time.Now()
	out, errOut, code := kvctl(t, eps, "", "node", "remove", "n1", "--wait-timeout", "40s")
	if code != 0 {
		st, _, _ := kvctl(t, eps, "", "rebalance", "status")
		var logs strings.Builder
		for _, p := range cl.procs {
			for _, l := range strings.Split(p.log.String(), "\n") {
				if strings.Contains(l, "meta") || strings.Contains(l, "seat") || strings.Contains(l, "drain") || strings.Contains(l, "membership") {
					fmt.Fprintf(&logs, "%s: %s\n", p.id, l)
				}
			}
		}
		t.Fatalf("node remove n1: exit %d: %s\n%s\n%s\nlogs:\n%s", code, errOut, out, st, logs.String())
	}
	t.Logf("drain of n1 took %s:\n%s", time.Since(drainStart).Round(time.Millisecond), out)
	for _, ks := range []string{"accounts", "sessions"} {
		if r := replicasPerNode(t, eps, ks); r["n1"] != 0 {
			t.Fatalf("%s: n1 still holds %d replicas after its drain: %v", ks, r["n1"], r)
		}
	}
	var cs struct {
		Nodes []struct{ ID string }
	}
	out, _, _ = kvctl(t, eps, "", "cluster", "status", "--json")
	json.Unmarshal([]byte(out), &cs)
	for _, nd := range cs.Nodes {
		if nd.ID == "n1" {
			t.Fatalf("n1 is still in the cluster status after its drain:\n%s", out)
		}
	}
	if _, errOut, code := kvctl(t, eps, "", "node", "remove", "n9"); code == 0 || !strings.Contains(errOut, "not in the cluster map") {
		t.Fatalf("remove of an unknown node: exit %d, %s", code, errOut)
	}
	if _, errOut, code := kvctl(t, eps, "", "node", "remove", "n2", "--wait=false"); code == 0 || !strings.Contains(errOut, "needs 3 replicas") {
		t.Fatalf("a drain the rest cannot hold (3 nodes, RF 3): exit %d, %s\nn1 log:\n%s", code, errOut, cl.proc("n1").log)
	} else {
		t.Logf("refused drain: %s", strings.TrimSpace(errOut))
	}

	// With n1 gone and one more node killed, every key is still readable
	// (linearizable on cp, quorum on ap), and the map still changes (the
	// metadata group has a majority of its new members).
	cl.kill(cl.proc("n1"))
	cl.kill(cl.proc("n2"))
	waitFor(t, 20*time.Second, "cp reads without n1 and n2", func() bool {
		_, err := newClient(t, cl.proc("n3").addr, cl.proc("n4").addr).Get(ctxT(t), cpKey(0))
		return err == nil
	})
	check("with n1 removed and n2 killed")
	if _, errOut, code := kvctl(t, []string{cl.proc("n3").addr}, "", "keyspace", "create", "late", "--mode", "ap", "--replicas", "2"); code != 0 {
		t.Fatalf("the metadata group does not take changes with n1 removed and n2 killed: %s", errOut)
	}
}

// TestMoveSurvivesKills: the joining node is killed in the middle of the
// moves, then a source node; both come back, the moves resume (or are
// retried) and complete, and every key is still there.
func TestMoveSurvivesKills(t *testing.T) {
	cl := startClusterWith(t, 3, []string{"--log-level", "info"}, "eu")
	c := newClient(t, cl.endpoints()...)
	ctx := ctxT(t)
	const n = 200
	for i := range n {
		if _, err := c.Put(ctx, fmt.Sprintf("accounts/eu/%d/b", i), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Put(ctx, fmt.Sprintf("sessions/k%d/v", i), []byte(fmt.Sprint(i)), client.WithConsistency(consistency.All)); err != nil {
			t.Fatal(err)
		}
	}
	status := func() (running, done, total int, complete bool) {
		var st struct {
			Complete bool           `json:"complete"`
			Counts   map[string]int `json:"counts"`
			Moves    []struct{}     `json:"moves"`
		}
		out, _, code := kvctl(t, cl.endpoints(), "", "rebalance", "status", "--json")
		if code != 0 || json.Unmarshal([]byte(out), &st) != nil {
			return 0, 0, 0, false
		}
		return st.Counts["running"], st.Counts["done"], len(st.Moves), st.Complete && len(st.Moves) > 0
	}
	n4 := cl.addJoiner("n4", "eu")
	waitFor(t, 30*time.Second, "a move running", func() bool { r, _, _, _ := status(); return r > 0 })
	if out, _, _ := kvctl(t, cl.endpoints(), "", "cluster", "status"); !strings.Contains(out, "rebalancing: ") {
		t.Errorf("cluster status during the moves does not show them:\n%s", out)
	} else {
		t.Logf("cluster status during the moves:\n%s", out)
	}
	cl.kill(n4)
	t.Log("killed n4 (the joining node) with a move running")
	time.Sleep(3 * time.Second)
	cl.start(n4)
	cl.waitReady(n4)
	waitFor(t, 60*time.Second, "moves to go on after n4 restarted", func() bool {
		_, d, total, done := status()
		return done || (d > 0 && d < total)
	})
	n2 := cl.proc("n2")
	if _, _, _, complete := status(); !complete {
		cl.kill(n2)
		t.Log("killed n2 (a source) mid-rebalance")
		time.Sleep(2 * time.Second)
		cl.start(n2)
		cl.waitReady(n2)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if _, _, _, complete := status(); complete {
			break
		}
		if time.Now().After(deadline) {
			text, _, _ := kvctl(t, cl.endpoints(), "", "rebalance", "status")
			t.Fatalf("rebalance not complete 2 minutes after the kills:\n%s", text)
		}
		time.Sleep(500 * time.Millisecond)
	}
	text, _, _ := kvctl(t, cl.endpoints(), "", "rebalance", "status")
	t.Logf("complete after the kills:\n%s", text)
	c = newClient(t, cl.endpoints()...)
	ctx = ctxT(t)
	for i := range n {
		k := fmt.Sprintf("accounts/eu/%d/b", i)
		it, err := c.Get(ctx, k)
		if err != nil || string(it.Value) != fmt.Sprint(i) {
			t.Fatalf("get %s after the moves and kills: %v %v", k, it, err)
		}
		k = fmt.Sprintf("sessions/k%d/v", i)
		it, err = c.Get(ctx, k, client.WithConsistency(consistency.Quorum))
		if err != nil || string(it.Value) != fmt.Sprint(i) {
			t.Fatalf("get %s after the moves and kills: %v %v", k, it, err)
		}
	}
	if r := replicasPerNode(t, cl.endpoints(), "accounts"); r["n4"] < 4 {
		t.Fatalf("n4 holds %d accounts replicas after the moves: %v", r["n4"], r)
	}
}
