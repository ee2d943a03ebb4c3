package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// linesBetween returns the log lines stamped in [from, to) (slog's
// time=... prefix) that contain every one of want.
func linesBetween(log string, from, to time.Time, want ...string) []string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		ts, ok := strings.CutPrefix(l, "time=")
		if !ok {
			continue
		}
		ts, _, _ = strings.Cut(ts, " ")
		at, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil || at.Before(from) || !at.Before(to) {
			continue
		}
		match := true
		for _, w := range want {
			match = match && strings.Contains(l, w)
		}
		if match {
			out = append(out, l)
		}
	}
	return out
}

// One down peer at --log-level warn: the survivors' raft groups all fail to
// reach it, again and again, and the node logs that a few times per window,
// not once per group and attempt (the issue counted 1,228 lines in two
// minutes).
func TestOneDownPeerLogsLittle(t *testing.T) {
	cl := startCluster(t, 3)
	eps := cl.endpoints()
	waitServing(t, eps)
	// Leaders spread over the nodes, so n1 leads some groups with n3 in them.
	for i := range 8 {
		if _, errOut, code := kvctl(t, eps, "", "put", fmt.Sprintf("accounts/eu/%d/x", i), "1"); code != 0 {
			t.Fatalf("put: %s", errOut)
		}
	}
	cl.kill(cl.proc("n3"))
	from := time.Now()
	const window = 12 * time.Second
	time.Sleep(window)
	to := time.Now()
	n1 := cl.proc("n1")
	cl.stop(n1)
	log := n1.log.String()
	raft := linesBetween(log, from, to, "logger=raft")
	all := linesBetween(log, from, to)
	// Per window (10 s): about one line per kind of failed call
	// (heartbeat, appendEntries, pipeline, requestVote) to the down peer,
	// for all groups together; 12 s span two windows. (Before the groups
	// shared the limit: 16 lines here, and growing with the groups.)
	const most = 9
	if len(raft) > most {
		t.Fatalf("%d raft lines (of %d) at --log-level warn in %s with one peer down, want at most %d:\n%s",
			len(raft), len(all), window, most, strings.Join(all, "\n"))
	}
	t.Logf("%d raft lines, %d lines in all, in %s with n3 down:\n%s", len(raft), len(all), window, strings.Join(all, "\n"))
}
