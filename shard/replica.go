package shard

import (
	"errors"
	"fmt"
	"sync"

	"github.com/dgraph-io/badger/v4"

	"github.com/capkv/capkv/internal/kverrors"
)

// Replica is the view of one partition inside a Store. It holds no state of
// its own beyond the key prefix; any number of Replicas of the same partition
// may be used concurrently.
type Replica struct {
	s      *Store
	id     string
	err    error // invalid partition id, returned by every method
	prefix []byte
	lock   *sync.RWMutex
}

// metaTombstone is set in Badger's per-entry user meta for tombstones so that
// Scan and Count can skip them without reading values. The record's own flag
// stays authoritative.
const metaTombstone byte = 1

// maxUpdateAttempts bounds Update's retries on Badger conflicts. Updates of
// one key are already serialised in-process, so a conflict needs a concurrent
// Put/Apply/Import of the same key; running out means sustained contention.
const maxUpdateAttempts = 32

// ID returns the partition id.
func (r *Replica) ID() string { return r.id }

func (r *Replica) key(k string) []byte {
	b := make([]byte, 0, len(r.prefix)+len(k))
	return append(append(b, r.prefix...), k...)
}

// checkMutation validates a key and record against the store's limits.
func (r *Replica) checkMutation(key string, rec Record) error {
	o := &r.s.opts
	switch {
	case key == "":
		return fmt.Errorf("%w: empty key", kverrors.ErrInvalidArgument)
	case len(key) > o.MaxKeySize:
		return fmt.Errorf("%w: key is %d bytes, limit %d", kverrors.ErrTooLarge, len(key), o.MaxKeySize)
	case len(rec.Value) > o.MaxValueSize:
		return fmt.Errorf("%w: value of key %q is %d bytes, limit %d", kverrors.ErrTooLarge, trunc(key), len(rec.Value), o.MaxValueSize)
	case len(rec.Causal) > MaxCausalSize:
		return fmt.Errorf("%w: causal metadata of key %q is %d bytes, limit %d", kverrors.ErrTooLarge, trunc(key), len(rec.Causal), MaxCausalSize)
	case rec.Tombstone && len(rec.Value) > 0:
		return fmt.Errorf("%w: tombstone for key %q carries a %d-byte value", kverrors.ErrInvalidArgument, trunc(key), len(rec.Value))
	}
	return nil
}

func trunc(k string) string {
	if len(k) > 64 {
		return k[:64] + "..."
	}
	return k
}

func (r *Replica) entry(key string, rec Record) *badger.Entry {
	v := EncodeRecord(make([]byte, 0, encodedRecordSize(rec)), rec)
	e := badger.NewEntry(r.key(key), v)
	if rec.Tombstone {
		e = e.WithMeta(metaTombstone)
	}
	return e
}

// beginWrite enters the store and takes the partition's shared lock for the
// whole write transaction.
func (r *Replica) beginWrite() (func(), error) {
	if r.err != nil {
		return nil, r.err
	}
	if err := r.s.enter(); err != nil {
		return nil, err
	}
	r.lock.RLock()
	return func() { r.lock.RUnlock(); r.s.leave() }, nil
}

// beginRead enters the store and opens a read snapshot. The partition lock is
// held only while the snapshot is taken: that is enough to never see half of
// an Import or Drop, and a long Scan or Export then blocks nobody.
func (r *Replica) beginRead() (*badger.Txn, func(), error) {
	if r.err != nil {
		return nil, nil, r.err
	}
	if err := r.s.enter(); err != nil {
		return nil, nil, err
	}
	r.lock.RLock()
	txn := r.s.db.NewTransaction(false)
	r.lock.RUnlock()
	return txn, func() { txn.Discard(); r.s.leave() }, nil
}

// commit commits txn. A failed commit may still have reached the log, so its
// outcome is unknown unless Badger says it refused (closed, conflict).
func commit(txn *badger.Txn) error {
	err := txn.Commit()
	switch {
	case err == nil:
		return nil
	case errors.Is(err, badger.ErrConflict):
		return err // handled by Update's retry loop
	case errors.Is(err, badger.ErrDBClosed):
		return fmt.Errorf("%w: commit: %w", kverrors.ErrUnavailable, err)
	default:
		return fmt.Errorf("%w: commit failed, write may or may not be durable: %w", kverrors.ErrIndeterminate, err)
	}
}

// Get returns the record of key, tombstones included (the caller decides what
// a tombstone means), and found=false when the key has no record.
func (r *Replica) Get(key string) (rec Record, found bool, err error) {
	txn, done, err := r.beginRead()
	if err != nil {
		return Record{}, false, err
	}
	defer done()
	return r.getTxn(txn, key)
}

