package ap

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/internal/kverrors"
)

// writeAlone writes key through coordinator id while every other node is
// down, so that no other replica sees it, and waits for the failed stores.
func writeAlone(t *testing.T, c *tcluster, id, key, value string, lww bool) WriteResult {
	t.Helper()
	var others []string
	for n := range c.nodes {
		if n != id {
			others = append(others, n)
		}
	}
	c.set(modeDown, others...)
	w := c.wr(key, value, consistency.One)
	w.LWW = lww
	res, err := c.node(id).coord.Write(testCtx(t), w)
	if err != nil {
		t.Fatalf("write %s=%s on %s: %v", key, value, id, err)
	}
	c.settle()
	c.set(modeUp, others...)
	return res
}

// Concurrent writes through two coordinators become siblings; a read merges
// them, repairs every replica that was behind (in the background), and a
// write with the read's context resolves them.
func TestReadMergesSiblingsAndRepairs(t *testing.T) {
	c := newCluster(t, []string{"a", "b", "c"}, nil)
	writeAlone(t, c, "a", "k", "from-a", false)
	writeAlone(t, c, "b", "k", "from-b", false)
	if got := c.values("c", "k"); len(got) != 0 {
		t.Fatalf("c has %v", got)
	}
	ctx := testCtx(t)
	res, err := c.node("a").coord.Read(ctx, c.rd("k", consistency.All))
	if err != nil {
		t.Fatal(err)
	}
	if got := live(res.Clock); !slices.Equal(got, []string{"from-a", "from-b"}) {
		t.Fatalf("read all: %v, want both siblings", got)
	}
	if !slices.Equal(res.Acked, []string{"a", "b", "c"}) || !slices.Equal(res.Repaired, []string{"a", "b", "c"}) || res.Need != 3 {
		t.Fatalf("read result %+v", res)
	}
	v := Resolve(res.Clock, false)
	if !v.Found || v.Deleted || len(v.Live) != 2 || !v.Context.Covers(v.Live[0].Dot) || !v.Context.Covers(v.Live[1].Dot) {
		t.Fatalf("resolved %+v", v)
	}
	for _, id := range c.replicas {
		waitFor(t, 5*time.Second, "read repair of "+id, func() bool { return c.clock(id, "k").Equal(res.Clock) })
	}
	// Every replica now agrees: nothing to repair.
	res2, err := c.node("b").coord.Read(ctx, c.rd("k", consistency.All))
	if err != nil || len(res2.Repaired) != 0 || !res2.Clock.Equal(res.Clock) {
		t.Fatalf("second read: %+v %v", res2, err)
	}
	// A write with the read's context replaces both siblings.
	w := c.wr("k", "merged", consistency.All)
	w.Context = v.Context
	wres, err := c.node("c").coord.Write(ctx, w)
	if err != nil || !slices.Equal(live(wres.Clock), []string{"merged"}) {
		t.Fatalf("resolving write: %v %v", wres.Clock, err)
	}
	c.settle()
	for _, id := range c.replicas {
		if got := c.values(id, "k"); !slices.Equal(got, []string{"merged"}) {
			t.Errorf("%s: %v", id, got)
		}
	}
}

// A replica that was behind gets the merged clock; the coordinator repairs
// itself locally and the others through Store.
func TestReadRepairLocalAndRemote(t *testing.T) {
	c := newCluster(t, []string{"a", "b", "c"}, nil)
	wres := writeAlone(t, c, "a", "k", "v", false)
	storesBefore := len(c.storesTo("c"))
	res, err := c.node("b").coord.Read(testCtx(t), c.rd("k", consistency.All))
	if err != nil || !res.Clock.Equal(wres.Clock) {
		t.Fatalf("read: %v %v", res.Clock, err)
	}
	if !slices.Equal(res.Repaired, []string{"b", "c"}) {
		t.Fatalf("repaired %v, want [b c]", res.Repaired)
	}
	for _, id := range []string{"b", "c"} {
		waitFor(t, 5*time.Second, "read repair of "+id, func() bool { return c.clock(id, "k").Equal(wres.Clock) })
	}
	c.settle()
	if got := len(c.storesTo("c")) - storesBefore; got != 1 {
		t.Errorf("c got %d repair stores, want 1", got)
	}
	if got := len(c.storesTo("b")); got != 0 {
		t.Errorf("the coordinator repaired itself through %d Store calls, want a local merge", got)
	}
	if got := len(c.storesTo("a")); got != 0 {
		t.Errorf("a, which was up to date, got %d stores", got)
	}
}

