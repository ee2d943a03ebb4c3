package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/internal/kverrors"
)

// setFaults installs fault rules on one kvd (started with --test-faults).
func setFaults(t *testing.T, addr string, rules []*api.FaultRule) {
	t.Helper()
	cc, ctx, done := dialNode(t, addr)
	defer done()
	if _, err := api.NewAdminClient(cc).SetFaults(ctx, &api.SetFaultsRequest{Rules: rules}); err != nil {
		t.Fatalf("set faults on %s: %v", addr, err)
	}
}

// nodeStates is `kvctl cluster status` as seen by the node at addr.
func nodeStates(t *testing.T, addr string) map[string]string {
	t.Helper()
	out, _, code := kvctl(t, []string{addr}, "", "cluster", "status", "--json")
	if code != 0 {
		return nil
	}
	var st struct {
		Nodes []struct{ ID, State string }
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatal(err, out)
	}
	m := map[string]string{}
	for _, n := range st.Nodes {
		m[n.ID] = n.State
	}
	return m
}

// A partition that silently swallows traffic (no errors, no closed
// connections: what dropped packets look like) is noticed by the failure
// detector on both sides. The isolated node then refuses cp requests at once
// with the reason instead of waiting for its deadline, ap coordinators stop
// waiting on it, and after the heal everything is up and served again.
func TestSilentPartitionFailureDetector(t *testing.T) {
	cl := startClusterWith(t, 5, []string{"--test-faults"})
	c := newClient(t, cl.endpoints()...)
	ctx := ctxT(t)
	iso := cl.procs[4]
	// cp keys with no replica on the isolated node (the majority keeps
	// them), and one it holds a replica of (still kept by the other two).
	var cpKeys []string
	isoKey := ""
	for i := 0; (len(cpKeys) < 3 || isoKey == "") && i < 200; i++ {
		k := fmt.Sprintf("accounts/eu/%d/balance", i)
		p, err := c.Locate(k)
		switch {
		case err != nil:
		case !slices.Contains(p.Replicas, iso.id) && len(cpKeys) < 3:
			cpKeys = append(cpKeys, k)
		case slices.Contains(p.Replicas, iso.id) && isoKey == "":
			isoKey = k
		}
	}
	// An ap key with the isolated node among its replicas.
	apKey := ""
	for i := 0; apKey == "" && i < 200; i++ {
		k := fmt.Sprintf("sessions/u%d", i)
		if p, err := c.Locate(k); err == nil && slices.Contains(p.Replicas, iso.id) && p.Replicas[0] != iso.id {
			apKey = k
		}
	}
	if len(cpKeys) < 3 || isoKey == "" || apKey == "" {
		t.Fatalf("no keys with the placement this test needs: cp %v %q ap %q", cpKeys, isoKey, apKey)
	}
	for _, k := range append(cpKeys, isoKey) {
		if _, err := c.Put(ctx, k, []byte("1")); err != nil {
			t.Fatal(err)
		}
	}

	// Blackhole every link between iso and the rest, both ways, on both ends.
	var isoRules []*api.FaultRule
	for _, p := range cl.procs[:4] {
		isoRules = append(isoRules, &api.FaultRule{From: iso.id, To: p.id, Action: "blackhole"})
		setFaults(t, p.addr, []*api.FaultRule{{From: p.id, To: iso.id, Action: "blackhole"}})
	}
	setFaults(t, iso.addr, isoRules)
	cut := time.Now()

	waitFor(t, 10*time.Second, "both sides to see the other down", func() bool {
		in, out := nodeStates(t, cl.procs[0].addr), nodeStates(t, iso.addr)
		if in[iso.id] != "down" || in[cl.procs[1].id] != "up" {
			return false
		}
		for _, p := range cl.procs[:4] {
			if out[p.id] != "down" {
				return false
			}
		}
		return out[iso.id] == "up"
	})
	t.Logf("both sides saw the partition %s after the cut", time.Since(cut).Round(100*time.Millisecond))

	// The isolated node refuses cp requests with the detector's reason (the
	// deadline path would say "before the deadline" instead): for keys it
	// holds no replica of, none is reachable; for its own replica's key, no
	// majority is. (Raw requests: the client library would route around it.)
	refused := func(k, why string) {
		t.Helper()
		start := time.Now()
		_, err := rawPut(t, iso.addr, k, "2", "", nil)
		if !errors.Is(kverrors.FromStatus(err), kverrors.ErrUnavailable) || !strings.Contains(err.Error(), why) {
			t.Fatalf("put %s on the isolated node: %v, want Unavailable saying %q (its view: %v)", k, err, why, nodeStates(t, iso.addr))
		}
		t.Logf("isolated node refused %s in %s: %v", k, time.Since(start).Round(time.Millisecond), err)
	}
	// (cluster status also says down when a node does not answer its info
	// call in time, so wait for the detector's own verdict.)
	waitFor(t, 5*time.Second, "the isolated node's detector to hold the others down", func() bool {
		_, err := rawPut(t, iso.addr, cpKeys[0], "2", "", nil)
		return err != nil && strings.Contains(err.Error(), "is reachable from "+iso.id)
	})
	for _, k := range cpKeys {
		refused(k, "is reachable from "+iso.id)
	}
	waitFor(t, 5*time.Second, "the isolated replica's leadership to lapse", func() bool {
		_, err := rawPut(t, iso.addr, isoKey, "2", "", nil)
		return err != nil && strings.Contains(err.Error(), "no majority")
	})
	refused(isoKey, "no majority")
	// The majority serves the same keys.
	for _, k := range append(cpKeys, isoKey) {
		if _, err := c.Put(ctx, k, []byte("3")); err != nil {
			t.Fatalf("put %s on the majority: %v", k, err)
		}
	}
	// ap at quorum through a majority coordinator: the isolated replica is
	// skipped, not waited on, and the write is acknowledged.
	p, _ := c.Locate(apKey)
	resp, err := rawPut(t, cl.proc(p.Replicas[0]).addr, apKey, "v1", "quorum", nil)
	if err != nil {
		t.Fatalf("ap quorum write with one replica isolated: %v", err)
	}
	if slices.Contains(resp.GetReceipt().GetAckedBy(), iso.id) {
		t.Errorf("receipt %+v counts the isolated node", resp.GetReceipt())
	}
	// And the isolated replica takes ap writes at level one.
	if _, err := rawPut(t, iso.addr, apKey, "v2", "one", nil); err != nil {
		t.Fatalf("ap level-one write on the isolated replica: %v", err)
	}

	// Heal: every node up again everywhere, the isolated node serves cp.
	for _, p := range cl.procs {
		setFaults(t, p.addr, nil)
	}
	healed := time.Now()
	waitFor(t, 10*time.Second, "every node up on both sides", func() bool {
		for _, addr := range []string{cl.procs[0].addr, iso.addr} {
			for _, st := range nodeStates(t, addr) {
				if st != "up" {
					return false
				}
			}
		}
		return true
	})
	waitFor(t, 10*time.Second, "the healed node to serve cp writes", func() bool {
		_, err := rawPut(t, iso.addr, cpKeys[0], "4", "", nil)
		return err == nil
	})
	t.Logf("healed node served cp %s after the heal", time.Since(healed).Round(100*time.Millisecond))
}
