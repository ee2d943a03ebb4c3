package main

import (
	"encoding/json"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/internal/nodetest"
)

// Usage errors exit 2 with a message naming what was wrong, at every level
// of the command tree; --version and completion scripts work.
func TestUsageErrors(t *testing.T) {
	for _, c := range []check{
		{name: "unknown global flag before the command", args: []string{"--bogus", "get", "x"}, code: 2,
			want: []string{"unknown flag: --bogus"}, notWant: []string{`unknown command "x"`}},
		{name: "unknown flag after the command", args: []string{"get", "--bogus", "x"}, code: 2, want: []string{"unknown flag: --bogus"}},
		{name: "unknown command", args: []string{"frobnicate"}, code: 2,
			want: []string{`unknown command "frobnicate" for "kvctl"`, "want one of: bench, cas, ", "cluster, completion, del, get"}},
		{name: "misspelt command", args: []string{"gte", "x"}, code: 2, want: []string{`unknown command "gte"`, `did you mean "get"?`}},
		{name: "unknown cluster command", args: []string{"cluster", "foo"}, code: 2,
			want: []string{`unknown command "foo" for "kvctl cluster"; want one of: status`}, notWant: []string{"Usage:"}},
		{name: "unknown keyspace command", args: []string{"keyspace", "delete"}, code: 2,
			want: []string{`unknown command "delete" for "kvctl keyspace"`, "create", "list"}, notWant: []string{"Usage:"}},
		{name: "missing cluster command", args: []string{"cluster"}, code: 2, want: []string{`missing command for "kvctl cluster"; want one of: status`}},
		{name: "missing command", args: []string{}, code: 2, want: []string{`missing command for "kvctl"`}},
		{name: "unknown completion shell", args: []string{"completion", "tcsh"}, code: 2, want: []string{`unknown command "tcsh" for "kvctl completion"`}},
		{name: "negative timeout", args: []string{"--timeout", "-1s", "get", "x"}, code: 2, want: []string{"--timeout -1s: must be positive"}},
		{name: "zero timeout", args: []string{"get", "x", "--timeout", "0s"}, code: 2, want: []string{"--timeout 0s: must be positive"}},
		{name: "bad timeout", args: []string{"--timeout", "soon", "get", "x"}, code: 2, want: []string{`invalid argument "soon" for "--timeout"`}},
		{name: "unknown global flag with a value", args: []string{"--bogus=1", "get", "x"}, code: 2, want: []string{"unknown flag: --bogus"}},
		{name: "global flag without its value", args: []string{"get", "x", "--timeout"}, code: 2, want: []string{"needs an argument"}},
		{name: "wrong argument count", args: []string{"get"}, code: 2, want: []string{"want 1 argument(s), got 0"}},
		{name: "argument to a command that takes none", args: []string{"certs", "foo"}, code: 2, want: []string{`unknown command "foo" for "kvctl certs"`}},
		{name: "ring takes at most one keyspace", args: []string{"ring", "a", "b"}, code: 2, want: []string{"accepts at most 1 arg(s), received 2"}},
		{name: "help of a group", args: []string{"cluster", "--help"}, code: 0, want: []string{"status"}},
		{name: "help", args: []string{"--help"}, code: 0, want: []string{"CAPKV_TIMEOUT", "Exit status", "(env CAPKV_ENDPOINTS)", "(env CAPKV_JSON)"}},
		{name: "version", args: []string{"--version"}, code: 0, want: []string{"kvctl ", runtime.Version()}},
		{name: "bash completion", args: []string{"completion", "bash"}, code: 0, want: []string{"bash completion", "__kvctl"}},
		{name: "zsh completion", args: []string{"completion", "zsh"}, code: 0, want: []string{"#compdef kvctl"}},
		{name: "fish completion", args: []string{"completion", "fish"}, code: 0, want: []string{"complete -c kvctl"}},
		{name: "grant without an identity", args: []string{"keyspace", "grant", "ledger", "--read"}, code: 2, want: []string{"keyspace grant ledger: name the identity with --to"}},
		{name: "grant without a permission", args: []string{"keyspace", "grant", "ledger", "--to", "bob"}, code: 2,
			want: []string{"keyspace grant ledger --to bob: give at least one of --read, --write, --admin"}},
		{name: "revoke without an identity", args: []string{"keyspace", "revoke", "ledger"}, code: 2, want: []string{"keyspace revoke ledger: name the identity with --from"}},
		{name: "cluster status --check flag exists", args: []string{"cluster", "status", "--help"}, code: 0, want: []string{"--check"}},
	} {
		c.run(t)
	}
}

