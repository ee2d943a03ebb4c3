package shard

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/dgraph-io/badger/v4"

	"github.com/capkv/capkv/internal/kverrors"
)

// The byte after the group id in NamespaceRaft keys (see doc.go):
//
//	'r' | uvarint(len(group)) | group | 'l' | be64(index)   log entry
//	'r' | uvarint(len(group)) | group | 's' | key           stable value
//
// Big-endian indexes make Badger's key order the log order, so the bounds are
// one seek each. Existing data directories depend on this layout.
const (
	raftKindLog    byte = 'l'
	raftKindStable byte = 's'
)

// LogEntry is one Raft log entry as shard stores it: the index it is kept
// under and bytes whose encoding belongs to the caller.
type LogEntry struct {
	Index uint64
	Data  []byte
}

// RaftLog is the Raft log and stable store of one group inside the Store.
// It stores opaque bytes by index and by key; encoding Raft's types is the
// caller's (replication/cp). It is safe for concurrent use, but there must be
// only one RaftLog per group at a time: each caches the group's bounds.
type RaftLog struct {
	s         *Store
	group     string
	logPrefix []byte
	stPrefix  []byte

	// mu guards the cached bounds; Raft reads them far more often than it
	// writes and they would otherwise cost a seek each.
	mu struct {
		sync.Mutex
		first, last uint64
	}
}

// RaftLog opens the Raft log of group (a partition id, validated like one)
// and loads its bounds with one seek each.
func (s *Store) RaftLog(group string) (*RaftLog, error) {
	if err := validatePartitionID(group); err != nil {
		return nil, fmt.Errorf("raft group: %w", err)
	}
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	base := PartitionPrefix(NamespaceRaft, group)
	l := &RaftLog{
		s:         s,
		group:     group,
		logPrefix: append(base[:len(base):len(base)], raftKindLog),
		stPrefix:  append(base[:len(base):len(base)], raftKindStable),
	}
	err := s.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.PrefetchValues = false
		opts.Prefix = l.logPrefix
		it := txn.NewIterator(opts)
		defer it.Close()
		it.Seek(l.logPrefix)
		if it.ValidForPrefix(l.logPrefix) {
			l.mu.first = l.indexOf(it.Item().Key())
		}
		it.Close()
		opts.Reverse = true
		rit := txn.NewIterator(opts)
		defer rit.Close()
		// Past every be64 index of the prefix: the reverse seek lands on the last.
		rit.Seek(append(append([]byte{}, l.logPrefix...), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff))
		if rit.ValidForPrefix(l.logPrefix) {
			l.mu.last = l.indexOf(rit.Item().Key())
		}
		return nil
	})
	if err != nil {
		return nil, badgerErr(fmt.Sprintf("open raft log of %q", group), err)
	}
	return l, nil
}

func (l *RaftLog) logKey(index uint64) []byte {
	k := make([]byte, len(l.logPrefix)+8)
	copy(k, l.logPrefix)
	binary.BigEndian.PutUint64(k[len(l.logPrefix):], index)
	return k
}

func (l *RaftLog) indexOf(key []byte) uint64 {
	return binary.BigEndian.Uint64(key[len(l.logPrefix):])
}

// FirstIndex returns the lowest index stored, 0 for none. It reads the cached
// bound, so it does no I/O and keeps answering after Close.
func (l *RaftLog) FirstIndex() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mu.first
}

// LastIndex returns the highest index stored, 0 for none (cached, like
// FirstIndex).
func (l *RaftLog) LastIndex() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mu.last
}

// Entry returns a copy of the entry at index, owned by the caller; found is
// false when there is none.
func (l *RaftLog) Entry(index uint64) (data []byte, found bool, err error) {
	if err := l.s.enter(); err != nil {
		return nil, false, err
	}
	defer l.s.leave()
	err = l.s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(l.logKey(index))
		if err != nil {
			return err
		}
		data, err = item.ValueCopy(nil)
		return err
	})
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
		return nil, false, nil
	case err != nil:
		return nil, false, badgerErr(fmt.Sprintf("read raft log %d of %q", index, l.group), err)
	}
	return data, true, nil
}

// Append stores entries atomically through the store's group commit: one
// transaction and one fsync shared with every other group and partition
// writing at the same time. It returns after the commit (and its fsync, with
// SyncWrites). Entries at existing indexes are overwritten. Append does not
// copy Data and does not keep it after returning.
func (l *RaftLog) Append(entries []LogEntry) error {
	if len(entries) == 0 {
		return nil
	}
	if err := l.s.enter(); err != nil {
		return err
	}
	defer l.s.leave()
	// One allocation each for the keys, the entries and their pointers, not
	// three per entry: this is the hot path of every cp write.
	kl := len(l.logPrefix) + 8
	keys := make([]byte, len(entries)*kl)
	es := make([]badger.Entry, len(entries))
	ptrs := make([]*badger.Entry, len(entries))
	for i, e := range entries {
		k := keys[i*kl : (i+1)*kl : (i+1)*kl]
		copy(k, l.logPrefix)
		binary.BigEndian.PutUint64(k[len(l.logPrefix):], e.Index)
		es[i] = badger.Entry{Key: k, Value: e.Data}
		ptrs[i] = &es[i]
	}
	if err := l.s.gc.write(ptrs, true); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range entries {
		if l.mu.first == 0 || e.Index < l.mu.first {
			l.mu.first = e.Index
		}
		if e.Index > l.mu.last {
			l.mu.last = e.Index
		}
	}
	return nil
}

