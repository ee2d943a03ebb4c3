package ap

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/capkv/capkv/consistency"
)

func TestDigestAndLeaves(t *testing.T) {
	s1, s2 := newClockStore(t), newClockStore(t)
	empty, err := s1.Digest(testPartition)
	if err != nil || len(empty) != Leaves || slices.ContainsFunc(empty, func(l uint64) bool { return l != 0 }) {
		t.Fatalf("digest of an empty partition: %v %v", empty, err)
	}
	var keys []string
	for i := range 100 {
		keys = append(keys, fmt.Sprintf("key-%03d", i))
	}
	clk := func(k string) consistency.DVV {
		return mint(t, consistency.DVV{}, consistency.VV{}, "a", k, ts(1), false)
	}
	for _, k := range keys {
		merge(t, s1, k, clk(k), false)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, i := range rng.Perm(len(keys)) {
		merge(t, s2, keys[i], clk(keys[i]), false)
	}
	// Another partition of the same store does not count.
	if _, err := s2.Merge("other/0", "key-000", clk("other"), false); err != nil {
		t.Fatal(err)
	}
	d1, _ := s1.Digest(testPartition)
	d2, _ := s2.Digest(testPartition)
	if !slices.Equal(d1, d2) || Root(d1) != Root(d2) {
		t.Fatal("same contents, different digests")
	}
	// One changed clock changes exactly its leaf.
	k := keys[17]
	merge(t, s2, k, mint(t, clk(k), consistency.VV{}, "b", "more", ts(2), false), false)
	d2, _ = s2.Digest(testPartition)
	for leaf := range Leaves {
		if (d1[leaf] != d2[leaf]) != (uint32(leaf) == LeafOf(k)) {
			t.Errorf("leaf %d differs: %v (key in leaf %d)", leaf, d1[leaf] != d2[leaf], LeafOf(k))
		}
	}
	if Root(d1) == Root(d2) {
		t.Error("roots equal after a change")
	}
	// LeafEntries: the keys of one leaf, with their stored clocks.
	all := map[string]string{}
	for leaf := range uint32(Leaves) {
		m, err := s1.LeafEntries(testPartition, leaf)
		if err != nil {
			t.Fatal(err)
		}
		for key, enc := range m {
			if LeafOf(key) != leaf {
				t.Errorf("%s in leaf %d, belongs to %d", key, leaf, LeafOf(key))
			}
			all[key] = string(enc)
		}
	}
	if !maps.Equal(all, dumpStore(t, s1, testPartition)) {
		t.Error("the leaves do not hold exactly the partition")
	}
}

// diverge gives the replicas of c different states: keys on one replica only,
// concurrent versions, a newer version on one, deletes that one replica has
// not seen, and many random keys. It returns the expected state: for every
// key, the merge of every replica's clock.
func diverge(t *testing.T, c *tcluster, rng *rand.Rand) map[string]consistency.DVV {
	t.Helper()
	want := map[string]consistency.DVV{}
	put := func(id, key string, d consistency.DVV) {
		merge(t, c.node(id).clocks, key, d, false)
		want[key] = want[key].Sync(d)
	}
	zero, none := consistency.DVV{}, consistency.VV{}
	put("a", "only-a", mint(t, zero, none, "a", "x", ts(1), false))
	put("b", "only-b", mint(t, zero, none, "b", "x", ts(1), false))
	put("c", "only-c", mint(t, zero, none, "c", "x", ts(1), false))
	put("a", "concurrent", mint(t, zero, none, "a", "from-a", ts(1), false))
	put("b", "concurrent", mint(t, zero, none, "b", "from-b", ts(1), false))
	old := mint(t, zero, none, "a", "old", ts(1), false)
	for _, id := range c.replicas {
		put(id, "newer-on-c", old)
		put(id, "deleted-on-b", old)
	}
	put("c", "newer-on-c", mint(t, old, old.Context(), "c", "new", ts(2), false))
	put("b", "deleted-on-b", mint(t, old, old.Context(), "b", "", ts(2), true))
	for i := range 60 {
		key := fmt.Sprintf("r%03d", i)
		d := zero
		for _, id := range c.replicas {
			if rng.IntN(3) == 0 {
				continue
			}
			// Each replica's own writes on top of what it has seen.
			d = mint(t, d, d.Context(), id, fmt.Sprintf("%s-%d", id, i), ts(int64(i)), rng.IntN(5) == 0)
			put(id, key, d)
		}
	}
	return want
}

func checkConverged(t *testing.T, c *tcluster, want map[string]consistency.DVV) {
	t.Helper()
	ref := c.dump(c.replicas[0])
	for _, id := range c.replicas[1:] {
		if got := c.dump(id); !maps.Equal(got, ref) {
			t.Fatalf("%s differs from %s after repair: %d vs %d keys", id, c.replicas[0], len(got), len(ref))
		}
	}
	if len(ref) != len(want) {
		t.Fatalf("%d keys after repair, want %d", len(ref), len(want))
	}
	for key, d := range want {
		if ref[key] != string(d.Encode(nil)) {
			got, _ := consistency.DecodeDVV([]byte(ref[key]))
			t.Errorf("%s: %v, want the merge of all replicas %v", key, got, d)
		}
	}
	var roots []uint64
	for _, id := range c.replicas {
		d, err := c.node(id).clocks.Digest(testPartition)
		if err != nil {
			t.Fatal(err)
		}
		roots = append(roots, Root(d))
	}
	if len(slices.Compact(roots)) != 1 {
		t.Fatalf("roots differ: %x", roots)
	}
}

// After one Repair every replica holds the merge of all of them, whichever
// replica runs it; a second Repair finds nothing to do.
func TestRepairConverges(t *testing.T) {
	for _, repairer := range []string{"a", "c"} {
		t.Run("by-"+repairer, func(t *testing.T) {
			c := newCluster(t, []string{"a", "b", "c"}, nil)
			want := diverge(t, c, rand.New(rand.NewPCG(7, uint64(len(repairer)))))
			st, err := c.node(repairer).coord.Repair(testCtx(t), c, testPartition, c.replicas, false)
			if err != nil {
				t.Fatal(err)
			}
			if st.LeavesDiffering == 0 || st.Pulled == 0 || st.Pushed == 0 || st.Purged != 0 {
				t.Errorf("stats %+v", st)
			}
			checkConverged(t, c, want)
			for key, vals := range map[string][]string{
				"only-a": {"x"}, "only-b": {"x"}, "only-c": {"x"},
				"concurrent": {"from-a", "from-b"}, "newer-on-c": {"new"}, "deleted-on-b": {},
			} {
				for _, id := range c.replicas {
					if got := c.values(id, key); !slices.Equal(got, vals) {
						t.Errorf("%s on %s: %v, want %v", key, id, got, vals)
					}
				}
			}
			if d := c.clock("a", "deleted-on-b"); d.Len() != 1 || !Resolve(d, false).Deleted {
				t.Errorf("the delete did not spread: %v", d)
			}
			st, err = c.node(repairer).coord.Repair(testCtx(t), c, testPartition, c.replicas, false)
			if err != nil || st != (RepairStats{}) {
				t.Errorf("second repair: %+v %v", st, err)
			}
		})
	}
}

// An unreachable replica fails the repair; the others are left consistent
// with what they had (nothing is lost), and a later repair converges.
func TestRepairWithReplicaDown(t *testing.T) {
	c := newCluster(t, []string{"a", "b", "c"}, nil)
	want := diverge(t, c, rand.New(rand.NewPCG(3, 4)))
	c.set(modeDown, "c")
	if _, err := c.node("a").coord.Repair(testCtx(t), c, testPartition, c.replicas, false); err == nil {
		t.Fatal("repair with a replica down succeeded")
	}
	// a merged what b had, b got what a had: nothing lost.
	for key, d := range c.dump("a") {
		w, _ := consistency.DecodeDVV([]byte(d))
		if !want[key].Descends(w) {
			t.Errorf("%s on a: %v is not part of the merge %v", key, w, want[key])
		}
	}
	c.set(modeUp, "c")
	if _, err := c.node("a").coord.Repair(testCtx(t), c, testPartition, c.replicas, false); err != nil {
		t.Fatal(err)
	}
	checkConverged(t, c, want)
}

// Under lww a repair leaves every replica with the last writer's sibling.
func TestRepairLWW(t *testing.T) {
	c := newCluster(t, []string{"a", "b", "c"}, nil)
	zero, none := consistency.DVV{}, consistency.VV{}
	merge(t, c.node("a").clocks, "k", mint(t, zero, none, "a", "older", ts(1), false), true)
	merge(t, c.node("b").clocks, "k", mint(t, zero, none, "b", "newer", ts(2), false), true)
	if _, err := c.node("c").coord.Repair(testCtx(t), c, testPartition, c.replicas, true); err != nil {
		t.Fatal(err)
	}
	for _, id := range c.replicas {
		d := c.clock(id, "k")
		if d.Len() != 1 || !slices.Equal(live(d), []string{"newer"}) || d.Context().Get("a") != 1 {
			t.Errorf("%s: %v", id, d)
		}
	}
}

// deleteKey writes key and deletes it with the read context through a at
// level all, at the cluster's current (fake) time.
func deleteKey(t *testing.T, c *tcluster, key string) {
	t.Helper()
	ctx := testCtx(t)
	a := c.node("a").coord
	w, err := a.Write(ctx, c.wr(key, "v", consistency.All))
	if err != nil {
		t.Fatal(err)
	}
	d := c.wr(key, "", consistency.All)
	d.Context, d.Value = w.Clock.Context(), consistency.Value{Tombstone: true}
	if _, err := a.Write(ctx, d); err != nil {
		t.Fatal(err)
	}
}

func present(c *tcluster, key string) []string {
	var out []string
	for _, id := range c.replicas {
		if _, found, _ := c.node(id).clocks.Read(testPartition, key); found {
			out = append(out, id)
		}
	}
	return out
}

// A tombstone that every replica holds is purged from all of them once it is
// older than the grace; a younger one, one beside a live value, or any while
// a replica is unreachable, is not.
func TestRepairPurgesOldTombstones(t *testing.T) {
	c := newCluster(t, []string{"a", "b", "c"}, nil)
	a := c.node("a").coord
	a.TombstoneGrace = time.Minute
	ctx := testCtx(t)
	all := []string{"a", "b", "c"}

	deleteKey(t, c, "gone")
	deleteKey(t, c, "gone-too")
	if _, err := a.Write(ctx, c.wr("alive", "v", consistency.All)); err != nil {
		t.Fatal(err)
	}
	// A delete beside a concurrent value: not purgeable.
	w, _ := a.Write(ctx, c.wr("half", "v", consistency.All))
	del := c.wr("half", "", consistency.All)
	del.Context, del.Value = w.Clock.Context(), consistency.Value{Tombstone: true}
	if _, err := a.Write(ctx, del); err != nil {
		t.Fatal(err)
	}
	if _, err := c.node("b").coord.Write(ctx, c.wr("half", "concurrent", consistency.All)); err != nil {
		t.Fatal(err)
	}
	// A tombstone only a holds (b and c missed the delete).
	w, err := a.Write(ctx, c.wr("partial", "v", consistency.All))
	if err != nil {
		t.Fatal(err)
	}
	c.set(modeDown, "b", "c")
	del = c.wr("partial", "", consistency.One)
	del.Context, del.Value = w.Clock.Context(), consistency.Value{Tombstone: true}
	if _, err := a.Write(ctx, del); err != nil {
		t.Fatal(err)
	}
	c.settle()
	c.set(modeUp, "b", "c")
	if got := c.values("b", "partial"); !slices.Equal(got, []string{"v"}) {
		t.Fatalf("setup: b has %v", got)
	}

	// Young: nothing is purged (the repair spreads the partial delete).
	st, err := a.Repair(ctx, c, testPartition, c.replicas, false)
	if err != nil || st.Purged != 0 {
		t.Fatalf("repair within the grace: %+v %v", st, err)
	}
	for _, key := range []string{"gone", "gone-too", "alive", "half", "partial"} {
		if p := present(c, key); !slices.Equal(p, all) {
			t.Fatalf("%s on %v after a repair within the grace", key, p)
		}
	}

	c.advance(2 * time.Minute)
	deleteKey(t, c, "young") // deleted now: within the grace

	// A replica down: the repair fails and purges nothing anywhere.
	c.set(modeDown, "c")
	if _, err := a.Repair(ctx, c, testPartition, c.replicas, false); err == nil {
		t.Fatal("repair with c down succeeded")
	}
	for _, key := range []string{"gone", "gone-too", "partial"} {
		if p := present(c, key); !slices.Equal(p, all) {
			t.Fatalf("%s purged from some replicas (left on %v) while c was down", key, p)
		}
	}

	c.set(modeUp, "c")
	st, err = a.Repair(ctx, c, testPartition, c.replicas, false)
	if err != nil || st.Purged != 3 {
		t.Fatalf("repair after the grace: %+v %v, want 3 purged", st, err)
	}
	for _, key := range []string{"gone", "gone-too", "partial"} {
		if p := present(c, key); len(p) != 0 {
			t.Errorf("%s still on %v", key, p)
		}
	}
	for _, key := range []string{"young", "alive", "half"} {
		if p := present(c, key); !slices.Equal(p, all) {
			t.Errorf("%s only on %v", key, p)
		}
	}
	if got := c.values("a", "half"); !slices.Equal(got, []string{"concurrent"}) {
		t.Errorf("half: %v", got)
	}
	// After the purge the replicas still agree.
	checkSame(t, c)

	// The default grace is 10 minutes.
	a.TombstoneGrace = 0
	c.advance(2 * time.Minute) // "young" is 2 min old
	if st, err := a.Repair(ctx, c, testPartition, c.replicas, false); err != nil || st.Purged != 0 {
		t.Fatalf("default grace, 2 min old: %+v %v", st, err)
	}
	c.advance(9 * time.Minute)
	if st, err := a.Repair(ctx, c, testPartition, c.replicas, false); err != nil || st.Purged != 1 {
		t.Fatalf("default grace, 11 min old: %+v %v", st, err)
	}
	if p := present(c, "young"); len(p) != 0 {
		t.Errorf("young still on %v", p)
	}

	// Without an HLC nothing is purged.
	deleteKey(t, c, "no-clock")
	c.advance(time.Hour)
	a.Clock = nil
	if st, err := a.Repair(ctx, c, testPartition, c.replicas, false); err != nil || st.Purged != 0 {
		t.Fatalf("repair without a clock: %+v %v", st, err)
	}
}

func checkSame(t *testing.T, c *tcluster) {
	t.Helper()
	ref := c.dump(c.replicas[0])
	for _, id := range c.replicas[1:] {
		if !maps.Equal(c.dump(id), ref) {
			t.Fatalf("%s differs from %s", id, c.replicas[0])
		}
	}
}

// The purge is a compare-and-delete on every replica: one whose clock changed
// after the repair's push (a concurrent write) keeps the key, and so does the
// repairer; the next repair spreads the new write to every replica again.
func TestRepairPurgeRefusedByChangedReplica(t *testing.T) {
	c := newCluster(t, []string{"a", "b", "c"}, nil)
	a := c.node("a").coord
	a.TombstoneGrace = time.Minute
	deleteKey(t, c, "k")
	c.advance(2 * time.Minute)
	tomb := c.clock("c", "k")
	again := mint(t, tomb, consistency.VV{}, "c", "again", ts(120_000), false)
	c.mu.Lock()
	c.beforePurge = func(node, key string) {
		if node == "c" && key == "k" {
			merge(t, c.node("c").clocks, "k", again, false) // a write lands on c
		}
	}
	c.mu.Unlock()
	st, err := a.Repair(testCtx(t), c, testPartition, c.replicas, false)
	if err != nil || st.Purged != 0 {
		t.Fatalf("repair: %+v %v, want nothing purged on a", st, err)
	}
	if _, found, _ := c.node("a").clocks.Read(testPartition, "k"); !found {
		t.Fatal("a purged its tombstone although c refused")
	}
	if got := c.values("c", "k"); !slices.Equal(got, []string{"again"}) {
		t.Fatalf("c: %v", got)
	}
	c.mu.Lock()
	c.beforePurge = nil
	c.mu.Unlock()
	if _, err := a.Repair(testCtx(t), c, testPartition, c.replicas, false); err != nil {
		t.Fatal(err)
	}
	for _, id := range c.replicas {
		if got := c.values(id, "k"); !slices.Equal(got, []string{"again"}) {
			t.Errorf("%s after the second repair: %v", id, got)
		}
	}
	checkSame(t, c)
}

// BenchmarkRepairConverged is one anti-entropy round of a partition whose
// three replicas already agree: the round every partition runs every
// interval, so its scans are most of an idle ap node's repair cost.
func BenchmarkRepairConverged(b *testing.B) {
	const keys = 12500 // 100k keys over 8 partitions
	c := newCluster(b, []string{"a", "b", "c"}, nil)
	ctx := context.Background()
	for i := range keys {
		if _, err := c.node("a").coord.Write(ctx, c.wr(fmt.Sprintf("k%05d", i), "v", consistency.All)); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		st, err := c.node("a").coord.Repair(ctx, c, testPartition, c.replicas, false)
		if err != nil || st != (RepairStats{}) {
			b.Fatalf("repair of converged replicas: %+v %v", st, err)
		}
	}
}
