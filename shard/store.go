package shard

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/capkv/capkv/internal/kverrors"
)

// Store is one Badger instance holding every partition replica of a node.
// It is safe for concurrent use.
type Store struct {
	opts Options
	db   *badger.DB
	log  *slog.Logger

	// mu tracks in-flight operations so that Close waits for them instead of
	// closing Badger under a running transaction. An operation that starts
	// after Close began fails fast rather than blocking, so a Scan callback
	// that calls back into the Store cannot deadlock with Close.
	mu struct {
		sync.Mutex
		closed   bool
		inflight int
		idle     sync.Cond
	}

	// partLocks: partition id -> *sync.RWMutex. Writers hold the read side for
	// their whole transaction, readers only while opening their snapshot; Drop
	// and Import hold the write side so that their multi-transaction swap is
	// never observed half done. Lock order: Store.mu (enter) -> partition lock
	// -> key stripe.
	partLocks sync.Map

	// stripes serialise Update on the same key within this process, so that
	// contending read-modify-writes queue instead of burning Badger conflict
	// retries. Conflicts with Put/Apply/Import are still caught by Badger.
	stripes [256]sync.Mutex
	seed    maphash.Seed

	gcStop chan struct{}
	gcDone chan struct{}

	gc     *groupCommit // every Put, Apply, RaftLog.Append and SetStable goes through it
	syncMu sync.Mutex   // one syncAll at a time; guards retiredSynced
	// retiredSynced: WAL files fsynced after they stopped growing.
	retiredSynced map[string]bool
	walList       []string  // the WAL files when walDirMod was read (wals)
	walDirMod     time.Time // the directory's modification time then
	// unsynced: partitions whose unsynced marker this process wrote.
	unsynced sync.Map
}

var errClosed = fmt.Errorf("%w: shard store is closed", kverrors.ErrUnavailable)

// Open opens (or creates) the store in o.Dir, applying defaults and validating
// the options first. It finishes any Import or Drop that a crash interrupted
// and removes abandoned Import staging data before returning.
func Open(o Options) (*Store, error) {
	o = o.withDefaults()
	if err := o.Validate(); err != nil {
		return nil, err
	}
	db, err := badger.Open(o.badgerOptions())
	if err != nil {
		return nil, fmt.Errorf("%w: open badger in %s: %w", kverrors.ErrInternal, o.Dir, err)
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{opts: o, db: db, log: log, seed: maphash.MakeSeed()}
	s.mu.idle.L = &s.mu.Mutex
	if err := s.recover(); err != nil {
		_ = db.Close()
		return nil, err
	}
	s.gc = newGroupCommit(db, s.syncAll)
	if err := s.openUnsynced(); err != nil {
		s.gc.close()
		_ = db.Close()
		return nil, fmt.Errorf("%w: open %s: %w", kverrors.ErrInternal, o.Dir, err)
	}
	if o.ValueLogGCInterval > 0 {
		s.gcStop, s.gcDone = make(chan struct{}), make(chan struct{})
		go s.gcLoop(o.ValueLogGCInterval)
	}
	return s, nil
}

// Close waits for in-flight operations, stops background work and closes
// Badger. It is idempotent; calls after the first return nil. It must not be
// called from a Scan or Update callback (it would wait for itself).
func (s *Store) Close() error {
	s.mu.Lock()
	if s.mu.closed {
		s.mu.Unlock()
		return nil
	}
	s.mu.closed = true
	for s.mu.inflight > 0 {
		s.mu.idle.Wait()
	}
	s.mu.Unlock()
	if s.gcStop != nil {
		close(s.gcStop)
		<-s.gcDone
	}
	s.gc.close()
	// Badger's close flushes the memtables into synced tables; the sync
	// first covers ApplyNoSync's writes should that flush fail.
	syncErr := s.syncAll()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("%w: close badger: %w", kverrors.ErrInternal, err)
	}
	if syncErr != nil {
		return fmt.Errorf("%w: sync at close: %w", kverrors.ErrInternal, syncErr)
	}
	if err := s.closeUnsynced(); err != nil {
		return fmt.Errorf("%w: record a clean close: %w", kverrors.ErrInternal, err)
	}
	return nil
}

