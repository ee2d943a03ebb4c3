package shard

import (
	"bytes"
	"fmt"
	"testing"
)

func benchStore(b *testing.B, sync bool) *Replica {
	b.Helper()
	return openTest(b, func(o *Options) { o.SyncWrites = sync }).Replica("bench/eu/1")
}

// BenchmarkPut writes 256-byte values (the etcd benchmark's size) to 8-byte
// keys over a 100k key space, one writer.
func BenchmarkPut(b *testing.B) {
	for _, sync := range []bool{true, false} {
		for _, size := range []int{256, 4 << 10} {
			b.Run(fmt.Sprintf("sync=%v/value=%d", sync, size), func(b *testing.B) {
				r := benchStore(b, sync)
				rc := Record{Value: bytes.Repeat([]byte{'v'}, size), Timestamp: 1, Version: 1}
				b.ReportAllocs()
				b.SetBytes(int64(size))
				i := 0
				for b.Loop() {
					if err := r.Put(fmt.Sprintf("%08d", i%100_000), rc); err != nil {
						b.Fatal(err)
					}
					i++
				}
			})
		}
	}
}

// BenchmarkPutParallel shows group commit: concurrent synced Puts share fsyncs.
func BenchmarkPutParallel(b *testing.B) {
	r := benchStore(b, true)
	rc := Record{Value: bytes.Repeat([]byte{'v'}, 256), Timestamp: 1, Version: 1}
	b.SetParallelism(16)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if err := r.Put(fmt.Sprintf("%p%08d", pb, i%100_000), rc); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}

func loaded(b *testing.B, n int) *Replica {
	r := benchStore(b, false)
	rc := Record{Value: bytes.Repeat([]byte{'v'}, 256), Timestamp: 1, Version: 1}
	batch := make([]Mutation, 0, 1000)
	for i := range n {
		batch = append(batch, Mutation{fmt.Sprintf("%08d", i), rc})
		if len(batch) == cap(batch) {
			if err := r.Apply(batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	return r
}

func BenchmarkGet(b *testing.B) {
	const n = 100_000
	r := loaded(b, n)
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("%08d", (i*7919)%n)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, ok, err := r.Get(keys[i%n]); err != nil || !ok {
			b.Fatal(ok, err)
		}
		i++
	}
}

// BenchmarkScan reads 100 consecutive records per op; ns/op / 100 is the
// per-record cost.
func BenchmarkScan(b *testing.B) {
	const n = 100_000
	r := loaded(b, n)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		seen := 0
		after := fmt.Sprintf("%08d", (i*7919)%(n-200))
		if err := r.Scan("", after, 100, false, func(string, Record) bool { seen++; return true }); err != nil || seen != 100 {
			b.Fatal(seen, err)
		}
		i++
	}
}

func BenchmarkEncodeRecord(b *testing.B) {
	rc := Record{Value: bytes.Repeat([]byte{'v'}, 256), Timestamp: 1 << 40, Version: 12345, Causal: []byte("dvv-ctx")}
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		buf = EncodeRecord(buf[:0], rc)
	}
}

func BenchmarkDecodeRecord(b *testing.B) {
	enc := EncodeRecord(nil, Record{Value: bytes.Repeat([]byte{'v'}, 256), Timestamp: 1 << 40, Version: 12345, Causal: []byte("dvv-ctx")})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeRecord(enc); err != nil {
			b.Fatal(err)
		}
	}
}
