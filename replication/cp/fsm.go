package cp

import (
	"bytes"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/internal/kverrors"
	"github.com/capkv/capkv/internal/watch"
	"github.com/capkv/capkv/shard"
)

// Storage is what a cp group needs from its partition replica;
// *shard.Replica provides it.
type Storage interface {
	Get(key string) (shard.Record, bool, error)
	// ApplyNoSync writes a batch atomically without waiting for an fsync:
	// the Raft log is the durable record. After a machine crash
	// NeedsRebuild says so, and the group rebuilds the partition from its
	// snapshot and log (StartGroup), then calls RebuildDone.
	ApplyNoSync(batch []shard.Mutation) error
	NeedsRebuild() (bool, error)
	RebuildDone() error
	Drop() error
	Scan(prefix, after string, limit int, withTombstones bool, fn func(key string, rec shard.Record) bool) error
	Export(w io.Writer) (int, error)
	Import(r io.Reader) (int, error)
}

// Reserved keys inside a cp partition. User keys always start with a
// keyspace name, so a leading NUL byte can never collide with them, and
// scans of a keyspace prefix never see these.
const (
	reservedPrefix = "\x00raft/"
	appliedKey     = reservedPrefix + "applied" // Version = last applied log index
	dedupPrefix    = reservedPrefix + "req/"    // per request ID: the outcome of its first apply
	dedupWindow    = 10 * 60 * 1000             // ms of HLC time a request ID is remembered
	dedupGCEvery   = 4096                       // log entries between dedup sweeps
)

// Result is the outcome of one applied command.
type Result struct {
	Version   uint64
	Timestamp consistency.Timestamp
	Existed   bool // delete: the key existed
	Err       error
	// Index is the log index of the entry that carried the command (set
	// by Group.Propose; Version is the key's, which a retried request or a
	// failed CAS leaves at an earlier index).
	Index uint64
}

// FSM applies committed commands of one partition to its storage.
//
// Durability and replay: every batch writes its data and the index of its
// last entry (appliedKey) in one atomic storage batch, without an fsync of
// its own (the entries are durable in the Raft log already; the write
// shares the next log append's sync, and a process crash keeps it). Entries at or below
// that index are skipped, so replaying the log after a restart (the group
// runs with NoSnapshotRestoreOnStart) never re-evaluates a CAS against a
// newer state. A storage failure is fatal: a replica that cannot apply a
// committed entry must not continue with a divergent state.
type FSM struct {
	st Storage
	// watch, when set, receives what every batch changed (partition id).
	watch     *watch.Hub
	partition string
	// tracing and self record the apply of traced entries (tracing.go).
	tracing oteltrace.TracerProvider
	self    string

	applied   atomic.Uint64
	persisted uint64 // only touched from raft's FSM goroutine

	notifyMu sync.Mutex
	notify   chan struct{} // closed and replaced after every batch

	// configIndex is the log index of the newest membership configuration
	// applied here: the prevIndex of the next change (membership.go).
	// hashicorp/raft v1.8's GetConfiguration does not report it.
	configIndex atomic.Uint64
}

var (
	_ raft.BatchingFSM        = (*FSM)(nil)
	_ raft.ConfigurationStore = (*FSM)(nil)
)

// StoreConfiguration records the index of an applied configuration entry
// (raft calls it for FSMs that do not batch; ApplyBatch does it otherwise).
func (f *FSM) StoreConfiguration(index uint64, _ raft.Configuration) {
	if index > f.configIndex.Load() {
		f.configIndex.Store(index)
	}
}

// NewFSM opens the state machine over st, resuming at its applied index.
func NewFSM(st Storage) (*FSM, error) {
	f := &FSM{st: st, notify: make(chan struct{})}
	if err := f.loadApplied(); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *FSM) loadApplied() error {
	rec, found, err := f.st.Get(appliedKey)
	if err != nil {
		return fmt.Errorf("read applied index: %w", err)
	}
	f.persisted = 0
	if found {
		f.persisted = rec.Version
	}
	f.applied.Store(f.persisted)
	return nil
}