// Options returns the effective options (defaults applied).
func (s *Store) Options() Options { return s.opts }

// Replica returns the view of one partition. It is cheap and does no I/O; an
// invalid partition id makes every method of the returned Replica fail with
// kverrors.ErrInvalidArgument.
func (s *Store) Replica(partition string) *Replica {
	r := &Replica{s: s, id: partition, err: validatePartitionID(partition)}
	if r.err == nil {
		r.prefix = PartitionPrefix(NamespaceData, partition)
		r.lock = s.partLock(partition)
	}
	return r
}

func (s *Store) partLock(partition string) *sync.RWMutex {
	if l, ok := s.partLocks.Load(partition); ok {
		return l.(*sync.RWMutex)
	}
	l, _ := s.partLocks.LoadOrStore(partition, new(sync.RWMutex))
	return l.(*sync.RWMutex)
}

func (s *Store) stripe(partition, key string) *sync.Mutex {
	var h maphash.Hash
	h.SetSeed(s.seed)
	h.WriteString(partition)
	h.WriteByte(0)
	h.WriteString(key)
	return &s.stripes[h.Sum64()%uint64(len(s.stripes))]
}

// enter registers an operation; leave must follow when enter succeeded.
func (s *Store) enter() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.closed {
		return errClosed
	}
	s.mu.inflight++
	return nil
}

func (s *Store) leave() {
	s.mu.Lock()
	s.mu.inflight--
	if s.mu.inflight == 0 && s.mu.closed {
		s.mu.idle.Broadcast()
	}
	s.mu.Unlock()
}

// Partitions lists the partition ids that have at least one record
// (tombstones count), in key order.
func (s *Store) Partitions() ([]string, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	var out []string
	err := s.db.View(func(txn *badger.Txn) error {
		opts := badger.IteratorOptions{PrefetchValues: false, Prefix: []byte{NamespaceData}}
		it := txn.NewIterator(opts)
		defer it.Close()
		// Seek from one partition to the next instead of walking every key.
		for it.Seek(opts.Prefix); it.Valid(); {
			p, _, ok := parsePartitionPrefix(NamespaceData, it.Item().Key())
			if !ok {
				return fmt.Errorf("%w: malformed data key %q", kverrors.ErrInternal, it.Item().Key())
			}
			out = append(out, p)
			next := prefixSuccessor(PartitionPrefix(NamespaceData, p))
			if next == nil {
				break
			}
			it.Seek(next)
		}
		return nil
	})
	if err != nil {
		return nil, badgerErr("list partitions", err)
	}
	return out, nil
}

// Size reports the disk space used by the LSM tree (.sst) and the value log
// (.vlog). It reads the directory on each call: badger's own DB.Size depends
// on expvar metrics, which we disable, is refreshed once a minute, and counts
// the sparse preallocation of the active value log file (2x its size).
// Unreadable entries are skipped (a file may vanish under compaction).
func (s *Store) Size() (lsm, vlog int64) {
	entries, err := os.ReadDir(s.opts.Dir)
	if err != nil {
		return 0, 0
	}
	for _, e := range entries {
		ext := filepath.Ext(e.Name())
		if ext != ".sst" && ext != ".vlog" {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		if ext == ".sst" {
			lsm += diskUsage(info)
		} else {
			vlog += diskUsage(info)
		}
	}
	return lsm, vlog
}

func (s *Store) gcLoop(every time.Duration) {
	defer close(s.gcDone)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.gcStop:
			return
		case <-t.C:
		}
		// Each successful run rewrites one file; a few per tick catch up
		// after bursts without monopolising the disk.
		for range 8 {
			if err := s.db.RunValueLogGC(0.5); err != nil {
				if !errors.Is(err, badger.ErrNoRewrite) && !errors.Is(err, badger.ErrRejected) {
					s.log.Warn("value log gc", "err", err)
				}
				break
			}
		}
	}
}

// Pending markers make Drop and the swap step of Import crash-atomic: the
// marker is committed before the first destructive write and deleted after the
// last, and Open rolls forward any marker it finds.
const (
	opDrop   byte = 'x'
	opImport byte = 'i'
)

