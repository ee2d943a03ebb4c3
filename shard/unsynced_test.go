package shard

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The rebuild markers follow the store's last stop: a clean close or a
// process crash (same boot) keeps unsynced writes, a stop with the store open
// under another boot (or with no boot ID to compare) may have lost them.
func TestNeedsRebuildAfterMachineCrash(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(t, dir)
	open := func() *Store {
		t.Helper()
		s, err := Open(o)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return s
	}
	needs := func(s *Store, p string) bool {
		t.Helper()
		n, err := s.Replica(p).NeedsRebuild()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	// leftOpen makes the last stop look like one with the store open,
	// under the given boot ID.
	leftOpen := func(boot string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, bootFile), []byte("boot="+boot+"\nstate=open\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	s := open()
	if err := s.Replica("cp1").ApplyNoSync([]Mutation{{Key: "k", Record: rec("v")}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Replica("ap1").Apply([]Mutation{{Key: "k", Record: rec("v")}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = open() // clean close: nothing to rebuild
	if needs(s, "cp1") || needs(s, "ap1") {
		t.Fatal("rebuild asked for after a clean close")
	}
	s.Close()

	leftOpen(currentBootID()) // a process crash: the page cache kept everything
	s = open()
	if needs(s, "cp1") {
		t.Fatal("rebuild asked for after a crash of the process only")
	}
	s.Close()

	leftOpen("an-earlier-boot") // the machine went down with the store open
	s = open()
	if !needs(s, "cp1") {
		t.Fatal("no rebuild of a partition with unsynced writes after a machine crash")
	}
	if needs(s, "ap1") {
		t.Fatal("rebuild asked for a partition that took only synced writes")
	}
	if got := dump(t, s.Replica("cp1")); string(got["k"].Value) != "v" {
		t.Fatalf("the data stays for the owner to rebuild: %v", got)
	}
	s.Close()

	// The marker stays until the owner says the rebuild is done, across a
	// process crash in between.
	leftOpen(currentBootID())
	s = open()
	if !needs(s, "cp1") {
		t.Fatal("the rebuild marker did not survive a restart")
	}
	if err := s.Replica("cp1").RebuildDone(); err != nil {
		t.Fatal(err)
	}
	if needs(s, "cp1") {
		t.Fatal("RebuildDone kept the marker")
	}
	s.Close()

	// Without a boot ID every stop with the store open counts.
	defer func(p string) { bootIDPath = p }(bootIDPath)
	bootIDPath = filepath.Join(dir, "no-such-file")
	leftOpen("")
	s = open()
	defer s.Close()
	if !needs(s, "cp1") {
		t.Fatal("no rebuild after an unclean stop with no boot ID to compare")
	}
}

func TestBootStateUnreadableIsRefused(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, bootFile), []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := Open(testOptions(t, dir))
	if err == nil {
		s.Close()
		t.Fatal("Open accepted an unreadable boot state")
	}
	if !strings.Contains(err.Error(), `"state=open"`) {
		t.Fatalf("the error gives no way out: %v", err)
	}
	// The way out it gives works: the store opens as one left open by a crash.
	if err := os.WriteFile(filepath.Join(dir, bootFile), []byte("state=open\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err = Open(testOptions(t, dir))
	if err != nil {
		t.Fatalf("Open after the suggested fix: %v", err)
	}
	s.Close()
}

// A WAL retired by a rotation is fsynced by the next durable write's sync,
// even though Badger's DB.Sync covers only the active one.
func TestSyncAllCoversRetiredWALs(t *testing.T) {
	s := openTest(t, func(o *Options) { o.MemTableSize = 1 << 20 })
	r := s.Replica("p")
	small := make([]byte, 900) // under ValueThreshold: in the WAL, not the value log
	retired := 0
	for i := 0; i < 200 && retired == 0; i++ {
		// Unsynced writes fill the memtable; a durable one follows.
		var batch []Mutation
		for j := range 50 {
			batch = append(batch, Mutation{Key: fmt.Sprint("u", i, "/", j), Record: Record{Value: small, Timestamp: 1, Version: 1}})
		}
		if err := r.ApplyNoSync(batch); err != nil {
			t.Fatal(err)
		}
		if err := r.Put(fmt.Sprint("d", i), rec("v")); err != nil {
			t.Fatal(err)
		}
		s.syncMu.Lock()
		wals := s.walList
		for _, w := range wals[:max(len(wals)-1, 0)] {
			if !s.retiredSynced[w] {
				if _, err := os.Stat(w); err == nil {
					s.syncMu.Unlock()
					t.Fatalf("after a durable write: retired WAL %s exists and was not fsynced (WALs %v)", w, wals)
				}
			}
			retired++
		}
		s.syncMu.Unlock()
	}
	if retired == 0 {
		t.Fatal("no WAL was retired: the test wrote too little to rotate the memtable")
	}
}
