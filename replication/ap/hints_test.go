package ap

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/internal/kverrors"
	"github.com/capkv/capkv/ring"
)

func pending(t *testing.T, h *HintStore) []Hint {
	t.Helper()
	hs, err := h.Pending(0)
	if err != nil {
		t.Fatal(err)
	}
	n, err := h.Count()
	if err != nil || n != len(hs) {
		t.Fatalf("Count = %d, %v; Pending lists %d", n, err, len(hs))
	}
	return hs
}

// A quorum write with the preference list's majority down goes to a fallback
// as a hint for a down replica and succeeds as a sloppy quorum; the fallback
// hands it over once the replica is back, then forgets it.
func TestSloppyQuorumHintAndHandoff(t *testing.T) {
	// Two replicas (quorum needs both); the first fallback is down too, so
	// the hint goes to the second one, for the replica that failed.
	c := newCluster(t, []string{"a", "b"}, []string{"d", "e"})
	c.set(modeDown, "b", "d")
	a := c.node("a").coord
	ctx := testCtx(t)

	res, err := a.Write(ctx, c.wr("k", "v1", consistency.Quorum))
	if err != nil {
		t.Fatalf("quorum write with a fallback alive: %v", err)
	}
	if !slices.Equal(res.Acked, []string{"a"}) || !slices.Equal(res.Hinted, []string{"e"}) || !res.Sloppy {
		t.Fatalf("result %+v: want acked [a], hinted [e], sloppy", res)
	}
	if got := c.storesTo("d"); len(got) != 0 {
		t.Errorf("a down fallback stored %v", got)
	}
	if c.callCount("store", "d") != 1 {
		t.Errorf("the down fallback was tried %d times, want 1", c.callCount("store", "d"))
	}
	hs := pending(t, c.node("e").hints)
	if len(hs) != 1 {
		t.Fatalf("hints on e: %v", hs)
	}
	if h := hs[0]; h.Target != "b" || h.Partition != testPartition || h.Key != "k" || !h.Clock.Equal(res.Clock) {
		t.Fatalf("hint %+v, want for b with the write's clock %v", h, res.Clock)
	}
	if n := len(pending(t, c.node("d").hints)); n != 0 {
		t.Errorf("d holds %d hints", n)
	}
	// A hint is not the replica's data: e does not serve it as its own.
	if v := c.values("e", "k"); len(v) != 0 {
		t.Errorf("fallback e stored the hint as replica data: %v", v)
	}

	// A second write to the key merges into the same hint.
	w := c.wr("k", "v2", consistency.Quorum)
	w.Context = res.Clock.Context()
	res2, err := a.Write(ctx, w)
	if err != nil || !res2.Sloppy {
		t.Fatalf("second write: %+v %v", res2, err)
	}
	hs = pending(t, c.node("e").hints)
	if len(hs) != 1 || !hs[0].Clock.Equal(res2.Clock) {
		t.Fatalf("hints after the second write: %v, want one with %v", hs, res2.Clock)
	}

	// Level all does not count hints: indeterminate, not sloppy.
	res3, err := a.Write(ctx, c.wr("k3", "v", consistency.All))
	if !errors.Is(err, kverrors.ErrIndeterminate) || res3.Sloppy || !slices.Equal(res3.Hinted, []string{"e"}) {
		t.Fatalf("level all with b down: %+v %v", res3, err)
	}

	// b still down: the handoff keeps the hints.
	if n, err := c.handoff(ctx, "e"); n != 0 || err != nil {
		t.Fatalf("handoff to a down target: %d %v", n, err)
	}
	if n := len(pending(t, c.node("e").hints)); n != 2 {
		t.Fatalf("%d hints after a failed handoff, want 2", n)
	}

	c.set(modeUp, "b")
	if n, err := c.handoff(ctx, "e"); n != 2 || err != nil {
		t.Fatalf("handoff: %d %v, want 2", n, err)
	}
	if n := len(pending(t, c.node("e").hints)); n != 0 {
		t.Fatalf("%d hints left after the handoff", n)
	}
	for _, key := range []string{"k", "k3"} {
		if got, want := c.clock("b", key), c.clock("a", key); !got.Equal(want) {
			t.Errorf("%s on b after handoff: %v, want %v", key, got, want)
		}
	}
	if n, err := c.handoff(ctx, "e"); n != 0 || err != nil {
		t.Errorf("second handoff: %d %v", n, err)
	}
}

