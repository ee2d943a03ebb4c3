package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/capkv/capkv/client"
)

// devProc is one `kvd dev` process of a test.
type devProc struct {
	cmd  *exec.Cmd
	out  *syncBuf // stdout and stderr
	done chan struct{}
}

// startDev starts `kvd dev` on dir and waits for its banner. It is killed
// when the test ends if it is still running.
func startDev(t *testing.T, dir, basePort string, extra ...string) *devProc {
	t.Helper()
	args := append([]string{"dev", "--nodes", "3", "--base-port", basePort, "--data-dir", dir, "--log-level", "warn"}, extra...)
	p := &devProc{cmd: exec.Command(bins.kvd, args...), out: &syncBuf{}, done: make(chan struct{})}
	pr, pw := io.Pipe()
	p.cmd.Stdout, p.cmd.Stderr = pw, pw
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		once := false
		for sc.Scan() {
			p.out.WriteString(sc.Text() + "\n")
			if !once && strings.Contains(sc.Text(), "Ctrl-C stops the cluster") {
				once = true
				close(ready)
			}
		}
		io.Copy(io.Discard, pr) // never block the process on a full pipe
	}()
	go func() { p.cmd.Wait(); pw.Close(); close(p.done) }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
	})
	select {
	case <-ready:
	case <-p.done:
		t.Fatalf("kvd dev exited during start-up:\n%s", p.out)
	case <-time.After(30 * time.Second):
		t.Fatalf("kvd dev did not print its banner in 30s:\n%s", p.out)
	}
	return p
}

// interrupt sends SIGINT and waits for the exit, at most within.
func (p *devProc) interrupt(t *testing.T, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.done:
	case <-time.After(within):
		p.cmd.Process.Signal(syscall.SIGQUIT) // goroutine dump into the output
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
		}
		t.Fatalf("kvd dev did not exit within %s of SIGINT:\n%s", within, tail(p.out.String(), 200))
	}
	return time.Since(start)
}

func tail(s string, lines int) string {
	ls := strings.Split(s, "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}

// TestKvdDevStopsUnderLoad interrupts a dev cluster under cp and ap write
// load again and again: every stop must be clean and quick, and every
// acknowledged write must be there after the restart. (Issue: after such
// cycles one `make run` stopped one node and hung in the others' Close.)
func TestKvdDevStopsUnderLoad(t *testing.T) {
	dir := t.TempDir()
	eps := consecutivePorts(t, 3)
	base := strings.Split(eps[0], ":")[1]
	const cycles = 5
	acked := map[string]string{} // key -> value of the last acknowledged write
	for cycle := range cycles {
		p := startDev(t, dir, base)
		waitServing(t, eps)
		c := newClient(t, eps...)
		// Everything acknowledged before is still there.
		for k, v := range acked {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			it, err := c.Get(ctx, k)
			cancel()
			if err != nil || string(it.Value) != v {
				t.Fatalf("cycle %d: acknowledged %s = %q; after the restart: %v %q", cycle, k, v, err, valueOf(it))
			}
		}
		// Load: writers on both keyspaces until the interrupt.
		ctx, stopLoad := context.WithCancel(context.Background())
		var mu sync.Mutex
		var wg sync.WaitGroup
		for w := range 12 {
			wg.Go(func() {
				for i := 0; ctx.Err() == nil && i < 100000; i++ {
					// cp keys are checked after the restart; ap writes without a
					// read context make siblings, so they are load only.
					key, check := fmt.Sprintf("accounts/eu/%d/c%d", w, i%50), true
					if w%3 == 0 {
						key, check = fmt.Sprintf("sessions/w%d-%d", w, i%50), false
					}
					val := fmt.Sprintf("cycle%d-%d", cycle, i)
					cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
					_, err := c.Put(cctx, key, []byte(val))
					cancel()
					if !check {
						continue
					}
					mu.Lock()
					if err == nil {
						acked[key] = val
					} else {
						// It may have been applied (unknown outcome): the
						// last acknowledged value is no longer a promise.
						delete(acked, key)
					}
					mu.Unlock()
					if err != nil && ctx.Err() == nil {
						time.Sleep(20 * time.Millisecond)
					}
				}
			})
		}
		time.Sleep(1500 * time.Millisecond)
		took := p.interrupt(t, 20*time.Second)
		stopLoad()
		wg.Wait()
		c.Close()
		if code := p.cmd.ProcessState.ExitCode(); code != 0 || !strings.Contains(p.out.String(), "stopped; data kept in") {
			t.Fatalf("cycle %d: exit code %d after SIGINT, want 0 and the clean-stop message:\n%s", cycle, code, tail(p.out.String(), 50))
		}
		t.Logf("cycle %d: stopped %s after SIGINT under load; %d keys acknowledged so far", cycle, took.Round(time.Millisecond), len(acked))
	}
	if len(acked) == 0 {
		t.Fatal("no write was acknowledged in any cycle")
	}
}

func valueOf(it *client.Item) string {
	if it == nil {
		return "<none>"
	}
	return string(it.Value)
}

// A second Ctrl-C exits at once, non-zero, saying the stop was forced.
func TestKvdDevSecondInterruptForcesExit(t *testing.T) {
	dir := t.TempDir()
	eps := consecutivePorts(t, 3)
	p := startDev(t, dir, strings.Split(eps[0], ":")[1])
	waitServing(t, eps)
	// A clean stop waits (up to its grace, 5s) for open streams; one held
	// open keeps it going long enough for the second signal to land.
	// (Two signals sent back to back would merge into one.)
	conn, err := grpc.NewClient(eps[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hw, err := healthpb.NewHealthClient(conn).Watch(hctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hw.Recv(); err != nil {
		t.Fatal(err)
	}
	p.cmd.Process.Signal(syscall.SIGINT)
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(p.out.String(), "stopping the cluster"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no stopping message 10s after SIGINT:\n%s", tail(p.out.String(), 30))
		}
	}
	took := p.interrupt(t, 2*time.Second)
	out := p.out.String()
	if code := p.cmd.ProcessState.ExitCode(); code != 130 {
		t.Fatalf("exit code %d after two SIGINTs, want 130 (128+SIGINT):\n%s", code, tail(out, 30))
	}
	if !strings.Contains(out, "second interrupt (Ctrl-C): forced exit") || strings.Contains(out, "stopped; data kept in") {
		t.Fatalf("want the forced-exit message and no clean-stop message:\n%s", tail(out, 30))
	}
	t.Logf("exited %s after the second SIGINT", took.Round(time.Millisecond))
}