// AppliedIndex is the index of the last entry applied to storage.
func (f *FSM) AppliedIndex() uint64 { return f.applied.Load() }

// changed returns a channel closed after the next applied batch.
func (f *FSM) changed() <-chan struct{} {
	f.notifyMu.Lock()
	defer f.notifyMu.Unlock()
	return f.notify
}

func (f *FSM) advance(idx uint64) {
	f.applied.Store(idx)
	f.notifyMu.Lock()
	close(f.notify)
	f.notify = make(chan struct{})
	f.notifyMu.Unlock()
}

// Apply applies one entry (raft calls ApplyBatch instead; kept for the interface).
func (f *FSM) Apply(l *raft.Log) any { return f.ApplyBatch([]*raft.Log{l})[0] }

// ApplyBatch evaluates a batch of committed entries in order against the
// storage plus the writes of earlier entries of the same batch, then writes
// all of it in one storage batch.
func (f *FSM) ApplyBatch(logs []*raft.Log) []any {
	results := make([]any, len(logs))
	if len(logs) == 0 {
		return results
	}
	start := time.Now()
	defer applySpans(f.tracing, f.self, f.partition, logs, start)
	overlay := map[string]shard.Record{}
	var muts []shard.Mutation
	get := func(key string) (shard.Record, bool) {
		if r, ok := overlay[key]; ok {
			return r, true
		}
		r, found, err := f.st.Get(key)
		if err != nil {
			panic(fmt.Sprintf("capkv: cp state machine cannot read %q: %v", key, err))
		}
		return r, found
	}
	put := func(key string, r shard.Record) {
		overlay[key] = r
		muts = append(muts, shard.Mutation{Key: key, Record: r})
	}
	last := logs[len(logs)-1].Index
	var newest consistency.Timestamp
	var events []watch.Event // only built while someone watches
	watching := f.watch.Active()
	for i, l := range logs {
		if l.Type == raft.LogConfiguration { // batching FSMs get these here
			f.StoreConfiguration(l.Index, raft.Configuration{})
		}
		if l.Type != raft.LogCommand {
			continue
		}
		if l.Index <= f.persisted {
			results[i] = Result{Err: fmt.Errorf("%w: entry %d was applied before a restart", kverrors.ErrIndeterminate, l.Index)}
			continue
		}
		cmd, err := DecodeCommand(l.Data)
		if err != nil {
			results[i] = Result{Err: fmt.Errorf("%w: entry %d: %v", kverrors.ErrInternal, l.Index, err)}
			continue
		}
		newest = max(newest, cmd.Timestamp)
		if cmd.RequestID != "" {
			if prev, ok := get(dedupPrefix + cmd.RequestID); ok {
				results[i] = Result{Version: prev.Version, Timestamp: prev.Timestamp, Existed: len(prev.Value) > 0 && prev.Value[0] == 1}
				continue
			}
		}
		// A put's outcome does not depend on the key's state: skip the read
		// (a memtable search through every group's keys, 8% of a loaded
		// node's CPU before).
		var cur shard.Record
		var found bool
		if cmd.Op != OpPut {
			cur, found = get(cmd.Key)
		}
		res, rec, write := evaluate(cmd, cur, found && !cur.Tombstone, l.Index)
		if write {
			put(cmd.Key, rec)
			if watching {
				events = append(events, watch.Event{Key: cmd.Key, Value: rec.Value, Deleted: rec.Tombstone, Revision: l.Index, Timestamp: uint64(rec.Timestamp)})
			}
		}
		if res.Err == nil && cmd.RequestID != "" {
			existed := byte(0)
			if res.Existed {
				existed = 1
			}
			put(dedupPrefix+cmd.RequestID, shard.Record{Version: res.Version, Timestamp: cmd.Timestamp, Value: []byte{existed}})
		}
		results[i] = res
	}
	if last > f.persisted {
		if newest != 0 && last/dedupGCEvery != f.persisted/dedupGCEvery {
			muts = append(muts, f.expiredDedup(newest)...)
		}
		muts = append(muts, shard.Mutation{Key: appliedKey, Record: shard.Record{Version: last}})
		if err := f.st.ApplyNoSync(muts); err != nil {
			panic(fmt.Sprintf("capkv: cp state machine cannot write entries up to %d: %v", last, err))
		}
		f.persisted = last
		f.watch.Publish(f.partition, events) // after the data is stored
	}
	f.advance(max(last, f.persisted))
	return results
}