// Level one on a replica answers from its own copy without asking anyone.
func TestReadLevelOneIsLocal(t *testing.T) {
	c := newCluster(t, []string{"a", "b", "c"}, []string{"x"})
	writeAlone(t, c, "a", "k", "v", false)
	fetches := func() int { return c.callCount("fetch", "a") + c.callCount("fetch", "b") + c.callCount("fetch", "c") }
	before := fetches()
	ctx := testCtx(t)
	res, err := c.node("a").coord.Read(ctx, c.rd("k", consistency.One))
	if err != nil || !slices.Equal(live(res.Clock), []string{"v"}) || !slices.Equal(res.Acked, []string{"a"}) || len(res.Repaired) != 0 {
		t.Fatalf("level one on a: %+v %v", res, err)
	}
	res, err = c.node("b").coord.Read(ctx, c.rd("k", consistency.One))
	if err != nil || res.Clock.Len() != 0 || !slices.Equal(res.Acked, []string{"b"}) {
		t.Fatalf("level one on b (which missed the write): %+v %v", res, err)
	}
	if n := fetches(); n != before {
		t.Errorf("level one on a replica fetched %d times", n-before)
	}
	c.settle()
	if got := c.values("b", "k"); len(got) != 0 {
		t.Errorf("level one read repaired b: %v", got)
	}
	// Not a replica: it asks the replicas, whoever answers first.
	c.set(modeDown, "b", "c")
	res, err = c.node("x").coord.Read(ctx, c.rd("k", consistency.One))
	if err != nil || !slices.Equal(live(res.Clock), []string{"v"}) || !slices.Equal(res.Acked, []string{"a"}) {
		t.Fatalf("level one through a non-replica: %+v %v", res, err)
	}
	// An absent key: found nowhere, no error, nothing to repair.
	c.set(modeUp, "b", "c")
	res, err = c.node("x").coord.Read(ctx, c.rd("nothing", consistency.All))
	if err != nil || res.Clock.Len() != 0 || len(res.Repaired) != 0 || Resolve(res.Clock, false).Found {
		t.Fatalf("absent key: %+v %v", res, err)
	}
}

// Too few answers: ErrUnavailable (a read changes nothing: a definite
// failure), also when the missing replicas hang, within the caller's deadline.
func TestReadUnavailable(t *testing.T) {
	c := newCluster(t, []string{"a", "b", "c"}, []string{"x"})
	writeAlone(t, c, "a", "k", "v", false)
	ctx := testCtx(t)

	c.set(modeDown, "b", "c")
	if _, err := c.node("a").coord.Read(ctx, c.rd("k", consistency.Quorum)); !errors.Is(err, kverrors.ErrUnavailable) {
		t.Fatalf("quorum with 2 of 3 down: %v", err)
	}
	if _, err := c.node("a").coord.Read(ctx, c.rd("k", consistency.One)); err != nil {
		t.Fatalf("level one on a replica with the others down: %v", err)
	}
	c.set(modeDown, "a")
	if _, err := c.node("x").coord.Read(ctx, c.rd("k", consistency.One)); !errors.Is(err, kverrors.ErrUnavailable) {
		t.Fatalf("level one with every replica down: %v", err)
	}
	c.set(modeUp, "a", "b")
	res, err := c.node("a").coord.Read(ctx, c.rd("k", consistency.All))
	if !errors.Is(err, kverrors.ErrUnavailable) || errors.Is(err, kverrors.ErrIndeterminate) {
		t.Fatalf("all with c down: %v", err)
	}
	if len(res.Repaired) != 0 {
		t.Errorf("a failed read repaired %v", res.Repaired)
	}
	c.settle()
	if got := c.values("b", "k"); len(got) != 0 {
		t.Errorf("a failed read repaired b: %v", got)
	}

	// A hanging replica: quorum still answers with the two that do...
	c.set(modeHang, "c")
	start := time.Now()
	if _, err := c.node("a").coord.Read(ctx, c.rd("k", consistency.Quorum)); err != nil {
		t.Fatalf("quorum with one replica hanging: %v", err)
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("quorum read waited %v for a hanging replica", el)
	}
	// ...and with two hanging it fails when the caller's deadline passes.
	c.set(modeHang, "b")
	hctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, err = c.node("a").coord.Read(hctx, c.rd("k", consistency.Quorum))
	if !errors.Is(err, kverrors.ErrUnavailable) {
		t.Fatalf("quorum with two hanging: %v", err)
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("read took %v with a 100ms deadline", el)
	}
}

// A read's merge also carries deletes: a tombstone that superseded a value on
// one replica wins over the value another still holds.
func TestReadMergesDeletes(t *testing.T) {
	c := newCluster(t, []string{"a", "b", "c"}, nil)
	ctx := testCtx(t)
	w, err := c.node("a").coord.Write(ctx, c.wr("k", "v", consistency.All))
	if err != nil {
		t.Fatal(err)
	}
	c.set(modeDown, "b", "c")
	del := c.wr("k", "", consistency.One)
	del.Context, del.Value = w.Clock.Context(), consistency.Value{Tombstone: true}
	if _, err := c.node("a").coord.Write(ctx, del); err != nil {
		t.Fatal(err)
	}
	c.settle()
	c.set(modeUp, "b", "c")
	if got := c.values("b", "k"); !slices.Equal(got, []string{"v"}) {
		t.Fatalf("b: %v", got)
	}
	res, err := c.node("b").coord.Read(ctx, c.rd("k", consistency.All))
	if err != nil {
		t.Fatal(err)
	}
	if v := Resolve(res.Clock, false); v.Found || !v.Deleted {
		t.Fatalf("read after delete: %+v", v)
	}
	for _, id := range []string{"b", "c"} {
		waitFor(t, 5*time.Second, "repair of the delete on "+id, func() bool { return c.clock(id, "k").Equal(res.Clock) })
	}
}
