package shard

import (
	"log/slog"
	"testing"
)

// tWriter routes Badger's warnings and errors into the test log.
type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}

func testOptions(t testing.TB, dir string) Options {
	o := DefaultOptions(dir)
	o.Logger = slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return o
}

func openTest(t testing.TB, mutate ...func(*Options)) *Store {
	t.Helper()
	o := testOptions(t, t.TempDir())
	for _, m := range mutate {
		m(&o)
	}
	return openOpts(t, o)
}

func openOpts(t testing.TB, o Options) *Store {
	t.Helper()
	s, err := Open(o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func rec(v string) Record { return Record{Value: []byte(v), Timestamp: 1, Version: 1} }

// dump returns every record of the partition, tombstones included.
func dump(t testing.TB, r *Replica) map[string]Record {
	t.Helper()
	m := map[string]Record{}
	if err := r.Scan("", "", 0, true, func(k string, rec Record) bool { m[k] = rec; return true }); err != nil {
		t.Fatalf("Scan: %v", err)
	}
	return m
}
