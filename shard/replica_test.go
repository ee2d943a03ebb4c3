package shard

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/capkv/capkv/internal/kverrors"
)

func TestPutGetTombstone(t *testing.T) {
	r := openTest(t).Replica("accounts/eu/3")
	if r.ID() != "accounts/eu/3" {
		t.Fatalf("ID = %q", r.ID())
	}
	if _, found, err := r.Get("k"); err != nil || found {
		t.Fatalf("Get absent = found %v, %v", found, err)
	}
	want := Record{Value: []byte("v1"), Timestamp: 77, Version: 3, Causal: []byte("ctx")}
	if err := r.Put("k", want); err != nil {
		t.Fatal(err)
	}
	got, found, err := r.Get("k")
	if err != nil || !found || !sameRecord(got, want) {
		t.Fatalf("Get = %+v, %v, %v", got, found, err)
	}
	tomb := Record{Tombstone: true, Timestamp: 78, Version: 4}
	if err := r.Put("k", tomb); err != nil {
		t.Fatal(err)
	}
	got, found, err = r.Get("k")
	if err != nil || !found || !got.Tombstone || got.Version != 4 {
		t.Fatalf("Get tombstone = %+v, %v, %v", got, found, err)
	}
	if n, err := r.Count(); err != nil || n != 1 {
		t.Fatalf("Count = %d, %v (tombstones count)", n, err)
	}
}

func TestValuesDoNotAliasBadgerMemory(t *testing.T) {
	r := openTest(t).Replica("p")
	for i := range 200 {
		if err := r.Put(fmt.Sprintf("k%03d", i), rec(strings.Repeat(string(rune('a'+i%26)), 100+i*20))); err != nil {
			t.Fatal(err)
		}
	}
	var keys []string
	var vals [][]byte
	if err := r.Scan("", "", 0, false, func(k string, rec Record) bool {
		keys, vals = append(keys, k), append(vals, rec.Value)
		return true
	}); err != nil {
		t.Fatal(err)
	}
	// Churn Badger's buffers, then check what we were handed is unchanged.
	for i := range 200 {
		_ = r.Put(fmt.Sprintf("k%03d", i), rec(strings.Repeat("#", 100+i*20)))
	}
	for i, k := range keys {
		if k != fmt.Sprintf("k%03d", i) || string(vals[i]) != strings.Repeat(string(rune('a'+i%26)), 100+i*20) {
			t.Fatalf("entry %d changed after later writes: %q", i, k)
		}
	}
}

func TestLimitsRefuseAndStoreNothing(t *testing.T) {
	s := openTest(t, func(o *Options) { o.MaxKeySize = 16; o.MaxValueSize = 2048 })
	r := s.Replica("p")
	cases := []struct {
		name string
		key  string
		rec  Record
		want error
	}{
		{"empty key", "", rec("v"), kverrors.ErrInvalidArgument},
		{"key too large", strings.Repeat("k", 17), rec("v"), kverrors.ErrTooLarge},
		{"value too large", "k", Record{Value: make([]byte, 2049)}, kverrors.ErrTooLarge},
		{"causal too large", "k", Record{Causal: make([]byte, MaxCausalSize+1)}, kverrors.ErrTooLarge},
		{"tombstone with value", "k", Record{Tombstone: true, Value: []byte("x")}, kverrors.ErrInvalidArgument},
	}
	for _, c := range cases {
		if err := r.Put(c.key, c.rec); !errors.Is(err, c.want) {
			t.Errorf("Put %s: err = %v, want %v", c.name, err, c.want)
		}
		if err := r.Apply([]Mutation{{c.key, c.rec}}); !errors.Is(err, c.want) {
			t.Errorf("Apply %s: err = %v, want %v", c.name, err, c.want)
		}
		if _, err := r.Update(c.key, func(Record, bool) (Record, error) { return c.rec, nil }); !errors.Is(err, c.want) {
			t.Errorf("Update %s: err = %v, want %v", c.name, err, c.want)
		}
	}
	// Exactly at the limits is fine.
	if err := r.Put(strings.Repeat("k", 16), Record{Value: make([]byte, 2048)}); err != nil {
		t.Fatal(err)
	}
	if n, _ := r.Count(); n != 1 {
		t.Fatalf("Count = %d, want only the at-limit record", n)
	}
	if err := s.Replica("").Put("k", rec("v")); !errors.Is(err, kverrors.ErrInvalidArgument) {
		t.Errorf("empty partition id: %v", err)
	}
	if err := s.Replica(strings.Repeat("p", MaxPartitionIDLen+1)).Put("k", rec("v")); !errors.Is(err, kverrors.ErrInvalidArgument) {
		t.Errorf("long partition id: %v", err)
	}
	if ps, _ := s.Partitions(); !slices.Equal(ps, []string{"p"}) {
		t.Errorf("Partitions = %q", ps)
	}
}

