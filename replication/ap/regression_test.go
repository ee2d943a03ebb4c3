package ap

// Regression tests for bugs the package's unit tests found (2026-11-26);
// each comment says what went wrong and how it was fixed.

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/capkv/capkv/consistency"
)

// hints.go HintStore.Delivered reads the hint, compares it with the listed
// clock and removes it in separate steps, without the key's stripe lock that
// Add (ClockStore.Merge) takes: an Add that commits between the read and the
// Remove is deleted with the old hint, so its write never reaches the target
// by handoff (the doc promises hints are "kept durably until handed over",
// and Delivered's comment that a changed hint "is kept for the next round").
// Fixed: Delivered is a compare-and-delete under the stripe lock
// (ClockStore.Purge; encodings are canonical, so byte equality is clock
// equality).
func TestDeliveredKeepsANewerHint(t *testing.T) {
	st := openStore(t)
	t.Cleanup(func() { st.Close() })
	h := NewHintStore(st)
	// The window is narrow but each iteration hits it with a few percent
	// chance: 300 iterations reproduce it all but always.
	deadline := time.Now().Add(5 * time.Second)
	for i := 0; i < 300 && time.Now().Before(deadline); i++ {
		key := fmt.Sprintf("k%d", i)
		older := mint(t, consistency.DVV{}, consistency.VV{}, "a", "v1", ts(1), false)
		newer := mint(t, older, older.Context(), "a", "v2", ts(2), false)
		if err := h.Add("b", testPartition, key, older, false); err != nil {
			t.Fatal(err)
		}
		listed := findHint(t, h, key)
		// A handoff delivered `listed`; meanwhile a newer write for the same
		// target arrives at this fallback.
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); _ = h.Add("b", testPartition, key, newer, false) }()
		go func() { defer wg.Done(); _ = h.Delivered(listed) }()
		wg.Wait()
		// Whatever the order, the newer write must still be pending: either
		// Delivered ran first (and Add then created the hint again) or it saw
		// the changed hint and kept it.
		got := findHint(t, h, key)
		if got.Key == "" || !got.Clock.Descends(newer) {
			t.Fatalf("iteration %d: the hint of a write that arrived during Delivered was removed; pending %v, want %v", i, got.Clock, newer)
		}
		if err := h.Delivered(got); err != nil {
			t.Fatal(err)
		}
	}
}

func findHint(t *testing.T, h *HintStore, key string) Hint {
	t.Helper()
	hs, err := h.Pending(0)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range hs {
		if x.Key == key {
			return x
		}
	}
	return Hint{}
}

// hints.go HintStore.Handoff lists only the first 1000 hints, in key order,
// which is target-major (hintKey = target NUL partition NUL key). When the
// first 1000 all belong to one unreachable target, every round skips them and
// stops: the hints of every target after it in key order are never handed
// over, however long the rounds go on, until that one node comes back (a
// node down for a while easily accumulates 1000 hints on a fallback).
// Fixed: Handoff pages through the hints (Scan's `after`), skipping the
// hints of a target that failed this round, within a bounded number of pages.
func TestHandoffNotStarvedByADownTarget(t *testing.T) {
	c := newCluster(t, []string{"a", "b", "c"}, []string{"d"})
	h := c.node("d").hints
	clock := mint(t, consistency.DVV{}, consistency.VV{}, "a", "v", ts(1), false)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < 1000; i += 8 {
				if err := h.Add("b", testPartition, fmt.Sprintf("k%04d", i), clock, false); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := h.Add("c", testPartition, "for-c", clock, false); err != nil {
		t.Fatal(err)
	}
	c.set(modeDown, "b")
	for round := range 3 {
		if _, err := c.handoff(testCtx(t), "d"); err != nil {
			t.Fatal(err)
		}
		if got := c.values("c", "for-c"); slices.Equal(got, []string{"v"}) {
			return // delivered
		}
		t.Logf("round %d: the hint for c (up) was not delivered", round)
	}
	t.Fatalf("3 handoff rounds with c up never delivered its hint: %d store calls to c, %d to b",
		c.callCount("store", "c"), c.callCount("store", "b"))
}

// antientropy.go Repair purges a tombstone from every replica, and with it
// the key's causal context. The next write coordinated for the key then
// mints its dots from zero again (Update on an empty clock: dot a:1), reusing
// dots the key had already issued -- what consistency/dvv.go forbids ("never
// from a clock that has forgotten dots it issued before", Riak's kv679). A
// client that read the key before the delete still holds a context covering
// the old dot a:1; writing with it after the purge silently replaces the new,
// never-seen value (a lost update). Without the purge the new write gets a:3
// and both stay as siblings. The grace does not bound this: it bounds the
// tombstone's age, not how long a client keeps a context. (A hint older than
// the grace is hit too: the old tombstone's clock {a:2} handed over after the
// purge deletes the new a:1 value on Sync, worse than the resurrection the
// package doc warns about.)
// Fixed: a coordinator mints every dot above its HLC (DVV.UpdateAbove), so
// a node's dot counters rise across all keys and a purge cannot bring an old
// dot back.
func TestPurgeDoesNotReuseDots(t *testing.T) {
	c := newCluster(t, []string{"a", "b", "c"}, nil)
	a := c.node("a").coord
	a.TombstoneGrace = time.Minute
	ctx := testCtx(t)
	w, err := a.Write(ctx, c.wr("k", "old", consistency.All))
	if err != nil {
		t.Fatal(err)
	}
	staleCtx := w.Clock.Context() // a client read "old": {a:1}
	del := c.wr("k", "", consistency.All)
	del.Context, del.Value = staleCtx, consistency.Value{Tombstone: true}
	if _, err := a.Write(ctx, del); err != nil {
		t.Fatal(err)
	}
	c.advance(2 * time.Minute)
	if st, err := a.Repair(ctx, c, testPartition, c.replicas, false); err != nil || st.Purged != 1 {
		t.Fatalf("setup: repair %+v %v", st, err)
	}
	// Someone writes the key again (blind: it is not there).
	nw, err := a.Write(ctx, c.wr("k", "new", consistency.All))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("dot of the write after the purge: %v (the deleted value had a:1)", nw.Clock.Values()[0].Dot)
	// The client that read "old" long ago writes with its context.
	sw := c.wr("k", "stale-client", consistency.All)
	sw.Context = staleCtx
	res, err := a.Write(ctx, sw)
	if err != nil {
		t.Fatal(err)
	}
	if got := live(res.Clock); !slices.Contains(got, "new") {
		t.Fatalf("a write with a context from before the delete replaced %q, which it never saw: live %v", "new", got)
	}
}