// DeleteRange deletes the entries min..max inclusive (Raft's compaction of
// the front and truncation of a conflicting tail). It is not atomic: a large
// range spans several Badger transactions and a crash can leave part of it.
func (l *RaftLog) DeleteRange(min, max uint64) error {
	if err := l.s.enter(); err != nil {
		return err
	}
	defer l.s.leave()
	wb := l.s.db.NewWriteBatch()
	defer wb.Cancel()
	for i := min; i <= max && i != 0; i++ {
		if err := wb.Delete(l.logKey(i)); err != nil {
			return badgerErr(fmt.Sprintf("delete raft log %d-%d of %q", min, max, l.group), err)
		}
		if i == ^uint64(0) {
			break
		}
	}
	if err := l.s.durably(wb.Flush()); err != nil {
		return badgerErr(fmt.Sprintf("delete raft log %d-%d of %q", min, max, l.group), err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case min <= l.mu.first && max >= l.mu.last:
		l.mu.first, l.mu.last = 0, 0
	case min <= l.mu.first:
		l.mu.first = max + 1
	case max >= l.mu.last:
		l.mu.last = min - 1
	}
	return nil
}

func (l *RaftLog) stableKey(key []byte) ([]byte, error) {
	if len(l.stPrefix)+len(key) > maxBadgerKey {
		return nil, fmt.Errorf("%w: raft stable key of %q is %d bytes, limit %d", kverrors.ErrTooLarge, l.group, len(key), maxBadgerKey-len(l.stPrefix))
	}
	return append(append(make([]byte, 0, len(l.stPrefix)+len(key)), l.stPrefix...), key...), nil
}

// SetStable stores a stable value (current term, vote) through the group
// commit; it is durable when SetStable returns. val is not kept.
func (l *RaftLog) SetStable(key, val []byte) error {
	k, err := l.stableKey(key)
	if err != nil {
		return err
	}
	if err := l.s.enter(); err != nil {
		return err
	}
	defer l.s.leave()
	return l.s.gc.write([]*badger.Entry{badger.NewEntry(k, val)}, true)
}

// Stable returns a copy of a stable value; found is false when it was never
// set (or the group was dropped).
func (l *RaftLog) Stable(key []byte) (val []byte, found bool, err error) {
	k, err := l.stableKey(key)
	if err != nil {
		return nil, false, err
	}
	if err := l.s.enter(); err != nil {
		return nil, false, err
	}
	defer l.s.leave()
	err = l.s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(k)
		if err != nil {
			return err
		}
		val, err = item.ValueCopy(nil)
		return err
	})
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
		return nil, false, nil
	case err != nil:
		return nil, false, badgerErr(fmt.Sprintf("read raft stable value of %q", l.group), err)
	}
	return val, true, nil
}

// Drop deletes every entry and stable value of the group (the replica left
// this node; its group must be stopped). It deletes in write batches, not
// with Badger's DropPrefix, which makes every other write of the store fail
// while it runs: the other groups' state machines would stop on it. It is not
// atomic: after a crash part of the log may remain, and Drop again removes it.
func (l *RaftLog) Drop() error {
	if err := l.s.enter(); err != nil {
		return err
	}
	defer l.s.leave()
	for _, p := range [][]byte{l.logPrefix, l.stPrefix} {
		if err := l.s.deletePrefix(p); err != nil {
			return fmt.Errorf("drop raft log of %q: %w", l.group, err)
		}
	}
	l.mu.Lock()
	l.mu.first, l.mu.last = 0, 0
	l.mu.Unlock()
	return nil
}

// RaftGroups lists the groups that have a Raft log or stable value in the
// store, in key order (running or not: a node restarted after its group was
// removed from the map still holds them).
func (s *Store) RaftGroups() ([]string, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	var out []string
	err := s.db.View(func(txn *badger.Txn) error {
		opts := badger.IteratorOptions{PrefetchValues: false, Prefix: []byte{NamespaceRaft}}
		it := txn.NewIterator(opts)
		defer it.Close()
		// Seek from one group to the next instead of walking every entry.
		for it.Seek(opts.Prefix); it.Valid(); {
			g, _, ok := parsePartitionPrefix(NamespaceRaft, it.Item().Key())
			if !ok {
				return fmt.Errorf("%w: malformed raft key %q", kverrors.ErrInternal, it.Item().Key())
			}
			out = append(out, g)
			next := prefixSuccessor(PartitionPrefix(NamespaceRaft, g))
			if next == nil {
				break
			}
			it.Seek(next)
		}
		return nil
	})
	if err != nil {
		return nil, badgerErr("list raft groups", err)
	}
	return out, nil
}