// TestScanMatchesReference compares Scan with a brute-force filter of a map
// over random prefixes, cursors, limits and tombstones.
func TestScanMatchesReference(t *testing.T) {
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 1))
	r := openTest(t, func(o *Options) { o.SyncWrites = false }).Replica("p")
	ref := map[string]Record{}
	alphabet := "ab/\x00\xff"
	randKey := func(max int) string {
		b := make([]byte, rng.IntN(max+1))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		return string(b)
	}
	var batch []Mutation
	for range 400 {
		k := randKey(5)
		if k == "" {
			continue
		}
		rc := Record{Value: []byte("v" + k), Version: rng.Uint64()}
		if rng.IntN(4) == 0 {
			rc = Record{Tombstone: true, Version: rng.Uint64()}
		}
		ref[k] = rc
		batch = append(batch, Mutation{k, rc})
	}
	if err := r.Apply(batch); err != nil {
		t.Fatal(err)
	}
	keys := make([]string, 0, len(ref))
	for k := range ref {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for i := range 500 {
		prefix, after, limit, tombs := randKey(2), "", rng.IntN(6), rng.IntN(2) == 0
		if rng.IntN(2) == 0 {
			after = randKey(4)
		}
		var want []string
		for _, k := range keys {
			if strings.HasPrefix(k, prefix) && (after == "" || k > after) && (tombs || !ref[k].Tombstone) {
				if limit == 0 || len(want) < limit {
					want = append(want, k)
				}
			}
		}
		var got []string
		err := r.Scan(prefix, after, limit, tombs, func(k string, rc Record) bool {
			if !sameRecord(rc, ref[k]) {
				t.Fatalf("key %q: record %+v, want %+v", k, rc, ref[k])
			}
			got = append(got, k)
			return true
		})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("case %d Scan(%q, %q, %d, %v) = %q, want %q", i, prefix, after, limit, tombs, got, want)
		}
	}
	// fn returning false stops the scan.
	calls := 0
	_ = r.Scan("", "", 0, true, func(string, Record) bool { calls++; return calls < 3 })
	if calls != 3 {
		t.Fatalf("scan continued after false: %d calls", calls)
	}
	if err := r.Scan("", "", -1, true, func(string, Record) bool { return true }); !errors.Is(err, kverrors.ErrInvalidArgument) {
		t.Fatalf("negative limit: %v", err)
	}
}

