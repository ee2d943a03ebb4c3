package shard

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/capkv/capkv/internal/kverrors"
)

func openRaftLog(t *testing.T, s *Store, group string) *RaftLog {
	t.Helper()
	l, err := s.RaftLog(group)
	if err != nil {
		t.Fatalf("RaftLog(%q): %v", group, err)
	}
	return l
}

func appendRange(t *testing.T, l *RaftLog, first, last uint64) {
	t.Helper()
	var es []LogEntry
	for i := first; i <= last; i++ {
		es = append(es, LogEntry{Index: i, Data: []byte(fmt.Sprintf("entry-%d", i))})
	}
	if err := l.Append(es); err != nil {
		t.Fatalf("Append %d-%d: %v", first, last, err)
	}
}

func checkBounds(t *testing.T, l *RaftLog, first, last uint64) {
	t.Helper()
	if f, la := l.FirstIndex(), l.LastIndex(); f != first || la != last {
		t.Fatalf("bounds of %q = %d..%d, want %d..%d", l.group, f, la, first, last)
	}
}

func checkEntry(t *testing.T, l *RaftLog, index uint64, want bool) {
	t.Helper()
	got, ok, err := l.Entry(index)
	if err != nil || ok != want {
		t.Fatalf("Entry(%d) found=%v err=%v, want found=%v", index, ok, err, want)
	}
	if ok && string(got) != fmt.Sprintf("entry-%d", index) {
		t.Fatalf("Entry(%d) = %q", index, got)
	}
}

// reopen closes the store and opens it again on the same directory.
func reopen(t *testing.T, s *Store) *Store {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return openOpts(t, s.Options())
}

func TestRaftLogBoundsSurviveReopen(t *testing.T) {
	s := openTest(t)
	l := openRaftLog(t, s, "a/x/1")
	// A group whose id extends another's must not see its entries.
	other := openRaftLog(t, s, "a/x/10")
	checkBounds(t, l, 0, 0)
	appendRange(t, l, 1, 60)
	appendRange(t, l, 61, 100)
	appendRange(t, other, 500, 500)
	checkBounds(t, l, 1, 100)
	if err := l.DeleteRange(1, 30); err != nil { // compaction of the front
		t.Fatal(err)
	}
	if err := l.DeleteRange(91, 100); err != nil { // truncation of a conflicting tail
		t.Fatal(err)
	}
	checkBounds(t, l, 31, 90)
	if err := l.SetStable([]byte("CurrentTerm"), []byte{7}); err != nil {
		t.Fatal(err)
	}

	s = reopen(t, s)
	l = openRaftLog(t, s, "a/x/1")
	checkBounds(t, l, 31, 90)
	checkEntry(t, l, 30, false)
	checkEntry(t, l, 31, true)
	checkEntry(t, l, 90, true)
	checkEntry(t, l, 91, false)
	if v, ok, err := l.Stable([]byte("CurrentTerm")); err != nil || !ok || !bytes.Equal(v, []byte{7}) {
		t.Fatalf("Stable after reopen = %v, %v, %v", v, ok, err)
	}
	checkBounds(t, openRaftLog(t, s, "a/x/10"), 500, 500)
	checkBounds(t, openRaftLog(t, s, "a/x/100"), 0, 0)
}

// TestRaftLogKeyLayout pins the Badger keys: data directories written before
// RaftLog existed (by replication/cp directly) must still open.
func TestRaftLogKeyLayout(t *testing.T) {
	s := openTest(t)
	l := openRaftLog(t, s, "g/1")
	appendRange(t, l, 0x0102, 0x0102)
	if err := l.SetStable([]byte("LastVoteCand"), []byte("n2")); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"r\x03g/1l\x00\x00\x00\x00\x00\x00\x01\x02": "entry-258",
		"r\x03g/1sLastVoteCand":                     "n2",
	}
	got := map[string]string{}
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, Prefix: []byte{NamespaceRaft}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			got[string(it.Item().Key())] = string(v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("raft keys = %q, want %q", got, want)
	}
}

