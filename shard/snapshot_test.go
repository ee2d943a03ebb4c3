package shard

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/capkv/capkv/internal/kverrors"
)

// assertNoStagingOrMarkers checks that no Import staging data or pending
// marker is left behind.
func assertNoStagingOrMarkers(t *testing.T, s *Store) {
	t.Helper()
	for _, p := range [][]byte{{NamespaceStaging}, {NamespaceMeta, 'p'}} {
		n := 0
		_ = s.db.View(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: p})
			defer it.Close()
			for it.Rewind(); it.Valid(); it.Next() {
				n++
			}
			return nil
		})
		if n != 0 {
			t.Fatalf("%d keys left under %q", n, p)
		}
	}
}

func fill(t *testing.T, r *Replica, n int, tag string) map[string]Record {
	t.Helper()
	var batch []Mutation
	for i := range n {
		rc := Record{Value: []byte(fmt.Sprintf("%s-%d", tag, i)), Timestamp: 100, Version: uint64(i)}
		switch i % 5 {
		case 1:
			rc = Record{Tombstone: true, Version: uint64(i), Causal: []byte("dvv")}
		case 2:
			rc.Value = bytes.Repeat([]byte(tag), 1000+i) // value log
		}
		batch = append(batch, Mutation{fmt.Sprintf("key/%04d", i), rc})
	}
	if err := r.Apply(batch); err != nil {
		t.Fatal(err)
	}
	return dump(t, r)
}

func sameContents(a, b map[string]Record) bool {
	return maps.EqualFunc(a, b, sameRecord)
}

