package e2e

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"
)

// A cp write's receipt names the replicas that acknowledged its entry: at
// least a majority on a healthy cluster, never a stopped node.
func TestCPReceiptNamesAcknowledgingReplicas(t *testing.T) {
	cl := startCluster(t, 3)
	eps := cl.endpoints()
	c := newClient(t, eps...)
	ctx := ctxT(t)
	const key = "accounts/eu/7/balance"
	res, err := c.Put(ctx, key, []byte("1"))
	if err != nil {
		t.Fatal(err)
	}
	leader := res.Receipt.ServedBy
	if len(res.Receipt.AckedBy) < 2 || res.Receipt.AckedBy[0] != leader {
		t.Fatalf("healthy cluster: acked by %v, want the leader %s and at least one follower", res.Receipt.AckedBy, leader)
	}
	_, errOut, code := kvctl(t, eps, "", "-v", "put", key, "2")
	t.Logf("kvctl -v put (healthy): %s", errOut)
	if code != 0 || !strings.Contains(errOut, "acked=") || strings.Contains(errOut, "acked=1/3") {
		t.Errorf("kvctl -v put on a healthy cluster: exit %d, %q; want at least 2 acknowledgements", code, errOut)
	}

	var down string
	for _, id := range res.Receipt.Replicas {
		if id != leader {
			down = id
			break
		}
	}
	cl.stop(cl.proc(down))
	var alive []string
	for _, p := range cl.procs {
		if p.id != down {
			alive = append(alive, p.addr)
		}
	}
	for i := range 5 {
		var acked []string
		// A write right after the stop may wait out a leader change.
		waitFor(t, 20*time.Second, "a write with one replica stopped", func() bool {
			r, err := c.Put(ctx, key, []byte{byte('a' + i)})
			if err != nil {
				return false
			}
			acked = r.Receipt.AckedBy
			return true
		})
		if len(acked) != 2 || slices.Contains(acked, down) {
			t.Fatalf("with %s stopped: acked by %v, want the 2 running replicas", down, acked)
		}
	}
	out, errOut, code := kvctl(t, alive, "", "-v", "put", "--json", key, "3")
	t.Logf("kvctl -v put (%s stopped): %s", down, errOut)
	var j struct {
		Receipt struct {
			AckedBy []string `json:"acked_by"`
		} `json:"receipt"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &j) != nil || len(j.Receipt.AckedBy) != 2 || slices.Contains(j.Receipt.AckedBy, down) {
		t.Errorf("kvctl put --json with %s stopped: exit %d, %s %s", down, code, out, errOut)
	}
}

// An ap scan reads one replica and its receipt says so, whatever level
// was asked.
func TestAPScanReceiptSaysOne(t *testing.T) {
	cl := startCluster(t, 3)
	eps := cl.endpoints()
	for _, k := range []string{"sessions/scan1/a", "sessions/scan2/b"} {
		if _, errOut, code := kvctl(t, eps, "", "put", k, "x"); code != 0 {
			t.Fatal(errOut)
		}
	}
	for _, lvl := range []string{"", "quorum", "all"} {
		args := []string{"scan", "--json", "sessions/"}
		if lvl != "" {
			args = append(args, "--consistency", lvl)
		}
		out, errOut, code := kvctl(t, eps, "", args...)
		var j struct {
			Count   int `json:"count"`
			Receipt struct {
				Level   string   `json:"level"`
				AckedBy []string `json:"acked_by"`
			} `json:"receipt"`
		}
		if code != 0 || json.Unmarshal([]byte(out), &j) != nil {
			t.Fatalf("kvctl %v: exit %d, %s %s", args, code, out, errOut)
		}
		if j.Count != 2 || j.Receipt.Level != "one" || len(j.Receipt.AckedBy) != 1 {
			t.Errorf("ap scan asked at %q: count %d, receipt level %q acked by %v; want 2 keys, level one, one replica",
				lvl, j.Count, j.Receipt.Level, j.Receipt.AckedBy)
		}
	}
	_, errOut, _ := kvctl(t, eps, "", "-v", "scan", "sessions/", "--consistency", "quorum")
	if !strings.Contains(errOut, "sessions ap/one") {
		t.Errorf("kvctl -v scan: %q, want the receipt to say ap/one", errOut)
	}
}
