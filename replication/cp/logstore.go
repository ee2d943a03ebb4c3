package cp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"time"

	"github.com/hashicorp/raft"

	"github.com/capkv/capkv/shard"
)

// LogBackend is the storage under a LogStore: one group's log entries by
// index and its stable values, already confined to the group's namespace,
// with cached bounds. *shard.RaftLog is the real one (see shard's doc.go for
// its durability); tests may fake it.
type LogBackend interface {
	FirstIndex() uint64
	LastIndex() uint64
	Entry(index uint64) (data []byte, found bool, err error)
	// Append stores entries atomically and durably; it does not keep their Data.
	Append(entries []shard.LogEntry) error
	DeleteRange(min, max uint64) error
	SetStable(key, val []byte) error
	Stable(key []byte) (val []byte, found bool, err error)
	Drop() error
}

var _ LogBackend = (*shard.RaftLog)(nil)

// LogStore is a raft.LogStore and raft.StableStore for one Raft group. It
// only encodes Raft's types; storage, bounds and durability are the
// backend's. Over a shard.RaftLog of a store with SyncWrites, a log entry is
// acknowledged to the leader only after it is fsynced.
type LogStore struct {
	log LogBackend
}

var _ raft.LogStore = (*LogStore)(nil)
var _ raft.StableStore = (*LogStore)(nil)

// NewLogStore returns the log store of the group whose storage is log.
func NewLogStore(log LogBackend) *LogStore { return &LogStore{log: log} }

// FirstIndex returns the first index written, 0 for none.
func (s *LogStore) FirstIndex() (uint64, error) { return s.log.FirstIndex(), nil }

// LastIndex returns the last index written, 0 for none.
func (s *LogStore) LastIndex() (uint64, error) { return s.log.LastIndex(), nil }

// GetLog reads one entry; raft.ErrLogNotFound when absent.
func (s *LogStore) GetLog(index uint64, log *raft.Log) error {
	b, ok, err := s.log.Entry(index)
	switch {
	case err != nil:
		return err
	case !ok:
		return raft.ErrLogNotFound
	}
	// b is ours (a copy), so the decoded entry may point into it.
	return decodeLog(b, log)
}

// StoreLog stores one entry.
func (s *LogStore) StoreLog(log *raft.Log) error { return s.StoreLogs([]*raft.Log{log}) }

// StoreLogs stores entries in one atomic append (one fsync, shared with the
// other groups writing at the same time).
func (s *LogStore) StoreLogs(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	// Encode the whole batch into one buffer: one allocation per batch, not
	// per entry. The backend does not keep it after Append returns.
	size := 0
	for _, l := range logs {
		size += encodedLogLen(l)
	}
	buf := make([]byte, 0, size)
	entries := make([]shard.LogEntry, len(logs))
	for i, l := range logs {
		start := len(buf)
		buf = encodeLog(buf, l)
		entries[i] = shard.LogEntry{Index: l.Index, Data: buf[start:len(buf):len(buf)]}
	}
	if err := s.log.Append(entries); err != nil {
		return fmt.Errorf("store raft logs %d-%d: %w", logs[0].Index, logs[len(logs)-1].Index, err)
	}
	return nil
}

// DeleteRange deletes entries min..max inclusive.
func (s *LogStore) DeleteRange(min, max uint64) error {
	if err := s.log.DeleteRange(min, max); err != nil {
		return fmt.Errorf("delete raft logs %d-%d: %w", min, max, err)
	}
	return nil
}

// Set stores a stable-store value durably.
func (s *LogStore) Set(key, val []byte) error { return s.log.SetStable(key, val) }

// Get returns a stable-store value, or an empty slice when absent.
func (s *LogStore) Get(key []byte) ([]byte, error) {
	v, _, err := s.log.Stable(key)
	if err != nil {
		return nil, err
	}
	if v == nil {
		v = []byte{}
	}
	return v, nil
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
func (s *LogStore) Drop() error { return s.log.Drop() }

// Log entry encoding: version byte, then uvarints for index, term, type,
// appended-at (unix nanos, zigzag), then length-prefixed data and extensions.
const logFormat = 1

func encodeLog(dst []byte, l *raft.Log) []byte {
	dst = append(dst, logFormat)
	dst = binary.AppendUvarint(dst, l.Index)
	dst = binary.AppendUvarint(dst, l.Term)
	dst = binary.AppendUvarint(dst, uint64(l.Type))
	dst = binary.AppendVarint(dst, appendedAt(l))
	dst = binary.AppendUvarint(dst, uint64(len(l.Data)))
	dst = append(dst, l.Data...)
	dst = binary.AppendUvarint(dst, uint64(len(l.Extensions)))
	return append(dst, l.Extensions...)
}

func appendedAt(l *raft.Log) int64 {
	if l.AppendedAt.IsZero() {
		return 0
	}
	return l.AppendedAt.UnixNano()
}

// encodedLogLen is len(encodeLog(nil, l)), so that StoreLogs can size its
// buffer exactly (TestLogEncodingRoundTrip checks they agree).
func encodedLogLen(l *raft.Log) int {
	at := appendedAt(l)
	return 1 + uvarintLen(l.Index) + uvarintLen(l.Term) + uvarintLen(uint64(l.Type)) +
		uvarintLen(uint64(at<<1)^uint64(at>>63)) + // zigzag, as binary.AppendVarint
		uvarintLen(uint64(len(l.Data))) + len(l.Data) + uvarintLen(uint64(len(l.Extensions))) + len(l.Extensions)
}

func uvarintLen(x uint64) int { return (bits.Len64(x|1) + 6) / 7 }

var errCorruptLog = errors.New("corrupt raft log entry")

// decodeLog decodes b into l. Data and Extensions point into b, which the
// caller hands over: GetLog decodes a copy made for it, so copying again
// would cost an allocation per read.
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
			// Capped, so appending to Data cannot overwrite Extensions.
			bufs[i] = b[:ln:ln]
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
