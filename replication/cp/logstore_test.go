package cp

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/capkv/capkv/shard"
)

func openShard(t testing.TB, dir string) *shard.Store {
	t.Helper()
	st, err := shard.Open(shard.DefaultOptions(dir))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func openLogStore(t testing.TB, st *shard.Store, group string) *LogStore {
	t.Helper()
	rl, err := st.RaftLog(group)
	if err != nil {
		t.Fatal(err)
	}
	return NewLogStore(rl)
}

func TestLogStoreContract(t *testing.T) {
	dir := t.TempDir()
	st := openShard(t, dir)
	s := openLogStore(t, st, "accounts/eu/1")
	// A group whose id is a prefix of another must not see its entries.
	other := openLogStore(t, st, "accounts/eu/10")
	if f, _ := s.FirstIndex(); f != 0 {
		t.Fatalf("empty FirstIndex = %d", f)
	}
	var logs []*raft.Log
	now := time.Unix(1700000000, 123)
	for i := uint64(1); i <= 100; i++ {
		logs = append(logs, &raft.Log{Index: i, Term: 1 + i/50, Type: raft.LogCommand, Data: []byte{byte(i)}, AppendedAt: now})
	}
	if err := s.StoreLogs(logs[:60]); err != nil {
		t.Fatal(err)
	}
	for _, l := range logs[60:] {
		if err := s.StoreLog(l); err != nil {
			t.Fatal(err)
		}
	}
	if err := other.StoreLog(&raft.Log{Index: 500, Term: 9}); err != nil {
		t.Fatal(err)
	}
	check := func(first, last uint64) {
		t.Helper()
		f, _ := s.FirstIndex()
		l, _ := s.LastIndex()
		if f != first || l != last {
			t.Fatalf("bounds = %d..%d, want %d..%d", f, l, first, last)
		}
	}
	check(1, 100)
	var got raft.Log
	if err := s.GetLog(42, &got); err != nil || got.Index != 42 || got.Term != 1 || !bytes.Equal(got.Data, []byte{42}) || !got.AppendedAt.Equal(now) {
		t.Fatalf("GetLog(42) = %+v, %v", got, err)
	}
	if err := s.GetLog(101, &got); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("GetLog(101) err = %v", err)
	}
	if err := s.DeleteRange(1, 30); err != nil { // compaction from the front
		t.Fatal(err)
	}
	check(31, 100)
	if err := s.DeleteRange(91, 100); err != nil { // conflict truncation at the back
		t.Fatal(err)
	}
	check(31, 90)
	if err := s.GetLog(30, &got); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("deleted log still there: %v", err)
	}

	if err := s.SetUint64([]byte("CurrentTerm"), 7); err != nil {
		t.Fatal(err)
	}
	if err := s.Set([]byte("LastVoteCand"), []byte("n2")); err != nil {
		t.Fatal(err)
	}
	if v, err := s.GetUint64([]byte("missing")); v != 0 || err != nil {
		t.Fatalf("missing uint64 = %d, %v", v, err)
	}
	if v, err := s.Get([]byte("missing")); len(v) != 0 || err != nil {
		t.Fatalf("missing = %q, %v", v, err)
	}

	// Everything survives a reopen, bounds included.
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st = openShard(t, dir)
	s = openLogStore(t, st, "accounts/eu/1")
	check(31, 90)
	if v, _ := s.GetUint64([]byte("CurrentTerm")); v != 7 {
		t.Fatalf("term after reopen = %d", v)
	}
	if v, _ := s.Get([]byte("LastVoteCand")); string(v) != "n2" {
		t.Fatalf("vote after reopen = %q", v)
	}
	other = openLogStore(t, st, "accounts/eu/10")
	if f, _ := other.FirstIndex(); f != 500 {
		t.Fatalf("other group first = %d", f)
	}
}

// failingBackend is a LogBackend whose every I/O fails, to check that
// LogStore passes storage errors on instead of turning them into "not found"
// or an empty value.
type failingBackend struct{ err error }

func (f failingBackend) FirstIndex() uint64                  { return 3 }
func (f failingBackend) LastIndex() uint64                   { return 9 }
func (f failingBackend) Entry(uint64) ([]byte, bool, error)  { return nil, false, f.err }
func (f failingBackend) Append([]shard.LogEntry) error       { return f.err }
func (f failingBackend) DeleteRange(uint64, uint64) error    { return f.err }
func (f failingBackend) SetStable([]byte, []byte) error      { return f.err }
func (f failingBackend) Stable([]byte) ([]byte, bool, error) { return nil, false, f.err }
func (f failingBackend) Drop() error                         { return f.err }

func TestLogStorePassesBackendErrors(t *testing.T) {
	boom := errors.New("disk on fire")
	s := NewLogStore(failingBackend{boom})
	if f, err := s.FirstIndex(); f != 3 || err != nil {
		t.Fatalf("FirstIndex = %d, %v", f, err)
	}
	if l, err := s.LastIndex(); l != 9 || err != nil {
		t.Fatalf("LastIndex = %d, %v", l, err)
	}
	var l raft.Log
	for what, err := range map[string]error{
		"GetLog":      s.GetLog(4, &l),
		"StoreLogs":   s.StoreLogs([]*raft.Log{{Index: 10}, {Index: 11}}),
		"DeleteRange": s.DeleteRange(3, 5),
		"Set":         s.Set([]byte("k"), []byte("v")),
		"Drop":        s.Drop(),
	} {
		if !errors.Is(err, boom) || errors.Is(err, raft.ErrLogNotFound) {
			t.Errorf("%s err = %v, want the backend's error", what, err)
		}
	}
	if v, err := s.Get([]byte("k")); !errors.Is(err, boom) || v != nil {
		t.Errorf("Get = %q, %v, want the backend's error", v, err)
	}
	if v, err := s.GetUint64([]byte("k")); !errors.Is(err, boom) || v != 0 {
		t.Errorf("GetUint64 = %d, %v, want the backend's error", v, err)
	}
}

