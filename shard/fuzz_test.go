package shard

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/capkv/capkv/internal/kverrors"
)

func FuzzDecodeRecord(f *testing.F) {
	for _, r := range sampleRecords {
		f.Add(EncodeRecord(nil, r))
	}
	f.Add([]byte{})
	f.Add([]byte{recordFormatV1, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0x80, 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRecord(b)
		if err != nil {
			if !errors.Is(err, kverrors.ErrInternal) {
				t.Fatalf("error does not wrap ErrInternal: %v", err)
			}
			return
		}
		// Valid input is canonical: re-encoding gives the same bytes.
		if enc := EncodeRecord(nil, r); !bytes.Equal(enc, b) {
			t.Fatalf("Encode(Decode(x)) != x\n x   = %x\n got = %x", b, enc)
		}
		if encodedRecordSize(r) != len(b) {
			t.Fatalf("encodedRecordSize = %d, len %d", encodedRecordSize(r), len(b))
		}
	})
}

// encodeStream builds an export stream with the production writer.
func encodeStream(partition string, keys, recs [][]byte) []byte {
	var buf bytes.Buffer
	ew := newExportWriter(&buf, partition)
	for i := range keys {
		_ = ew.entry(keys[i], recs[i])
	}
	_ = ew.finish()
	return buf.Bytes()
}

func FuzzExportStream(f *testing.F) {
	f.Add(encodeStream("p", nil, nil))
	f.Add(encodeStream("accounts/eu/3",
		[][]byte{[]byte("a"), []byte("b/c")},
		[][]byte{EncodeRecord(nil, sampleRecords[1]), EncodeRecord(nil, sampleRecords[4])}))
	f.Add([]byte("CKVX\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		er, err := newExportReader(bytes.NewReader(b), 4<<10, 64<<10)
		if err != nil {
			if !errors.Is(err, kverrors.ErrInternal) && !errors.Is(err, kverrors.ErrTooLarge) {
				t.Fatalf("unclassified error: %v", err)
			}
			return
		}
		var keys, recs [][]byte
		for {
			k, r, err := er.next()
			if err == io.EOF {
				break
			}
			if err != nil {
				if !errors.Is(err, kverrors.ErrInternal) && !errors.Is(err, kverrors.ErrTooLarge) {
					t.Fatalf("unclassified error: %v", err)
				}
				return
			}
			keys, recs = append(keys, bytes.Clone(k)), append(recs, bytes.Clone(r))
		}
		// A stream the reader accepts is exactly what the writer produces.
		if enc := encodeStream(er.partition, keys, recs); !bytes.Equal(enc, b) {
			t.Fatalf("re-encoded stream differs\n in  = %x\n out = %x", b, enc)
		}
	})
}
