package ap

import (
	"errors"
	"strings"
	"testing"

	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/internal/kverrors"
)

// sessionContext is what a client that wrote with ctx knows afterwards:
// ctx plus the write's own dot (as client.Client derives it).
func sessionContext(t *testing.T, ctx consistency.VV, d consistency.Dot) consistency.VV {
	t.Helper()
	one, err := consistency.NewVV(map[string]uint64{d.Node: d.Counter})
	if err != nil {
		t.Fatal(err)
	}
	return ctx.Merge(one)
}

// A write names its own dot: with the context it was sent with, that is a
// context under which the writer's next write replaces it (one value, not
// two), while a write it never saw stays a sibling.
func TestWriteDotIsTheSessionContext(t *testing.T) {
	c := newCluster(t, []string{"a", "b", "c"}, nil)
	a := c.node("a").coord
	ctx := testCtx(t)
	var session consistency.VV
	for i, v := range []string{"one", "two", "three"} {
		w := c.wr("k", v, consistency.Quorum)
		w.Context = session
		res, err := a.Write(ctx, w)
		if err != nil {
			t.Fatal(err)
		}
		if res.Dot.Node != "a" || !res.Clock.Context().Covers(res.Dot) {
			t.Fatalf("write %d: dot %v not minted by the coordinator into %v", i, res.Dot, res.Clock)
		}
		if got := live(res.Clock); len(got) != 1 || got[0] != v {
			t.Fatalf("write %d with the session context: live %v, want [%s]", i, got, v)
		}
		session = sessionContext(t, session, res.Dot)
	}
	// Another client's blind write through the same coordinator: the
	// session context must not cover it.
	other, err := a.Write(ctx, c.wr("k", "other", consistency.Quorum))
	if err != nil {
		t.Fatal(err)
	}
	if session.Covers(other.Dot) {
		t.Fatalf("session context %v covers a write it never saw (%v)", session, other.Dot)
	}
	w := c.wr("k", "four", consistency.Quorum)
	w.Context = session
	res, err := a.Write(ctx, w)
	if err != nil {
		t.Fatal(err)
	}
	if got := sorted(live(res.Clock)); len(got) != 2 || got[0] != "four" || got[1] != "other" {
		t.Fatalf("live %v, want the concurrent write kept beside the session's: [four other]", got)
	}
}

// A keyspace's sibling cap refuses the write that would grow a key past
// it, stores nothing, names the key and the cap; a write that names the
// siblings' context still resolves them.
func TestSiblingCap(t *testing.T) {
	c := newCluster(t, []string{"a", "b", "c"}, nil)
	a := c.node("a").coord
	ctx := testCtx(t)
	blind := func(v string) (WriteResult, error) {
		w := c.wr("k", v, consistency.Quorum)
		w.MaxSiblings = 3
		return a.Write(ctx, w)
	}
	for _, v := range []string{"v1", "v2", "v3"} {
		if _, err := blind(v); err != nil {
			t.Fatalf("blind write %s under the cap: %v", v, err)
		}
	}
	before := c.clock("a", "k")
	_, err := blind("v4")
	if !errors.Is(err, kverrors.ErrConflict) {
		t.Fatalf("write past the cap: %v, want ErrConflict", err)
	}
	for _, want := range []string{`key "k"`, "4 concurrent values (siblings)", "cap 3", "context"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	c.settle()
	if got := c.clock("a", "k"); !got.Equal(before) {
		t.Errorf("a refused write changed the clock: %v, was %v", got, before)
	}
	if n := len(c.storesTo("b")); n != 3 {
		t.Errorf("%d stores to b, want 3 (the refused write is not replicated)", n)
	}
	// Resolving is always allowed.
	w := c.wr("k", "merged", consistency.Quorum)
	w.MaxSiblings, w.Context = 3, before.Context()
	res, err := a.Write(ctx, w)
	if err != nil {
		t.Fatalf("write with the siblings' context: %v", err)
	}
	if got := live(res.Clock); len(got) != 1 || got[0] != "merged" {
		t.Errorf("after the resolving write: %v, want [merged]", got)
	}
	// LWW keyspaces keep one value: no cap applies.
	lw := c.wr("l", "x", consistency.Quorum)
	lw.MaxSiblings, lw.LWW = 1, true
	for range 3 {
		if _, err := a.Write(ctx, lw); err != nil {
			t.Fatalf("lww write: %v", err)
		}
	}
}

// A value that fits alone but not beside its siblings is refused with an
// error that says the siblings are why.
func TestTooLargeNamesSiblings(t *testing.T) {
	c := newCluster(t, []string{"a", "b", "c"}, nil)
	a := c.node("a").coord
	ctx := testCtx(t)
	big := strings.Repeat("x", (64<<10)*2/3) // openStore: MaxValueSize 64 KiB
	if _, err := a.Write(ctx, c.wr("k", big, consistency.Quorum)); err != nil {
		t.Fatalf("first value: %v", err)
	}
	_, err := a.Write(ctx, c.wr("k", big, consistency.Quorum))
	if !errors.Is(err, kverrors.ErrTooLarge) || !strings.Contains(err.Error(), "2 concurrent values (siblings)") {
		t.Fatalf("second blind value: %v, want ErrTooLarge naming the 2 siblings", err)
	}
}
