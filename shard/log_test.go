package shard

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// lockedBuffer is a bytes.Buffer safe for Badger's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Badger's routine INFO lines (about 20 at an open, a table of its levels
// at a close) are debug output for a node: at kvd's default level (info) a
// store that opens, writes, flushes and closes logs nothing; at debug they
// are there for whoever asks.
func TestBadgerInfoIsDebug(t *testing.T) {
	run := func(level slog.Level) string {
		var out lockedBuffer
		o := DefaultOptions(t.TempDir())
		o.Logger = slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: level}))
		s, err := Open(o)
		if err != nil {
			t.Fatal(err)
		}
		r := s.Replica("ks/*/0")
		for i := range 100 {
			if err := r.Put(fmt.Sprintf("k%d", i), rec("v")); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		// Reopen: Badger replays its value log and reports it.
		s, err = Open(o)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		return out.String()
	}
	if got := run(slog.LevelInfo); strings.Contains(got, "component=badger") {
		t.Fatalf("at level info Badger logged:\n%s", got)
	}
	got := run(slog.LevelDebug)
	if n := strings.Count(got, "component=badger"); n < 5 {
		t.Fatalf("at level debug %d Badger lines, want its routine reports (open, replay, close):\n%s", n, got)
	}
	if !strings.Contains(got, "level=DEBUG") {
		t.Fatalf("Badger's info lines are not at debug:\n%s", got)
	}
}
