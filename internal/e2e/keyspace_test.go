package e2e

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/internal/kverrors"
)

// A keyspace is usable through every node as soon as create returns: the
// creating node waits for its replicas (cp: a leader per partition), and a
// node that does not know it yet asks the metadata leader before refusing.
// Settings that could never be placed are refused with the numbers.
func TestKeyspaceCreateThenUse(t *testing.T) {
	cl := startCluster(t, 3)
	eps := cl.endpoints()
	fail := func(wantCode int, wants []string, args ...string) {
		t.Helper()
		out, errOut, code := kvctl(t, eps, "", args...)
		for _, w := range wants {
			if code != wantCode || !strings.Contains(errOut, w) {
				t.Errorf("kvctl %s: exit %d, stdout %q, stderr %q; want exit %d and %q on stderr",
					strings.Join(args, " "), code, out, errOut, wantCode, w)
			}
		}
	}
	fail(1, []string{"replicas = 5", "3 node(s)"}, "keyspace", "create", "big", "--mode", "cp", "--replicas", "5")
	fail(1, []string{"replicas = 4", "eu: 3"}, "keyspace", "create", "big", "--mode", "ap", "--replicas", "4", "--template", "big/{region}/{id}/...")
	fail(2, []string{"--partitions 0", "must be in [1, 65536]"}, "keyspace", "create", "zero", "--mode", "cp", "--partitions", "0")
	fail(2, []string{"--replicas 0", "at least 1"}, "keyspace", "create", "zero", "--mode", "cp", "--replicas", "0")
	if out, _, _ := kvctl(t, eps, "", "keyspace", "list"); strings.Contains(out, "big") || strings.Contains(out, "zero") {
		t.Errorf("a refused keyspace was created:\n%s", out)
	}

	// Each round creates through one node and writes at once through every
	// node, straight to it (no client routing: the node itself must know).
	// One replica and one partition make two of the three nodes hold none,
	// so they learn the keyspace only by asking the metadata group.
	var failures []string
	for i := range 10 {
		name, mode, reps, parts := fmt.Sprintf("o%d", i), "cp", "3", "2"
		switch i % 3 {
		case 1:
			mode = "ap"
		case 2:
			reps, parts = "1", "1"
		}
		creator := cl.procs[i%len(cl.procs)]
		start := time.Now()
		if _, errOut, code := kvctl(t, []string{creator.addr}, "", "keyspace", "create", name, "--mode", mode, "--replicas", reps, "--partitions", parts); code != 0 {
			t.Fatalf("create %s (%s) via %s: exit %d: %s", name, mode, creator.id, code, errOut)
		}
		t.Logf("create %s (%s, %s replicas) via %s took %s", name, mode, reps, creator.id, time.Since(start).Round(time.Millisecond))
		for j := 1; j <= len(cl.procs); j++ {
			p := cl.procs[(i+j)%len(cl.procs)] // the other nodes first, the creator last
			key := fmt.Sprintf("%s/%d", name, j)
			if _, err := rawPut(t, p.addr, key, "x", "", nil); err != nil {
				failures = append(failures, fmt.Sprintf("put %s via %s: %v", key, p.id, err))
			}
		}
		// And the client path, through a node that did not create it.
		other := cl.procs[(i+1)%len(cl.procs)]
		if _, errOut, code := kvctl(t, []string{other.addr}, "", "put", name+"/c", "y"); code != 0 {
			failures = append(failures, fmt.Sprintf("kvctl put %s/c via %s: exit %d: %s", name, other.id, code, errOut))
		}
	}
	if len(failures) > 0 {
		t.Errorf("%d writes right after create failed:\n%s", len(failures), strings.Join(failures, "\n"))
	}
	// A keyspace that does not exist is still refused (after asking).
	_, err := rawPut(t, cl.procs[0].addr, "nosuch/1", "x", "", nil)
	if !errors.Is(kverrors.FromStatus(err), kverrors.ErrUnknownKeyspace) {
		t.Errorf("put to an unknown keyspace: %v, want unknown keyspace", err)
	}
}

