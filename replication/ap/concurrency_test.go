package ap

import (
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"

	"github.com/capkv/capkv/consistency"
)

// writeRec is one write the concurrency test made.
type writeRec struct {
	key, value string
	dot        consistency.Dot
	ctx        consistency.VV // the client context it was written with
}

// Many goroutines write through two coordinators, to one hot key (reading
// first and writing with the read's context, or blind), to keys of their own
// (each write with the context of the previous one) and to a few shared keys
// (blind). Afterwards every replica holds the same clocks, and no
// acknowledged write was lost: each one is a sibling unless a write whose
// context covered it replaced it, and every sibling is a write that was made.
func TestConcurrentWritesNoLostUpdates(t *testing.T) {
	c := newCluster(t, []string{"a", "b", "c"}, nil)
	const perCoord, ops = 4, 15
	var (
		mu     sync.Mutex
		writes []writeRec
		wg     sync.WaitGroup
	)
	ctx := testCtx(t)
	record := func(key, value string, w WriteRequest, res WriteResult, coord string) {
		t.Helper()
		// The write's dot is the one the result names. The coordinator's
		// merged clock has seen it, as a sibling or, when a write that read
		// it (from a replica that stored it first: the coordinator's own
		// store runs beside the sends) already replaced it, in its context.
		if res.Dot.Node != coord {
			t.Errorf("%s=%s minted by %s, coordinated by %s", key, value, res.Dot.Node, coord)
		}
		if !res.Clock.Context().Covers(res.Dot) {
			t.Errorf("%s=%s: the coordinator's merged clock has not seen the write's dot %v: %v", key, value, res.Dot, res.Clock)
		}
		for _, s := range res.Clock.Values() {
			if s.Dot == res.Dot && string(s.Data) != value {
				t.Errorf("%s=%s: dot %v carries %q", key, value, s.Dot, s.Data)
			}
		}
		mu.Lock()
		writes = append(writes, writeRec{key, value, res.Dot, w.Context})
		mu.Unlock()
	}
	for _, coord := range []string{"a", "b"} {
		co := c.node(coord).coord
		for g := range perCoord {
			wg.Add(1)
			go func() {
				defer wg.Done()
				own := fmt.Sprintf("own-%s%d", coord, g)
				var ownCtx consistency.VV
				for i := range ops {
					value := fmt.Sprintf("%s%d-%d", coord, g, i)
					// The hot key: read-modify-write, every third one (the last included) blind.
					w := c.wr("hot", value, consistency.Quorum)
					if i%3 != 2 {
						rres, err := co.Read(ctx, c.rd("hot", consistency.Quorum))
						if err != nil {
							t.Errorf("read hot: %v", err)
							return
						}
						w.Context = rres.Clock.Context()
					}
					res, err := co.Write(ctx, w)
					if err != nil {
						t.Errorf("write hot=%s: %v", value, err)
						return
					}
					record("hot", value, w, res, coord)

					// A key of its own, each write replacing the last.
					w = c.wr(own, value, consistency.Quorum)
					w.Context = ownCtx
					if res, err = co.Write(ctx, w); err != nil {
						t.Errorf("write %s: %v", own, err)
						return
					}
					ownCtx = res.Clock.Context()
					record(own, value, w, res, coord)

					// Shared keys, blind: every write stays a sibling.
					shared := fmt.Sprintf("shared-%d", i%3)
					w = c.wr(shared, value, consistency.One)
					if res, err = co.Write(ctx, w); err != nil {
						t.Errorf("write %s: %v", shared, err)
						return
					}
					record(shared, value, w, res, coord)
				}
			}()
		}
	}
	wg.Wait()
	c.settle()
	if t.Failed() {
		return
	}

	// Every store of every write reached every replica: they are identical.
	ref := c.dump("a")
	for _, id := range []string{"b", "c"} {
		if got := c.dump(id); !maps.Equal(got, ref) {
			for k := range ref {
				if got[k] != ref[k] {
					t.Errorf("%s differs on %s: %v vs %v", id, k, c.clock(id, k), c.clock("a", k))
				}
			}
			t.FailNow()
		}
	}

	byKey := map[string][]writeRec{}
	for _, w := range writes {
		byKey[w.key] = append(byKey[w.key], w)
	}
	if want := 1 + 2*perCoord + 3; len(byKey) != want || len(ref) != want {
		t.Fatalf("%d keys written, %d stored, want %d", len(byKey), len(ref), want)
	}
	for key, ws := range byKey {
		final := c.clock("a", key)
		sibs := map[consistency.Dot]string{}
		for _, s := range final.Values() {
			if s.Tombstone {
				t.Errorf("%s: unexpected tombstone %v", key, s)
			}
			sibs[s.Dot] = string(s.Data)
		}
		made := map[consistency.Dot]string{}
		minted := map[string]uint64{}
		for _, w := range ws {
			if prev, dup := made[w.dot]; dup {
				t.Errorf("%s: dot %v minted twice (%s, %s)", key, w.dot, prev, w.value)
			}
			made[w.dot] = w.value
			minted[w.dot.Node] = max(minted[w.dot.Node], w.dot.Counter)
		}
		for _, w := range ws {
			superseded := slices.ContainsFunc(ws, func(o writeRec) bool { return o.ctx.Covers(w.dot) })
			got, kept := sibs[w.dot]
			switch {
			case superseded && kept:
				t.Errorf("%s: %s (%v) was replaced by a later write but is still a sibling", key, w.value, w.dot)
			case !superseded && !kept:
				t.Errorf("%s: lost update: %s (%v) was acknowledged, replaced by nothing, and is gone: %v", key, w.value, w.dot, final)
			case kept && got != w.value:
				t.Errorf("%s: dot %v holds %q, was written with %q", key, w.dot, got, w.value)
			}
		}
		for dot := range sibs {
			if _, ok := made[dot]; !ok {
				t.Errorf("%s: sibling %v is no write of the test", key, dot)
			}
		}
		// Every dot minted is in the context, and nothing beyond: no write
		// is unknown, none is imagined. (Counters are unique and rising,
		// not contiguous: coordinators mint above their HLC.)
		for node, n := range minted {
			if final.Context().Get(node) != n {
				t.Errorf("%s: context reaches %s:%d, the newest dot minted is %s:%d", key, node, final.Context().Get(node), node, n)
			}
		}
	}
	// Spot checks: own keys end with their last write; shared keys keep all.
	for _, coord := range []string{"a", "b"} {
		for g := range perCoord {
			own := fmt.Sprintf("own-%s%d", coord, g)
			if got := c.values("c", own); !slices.Equal(got, []string{fmt.Sprintf("%s%d-%d", coord, g, ops-1)}) {
				t.Errorf("%s: %v", own, got)
			}
		}
	}
	for i := range 3 {
		key := fmt.Sprintf("shared-%d", i)
		if got, want := len(c.values("b", key)), len(byKey[key]); got != want {
			t.Errorf("%s: %d siblings, %d blind writes", key, got, want)
		}
	}
	t.Logf("%d writes; hot key ends with %d siblings", len(writes), c.clock("a", "hot").Len())
}