func TestRaftLogDeleteRange(t *testing.T) {
	s := openTest(t)
	l := openRaftLog(t, s, "a/x/1")
	appendRange(t, l, 1, 20)
	for _, c := range []struct {
		min, max    uint64
		first, last uint64
	}{
		{0, 0, 1, 20},   // index 0 is never stored: nothing to do
		{8, 10, 1, 20},  // a hole in the middle leaves the bounds alone
		{1, 3, 4, 20},   // front
		{18, 25, 4, 17}, // tail, past the end
		{1, 100, 0, 0},  // everything
	} {
		if err := l.DeleteRange(c.min, c.max); err != nil {
			t.Fatal(err)
		}
		checkBounds(t, l, c.first, c.last)
	}
	for i := uint64(1); i <= 20; i++ {
		checkEntry(t, l, i, false)
	}
	// A log emptied by DeleteRange takes new entries like a fresh one.
	appendRange(t, l, 21, 22)
	checkBounds(t, l, 21, 22)
}

func TestRaftLogDrop(t *testing.T) {
	s := openTest(t)
	l := openRaftLog(t, s, "a/x/1")
	keep := openRaftLog(t, s, "a/x/10")
	appendRange(t, l, 1, 10)
	appendRange(t, keep, 1, 10)
	for _, g := range []*RaftLog{l, keep} {
		if err := g.SetStable([]byte("CurrentTerm"), []byte{3}); err != nil {
			t.Fatal(err)
		}
	}
	// The partition's data shares the id but not the namespace.
	if err := s.Replica("a/x/1").Put("k", rec("v")); err != nil {
		t.Fatal(err)
	}
	if err := l.Drop(); err != nil {
		t.Fatal(err)
	}
	checkBounds(t, l, 0, 0)
	checkEntry(t, l, 5, false)
	if _, ok, err := l.Stable([]byte("CurrentTerm")); ok || err != nil {
		t.Fatalf("stable value survived Drop: %v, %v", ok, err)
	}

	s = reopen(t, s)
	checkBounds(t, openRaftLog(t, s, "a/x/1"), 0, 0)
	keep = openRaftLog(t, s, "a/x/10")
	checkBounds(t, keep, 1, 10)
	checkEntry(t, keep, 5, true)
	if _, ok, _ := keep.Stable([]byte("CurrentTerm")); !ok {
		t.Fatal("Drop removed another group's stable value")
	}
	if _, ok, err := s.Replica("a/x/1").Get("k"); !ok || err != nil {
		t.Fatalf("Drop removed partition data: %v, %v", ok, err)
	}
}

func TestRaftLogClosedStore(t *testing.T) {
	s := openTest(t)
	l := openRaftLog(t, s, "a/x/1")
	appendRange(t, l, 1, 5)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	unavailable := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, kverrors.ErrUnavailable) {
			t.Errorf("%s after Close: %v, want ErrUnavailable", what, err)
		}
	}
	_, err := s.RaftLog("a/x/2")
	unavailable("RaftLog", err)
	unavailable("Append", l.Append([]LogEntry{{Index: 6, Data: []byte("x")}}))
	_, _, err = l.Entry(1)
	unavailable("Entry", err)
	unavailable("DeleteRange", l.DeleteRange(1, 2))
	unavailable("SetStable", l.SetStable([]byte("k"), []byte("v")))
	_, _, err = l.Stable([]byte("k"))
	unavailable("Stable", err)
	unavailable("Drop", l.Drop())
	// Nothing was written, and the cached bounds say so.
	checkBounds(t, l, 1, 5)
}

func TestRaftLogRejectsBadInput(t *testing.T) {
	s := openTest(t)
	for _, g := range []string{"", strings.Repeat("g", MaxPartitionIDLen+1)} {
		if _, err := s.RaftLog(g); !errors.Is(err, kverrors.ErrInvalidArgument) {
			t.Errorf("RaftLog(%d-byte id) err = %v, want ErrInvalidArgument", len(g), err)
		}
	}
	l := openRaftLog(t, s, "a/x/1")
	huge := bytes.Repeat([]byte("k"), maxBadgerKey)
	if err := l.SetStable(huge, []byte("v")); !errors.Is(err, kverrors.ErrTooLarge) {
		t.Errorf("SetStable(huge key) err = %v, want ErrTooLarge", err)
	}
	if _, _, err := l.Stable(huge); !errors.Is(err, kverrors.ErrTooLarge) {
		t.Errorf("Stable(huge key) err = %v, want ErrTooLarge", err)
	}
	if err := l.Append(nil); err != nil {
		t.Errorf("Append(nil) = %v", err)
	}
	checkBounds(t, l, 0, 0)
}

