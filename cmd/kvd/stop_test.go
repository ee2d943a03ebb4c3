package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// A stop that does not finish within the timeout gives up with the
// goroutine stacks on disk, instead of hanging the process.
func TestStopTimeoutDumpsStacks(t *testing.T) {
	dir := t.TempDir()
	var stderr strings.Builder
	s := &stopper{sigs: make(chan os.Signal, 2), stderr: &stderr, timeout: 50 * time.Millisecond, exit: func(int) {}}
	release := make(chan struct{})
	defer close(release)
	err := s.run(dir, func() error { <-release; return nil })
	if !errors.Is(err, errStopTimeout) {
		t.Fatalf("run = %v, want errStopTimeout", err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "stop-stacks-*.txt"))
	if len(files) != 1 {
		t.Fatalf("stack files %v, want one", files)
	}
	b, _ := os.ReadFile(files[0])
	if !strings.Contains(string(b), "TestStopTimeoutDumpsStacks") || !strings.Contains(err.Error(), files[0]) {
		t.Fatalf("stack file lacks the stuck goroutine or the error does not name it: %v\n%.500s", err, b)
	}
	t.Log(err)
	// A stop that finishes in time returns its own result.
	s.timeout = time.Second
	want := errors.New("close failed")
	if err := s.run(dir, func() error { return want }); err != want {
		t.Fatalf("run = %v, want %v", err, want)
	}
}

// The second signal exits at once with 128+signal, whatever the stop is doing.
func TestSecondSignalExits(t *testing.T) {
	var stderr syncWriter
	exited := make(chan int, 1)
	s := &stopper{sigs: make(chan os.Signal, 2), stderr: &stderr, exit: func(code int) { exited <- code }}
	s.sigs <- syscall.SIGTERM
	if got := s.wait(); got != syscall.SIGTERM {
		t.Fatalf("wait = %v", got)
	}
	select {
	case code := <-exited:
		t.Fatalf("exited (%d) on the first signal", code)
	case <-time.After(20 * time.Millisecond):
	}
	s.sigs <- os.Interrupt
	select {
	case code := <-exited:
		if code != 130 {
			t.Fatalf("exit code %d, want 130", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no exit 5s after the second signal")
	}
	if !strings.Contains(stderr.String(), "second interrupt (Ctrl-C): forced exit") {
		t.Fatalf("stderr = %q", stderr.String())
	}
}

type syncWriter struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}
