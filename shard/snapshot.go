package shard

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"slices"

	"github.com/dgraph-io/badger/v4"

	"github.com/capkv/capkv/internal/kverrors"
)

// Export stream format (all CRCs are CRC32C, little-endian):
//
//	header   magic "CKVX" | format byte (1) | uvarint len(partition) | partition | crc(header bytes)
//	entry    'E' | uvarint len(key) | key | uvarint len(record) | record | crc(frame bytes)
//	trailer  'T' | uvarint entry count | crc(every stream byte before this crc)
//
// Entries are in strictly increasing key order; the record is EncodeRecord's
// output (itself checksummed). The per-frame CRC names the first bad frame; the
// trailer's whole-stream CRC and count catch dropped, duplicated or reordered
// frames. The stream ends at the trailer: trailing bytes are an error.
const (
	exportMagic    = "CKVX"
	exportFormatV1 = 1
	frameEntry     = 'E'
	frameTrailer   = 'T'
)

// Export writes the whole partition (tombstones included) as one consistent
// snapshot, read in a single Badger transaction, and returns the number of
// entries written. It holds no lock while writing, but Close waits for it, so
// give w a deadline if it can block (a network peer).
func (r *Replica) Export(w io.Writer) (n int, err error) {
	txn, done, err := r.beginRead()
	if err != nil {
		return 0, err
	}
	defer done()
	ew := newExportWriter(w, r.id)
	it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 64, Prefix: r.prefix})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		// Value is only valid inside the callback; it is written out before
		// returning, so no copy is needed.
		err := item.Value(func(v []byte) error {
			return ew.entry(item.Key()[len(r.prefix):], v)
		})
		if err != nil {
			return ew.n, fmt.Errorf("export partition %q: %w", r.id, badgerErr("read value", err))
		}
	}
	if err := ew.finish(); err != nil {
		return ew.n, fmt.Errorf("export partition %q: %w", r.id, err)
	}
	return ew.n, nil
}

type exportWriter struct {
	bw     *bufio.Writer
	stream hash.Hash32 // CRC of everything written so far
	buf    []byte
	n      int
	err    error
}

func newExportWriter(w io.Writer, partition string) *exportWriter {
	ew := &exportWriter{bw: bufio.NewWriterSize(w, 64<<10), stream: crc32.New(castagnoli)}
	b := append([]byte(exportMagic), exportFormatV1)
	b = binary.AppendUvarint(b, uint64(len(partition)))
	b = append(b, partition...)
	ew.write(binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli)))
	return ew
}

func (ew *exportWriter) write(b []byte) {
	if ew.err != nil {
		return
	}
	ew.stream.Write(b)
	_, ew.err = ew.bw.Write(b)
}

func (ew *exportWriter) entry(key, rec []byte) error {
	b := append(ew.buf[:0], frameEntry)
	b = binary.AppendUvarint(b, uint64(len(key)))
	b = append(b, key...)
	b = binary.AppendUvarint(b, uint64(len(rec)))
	b = append(b, rec...)
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
	ew.write(b)
	ew.buf = b
	if ew.err == nil {
		ew.n++
	}
	return ew.err
}

func (ew *exportWriter) finish() error {
	b := binary.AppendUvarint([]byte{frameTrailer}, uint64(ew.n))
	ew.write(b)
	ew.write(binary.LittleEndian.AppendUint32(nil, ew.stream.Sum32()))
	if ew.err == nil {
		ew.err = ew.bw.Flush()
	}
	return ew.err
}

// exportReader decodes and verifies an export stream frame by frame.
type exportReader struct {
	br        *bufio.Reader
	stream    hash.Hash32
	frame     []byte // bytes of the current frame, for its CRC
	partition string
	maxKey    int
	maxRecord int
	count     int
	lastKey   []byte
}

func streamErr(format string, args ...any) error {
	return fmt.Errorf("%w: bad export stream: %s", kverrors.ErrInternal, fmt.Sprintf(format, args...))
}

// newExportReader reads and verifies the header. Keys over maxKey and records
// over maxRecord are refused before anything is allocated for them.
func newExportReader(rd io.Reader, maxKey, maxRecord int) (*exportReader, error) {
	er := &exportReader{br: bufio.NewReaderSize(rd, 64<<10), stream: crc32.New(castagnoli), maxKey: maxKey, maxRecord: maxRecord}
	if err := er.readN(len(exportMagic)+1, "header"); err != nil {
		return nil, err
	}
	if string(er.frame[:4]) != exportMagic {
		return nil, streamErr("bad magic %q", er.frame[:4])
	}
	if er.frame[4] != exportFormatV1 {
		return nil, streamErr("unknown format version %d", er.frame[4])
	}
	s, e, err := er.readLenBytes(MaxPartitionIDLen, "partition id")
	if err != nil {
		return nil, err
	}
	er.partition = string(er.frame[s:e])
	if err := er.checkFrameCRC("header"); err != nil {
		return nil, err
	}
	return er, nil
}

