package cp

import (
	"bytes"
	"context"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/raft"

	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/internal/fault"
	"github.com/capkv/capkv/internal/kverrors"
	"github.com/capkv/capkv/shard"
)

// memStorage is an in-memory Storage so that Raft protocol tests can run
// under testing/synctest (fake time, no disk).
type memStorage struct {
	mu sync.Mutex
	m  map[string]shard.Record
}

func newMemStorage() *memStorage { return &memStorage{m: map[string]shard.Record{}} }

func (s *memStorage) Get(key string) (shard.Record, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.m[key]
	return r, ok, nil
}

func (s *memStorage) ApplyNoSync(batch []shard.Mutation) error { return s.Apply(batch) }
func (s *memStorage) NeedsRebuild() (bool, error)              { return false, nil }
func (s *memStorage) RebuildDone() error                       { return nil }

func (s *memStorage) Drop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m = map[string]shard.Record{}
	return nil
}

func (s *memStorage) Apply(batch []shard.Mutation) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range batch {
		s.m[m.Key] = m.Record
	}
	return nil
}

func (s *memStorage) Scan(prefix, after string, limit int, withTombstones bool, fn func(string, shard.Record) bool) error {
	s.mu.Lock()
	var keys []string
	for k, r := range s.m {
		if strings.HasPrefix(k, prefix) && k > after && (withTombstones || !r.Tombstone) {
			keys = append(keys, k)
		}
	}
	s.mu.Unlock()
	sort.Strings(keys)
	for i, k := range keys {
		if limit > 0 && i >= limit {
			break
		}
		r, _, _ := s.Get(k)
		if !fn(k, r) {
			break
		}
	}
	return nil
}

func (s *memStorage) Export(w io.Writer) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m), gob.NewEncoder(w).Encode(s.m)
}

func (s *memStorage) Import(r io.Reader) (int, error) {
	m := map[string]shard.Record{}
	if err := gob.NewDecoder(r).Decode(&m); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m = m
	return len(m), nil
}

func (s *memStorage) value(key string) string {
	r, ok, _ := s.Get(key)
	if !ok || r.Tombstone {
		return "<absent>"
	}
	return string(r.Value)
}

// testGroup is a Raft group of in-process replicas over in-memory
// transports, with a fault table between them.
type testGroup struct {
	t      *testing.T
	ids    []string
	faults *fault.Table
	trans  map[string]*raft.InmemTransport
	logs   map[string]*raft.InmemStore
	stores map[string]*memStorage
	reps   map[string]*Group
	tuning Tuning
}

func testTuning() Tuning {
	t := DefaultTuning()
	t.HeartbeatTimeout = 200 * time.Millisecond
	t.ElectionTimeout = 200 * time.Millisecond
	t.LeaderLeaseTimeout = 100 * time.Millisecond
	t.CommitTimeout = 10 * time.Millisecond
	return t
}

func newTestGroup(t *testing.T, ids ...string) *testGroup {
	return newTestGroupWith(t, testTuning(), ids...)
}

func newTestGroupWith(t *testing.T, tuning Tuning, ids ...string) *testGroup {
	g := &testGroup{t: t, ids: ids, faults: fault.NewTable(), trans: map[string]*raft.InmemTransport{},
		logs: map[string]*raft.InmemStore{}, stores: map[string]*memStorage{}, reps: map[string]*Group{}, tuning: tuning}
	for _, id := range ids {
		_, tr := raft.NewInmemTransport(raft.ServerAddress(id))
		g.trans[id] = tr
		g.logs[id] = raft.NewInmemStore()
		g.stores[id] = newMemStorage()
	}
	for _, a := range ids {
		for _, b := range ids {
			if a != b {
				g.trans[a].Connect(raft.ServerAddress(b), g.trans[b])
			}
		}
	}
	for _, id := range ids {
		g.start(id)
	}
	t.Cleanup(func() {
		for _, r := range g.reps {
			r.Shutdown()
		}
	})
	return g
}

func (g *testGroup) start(id string) {
	r, err := StartGroup(GroupConfig{ID: "ks/*/0", Self: id, Peers: g.ids, Storage: g.stores[id], LogStore: g.logs[id],
		Transport: &FaultyTransport{Transport: g.trans[id], Self: id, Faults: g.faults, Timeout: 200 * time.Millisecond},
		Tuning:    g.tuning})
	if err != nil {
		g.t.Fatal(err)
	}
	g.reps[id] = r
}

