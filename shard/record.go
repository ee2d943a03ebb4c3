package shard

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"

	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/internal/kverrors"
)

// Record is the stored state of one key in one partition replica.
type Record struct {
	Value     []byte
	Timestamp consistency.Timestamp // HLC of the write
	// Version is a per-key modification number chosen by the writer (the Raft
	// index for cp); compare-and-set on version compares it.
	Version uint64
	// Tombstone marks a delete. It is stored (not removed) so that replication
	// and anti-entropy can see and propagate it. A tombstone has no Value.
	Tombstone bool
	// Causal is opaque causal metadata (a dotted version vector for ap), may be nil.
	Causal []byte
}

// MaxCausalSize bounds Record.Causal; version vectors are small, a huge one is a bug.
const MaxCausalSize = 64 << 10

// recordFormatV1 is the only record format so far. The byte lets a later
// format (e.g. siblings) be read next to old data without a migration.
const recordFormatV1 byte = 1

const (
	flagTombstone byte = 1 << 0
	flagCausal    byte = 1 << 1
	knownFlags         = flagTombstone | flagCausal
)

// recordOverhead is an upper bound of the encoding's size beyond Value and Causal.
const recordOverhead = 1 + 1 + 8 + 3*binary.MaxVarintLen64 + 4

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// EncodeRecord appends the encoding of r to dst and returns the extended slice.
//
//	format  byte    (1)
//	flags   byte    (bit 0 tombstone, bit 1 causal present)
//	ts      uint64  big-endian HLC
//	version uvarint
//	[causal uvarint length (>0) + bytes]   only if flag bit 1
//	value   uvarint length + bytes
//	crc     uint32  little-endian CRC32C of all preceding bytes of the record
//
// Causal is present iff len(r.Causal) > 0, so the encoding is canonical: one
// record has exactly one encoding, which lets Merkle trees hash raw bytes.
func EncodeRecord(dst []byte, r Record) []byte {
	start := len(dst)
	var flags byte
	if r.Tombstone {
		flags |= flagTombstone
	}
	if len(r.Causal) > 0 {
		flags |= flagCausal
	}
	dst = append(dst, recordFormatV1, flags)
	dst = binary.BigEndian.AppendUint64(dst, uint64(r.Timestamp))
	dst = binary.AppendUvarint(dst, r.Version)
	if len(r.Causal) > 0 {
		dst = binary.AppendUvarint(dst, uint64(len(r.Causal)))
		dst = append(dst, r.Causal...)
	}
	dst = binary.AppendUvarint(dst, uint64(len(r.Value)))
	dst = append(dst, r.Value...)
	return binary.LittleEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
}

// encodedRecordSize is the exact length of EncodeRecord's output for r.
func encodedRecordSize(r Record) int {
	n := 1 + 1 + 8 + uvarintSize(r.Version) + uvarintSize(uint64(len(r.Value))) + len(r.Value) + 4
	if len(r.Causal) > 0 {
		n += uvarintSize(uint64(len(r.Causal))) + len(r.Causal)
	}
	return n
}

// DecodeRecord decodes an encoding produced by EncodeRecord. The returned
// Value and Causal alias b (callers pass buffers they own, e.g. a Badger
// ValueCopy). Any corrupt, truncated, non-canonical or unknown-format input
// gives an error wrapping kverrors.ErrInternal: stored records are written
// only by EncodeRecord, so a bad one means storage corruption or a bug.
func DecodeRecord(b []byte) (Record, error) {
	var r Record
	if len(b) < 1+1+8+1+1+4 {
		return r, corrupt("record is %d bytes, shorter than the minimum", len(b))
	}
	if b[0] != recordFormatV1 {
		return r, corrupt("unknown record format %d", b[0])
	}
	body, sum := b[:len(b)-4], binary.LittleEndian.Uint32(b[len(b)-4:])
	if got := crc32.Checksum(body, castagnoli); got != sum {
		return r, corrupt("record checksum mismatch: stored %08x, computed %08x", sum, got)
	}
	flags := body[1]
	if flags&^knownFlags != 0 {
		return r, corrupt("unknown record flags %08b", flags)
	}
	r.Tombstone = flags&flagTombstone != 0
	r.Timestamp = consistency.Timestamp(binary.BigEndian.Uint64(body[2:10]))
	p := body[10:]
	var err error
	if r.Version, p, err = readUvarint(p, "version"); err != nil {
		return Record{}, err
	}
	if flags&flagCausal != 0 {
		if r.Causal, p, err = readBytes(p, "causal metadata"); err != nil {
			return Record{}, err
		}
		if len(r.Causal) == 0 {
			return Record{}, corrupt("causal flag set with empty causal metadata")
		}
	}
	if r.Value, p, err = readBytes(p, "value"); err != nil {
		return Record{}, err
	}
	if len(p) != 0 {
		return Record{}, corrupt("%d trailing bytes after record value", len(p))
	}
	return r, nil
}

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: corrupt record: %s", kverrors.ErrInternal, fmt.Sprintf(format, args...))
}

// readUvarint reads a minimally encoded uvarint: non-minimal forms are
// rejected so that decoding and re-encoding give back the same bytes.
func readUvarint(p []byte, what string) (uint64, []byte, error) {
	v, n := binary.Uvarint(p)
	if n <= 0 {
		return 0, nil, corrupt("bad %s length varint", what)
	}
	if n != uvarintSize(v) {
		return 0, nil, corrupt("non-minimal %s varint", what)
	}
	return v, p[n:], nil
}

func readBytes(p []byte, what string) ([]byte, []byte, error) {
	n, p, err := readUvarint(p, what)
	if err != nil {
		return nil, nil, err
	}
	if n > uint64(len(p)) {
		return nil, nil, corrupt("%s length %d exceeds the %d bytes left", what, n, len(p))
	}
	return p[:n:n], p[n:], nil
}

func uvarintSize(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}
