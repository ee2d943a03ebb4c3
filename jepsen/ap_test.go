package jepsen

import (
	"testing"
	"time"
)

func TestStaleReads(t *testing.T) {
	ms := func(n int) int64 { return int64(time.Duration(n) * time.Millisecond) }
	w := func(v string, call, ret int, out Outcome) Op {
		return Op{Kind: Write, Key: "k", Value: v, Call: ms(call), Return: ms(ret), Outcome: out}
	}
	r := func(call int, v string, sibs ...string) Op {
		return Op{Kind: Read, Key: "k", Read: v, Found: v != "", Siblings: sibs, Call: ms(call), Return: ms(call + 1), Outcome: OK, Level: "one"}
	}
	ops := []Op{
		w("a", 0, 1, OK),
		w("b", 2, 3, OK),
		r(5, "b"),      // fresh
		r(6, "a"),      // stale: b completed before the read began, after a completed
		r(7, "a", "b"), // siblings: as fresh as its freshest value, b
		r(8, ""),       // absent after two acknowledged writes: stale
		w("c", 9, 500, OK),
		r(10, "b"),    // c has not completed yet: not stale
		r(600, "zzz"), // a value no write produced: not judged here
		w("d", 700, 701, Unknown),
		r(2000, "c"), // d may not have happened: fresh
	}
	got := StaleReads(ops)
	if got.Reads != 6 || got.Stale != 2 {
		t.Fatalf("reads %d stale %d, want 6 and 2: %+v", got.Reads, got.Stale, got)
	}
	// By time since the latest completed write: the read at 2000 ms comes
	// 1.5 s after c completed.
	if b := got.Buckets[len(got.Buckets)-1]; b.Reads != 1 || b.Stale != 0 {
		t.Errorf(">=1s bucket %+v, want 1 read, 0 stale", b)
	}
}
