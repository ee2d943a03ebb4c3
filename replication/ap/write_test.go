package ap

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/internal/kverrors"
)

func TestNeed(t *testing.T) {
	for _, tc := range []struct {
		level consistency.Level
		n     int
		want  int
	}{
		{consistency.One, 1, 1}, {consistency.One, 3, 1}, {consistency.One, 5, 1},
		{consistency.Quorum, 1, 1}, {consistency.Quorum, 2, 2}, {consistency.Quorum, 3, 2}, {consistency.Quorum, 4, 3}, {consistency.Quorum, 5, 3},
		{consistency.All, 1, 1}, {consistency.All, 3, 3}, {consistency.All, 5, 5},
		{consistency.Default, 3, 2}, // anything else is a quorum
	} {
		if got := Need(tc.level, tc.n); got != tc.want {
			t.Errorf("Need(%q, %d) = %d, want %d", tc.level, tc.n, got, tc.want)
		}
	}
}

func TestWriteRefusedOffTheReplicas(t *testing.T) {
	c := newCluster(t, []string{"a", "b", "c"}, []string{"d"})
	_, err := c.node("d").coord.Write(testCtx(t), c.wr("k", "v", consistency.One))
	if !errors.Is(err, kverrors.ErrInternal) {
		t.Fatalf("write coordinated by a non-replica: %v, want ErrInternal", err)
	}
	c.settle()
	for _, id := range []string{"a", "b", "c", "d"} {
		if v := c.values(id, "k"); len(v) != 0 {
			t.Errorf("%s stored %v", id, v)
		}
	}
	if len(c.storesTo("a")) != 0 {
		t.Error("a refused write was replicated")
	}
}

// With every replica up, a write is acknowledged by exactly as many replicas
// as its level needs, and reaches all of them in the background.
func TestWriteLevelsAllUp(t *testing.T) {
	c := newCluster(t, []string{"a", "b", "c"}, nil)
	a := c.node("a").coord
	ctx := testCtx(t)
	for _, tc := range []struct {
		level consistency.Level
		acks  int
	}{{consistency.One, 1}, {consistency.Quorum, 2}, {consistency.All, 3}} {
		key := "k-" + string(tc.level)
		res, err := a.Write(ctx, c.wr(key, "v", tc.level))
		if err != nil {
			t.Fatalf("%s: %v", tc.level, err)
		}
		if res.Need != tc.acks || len(res.Acked) != tc.acks || res.Acked[0] != "a" || len(res.Hinted) != 0 || res.Sloppy {
			t.Errorf("%s: result %+v, want %d acks starting with the coordinator", tc.level, res, tc.acks)
		}
		if len(slices.Compact(sorted(res.Acked))) != len(res.Acked) {
			t.Errorf("%s: duplicate acks %v", tc.level, res.Acked)
		}
		if live(res.Clock)[0] != "v" || res.HadLive {
			t.Errorf("%s: clock %v, HadLive %v", tc.level, res.Clock, res.HadLive)
		}
		c.settle()
		for _, id := range c.replicas {
			if got := c.clock(id, key); !got.Equal(res.Clock) {
				t.Errorf("%s: %s holds %v, want %v", tc.level, id, got, res.Clock)
			}
		}
	}
	// HadLive: whether the coordinator's copy had a value before this write.
	res, err := a.Write(ctx, c.wr("k-one", "v2", consistency.One))
	if err != nil || !res.HadLive {
		t.Fatalf("overwrite: HadLive %v, err %v", res.HadLive, err)
	}
}

// Too few replicas answer: ErrIndeterminate, never a definite failure, and the
// write is stored on the coordinator (it may spread).
func TestWriteTooFewReplicas(t *testing.T) {
	c := newCluster(t, []string{"a", "b", "c"}, nil)
	a := c.node("a").coord
	ctx := testCtx(t)

	c.set(modeDown, "c")
	for _, tc := range []struct {
		level consistency.Level
		acked []string
		ok    bool
	}{
		{consistency.One, []string{"a"}, true},
		{consistency.Quorum, []string{"a", "b"}, true},
		{consistency.All, []string{"a", "b"}, false},
	} {
		key := "c-down-" + string(tc.level)
		res, err := a.Write(ctx, c.wr(key, "v", tc.level))
		checkWriteOutcome(t, c, key, res, err, tc.ok)
		if tc.level != consistency.One && !slices.Equal(sorted(res.Acked), tc.acked) {
			t.Errorf("%s with c down: acked %v, want %v", tc.level, res.Acked, tc.acked)
		}
	}

	c.set(modeDown, "b", "c")
	for _, level := range []consistency.Level{consistency.One, consistency.Quorum, consistency.All} {
		key := "bc-down-" + string(level)
		res, err := a.Write(ctx, c.wr(key, "v", level))
		checkWriteOutcome(t, c, key, res, err, level == consistency.One)
		if !slices.Equal(res.Acked, []string{"a"}) {
			t.Errorf("%s with b, c down: acked %v", level, res.Acked)
		}
	}
}

