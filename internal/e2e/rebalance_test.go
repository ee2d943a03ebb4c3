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
// the new node holds a fair share of the replicas of both keyspaces. Every
// key is still there, and still there with one original node killed.
func TestJoinMovesPartitions(t *testing.T) {
	cl := startCluster(t, 3, "eu")
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
	t.Logf("rebalance complete %s after the join: %d moves, %d of %d replicas moved (%.1f%%), %d ap keys streamed\n%s",
		took.Round(time.Millisecond), len(st.Moves), st.Moved, st.Replicas, 100*float64(st.Moved)/float64(st.Replicas), st.Keys, text)

	for _, ks := range []string{"accounts", "sessions"} {
		var ring struct {
			Replicas map[string]int `json:"replicas_per_node"`
		}
		out, errOut, code := kvctl(t, eps, "", "ring", ks, "--json")
		if code != 0 {
			t.Fatalf("ring %s: %s", ks, errOut)
		}
		json.Unmarshal([]byte(out), &ring)
		t.Logf("%s replicas per node: %v", ks, ring.Replicas)
		if ring.Replicas["n4"] < 4 {
			t.Errorf("%s: n4 holds %d of the replicas, want at least 4 of 24", ks, ring.Replicas["n4"])
		}
	}

	check := func(when string) {
		t.Helper()
		c := newClient(t, cl.endpoints()...)
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
	// n4 now holds data no other node has a majority of without it: kill an
	// original node and every key is still readable.
	cl.kill(cl.proc("n1"))
	waitFor(t, 20*time.Second, "cp reads without n1", func() bool {
		_, err := newClient(t, cl.proc("n2").addr).Get(ctxT(t), cpKey(0))
		return err == nil
	})
	check("with n1 killed")
}