func (r *Replica) getTxn(txn *badger.Txn, key string) (Record, bool, error) {
	if key == "" || len(key) > r.s.opts.MaxKeySize {
		return Record{}, false, nil // cannot have been stored
	}
	item, err := txn.Get(r.key(key))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return Record{}, false, nil
	}
	if err != nil {
		return Record{}, false, badgerErr("get", err)
	}
	// ValueCopy: Badger's buffer is only valid inside the transaction.
	v, err := item.ValueCopy(nil)
	if err != nil {
		return Record{}, false, badgerErr("read value", err)
	}
	rec, err := DecodeRecord(v)
	if err != nil {
		return Record{}, false, fmt.Errorf("partition %q key %q: %w", r.id, trunc(key), err)
	}
	return rec, true, nil
}

// Put stores rec under key. It validates first (nothing is written on error)
// and returns only after Badger committed the write; with SyncWrites the
// commit was fsynced.
func (r *Replica) Put(key string, rec Record) error {
	if err := r.checkMutation(key, rec); err != nil {
		return err
	}
	done, err := r.beginWrite()
	if err != nil {
		return err
	}
	defer done()
	return r.s.gc.write([]*badger.Entry{r.entry(key, rec)}, true)
}

// Update atomically reads, modifies and writes one key in one Badger
// transaction. fn sees the current record (found=false if absent) and returns
// the new record, or an error to abort: that error is returned unchanged and
// nothing is written. fn may run more than once (on a conflict with a
// concurrent Put/Apply of the key) and must not call into the Store: it runs
// inside a transaction with locks held. If conflicts persist for
// maxUpdateAttempts tries the error wraps kverrors.ErrUnavailable and
// badger.ErrConflict; nothing was written and retrying is safe.
func (r *Replica) Update(key string, fn func(cur Record, found bool) (Record, error)) (Record, error) {
	if key == "" {
		return Record{}, fmt.Errorf("%w: empty key", kverrors.ErrInvalidArgument)
	}
	if len(key) > r.s.opts.MaxKeySize {
		return Record{}, fmt.Errorf("%w: key is %d bytes, limit %d", kverrors.ErrTooLarge, len(key), r.s.opts.MaxKeySize)
	}
	done, err := r.beginWrite()
	if err != nil {
		return Record{}, err
	}
	defer done()
	mu := r.s.stripe(r.id, key)
	mu.Lock()
	defer mu.Unlock()
	for range maxUpdateAttempts {
		rec, err := r.updateOnce(key, fn)
		if errors.Is(err, badger.ErrConflict) {
			continue
		}
		return rec, err
	}
	return Record{}, fmt.Errorf("%w: update of key %q conflicted %d times: %w", kverrors.ErrUnavailable, trunc(key), maxUpdateAttempts, badger.ErrConflict)
}

func (r *Replica) updateOnce(key string, fn func(Record, bool) (Record, error)) (Record, error) {
	txn := r.s.db.NewTransaction(true)
	defer txn.Discard()
	cur, found, err := r.getTxn(txn, key)
	if err != nil {
		return Record{}, err
	}
	next, err := fn(cur, found)
	if err != nil {
		return Record{}, err
	}
	if err := r.checkMutation(key, next); err != nil {
		return Record{}, err
	}
	if err := txn.SetEntry(r.entry(key, next)); err != nil {
		return Record{}, txnErr(err, 1)
	}
	if err := r.s.durably(commit(txn)); err != nil {
		return Record{}, err
	}
	return next, nil
}

// Mutation is one write of an Apply batch.
type Mutation struct {
	Key    string
	Record Record
}

// Apply writes the batch atomically in one Badger transaction: all or
// nothing. Every mutation is validated before anything is written. A batch is
// never split: one larger than a Badger transaction allows fails with an error
// wrapping kverrors.ErrTooLarge. If a key repeats, the last mutation wins.
func (r *Replica) Apply(batch []Mutation) error { return r.apply(batch, true) }

// ApplyNoSync is Apply without the fsync: it returns once the batch is
// committed (readable, and kept by a process crash: the page cache holds
// it), and it becomes durable with the next synced write or Close. An OS
// crash or power loss may drop it, and not only as a suffix of what was
// written (Badger spreads writes over several WAL files), so it is for data
// that can be rebuilt from a durable source: a cp state machine, whose Raft
// log and snapshots are synced (NeedsRebuild says when to rebuild).
func (r *Replica) ApplyNoSync(batch []Mutation) error { return r.apply(batch, false) }