func TestPartitionIsolation(t *testing.T) {
	s := openTest(t)
	p1, p10 := s.Replica("a/x/1"), s.Replica("a/x/10")
	// "0k" in a/x/1 would collide with "k" in a/x/10 under a naive
	// partition+key concatenation; the length prefix keeps them apart.
	if err := p1.Put("0k", rec("one")); err != nil {
		t.Fatal(err)
	}
	if err := p10.Put("k", rec("ten")); err != nil {
		t.Fatal(err)
	}
	if _, found, _ := p1.Get("k"); found {
		t.Fatal("a/x/1 sees a/x/10's key")
	}
	if _, found, _ := p10.Get("0k"); found {
		t.Fatal("a/x/10 sees a/x/1's key")
	}
	if m := dump(t, p1); len(m) != 1 || string(m["0k"].Value) != "one" {
		t.Fatalf("a/x/1 = %v", m)
	}
	if m := dump(t, p10); len(m) != 1 || string(m["k"].Value) != "ten" {
		t.Fatalf("a/x/10 = %v", m)
	}
	if ps, err := s.Partitions(); err != nil || !slices.Equal(ps, []string{"a/x/1", "a/x/10"}) {
		t.Fatalf("Partitions = %q, %v", ps, err)
	}
	if err := p1.Drop(); err != nil {
		t.Fatal(err)
	}
	if n, _ := p1.Count(); n != 0 {
		t.Fatalf("a/x/1 has %d after Drop", n)
	}
	if n, _ := p10.Count(); n != 1 {
		t.Fatalf("Drop of a/x/1 touched a/x/10: count %d", n)
	}
	if ps, _ := s.Partitions(); !slices.Equal(ps, []string{"a/x/10"}) {
		t.Fatalf("Partitions after Drop = %q", ps)
	}
}