// leader waits (in fake time) for a leader other than the excluded ones.
func (g *testGroup) leader(exclude ...string) *Group {
	g.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for id, r := range g.reps {
			ex := false
			for _, e := range exclude {
				ex = ex || e == id
			}
			if !ex && r.IsLeader() {
				return r
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	g.t.Fatalf("no leader among %v (excluding %v) after 30s", g.ids, exclude)
	return nil
}

func (g *testGroup) others(id string) []string {
	var out []string
	for _, x := range g.ids {
		if x != id {
			out = append(out, x)
		}
	}
	return out
}

func put(key, val string, ts consistency.Timestamp) Command {
	return Command{Op: OpPut, Key: key, Value: []byte(val), Timestamp: ts}
}

func ctxFor(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

// A leader cut off from the majority cannot acknowledge a write; the
// majority elects a new leader that can; after healing, the old leader
// follows and converges.
func TestIsolatedLeaderCannotCommit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newTestGroup(t, "a", "b", "c")
		old := g.leader()
		ctx, cancel := ctxFor(2 * time.Second)
		if _, err := old.Propose(ctx, put("k", "v1", 1)); err != nil {
			t.Fatal(err)
		}
		cancel()

		g.faults.Partition([]string{old.cfg.Self}, g.others(old.cfg.Self), fault.Rule{Drop: true})
		ctx, cancel = ctxFor(2 * time.Second)
		_, err := old.Propose(ctx, put("k", "lost", 2))
		cancel()
		if err == nil {
			t.Fatal("an isolated leader acknowledged a write")
		}
		if !errors.Is(err, ErrNotLeader) && !errors.Is(err, kverrors.ErrIndeterminate) {
			t.Fatalf("isolated leader's write: %v, want not-leader or indeterminate", err)
		}

		nl := g.leader(old.cfg.Self)
		ctx, cancel = ctxFor(2 * time.Second)
		if _, err := nl.Propose(ctx, put("k", "v2", 3)); err != nil {
			t.Fatalf("new leader %s: %v", nl.cfg.Self, err)
		}
		cancel()
		// The deposed leader must not serve a linearizable read of v1.
		ctx, cancel = ctxFor(time.Second)
		if _, err := old.ReadBarrier(ctx); err == nil {
			t.Fatalf("deposed leader %s confirmed a linearizable read while cut off", old.cfg.Self)
		}
		cancel()

		g.faults.Heal()
		deadline := time.Now().Add(10 * time.Second)
		for _, id := range g.ids {
			for g.stores[id].value("k") != "v2" {
				if time.Now().After(deadline) {
					t.Fatalf("replica %s did not converge: k = %s, want v2 (the write the isolated leader took must be gone)", id, g.stores[id].value("k"))
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
	})
}

// A one-way cut (leader can send, cannot hear back) also stops commits.
func TestOneWayPartition(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newTestGroup(t, "a", "b", "c")
		old := g.leader()
		for _, o := range g.others(old.cfg.Self) {
			g.faults.Set(o, old.cfg.Self, fault.Rule{Blackhole: true})
		}
		ctx, cancel := ctxFor(2 * time.Second)
		_, err := old.Propose(ctx, put("k", "x", 1))
		cancel()
		if err == nil {
			t.Fatal("a leader that hears no acknowledgements committed a write")
		}
		t.Logf("faults: %s; write error: %v", g.faults, err)
	})
}

// A new leader's first linearizable read waits until it has applied
// everything its predecessor committed.
func TestNewLeaderReadsAfterBarrier(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newTestGroup(t, "a", "b", "c")
		old := g.leader()
		var last Result
		for i := range 50 {
			ctx, cancel := ctxFor(2 * time.Second)
			res, err := old.Propose(ctx, put("k", fmt.Sprint(i), 1))
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			last = res
		}
		old.Shutdown()
		delete(g.reps, old.cfg.Self)
		nl := g.leader()
		ctx, cancel := ctxFor(2 * time.Second)
		defer cancel()
		idx, err := nl.ReadBarrier(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if idx < last.Version {
			t.Fatalf("read index %d is below the last acknowledged write %d", idx, last.Version)
		}
		if v := g.stores[nl.cfg.Self].value("k"); v != "49" {
			t.Fatalf("new leader serves k = %s after its read barrier, want 49", v)
		}
	})
}

