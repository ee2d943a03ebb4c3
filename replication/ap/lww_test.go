package ap

import (
	"slices"
	"testing"
	"time"

	"github.com/capkv/capkv/consistency"
)

// Under lww a merge keeps only the newest sibling by HLC (ties: the greater
// dot), in any merge order, and the context keeps the losers' dots so that
// a replica still holding them drops them.
func TestLWWMerge(t *testing.T) {
	older := mint(t, consistency.DVV{}, consistency.VV{}, "b", "older", ts(1), false)
	newer := mint(t, consistency.DVV{}, consistency.VV{}, "a", "newer", ts(2), false)
	var stored []string
	for _, order := range [][]consistency.DVV{{older, newer}, {newer, older}} {
		s := newClockStore(t)
		var got consistency.DVV
		for _, d := range order {
			got = merge(t, s, "k", d, true)
		}
		if got.Len() != 1 || !slices.Equal(live(got), []string{"newer"}) || got.Context().Get("a") != 1 || got.Context().Get("b") != 1 {
			t.Fatalf("lww merge: %v", got)
		}
		// A replay of the loser is dropped: its dot is in the context.
		if again := merge(t, s, "k", older, true); !again.Equal(got) {
			t.Fatalf("replayed loser: %v", again)
		}
		// Even without lww, the context keeps the loser out.
		if again := merge(t, s, "k", older, false); !again.Equal(got) {
			t.Fatalf("replayed loser (merge without lww): %v", again)
		}
		stored = append(stored, dumpStore(t, s, testPartition)["k"])
	}
	if stored[0] != stored[1] {
		t.Error("lww merges in different orders stored different clocks")
	}

	// Without lww both are kept.
	s := newClockStore(t)
	merge(t, s, "k", older, false)
	if got := merge(t, s, "k", newer, false); got.Len() != 2 {
		t.Fatalf("merge without lww: %v", got)
	}

	// A tie on the timestamp goes to the greater dot; a newer tombstone wins.
	s = newClockStore(t)
	tieA := mint(t, consistency.DVV{}, consistency.VV{}, "a", "from-a", ts(5), false)
	tieB := mint(t, consistency.DVV{}, consistency.VV{}, "b", "from-b", ts(5), false)
	merge(t, s, "k", tieB, true)
	if got := merge(t, s, "k", tieA, true); !slices.Equal(live(got), []string{"from-b"}) {
		t.Fatalf("tie: %v", got)
	}
	tomb := mint(t, consistency.DVV{}, consistency.VV{}, "c", "", ts(6), true)
	got := merge(t, s, "k", tomb, true)
	if r := Resolve(got, true); r.Found || !r.Deleted || got.Len() != 1 {
		t.Fatalf("newer tombstone under lww: %v %+v", got, r)
	}
	// An older write arriving after the delete stays deleted.
	late := mint(t, consistency.DVV{}, consistency.VV{}, "d", "late", ts(4), false)
	if got := merge(t, s, "k", late, true); Resolve(got, true).Found {
		t.Fatalf("older write resurrected an lww delete: %v", got)
	}
}

// Coordinated lww writes and reads: the read keeps the newest by HLC and the
// repair leaves every replica with that one sibling.
func TestLWWReadAndRepair(t *testing.T) {
	c := newCluster(t, []string{"a", "b", "c"}, nil)
	writeAlone(t, c, "a", "k", "first", true)
	c.advance(time.Second)
	writeAlone(t, c, "b", "k", "second", true)
	r := c.rd("k", consistency.All)
	r.LWW = true
	res, err := c.node("c").coord.Read(testCtx(t), r)
	if err != nil {
		t.Fatal(err)
	}
	if res.Clock.Len() != 1 || !slices.Equal(live(res.Clock), []string{"second"}) {
		t.Fatalf("lww read: %v", res.Clock)
	}
	if !slices.Equal(res.Repaired, []string{"a", "b", "c"}) {
		t.Fatalf("repaired %v", res.Repaired)
	}
	for _, id := range c.replicas {
		waitFor(t, 5*time.Second, "lww repair of "+id, func() bool { return c.clock(id, "k").Equal(res.Clock) })
	}
	// Level one on a replica also applies lww to what it holds, even a clock
	// with siblings (written without lww, e.g. by anti-entropy of an older
	// configuration).
	two := mint(t, mint(t, consistency.DVV{}, consistency.VV{}, "x", "x", ts(1), false), consistency.VV{}, "y", "y", ts(2), false)
	merge(t, c.node("a").clocks, "sib", two, false)
	r1 := c.rd("sib", consistency.One)
	r1.LWW = true
	res, err = c.node("a").coord.Read(testCtx(t), r1)
	if err != nil || !slices.Equal(live(res.Clock), []string{"y"}) || res.Clock.Len() != 1 {
		t.Fatalf("lww level one: %v %v", res.Clock, err)
	}
}

// A coordinator stamps a write later than every sibling it holds, whatever
// its wall clock says: last-writer-wins never prefers a write it had already
// seen.
func TestLWWWriteIsLaterThanWhatItSaw(t *testing.T) {
	c := newCluster(t, []string{"a", "b", "c"}, nil)
	// b holds a value stamped 10 s ahead of its wall clock, received without
	// touching its HLC (as anti-entropy does).
	ahead := mint(t, consistency.DVV{}, consistency.VV{}, "a", "old", ts(10_000), false)
	merge(t, c.node("b").clocks, "k", ahead, true)
	if now := c.node("b").hlc.Now(); now >= ts(10_000) {
		t.Fatalf("setup: b's clock is already at %v", now)
	}
	w := c.wr("k", "new", consistency.All)
	w.LWW = true
	res, err := c.node("b").coord.Write(testCtx(t), w)
	if err != nil {
		t.Fatal(err)
	}
	if res.Clock.Len() != 1 || !slices.Equal(live(res.Clock), []string{"new"}) {
		t.Fatalf("blind lww write after a value from the future: %v", res.Clock)
	}
	if s := res.Clock.Values()[0]; s.Timestamp <= ts(10_000) {
		t.Fatalf("write stamped %v, not after %v", s.Timestamp, ts(10_000))
	}
	c.settle()
	for _, id := range c.replicas {
		if got := c.values(id, "k"); !slices.Equal(got, []string{"new"}) {
			t.Errorf("%s: %v", id, got)
		}
	}
}

// Without an HLC the coordinator keeps the caller's timestamp.
func TestWriteWithoutClockKeepsTimestamp(t *testing.T) {
	c := newCluster(t, []string{"a"}, nil)
	a := c.node("a").coord
	a.Clock = nil
	w := c.wr("k", "v", consistency.One)
	w.Value.Timestamp = 42
	res, err := a.Write(testCtx(t), w)
	if err != nil || res.Clock.Values()[0].Timestamp != 42 {
		t.Fatalf("%v %v", res.Clock, err)
	}
	// And with one, it stamps.
	a.Clock = c.node("a").hlc
	res, err = a.Write(testCtx(t), w)
	if err != nil || res.Clock.Len() != 2 {
		t.Fatalf("%v %v", res.Clock, err)
	}
	for _, s := range res.Clock.Values() {
		if s.Dot.Counter == 2 && s.Timestamp <= 42 {
			t.Fatalf("HLC stamp %v", s.Timestamp)
		}
	}
}
