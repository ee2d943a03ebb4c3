package e2e

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/capkv/capkv/api"
)

// TestWipedNodeIsRefused: a node that comes back with an empty data
// directory under its old ID would reuse its Raft server ID without its
// log and votes. It is refused at start-up, before any Raft replica runs,
// with what to do instead; the cluster keeps serving.
func TestWipedNodeIsRefused(t *testing.T) {
	cl := startCluster(t, 3, "eu")
	n3 := cl.proc("n3")
	waitFor(t, 20*time.Second, "every node's data directory registered in the map", func() bool {
		cc, ctx, done := dialNode(t, cl.proc("n1").addr)
		defer done()
		m, err := api.NewAdminClient(cc).GetClusterMap(ctx, &api.ClusterMapRequest{})
		if err != nil {
			return false
		}
		for _, nd := range m.GetNodes() {
			if nd.GetIncarnation() == "" {
				return false
			}
		}
		return len(m.GetNodes()) == 3
	})
	cl.stop(n3)
	if err := os.RemoveAll(n3.dataDir); err != nil {
		t.Fatal(err)
	}
	for attempt := 1; attempt <= 2; attempt++ { // the refusal holds on a second try too
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.CommandContext(ctx, bins.kvd, "--id", n3.id, "--listen", n3.addr, "--region", n3.region, "--data-dir", n3.dataDir,
			"--log-level", "warn", "--initial-cluster", cl.peers)
		out, err := cmd.CombinedOutput()
		timedOut := ctx.Err() != nil
		cancel()
		if timedOut {
			t.Fatalf("attempt %d: a wiped n3 started and kept running:\n%s", attempt, out)
		}
		if err == nil || cmd.ProcessState.ExitCode() != 1 || !strings.Contains(string(out), "a wiped node must not come back under its old ID") {
			t.Fatalf("attempt %d: wiped n3: exit %v, want 1 and a clear refusal:\n%s", attempt, err, out)
		}
		if attempt == 1 {
			t.Logf("refused: %s", strings.TrimSpace(string(out)))
		}
	}
	// The other two still serve.
	if _, errOut, code := kvctl(t, []string{cl.proc("n1").addr, cl.proc("n2").addr}, "", "put", "accounts/eu/1/b", "x"); code != 0 {
		t.Fatalf("put with n3 refused: %s", errOut)
	}
}