// TestRaftLogConcurrentGroups appends from many groups at once, the way a
// node's Raft groups share the group commit, and checks each group got
// exactly its own entries.
func TestRaftLogConcurrentGroups(t *testing.T) {
	s := openTest(t)
	const groups, batches = 8, 20
	logs := make([]*RaftLog, groups)
	for g := range logs {
		logs[g] = openRaftLog(t, s, fmt.Sprintf("a/x/%d", g))
	}
	var wg sync.WaitGroup
	for _, l := range logs {
		wg.Go(func() {
			for b := range uint64(batches) {
				es := []LogEntry{{Index: 2*b + 1, Data: []byte(fmt.Sprintf("entry-%d", 2*b+1))}, {Index: 2*b + 2, Data: []byte(fmt.Sprintf("entry-%d", 2*b+2))}}
				if err := l.Append(es); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	s = reopen(t, s)
	for g := range groups {
		l := openRaftLog(t, s, fmt.Sprintf("a/x/%d", g))
		checkBounds(t, l, 1, 2*batches)
		for i := uint64(1); i <= 2*batches; i++ {
			checkEntry(t, l, i, true)
		}
	}
}

func TestRaftGroups(t *testing.T) {
	s := openTest(t)
	for _, g := range []string{"a/x/10", "a/x/1", "b/*/0"} {
		appendRange(t, openRaftLog(t, s, g), 1, 3)
	}
	if err := openRaftLog(t, s, "c/*/0").SetStable([]byte("CurrentTerm"), []byte{1}); err != nil {
		t.Fatal(err)
	}
	// Data of another partition is not a raft group.
	if err := s.Replica("d/*/0").Put("k", rec("v")); err != nil {
		t.Fatal(err)
	}
	got, err := s.RaftGroups()
	if err != nil {
		t.Fatal(err)
	}
	// Key order: the length prefix sorts "a/x/1" (5 bytes) before "a/x/10".
	want := []string{"a/x/1", "b/*/0", "c/*/0", "a/x/10"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("RaftGroups = %q, want %q", got, want)
	}
	if err := openRaftLog(t, s, "b/*/0").Drop(); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.RaftGroups(); strings.Join(got, " ") != "a/x/1 c/*/0 a/x/10" {
		t.Fatalf("RaftGroups after a Drop = %q", got)
	}
}

// Dropping one group's log must not fail the writes of the others (Badger's
// DropPrefix blocks every write of the store while it runs; a cp state
// machine that cannot write stops the node).
func TestRaftLogDropLeavesOtherWritesAlone(t *testing.T) {
	s := openTest(t)
	gone := openRaftLog(t, s, "gone/*/0")
	for i := uint64(0); i < 20; i++ {
		appendRange(t, gone, i*100+1, i*100+100)
	}
	keep := openRaftLog(t, s, "keep/*/0")
	errc := make(chan error, 1)
	stop := make(chan struct{})
	go func() {
		defer close(errc)
		for i := uint64(1); i <= 100000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := keep.Append([]LogEntry{{Index: i, Data: []byte("x")}}); err != nil {
				errc <- fmt.Errorf("append %d while another group's log is dropped: %w", i, err)
				return
			}
			if err := s.Replica("keep/*/0").Put(fmt.Sprint(i), rec("v")); err != nil {
				errc <- fmt.Errorf("put %d while another group's log is dropped: %w", i, err)
				return
			}
		}
	}()
	for range 5 {
		if err := gone.Drop(); err != nil {
			t.Fatal(err)
		}
		appendRange(t, gone, 1, 500)
	}
	close(stop)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}
