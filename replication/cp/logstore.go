package cp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"
)

// Badger key layout of one group's Raft state, inside the node's single
// Badger instance (namespace 'r', reserved by package shard for Raft):
//
//	'r' uvarint(len(group)) group 'l' be64(index)  -> encoded raft.Log
//	'r' uvarint(len(group)) group 's' key          -> stable-store value
//
// Big-endian indexes make Badger's key order the log order, so FirstIndex and
// LastIndex are one seek each.
const (
	nsRaft    = 'r'
	kindLog   = 'l'
	kindStore = 's'
)

func groupPrefix(group string, kind byte) []byte {
	b := make([]byte, 0, 1+binary.MaxVarintLen64+len(group)+1+8)
	b = append(b, nsRaft)
	b = binary.AppendUvarint(b, uint64(len(group)))
	b = append(b, group...)
	return append(b, kind)
}

// LogStore is a raft.LogStore and raft.StableStore for one Raft group, kept
// in the node's Badger. Writes are durable when the Badger instance was
// opened with SyncWrites: a log entry is acknowledged to the leader only
// after it is fsynced.
type LogStore struct {
	db        *badger.DB
	write     func([]*badger.Entry) error // the store's group commit
	logPrefix []byte
	stPrefix  []byte

	// mu guards the cached bounds; hashicorp/raft calls the store from
	// several goroutines (replication, apply, snapshot compaction).
	mu          sync.Mutex
	first, last uint64
}

var _ raft.LogStore = (*LogStore)(nil)
var _ raft.StableStore = (*LogStore)(nil)

// NewLogStore opens the log store of group in db. write commits a batch of
// entries atomically (shard.Store.WriteEntries shares commits and syncs with
// every other group); nil writes with a transaction of its own.
func NewLogStore(db *badger.DB, group string, write func([]*badger.Entry) error) (*LogStore, error) {
	if write == nil {
		write = func(es []*badger.Entry) error {
			return db.Update(func(txn *badger.Txn) error {
				for _, e := range es {
					if err := txn.SetEntry(e); err != nil {
						return err
					}
				}
				return nil
			})
		}
	}
	s := &LogStore{db: db, write: write, logPrefix: groupPrefix(group, kindLog), stPrefix: groupPrefix(group, kindStore)}
	err := db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.PrefetchValues = false
		opts.Prefix = s.logPrefix
		it := txn.NewIterator(opts)
		defer it.Close()
		it.Seek(s.logPrefix)
		if it.ValidForPrefix(s.logPrefix) {
			s.first = s.indexOf(it.Item().Key())
		}
		it.Close()
		opts.Reverse = true
		rit := txn.NewIterator(opts)
		defer rit.Close()
		rit.Seek(append(append([]byte{}, s.logPrefix...), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff))
		if rit.ValidForPrefix(s.logPrefix) {
			s.last = s.indexOf(rit.Item().Key())
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("open raft log of %s: %w", group, err)
	}
	return s, nil
}

func (s *LogStore) logKey(index uint64) []byte {
	k := make([]byte, len(s.logPrefix)+8)
	copy(k, s.logPrefix)
	binary.BigEndian.PutUint64(k[len(s.logPrefix):], index)
	return k
}

func (s *LogStore) indexOf(key []byte) uint64 {
	return binary.BigEndian.Uint64(key[len(s.logPrefix):])
}

// FirstIndex returns the first index written, 0 for none.
func (s *LogStore) FirstIndex() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.first, nil
}

// LastIndex returns the last index written, 0 for none.
func (s *LogStore) LastIndex() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last, nil
}

// GetLog reads one entry; raft.ErrLogNotFound when absent.
func (s *LogStore) GetLog(index uint64, log *raft.Log) error {
	return s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(s.logKey(index))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return raft.ErrLogNotFound
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error { return decodeLog(v, log) })
	})
}

// StoreLog stores one entry.
func (s *LogStore) StoreLog(log *raft.Log) error { return s.StoreLogs([]*raft.Log{log}) }