func TestUpdateConcurrentCounter(t *testing.T) {
	r := openTest(t).Replica("counters/0")
	const workers, per = 8, 200
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range per {
				_, err := r.Update("n", func(cur Record, found bool) (Record, error) {
					var n uint64
					if found {
						n = binary.BigEndian.Uint64(cur.Value)
					}
					return Record{Value: binary.BigEndian.AppendUint64(nil, n+1), Version: cur.Version + 1}, nil
				})
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	// Blind Puts of another key in the same partition run alongside.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 100 {
			if err := r.Put(fmt.Sprintf("other%d", i), rec("x")); err != nil {
				errs <- err
				return
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got, _, err := r.Get("n")
	if err != nil {
		t.Fatal(err)
	}
	if n := binary.BigEndian.Uint64(got.Value); n != workers*per || got.Version != workers*per {
		t.Fatalf("counter = %d, version %d; want %d", n, got.Version, workers*per)
	}
}

// TestUpdateConflictsWithPut checks that Badger's conflict detection, not only
// the in-process stripe lock, protects Update: a Put of the key between
// Update's read and commit forces a retry that sees the Put.
func TestUpdateConflictsWithPut(t *testing.T) {
	r := openTest(t).Replica("p")
	if err := r.Put("k", rec("a")); err != nil {
		t.Fatal(err)
	}
	calls := 0
	got, err := r.Update("k", func(cur Record, _ bool) (Record, error) {
		calls++
		if calls == 1 {
			// A concurrent writer (not through Update) lands first.
			done := make(chan error)
			go func() { done <- r.Put("k", rec("b")) }()
			if err := <-done; err != nil {
				return Record{}, err
			}
		}
		return rec(string(cur.Value) + "+"), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if calls != 2 || string(got.Value) != "b+" {
		t.Fatalf("calls %d, result %q; want a retry producing b+", calls, got.Value)
	}
}

func TestUpdateAbortWritesNothing(t *testing.T) {
	r := openTest(t).Replica("p")
	if err := r.Put("k", rec("orig")); err != nil {
		t.Fatal(err)
	}
	errMine := errors.New("expectation failed")
	_, err := r.Update("k", func(cur Record, found bool) (Record, error) {
		if !found || string(cur.Value) != "orig" {
			t.Errorf("fn saw %+v, %v", cur, found)
		}
		return Record{}, fmt.Errorf("%w: %w", kverrors.ErrConflict, errMine)
	})
	if !errors.Is(err, errMine) || !errors.Is(err, kverrors.ErrConflict) {
		t.Fatalf("err = %v, want fn's error", err)
	}
	if _, err := r.Update("new", func(_ Record, found bool) (Record, error) {
		if found {
			t.Error("absent key reported found")
		}
		return Record{}, errMine
	}); !errors.Is(err, errMine) {
		t.Fatal(err)
	}
	if m := dump(t, r); len(m) != 1 || string(m["k"].Value) != "orig" {
		t.Fatalf("contents after aborted updates: %v", m)
	}
}

func TestApplyAllOrNothing(t *testing.T) {
	s := openTest(t, func(o *Options) { o.MemTableSize = 1 << 20 })
	r := s.Replica("p")
	if err := r.Put("keep", rec("orig")); err != nil {
		t.Fatal(err)
	}
	bad := []Mutation{{"a", rec("1")}, {"keep", rec("changed")}, {"", rec("bad")}, {"c", rec("3")}}
	if err := r.Apply(bad); !errors.Is(err, kverrors.ErrInvalidArgument) || !strings.Contains(err.Error(), "mutation 2") {
		t.Fatalf("err = %v", err)
	}
	if m := dump(t, r); len(m) != 1 || string(m["keep"].Value) != "orig" {
		t.Fatalf("partial batch written: %v", m)
	}
	// Over Badger's transaction limit (1 MiB memtable -> ~150 KB batches):
	// refused whole, never split.
	var big []Mutation
	for i := range 20000 {
		big = append(big, Mutation{fmt.Sprintf("big%06d", i), rec("v")})
	}
	if err := r.Apply(big); !errors.Is(err, kverrors.ErrTooLarge) {
		t.Fatalf("oversized batch: err = %v", err)
	}
	if n, _ := r.Count(); n != 1 {
		t.Fatalf("oversized batch left %d records, want 1", n)
	}
	good := []Mutation{{"a", rec("1")}, {"b", Record{Tombstone: true}}, {"a", rec("2")}}
	if err := r.Apply(good); err != nil {
		t.Fatal(err)
	}
	m := dump(t, r)
	if len(m) != 3 || string(m["a"].Value) != "2" || !m["b"].Tombstone {
		t.Fatalf("after Apply: %v", m)
	}
	if err := r.Apply(nil); err != nil {
		t.Fatal(err)
	}
}

func TestReopenKeepsData(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(t, dir)
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("v", 64<<10) // goes to the value log
	if err := s.Replica("p/1").Put("small", rec("s")); err != nil {
		t.Fatal(err)
	}
	if err := s.Replica("p/2").Put("big", rec(big)); err != nil {
		t.Fatal(err)
	}
	if err := s.Replica("p/2").Put("gone", Record{Tombstone: true, Version: 9}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openOpts(t, o)
	if got, ok, err := s.Replica("p/1").Get("small"); err != nil || !ok || string(got.Value) != "s" {
		t.Fatalf("small: %v %v %v", got, ok, err)
	}
	if got, ok, err := s.Replica("p/2").Get("big"); err != nil || !ok || string(got.Value) != big {
		t.Fatalf("big: ok=%v err=%v len=%d", ok, err, len(got.Value))
	}
	if got, ok, _ := s.Replica("p/2").Get("gone"); !ok || !got.Tombstone || got.Version != 9 {
		t.Fatalf("tombstone lost: %+v %v", got, ok)
	}
	if ps, _ := s.Partitions(); !slices.Equal(ps, []string{"p/1", "p/2"}) {
		t.Fatalf("Partitions = %q", ps)
	}
}

func TestCloseIdempotentAndAfterClose(t *testing.T) {
	s, err := Open(testOptions(t, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	r := s.Replica("p")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := r.Put("k", rec("v")); !errors.Is(err, kverrors.ErrUnavailable) {
		t.Fatalf("Put after Close: %v", err)
	}
	if _, _, err := r.Get("k"); !errors.Is(err, kverrors.ErrUnavailable) {
		t.Fatalf("Get after Close: %v", err)
	}
	if _, err := s.Partitions(); !errors.Is(err, kverrors.ErrUnavailable) {
		t.Fatalf("Partitions after Close: %v", err)
	}
}

func TestCloseWaitsForScanAndReentrantCallsFail(t *testing.T) {
	s, err := Open(testOptions(t, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	r := s.Replica("p")
	for i := range 3 {
		if err := r.Put(fmt.Sprint(i), rec("v")); err != nil {
			t.Fatal(err)
		}
	}
	closed := make(chan error)
	var reentrant error
	err = r.Scan("", "", 0, false, func(k string, _ Record) bool {
		if k == "0" {
			go func() { closed <- s.Close() }()
			// Wait until Close is waiting for us, then call back in.
			for {
				s.mu.Lock()
				c := s.mu.closed
				s.mu.Unlock()
				if c {
					break
				}
				time.Sleep(time.Millisecond)
			}
			_, _, reentrant = r.Get("1")
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(reentrant, kverrors.ErrUnavailable) {
		t.Fatalf("call during Close: %v", reentrant)
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
}

func TestOptionsValidate(t *testing.T) {
	if err := DefaultOptions("/tmp/x").Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	if err := (Options{Dir: "/tmp/x"}).Validate(); err != nil {
		t.Fatalf("zero fields mean defaults: %v", err)
	}
	o := Options{MaxKeySize: -1, MaxValueSize: 1 << 30, MemTableSize: 1000, BlockCacheSize: -5, IndexCacheSize: -6, ValueThreshold: 5 << 20, ValueLogFileSize: 10}
	err := o.Validate()
	if !errors.Is(err, kverrors.ErrInvalidArgument) {
		t.Fatalf("err = %v", err)
	}
	for _, want := range []string{`Dir = ""`, "MaxKeySize = -1", "MaxValueSize = 1073741824", "MemTableSize = 1000",
		"BlockCacheSize = -5", "IndexCacheSize = -6", "ValueThreshold = 5242880", "ValueLogFileSize = 10"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not report %q:\n%v", want, err)
		}
	}
	if _, err := Open(o); !errors.Is(err, kverrors.ErrInvalidArgument) {
		t.Fatalf("Open accepted bad options: %v", err)
	}
}

func TestStoreAppliesDefaults(t *testing.T) {
	s := openOpts(t, Options{Dir: t.TempDir()})
	got := s.Options()
	if got.MaxKeySize != defaultMaxKeySize || got.MaxValueSize != defaultMaxValueSize || got.MemTableSize != defaultMemTableSize {
		t.Fatalf("defaults not applied: %+v", got)
	}
}

func TestSize(t *testing.T) {
	o := testOptions(t, t.TempDir())
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if err := s.Replica("p").Put(fmt.Sprint(i), rec(strings.Repeat("v", 8<<10))); err != nil {
			t.Fatal(err)
		}
	}
	lsm, vlog := s.Size()
	t.Logf("after writes: lsm %d, vlog %d", lsm, vlog)
	// Values are 800 KiB in all; the preallocated value log file is 128 MiB
	// long but sparse, and Size counts what is on disk.
	if vlog < 100*8<<10 || vlog > 8<<20 {
		t.Fatalf("vlog size %d, want about the %d bytes of values written", vlog, 100*8<<10)
	}
	if err := s.Close(); err != nil { // flushes the memtable into an .sst
		t.Fatal(err)
	}
	s = openOpts(t, o)
	lsm, vlog = s.Size()
	t.Logf("after reopen: lsm %d, vlog %d", lsm, vlog)
	if lsm == 0 {
		t.Fatal("lsm size 0 after a memtable flush")
	}
}

func TestDropIsRolledForwardOnOpen(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(t, dir)
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		_ = s.Replica("p").Put(fmt.Sprint(i), rec("v"))
		_ = s.Replica("q").Put(fmt.Sprint(i), rec("v"))
	}
	// A crash right after the marker was committed: nothing deleted yet.
	if err := s.setPending("p", opDrop, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openOpts(t, o)
	if n, _ := s.Replica("p").Count(); n != 0 {
		t.Fatalf("interrupted Drop not finished: %d left", n)
	}
	if n, _ := s.Replica("q").Count(); n != 50 {
		t.Fatalf("other partition touched: %d", n)
	}
	assertNoStagingOrMarkers(t, s)
}