func TestLogEncodingRoundTrip(t *testing.T) {
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 1))
	for range 2000 {
		l := raft.Log{Index: rng.Uint64(), Term: rng.Uint64(), Type: raft.LogType(rng.IntN(6))}
		if rng.IntN(2) == 0 {
			l.Data = make([]byte, rng.IntN(300))
			for i := range l.Data {
				l.Data[i] = byte(rng.IntN(256))
			}
		}
		if rng.IntN(3) == 0 {
			l.Extensions = []byte("ext")
		}
		switch rng.IntN(3) {
		case 0:
			l.AppendedAt = time.Unix(0, rng.Int64())
		case 1: // before 1970: a negative varint
			l.AppendedAt = time.Unix(0, -rng.Int64())
		}
		enc := encodeLog(nil, &l)
		if n := encodedLogLen(&l); n != len(enc) {
			t.Fatalf("encodedLogLen(%+v) = %d, encoding is %d bytes", l, n, len(enc))
		}
		var got raft.Log
		if err := decodeLog(enc, &got); err != nil {
			t.Fatal(err)
		}
		if got.Index != l.Index || got.Term != l.Term || got.Type != l.Type || !bytes.Equal(got.Data, l.Data) ||
			!bytes.Equal(got.Extensions, l.Extensions) || !got.AppendedAt.Equal(l.AppendedAt) {
			t.Fatalf("round trip: %+v -> %+v", l, got)
		}
	}
}

// decodeLog's Data and Extensions share the input buffer; appending to Data
// (raft's callers may) must not overwrite Extensions.
func TestDecodeLogCapsData(t *testing.T) {
	var l raft.Log
	if err := decodeLog(encodeLog(nil, &raft.Log{Index: 1, Data: []byte("data"), Extensions: []byte("ext")}), &l); err != nil {
		t.Fatal(err)
	}
	_ = append(l.Data, "XXXXXXXX"...)
	if string(l.Extensions) != "ext" {
		t.Fatalf("Extensions = %q after appending to Data", l.Extensions)
	}
}

func FuzzDecodeLog(f *testing.F) {
	f.Add(encodeLog(nil, &raft.Log{Index: 5, Term: 2, Data: []byte("x")}))
	f.Add([]byte{1})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		var l raft.Log
		if err := decodeLog(b, &l); err != nil {
			return
		}
		var again raft.Log
		if err := decodeLog(encodeLog(nil, &l), &again); err != nil || again.Index != l.Index || !bytes.Equal(again.Data, l.Data) {
			t.Fatalf("re-encode of a decoded entry failed: %v", err)
		}
	})
}

// The log path benchmarks run over a real shard.Store with its defaults
// (SyncWrites on), so they measure what a node pays: encoding, the group
// commit and one fsync per commit.
func benchLogs(n int, first uint64) []*raft.Log {
	logs := make([]*raft.Log, n)
	for i := range logs {
		logs[i] = &raft.Log{Index: first + uint64(i), Term: 3, Type: raft.LogCommand, Data: bytes.Repeat([]byte{'v'}, 256)}
	}
	return logs
}

// BenchmarkStoreLogs appends batches of 16 entries of 256 bytes to one group.
func BenchmarkStoreLogs(b *testing.B) {
	s := openLogStore(b, openShard(b, b.TempDir()), "bench/eu/1")
	logs := benchLogs(16, 1)
	b.ReportAllocs()
	for b.Loop() {
		if err := s.StoreLogs(logs); err != nil {
			b.Fatal(err)
		}
		for _, l := range logs {
			l.Index += uint64(len(logs))
		}
	}
}

// BenchmarkStoreLogParallel appends single entries from 16 groups at once:
// what the group commit is for.
func BenchmarkStoreLogParallel(b *testing.B) {
	st := openShard(b, b.TempDir())
	var next atomic.Int64
	b.SetParallelism(8)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		rl, err := st.RaftLog(fmt.Sprintf("bench/eu/%d", next.Add(1)))
		if err != nil {
			b.Error(err)
			return
		}
		s := NewLogStore(rl)
		l := benchLogs(1, 1)[0]
		for pb.Next() {
			if err := s.StoreLog(l); err != nil {
				b.Error(err)
				return
			}
			l.Index++
		}
	})
}

// BenchmarkGetLog reads entries of a 10k-entry log in a scattered order.
func BenchmarkGetLog(b *testing.B) {
	s := openLogStore(b, openShard(b, b.TempDir()), "bench/eu/1")
	const n = 10_000
	for i := uint64(1); i <= n; i += 100 {
		if err := s.StoreLogs(benchLogs(100, i)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	var l raft.Log
	i := 0
	for b.Loop() {
		if err := s.GetLog(uint64(1+(i*7919)%n), &l); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