// readN appends exactly n bytes of the stream to the current frame.
func (er *exportReader) readN(n int, what string) error {
	start := len(er.frame)
	er.frame = slices.Grow(er.frame, n)[:start+n]
	if _, err := io.ReadFull(er.br, er.frame[start:]); err != nil {
		return truncated(what, err)
	}
	return nil
}

func truncated(what string, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return streamErr("truncated in %s", what)
	}
	return fmt.Errorf("%w: reading export stream (%s): %w", kverrors.ErrInternal, what, err)
}

// readUvarint reads a minimally encoded uvarint into the current frame.
func (er *exportReader) readUvarint(what string) (uint64, error) {
	start := len(er.frame)
	v, err := binary.ReadUvarint(byteRecorder{er})
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, streamErr("truncated in %s", what)
		}
		return 0, streamErr("bad %s: %v", what, err)
	}
	if len(er.frame)-start != uvarintSize(v) {
		return 0, streamErr("non-minimal %s", what) // keeps the encoding canonical
	}
	return v, nil
}

// byteRecorder feeds binary.ReadUvarint while recording bytes into the frame.
type byteRecorder struct{ er *exportReader }

func (b byteRecorder) ReadByte() (byte, error) {
	c, err := b.er.br.ReadByte()
	if err == nil {
		b.er.frame = append(b.er.frame, c)
	}
	return c, err
}

// readLenBytes reads a length-prefixed field into the frame and returns its
// offsets in the frame.
func (er *exportReader) readLenBytes(limit int, what string) (start, end int, err error) {
	n, err := er.readUvarint(what + " length")
	if err != nil {
		return 0, 0, err
	}
	if n > uint64(limit) {
		// Refused before allocating. Either the length is corrupt or the
		// exporting store had larger limits; both end the import.
		return 0, 0, fmt.Errorf("%w: export stream %s of %d bytes exceeds the limit of %d", kverrors.ErrTooLarge, what, n, limit)
	}
	start = len(er.frame)
	if err := er.readN(int(n), what); err != nil {
		return 0, 0, err
	}
	return start, len(er.frame), nil
}

// checkFrameCRC reads the 4-byte CRC ending the current frame, verifies it
// and adds the frame to the stream CRC. The frame's bytes stay readable (the
// buffer is only truncated) until the next frame is read.
func (er *exportReader) checkFrameCRC(what string) error {
	var c [4]byte
	if _, err := io.ReadFull(er.br, c[:]); err != nil {
		return truncated(what+" checksum", err)
	}
	if want, got := binary.LittleEndian.Uint32(c[:]), crc32.Checksum(er.frame, castagnoli); want != got {
		return streamErr("%s checksum mismatch: stored %08x, computed %08x", what, want, got)
	}
	er.stream.Write(er.frame)
	er.stream.Write(c[:])
	er.frame = er.frame[:0]
	return nil
}

// next returns the next entry's key and encoded record, verified (frame CRC,
// key order, record decodes). The slices are valid until the next call. After
// the trailer has been verified it returns io.EOF.
func (er *exportReader) next() (key, rec []byte, err error) {
	what := fmt.Sprintf("entry %d", er.count)
	if err := er.readN(1, what); err != nil {
		return nil, nil, err
	}
	switch er.frame[0] {
	case frameEntry:
	case frameTrailer:
		return nil, nil, er.trailer()
	default:
		return nil, nil, streamErr("unknown frame type %#x at %s", er.frame[0], what)
	}
	ks, ke, err := er.readLenBytes(er.maxKey, what+" key")
	if err != nil {
		return nil, nil, err
	}
	rs, re, err := er.readLenBytes(er.maxRecord, what+" record")
	if err != nil {
		return nil, nil, err
	}
	frame := er.frame
	if err := er.checkFrameCRC(what); err != nil {
		return nil, nil, err
	}
	key, rec = frame[ks:ke], frame[rs:re]
	if len(key) == 0 {
		return nil, nil, streamErr("%s has an empty key", what)
	}
	if er.count > 0 && bytes.Compare(key, er.lastKey) <= 0 {
		return nil, nil, streamErr("%s key is not after the previous key", what)
	}
	if _, err := DecodeRecord(rec); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", what, err)
	}
	er.lastKey = append(er.lastKey[:0], key...)
	er.count++
	return key, rec, nil
}

