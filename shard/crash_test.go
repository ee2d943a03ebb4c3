package shard

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	crashDirEnv   = "CAPKV_SHARD_CRASH_DIR"
	crashRoundEnv = "CAPKV_SHARD_CRASH_ROUND"
)

// crashValue is deterministic so the parent can check contents; every other
// value is larger than ValueThreshold so both the LSM and the value log path
// are exercised.
func crashValue(key string, i int) []byte {
	n := 100
	if i%2 == 1 {
		n = 3000
	}
	return bytes.Repeat([]byte(key+";"), n/(len(key)+1)+1)[:n]
}

// TestHelperCrashWriter is the child process of TestCrashSafetySIGKILL. It
// writes forever and prints "ACK key" only after Put returned; the parent
// kills it with SIGKILL.
func TestHelperCrashWriter(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("helper process for TestCrashSafetySIGKILL")
	}
	round := os.Getenv(crashRoundEnv)
	s, err := Open(DefaultOptions(dir)) // SyncWrites: true
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(2)
	}
	r := s.Replica("crash/p")
	out := bufio.NewWriter(os.Stdout)
	for i := 0; ; i++ {
		key := fmt.Sprintf("r%s/%06d", round, i)
		if err := r.Put(key, Record{Value: crashValue(key, i), Version: uint64(i) + 1}); err != nil {
			fmt.Fprintln(out, "ERR", err)
			out.Flush()
			os.Exit(2)
		}
		// Printed, and flushed, only after the write was acknowledged.
		fmt.Fprintln(out, "ACK", key, i)
		out.Flush()
	}
}

// TestCrashSafetySIGKILL kills a real writer process with SIGKILL mid-write,
// several rounds in the same directory, and checks that every acknowledged
// write survived with its contents and that Badger recovers its torn log
// tail. A process kill leaves the page cache intact, so this proves that an
// acknowledgement comes only after the write reached the OS and that recovery
// works; what fsync adds (power loss) needs a fault-injecting disk to test.
func TestCrashSafetySIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	dir := t.TempDir()
	const rounds, minAcks = 4, 300
	var acked []string // across rounds: earlier rounds must survive later crashes too
	index := map[string]int{}
	for round := range rounds {
		keys := runCrashChild(t, dir, round, minAcks+round*50)
		for _, k := range keys {
			i, _ := strconv.Atoi(k[strings.IndexByte(k, ' ')+1:])
			key := k[:strings.IndexByte(k, ' ')]
			acked = append(acked, key)
			index[key] = i
		}
		s, err := Open(testOptions(t, dir))
		if err != nil {
			t.Fatalf("round %d: reopen after SIGKILL: %v", round, err)
		}
		r := s.Replica("crash/p")
		for _, key := range acked {
			got, found, err := r.Get(key)
			if err != nil || !found {
				s.Close()
				t.Fatalf("round %d: acknowledged key %s lost (found=%v, err=%v)", round, key, found, err)
			}
			if !bytes.Equal(got.Value, crashValue(key, index[key])) || got.Version != uint64(index[key])+1 {
				s.Close()
				t.Fatalf("round %d: key %s has wrong contents", round, key)
			}
		}
		n, _ := r.Count()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		t.Logf("round %d: %d acknowledged writes this round, %d in total verified; %d records on disk", round, len(keys), len(acked), n)
	}
}

// runCrashChild starts the writer, SIGKILLs it once it acknowledged want
// writes (or after a timeout), reaps it, and returns the "key index" lines.
func runCrashChild(t *testing.T, dir string, round, want int) []string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperCrashWriter$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir, crashRoundEnv+"="+strconv.Itoa(round))
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var reaped bool
	kill := func() {
		if !reaped {
			_ = cmd.Process.Signal(syscall.SIGKILL)
			_ = cmd.Wait()
			reaped = true
		}
	}
	t.Cleanup(kill) // even if the test fails half-way
	timer := time.AfterFunc(60*time.Second, func() { _ = cmd.Process.Signal(syscall.SIGKILL) })
	defer timer.Stop()

	var acks []string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "ACK "); ok {
			acks = append(acks, rest)
			if len(acks) == want {
				// Kill mid-write: the child is inside its next Put now.
				_ = cmd.Process.Signal(syscall.SIGKILL)
			}
		} else if strings.HasPrefix(line, "ERR") {
			kill()
			t.Fatalf("round %d: child failed: %s", round, line)
		}
	}
	// Lines the child flushed before dying still count: they were acked.
	kill()
	if len(acks) < want {
		t.Fatalf("round %d: child acknowledged only %d writes before dying or timing out", round, len(acks))
	}
	return acks
}
