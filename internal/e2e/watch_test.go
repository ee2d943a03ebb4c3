package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/capkv/capkv/client"
)

// next returns the next non-gap event, failing the test after d.
func next(t *testing.T, ch <-chan client.WatchEvent, d time.Duration) client.WatchEvent {
	t.Helper()
	e, ok := tryNext(t, ch, d)
	if !ok {
		t.Fatalf("no watch event within %s", d)
	}
	return e
}

// tryNext returns the next non-gap event, or false after d.
func tryNext(t *testing.T, ch <-chan client.WatchEvent, d time.Duration) (client.WatchEvent, bool) {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case e, ok := <-ch:
			if !ok {
				t.Fatal("watch channel closed")
			}
			if e.Kind == client.WatchGap {
				t.Logf("gap: %v", e.Err)
				continue
			}
			return e, true
		case <-timer.C:
			return client.WatchEvent{}, false
		}
	}
}

// Watch delivers every change to a prefix, in order per partition, for cp
// and ap keys; changes outside the prefix are not delivered; when the node
// serving a stream dies, the stream moves to another replica after a gap
// event and the changes go on.
func TestWatch(t *testing.T) {
	cl := startCluster(t, 3)
	c := newClient(t, cl.endpoints()...)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	cpEvents, err := c.Watch(ctx, "accounts/eu/7/")
	if err != nil {
		t.Fatal(err)
	}
	apEvents, err := c.Watch(ctx, "sessions/")
	if err != nil {
		t.Fatal(err)
	}
	// cp: a put, an overwrite, a CAS, a key outside the prefix, a delete.
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.Put(ctx, "accounts/eu/7/balance", []byte("10")))
	must(c.Put(ctx, "accounts/eu/7/balance", []byte("20")))
	must(c.CAS(ctx, "accounts/eu/7/balance", client.IfValue([]byte("20")), []byte("30")))
	must(c.Put(ctx, "accounts/eu/70/balance", []byte("other account")))
	must(c.Put(ctx, "accounts/eu/7/note", []byte("hi")))
	must(c.Delete(ctx, "accounts/eu/7/note"))
	want := []string{"PUT accounts/eu/7/balance 10", "PUT accounts/eu/7/balance 20", "PUT accounts/eu/7/balance 30",
		"PUT accounts/eu/7/note hi", "DELETE accounts/eu/7/note "}
	var last uint64
	for i, w := range want {
		e := next(t, cpEvents, 10*time.Second)
		if got := fmt.Sprintf("%s %s %s", e.Kind, e.Key, e.Value); got != w {
			t.Fatalf("cp event %d: %q, want %q", i, got, w)
		}
		if e.Revision <= last {
			t.Fatalf("cp event %d: revision %d after %d: not in log order", i, e.Revision, last)
		}
		last = e.Revision
	}

	// ap: puts and a delete at level all (every replica applied it when
	// the call returns, so the one serving the stream has too).
	for i := range 3 {
		must(c.Put(ctx, fmt.Sprintf("sessions/w%d", i), []byte(fmt.Sprint(i)), client.WithConsistency("all")))
	}
	// (An ap delete supersedes what its context names; without one it
	// would sit beside the value as a concurrent write.)
	it, err := c.Get(ctx, "sessions/w1", client.WithConsistency("all"))
	if err != nil {
		t.Fatal(err)
	}
	must(c.Delete(ctx, "sessions/w1", client.WithConsistency("all"), client.WithContext(it.Context)))
	// Per key in merge order; a replica may see a change twice (its own
	// write, then a repair carrying the same state) but never out of order.
	got := map[string][]string{}
	for len(got["sessions/w0"]) == 0 || len(got["sessions/w2"]) == 0 || !slices.Contains(got["sessions/w1"], "DELETE ") {
		e := next(t, apEvents, 10*time.Second)
		got[e.Key] = append(got[e.Key], fmt.Sprintf("%s %s", e.Kind, e.Value))
		t.Logf("ap event %s %s %q rev %d from %s", e.Kind, e.Key, e.Value, e.Revision, e.ServedBy)
	}
	if w1 := got["sessions/w1"]; w1[0] != "PUT 1" || w1[len(w1)-1] != "DELETE " {
		t.Fatalf("ap events of sessions/w1 %v, want the put then the delete", w1)
	}

	// Kill the node serving the cp stream: the watch moves on.
	must(c.Put(ctx, "accounts/eu/7/balance", []byte("40")))
	e := next(t, cpEvents, 10*time.Second)
	p, _ := c.Locate("accounts/eu/7/balance")
	if !slices.Contains(p.Replicas, e.ServedBy) {
		t.Fatalf("event served by %s, not a replica of %v", e.ServedBy, p.Replicas)
	}
	cl.kill(cl.proc(e.ServedBy))
	t.Logf("killed %s, which served the stream", e.ServedBy)
	deadline := time.Now().Add(20 * time.Second)
	for v := 50; ; v++ {
		wctx, wcancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := c.Put(wctx, "accounts/eu/7/balance", []byte(fmt.Sprint(v)))
		wcancel()
		// A write made while the stream was being reopened is in the gap:
		// write again until one arrives.
		if e, ok := tryNext(t, cpEvents, 2*time.Second); err == nil && ok {
			if e.Revision <= last {
				t.Fatalf("revision %d after %d: a reopened stream repeated or reordered", e.Revision, last)
			}
			t.Logf("after the kill: %s %s %s from %s", e.Kind, e.Key, e.Value, e.ServedBy)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no write and event within 20s of killing the stream's node: %v", err)
		}
	}
}

// kvctl watch prints one line per change and stops after --count.
func TestKvctlWatch(t *testing.T) {
	cl := startCluster(t, 3)
	eps := cl.endpoints()
	cmd := exec.Command(bins.kvctl, "--endpoints", strings.Join(eps, ","), "watch", "accounts/eu/9/", "--count", "2", "--for", "30s")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	// Writes go in once kvctl says it is watching.
	sc := bufio.NewScanner(stderr)
	if !sc.Scan() || !strings.Contains(sc.Text(), "watching accounts/eu/9/") {
		t.Fatalf("kvctl watch did not start: %q", sc.Text())
	}
	go func() {
		for sc.Scan() {
			t.Logf("kvctl stderr: %s", sc.Text())
		}
	}()
	for _, args := range [][]string{{"put", "accounts/eu/9/x", "1"}, {"put", "accounts/eu/99/x", "no"}, {"del", "accounts/eu/9/x"}} {
		if _, errOut, code := kvctl(t, eps, "", args...); code != 0 {
			t.Fatalf("%v: %s", args, errOut)
		}
	}
	var lines []string
	out := bufio.NewScanner(stdout)
	for out.Scan() {
		lines = append(lines, out.Text())
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("kvctl watch: %v", err)
	}
	if want := []string{"PUT accounts/eu/9/x 1", "DELETE accounts/eu/9/x"}; !slices.Equal(lines, want) {
		t.Fatalf("kvctl watch printed %q, want %q", lines, want)
	}
}