// evaluate decides one command against the key's current live state.
func evaluate(c Command, cur shard.Record, live bool, index uint64) (Result, shard.Record, bool) {
	switch c.Op {
	case OpPut:
		return Result{Version: index, Timestamp: c.Timestamp}, shard.Record{Value: c.Value, Version: index, Timestamp: c.Timestamp}, true
	case OpDelete:
		if !live {
			return Result{Version: cur.Version}, shard.Record{}, false
		}
		return Result{Version: index, Timestamp: c.Timestamp, Existed: true},
			shard.Record{Tombstone: true, Version: index, Timestamp: c.Timestamp}, true
	case OpCAS:
		if c.HasExpectedVer {
			have := uint64(0)
			if live {
				have = cur.Version
			}
			if have != c.ExpectedVersion {
				return Result{Err: fmt.Errorf("%w: key %q is at version %d, expected %d", kverrors.ErrConflict, c.Key, have, c.ExpectedVersion)}, shard.Record{}, false
			}
		}
		if c.HasExpectedVal {
			if !live {
				return Result{Err: fmt.Errorf("%w: key %q does not exist, expected value %q", kverrors.ErrConflict, c.Key, c.ExpectedValue)}, shard.Record{}, false
			}
			if !bytes.Equal(cur.Value, c.ExpectedValue) {
				return Result{Err: fmt.Errorf("%w: key %q has value %q, expected %q", kverrors.ErrConflict, c.Key, cur.Value, c.ExpectedValue)}, shard.Record{}, false
			}
		}
		return Result{Version: index, Timestamp: c.Timestamp}, shard.Record{Value: c.Value, Version: index, Timestamp: c.Timestamp}, true
	}
	return Result{Err: fmt.Errorf("%w: unknown op %v", kverrors.ErrInternal, c.Op)}, shard.Record{}, false
}

// expiredDedup returns deletions of request IDs older than the window,
// judged by HLC time carried in the log, so every replica deletes the same.
func (f *FSM) expiredDedup(now consistency.Timestamp) []shard.Mutation {
	cutoff := now.Physical() - dedupWindow
	var out []shard.Mutation
	err := f.st.Scan(dedupPrefix, "", 0, false, func(key string, rec shard.Record) bool {
		if rec.Timestamp.Physical() < cutoff {
			out = append(out, shard.Mutation{Key: key, Record: shard.Record{Tombstone: true, Timestamp: now}})
		}
		return len(out) < 10000
	})
	if err != nil {
		panic(fmt.Sprintf("capkv: cp state machine cannot scan request ids: %v", err))
	}
	return out
}

// Snapshot captures the partition for raft. The export reads the storage
// when persisted, which may include entries applied after this call; that
// is safe because the export carries its own applied index.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) { return &fsmSnapshot{st: f.st}, nil }

// Restore replaces the partition with a snapshot received from the leader.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	if _, err := f.st.Import(rc); err != nil {
		return fmt.Errorf("restore partition snapshot: %w", err)
	}
	if err := f.loadApplied(); err != nil {
		return err
	}
	// Watchers missed what the snapshot skipped: end their streams, so that
	// their clients say so (a gap) and watch again.
	f.watch.EndPartition(f.partition, watch.ErrReset)
	f.advance(f.persisted)
	return nil
}

type fsmSnapshot struct{ st Storage }

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := s.st.Export(sink); err != nil {
		sink.Cancel()
		return fmt.Errorf("export partition snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}