// checkWriteOutcome: success or ErrIndeterminate as expected, never a definite
// failure, and in both cases stored on the coordinator.
func checkWriteOutcome(t *testing.T, c *tcluster, key string, res WriteResult, err error, wantOK bool) {
	t.Helper()
	switch {
	case wantOK && err != nil:
		t.Errorf("%s: %v, want success", key, err)
	case !wantOK && !errors.Is(err, kverrors.ErrIndeterminate):
		t.Errorf("%s: %v, want ErrIndeterminate", key, err)
	case errors.Is(err, kverrors.ErrUnavailable), errors.Is(err, kverrors.ErrInternal):
		t.Errorf("%s: definite failure %v after the local store succeeded", key, err)
	}
	if (err == nil) != (len(res.Acked) >= res.Need) {
		t.Errorf("%s: err %v with %d of %d acknowledgements", key, err, len(res.Acked), res.Need)
	}
	if len(res.Acked) == 0 || res.Acked[0] != c.replicas[0] {
		t.Errorf("%s: acked %v, want the coordinator first", key, res.Acked)
	}
	if v := c.values(c.replicas[0], key); len(v) == 0 {
		t.Errorf("%s: not stored on the coordinator (err %v)", key, err)
	}
}

// Every combination of replica failures (fast, hanging), levels and
// fallbacks: the outcome is success or ErrIndeterminate, never a definite
// failure, and the write is always on the coordinator.
func TestWriteNeverDefiniteAfterLocalStore(t *testing.T) {
	c := newCluster(t, []string{"a", "b", "c"}, []string{"d"})
	a := c.node("a").coord
	modes := []mode{modeUp, modeDown, modeHang}
	i := 0
	for bi, mb := range modes {
		for _, mc := range modes[bi:] {
			for _, level := range []consistency.Level{consistency.One, consistency.Quorum, consistency.All} {
				for _, fallbacks := range [][]string{nil, {"d"}} {
					i++
					c.set(mb, "b")
					c.set(mc, "c")
					key := fmt.Sprintf("k%d", i)
					w := c.wr(key, "v", level)
					w.Fallbacks = fallbacks
					ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
					start := time.Now()
					res, err := a.Write(ctx, w)
					cancel()
					name := fmt.Sprintf("b=%d c=%d %s fallbacks=%v", mb, mc, level, fallbacks)
					if el := time.Since(start); el > time.Second {
						t.Errorf("%s: write took %v with a 100ms deadline", name, el)
					}
					up := 1 // the coordinator
					for _, m := range []mode{mb, mc} {
						if m == modeUp {
							up++
						}
					}
					switch {
					case err == nil:
					case errors.Is(err, kverrors.ErrIndeterminate) && !errors.Is(err, kverrors.ErrUnavailable):
					default:
						t.Errorf("%s: definite failure %v after the local store", name, err)
					}
					// Enough healthy replicas: success; not enough even with a hint: not.
					if up >= res.Need && err != nil {
						t.Errorf("%s: %d replicas up, need %d, got %v", name, up, res.Need, err)
					}
					hintable := up + len(fallbacks)
					if level == consistency.All {
						hintable = up
					}
					if hintable < res.Need && err == nil {
						t.Errorf("%s: succeeded with at most %d acknowledgements of %d needed: %+v", name, hintable, res.Need, res)
					}
					if !slices.Contains(c.values("a", key), "v") {
						t.Errorf("%s: not stored on the coordinator", name)
					}
				}
			}
		}
	}
}

// A write whose local store fails is a definite failure, replicated nowhere.
func TestWriteLocalStoreFailureIsDefinite(t *testing.T) {
	c := newCluster(t, []string{"a", "b", "c"}, nil)
	if err := c.node("a").st.Close(); err != nil {
		t.Fatal(err)
	}
	res, err := c.node("a").coord.Write(testCtx(t), c.wr("k", "v", consistency.One))
	if err == nil || errors.Is(err, kverrors.ErrIndeterminate) {
		t.Fatalf("write with the coordinator's store closed: %v", err)
	}
	if len(res.Acked) != 0 {
		t.Errorf("acked %v", res.Acked)
	}
	c.settle()
	if n := len(c.storesTo("b")) + len(c.storesTo("c")); n != 0 {
		t.Errorf("a write that failed locally was sent to %d replicas", n)
	}
}

