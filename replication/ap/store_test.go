package ap

import (
	"slices"
	"testing"
	"time"

	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/internal/watch"
)

func newClockStore(t *testing.T) *ClockStore {
	t.Helper()
	st := openStore(t)
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Error(err)
		}
	})
	return NewClockStore(st)
}

func merge(t *testing.T, s *ClockStore, key string, d consistency.DVV, lww bool) consistency.DVV {
	t.Helper()
	out, err := s.Merge(testPartition, key, d, lww)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func read(t *testing.T, s *ClockStore, key string) consistency.DVV {
	t.Helper()
	d, _, err := s.Read(testPartition, key)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestClockStoreMerge(t *testing.T) {
	s := newClockStore(t)
	if d, found, err := s.Read(testPartition, "k"); err != nil || found || d.Len() != 0 {
		t.Fatalf("absent key: %v %v %v", d, found, err)
	}
	a1 := mint(t, consistency.DVV{}, consistency.VV{}, "a", "x", ts(1), false)
	b1 := mint(t, consistency.DVV{}, consistency.VV{}, "b", "y", ts(2), false)
	if got := merge(t, s, "k", a1, false); !got.Equal(a1) {
		t.Fatalf("first merge: %v", got)
	}
	got := merge(t, s, "k", b1, false)
	if !slices.Equal(live(got), []string{"x", "y"}) || !read(t, s, "k").Equal(got) {
		t.Fatalf("concurrent merge: %v", got)
	}
	// Idempotent; a stale clock changes nothing.
	if again := merge(t, s, "k", b1, false); !again.Equal(got) {
		t.Fatalf("merge again: %v", again)
	}
	if again := merge(t, s, "k", a1, false); !again.Equal(got) {
		t.Fatalf("stale merge: %v", again)
	}
	// A write that saw both replaces them.
	a2 := mint(t, got, got.Context(), "a", "z", ts(3), false)
	if out := merge(t, s, "k", a2, false); !slices.Equal(live(out), []string{"z"}) {
		t.Fatalf("superseding merge: %v", out)
	}
	// And a replica that still sends the old siblings does not bring them back.
	if out := merge(t, s, "k", a1.Sync(b1), false); !slices.Equal(live(out), []string{"z"}) {
		t.Fatalf("old siblings came back: %v", out)
	}
	// Merge order does not matter: same bytes on another store.
	s2 := newClockStore(t)
	for _, d := range []consistency.DVV{a2, b1, a1} {
		merge(t, s2, "k", d, false)
	}
	if dumpStore(t, s, testPartition)["k"] != dumpStore(t, s2, testPartition)["k"] {
		t.Error("the same clocks merged in another order are stored differently")
	}
}

// Merge publishes one watch event per change, none for a merge that changes
// nothing.
func TestClockStoreMergeWatch(t *testing.T) {
	s := newClockStore(t)
	hub := watch.NewHub(0)
	defer hub.Close()
	s.Watch = hub
	sub, err := hub.Subscribe(testPartition, "")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	a1 := mint(t, consistency.DVV{}, consistency.VV{}, "a", "x", ts(1), false)
	b1 := mint(t, consistency.DVV{}, consistency.VV{}, "b", "y", ts(2), false)
	merge(t, s, "k", a1, false)
	merge(t, s, "k", a1, false) // nothing new
	merge(t, s, "k", b1, false)
	del := mint(t, a1.Sync(b1), a1.Sync(b1).Context(), "a", "", ts(3), true)
	merge(t, s, "k", del, false)
	var evs []watch.Event
	timeout := time.After(5 * time.Second)
	for len(evs) < 3 {
		select {
		case batch := <-sub.Events():
			evs = append(evs, batch...)
		case <-timeout:
			t.Fatalf("events %+v", evs)
		}
	}
	select {
	case batch := <-sub.Events():
		t.Fatalf("unexpected extra event %+v", batch)
	case <-time.After(20 * time.Millisecond):
	}
	if e := evs[0]; e.Key != "k" || string(e.Value) != "x" || e.Siblings != 1 || e.Deleted {
		t.Errorf("first event %+v", e)
	}
	if e := evs[1]; string(e.Value) != "y" || e.Siblings != 2 || e.Revision != uint64(ts(2)) {
		t.Errorf("second event %+v", e)
	}
	if e := evs[2]; !e.Deleted || e.Siblings != 0 || e.Revision != uint64(ts(3)) {
		t.Errorf("delete event %+v", e)
	}
}

func TestClockStorePurge(t *testing.T) {
	s := newClockStore(t)
	v := mint(t, consistency.DVV{}, consistency.VV{}, "a", "x", ts(1), false)
	tomb := mint(t, v, v.Context(), "a", "", ts(2), true)
	merge(t, s, "k", tomb, false)
	if ok, err := s.Purge(testPartition, "k", v.Encode(nil)); ok || err != nil {
		t.Fatalf("purge with a stale expectation: %v %v", ok, err)
	}
	if read(t, s, "k").Len() != 1 {
		t.Fatal("purged anyway")
	}
	if ok, err := s.Purge(testPartition, "absent", tomb.Encode(nil)); ok || err != nil {
		t.Fatalf("purge of an absent key: %v %v", ok, err)
	}
	if ok, err := s.Purge(testPartition, "k", tomb.Encode(nil)); !ok || err != nil {
		t.Fatalf("purge: %v %v", ok, err)
	}
	if _, found, _ := s.Read(testPartition, "k"); found {
		t.Fatal("still there after the purge")
	}
	if ok, _ := s.Purge(testPartition, "k", tomb.Encode(nil)); ok {
		t.Fatal("purged twice")
	}
}

func TestPurgeable(t *testing.T) {
	v := mint(t, consistency.DVV{}, consistency.VV{}, "a", "x", ts(10), false)
	tomb := mint(t, v, v.Context(), "a", "", ts(20), true)
	conc := mint(t, tomb, consistency.VV{}, "b", "y", ts(15), false) // a value beside the tombstone
	tombs := mint(t, tomb, consistency.VV{}, "b", "", ts(30), true)  // two concurrent tombstones
	for _, tc := range []struct {
		name   string
		d      consistency.DVV
		cutoff consistency.Timestamp
		want   bool
	}{
		{"empty", consistency.DVV{}, ts(100), false},
		{"value", v, ts(100), false},
		{"old tombstone", tomb, ts(21), true},
		{"tombstone at the cutoff", tomb, ts(20), false},
		{"young tombstone", tomb, ts(19), false},
		{"tombstone beside a value", conc, ts(100), false},
		{"two old tombstones", tombs, ts(31), true},
		{"newest tombstone young", tombs, ts(25), false},
	} {
		if got := purgeable(tc.d, tc.cutoff); got != tc.want {
			t.Errorf("%s: purgeable = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestResolve(t *testing.T) {
	a := mint(t, consistency.DVV{}, consistency.VV{}, "a", "x", ts(10), false)
	ab := mint(t, a, consistency.VV{}, "b", "y", ts(5), false)
	del := mint(t, ab, consistency.VV{}, "c", "", ts(20), true)
	onlyTomb := mint(t, a, a.Context(), "a", "", ts(20), true)
	for _, tc := range []struct {
		name                   string
		d                      consistency.DVV
		lww                    bool
		found, deleted         bool
		live                   []string
		newest                 string
		ctxA, ctxB, ctxC, nLen uint64
	}{
		{name: "absent", d: consistency.DVV{}, live: []string{}},
		{name: "one value", d: a, found: true, live: []string{"x"}, newest: "x", ctxA: 1},
		{name: "siblings", d: ab, found: true, live: []string{"x", "y"}, newest: "x", ctxA: 1, ctxB: 1},
		{name: "siblings lww", d: ab, lww: true, found: true, live: []string{"x"}, newest: "x", ctxA: 1, ctxB: 1},
		{name: "value beside a delete", d: del, found: true, deleted: true, live: []string{"x", "y"}, newest: "x", ctxA: 1, ctxB: 1, ctxC: 1},
		{name: "delete wins under lww", d: del, lww: true, deleted: true, live: []string{}, ctxA: 1, ctxB: 1, ctxC: 1},
		{name: "deleted", d: onlyTomb, deleted: true, live: []string{}, ctxA: 2},
	} {
		r := Resolve(tc.d, tc.lww)
		var got []string
		for _, s := range r.Live {
			got = append(got, string(s.Data))
		}
		slices.Sort(got)
		if got == nil {
			got = []string{}
		}
		if r.Found != tc.found || r.Deleted != tc.deleted || !slices.Equal(got, tc.live) || r.HasValue != tc.found ||
			(tc.found && string(r.Newest.Data) != tc.newest) ||
			r.Context.Get("a") != tc.ctxA || r.Context.Get("b") != tc.ctxB || r.Context.Get("c") != tc.ctxC {
			t.Errorf("%s: %+v", tc.name, r)
		}
	}
	// Ties on the timestamp go to the greater dot, under lww and for Newest.
	tie := mint(t, mint(t, consistency.DVV{}, consistency.VV{}, "b", "from-b", ts(7), false), consistency.VV{}, "a", "from-a", ts(7), false)
	if r := Resolve(tie, true); string(r.Newest.Data) != "from-b" {
		t.Errorf("lww tie: %+v", r)
	}
	if r := Resolve(tie, false); string(r.Newest.Data) != "from-b" || len(r.Live) != 2 {
		t.Errorf("newest of a tie: %+v", r)
	}
}