func pendingKey(partition string) []byte {
	return append([]byte{NamespaceMeta, 'p'}, PartitionPrefix(0, partition)[1:]...)
}

func stagingPrefix(partition string, id uint64) []byte {
	return binary.BigEndian.AppendUint64(PartitionPrefix(NamespaceStaging, partition), id)
}

func (s *Store) setPending(partition string, op byte, stageID uint64) error {
	v := binary.BigEndian.AppendUint64([]byte{op}, stageID)
	return s.durably(badgerErr("write pending marker", s.db.Update(func(txn *badger.Txn) error {
		return txn.Set(pendingKey(partition), v)
	})))
}

// finishPending performs (or redoes) a Drop or an Import swap. Every step up
// to the marker's deletion is idempotent, so a crash anywhere before it is
// repaired by running it again. The staging data is deleted only after the
// marker: a redo after a partial staging delete would copy too little.
// Staging left by a crash after the marker is gone is removed by Open.
func (s *Store) finishPending(partition string, op byte, stageID uint64) error {
	data := PartitionPrefix(NamespaceData, partition)
	stage := stagingPrefix(partition, stageID)
	if err := s.deletePrefix(data); err != nil {
		return err
	}
	if op == opImport {
		if err := s.copyPrefix(stage, data); err != nil {
			return err
		}
	}
	err := s.durably(s.db.Update(func(txn *badger.Txn) error { return txn.Delete(pendingKey(partition)) }))
	if err != nil {
		return badgerErr("delete pending marker", err)
	}
	if op == opImport {
		return s.deletePrefix(stage)
	}
	return nil
}

// recover rolls forward interrupted Drops/Imports, then deletes staging data
// of Imports that never got to their swap (nothing else can be running yet).
func (s *Store) recover() error {
	type pending struct {
		partition string
		op        byte
		id        uint64
	}
	var todo []pending
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 16, Prefix: []byte{NamespaceMeta, 'p'}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			p, rest, ok := parsePartitionPrefix(NamespaceMeta, append([]byte{NamespaceMeta}, k[2:]...))
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			if !ok || len(rest) != 0 || len(v) != 9 || (v[0] != opDrop && v[0] != opImport) {
				return fmt.Errorf("%w: malformed pending marker %q = %q", kverrors.ErrInternal, k, v)
			}
			todo = append(todo, pending{p, v[0], binary.BigEndian.Uint64(v[1:])})
		}
		return nil
	})
	if err != nil {
		return badgerErr("read pending markers", err)
	}
	for _, p := range todo {
		s.log.Info("finishing interrupted partition operation", "partition", p.partition, "op", string(p.op))
		if err := s.finishPending(p.partition, p.op, p.id); err != nil {
			return err
		}
	}
	return s.deletePrefix([]byte{NamespaceStaging})
}

// deletePrefix deletes every key with the prefix in batches (not atomically:
// callers make that safe with a pending marker or by owning the prefix).
func (s *Store) deletePrefix(prefix []byte) error {
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			// Delete keeps the key slice until the batch commits; the
			// iterator reuses its buffer, hence the copy.
			if err := wb.Delete(it.Item().KeyCopy(nil)); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		err = wb.Flush()
	}
	return s.durably(badgerErr("delete prefix", err))
}

// copyPrefix copies every key under from to the same suffix under to.
func (s *Store) copyPrefix(from, to []byte) error {
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 64, Prefix: from})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			k := append(append(make([]byte, 0, len(to)+len(item.Key())-len(from)), to...), item.Key()[len(from):]...)
			if err := wb.SetEntry(badger.NewEntry(k, v).WithMeta(item.UserMeta())); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		err = wb.Flush()
	}
	return s.durably(badgerErr("copy prefix", err))
}

// badgerErr classifies a Badger error: nil stays nil, closed means
// unavailable, anything else is a storage failure.
func badgerErr(what string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, kverrors.ErrInternal), errors.Is(err, kverrors.ErrUnavailable):
		return err
	case errors.Is(err, badger.ErrDBClosed):
		return fmt.Errorf("%w: %s: %w", kverrors.ErrUnavailable, what, err)
	default:
		return fmt.Errorf("%w: %s: %w", kverrors.ErrInternal, what, err)
	}
}