// Global flags come from CAPKV_ variables when not given; a flag given wins;
// a bad value is a usage error naming the variable.
func TestEnvironment(t *testing.T) {
	for _, c := range []struct {
		env map[string]string
		check
	}{
		{map[string]string{"CAPKV_TIMEOUT": "-1s"}, check{args: []string{"get", "x"}, code: 2, want: []string{"--timeout -1s: must be positive"}}},
		{map[string]string{"CAPKV_TIMEOUT": "soon"}, check{args: []string{"get", "x"}, code: 2, want: []string{`CAPKV_TIMEOUT="soon" (for --timeout)`}}},
		{map[string]string{"CAPKV_JSON": "maybe"}, check{args: []string{"get", "x"}, code: 2, want: []string{`CAPKV_JSON="maybe"`}}},
		{map[string]string{"CAPKV_CONSISTENCY": "strong"}, check{args: []string{"get", "x"}, code: 2, want: []string{`--consistency: unknown consistency level "strong"`}}},
		{map[string]string{"CAPKV_ENDPOINTS": "127.0.0.1"}, check{args: []string{"get", "x"}, code: 2, want: []string{`endpoint "127.0.0.1": no port`}}},
		// The flag wins over the variable.
		{map[string]string{"CAPKV_TIMEOUT": "-1s"}, check{args: []string{"--timeout", "2s", "--endpoints", "127.0.0.1"}, code: 2, want: []string{"missing command"}}},
	} {
		t.Run(c.want[0], func(t *testing.T) {
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			c.name = "env " + strings.Join(mapPairs(c.env), " ")
			c.run(t)
		})
	}

	eps := endpoints(t)
	t.Setenv("CAPKV_ENDPOINTS", eps)
	check{name: "put via CAPKV_ENDPOINTS", args: []string{"put", "sessions/env", "v"}, code: 0, want: []string{"OK"}}.run(t)
	t.Setenv("CAPKV_JSON", "true")
	t.Setenv("CAPKV_CONSISTENCY", "all") // reads what a quorum write wrote
	out, errOut, code := kvctlRun("", "get", "sessions/env")
	var got struct {
		Value   string
		Receipt struct{ Level string }
	}
	if err := json.Unmarshal([]byte(out), &got); code != 0 || err != nil || got.Value != "v" || got.Receipt.Level != "all" {
		t.Errorf("get with CAPKV_JSON=true CAPKV_CONSISTENCY=all: exit %d, stdout %q, stderr %q; want JSON at level all", code, out, errOut)
	}
	out, _, code = kvctlRun("", "--consistency", "quorum", "get", "sessions/env")
	if err := json.Unmarshal([]byte(out), &got); code != 0 || err != nil || got.Receipt.Level != "quorum" {
		t.Errorf("--consistency quorum over CAPKV_CONSISTENCY=all: exit %d, %q", code, out)
	}
	t.Setenv("CAPKV_JSON", "")
	t.Setenv("CAPKV_TIMEOUT", "1ns")
	check{name: "CAPKV_TIMEOUT=1ns is applied", args: []string{"get", "sessions/env"}, code: 1, want: []string{"deadline"}}.run(t)
}

func mapPairs(m map[string]string) []string {
	var out []string
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	return out
}

// Shell completion offers keyspace names (from the cluster) and flag values.
func TestCompletion(t *testing.T) {
	t.Setenv("CAPKV_ENDPOINTS", endpoints(t))
	for _, c := range []check{
		{name: "consistency values", args: []string{"__complete", "get", "x", "--consistency", ""}, code: 0,
			want: []string{"linearizable\t", "stale\t", "one\t", "quorum\t", "all\t", ":4\n"}},
		{name: "bench workload", args: []string{"__complete", "bench", "--workload", ""}, code: 0, want: []string{"write\t", "read\t", "mixed\t"}},
		{name: "keyspace names", args: []string{"__complete", "keyspace", "describe", ""}, code: 0, want: []string{"accounts\n", "sessions\n", ":4\n"}},
		{name: "ring keyspace", args: []string{"__complete", "ring", ""}, code: 0, want: []string{"accounts\n", "sessions\n"}},
		{name: "key starts with a keyspace", args: []string{"__complete", "get", ""}, code: 0, want: []string{"accounts/\n", "sessions/\n", ":6\n"}},
		{name: "one key only", args: []string{"__complete", "get", "accounts/x", ""}, code: 0, want: []string{":4\n"}, notWant: []string{"sessions/"}},
		{name: "subcommands", args: []string{"__complete", "cluster", ""}, code: 0, want: []string{"status"}},
	} {
		c.run(t)
	}
	t.Setenv("CAPKV_ENDPOINTS", "127.0.0.1:1")
	start := time.Now()
	check{name: "no cluster: error directive, quickly", args: []string{"__complete", "keyspace", "describe", ""}, code: 0, want: []string{":1\n"}}.run(t)
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("completion against a cluster that is down took %s", d)
	}
}

// cluster status --check exits 1 while a node is down, naming it.
func TestClusterStatusCheck(t *testing.T) {
	cl, err := nodetest.Start(nodetest.Options{Nodes: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	e := "--endpoints=" + strings.Join(cl.Endpoints()[:2], ",")
	check{name: "all up", args: []string{e, "cluster", "status", "--check"}, code: 0, want: []string{" up "}}.run(t)
	cl.Nodes[2].Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, errOut, code := kvctlRun("", e, "cluster", "status", "--check")
		if code == 1 && strings.Contains(errOut, "cluster check failed: 1 of 3 nodes not up: n3 (down)") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster status --check with n3 stopped: exit %d, stderr %q after 20s; want exit 1 naming n3", code, errOut)
		}
		time.Sleep(200 * time.Millisecond)
	}
	check{name: "without --check", args: []string{e, "cluster", "status"}, code: 0, want: []string{"down"}}.run(t)
	check{name: "--check --json", args: []string{e, "--json", "cluster", "status", "--check"}, code: 1, want: []string{"n3 (down)"}}.run(t)
}

// The progress line names failed moves only when some failed.
func TestRebalanceProgress(t *testing.T) {
	r := &api.RebalanceStatusResponse{Moves: []*api.MoveStatus{{State: "done"}, {State: "running"}, {State: "pending"}, {State: "pending"}}}
	if got, want := rebalanceProgress(r), "1/4 moves done, 1 running, 2 pending"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	r.Moves = append(r.Moves, &api.MoveStatus{State: "failed"})
	if got, want := rebalanceProgress(r), "1/5 moves done, 1 running, 2 pending, 1 failed (retrying)"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
