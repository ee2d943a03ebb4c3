package consistency

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

var dvvSeed = flag.Uint64("dvv.seed", 0, "seed for the randomized DVV tests (0: from the clock)")

// dvvRand returns a seeded generator and logs the seed so a failure can be replayed
// with -dvv.seed.
func dvvRand(t testing.TB) *rand.Rand {
	seed := *dvvSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (replay with -dvv.seed=%d)", seed, seed)
	return rand.New(rand.NewPCG(seed, 0x64767631))
}

func mustVV(t testing.TB, m map[string]uint64) VV {
	t.Helper()
	v, err := NewVV(m)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func mustUpdate(t testing.TB, d DVV, ctx VV, node string, v Value) DVV {
	t.Helper()
	out, err := d.Update(ctx, node, v)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func put(t testing.TB, d DVV, ctx VV, node, data string) DVV {
	t.Helper()
	return mustUpdate(t, d, ctx, node, Value{Data: []byte(data), Timestamp: MakeTimestamp(1000, 0)})
}

func del(t testing.TB, d DVV, ctx VV, node string) DVV {
	t.Helper()
	return mustUpdate(t, d, ctx, node, Value{Tombstone: true, Timestamp: MakeTimestamp(1000, 0)})
}

// show renders the siblings as "node:counter=data" ("⊥" for a tombstone).
func show(d DVV) string {
	var parts []string
	for _, s := range d.Values() {
		v := string(s.Data)
		if s.Tombstone {
			v = "⊥"
		}
		parts = append(parts, fmt.Sprintf("%s=%s", s.Dot, v))
	}
	return strings.Join(parts, " ")
}

var empty VV

func TestDVVScenarios(t *testing.T) {
	for _, tc := range []struct {
		name string
		run  func(t *testing.T) DVV
		want string
	}{
		{"first write", func(t *testing.T) DVV {
			return put(t, DVV{}, empty, "a", "x")
		}, "a:1=x"},
		{"two blind writes at one coordinator are siblings", func(t *testing.T) DVV {
			d := put(t, DVV{}, empty, "a", "x")
			return put(t, d, empty, "a", "y")
		}, "a:1=x a:2=y"},
		{"two blind writes at two replicas are siblings after sync", func(t *testing.T) DVV {
			return put(t, DVV{}, empty, "a", "x").Sync(put(t, DVV{}, empty, "b", "y"))
		}, "a:1=x b:1=y"},
		{"a write with the context of a read that saw both siblings replaces them", func(t *testing.T) DVV {
			d := put(t, DVV{}, empty, "a", "x").Sync(put(t, DVV{}, empty, "b", "y"))
			return put(t, d, d.Context(), "b", "z")
		}, "b:2=z"},
		{"a stale context keeps the sibling it did not see", func(t *testing.T) DVV {
			d := put(t, DVV{}, empty, "a", "x")
			stale := d.Context() // client 1 reads x
			d = put(t, d, d.Context(), "a", "y")
			return put(t, d, stale, "a", "z") // client 1 writes, never saw y
		}, "a:2=y a:3=z"},
		{"a context from another replica supersedes siblings the coordinator has not seen", func(t *testing.T) DVV {
			a := put(t, DVV{}, empty, "a", "x")
			b := put(t, DVV{}, empty, "b", "y")
			ctx := a.Context()           // client read x at a
			b = put(t, b, ctx, "b", "z") // and writes at b, which has y only
			return a.Sync(b)             // a learns that x is superseded
		}, "b:1=y b:2=z"},
		{"the counter follows the client context", func(t *testing.T) DVV {
			a := put(t, put(t, DVV{}, empty, "a", "x"), empty, "a", "y")
			// A replica that missed a's writes coordinates with a context that saw them.
			return put(t, DVV{}, a.Context(), "a", "z")
		}, "a:3=z"},
		{"delete concurrent with a write keeps both", func(t *testing.T) DVV {
			a := put(t, DVV{}, empty, "a", "x")
			b := DVV{}.Sync(a)
			ctx := a.Context()
			a = del(t, a, ctx, "a")
			b = put(t, b, ctx, "b", "y")
			return a.Sync(b)
		}, "a:2=⊥ b:1=y"},
		{"a write after reading a concurrent delete resolves it", func(t *testing.T) DVV {
			a := put(t, DVV{}, empty, "a", "x")
			d := del(t, a, a.Context(), "a").Sync(put(t, a, a.Context(), "b", "y"))
			return put(t, d, d.Context(), "a", "z")
		}, "a:3=z"},
		{"a delete with a full context leaves one tombstone", func(t *testing.T) DVV {
			d := put(t, DVV{}, empty, "a", "x").Sync(put(t, DVV{}, empty, "b", "y"))
			return del(t, d, d.Context(), "c")
		}, "c:1=⊥"},
		{"sync drops a sibling the other side superseded", func(t *testing.T) DVV {
			a := put(t, DVV{}, empty, "a", "x")
			b := DVV{}.Sync(a)
			b = put(t, b, b.Context(), "b", "y")
			return a.Sync(b)
		}, "b:1=y"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := tc.run(t)
			if got := show(d); got != tc.want {
				t.Fatalf("siblings = %q, want %q (clock %s)", got, tc.want, d)
			}
			assertWellFormed(t, d)
		})
	}
}

func TestDVVReplicasConvergeInAnyOrder(t *testing.T) {
	// Three replicas take concurrent writes, one of which saw another's value.
	base := put(t, DVV{}, empty, "a", "x")
	r := []DVV{
		put(t, base, empty, "a", "y"),
		put(t, DVV{}.Sync(base), base.Context(), "b", "z"), // supersedes x
		del(t, DVV{}, empty, "c"),
	}
	want := "a:2=y b:1=z c:1=⊥"
	perms := [][]int{{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}}
	var first DVV
	for k, p := range perms {
		// Pairwise gossip in this order, twice round: every replica ends with everything.
		s := slices.Clone(r)
		for range 2 {
			for i := range p {
				x, y := p[i], p[(i+1)%len(p)]
				s[y] = s[y].Sync(s[x])
			}
		}
		for i := range s {
			if got := show(s[i]); got != want {
				t.Fatalf("order %v: replica %d = %q, want %q", p, i, got, want)
			}
			if k == 0 && i == 0 {
				first = s[i]
			}
			if !s[i].Equal(first) || !bytes.Equal(s[i].Encode(nil), first.Encode(nil)) {
				t.Fatalf("order %v: replica %d = %s, differs from %s", p, i, s[i], first)
			}
		}
	}
	if live := first.Live(); len(live) != 2 {
		t.Fatalf("Live = %v, want the two non-tombstones", live)
	}
}

func TestDVVLWW(t *testing.T) {
	at := func(ms int64) Timestamp { return MakeTimestamp(ms, 0) }
	d := mustUpdate(t, DVV{}, empty, "b", Value{Data: []byte("old"), Timestamp: at(1)})
	d = d.Sync(mustUpdate(t, DVV{}, empty, "a", Value{Data: []byte("new"), Timestamp: at(5)}))
	if s, ok := d.LWW(); !ok || string(s.Data) != "new" {
		t.Fatalf("LWW = %v, %v; want new", s, ok)
	}
	// A tie on timestamps goes to the greater dot, whatever the sync order.
	tie := mustUpdate(t, DVV{}, empty, "c", Value{Data: []byte("tie"), Timestamp: at(5)})
	for _, x := range []DVV{d.Sync(tie), tie.Sync(d)} {
		if s, _ := x.LWW(); string(s.Data) != "tie" || s.Dot != (Dot{"c", 1}) {
			t.Fatalf("LWW of %s = %v, want c:1 (tie broken by dot)", x, s)
		}
	}
	// A newer delete wins: the key reads as deleted.
	gone := mustUpdate(t, d, empty, "a", Value{Tombstone: true, Timestamp: at(9)})
	if s, _ := gone.LWW(); !s.Tombstone {
		t.Fatalf("LWW = %v, want the tombstone", s)
	}
	if _, ok := (DVV{}).LWW(); ok {
		t.Fatal("LWW of an empty clock reported a winner")
	}
}

func TestDVVDescends(t *testing.T) {
	a := put(t, DVV{}, empty, "a", "x")
	b := put(t, a, a.Context(), "a", "y")
	c := put(t, DVV{}, empty, "b", "z")
	for _, tc := range []struct {
		name string
		x, y DVV
		want bool
	}{
		{"self", a, a, true},
		{"anything descends the empty clock", a, DVV{}, true},
		{"empty does not descend a write", DVV{}, a, false},
		{"later descends earlier", b, a, true},
		{"earlier does not descend later", a, b, false},
		{"concurrent", a, c, false},
		{"merge descends both", a.Sync(c), c, true},
	} {
		if got := tc.x.Descends(tc.y); got != tc.want {
			t.Errorf("%s: %s.Descends(%s) = %v, want %v", tc.name, tc.x, tc.y, got, tc.want)
		}
		if got := tc.x.Sync(tc.y).Equal(tc.x); got != tc.want {
			t.Errorf("%s: Sync(x, y) == x is %v, Descends says %v", tc.name, got, tc.want)
		}
	}
}

func TestDVVUpdateErrors(t *testing.T) {
	if _, err := (DVV{}).Update(empty, "", Value{}); !errors.Is(err, ErrInvalidClock) {
		t.Fatalf("empty node: err = %v", err)
	}
	full := mustVV(t, map[string]uint64{"a": math.MaxUint64})
	if _, err := (DVV{}).Update(full, "a", Value{}); !errors.Is(err, ErrInvalidClock) {
		t.Fatalf("exhausted counter: err = %v", err)
	}
	d := mustUpdate(t, DVV{}, full, "b", Value{}) // other nodes are unaffected
	if show(d) != "b:1=" {
		t.Fatalf("got %s", d)
	}
	if _, err := NewVV(map[string]uint64{"": 1}); !errors.Is(err, ErrInvalidClock) {
		t.Fatalf("NewVV with empty node: err = %v", err)
	}
}

func TestDVVUpdateDoesNotModifyItsInputs(t *testing.T) {
	d := put(t, DVV{}, empty, "a", "x").Sync(put(t, DVV{}, empty, "c", "y"))
	ctx := mustVV(t, map[string]uint64{"a": 1, "b": 4})
	before, ctxBefore := d.Encode(nil), ctx.Encode(nil)
	_ = put(t, d, ctx, "b", "z")
	_ = d.Sync(put(t, DVV{}, ctx, "b", "w"))
	if !bytes.Equal(d.Encode(nil), before) || !bytes.Equal(ctx.Encode(nil), ctxBefore) {
		t.Fatal("Update or Sync modified its receiver or context")
	}
}

func TestVV(t *testing.T) {
	a := mustVV(t, map[string]uint64{"a": 2, "b": 1, "z": 0})
	b := mustVV(t, map[string]uint64{"b": 3, "c": 1})
	if a.String() != "{a:2 b:1}" || a.Len() != 2 {
		t.Fatalf("a = %s", a)
	}
	m := a.Merge(b)
	if m.String() != "{a:2 b:3 c:1}" {
		t.Fatalf("merge = %s", m)
	}
	if !m.Descends(a) || !m.Descends(b) || a.Descends(b) || b.Descends(a) || !a.Descends(empty) || empty.Descends(a) {
		t.Fatal("Descends wrong")
	}
	if !a.Covers(Dot{"a", 2}) || a.Covers(Dot{"a", 3}) || a.Covers(Dot{"c", 1}) {
		t.Fatal("Covers wrong")
	}
	got, err := DecodeVV(m.Encode(nil))
	if err != nil || !got.Equal(m) {
		t.Fatalf("round trip = %s, %v", got, err)
	}
}

func TestDecodeDVVRejectsCorruptInput(t *testing.T) {
	good := put(t, DVV{}, empty, "a", "x").Sync(del(t, DVV{}, empty, "b")).Encode(nil)
	if _, err := DecodeDVV(good); err != nil {
		t.Fatalf("good input: %v", err)
	}
	// Hand-built encodings: format, one context entry a:2, then siblings.
	ctxA2 := []byte{dvvFormat1, 1, 1, 'a', 2}
	sib := func(idx, counter, flags byte) []byte {
		return append([]byte{idx, counter, flags, 0, 0, 0, 0, 0, 0, 0, 7}, 1, 'v')
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	for _, tc := range []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "empty DVV"},
		{"wrong format", []byte{0x00, 0, 0}, "format byte"},
		{"version vector given as DVV", []byte{vvFormat1, 0}, "format byte"},
		{"truncated", good[:len(good)-1], ""},
		{"trailing", append(slices.Clone(good), 0), "trailing"},
		{"huge count", []byte{dvvFormat1, 0xff, 0xff, 0xff, 0xff, 0x0f}, "cannot fit"},
		{"non-shortest varint", []byte{dvvFormat1, 0x80, 0x00, 0}, "shortest form"},
		{"varint overflow", cat([]byte{dvvFormat1}, bytes.Repeat([]byte{0xff}, 10), []byte{0x01}), "overflows"},
		{"empty node", []byte{dvvFormat1, 1, 0, 1, 0}, "empty node"},
		{"zero counter", []byte{dvvFormat1, 1, 1, 'a', 0, 0}, "counter 0"},
		{"unsorted context", []byte{dvvFormat1, 2, 1, 'b', 1, 1, 'a', 1, 0}, "not after"},
		{"duplicate context node", []byte{dvvFormat1, 2, 1, 'a', 1, 1, 'a', 1, 0}, "not after"},
		{"sibling node out of range", cat(ctxA2, []byte{1}, sib(1, 1, 0)), "out of range"},
		{"sibling not covered", cat(ctxA2, []byte{1}, sib(0, 3, 0)), "not covered"},
		{"sibling counter zero", cat(ctxA2, []byte{1}, sib(0, 0, 0)), "not covered"},
		{"duplicate sibling", cat(ctxA2, []byte{2}, sib(0, 1, 0), sib(0, 1, 0)), "not after"},
		{"unsorted siblings", cat(ctxA2, []byte{2}, sib(0, 2, 0), sib(0, 1, 0)), "not after"},
		{"unknown flags", cat(ctxA2, []byte{1}, sib(0, 1, 2)), "unknown flags"},
		{"data longer than input", cat(ctxA2, []byte{1}, sib(0, 1, 0)[:11], []byte{9, 'v'}), "exceeds"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := DecodeDVV(tc.in)
			if !errors.Is(err, ErrInvalidClock) {
				t.Fatalf("DecodeDVV(%x) = %s, %v; want ErrInvalidClock", tc.in, d, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
		})
	}
	// The hand-built sibling is itself valid, so the cases above fail for their stated reason.
	if _, err := DecodeDVV(cat(ctxA2, []byte{1}, sib(0, 2, 1))); err != nil {
		t.Fatalf("hand-built valid input: %v", err)
	}
}

// assertWellFormed checks the invariants and the encoding round trip of d.
func assertWellFormed(t testing.TB, d DVV) {
	t.Helper()
	for i, e := range d.ctx.entries {
		if e.Node == "" || e.Counter == 0 || (i > 0 && d.ctx.entries[i-1].Node >= e.Node) {
			t.Fatalf("bad context %s", d.ctx)
		}
	}
	for i, s := range d.sibs {
		if !d.ctx.Covers(s.Dot) || (i > 0 && d.sibs[i-1].Dot.Compare(s.Dot) >= 0) {
			t.Fatalf("bad siblings in %s", d)
		}
	}
	enc := d.Encode(nil)
	got, err := DecodeDVV(enc)
	if err != nil {
		t.Fatalf("Decode(Encode(%s)): %v", d, err)
	}
	if !got.Equal(d) || !bytes.Equal(got.Encode(nil), enc) {
		t.Fatalf("Decode(Encode(%s)) = %s", d, got)
	}
}

// ---- Property tests against a reference model ----
//
// The reference tracks causality by brute force: every write records the set of
// writes its client had seen (its causal past), every replica and client the set
// of writes it knows. A replica's siblings must be exactly the writes it knows
// that no write it knows has seen; its DVV context must cover exactly the writes
// it knows. Nothing in the reference uses version vectors.

type writeSet map[int]bool

func (s writeSet) clone() writeSet {
	c := make(writeSet, len(s))
	for k := range s {
		c[k] = true
	}
	return c
}

func (s writeSet) add(o writeSet) {
	for k := range o {
		s[k] = true
	}
}

type refWrite struct {
	dot  Dot
	val  Value
	past writeSet // writes the client had seen when it wrote
}

type refReplica struct {
	node  string
	clock DVV
	known writeSet
}

type refClient struct {
	ctx   VV
	known writeSet
}

type history struct {
	t        testing.TB
	rng      *rand.Rand
	writes   []refWrite
	byDot    map[Dot]int
	replicas []*refReplica
	clients  []*refClient
	log      []string // operations, printed on failure
	pool     []DVV    // snapshots for the Sync law tests
}

func newHistory(t testing.TB, rng *rand.Rand, replicas, clients int) *history {
	h := &history{t: t, rng: rng, byDot: map[Dot]int{}}
	for i := range replicas {
		h.replicas = append(h.replicas, &refReplica{node: fmt.Sprintf("r%d", i), known: writeSet{}})
	}
	for range clients {
		h.clients = append(h.clients, &refClient{known: writeSet{}})
	}
	return h
}

func (h *history) fail(format string, args ...any) {
	h.t.Helper()
	h.t.Fatalf("%s\nhistory:\n  %s", fmt.Sprintf(format, args...), strings.Join(h.log, "\n  "))
}

// maximal returns the writes of known that no write of known has seen.
func (h *history) maximal(known writeSet) writeSet {
	out := writeSet{}
	for w := range known {
		out[w] = true
	}
	for w := range known {
		for p := range h.writes[w].past {
			delete(out, p)
		}
	}
	return out
}

func (h *history) check(r *refReplica) {
	h.t.Helper()
	ctx := r.clock.Context()
	for id, w := range h.writes {
		if ctx.Covers(w.dot) != r.known[id] {
			h.fail("replica %s: context %s covers w%d (%s): %v; the reference knows it: %v", r.node, ctx, id, w.dot, ctx.Covers(w.dot), r.known[id])
		}
	}
	for _, e := range ctx.Entries() {
		if _, ok := h.byDot[e]; !ok {
			h.fail("replica %s: context %s names dot %s that was never issued", r.node, ctx, e)
		}
	}
	want := h.maximal(r.known)
	got := r.clock.Values()
	if len(got) != len(want) {
		h.fail("replica %s: siblings %s, reference wants %v", r.node, r.clock, sortedIDs(want))
	}
	for _, s := range got {
		id, ok := h.byDot[s.Dot]
		if !ok || !want[id] {
			h.fail("replica %s: sibling %s is not in the reference's %v", r.node, s, sortedIDs(want))
		}
		if w := h.writes[id]; compareValue(w.val, s.Value) != 0 {
			h.fail("replica %s: sibling %s has the value of another write (%v)", r.node, s, w.val)
		}
	}
	// LWW against the reference: greatest timestamp, ties to the greatest dot.
	if win, ok := r.clock.LWW(); ok {
		for id := range want {
			w := h.writes[id]
			if w.val.Timestamp > win.Timestamp || (w.val.Timestamp == win.Timestamp && w.dot.Compare(win.Dot) > 0) {
				h.fail("replica %s: LWW picked %s over w%d %s", r.node, win, id, w.dot)
			}
		}
	}
	assertWellFormed(h.t, r.clock)
}

func sortedIDs(s writeSet) []int {
	var ids []int
	for id := range s {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// step performs one random operation: a read (possibly a quorum read with read
// repair), a write or delete (with the client's possibly stale context,
// replicated to some other replicas), or a one-way sync between two replicas.
func (h *history) step() {
	rng := h.rng
	switch p := rng.IntN(100); {
	case p < 30: // read from 1..R replicas, merging their clocks as a coordinator would
		c := h.clients[rng.IntN(len(h.clients))]
		idx := rng.Perm(len(h.replicas))[:1+rng.IntN(len(h.replicas))]
		var merged DVV
		known := writeSet{}
		for _, i := range idx {
			merged = merged.Sync(h.replicas[i].clock)
			known.add(h.replicas[i].known)
		}
		c.ctx, c.known = merged.Context(), known
		repair := rng.IntN(2) == 0
		if repair {
			for _, i := range idx {
				r := h.replicas[i]
				r.clock = r.clock.Sync(merged)
				r.known.add(known)
				h.check(r)
			}
		}
		h.log = append(h.log, fmt.Sprintf("client %p reads %v (repair %v): %s", c, idx, repair, merged))
	case p < 70: // write or delete at one replica, then replicate to others
		c := h.clients[rng.IntN(len(h.clients))]
		if rng.IntN(10) == 0 {
			c.ctx, c.known = VV{}, writeSet{} // the client lost its context: a blind write
		}
		r := h.replicas[rng.IntN(len(h.replicas))]
		id := len(h.writes)
		v := Value{Timestamp: MakeTimestamp(1000+int64(rng.IntN(30)), uint16(rng.IntN(2)))}
		if rng.IntN(6) == 0 {
			v.Tombstone = true
		} else {
			v.Data = fmt.Appendf(nil, "w%d", id)
		}
		clock, err := r.clock.Update(c.ctx, r.node, v)
		if err != nil {
			h.fail("Update: %v", err)
		}
		dot := Dot{r.node, clock.Context().Get(r.node)}
		if _, dup := h.byDot[dot]; dup {
			h.fail("write w%d reuses dot %s", id, dot)
		}
		h.writes = append(h.writes, refWrite{dot: dot, val: v, past: c.known.clone()})
		h.byDot[dot] = id
		r.clock = clock
		r.known.add(c.known)
		r.known[id] = true
		h.log = append(h.log, fmt.Sprintf("client %p writes w%d=%v at %s with %s: %s", c, id, v, r.node, c.ctx, clock))
		h.check(r)
		for _, i := range rng.Perm(len(h.replicas))[:rng.IntN(len(h.replicas))] {
			o := h.replicas[i]
			o.clock = o.clock.Sync(clock)
			o.known.add(r.known)
			h.check(o)
		}
		if rng.IntN(2) == 0 { // the client asked for the new version back
			c.ctx, c.known = clock.Context(), r.known.clone()
		}
	default: // anti-entropy, handoff or read repair in one direction
		from, to := h.replicas[rng.IntN(len(h.replicas))], h.replicas[rng.IntN(len(h.replicas))]
		if rng.IntN(2) == 0 {
			to.clock = to.clock.Sync(from.clock)
		} else {
			to.clock = from.clock.Sync(to.clock)
		}
		to.known.add(from.known)
		h.log = append(h.log, fmt.Sprintf("sync %s -> %s: %s", from.node, to.node, to.clock))
		h.check(to)
	}
	if rng.IntN(4) == 0 {
		h.pool = append(h.pool, h.replicas[rng.IntN(len(h.replicas))].clock)
	}
}

// converge syncs every replica with every other in a random order and checks
// that they end Equal, with the same bytes, and that no write was lost.
func (h *history) converge() DVV {
	rng := h.rng
	var all DVV
	for _, i := range rng.Perm(len(h.replicas)) {
		if rng.IntN(2) == 0 {
			all = all.Sync(h.replicas[i].clock)
		} else {
			all = h.replicas[i].clock.Sync(all)
		}
	}
	known := writeSet{}
	for _, r := range h.replicas {
		known.add(r.known)
	}
	for _, r := range h.replicas {
		r.clock = r.clock.Sync(all)
		r.known.add(known)
		h.check(r)
		if !r.clock.Equal(h.replicas[0].clock) || !bytes.Equal(r.clock.Encode(nil), h.replicas[0].clock.Encode(nil)) {
			h.fail("after full sync %s = %s but %s = %s", r.node, r.clock, h.replicas[0].node, h.replicas[0].clock)
		}
	}
	// No write is lost unless a later write saw it.
	final := h.replicas[0].clock
	for id, w := range h.writes {
		if _, kept := final.sibling(w.dot); kept {
			continue
		}
		seen := false
		for _, o := range h.writes {
			seen = seen || o.past[id]
		}
		if !seen {
			h.fail("write w%d (%s) lost: not a sibling of the converged clock %s and no write saw it", id, w.dot, final)
		}
	}
	return final
}

func TestDVVRandomHistoriesMatchReference(t *testing.T) {
	rng := dvvRand(t)
	histories := 3000
	if testing.Short() {
		histories = 300
	}
	var writes, withSiblings, withTombstoneSibling, maxSiblings int
	for n := range histories {
		h := newHistory(t, rng, 2+rng.IntN(4), 1+rng.IntN(4))
		steps := 5 + rng.IntN(60)
		for range steps {
			h.step()
		}
		final := h.converge()
		writes += len(h.writes)
		maxSiblings = max(maxSiblings, final.Len())
		if final.Len() > 1 {
			withSiblings++
			if len(final.Live()) < final.Len() {
				withTombstoneSibling++
			}
		}
		if t.Failed() {
			t.Fatalf("history %d failed", n)
		}
	}
	t.Logf("%d histories, %d writes; %d converged with siblings (%d with a tombstone among them), at most %d siblings",
		histories, writes, withSiblings, withTombstoneSibling, maxSiblings)
	// The generator must reach the interesting cases, or the test proves little.
	if withSiblings < histories/10 || withTombstoneSibling == 0 {
		t.Fatalf("generator too tame: %d/%d histories with siblings, %d with tombstone siblings", withSiblings, histories, withTombstoneSibling)
	}
}

// syncLaws checks idempotence, commutativity, associativity and the meaning of
// Descends on one triple.
func syncLaws(t *testing.T, a, b, c DVV) {
	t.Helper()
	if !a.Sync(a).Equal(a) {
		t.Fatalf("not idempotent: %s ⊔ itself = %s", a, a.Sync(a))
	}
	ab, ba := a.Sync(b), b.Sync(a)
	if !ab.Equal(ba) || !bytes.Equal(ab.Encode(nil), ba.Encode(nil)) {
		t.Fatalf("not commutative: %s ⊔ %s = %s, reversed %s", a, b, ab, ba)
	}
	if l, r := ab.Sync(c), a.Sync(b.Sync(c)); !l.Equal(r) {
		t.Fatalf("not associative: a=%s b=%s c=%s: (ab)c=%s a(bc)=%s", a, b, c, l, r)
	}
	if a.Descends(b) != ab.Equal(a) {
		t.Fatalf("%s.Descends(%s) = %v but Sync is %s", a, b, a.Descends(b), ab)
	}
	if !ab.Descends(a) || !ab.Descends(b) {
		t.Fatalf("%s ⊔ %s = %s does not descend both", a, b, ab)
	}
	assertWellFormed(t, ab)
}

func TestDVVSyncLawsOnHistoryClocks(t *testing.T) {
	rng := dvvRand(t)
	var pool []DVV
	for range 200 {
		h := newHistory(t, rng, 3, 3)
		for range 40 {
			h.step()
		}
		pool = append(pool, h.pool...)
		pool = append(pool, DVV{})
		// Laws only make sense among clocks of one key's history (a dot names
		// one write), so draw each triple from this history's snapshots.
		for range 50 {
			pick := func() DVV { return h.pool[rng.IntN(len(h.pool))] }
			if len(h.pool) > 0 {
				syncLaws(t, pick(), pick(), pick())
			}
		}
	}
	t.Logf("%d snapshots", len(pool))
}

// randomDVV builds an arbitrary well-formed clock over a few nodes. Values are a
// function of the dot, except that now and then a dot gets a second value, to
// exercise the tie rule that keeps Sync commutative even then.
func randomDVV(rng *rand.Rand) DVV {
	m := map[string]uint64{}
	for _, n := range []string{"a", "b", "c", "d"} {
		if rng.IntN(3) > 0 {
			m[n] = uint64(rng.IntN(5))
		}
	}
	ctx, _ := NewVV(m)
	var sibs []Sibling
	for _, e := range ctx.entries {
		for c := uint64(1); c <= e.Counter; c++ {
			if rng.IntN(3) == 0 {
				continue
			}
			dot := Dot{e.Node, c}
			v := Value{Data: []byte(dot.String()), Timestamp: Timestamp(c * 7 % 5), Tombstone: c%4 == 0}
			if rng.IntN(20) == 0 {
				v.Data = append(v.Data, '\'')
			}
			sibs = append(sibs, Sibling{dot, v})
		}
	}
	return DVV{ctx: ctx, sibs: sibs}
}

func TestDVVSyncLawsOnArbitraryClocks(t *testing.T) {
	rng := dvvRand(t)
	const n = 20000
	for range n {
		syncLaws(t, randomDVV(rng), randomDVV(rng), randomDVV(rng))
	}
	t.Logf("%d random triples", n)
}

func TestDVVEncodeRoundTrip(t *testing.T) {
	rng := dvvRand(t)
	for range 2000 {
		d := randomDVV(rng)
		// Non-ASCII nodes, large counters and data stress the varints.
		if rng.IntN(2) == 0 {
			d, _ = d.Update(empty, "nöde-"+strings.Repeat("x", rng.IntN(200)), Value{
				Data: bytes.Repeat([]byte{0xff}, rng.IntN(300)), Timestamp: Timestamp(rng.Uint64()),
			})
		}
		if rng.IntN(4) == 0 {
			d, _ = d.Update(mustVV(t, map[string]uint64{"big": rng.Uint64() >> 1}), "big", Value{})
		}
		assertWellFormed(t, d)
		vv, err := DecodeVV(d.Context().Encode([]byte("prefix"))[6:])
		if err != nil || !vv.Equal(d.Context()) {
			t.Fatalf("VV round trip of %s = %s, %v", d.Context(), vv, err)
		}
	}
}

// benchClocks returns two replicas' clocks of one key, each over 3 nodes with 2
// siblings: r1 = {a:2 b:1 c:1}[a:2 b:1], r2 = {a:1 b:1 c:2}[c:1 c:2].
func benchClocks(b *testing.B) (DVV, DVV) {
	base := put(b, DVV{}, empty, "a", "x")
	atB := put(b, base, empty, "b", "y")
	atC := put(b, base, empty, "c", "z")
	both := atB.Sync(atC)
	r1 := put(b, both, atC.Context(), "a", "v")
	r2 := put(b, both, atB.Context(), "c", "w")
	if r1.Len() != 2 || r2.Len() != 2 || r1.Context().Len() != 3 || r2.Context().Len() != 3 {
		b.Fatalf("bench clocks %s and %s are not 3 nodes / 2 siblings", r1, r2)
	}
	return r1, r2
}

func BenchmarkDVVUpdate(b *testing.B) {
	r1, _ := benchClocks(b)
	ctx := mustVV(b, map[string]uint64{"b": 1}) // replaces b:1, keeps a:2
	v := Value{Data: []byte("value"), Timestamp: MakeTimestamp(1000, 0)}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r1.Update(ctx, "c", v); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDVVSync(b *testing.B) {
	r1, r2 := benchClocks(b)
	b.ReportAllocs()
	for b.Loop() {
		_ = r1.Sync(r2)
	}
}

func BenchmarkDVVEncodeDecode(b *testing.B) {
	r1, r2 := benchClocks(b)
	d := r1.Sync(r2)
	buf := d.Encode(nil)
	b.ReportAllocs()
	for b.Loop() {
		buf = d.Encode(buf[:0])
		if _, err := DecodeDVV(buf); err != nil {
			b.Fatal(err)
		}
	}
}

func TestKeepDropsLosersForGood(t *testing.T) {
	a, _ := DVV{}.Update(VV{}, "n1", Value{Data: []byte("x"), Timestamp: 1})
	b, _ := DVV{}.Update(VV{}, "n2", Value{Data: []byte("y"), Timestamp: 2})
	both := a.Sync(b)
	w, _ := both.LWW()
	kept := both.Keep(w.Dot)
	if kept.Len() != 1 || string(kept.Values()[0].Data) != "y" || !kept.Context().Equal(both.Context()) {
		t.Fatalf("Keep = %s", kept)
	}
	// A replica that still has the loser drops it when it syncs.
	if got := a.Sync(kept); got.Len() != 1 || string(got.Values()[0].Data) != "y" {
		t.Fatalf("loser came back: %s", got)
	}
}