// Drop deletes a keyspace's data on every node: a keyspace created again
// under the same name starts empty everywhere, cp Raft logs included, and a
// node that was down during the drop deletes its copy when it comes back.
func TestKeyspaceDrop(t *testing.T) {
	cl := startCluster(t, 3)
	eps := cl.endpoints()
	run := func(args ...string) string {
		t.Helper()
		out, errOut, code := kvctl(t, eps, "", args...)
		if code != 0 {
			t.Fatalf("kvctl %s: exit %d: %s", strings.Join(args, " "), code, errOut)
		}
		return out
	}
	const keys = 10
	cpCreate := []string{"keyspace", "create", "d1", "--mode", "cp", "--replicas", "3", "--partitions", "2"}
	run(cpCreate...)
	run("keyspace", "create", "d2", "--mode", "ap", "--replicas", "3", "--partitions", "1")
	for i := range keys {
		run("put", fmt.Sprintf("d1/k%d", i), "v")
		run("put", fmt.Sprintf("d2/k%d", i), "v", "--consistency", "all")
	}
	// Every node stores them (so the checks below can fail).
	stored := func(p *proc, ks string) (n int) {
		for i := range keys {
			key := fmt.Sprintf("%s/k%d", ks, i)
			if ks == "d2" {
				if len(localValues(t, p.addr, "d2/*/0", key)) > 0 {
					n++
				}
				continue
			}
			if _, err := rawGet(t, p.addr, key, "stale"); err == nil {
				n++
			}
		}
		return n
	}
	for _, p := range cl.procs {
		waitFor(t, 10*time.Second, "d1 and d2 on "+p.id, func() bool { return stored(p, "d1") == keys && stored(p, "d2") == keys })
	}

	out, errOut, code := kvctl(t, eps, "", "keyspace", "drop", "d1")
	if code != 2 || !strings.Contains(errOut, "--yes") || !strings.Contains(errOut, `deletes keyspace "d1"`) {
		t.Errorf("drop without --yes: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if stored(cl.procs[0], "d1") != keys {
		t.Fatal("drop without --yes deleted data")
	}
	if out := run("keyspace", "drop", "d1", "--yes"); !strings.Contains(out, "keyspace d1 dropped at epoch") {
		t.Errorf("drop printed %q", out)
	}
	if out := run("keyspace", "list"); strings.Contains(out, "d1") {
		t.Errorf("keyspace list after drop:\n%s", out)
	}
	for _, p := range cl.procs {
		if _, errOut, code := kvctl(t, []string{p.addr}, "", "get", "d1/k0"); code == 0 || !strings.Contains(errOut, "unknown keyspace") {
			t.Errorf("get d1/k0 via %s after drop: exit %d, %s", p.id, code, errOut)
		}
	}
	if _, errOut, code := kvctl(t, eps, "", "keyspace", "drop", "d1", "--yes"); code == 0 || !strings.Contains(errOut, "unknown keyspace") {
		t.Errorf("second drop: exit %d, %s", code, errOut)
	}
	// The same name again: nothing of the old data on any replica, neither
	// in the partitions nor replayed from an old Raft log.
	run(cpCreate...)
	for _, p := range cl.procs {
		if n := stored(p, "d1"); n != 0 {
			t.Errorf("re-created d1 on %s holds %d of the dropped keys", p.id, n)
		}
	}
	if _, errOut, code := kvctl(t, eps, "", "get", "d1/k0"); code == 0 || !strings.Contains(errOut, "not found") {
		t.Errorf("get d1/k0 in the re-created keyspace: exit %d, %s", code, errOut)
	}
	run("put", "d1/k0", "new")
	if got := run("get", "d1/k0"); got != "new" {
		t.Errorf("re-created d1: get = %q", got)
	}

	// A node down during the drop deletes its copy when it comes back.
	n3 := cl.proc("n3")
	cl.kill(n3)
	_, errOut, code = kvctl(t, eps[:2], "", "keyspace", "drop", "d2", "--yes")
	t.Logf("drop with n3 down: exit %d: %s", code, errOut)
	if code == 0 || !strings.Contains(errOut, "n3") {
		t.Errorf("drop with n3 down: exit %d, %s; want a failure naming n3", code, errOut)
	}
	for _, p := range cl.procs[:2] {
		if n := stored(p, "d2"); n != 0 {
			t.Errorf("%s holds %d keys of dropped d2", p.id, n)
		}
	}
	// Until a drop has found every node up, the name cannot come back: n3
	// could bring the old data (or an old Raft log) into the new keyspace.
	apCreate := []string{"keyspace", "create", "d2", "--mode", "ap", "--replicas", "3", "--partitions", "1"}
	_, errOut, code = kvctl(t, eps[:2], "", apCreate...)
	t.Logf("re-create while n3 has not confirmed: exit %d: %s", code, errOut)
	if code == 0 || !strings.Contains(errOut, "was dropped at epoch") ||
		!strings.Contains(errOut, "keyspace drop d2 --yes") {
		t.Errorf("re-create while n3 has not confirmed the drop: exit %d, %s", code, errOut)
	}
	cl.start(n3)
	cl.waitReady(n3)
	waitFor(t, 15*time.Second, "n3 to delete dropped d2", func() bool { return stored(n3, "d2") == 0 })
	waitFor(t, 15*time.Second, "a drop that finds every node up", func() bool {
		_, _, code := kvctl(t, eps, "", "keyspace", "drop", "d2", "--yes")
		return code == 0
	})
	run(apCreate...)
	for _, p := range cl.procs {
		if n := stored(p, "d2"); n != 0 {
			t.Errorf("re-created d2 on %s holds %d of the dropped keys", p.id, n)
		}
	}
	var info *api.NodeInfo
	cc, ctx, done := dialNode(t, n3.addr)
	info, err := api.NewAdminClient(cc).GetNodeInfo(ctx, &api.NodeInfoRequest{})
	done()
	if err != nil || info.GetAdoptedEpoch() == 0 {
		t.Errorf("n3 info after restart: %v, %v", info, err)
	}
}
