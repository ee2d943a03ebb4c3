package shard

import (
	"encoding/binary"
	"fmt"

	"github.com/capkv/capkv/internal/kverrors"
)

// Namespaces: the first byte of every Badger key. One Badger instance holds
// everything a node stores, so each kind of data gets its own byte and prefix
// iteration over one kind never sees another.
const (
	NamespaceData    byte = 'd' // partition records: d | uvarint(len(pid)) | pid | user key
	NamespaceRaft    byte = 'r' // Raft log and stable store of CP partitions (RaftLog)
	NamespaceMeta    byte = 'm' // shard bookkeeping (pending import/drop markers)
	NamespaceStaging byte = 't' // Import staging area, never visible to readers
)

// MaxPartitionIDLen bounds partition ids so that prefix + key stays far below
// Badger's 65000-byte key limit.
const MaxPartitionIDLen = 1024

// maxBadgerKey is Badger's own limit on a key (it appends 8 bytes of version).
const maxBadgerKey = 65000

// PartitionPrefix returns ns | uvarint(len(partition)) | partition. The length
// prefix makes "a/x/1" and "a/x/10" disjoint: neither prefix is a prefix of
// the other.
func PartitionPrefix(ns byte, partition string) []byte {
	b := make([]byte, 0, 1+binary.MaxVarintLen64+len(partition))
	b = append(b, ns)
	b = binary.AppendUvarint(b, uint64(len(partition)))
	return append(b, partition...)
}

// validatePartitionID is checked when a Replica is created; the error is
// returned by every operation of that Replica because Store.Replica cannot fail.
func validatePartitionID(p string) error {
	switch {
	case p == "":
		return fmt.Errorf("%w: empty partition id", kverrors.ErrInvalidArgument)
	case len(p) > MaxPartitionIDLen:
		return fmt.Errorf("%w: partition id is %d bytes, limit %d", kverrors.ErrInvalidArgument, len(p), MaxPartitionIDLen)
	}
	return nil
}

// parsePartitionPrefix splits a key of namespace ns into partition id and the
// rest. ok is false when the key is not well formed.
func parsePartitionPrefix(ns byte, key []byte) (partition string, rest []byte, ok bool) {
	if len(key) < 2 || key[0] != ns {
		return "", nil, false
	}
	n, w := binary.Uvarint(key[1:])
	if w <= 0 || n > uint64(len(key)-1-w) {
		return "", nil, false
	}
	start := 1 + w
	return string(key[start : start+int(n)]), key[start+int(n):], true
}

// prefixSuccessor returns the smallest key greater than every key that starts
// with p, or nil if there is none (p is all 0xff).
func prefixSuccessor(p []byte) []byte {
	s := append([]byte(nil), p...)
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] != 0xff {
			s[i]++
			return s[:i+1]
		}
	}
	return nil
}