// With three replicas and one down, level all stores a hint for exactly that
// replica; a quorum write does not need one.
func TestHintIsForTheFailedReplica(t *testing.T) {
	c := newCluster(t, []string{"a", "b", "c"}, []string{"d"})
	c.set(modeDown, "c")
	ctx := testCtx(t)
	res, err := c.node("a").coord.Write(ctx, c.wr("k", "v", consistency.All))
	if !errors.Is(err, kverrors.ErrIndeterminate) || res.Sloppy {
		t.Fatalf("all with c down: %v %+v", err, res)
	}
	if !slices.Equal(sorted(res.Acked), []string{"a", "b"}) || !slices.Equal(res.Hinted, []string{"d"}) {
		t.Fatalf("acked %v hinted %v", res.Acked, res.Hinted)
	}
	hs := pending(t, c.node("d").hints)
	if len(hs) != 1 || hs[0].Target != "c" || hs[0].Key != "k" {
		t.Fatalf("hints on d: %+v", hs)
	}
	// A quorum write with c down is strict (a, b) or, when d's answer comes
	// before b's, sloppy (a + a hint on d): c's failure sends the write to the
	// fallback at once, and the first answers count (see
	// TestQuorumWriteCountsHintBeforeSlowReplica).
	res, err = c.node("a").coord.Write(ctx, c.wr("q", "v", consistency.Quorum))
	strict := !res.Sloppy && slices.Equal(sorted(res.Acked), []string{"a", "b"}) && len(res.Hinted) == 0
	sloppy := res.Sloppy && slices.Equal(res.Acked, []string{"a"}) && slices.Equal(res.Hinted, []string{"d"})
	if err != nil || !strict && !sloppy {
		t.Fatalf("quorum with c down: %+v %v", res, err)
	}

	// With b and c down a quorum write is sloppy: one hint, for one of them.
	c.set(modeDown, "b")
	res, err = c.node("a").coord.Write(ctx, c.wr("s", "v", consistency.Quorum))
	if err != nil || !res.Sloppy || !slices.Equal(res.Hinted, []string{"d"}) {
		t.Fatalf("quorum with b, c down: %+v %v", res, err)
	}
	c.settle()
	var targets []string
	for _, h := range pending(t, c.node("d").hints) {
		if h.Key == "s" {
			targets = append(targets, h.Target)
		}
	}
	if len(targets) != 1 || (targets[0] != "b" && targets[0] != "c") {
		t.Fatalf("hints for s: %v", targets)
	}
	// No fallback left: level one still succeeds on the coordinator alone.
	if _, err := c.node("a").coord.Write(ctx, c.wr("o", "v", consistency.One)); err != nil {
		t.Fatal(err)
	}
}

// A quorum write counts the first answers: with one replica down and the
// other slow, the fallback's hint answers first and the write is acknowledged
// as a sloppy quorum although a strict one was reachable. (Dynamo counts the
// first W of the N healthy nodes the same way; the receipt then says
// SloppyQuorum and not MajorityReachable.)
func TestQuorumWriteCountsHintBeforeSlowReplica(t *testing.T) {
	c := newCluster(t, []string{"a", "b", "c"}, []string{"d"})
	c.set(modeDown, "c")
	c.setDelay("b", 300*time.Millisecond)
	res, err := c.node("a").coord.Write(testCtx(t), c.wr("k", "v", consistency.Quorum))
	if err != nil || !res.Sloppy || !slices.Equal(res.Acked, []string{"a"}) || !slices.Equal(res.Hinted, []string{"d"}) {
		t.Fatalf("result %+v %v: want acked [a], hinted [d], sloppy", res, err)
	}
	c.settle()
	if v := c.values("b", "k"); !slices.Equal(v, []string{"v"}) {
		t.Errorf("slow replica b has %v after the background store", v)
	}
}