// trailer verifies the count and whole-stream CRC, and that the stream ends.
func (er *exportReader) trailer() error {
	n, err := er.readUvarint("trailer count")
	if err != nil {
		return err
	}
	er.stream.Write(er.frame)
	var c [4]byte
	if _, err := io.ReadFull(er.br, c[:]); err != nil {
		return truncated("trailer checksum", err)
	}
	if want, got := binary.LittleEndian.Uint32(c[:]), er.stream.Sum32(); want != got {
		return streamErr("stream checksum mismatch: stored %08x, computed %08x", want, got)
	}
	if n != uint64(er.count) {
		return streamErr("trailer counts %d entries, stream has %d", n, er.count)
	}
	if _, err := er.br.ReadByte(); err != io.EOF {
		if err != nil {
			return truncated("end of stream", err)
		}
		return streamErr("data after the trailer")
	}
	return io.EOF
}

// ImportOptions tune Import.
type ImportOptions struct {
	// AllowPartitionMismatch accepts a stream exported from a replica of
	// another partition id. Off by default: restoring the wrong partition's
	// snapshot would silently put keys where the ring says they do not belong.
	// Turn it on for deliberate moves (renaming or re-keying a partition).
	AllowPartitionMismatch bool
}

// Import replaces the partition's contents with an Export stream, refusing a
// stream from another partition id (see ImportWithOptions).
func (r *Replica) Import(rd io.Reader) (n int, err error) {
	return r.ImportWithOptions(rd, ImportOptions{})
}

// ImportWithOptions replaces the partition's contents with the stream's.
//
// It stages: every frame is verified and written under a private staging
// prefix (NamespaceStaging, invisible to readers) as it is read, and only
// after the trailer checked out does it swap the staged entries in. So a
// corrupt or truncated stream returns an error wrapping kverrors.ErrInternal
// with the partition untouched, and memory stays bounded by one frame. The
// swap holds the partition's exclusive lock (users of this Store see the old
// or the new contents, never a mix) and is crash-atomic through a pending
// marker that Open rolls forward. Entries exceeding the store's key/value
// limits are refused with kverrors.ErrTooLarge.
func (r *Replica) ImportWithOptions(rd io.Reader, o ImportOptions) (n int, err error) {
	if r.err != nil {
		return 0, r.err
	}
	if err := r.s.enter(); err != nil {
		return 0, err
	}
	defer r.s.leave()
	er, err := newExportReader(rd, r.s.opts.MaxKeySize, r.s.opts.MaxValueSize+MaxCausalSize+recordOverhead)
	if err != nil {
		return 0, fmt.Errorf("import into %q: %w", r.id, err)
	}
	if er.partition != r.id && !o.AllowPartitionMismatch {
		return 0, fmt.Errorf("%w: import into %q: stream was exported from partition %q", kverrors.ErrInvalidArgument, r.id, er.partition)
	}
	var idb [8]byte
	if _, err := rand.Read(idb[:]); err != nil {
		return 0, fmt.Errorf("%w: staging id: %w", kverrors.ErrInternal, err)
	}
	id := binary.BigEndian.Uint64(idb[:])
	stage := stagingPrefix(r.id, id)
	n, err = r.stage(er, stage)
	if err != nil {
		if derr := r.s.deletePrefix(stage); derr != nil {
			r.s.log.Warn("removing import staging data", "partition", r.id, "err", derr)
		}
		return 0, fmt.Errorf("import into %q: %w", r.id, err)
	}
	r.lock.Lock()
	defer r.lock.Unlock()
	if err := r.s.setPending(r.id, opImport, id); err != nil {
		return 0, err
	}
	if err := r.s.finishPending(r.id, opImport, id); err != nil {
		return 0, fmt.Errorf("import into %q: swap failed (an interrupted swap is finished by the next Open): %w", r.id, err)
	}
	return n, nil
}

// stage writes verified entries under stage until the trailer verifies.
func (r *Replica) stage(er *exportReader, stage []byte) (int, error) {
	wb := r.s.db.NewWriteBatch()
	defer wb.Cancel()
	for {
		key, rec, err := er.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, err
		}
		dec, _ := DecodeRecord(rec) // verified by next
		if err := r.checkMutation(string(key), dec); err != nil {
			return 0, fmt.Errorf("entry %d: %w", er.count-1, err)
		}
		// WriteBatch keeps the slices until it commits; the reader reuses
		// its buffer, so both are copied.
		e := badger.NewEntry(append(append(make([]byte, 0, len(stage)+len(key)), stage...), key...), bytes.Clone(rec))
		if dec.Tombstone {
			e = e.WithMeta(metaTombstone)
		}
		if err := wb.SetEntry(e); err != nil {
			return 0, badgerErr("stage entry", err)
		}
	}
	if err := r.s.durably(wb.Flush()); err != nil {
		return 0, badgerErr("stage flush", err)
	}
	return er.count, nil
}