// A retried write with the same request ID is applied once.
func TestRequestIDDeduplicates(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newTestGroup(t, "a", "b", "c")
		l := g.leader()
		ctx, cancel := ctxFor(2 * time.Second)
		defer cancel()
		cmd := put("k", "first", 1)
		cmd.RequestID = "req-1"
		r1, err := l.Propose(ctx, cmd)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.Propose(ctx, put("k", "other", 2)); err != nil {
			t.Fatal(err)
		}
		retry := put("k", "first", 3)
		retry.RequestID = "req-1"
		r2, err := l.Propose(ctx, retry)
		if err != nil {
			t.Fatal(err)
		}
		if r2.Version != r1.Version {
			t.Fatalf("retry answered version %d, first apply was %d", r2.Version, r1.Version)
		}
		if v := g.stores[l.cfg.Self].value("k"); v != "other" {
			t.Fatalf("k = %s: the retry was applied a second time over a later write", v)
		}
	})
}

// CAS is decided by the state machine, identically on every replica.
func TestCASThroughRaft(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newTestGroup(t, "a", "b", "c")
		l := g.leader()
		ctx, cancel := ctxFor(2 * time.Second)
		defer cancel()
		absent := Command{Op: OpCAS, Key: "k", Value: []byte("1"), HasExpectedVer: true, ExpectedVersion: 0}
		if _, err := l.Propose(ctx, absent); err != nil {
			t.Fatal(err)
		}
		if _, err := l.Propose(ctx, absent); !errors.Is(err, kverrors.ErrConflict) {
			t.Fatalf("second create-if-absent: %v, want conflict", err)
		}
		swap := Command{Op: OpCAS, Key: "k", Value: []byte("2"), HasExpectedVal: true, ExpectedValue: []byte("1")}
		if _, err := l.Propose(ctx, swap); err != nil {
			t.Fatal(err)
		}
		if _, err := l.Propose(ctx, swap); !errors.Is(err, kverrors.ErrConflict) {
			t.Fatalf("stale swap: %v, want conflict", err)
		}
		time.Sleep(time.Second)
		for _, id := range g.ids {
			if v := g.stores[id].value("k"); v != "2" {
				t.Errorf("replica %s: k = %s, want 2", id, v)
			}
		}
	})
}

// A follower that missed entries that were compacted away catches up from a
// snapshot (Export on the leader, Import on the follower).
func TestLaggingFollowerInstallsSnapshot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newTestGroup(t, "a", "b", "c")
		l := g.leader()
		lag := g.others(l.cfg.Self)[0]
		g.faults.Partition([]string{lag}, g.others(lag), fault.Rule{Drop: true})
		for i := range 100 {
			ctx, cancel := ctxFor(2 * time.Second)
			if _, err := l.Propose(ctx, put(fmt.Sprintf("k%03d", i), fmt.Sprint(i), 1)); err != nil {
				t.Fatal(err)
			}
			cancel()
		}
		// Snapshot and drop the log the follower would need.
		l.raft.ReloadConfig(raft.ReloadableConfig{TrailingLogs: 5, SnapshotInterval: time.Minute, SnapshotThreshold: 8192})
		if err := l.Snapshot(); err != nil {
			t.Fatal(err)
		}
		g.faults.Heal()
		deadline := time.Now().Add(20 * time.Second)
		for g.stores[lag].value("k099") != "99" {
			if time.Now().After(deadline) {
				t.Fatalf("lagging follower %s did not catch up: k099 = %s", lag, g.stores[lag].value("k099"))
			}
			time.Sleep(20 * time.Millisecond)
		}
		var a, b bytes.Buffer
		g.stores[lag].Export(&a)
		g.stores[l.cfg.Self].Export(&b)
		if g.stores[lag].value("k000") != "0" || len(g.stores[lag].m) != len(g.stores[l.cfg.Self].m) {
			t.Fatalf("follower has %d keys, leader %d", len(g.stores[lag].m), len(g.stores[l.cfg.Self].m))
		}
	})
}

