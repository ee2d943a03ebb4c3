package cp

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/shard"
)

// The state machine's writes are not fsynced; after a machine crash the
// store asks for a rebuild and the group restores its snapshot and re-applies
// its log. The crash is simulated: the lost writes are removed from the
// store (from the middle, as Badger's WAL files can lose them), and the
// store's boot record says it was left open by an earlier boot.
func TestRebuildAfterMachineCrash(t *testing.T) {
	for _, snapshot := range []bool{false, true} {
		t.Run(fmt.Sprintf("snapshot=%v", snapshot), func(t *testing.T) {
			dir := t.TempDir()
			const id = "ks/*/0"
			start := func() (*shard.Store, *Group) {
				t.Helper()
				st, err := shard.Open(shard.DefaultOptions(filepath.Join(dir, "db")))
				if err != nil {
					t.Fatal(err)
				}
				rl, err := st.RaftLog(id)
				if err != nil {
					t.Fatal(err)
				}
				_, tr := raft.NewInmemTransport("a")
				g, err := StartGroup(GroupConfig{ID: id, Self: "a", Peers: []string{"a"}, Storage: st.Replica(id),
					LogStore: NewLogStore(rl), Transport: tr, SnapshotDir: filepath.Join(dir, "snaps"), Tuning: testTuning()})
				if err != nil {
					st.Close()
					t.Fatal(err)
				}
				for deadline := time.Now().Add(10 * time.Second); !g.IsLeader(); time.Sleep(10 * time.Millisecond) {
					if time.Now().After(deadline) {
						t.Fatal("no leader in 10s")
					}
				}
				return st, g
			}
			stop := func(st *shard.Store, g *Group) {
				t.Helper()
				if err := g.Shutdown(); err != nil {
					t.Fatal(err)
				}
				if err := st.Close(); err != nil {
					t.Fatal(err)
				}
			}
			key := func(i int) string { return fmt.Sprintf("ks/k%02d", i) }
			// lose removes keys 5-10 from the state machine, as a machine
			// crash could, and closes the store.
			lose := func() {
				t.Helper()
				st, err := shard.Open(shard.DefaultOptions(filepath.Join(dir, "db")))
				if err != nil {
					t.Fatal(err)
				}
				var lost []string
				for i := 5; i <= 10; i++ {
					lost = append(lost, key(i))
				}
				if err := st.Replica(id).Remove(lost...); err != nil {
					t.Fatal(err)
				}
				if err := st.Close(); err != nil {
					t.Fatal(err)
				}
			}
			missing := func() []string {
				t.Helper()
				st, g := start()
				defer stop(st, g)
				ctx, cancel := ctxFor(10 * time.Second)
				defer cancel()
				// Leadership and the log tail re-applied.
				if _, err := g.Propose(ctx, put("ks/barrier", "x", 1000)); err != nil {
					t.Fatal(err)
				}
				if _, err := g.ReadBarrier(ctx); err != nil {
					t.Fatal(err)
				}
				var out []string
				for i := 1; i <= 20; i++ {
					rec, found, err := st.Replica(id).Get(key(i))
					if err != nil {
						t.Fatal(err)
					}
					if !found || string(rec.Value) != fmt.Sprint("v", i) {
						out = append(out, key(i))
					}
				}
				return out
			}

			st, g := start()
			ctx, cancel := ctxFor(10 * time.Second)
			defer cancel()
			for i := 1; i <= 20; i++ {
				if _, err := g.Propose(ctx, put(key(i), fmt.Sprint("v", i), consistency.Timestamp(i))); err != nil {
					t.Fatal(err)
				}
				if i == 12 && snapshot {
					if err := g.Snapshot(); err != nil {
						t.Fatal(err)
					}
				}
			}
			stop(st, g)

			// Control: without a machine crash nothing is rebuilt, so the
			// keys removed behind the store's back stay missing (the test
			// can see a loss).
			lose()
			if got := missing(); len(got) != 6 {
				t.Fatalf("after a loss with no rebuild: missing %v, want keys 5-10", got)
			}

			lose()
			boot := filepath.Join(dir, "db", "CAPKV-BOOT") // shard's boot record
			if err := os.WriteFile(boot, []byte("boot=an-earlier-boot\nstate=open\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if got := missing(); len(got) != 0 {
				t.Fatalf("after a machine crash and the rebuild: missing %v", got)
			}
			// Rebuilt once: the next clean restart does not rebuild again.
			lose()
			if got := missing(); len(got) != 6 {
				t.Fatalf("a second restart rebuilt again (missing %v)", got)
			}
		})
	}
}