func (r *Replica) apply(batch []Mutation, durable bool) error {
	for i, m := range batch {
		if err := r.checkMutation(m.Key, m.Record); err != nil {
			return fmt.Errorf("mutation %d of %d: %w", i, len(batch), err)
		}
	}
	if len(batch) == 0 {
		return r.err
	}
	done, err := r.beginWrite()
	if err != nil {
		return err
	}
	defer done()
	entries := make([]*badger.Entry, len(batch))
	for i, m := range batch {
		entries[i] = r.entry(m.Key, m.Record)
	}
	if !durable {
		if err := r.markUnsynced(); err != nil {
			return err
		}
	}
	return r.s.gc.write(entries, durable)
}

func txnErr(err error, n int) error {
	if errors.Is(err, badger.ErrTxnTooBig) {
		return fmt.Errorf("%w: batch of %d mutations exceeds one Badger transaction: %w", kverrors.ErrTooLarge, n, err)
	}
	return badgerErr("stage write", err)
}

// scanChunk is how many entries Scan prefetches at a time.
const scanChunk = 64

// Scan visits the keys starting with prefix in key order, starting strictly
// after `after` when it is non-empty, up to limit keys (0 = no limit),
// including tombstones only if withTombstones. fn returns false to stop. Scan
// reads one consistent snapshot; fn owns the key and record it is given and
// may call other Store methods, but not Close.
func (r *Replica) Scan(prefix, after string, limit int, withTombstones bool, fn func(key string, rec Record) bool) error {
	if limit < 0 {
		return fmt.Errorf("%w: negative scan limit %d", kverrors.ErrInvalidArgument, limit)
	}
	txn, done, err := r.beginRead()
	if err != nil {
		return err
	}
	defer done()
	full := r.key(prefix)
	opts := badger.IteratorOptions{PrefetchValues: true, PrefetchSize: scanChunk, Prefix: full}
	if limit > 0 && limit < scanChunk {
		opts.PrefetchSize = limit
	}
	it := txn.NewIterator(opts)
	defer it.Close()
	seek := full
	if after != "" && after > prefix {
		seek = r.key(after)
	}
	visited := 0
	for it.Seek(seek); it.Valid(); it.Next() {
		item := it.Item()
		userKey := item.Key()[len(r.prefix):] // valid until Next
		if after != "" && string(userKey) == after {
			continue
		}
		if !withTombstones && item.UserMeta()&metaTombstone != 0 {
			continue
		}
		v, err := item.ValueCopy(nil)
		if err != nil {
			return badgerErr("scan value", err)
		}
		rec, err := DecodeRecord(v)
		if err != nil {
			return fmt.Errorf("partition %q key %q: %w", r.id, trunc(string(userKey)), err)
		}
		if rec.Tombstone && !withTombstones {
			continue
		}
		if !fn(string(userKey), rec) {
			return nil
		}
		if visited++; limit > 0 && visited >= limit {
			return nil
		}
	}
	return nil
}

// Count returns the number of records in the partition, tombstones included
// (they are stored state that replication sees); it reads keys only.
func (r *Replica) Count() (int, error) {
	txn, done, err := r.beginRead()
	if err != nil {
		return 0, err
	}
	defer done()
	it := txn.NewIterator(badger.IteratorOptions{Prefix: r.prefix})
	defer it.Close()
	n := 0
	for it.Rewind(); it.Valid(); it.Next() {
		n++
	}
	return n, nil
}

// Drop deletes every record of the partition (data only; the Raft namespace is
// its owner's). It is atomic for users of this Store (they see all or none of
// the partition) and crash-atomic: a Drop interrupted by a crash is finished
// by the next Open.
func (r *Replica) Drop() error {
	if r.err != nil {
		return r.err
	}
	if err := r.s.enter(); err != nil {
		return err
	}
	defer r.s.leave()
	r.lock.Lock()
	defer r.lock.Unlock()
	if err := r.s.setPending(r.id, opDrop, 0); err != nil {
		return err
	}
	return r.s.finishPending(r.id, opDrop, 0)
}

// Remove deletes keys for good, leaving no tombstone. It is for bookkeeping
// records (delivered hints), never for replicated data, whose deletes must
// stay visible to replication.
func (r *Replica) Remove(keys ...string) error {
	if len(keys) == 0 {
		return nil
	}
	done, err := r.beginWrite()
	if err != nil {
		return err
	}
	defer done()
	txn := r.s.db.NewTransaction(true)
	defer txn.Discard()
	for _, k := range keys {
		if err := txn.Delete(r.key(k)); err != nil {
			return txnErr(err, len(keys))
		}
	}
	return r.s.durably(commit(txn))
}
