package ap

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/shard"
)

const (
	dotCrashDirEnv   = "CAPKV_AP_DOT_CRASH_DIR"
	dotCrashRoundEnv = "CAPKV_AP_DOT_CRASH_ROUND"
)

// printingPeers is the crash child's other replicas: every store is printed
// ("SENT key dot value") and flushed before it is acknowledged, so the
// parent learns every dot that left the coordinator, also the ones whose
// local store the kill interrupted.
type printingPeers struct {
	mu  sync.Mutex
	out *bufio.Writer
}

func (p *printingPeers) Store(_ context.Context, _ string, req *api.ReplicaStoreRequest) (*api.ReplicaStoreResponse, error) {
	d, err := consistency.DecodeDVV(req.GetClock())
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range d.Values() {
		fmt.Fprintf(p.out, "SENT %s %s %s\n", req.GetKey(), s.Dot, s.Data)
	}
	return &api.ReplicaStoreResponse{}, p.out.Flush()
}

func (p *printingPeers) Fetch(context.Context, string, *api.ReplicaFetchRequest) (*api.ReplicaFetchResponse, error) {
	return &api.ReplicaFetchResponse{}, nil
}

// TestHelperDotCrashWriter is the child process of
// TestDotsNotReusedAfterSIGKILL: a coordinator with a real store (synced
// writes) and no HLC, so without the lease a key's next counter would be
// its stored one plus one, and a dot sent but not stored locally before a
// kill would be minted again after it. Writers overwrite a few keys with
// the context they read, forever; the parent kills the process.
func TestHelperDotCrashWriter(t *testing.T) {
	dir := os.Getenv(dotCrashDirEnv)
	if dir == "" {
		t.Skip("helper process for TestDotsNotReusedAfterSIGKILL")
	}
	round := os.Getenv(dotCrashRoundEnv)
	st, err := shard.Open(shard.DefaultOptions(dir)) // SyncWrites: true
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(2)
	}
	peers := &printingPeers{out: bufio.NewWriter(os.Stdout)}
	clocks := NewClockStore(st)
	c := NewCoordinator("a", clocks, NewHintStore(st), peers, nil)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			key := fmt.Sprintf("k%d", g)
			for i := 0; ; i++ {
				cur, _, err := clocks.Read(testPartition, key)
				if err == nil {
					_, err = c.Write(context.Background(), WriteRequest{Partition: testPartition, Key: key, Replicas: []string{"a", "b", "c"},
						Level: consistency.Quorum, Context: cur.Context(), Value: consistency.Value{Data: fmt.Appendf(nil, "r%s-w%d", round, i)}})
				}
				if err != nil {
					peers.mu.Lock()
					fmt.Fprintln(peers.out, "ERR", err)
					peers.out.Flush()
					os.Exit(2)
				}
			}
		})
	}
	wg.Wait()
}

// TestDotsNotReusedAfterSIGKILL kills a coordinating process with SIGKILL
// while it sends writes before storing them, several rounds in one
// directory, and checks that no dot was ever sent with two different
// values: after a restart the lease starts above every counter handed out
// before the kill (Riak's kv679 is what reuse would cause: a replica
// keeping one of two values for the same dot, silently dropping the other).
func TestDotsNotReusedAfterSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	dir := t.TempDir()
	seen := map[string]string{} // "key dot" -> value
	const rounds = 6
	interrupted := 0 // rounds where a sent dot did not reach the local store
	for round := range rounds {
		sent := runDotCrashChild(t, dir, round, 200+37*round)
		fresh := 0
		last := map[string]uint64{} // key -> highest counter sent this round
		for _, line := range sent {
			f := strings.Fields(line)
			if len(f) != 3 {
				t.Fatalf("round %d: bad line %q", round, line)
			}
			id := f[0] + " " + f[1]
			if v, ok := seen[id]; ok && v != f[2] {
				t.Fatalf("round %d: dot %s of key %s minted twice, for %s and %s", round, f[1], f[0], v, f[2])
			} else if !ok {
				fresh++
			}
			seen[id] = f[2]
			n, _ := strconv.ParseUint(f[1][strings.IndexByte(f[1], ':')+1:], 10, 64)
			last[f[0]] = max(last[f[0]], n)
		}
		lost := lostSends(t, dir, last)
		if lost > 0 {
			interrupted++
		}
		t.Logf("round %d: %d stores sent, %d new dots, %d dots in all, %d keys had a sent dot the kill kept from the local store",
			round, len(sent), fresh, len(seen), lost)
	}
	if interrupted == 0 {
		t.Fatalf("no kill landed between a send and its local store in %d rounds: the test proved nothing", rounds)
	}
}

// lostSends counts the keys whose highest sent counter is above the one
// the reopened store holds.
func lostSends(t *testing.T, dir string, last map[string]uint64) int {
	t.Helper()
	st, err := shard.Open(shard.DefaultOptions(dir))
	if err != nil {
		t.Fatalf("reopen after SIGKILL: %v", err)
	}
	defer st.Close()
	clocks, lost := NewClockStore(st), 0
	for key, n := range last {
		d, _, err := clocks.Read(testPartition, key)
		if err != nil {
			t.Fatal(err)
		}
		if d.Context().Get("a") < n {
			lost++
		}
	}
	return lost
}

// runDotCrashChild starts the writer and SIGKILLs it after it sent want
// stores (or after a timeout); it returns what the child sent.
func runDotCrashChild(t *testing.T, dir string, round, want int) []string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperDotCrashWriter$", "-test.count=1")
	cmd.Env = append(os.Environ(), dotCrashDirEnv+"="+dir, dotCrashRoundEnv+"="+strconv.Itoa(round))
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var reaped bool
	kill := func() {
		if !reaped {
			_ = cmd.Process.Signal(syscall.SIGKILL)
			_ = cmd.Wait()
			reaped = true
		}
	}
	t.Cleanup(kill)
	timer := time.AfterFunc(60*time.Second, func() { _ = cmd.Process.Signal(syscall.SIGKILL) })
	defer timer.Stop()
	var sent []string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "SENT "); ok {
			sent = append(sent, rest)
			if len(sent) == want {
				// Mid-write: other writers are between their send and
				// their local store now.
				_ = cmd.Process.Signal(syscall.SIGKILL)
			}
		} else if strings.HasPrefix(line, "ERR") {
			kill()
			t.Fatalf("round %d: child failed: %s", round, line)
		}
	}
	kill()
	if len(sent) < want {
		t.Fatalf("round %d: child sent only %d stores before dying or timing out", round, len(sent))
	}
	return sent
}
