package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// kvctl on an ap key behaves like a register for one writer: a delete
// without --context deletes what kvctl reads first, watch sees a DELETE,
// and sequential puts from one shell leave one value, not a sibling each.
func TestKvctlAPSequentialWrites(t *testing.T) {
	cl := startCluster(t, 3)
	eps := cl.endpoints()
	run := func(args ...string) (string, string, int) {
		t.Helper()
		return kvctl(t, eps, "", args...)
	}
	must := func(args ...string) string {
		t.Helper()
		out, errOut, code := run(args...)
		if code != 0 {
			t.Fatalf("kvctl %s: exit %d, stderr %s", strings.Join(args, " "), code, errOut)
		}
		return out
	}

	watch := exec.Command(bins.kvctl, "--endpoints", strings.Join(eps, ","), "watch", "sessions/fresh/", "--count", "2", "--for", "30s")
	stdout, err := watch.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := watch.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	waited := false
	defer func() {
		if !waited {
			watch.Process.Kill()
			watch.Wait()
		}
	}()
	sc := bufio.NewScanner(stderr)
	if !sc.Scan() || !strings.Contains(sc.Text(), "watching sessions/fresh/") {
		t.Fatalf("kvctl watch did not start: %q", sc.Text())
	}
	go func() {
		for sc.Scan() {
			t.Logf("kvctl watch stderr: %s", sc.Text())
		}
	}()

	if out := must("put", "sessions/fresh/k", "one"); out != "OK\n" {
		t.Errorf("put printed %q", out)
	}
	if out := must("del", "sessions/fresh/k"); out != "deleted\n" {
		t.Errorf("del printed %q, want deleted", out)
	}
	if out, errOut, code := run("get", "sessions/fresh/k"); code != 1 || !strings.Contains(errOut, "not found") {
		t.Errorf("get after del: exit %d, stdout %q, stderr %q; want exit 1 and not found", code, out, errOut)
	}
	var lines []string
	outSc := bufio.NewScanner(stdout)
	for outSc.Scan() {
		lines = append(lines, outSc.Text())
	}
	err = watch.Wait()
	waited = true
	if err != nil {
		t.Fatalf("kvctl watch: %v", err)
	}
	if want := []string{"PUT sessions/fresh/k one", "DELETE sessions/fresh/k"}; !slices.Equal(lines, want) {
		t.Errorf("kvctl watch printed %q, want %q", lines, want)
	}
	if out := must("del", "sessions/fresh/k"); out != "not found (nothing deleted)\n" {
		t.Errorf("second del printed %q", out)
	}

	must("put", "sessions/conc/k", "seen")
	// 30 sequential puts from one shell: one value.
	for i := range 30 {
		must("put", "sessions/seq/k", "v"+string(rune('a'+i%26)))
	}
	var it struct {
		Value    string            `json:"value"`
		Siblings []json.RawMessage `json:"siblings"`
		Receipt  struct {
			Siblings int `json:"siblings"`
		} `json:"receipt"`
	}
	if err := json.Unmarshal([]byte(must("get", "--json", "--consistency", "all", "sessions/seq/k")), &it); err != nil {
		t.Fatal(err)
	}
	if it.Value != "vd" || len(it.Siblings) != 0 || it.Receipt.Siblings != 1 {
		t.Errorf("after 30 sequential puts: value %q, %d siblings, receipt siblings %d; want vd and one value", it.Value, len(it.Siblings), it.Receipt.Siblings)
	}
	// A delete with the context of an earlier read leaves a value written
	// since without that context: kvctl says the key is not gone.
	var seen struct {
		Context string `json:"context"`
	}
	if err := json.Unmarshal([]byte(must("get", "--json", "sessions/conc/k")), &seen); err != nil {
		t.Fatal(err)
	}
	if _, err := rawPut(t, eps[0], "sessions/conc/k", "concurrent", "all", nil); err != nil {
		t.Fatal(err)
	}
	if out := must("del", "--context", seen.Context, "sessions/conc/k"); !strings.HasPrefix(out, "not deleted: 1 concurrent value(s) remain") {
		t.Errorf("del beside a concurrent write printed %q", out)
	}
	if out := must("get", "sessions/conc/k"); out != "concurrent" {
		t.Errorf("after the stale-context del: get printed %q, want the concurrent value", out)
	}
	if _, errOut, _ := run("-v", "put", "sessions/seq/k", "last"); !strings.Contains(errOut, "sessions ap/quorum") || !strings.Contains(errOut, " siblings=1 ") {
		t.Errorf("put -v receipt: %q", errOut)
	}
}

// A keyspace created with --max-siblings refuses the blind write that would
// pass the cap, naming the key and the cap; describe shows the cap.
func TestKvctlKeyspaceSiblingCap(t *testing.T) {
	cl := startCluster(t, 3)
	eps := cl.endpoints()
	if _, errOut, code := kvctl(t, eps, "", "keyspace", "create", "carts", "--mode", "ap", "--max-siblings", "2"); code != 0 {
		t.Fatal(errOut)
	}
	if out, errOut, code := kvctl(t, eps, "", "keyspace", "create", "bad", "--mode", "ap", "--max-siblings", "-1"); code == 0 || !strings.Contains(errOut, "max_siblings = -1") {
		t.Errorf("create with --max-siblings -1: exit %d, %q %q", code, out, errOut)
	}
	var d struct {
		MaxSiblings int `json:"max_siblings"`
	}
	var out string
	waitFor(t, 10*time.Second, "keyspace carts in the map", func() bool {
		var code int
		out, _, code = kvctl(t, eps, "", "keyspace", "describe", "carts", "--json")
		return code == 0
	})
	if json.Unmarshal([]byte(out), &d) != nil || d.MaxSiblings != 2 {
		t.Fatalf("describe carts: %s; want max_siblings 2", out)
	}
	out, _, _ = kvctl(t, eps, "", "keyspace", "describe", "sessions", "--json")
	if json.Unmarshal([]byte(out), &d) != nil || d.MaxSiblings != 16 {
		t.Errorf("describe sessions: %s; want the default max_siblings 16", out)
	}
	// Blind writes through every node (each learns the keyspace by epoch).
	for i, p := range cl.procs[:2] {
		waitFor(t, 10*time.Second, "blind write via "+p.id, func() bool {
			_, err := rawPut(t, p.addr, "carts/u1", fmt.Sprintf("v%d", i), "all", nil)
			return err == nil
		})
	}
	var err error
	waitFor(t, 10*time.Second, "n3 knows keyspace carts", func() bool {
		_, err = rawPut(t, cl.procs[2].addr, "carts/u1", "v3", "all", nil)
		return err == nil || !strings.Contains(err.Error(), "unknown keyspace")
	})
	if err == nil || !strings.Contains(err.Error(), `key "carts/u1" would have 3 concurrent values (siblings), over keyspace cap 2`) {
		t.Fatalf("third blind write: %v, want refused by the cap", err)
	}
	// kvctl reads the context first: its put resolves them.
	if out, errOut, code := kvctl(t, eps, "", "-v", "put", "carts/u1", "merged"); code != 0 || !strings.Contains(errOut, " siblings=1 ") {
		t.Errorf("kvctl put at the cap: exit %d, %q %q", code, out, errOut)
	}
}
