package e2e

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestKvctl(t *testing.T) {
	cl := startCluster(t, 3)
	eps := cl.endpoints()
	run := func(stdin string, args ...string) string {
		t.Helper()
		out, errOut, code := kvctl(t, eps, stdin, args...)
		if code != 0 {
			t.Fatalf("kvctl %s: exit %d, stderr %s", strings.Join(args, " "), code, errOut)
		}
		return out
	}
	fail := func(wantCode int, wantMsg string, args ...string) {
		t.Helper()
		out, errOut, code := kvctl(t, eps, "", args...)
		if code != wantCode || !strings.Contains(errOut, wantMsg) {
			t.Errorf("kvctl %s: exit %d, stdout %q, stderr %q; want exit %d and %q on stderr",
				strings.Join(args, " "), code, out, errOut, wantCode, wantMsg)
		}
	}
	jsonOf := func(args ...string) map[string]any {
		t.Helper()
		var m map[string]any
		out := run("", append(args, "--json")...)
		if err := json.Unmarshal([]byte(out), &m); err != nil {
			t.Fatalf("kvctl %v --json: %v\n%s", args, err, out)
		}
		return m
	}

	if out := run("", "put", "accounts/eu/42/balance", "100"); out != "OK\n" {
		t.Errorf("put printed %q", out)
	}
	if out := run("", "get", "accounts/eu/42/balance"); out != "100" {
		t.Errorf("get printed %q, want the bare value", out)
	}
	run("line1\nline2\n", "put", "accounts/eu/42/note", "-")
	if out := run("", "get", "accounts/eu/42/note"); out != "line1\nline2\n" {
		t.Errorf("value from stdin came back as %q", out)
	}

	g := jsonOf("get", "accounts/eu/42/balance")
	rc, _ := g["receipt"].(map[string]any)
	if g["value"] != "100" || rc["mode"] != "cp" || rc["level"] != "linearizable" || rc["keyspace"] != "accounts" {
		t.Errorf("get --json = %v", g)
	}
	if _, errOut, _ := kvctl(t, eps, "", "-v", "get", "accounts/eu/42/balance"); !strings.Contains(errOut, "receipt: accounts cp/linearizable") {
		t.Errorf("-v printed %q", errOut)
	}
	p := jsonOf("put", "sessions/abc", "x")
	if rc := p["receipt"].(map[string]any); rc["mode"] != "ap" || rc["level"] != "quorum" {
		t.Errorf("put --json on ap = %v", p)
	}

	loc := jsonOf("locate", "accounts/eu/42/balance")
	reps, _ := loc["replicas"].([]any)
	if loc["keyspace"] != "accounts" || loc["region"] != "eu" || len(reps) != 3 || loc["owner"] != reps[0] {
		t.Errorf("locate --json = %v", loc)
	}
	if out := run("", "locate", "accounts/eu/42/balance"); !strings.Contains(out, "partition") || !strings.Contains(out, "owner") {
		t.Errorf("locate printed %q", out)
	}

	sc := jsonOf("scan", "accounts/eu/42/")
	if sc["count"] != float64(2) {
		t.Errorf("scan --json = %v", sc)
	}
	if out := run("", "scan", "accounts/eu/42/", "--keys-only"); out != "accounts/eu/42/balance\naccounts/eu/42/note\n" {
		t.Errorf("scan --keys-only printed %q", out)
	}

	run("", "cas", "accounts/eu/42/balance", "--expect", "100", "--value", "150")
	fail(1, "conflict", "cas", "accounts/eu/42/balance", "--expect", "100", "--value", "175")
	fail(1, "cp keyspace", "cas", "sessions/abc", "--expect", "x", "--value", "y")
	fail(2, "exactly one of", "cas", "accounts/eu/42/balance", "--value", "1")

	d := jsonOf("del", "accounts/eu/42/note")
	if d["existed"] != true {
		t.Errorf("del --json = %v", d)
	}
	fail(1, "not found", "get", "accounts/eu/42/note")

	r := jsonOf("ring", "accounts")
	if parts, _ := r["partitions"].([]any); len(parts) != 8 {
		t.Errorf("ring accounts --json: %d partitions, want 8: %v", len(parts), r)
	}
	if out := run("", "ring"); !strings.Contains(out, "PRIMARIES") || !strings.Contains(out, "sessions/*/0") {
		t.Errorf("ring printed %q", out)
	}
	st := jsonOf("cluster", "status")
	if nodes, _ := st["nodes"].([]any); len(nodes) != 3 {
		t.Errorf("cluster status --json = %v", st)
	}
	if out := run("", "cluster", "status"); strings.Count(out, " up ") != 3 {
		t.Errorf("cluster status printed %q", out)
	}
	var ks []map[string]any
	if err := json.Unmarshal([]byte(run("", "keyspace", "list", "--json")), &ks); err != nil || len(ks) != 2 {
		t.Errorf("keyspace list --json: %v %v", ks, err)
	}
	if out := run("", "keyspace", "list"); !strings.Contains(out, "accounts") || !strings.Contains(out, "ap") {
		t.Errorf("keyspace list printed %q", out)
	}
	if ksd := jsonOf("keyspace", "describe", "sessions"); ksd["mode"] != "ap" {
		t.Errorf("keyspace describe = %v", ksd)
	}

	// Errors: stderr, non-zero exit, nothing on stdout.
	fail(1, "unknown keyspace", "put", "nosuch/1", "v")
	fail(1, "unknown keyspace", "keyspace", "describe", "nosuch")
	fail(1, `region "us"`, "put", "accounts/us/1/balance", "v")
	fail(2, "want 2 argument(s)", "put", "accounts/eu/1/x")
	fail(2, "--consistency", "get", "accounts/eu/42/balance", "--consistency", "strong")
	fail(1, "not offered", "get", "accounts/eu/42/balance", "--consistency", "quorum")
	// --endpoints overrides the environment; an unreachable cluster is a clear error.
	_, errOut, code := kvctl(t, eps, "", "--endpoints", "127.0.0.1:1", "--timeout", "2s", "get", "accounts/eu/42/balance")
	if code == 0 || !strings.Contains(errOut, "127.0.0.1:1") {
		t.Errorf("unreachable endpoint: exit %d, stderr %q", code, errOut)
	}
}
