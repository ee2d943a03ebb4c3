package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/capkv/capkv/client"
)

type rebalanceStatus struct {
	PlannedAtEpoch uint64 `json:"planned_at_epoch"`
	Complete       bool   `json:"complete"`
	Moves          []struct {
		Partition, State, Error string
	} `json:"moves"`
}

func readRebalance(t *testing.T, eps []string) (rebalanceStatus, bool) {
	t.Helper()
	out, _, code := kvctl(t, eps, "", "rebalance", "status", "--json")
	var st rebalanceStatus
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil {
		return st, false
	}
	return st, true
}

// A keyspace dropped while a rebalancing still has moves of it to run: the
// plan forgets them and completes (before, they failed with "keyspace is
// gone" and were retried forever, so the plan never completed, no later
// join was planned and every `kvctl node remove` was refused).
func TestRebalanceCompletesAfterDrop(t *testing.T) {
	cl := startCluster(t, 3)
	eps := cl.endpoints()
	// Many cp partitions: their moves (membership changes, limit 2 per
	// node) are still pending when the drop comes.
	if _, errOut, code := kvctl(t, eps, "", "keyspace", "create", "gone", "--mode", "cp", "--replicas", "3", "--partitions", "32"); code != 0 {
		t.Fatalf("create gone: %s", errOut)
	}
	cl.addJoiner("n4", "eu")
	eps = cl.endpoints()
	waitFor(t, 30*time.Second, "a plan with pending moves of gone", func() bool {
		st, ok := readRebalance(t, eps)
		if !ok || st.PlannedAtEpoch == 0 {
			return false
		}
		for _, m := range st.Moves {
			if strings.HasPrefix(m.Partition, "gone/") && m.State == "pending" {
				return true
			}
		}
		return false
	})
	if _, errOut, code := kvctl(t, eps, "", "keyspace", "drop", "gone", "--yes"); code != 0 {
		t.Fatalf("drop gone: %s", errOut)
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		st, ok := readRebalance(t, eps)
		if ok && st.Complete {
			for _, m := range st.Moves {
				if strings.HasPrefix(m.Partition, "gone/") {
					t.Errorf("the complete plan still lists a move of the dropped keyspace: %+v", m)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			text, _, _ := kvctl(t, eps, "", "rebalance", "status")
			t.Fatalf("rebalance not complete 90s after the drop:\n%s", text)
		}
		time.Sleep(500 * time.Millisecond)
	}
	// The drain that a stuck plan refused runs.
	if out, errOut, code := kvctl(t, eps, "", "node", "remove", "n4", "--wait-timeout", "60s"); code != 0 {
		t.Fatalf("node remove n4 after the drop: exit %d: %s\n%s", code, errOut, out)
	}
}

// A joiner that dies for good in the middle of its rebalancing can be
// removed: `kvctl node remove` replaces the stuck plan (before, it was
// refused until the plan completed, which it never could). The drain also
// takes the dead joiner out of the Raft groups it had joined but whose
// moves never finished: with it removed and one more node killed, every
// cp key is still readable (a group left with the dead node as a fourth
// voter would have no quorum).
func TestRemoveDeadJoiner(t *testing.T) {
	cl := startCluster(t, 3)
	eps := cl.endpoints()
	if _, errOut, code := kvctl(t, eps, "", "keyspace", "create", "big", "--mode", "cp", "--replicas", "3", "--partitions", "32"); code != 0 {
		t.Fatalf("create big: %s", errOut)
	}
	c := newClient(t, eps...)
	const n = 64
	key := func(i int) string { return fmt.Sprintf("big/k%d", i) }
	for i := range n {
		if _, err := c.Put(ctxT(t), key(i), []byte(fmt.Sprint(i))); err != nil {
			t.Fatalf("put %s: %v", key(i), err)
		}
	}
	p4 := cl.addJoiner("n4", "eu")
	waitFor(t, 60*time.Second, "two moves to n4 done", func() bool {
		st, ok := readRebalance(t, cl.endpoints())
		done := 0
		for _, m := range st.Moves {
			if m.State == "done" {
				done++
			}
		}
		return ok && done >= 2
	})
	cl.kill(p4)
	eps = []string{cl.proc("n1").addr, cl.proc("n2").addr, cl.proc("n3").addr}
	// A drain of a live node waits for the plan, and every node says so,
	// the ones that forward to the metadata leader too (they said "no
	// metadata leader reachable" after the whole --timeout).
	for _, ep := range eps {
		_, errOut, code := kvctl(t, []string{ep}, "", "node", "remove", "n2", "--wait=false")
		if code == 0 || !strings.Contains(errOut, "a rebalancing is in progress") {
			t.Errorf("node remove n2 via %s during the rebalancing: exit %d: %s", ep, code, errOut)
		} else {
			t.Logf("node remove n2 via %s: %s", ep, strings.TrimSpace(errOut))
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, errOut, code := kvctl(t, eps, "", "node", "remove", "n4", "--wait-timeout", "90s")
		if code == 0 {
			t.Logf("node remove n4:\n%s", out)
			break
		}
		// Refused while n4 is not held down yet or a retry of a move to
		// it runs; never for good.
		if time.Now().After(deadline) {
			text, _, _ := kvctl(t, eps, "", "rebalance", "status")
			t.Fatalf("node remove n4 (dead joiner): exit %d: %s\n%s", code, errOut, text)
		}
		t.Logf("node remove n4 refused for now: %s", strings.TrimSpace(errOut))
		time.Sleep(time.Second)
	}
	for _, ks := range []string{"big", "accounts", "sessions"} {
		if r := replicasPerNode(t, eps, ks); r["n4"] != 0 {
			t.Fatalf("%s: the removed n4 still holds %d replicas: %v", ks, r["n4"], r)
		}
	}
	cl.kill(cl.proc("n3"))
	c = newClient(t, cl.proc("n1").addr, cl.proc("n2").addr)
	for i := range n {
		var err error
		waitFor(t, 30*time.Second, "linearizable read of "+key(i)+" with n4 removed and n3 killed", func() bool {
			var it *client.Item
			it, err = c.Get(ctxT(t), key(i))
			return err == nil && string(it.Value) == fmt.Sprint(i)
		})
	}
}