// StoreLogs stores entries in one Badger transaction (one fsync), splitting
// only when a batch exceeds Badger's transaction size.
func (s *LogStore) StoreLogs(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	entries := make([]*badger.Entry, len(logs))
	for i, l := range logs {
		entries[i] = badger.NewEntry(s.logKey(l.Index), encodeLog(nil, l))
	}
	if err := s.write(entries); err != nil {
		return fmt.Errorf("store raft logs %d-%d: %w", logs[0].Index, logs[len(logs)-1].Index, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range logs {
		if s.first == 0 || l.Index < s.first {
			s.first = l.Index
		}
		if l.Index > s.last {
			s.last = l.Index
		}
	}
	return nil
}

// DeleteRange deletes entries min..max inclusive.
func (s *LogStore) DeleteRange(min, max uint64) error {
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	for i := min; i <= max && i != 0; i++ {
		if err := wb.Delete(s.logKey(i)); err != nil {
			return err
		}
		if i == ^uint64(0) {
			break
		}
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("delete raft logs %d-%d: %w", min, max, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case min <= s.first && max >= s.last:
		s.first, s.last = 0, 0
	case min <= s.first:
		s.first = max + 1
	case max >= s.last:
		s.last = min - 1
	}
	return nil
}

func (s *LogStore) stableKey(key []byte) []byte {
	return append(append([]byte{}, s.stPrefix...), key...)
}

// Set stores a stable-store value durably.
func (s *LogStore) Set(key, val []byte) error {
	return s.write([]*badger.Entry{badger.NewEntry(s.stableKey(key), append([]byte{}, val...))})
}

// Get returns a stable-store value, or an empty slice when absent.
func (s *LogStore) Get(key []byte) ([]byte, error) {
	var out []byte
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(s.stableKey(key))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		out, err = item.ValueCopy(nil)
		return err
	})
	if out == nil && err == nil {
		out = []byte{}
	}
	return out, err
}

// SetUint64 stores a uint64 stable-store value.
func (s *LogStore) SetUint64(key []byte, val uint64) error {
	return s.Set(key, binary.BigEndian.AppendUint64(nil, val))
}

// GetUint64 returns a uint64 stable-store value, 0 when absent.
func (s *LogStore) GetUint64(key []byte) (uint64, error) {
	v, err := s.Get(key)
	if err != nil || len(v) == 0 {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("stable value %q is %d bytes, want 8", key, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// Drop deletes every log entry and stable value of the group.
func (s *LogStore) Drop() error {
	for _, p := range [][]byte{s.logPrefix, s.stPrefix} {
		if err := s.db.DropPrefix(p); err != nil {
			return err
		}
	}
	s.mu.Lock()
	s.first, s.last = 0, 0
	s.mu.Unlock()
	return nil
}

// Log entry encoding: version byte, then uvarints for index, term, type,
// appended-at (unix nanos, zigzag), then length-prefixed data and extensions.
const logFormat = 1

func encodeLog(dst []byte, l *raft.Log) []byte {
	dst = append(dst, logFormat)
	dst = binary.AppendUvarint(dst, l.Index)
	dst = binary.AppendUvarint(dst, l.Term)
	dst = binary.AppendUvarint(dst, uint64(l.Type))
	var at int64
	if !l.AppendedAt.IsZero() {
		at = l.AppendedAt.UnixNano()
	}
	dst = binary.AppendVarint(dst, at)
	dst = binary.AppendUvarint(dst, uint64(len(l.Data)))
	dst = append(dst, l.Data...)
	dst = binary.AppendUvarint(dst, uint64(len(l.Extensions)))
	return append(dst, l.Extensions...)
}

var errCorruptLog = errors.New("corrupt raft log entry")

func decodeLog(b []byte, l *raft.Log) error {
	if len(b) == 0 || b[0] != logFormat {
		return fmt.Errorf("%w: unknown format", errCorruptLog)
	}
	b = b[1:]
	var vals [3]uint64
	for i := range vals {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return fmt.Errorf("%w: truncated header", errCorruptLog)
		}
		vals[i], b = v, b[n:]
	}
	at, n := binary.Varint(b)
	if n <= 0 {
		return fmt.Errorf("%w: truncated time", errCorruptLog)
	}
	b = b[n:]
	var bufs [2][]byte
	for i := range bufs {
		ln, n := binary.Uvarint(b)
		if n <= 0 || ln > uint64(len(b)-n) {
			return fmt.Errorf("%w: truncated body", errCorruptLog)
		}
		b = b[n:]
		if ln > 0 {
			bufs[i] = append([]byte(nil), b[:ln]...)
		}
		b = b[ln:]
	}
	if len(b) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", errCorruptLog, len(b))
	}
	*l = raft.Log{Index: vals[0], Term: vals[1], Type: raft.LogType(vals[2]), Data: bufs[0], Extensions: bufs[1]}
	if at != 0 {
		l.AppendedAt = time.Unix(0, at)
	}
	return nil
}
