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

// The per-side checkers judge only operations inside a window, past its
// grace, on a node of one of its sides: ap must answer when a replica is on
// the client's side, cp must not answer without a majority there.
func TestSideCheckers(t *testing.T) {
	w := Window{Fault: "split", Start: 0, End: int64(10 * time.Second),
		Sides: map[string]string{"n1": "majority", "n2": "majority", "n3": "majority", "n4": "minority", "n5": "minority"}}
	addr := map[string]string{"a1": "n1", "a4": "n4", "a5": "n5"}
	reps := map[string][]string{"k1": {"n1", "n2", "n4"}, "k2": {"n1", "n2", "n3"}}
	replicas := func(k string) []string { return reps[k] }
	at := func(node, key string, out Outcome) Op {
		return Op{Kind: Write, Key: key, Node: node, Outcome: out, Call: int64(5 * time.Second), Return: int64(6 * time.Second)}
	}
	ops := []Op{
		at("a4", "k1", Fail), // ap: n4 holds a replica of k1: a refusal
		at("a5", "k2", Fail), // ap: no replica of k2 on its side: not judged
		at("a1", "k2", OK),   // majority side
		at("a4", "k1", OK),   // cp: 1 of 3 replicas on its side: served, a violation
		at("a5", "k2", OK),   // cp: 0 of 3: a violation
		{Kind: Write, Key: "k1", Node: "a4", Outcome: OK, Call: 0, Return: int64(time.Second)}, // within the grace
	}
	a := CheckAPAvailability(ops, []Window{w}, addr, replicas)
	if a.Checked != 3 || a.Refused != 1 {
		t.Errorf("ap availability %+v, want 3 checked (the ops with a replica on their side), 1 refused", a)
	}
	c := CheckCPCutOff(ops, []Window{w}, addr, replicas)
	if c.Checked != 4 || c.Served != 2 {
		t.Errorf("cp cut-off %+v, want 4 checked (minority ops), 2 served", c)
	}
}
