package ap

import (
	"errors"
	"fmt"
	"maps"
	"sync"
	"testing"

	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/internal/kverrors"
)

// fill writes n keys through a's coordinator at level all, with a
// tombstone every 7th key and two concurrent siblings every 5th.
func fill(t *testing.T, c *tcluster, coord string, n int) {
	t.Helper()
	ctx := testCtx(t)
	a := c.node(coord).coord
	for i := range n {
		key := fmt.Sprintf("k%04d", i)
		res, err := a.Write(ctx, c.wr(key, "v1", consistency.All))
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case i%7 == 0:
			w := c.wr(key, "", consistency.All)
			w.Context, w.Value = res.Clock.Context(), consistency.Value{Tombstone: true}
			if _, err := a.Write(ctx, w); err != nil {
				t.Fatal(err)
			}
		case i%5 == 0: // blind: a sibling of v1
			if _, err := a.Write(ctx, c.wr(key, "v2", consistency.All)); err != nil {
				t.Fatal(err)
			}
		}
	}
	c.settle()
}

// A new replica that receives the stream holds exactly what the old one
// holds, siblings and tombstones included, and a second stream (a retry
// after an interruption) changes nothing.
func TestStreamCopiesThePartition(t *testing.T) {
	c := newCluster(t, []string{"a", "b"}, []string{"new"})
	fill(t, c, "a", 600) // more than two pages
	var pages []StreamStats
	st, err := StreamPartition(testCtx(t), c.node("a").clocks, c, testPartition, "new", false, func(s StreamStats) { pages = append(pages, s) })
	if err != nil {
		t.Fatal(err)
	}
	want := c.dump("a")
	if st.Keys != len(want) || st.Bytes == 0 || len(pages) != 3 {
		t.Fatalf("stats %+v in %d pages, want %d keys in 3", st, len(pages), len(want))
	}
	if got := c.dump("new"); !maps.Equal(got, want) {
		t.Fatalf("new replica holds %d keys, old %d; they differ", len(got), len(want))
	}
	if v := c.values("new", "k0005"); len(v) != 2 {
		t.Fatalf("k0005 on the new replica: %v, want both siblings", v)
	}
	if d := Resolve(c.clock("new", "k0007"), false); d.Found || !d.Deleted {
		t.Fatalf("k0007 on the new replica: %+v, want the tombstone", d)
	}
	if _, err := StreamPartition(testCtx(t), c.node("a").clocks, c, testPartition, "new", false, nil); err != nil {
		t.Fatal(err)
	}
	if got := c.dump("new"); !maps.Equal(got, want) {
		t.Fatal("a repeated stream changed the new replica")
	}
}

// Writes that reach the new replica while the stream runs (coordinators
// write to old and new owners during a move) are merged, not overwritten:
// at the end the new replica has every acknowledged write.
func TestStreamDuringWrites(t *testing.T) {
	c := newCluster(t, []string{"a", "new"}, nil)
	fill(t, c, "a", 300)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		ctx := testCtx(t)
		for i := range 300 {
			if _, err := c.node("a").coord.Write(ctx, c.wr(fmt.Sprintf("k%04d", i), "during", consistency.All)); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	if _, err := StreamPartition(testCtx(t), c.node("a").clocks, c, testPartition, "new", false, nil); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	c.settle()
	if got, want := c.dump("new"), c.dump("a"); !maps.Equal(got, want) {
		t.Fatalf("after the stream and the writes the replicas differ (%d vs %d keys)", len(got), len(want))
	}
	for i := range 300 {
		found := false
		for _, v := range c.values("new", fmt.Sprintf("k%04d", i)) {
			found = found || v == "during"
		}
		if !found {
			t.Fatalf("k%04d lost the write made during the stream", i)
		}
	}
}

// A stream to a node that fails stops at once with an error that says
// where it stopped; nothing is claimed sent that was not.
func TestStreamStopsAtAFailedStore(t *testing.T) {
	c := newCluster(t, []string{"a", "b"}, []string{"new"})
	fill(t, c, "a", 50)
	c.set(modeDown, "new")
	st, err := StreamPartition(testCtx(t), c.node("a").clocks, c, testPartition, "new", false, nil)
	if !errors.Is(err, kverrors.ErrUnavailable) || st.Keys != 0 {
		t.Fatalf("stream to a down node: %+v, %v; want unavailable, 0 keys", st, err)
	}
	t.Logf("stream to a down node: %v", err)
}