func export(t *testing.T, r *Replica) []byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := r.Export(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestExportImportRoundTrip(t *testing.T) {
	src := openTest(t).Replica("accounts/eu/3")
	want := fill(t, src, 60, "src")
	var buf bytes.Buffer
	n, err := src.Export(&buf)
	if err != nil || n != 60 {
		t.Fatalf("Export = %d, %v", n, err)
	}
	dstStore := openTest(t)
	dst := dstStore.Replica("accounts/eu/3")
	fill(t, dst, 80, "old") // replaced, including keys the stream does not have
	other := dstStore.Replica("accounts/eu/30")
	otherWant := fill(t, other, 5, "other")
	n, err = dst.Import(bytes.NewReader(buf.Bytes()))
	if err != nil || n != 60 {
		t.Fatalf("Import = %d, %v", n, err)
	}
	if got := dump(t, dst); !sameContents(got, want) {
		t.Fatalf("imported contents differ: %d vs %d records", len(got), len(want))
	}
	if !sameContents(dump(t, other), otherWant) {
		t.Fatal("import touched another partition")
	}
	if c, _ := dst.Count(); c != 60 {
		t.Fatalf("Count = %d", c)
	}
	// Tombstone metadata survives (Scan skips them without reading values).
	live := 0
	_ = dst.Scan("", "", 0, false, func(string, Record) bool { live++; return true })
	if live != 48 {
		t.Fatalf("live records after import = %d, want 48", live)
	}
	assertNoStagingOrMarkers(t, dstStore)
	// The export of the import is byte-identical: the format is canonical.
	if !bytes.Equal(export(t, dst), buf.Bytes()) {
		t.Fatal("re-export differs")
	}
	// Empty partition round trip.
	var empty bytes.Buffer
	if n, err := dstStore.Replica("none").Export(&empty); err != nil || n != 0 {
		t.Fatalf("empty export = %d, %v", n, err)
	}
	if n, err := dstStore.Replica("none").Import(&empty); err != nil || n != 0 {
		t.Fatalf("empty import = %d, %v", n, err)
	}
}

func TestImportPartitionMismatch(t *testing.T) {
	s := openTest(t)
	fill(t, s.Replica("a"), 3, "a")
	stream := export(t, s.Replica("a"))
	if _, err := s.Replica("b").Import(bytes.NewReader(stream)); !errors.Is(err, kverrors.ErrInvalidArgument) {
		t.Fatalf("mismatched import: %v", err)
	}
	if n, _ := s.Replica("b").Count(); n != 0 {
		t.Fatal("refused import wrote data")
	}
	if n, err := s.Replica("b").ImportWithOptions(bytes.NewReader(stream), ImportOptions{AllowPartitionMismatch: true}); err != nil || n != 3 {
		t.Fatalf("allowed mismatched import = %d, %v", n, err)
	}
}

func TestImportRefusesEntriesOverLimits(t *testing.T) {
	src := openTest(t).Replica("p")
	if err := src.Put(strings.Repeat("k", 100), rec("v")); err != nil {
		t.Fatal(err)
	}
	dst := openTest(t, func(o *Options) { o.MaxKeySize = 50 }).Replica("p")
	if _, err := dst.Import(bytes.NewReader(export(t, src))); !errors.Is(err, kverrors.ErrTooLarge) {
		t.Fatalf("err = %v", err)
	}
}

// TestImportCorruptOrTruncatedLeavesTargetUntouched flips bytes at every
// position of a stream, and truncates it at every length: each Import must
// fail and leave the target exactly as it was.
func TestImportCorruptOrTruncatedLeavesTargetUntouched(t *testing.T) {
	src := openTest(t).Replica("p")
	var batch []Mutation
	for i := range 8 {
		rc := Record{Value: []byte(fmt.Sprint("value-", i)), Version: uint64(i), Timestamp: 5}
		if i == 3 {
			rc = Record{Tombstone: true, Causal: []byte{1, 2}}
		}
		batch = append(batch, Mutation{fmt.Sprint("k", i), rc})
	}
	if err := src.Apply(batch); err != nil {
		t.Fatal(err)
	}
	stream := export(t, src)
	t.Logf("stream is %d bytes", len(stream))
	dstStore := openTest(t, func(o *Options) { o.SyncWrites = false })
	dst := dstStore.Replica("p")
	before := fill(t, dst, 7, "before")

	checkReader := func(what string, rd io.Reader) {
		t.Helper()
		n, err := dst.Import(rd)
		if err == nil {
			t.Fatalf("%s: Import accepted a bad stream (%d entries)", what, n)
		}
		if !errors.Is(err, kverrors.ErrInternal) && !errors.Is(err, kverrors.ErrTooLarge) && !errors.Is(err, kverrors.ErrInvalidArgument) {
			t.Fatalf("%s: unclassified error %v", what, err)
		}
		if !sameContents(dump(t, dst), before) {
			t.Fatalf("%s: target changed (err %v)", what, err)
		}
	}
	check := func(what string, b []byte) { t.Helper(); checkReader(what, bytes.NewReader(b)) }
	for pos := range stream {
		for _, bit := range []byte{0x01, 0x80} {
			c := bytes.Clone(stream)
			c[pos] ^= bit
			check(fmt.Sprintf("flip %#x at %d", bit, pos), c)
		}
	}
	for n := range len(stream) {
		check(fmt.Sprintf("truncated to %d", n), stream[:n])
	}
	check("trailing byte", append(bytes.Clone(stream), 0))
	checkReader("reader error", io.MultiReader(bytes.NewReader(stream[:len(stream)/2]), errReader{}))
	assertNoStagingOrMarkers(t, dstStore)
	// The intact stream still imports.
	if _, err := dst.Import(bytes.NewReader(stream)); err != nil {
		t.Fatal(err)
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

func TestImportSwapIsRolledForwardOnOpen(t *testing.T) {
	src := openTest(t).Replica("p")
	want := fill(t, src, 30, "new")
	stream := export(t, src)

	o := testOptions(t, t.TempDir())
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	fill(t, s.Replica("p"), 40, "old")
	// Stage and mark, then "crash" before the swap.
	r := s.Replica("p")
	er, err := newExportReader(bytes.NewReader(stream), 1<<20, 2<<20)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.stage(er, stagingPrefix("p", 7)); err != nil {
		t.Fatal(err)
	}
	if err := s.setPending("p", opImport, 7); err != nil {
		t.Fatal(err)
	}
	// Crash mid-swap: old data deleted, part of the new data copied.
	if err := s.deletePrefix(r.prefix); err != nil {
		t.Fatal(err)
	}
	if err := r.Put("key/0000", rec("half-copied")); err != nil {
		t.Fatal(err)
	}
	// Also an orphan staging area of an Import that never got its marker.
	er, _ = newExportReader(bytes.NewReader(stream), 1<<20, 2<<20)
	if _, err := r.stage(er, stagingPrefix("p", 8)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openOpts(t, o)
	if got := dump(t, s.Replica("p")); !sameContents(got, want) {
		t.Fatalf("interrupted import not rolled forward: %d records, want %d", len(got), len(want))
	}
	assertNoStagingOrMarkers(t, s)
}
