package e2e

import (
	"bufio"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestKvdDev runs `kvd dev` as a user would: it prints its endpoints and
// example commands, serves kvctl, stops cleanly on SIGINT (Ctrl-C), and keeps
// its data across a restart.
func TestKvdDev(t *testing.T) {
	dir := t.TempDir()
	eps := consecutivePorts(t, 3)
	base := strings.Split(eps[0], ":")[1]
	debugAddr := consecutivePorts(t, 1)[0]
	start := func(extra ...string) (*exec.Cmd, *syncBuf, chan struct{}) {
		args := append([]string{"dev", "--nodes", "3", "--base-port", base, "--data-dir", dir, "--log-level", "warn"}, extra...)
		cmd := exec.Command(bins.kvd, args...)
		out := &syncBuf{}
		pr, pw := io.Pipe()
		cmd.Stdout, cmd.Stderr = pw, pw
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		ready := make(chan struct{})
		done := make(chan struct{})
		go func() {
			sc := bufio.NewScanner(pr)
			once := false
			for sc.Scan() {
				out.WriteString(sc.Text() + "\n")
				if !once && strings.Contains(sc.Text(), "Ctrl-C stops the cluster") {
					once = true
					close(ready)
				}
			}
		}()
		go func() { cmd.Wait(); pw.Close(); close(done) }()
		t.Cleanup(func() {
			cmd.Process.Kill()
			<-done
		})
		select {
		case <-ready:
		case <-done:
			t.Fatalf("kvd dev exited during start-up:\n%s", out)
		case <-time.After(30 * time.Second):
			t.Fatalf("kvd dev did not print its banner in 30s:\n%s", out)
		}
		return cmd, out, done
	}
	stop := func(cmd *exec.Cmd, out *syncBuf, done chan struct{}) {
		cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatalf("kvd dev did not stop within 20s of SIGINT:\n%s", out)
		}
		if code := cmd.ProcessState.ExitCode(); code != 0 {
			t.Fatalf("kvd dev exited with %d after SIGINT:\n%s", code, out)
		}
		if !strings.Contains(out.String(), "stopped; data kept in") {
			t.Errorf("no clean-stop message:\n%s", out)
		}
	}

	cmd, out, done := start()
	banner := out.String()
	for _, want := range []string{eps[0], eps[2], "accounts", "sessions", "mode=cp", "mode=ap", "kvctl put accounts/eu/42/balance 100", dir} {
		if !strings.Contains(banner, want) {
			t.Errorf("banner lacks %q:\n%s", want, banner)
		}
	}
	waitServing(t, eps)
	if _, errOut, code := kvctl(t, eps, "", "put", "accounts/eu/42/balance", "100"); code != 0 {
		t.Fatalf("put: %s", errOut)
	}
	if _, errOut, code := kvctl(t, eps, "", "put", "sessions/s1", "hello"); code != 0 {
		t.Fatalf("put: %s", errOut)
	}
	stop(cmd, out, done)

	// Restarting with the same flags keeps the data. The restart also
	// serves pprof (--debug-addr was once bound twice, failing every start).
	cmd, out, done = start("--debug-addr", debugAddr)
	waitServing(t, eps)
	if resp, err := http.Get("http://" + debugAddr + "/debug/pprof/cmdline"); err != nil {
		t.Errorf("kvd dev --debug-addr %s: %v", debugAddr, err)
	} else {
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("kvd dev --debug-addr: GET /debug/pprof/cmdline: %s", resp.Status)
		}
	}
	if got, errOut, _ := kvctl(t, eps, "", "get", "accounts/eu/42/balance"); got != "100" {
		t.Fatalf("after restart: get = %q (%s)", got, errOut)
	}
	if got, errOut, _ := kvctl(t, eps, "", "get", "sessions/s1"); got != "hello" {
		t.Fatalf("after restart: get = %q (%s)", got, errOut)
	}
	stop(cmd, out, done)

	// A different layout on the same data dir is refused, not silently re-placed.
	bad, err := exec.Command(bins.kvd, "dev", "--nodes", "4", "--base-port", base, "--data-dir", dir).CombinedOutput()
	if err == nil || !strings.Contains(string(bad), "different layout") {
		t.Fatalf("kvd dev with another layout: err %v, output %s", err, bad)
	}
}

// syncBuf collects a process's output from a reader goroutine.
type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) WriteString(x string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.WriteString(x)
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitServing waits until a cp write goes through (leaders elected).
func waitServing(t *testing.T, eps []string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, errOut, code := kvctl(t, eps, "", "put", "accounts/eu/0/ready", "1")
		if code == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster not serving after 20s: %s", errOut)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// consecutivePorts finds n consecutive free loopback ports below Linux's
// ephemeral range (32768 and up), where outgoing connections cannot take
// them between this check and kvd dev binding them.
func consecutivePorts(t *testing.T, n int) []string {
	t.Helper()
	for range 50 {
		b := 20000 + rand.IntN(12000)
		var ls []net.Listener
		for i := range n {
			l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(b+i))
			if err != nil {
				break
			}
			ls = append(ls, l)
		}
		var eps []string
		for _, l := range ls {
			eps = append(eps, l.Addr().String())
			l.Close()
		}
		if len(ls) == n {
			return eps
		}
	}
	t.Fatalf("no %d consecutive free ports found", n)
	return nil
}
