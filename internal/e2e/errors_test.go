package e2e

import (
	"strings"
	"testing"
	"time"
)

// TestKvctlMinorityUnavailable: with 2 of 3 nodes stopped, every kvctl
// operation on a cp key ends with the surviving node's Unavailable refusal
// and its reason, not the dial error of whichever dead node was tried last;
// and a bench whose every operation failed exits non-zero.
func TestKvctlMinorityUnavailable(t *testing.T) {
	cl := startCluster(t, 3)
	eps := cl.endpoints()
	key := "accounts/eu/7/balance"
	if _, errOut, code := kvctl(t, eps, "", "put", key, "1"); code != 0 {
		t.Fatalf("put before the failure: exit %d: %s", code, errOut)
	}
	cl.stop(cl.procs[0])
	cl.stop(cl.procs[1])
	time.Sleep(1500 * time.Millisecond) // the survivor's leader lease runs out
	for _, args := range [][]string{
		{"put", key, "2"},
		{"get", key},
		{"cas", key, "--expect", "1", "--value", "2"},
		{"del", key},
	} {
		out, errOut, code := kvctl(t, eps, "", append([]string{"--timeout", "4s"}, args...)...)
		t.Logf("kvctl %s: exit %d, stderr %s", strings.Join(args, " "), code, errOut)
		if code != 1 || out != "" || !strings.Contains(errOut, "unavailable") || strings.Contains(errOut, "dial tcp") ||
			!strings.Contains(errOut, "majority") {
			t.Errorf("kvctl %s with 2 of 3 nodes down: exit %d, stdout %q, stderr %q; want exit 1 and the survivor's Unavailable reason (no majority), no dial error",
				strings.Join(args, " "), code, out, errOut)
		}
	}
	out, errOut, code := kvctl(t, eps, "", "--timeout", "1s", "bench", "--duration", "1s", "--key-format", "accounts/eu/%d/bench")
	t.Logf("kvctl bench: exit %d\n%s%s", code, out, errOut)
	if code != 1 || !strings.Contains(errOut, "every operation failed") {
		t.Errorf("bench with every operation failing: exit %d, stderr %q; want exit 1 saying every operation failed", code, errOut)
	}
}