// The coordinator waits only for the acknowledgements its level needs: a slow
// replica does not delay a quorum write, and still receives it.
func TestWriteDoesNotWaitForSlowReplica(t *testing.T) {
	c := newCluster(t, []string{"a", "b", "c"}, nil)
	c.setDelay("b", 800*time.Millisecond)
	start := time.Now()
	res, err := c.node("a").coord.Write(testCtx(t), c.wr("k", "v", consistency.Quorum))
	if el := time.Since(start); err != nil || el > 600*time.Millisecond {
		t.Fatalf("quorum write with one slow replica: %v after %v", err, el)
	}
	if !slices.Equal(sorted(res.Acked), []string{"a", "c"}) {
		t.Errorf("acked %v, want [a c]", res.Acked)
	}
	c.settle() // waits for the slow store
	if v := c.values("b", "k"); !slices.Equal(v, []string{"v"}) {
		t.Errorf("slow replica holds %v after the background store", v)
	}
}

// A hanging replica costs a write no more than the caller's deadline.
func TestWriteHangingReplicaBoundedByContext(t *testing.T) {
	c := newCluster(t, []string{"a", "b", "c"}, nil)
	c.set(modeHang, "c")
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	start := time.Now()
	res, err := c.node("a").coord.Write(ctx, c.wr("k", "v", consistency.All))
	el := time.Since(start)
	if !errors.Is(err, kverrors.ErrIndeterminate) {
		t.Fatalf("level all with a hanging replica: %v", err)
	}
	if el > time.Second {
		t.Errorf("write took %v with a 150ms deadline", el)
	}
	if !slices.Equal(sorted(res.Acked), []string{"a", "b"}) {
		t.Errorf("acked %v, want [a b]", res.Acked)
	}
	// A cancelled context: still stored locally, and indeterminate, not failed.
	ctx2, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if _, err := c.node("a").coord.Write(ctx2, c.wr("k2", "v", consistency.All)); !errors.Is(err, kverrors.ErrIndeterminate) {
		t.Errorf("write with a cancelled context: %v", err)
	}
	if v := c.values("a", "k2"); len(v) != 1 {
		t.Errorf("k2 on the coordinator: %v", v)
	}
}

// A write with the context of what it read replaces it; a blind write becomes
// a sibling.
func TestWriteContextReplacesSiblings(t *testing.T) {
	c := newCluster(t, []string{"a", "b", "c"}, nil)
	a := c.node("a").coord
	ctx := testCtx(t)
	r1, err := a.Write(ctx, c.wr("k", "v1", consistency.All))
	if err != nil {
		t.Fatal(err)
	}
	r2, err := a.Write(ctx, c.wr("k", "v2", consistency.All)) // blind
	if err != nil {
		t.Fatal(err)
	}
	if got := live(r2.Clock); !slices.Equal(got, []string{"v1", "v2"}) {
		t.Fatalf("blind write over v1: %v, want siblings", got)
	}
	w := c.wr("k", "v3", consistency.All)
	w.Context = r2.Clock.Context()
	r3, err := a.Write(ctx, w)
	if err != nil {
		t.Fatal(err)
	}
	if got := live(r3.Clock); !slices.Equal(got, []string{"v3"}) {
		t.Fatalf("write with the context: %v, want [v3]", got)
	}
	if !r3.Clock.Descends(r1.Clock) || !r3.Clock.Descends(r2.Clock) {
		t.Error("the later clock does not descend the earlier ones")
	}
	// A delete with the context leaves only a tombstone.
	d := c.wr("k", "", consistency.All)
	d.Context, d.Value = r3.Clock.Context(), consistency.Value{Tombstone: true}
	r4, err := a.Write(ctx, d)
	if err != nil || !r4.HadLive {
		t.Fatalf("delete: HadLive %v, %v", r4.HadLive, err)
	}
	if v := Resolve(r4.Clock, false); v.Found || !v.Deleted || r4.Clock.Len() != 1 {
		t.Errorf("after delete: %+v", v)
	}
	c.settle()
	for _, id := range c.replicas {
		if !c.clock(id, "k").Equal(r4.Clock) {
			t.Errorf("%s: %v", id, c.clock(id, "k"))
		}
	}
}