// A replica restarted over its own storage resumes without re-applying
// entries it already applied.
func TestRestartSkipsAppliedEntries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newTestGroup(t, "a", "b", "c")
		l := g.leader()
		ctx, cancel := ctxFor(2 * time.Second)
		defer cancel()
		// Entry 1 is a CAS that fails at apply time; entry 2 makes the same
		// CAS's expectation true. Re-applying entry 1 on restart would wrongly
		// succeed and overwrite entry 2.
		cas := Command{Op: OpCAS, Key: "k", Value: []byte("from-cas"), HasExpectedVal: true, ExpectedValue: []byte("x")}
		if _, err := l.Propose(ctx, cas); !errors.Is(err, kverrors.ErrConflict) {
			t.Fatalf("cas on absent key: %v", err)
		}
		if _, err := l.Propose(ctx, put("k", "x", 2)); err != nil {
			t.Fatal(err)
		}
		f := g.others(l.cfg.Self)[0]
		time.Sleep(time.Second)
		g.reps[f].Shutdown()
		g.start(f)
		time.Sleep(2 * time.Second)
		if v := g.stores[f].value("k"); v != "x" {
			t.Fatalf("after restart replica %s has k = %s, want x", f, v)
		}
	})
}

// A committed entry's receipt names the leader and the followers whose
// answers acknowledged it: at least a majority, and never a follower that
// is cut off.
func TestAckedByNamesFollowersThatAcknowledged(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newTestGroup(t, "a", "b", "c")
		l := g.leader()
		ctx, cancel := ctxFor(2 * time.Second)
		res, err := l.Propose(ctx, put("k", "v1", 1))
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if res.Index == 0 {
			t.Fatal("Propose returned no log index")
		}
		acked := l.AckedBy(res.Index)
		if len(acked) < 2 || acked[0] != l.cfg.Self {
			t.Fatalf("acked by %v, want the leader %s first and a majority", acked, l.cfg.Self)
		}
		// Given time, every healthy follower acknowledges it.
		deadline := time.Now().Add(5 * time.Second)
		for len(l.AckedBy(res.Index)) != 3 {
			if time.Now().After(deadline) {
				t.Fatalf("acked by %v after 5s, want all 3", l.AckedBy(res.Index))
			}
			time.Sleep(10 * time.Millisecond)
		}
		if got := l.AckedBy(res.Index + 1000); len(got) != 1 {
			t.Errorf("an index not yet written is acked by %v, want the leader alone", got)
		}

		cut := g.others(l.cfg.Self)[0]
		g.faults.Partition([]string{cut}, g.others(cut), fault.Rule{Drop: true})
		for range 5 {
			ctx, cancel := ctxFor(2 * time.Second)
			res, err = l.Propose(ctx, put("k", "v2", 2))
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			acked = l.AckedBy(res.Index)
			if len(acked) != 2 || slices.Contains(acked, cut) {
				t.Fatalf("with %s cut off: acked by %v, want the leader and the other follower", cut, acked)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
}

// gatedLog holds StoreLogs while gate is armed, so that a leader's writes
// queue up behind a slow disk.
type gatedLog struct {
	*raft.InmemStore
	mu   sync.Mutex
	gate chan struct{} // nil: open
}

func (l *gatedLog) arm() chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.gate = make(chan struct{})
	return l.gate
}

func (l *gatedLog) StoreLogs(logs []*raft.Log) error {
	l.mu.Lock()
	gate := l.gate
	l.mu.Unlock()
	if gate != nil {
		<-gate
	}
	return l.InmemStore.StoreLogs(logs)
}

func (l *gatedLog) StoreLog(log *raft.Log) error { return l.StoreLogs([]*raft.Log{log}) }

// Writes in flight when a replica shuts down end with the shutdown, not at
// their deadline: hashicorp/raft drops the futures still queued when it
// shuts down, and a node's graceful stop waited for every write holding one
// until its request deadline (kvd dev's Ctrl-C under load took seconds per
// node). Real time, not synctest: the goroutine waiting on a dropped
// future can never end, which synctest reports as a deadlock.
func TestProposeEndsAtShutdown(t *testing.T) {
	ids := []string{"a"}
	_, tr := raft.NewInmemTransport("a")
	logs := &gatedLog{InmemStore: raft.NewInmemStore()}
	r, err := StartGroup(GroupConfig{ID: "ks/*/0", Self: "a", Peers: ids, Storage: newMemStorage(), LogStore: logs,
		Transport: tr, Tuning: testTuning()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Shutdown()
	for deadline := time.Now().Add(10 * time.Second); !r.IsLeader(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("a single-replica group elected no leader in 10s")
		}
	}
	gate := logs.arm()
	const writes = 200
	errs := make(chan error, writes)
	start := time.Now()
	for i := range writes {
		go func() {
			ctx, cancel := ctxFor(20 * time.Second)
			defer cancel()
			_, err := r.Propose(ctx, put(fmt.Sprintf("k%d", i), "v", consistency.Timestamp(i+1)))
			errs <- err
		}()
	}
	time.Sleep(100 * time.Millisecond) // the writes queue behind the gated disk
	go func() { time.Sleep(200 * time.Millisecond); close(gate) }()
	if err := r.Shutdown(); err != nil {
		t.Fatal(err)
	}
	failed := 0
	for range writes {
		if err := <-errs; err != nil {
			failed++
			if !errors.Is(err, kverrors.ErrIndeterminate) && !errors.Is(err, ErrNotLeader) && !errors.Is(err, kverrors.ErrUnavailable) {
				t.Errorf("write cut short by shutdown: %v, want indeterminate, unavailable or not-leader", err)
			}
		}
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("%d writes in flight at shutdown took %s to end, want at once, not at their 20s deadline", writes, took)
	}
	t.Logf("%d of %d writes failed at shutdown, all within %s", failed, writes, time.Since(start))
}

// A leader heartbeats by LeaderHeartbeatTimeout and its followers keep
// HeartbeatTimeout: leadership stays put while idle (no follower times out
// between the sparser heartbeats, the lease holds), a leader cut off is
// replaced within the followers' timeouts, and a deposed leader goes back to
// the follower timeout.
func TestLeaderHeartbeatPacing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newTestGroup(t, "a", "b", "c")
		tu := g.tuning
		leaderHB := 3 * min(tu.HeartbeatTimeout, tu.LeaderLeaseTimeout)
		old := g.leader()
		term := old.raft.Stats()["term"]
		waitTimeout := func(r *Group, want time.Duration) {
			t.Helper()
			deadline := time.Now().Add(time.Second)
			for r.HeartbeatTimeout() != want {
				if time.Now().After(deadline) {
					t.Fatalf("%s (leader %t): heartbeat timeout %s, want %s", r.cfg.Self, r.IsLeader(), r.HeartbeatTimeout(), want)
				}
				time.Sleep(time.Millisecond)
			}
		}
		waitTimeout(old, leaderHB)
		for _, id := range g.others(old.cfg.Self) {
			waitTimeout(g.reps[id], tu.HeartbeatTimeout)
		}
		time.Sleep(10 * time.Second) // idle: 50 follower timeouts
		if !old.IsLeader() || old.raft.Stats()["term"] != term {
			t.Fatalf("leadership moved while idle: leader %q, term %s (was %s, %s)", g.leader().cfg.Self, g.leader().raft.Stats()["term"], old.cfg.Self, term)
		}

		g.faults.Partition([]string{old.cfg.Self}, g.others(old.cfg.Self), fault.Rule{Drop: true})
		start := time.Now()
		nl := g.leader(old.cfg.Self)
		// Follower timeout (up to 2x) plus one election timeout (up to 2x).
		if took, limit := time.Since(start), 2*(tu.HeartbeatTimeout+tu.ElectionTimeout); took > limit {
			t.Fatalf("new leader after %s, want within %s", took, limit)
		}
		waitTimeout(nl, leaderHB)
		g.faults.Heal()
		deadline := time.Now().Add(5 * time.Second)
		for old.IsLeader() || old.Leader() != nl.cfg.Self {
			if time.Now().After(deadline) {
				t.Fatalf("deposed leader %s still leads or does not follow %s", old.cfg.Self, nl.cfg.Self)
			}
			time.Sleep(10 * time.Millisecond)
		}
		waitTimeout(old, tu.HeartbeatTimeout)
	})
}

// A leader heartbeat timeout whose longest interval does not fit in the
// follower timeout or the lease is refused, naming the field.
func TestLeaderHeartbeatTimeoutValidated(t *testing.T) {
	tu := testTuning()
	tu.LeaderHeartbeatTimeout = 5 * tu.LeaderLeaseTimeout
	_, err := StartGroup(GroupConfig{ID: "ks/*/0", Self: "a", Peers: []string{"a"}, Storage: newMemStorage(), LogStore: raft.NewInmemStore(),
		Transport: func() raft.Transport { _, tr := raft.NewInmemTransport("a"); return tr }(), Tuning: tu})
	if err == nil || !strings.Contains(err.Error(), "LeaderHeartbeatTimeout") {
		t.Fatalf("StartGroup = %v, want an error naming LeaderHeartbeatTimeout", err)
	}
}