// A handoff round tries a down target once, delivers the others' hints, and
// keeps a hint that changed since it was listed.
func TestHandoffRound(t *testing.T) {
	c := newCluster(t, []string{"a", "b", "c"}, nil)
	h := c.node("a").hints
	clk := func(v string) consistency.DVV {
		return mint(t, consistency.DVV{}, consistency.VV{}, "x", v, ts(0), false)
	}
	for _, k := range []string{"k1", "k2", "k3"} {
		if err := h.Add("b", testPartition, k, clk(k), false); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range []string{"k4", "k5"} {
		if err := h.Add("c", testPartition, k, clk(k), false); err != nil {
			t.Fatal(err)
		}
	}
	c.set(modeDown, "b")
	tries := map[string]int{}
	n, err := h.Handoff(testCtx(t), func(ctx context.Context, hint Hint) error {
		tries[hint.Target]++
		_, err := c.Store(ctx, hint.Target, &api.ReplicaStoreRequest{Partition: hint.Partition, Key: hint.Key, Clock: hint.Clock.Encode(nil)})
		return err
	})
	if n != 2 || err != nil {
		t.Fatalf("handoff: %d %v, want 2", n, err)
	}
	if tries["b"] != 1 || tries["c"] != 2 {
		t.Errorf("tries %v: want b once (then skipped), c twice", tries)
	}
	for _, k := range []string{"k4", "k5"} {
		if v := c.values("c", k); !slices.Equal(v, []string{k}) {
			t.Errorf("c has %s = %v", k, v)
		}
	}
	hs := pending(t, h)
	if len(hs) != 3 {
		t.Fatalf("pending after the round: %v", hs)
	}
	for _, x := range hs {
		if x.Target != "b" {
			t.Errorf("hint for %s left", x.Target)
		}
	}

	// Delivered keeps a hint that a newer write changed since it was listed.
	old := hs[0]
	newer := mint(t, old.Clock, consistency.VV{}, "y", "newer", ts(1), false)
	if err := h.Add(old.Target, old.Partition, old.Key, newer, false); err != nil {
		t.Fatal(err)
	}
	if err := h.Delivered(old); err != nil {
		t.Fatal(err)
	}
	hs = pending(t, h)
	if len(hs) != 3 || !hs[0].Clock.Equal(old.Clock.Sync(newer)) {
		t.Fatalf("a changed hint was forgotten: %v", hs)
	}
	// An unchanged one goes; a second Delivered is a no-op.
	if err := h.Delivered(hs[1]); err != nil {
		t.Fatal(err)
	}
	if err := h.Delivered(hs[1]); err != nil {
		t.Fatal(err)
	}
	if n := len(pending(t, h)); n != 2 {
		t.Fatalf("%d hints after delivering one of 3", n)
	}

	// A cancelled context delivers nothing.
	c.set(modeUp, "b")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if n, err := c.handoff(ctx, "a"); n != 0 || err != nil {
		t.Fatalf("handoff with a cancelled context: %d %v", n, err)
	}
	if n, err := c.handoff(testCtx(t), "a"); n != 2 || err != nil {
		t.Fatalf("handoff: %d %v", n, err)
	}
}

// Hints for an lww keyspace keep only the last writer, and keys with NUL
// bytes survive the hint key encoding.
func TestHintStoreLWWAndOddKeys(t *testing.T) {
	st := openStore(t)
	t.Cleanup(func() { st.Close() })
	h := NewHintStore(st)
	older := mint(t, consistency.DVV{}, consistency.VV{}, "a", "old", ts(1), false)
	newer := mint(t, consistency.DVV{}, consistency.VV{}, "b", "new", ts(2), false)
	key := "k\x00with\x00nuls"
	for _, d := range []consistency.DVV{newer, older} {
		if err := h.Add("t", testPartition, key, d, true); err != nil {
			t.Fatal(err)
		}
	}
	hs := pending(t, h)
	if len(hs) != 1 || hs[0].Key != key || hs[0].Target != "t" || hs[0].Partition != testPartition {
		t.Fatalf("hints %+v", hs)
	}
	if got := live(hs[0].Clock); !slices.Equal(got, []string{"new"}) || hs[0].Clock.Len() != 1 {
		t.Fatalf("lww hint keeps %v", hs[0].Clock)
	}
	// Limit.
	for _, k := range []string{"x", "y", "z"} {
		if err := h.Add("t", testPartition, k, older, false); err != nil {
			t.Fatal(err)
		}
	}
	if hs, err := h.Pending(2); err != nil || len(hs) != 2 {
		t.Fatalf("Pending(2): %d %v", len(hs), err)
	}
	// Hints are not partition data.
	if parts, err := st.Partitions(); err != nil || !slices.Equal(parts, []string{hintPartition}) {
		t.Fatalf("partitions %v %v", parts, err)
	}
}

// Adopting a map without a keyspace forgets the hints held for it: handing
// them over later would bring a dropped keyspace's data back.
func TestAdoptForgetsHintsOfDroppedKeyspaces(t *testing.T) {
	st := openStore(t)
	t.Cleanup(func() { st.Close() })
	r := New(Config{Self: "a", Store: st})
	d := mint(t, consistency.DVV{}, consistency.VV{}, "a", "v", ts(1), false)
	for _, p := range []string{"gone/*/0", "kept/*/1", "gone/eu/3", "not a partition id"} {
		if err := r.hints.Add("b", p, "k", d, false); err != nil {
			t.Fatal(err)
		}
	}
	rg, err := ring.New(ring.Topology{Epoch: 2, Nodes: []ring.Node{{ID: "a"}, {ID: "b"}},
		Keyspaces: []ring.KeyspaceConfig{{Name: "kept", Mode: consistency.AP, Replicas: 2}}}, ring.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Adopt(rg); err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, h := range pending(t, r.hints) {
		left = append(left, h.Partition)
	}
	slices.Sort(left)
	if want := []string{"kept/*/1", "not a partition id"}; !slices.Equal(left, want) {
		t.Fatalf("hints left for %q, want %q", left, want)
	}
}
