package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"syscall"
	"time"
)

// errStopTimeout is returned when a clean stop did not finish within
// --stop-timeout.
var errStopTimeout = errors.New("clean stop timed out")

// stopper turns SIGINT/SIGTERM into a clean stop: the first signal starts
// it, a second one exits at once (for a user who would rather not wait),
// and a stop that takes longer than timeout writes every goroutine's stack
// to a file and gives up, so a stuck shutdown is never silent and never
// endless.
type stopper struct {
	sigs    chan os.Signal
	stderr  io.Writer
	timeout time.Duration
	exit    func(code int) // os.Exit
}

func newStopper(stderr io.Writer, timeout time.Duration) *stopper {
	s := &stopper{sigs: make(chan os.Signal, 2), stderr: stderr, timeout: timeout, exit: os.Exit}
	signal.Notify(s.sigs, os.Interrupt, syscall.SIGTERM)
	return s
}

// wait blocks until the first signal; from then on a second one exits the
// process with 128+signal (130 for SIGINT), as shells report a killed job.
func (s *stopper) wait() os.Signal {
	sig := <-s.sigs
	go func() {
		again := <-s.sigs
		fmt.Fprintf(s.stderr, "kvd: second %s: forced exit without finishing the clean stop (data on disk is kept; the next start recovers it)\n", sigName(again))
		s.exit(exitCode(again))
	}()
	return sig
}

// run calls stop and waits for it at most s.timeout (0: no limit). On a
// timeout it dumps the goroutines into dir and returns errStopTimeout.
func (s *stopper) run(dir string, stop func() error) error {
	done := make(chan error, 1)
	go func() { done <- stop() }()
	if s.timeout <= 0 {
		return <-done
	}
	t := time.NewTimer(s.timeout)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
	}
	where := "stderr"
	var out io.Writer = s.stderr
	if f, err := os.Create(filepath.Join(dir, fmt.Sprintf("stop-stacks-%s.txt", time.Now().UTC().Format("20060102T150405Z")))); err == nil {
		defer f.Close()
		out, where = f, f.Name()
	}
	pprof.Lookup("goroutine").WriteTo(out, 2)
	return fmt.Errorf("%w: still stopping after --stop-timeout %s; goroutine stacks written to %s (please report them)", errStopTimeout, s.timeout, where)
}

func sigName(sig os.Signal) string {
	if sig == os.Interrupt {
		return "interrupt (Ctrl-C)"
	}
	return sig.String()
}

func exitCode(sig os.Signal) int {
	if n, ok := sig.(syscall.Signal); ok {
		return 128 + int(n)
	}
	return 1
}
