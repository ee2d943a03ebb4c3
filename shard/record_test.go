package shard

import (
	"bytes"
	"errors"
	"math"
	"testing"

	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/internal/kverrors"
)

func sameRecord(a, b Record) bool {
	return bytes.Equal(a.Value, b.Value) && a.Timestamp == b.Timestamp && a.Version == b.Version &&
		a.Tombstone == b.Tombstone && bytes.Equal(a.Causal, b.Causal)
}

var sampleRecords = []Record{
	{},
	{Value: []byte("hello"), Timestamp: consistency.MakeTimestamp(1_700_000_000_000, 3), Version: 42},
	{Tombstone: true, Timestamp: math.MaxUint64, Version: math.MaxUint64},
	{Value: bytes.Repeat([]byte{0xff}, 300), Causal: []byte{1, 2, 3}, Version: 127},
	{Tombstone: true, Causal: []byte("dvv"), Version: 128},
}

func TestRecordRoundTrip(t *testing.T) {
	for i, r := range sampleRecords {
		b := EncodeRecord([]byte("prefix"), r)
		if string(b[:6]) != "prefix" {
			t.Fatalf("%d: EncodeRecord clobbered dst", i)
		}
		if len(b)-6 != encodedRecordSize(r) {
			t.Errorf("%d: encodedRecordSize = %d, encoding is %d", i, encodedRecordSize(r), len(b)-6)
		}
		got, err := DecodeRecord(b[6:])
		if err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		if !sameRecord(got, r) {
			t.Errorf("%d: got %+v, want %+v", i, got, r)
		}
	}
}

func TestDecodeRecordRejectsCorruption(t *testing.T) {
	for i, r := range sampleRecords {
		b := EncodeRecord(nil, r)
		for n := 0; n < len(b); n++ {
			if _, err := DecodeRecord(b[:n]); !errors.Is(err, kverrors.ErrInternal) {
				t.Fatalf("%d: truncated to %d: err = %v", i, n, err)
			}
		}
		for pos := range b {
			for _, bit := range []byte{0x01, 0x80, 0xff} {
				c := bytes.Clone(b)
				c[pos] ^= bit
				if _, err := DecodeRecord(c); !errors.Is(err, kverrors.ErrInternal) {
					t.Fatalf("%d: flip %#x at %d: err = %v", i, bit, pos, err)
				}
			}
		}
		if _, err := DecodeRecord(append(bytes.Clone(b), 0)); err == nil {
			t.Fatalf("%d: trailing byte accepted", i)
		}
	}
}
