package node_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/capkv/capkv/internal/fault"
	"github.com/capkv/capkv/internal/node"
	"github.com/capkv/capkv/internal/nodetest"
	"github.com/capkv/capkv/jepsen"
)

// runRegister runs the register workload against an in-process 3-node
// cluster while a nemesis isolates nodes from the Raft traffic of the others,
// and checks the history with porcupine.
func runRegister(t *testing.T, unsafeReads bool, isolateFor, period time.Duration, want porcupine.CheckResult) jepsen.RegisterResult {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d (unsafe reads: %t)", seed, unsafeReads)
	cl, err := nodetest.Start(nodetest.Options{Nodes: 3, Configure: func(c *node.Config) {
		c.UnsafeLocalReads = unsafeReads
		c.Raft.HeartbeatTimeout = 300 * time.Millisecond
		c.Raft.ElectionTimeout = 300 * time.Millisecond
		c.Raft.LeaderLeaseTimeout = 150 * time.Millisecond
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()

	h := jepsen.NewHistory()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // nemesis: isolate a random node, heal, repeat; always ends healed
		defer wg.Done()
		defer cl.Faults.Heal()
		rng := rand.New(rand.NewPCG(seed, 99))
		ids := cl.IDs()
		for ctx.Err() == nil {
			victim := ids[rng.IntN(len(ids))]
			var rest []string
			for _, id := range ids {
				if id != victim {
					rest = append(rest, id)
				}
			}
			cl.Faults.Partition([]string{victim}, rest, fault.Rule{Drop: true})
			select {
			case <-ctx.Done():
				return
			case <-time.After(isolateFor):
			}
			cl.Faults.Heal()
			select {
			case <-ctx.Done():
				return
			case <-time.After(period - isolateFor):
			}
		}
	}()
	w := jepsen.RegisterWorkload{
		Endpoints: cl.Endpoints(),
		Keys:      []string{"accounts/eu/1/r", "accounts/eu/2/r", "accounts/eu/3/r"},
		Clients:   6, Duration: 5 * time.Second, OpTimeout: time.Second, Seed: seed, Ops: 20000,
	}
	if err := w.Run(ctx, h); err != nil {
		t.Fatal(err)
	}
	cancel()
	wg.Wait()
	res := jepsen.CheckRegister(h.Ops(), 60*time.Second)
	ok, fail, unknown := 0, 0, 0
	for _, o := range h.Ops() {
		switch o.Outcome {
		case jepsen.OK:
			ok++
		case jepsen.Fail:
			fail++
		default:
			unknown++
		}
	}
	t.Logf("%d ops: %d ok, %d fail, %d unknown; porcupine checked %d: %s", len(h.Ops()), ok, fail, unknown, res.Checked, res.Result)
	if ok < 100 {
		t.Fatalf("only %d successful operations: the workload did not exercise the cluster", ok)
	}
	if res.Result != want { // keep what a failure needs to be understood
		dir := filepath.Join(os.TempDir(), fmt.Sprintf("capkv-register-%d", seed))
		os.MkdirAll(dir, 0o755)
		if f, err := os.Create(filepath.Join(dir, "history.jsonl")); err == nil {
			h.WriteJSONL(f)
			f.Close()
		}
		porcupine.VisualizePath(jepsen.RegisterModel(), res.Info, filepath.Join(dir, "timeline.html"))
		t.Logf("history and timeline kept in %s", dir)
	}
	return res
}

func TestRegisterLinearizableUnderIsolation(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a 5s workload")
	}
	res := runRegister(t, false, 700*time.Millisecond, 1200*time.Millisecond, porcupine.Ok)
	if res.Result != porcupine.Ok {
		t.Fatalf("history is not linearizable (porcupine: %s)", res.Result)
	}
}

// The checker must catch the bug it exists for: with the test-only unsafe
// read path (local reads without leadership confirmation), an isolated
// replica serves stale values and porcupine reports a violation.
func TestRegisterCheckerCatchesUnsafeReads(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a 5s workload")
	}
	res := runRegister(t, true, 2*time.Second, 2500*time.Millisecond, porcupine.Illegal)
	if res.Result != porcupine.Illegal {
		t.Fatalf("porcupine said %s for a cluster serving unsafe local reads; the checker failed to catch stale reads", res.Result)
	}
}
