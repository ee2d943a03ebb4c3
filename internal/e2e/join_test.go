package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestJoinAndCreateKeyspace grows a cluster at run time: nodes of a second
// region register with --join, a keyspace is created with kvctl, and every
// node and client learns both through the cluster map's epoch.
func TestJoinAndCreateKeyspace(t *testing.T) {
	cl := startCluster(t, 3, "eu")
	eps := cl.endpoints()
	run := func(args ...string) string {
		t.Helper()
		out, errOut, code := kvctl(t, eps, "", args...)
		if code != 0 {
			t.Fatalf("kvctl %s: exit %d: %s", strings.Join(args, " "), code, errOut)
		}
		return out
	}
	// Region us has no nodes yet.
	if _, errOut, code := kvctl(t, eps, "", "put", "accounts/us/1/balance", "5"); code == 0 || !strings.Contains(errOut, `region "us"`) {
		t.Fatalf("put to an empty region: exit %d, %s", code, errOut)
	}
	epochBefore := clusterEpoch(t, eps)
	for i := 4; i <= 6; i++ {
		cl.addJoiner(fmt.Sprintf("n%d", i), "us")
	}
	if e := clusterEpoch(t, eps); e < epochBefore+3 {
		t.Errorf("epoch %d after 3 joins, was %d", e, epochBefore)
	}
	var st struct {
		Nodes []struct{ ID, Region, State string }
	}
	waitFor(t, 10*time.Second, "6 nodes up", func() bool {
		json.Unmarshal([]byte(run("cluster", "status", "--json")), &st)
		up := 0
		for _, n := range st.Nodes {
			if n.State == "up" {
				up++
			}
		}
		return up == 6
	})

	// Region us now has three nodes: its accounts partitions became placeable
	// there, with Raft groups on the us nodes only.
	waitFor(t, 15*time.Second, "a write to region us", func() bool {
		_, _, code := kvctl(t, eps, "", "put", "accounts/us/1/balance", "5")
		return code == 0
	})
	var loc struct {
		Replicas []string
		Region   string
	}
	json.Unmarshal([]byte(run("locate", "accounts/us/1/balance", "--json")), &loc)
	for _, r := range loc.Replicas {
		if !slices.Contains([]string{"n4", "n5", "n6"}, r) {
			t.Errorf("accounts/us/1 replica %s is not a us node (replicas %v)", r, loc.Replicas)
		}
	}
	if got := run("get", "accounts/us/1/balance"); got != "5" {
		t.Fatalf("get = %q", got)
	}

	// A keyspace created at run time is usable from every node.
	out := run("keyspace", "create", "orders", "--mode", "cp", "--replicas", "3", "--partitions", "4", "--template", "orders/{region}/{customer}/...")
	if !strings.Contains(out, "orders") {
		t.Errorf("create printed %q", out)
	}
	run("keyspace", "create", "orders", "--mode", "cp", "--replicas", "3", "--partitions", "4", "--template", "orders/{region}/{customer}/...") // idempotent
	if _, errOut, code := kvctl(t, eps, "", "keyspace", "create", "orders", "--mode", "ap"); code == 0 || !strings.Contains(errOut, "already exists") {
		t.Errorf("conflicting create: exit %d, %s", code, errOut)
	}
	if _, errOut, code := kvctl(t, eps, "", "keyspace", "create", "bad", "--mode", "cp", "--template", "bad/{x"); code == 0 || !strings.Contains(errOut, "template") {
		t.Errorf("malformed template: exit %d, %s", code, errOut)
	}
	for _, p := range cl.procs {
		waitFor(t, 15*time.Second, "orders writable via "+p.id, func() bool {
			_, _, code := kvctl(t, []string{p.addr}, "", "put", "orders/eu/7/o1", "x")
			return code == 0
		})
	}
	if !strings.Contains(run("keyspace", "list"), "orders") {
		t.Error("keyspace list lacks orders")
	}

	// A joined node that restarts registers again and keeps serving.
	n4 := cl.proc("n4")
	cl.stop(n4)
	cl.start(n4)
	cl.waitReady(n4)
	waitFor(t, 15*time.Second, "read via restarted n4", func() bool {
		got, _, code := kvctl(t, []string{n4.addr}, "", "get", "accounts/us/1/balance")
		return code == 0 && got == "5"
	})
}

func clusterEpoch(t *testing.T, eps []string) uint64 {
	t.Helper()
	out, errOut, code := kvctl(t, eps, "", "cluster", "status", "--json")
	if code != 0 {
		t.Fatalf("cluster status: %s", errOut)
	}
	var st struct{ Epoch uint64 }
	json.Unmarshal([]byte(out), &st)
	return st.Epoch
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// kvd --join to an address nobody serves logs each failed attempt and
// gives up after --join-timeout with an error naming the address and the
// timeout.
func TestJoinTimeout(t *testing.T) {
	nobody := freePorts(t, 1)[0]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bins.kvd, "--id", "n4", "--listen", freePorts(t, 1)[0], "--data-dir", t.TempDir(),
		"--join", nobody, "--join-timeout", "3s", "--log-level", "warn")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	took := time.Since(start)
	if ctx.Err() != nil {
		t.Fatalf("kvd --join-timeout 3s still running after 30s:\n%s", out)
	}
	if code := cmd.ProcessState.ExitCode(); err == nil || code != 1 {
		t.Fatalf("exit code %d (%v), want 1:\n%s", code, err, out)
	}
	if took < 3*time.Second || took > 15*time.Second {
		t.Fatalf("gave up after %s, want about --join-timeout 3s:\n%s", took, out)
	}
	attempts := strings.Count(string(out), `msg="join attempt failed"`)
	if attempts < 3 || !strings.Contains(string(out), "via="+nobody) {
		t.Fatalf("%d logged attempts, want one per attempt (at least 3 in 3s) naming the address:\n%s", attempts, out)
	}
	if !strings.Contains(string(out), "could not join the cluster via ["+nobody+"] within --join-timeout 3s") {
		t.Fatalf("no clear final error:\n%s", out)
	}
	t.Logf("gave up after %s, %d attempts logged; last line: %s", took.Round(time.Millisecond), attempts, strings.TrimSpace(string(out[strings.LastIndex(strings.TrimSpace(string(out)), "\n")+1:])))
}
