package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
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
