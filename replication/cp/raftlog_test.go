package cp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// record is one slog record as a test sees it.
type record struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

// recorder is a slog.Handler that keeps its records, at or above min.
type recorder struct {
	min   slog.Level
	mu    *sync.Mutex
	recs  *[]record
	attrs []slog.Attr
}

func newRecorder(min slog.Level) *recorder {
	return &recorder{min: min, mu: new(sync.Mutex), recs: new([]record)}
}

func (h *recorder) Enabled(_ context.Context, l slog.Level) bool { return l >= h.min }

func (h *recorder) Handle(_ context.Context, r slog.Record) error {
	rec := record{level: r.Level, msg: r.Message, attrs: map[string]string{}}
	for _, a := range h.attrs {
		rec.attrs[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool {
		rec.attrs[a.Key] = a.Value.String()
		return true
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	*h.recs = append(*h.recs, rec)
	return nil
}

func (h *recorder) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr(nil), h.attrs...), as...)
	return &c
}

func (h *recorder) WithGroup(string) slog.Handler { return h }

// take returns the records so far and forgets them.
func (h *recorder) take() []record {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := *h.recs
	*h.recs = nil
	return out
}

// testClock is the rate limit's clock: time moves only when the test says.
type testClock struct{ t time.Time }

func (c *testClock) now() time.Time { return c.t }

func newTestRaftLogger(min slog.Level) (*raftLogger, *recorder, *testClock) {
	h := newRecorder(min)
	clk := &testClock{t: time.Unix(1_000_000, 0)}
	return newRaftLogger(slog.New(h), clk.now), h, clk
}

func TestRaftLogLevels(t *testing.T) {
	l, h, _ := newTestRaftLogger(slog.LevelDebug - 8)
	l.Trace("t")
	l.Debug("d")
	l.Info("i")
	l.Warn("w")
	l.Error("e")
	l.Log(hclog.NoLevel, "n")
	l.Log(hclog.Off, "off")
	want := []struct {
		msg, raft string
		level     slog.Level
	}{
		{"i", "info", slog.LevelDebug},
		{"w", "warn", slog.LevelDebug},
		{"e", "error", slog.LevelWarn},
		{"n", "info", slog.LevelDebug},
	}
	got := h.take()
	if len(got) != len(want) {
		t.Fatalf("got %d records %+v, want %d (raft's debug and trace dropped at level info)", len(got), got, len(want))
	}
	for i, w := range want {
		if got[i].msg != w.msg || got[i].level != w.level || got[i].attrs["raft_level"] != w.raft {
			t.Errorf("record %d: %+v, want %s at %v (raft %s)", i, got[i], w.msg, w.level, w.raft)
		}
	}
	if l.IsDebug() || l.IsTrace() || !l.IsInfo() || !l.IsWarn() || !l.IsError() {
		t.Error("Is* disagree with level info")
	}

	l.SetLevel(hclog.Trace)
	if l.GetLevel() != hclog.Trace || !l.IsTrace() {
		t.Fatalf("after SetLevel(Trace): level %v, IsTrace %t", l.GetLevel(), l.IsTrace())
	}
	l.Trace("t")
	l.Debug("d")
	if got := h.take(); len(got) != 2 || got[0].level != slog.LevelDebug-4 || got[1].level != slog.LevelDebug {
		t.Fatalf("trace and debug after SetLevel(Trace): %+v", got)
	}

	// The slog handler's own level counts too: at Warn only raft's errors pass.
	q, qh, _ := newTestRaftLogger(slog.LevelWarn)
	q.Info("i")
	q.Warn("w")
	q.Error("e")
	if got := qh.take(); len(got) != 1 || got[0].msg != "e" {
		t.Fatalf("at slog warn: %+v, want only the error", got)
	}
	if q.IsInfo() || q.IsWarn() || !q.IsError() {
		t.Error("Is* ignore the slog handler's level")
	}
}

func TestRaftLogAttributes(t *testing.T) {
	l, h, _ := newTestRaftLogger(slog.LevelDebug)
	l.Error("failed to appendEntries to", "peer", "n2", "error", errors.New("connection refused"),
		"index", uint64(7), "mask", hclog.Hex(255), "what", hclog.Fmt("%d/%d", 1, 2), "q", hclog.Quote("a b"), "orphan")
	got := h.take()
	if len(got) != 1 {
		t.Fatalf("records: %+v", got)
	}
	for k, v := range map[string]string{
		"logger": "raft", "peer": "n2", "error": "connection refused", "index": "7",
		"mask": "0xff", "what": "1/2", "q": `"a b"`, hclog.MissingKey: "orphan",
	} {
		if got[0].attrs[k] != v {
			t.Errorf("attribute %s = %q, want %q (all: %v)", k, got[0].attrs[k], v, got[0].attrs)
		}
	}
	if got[0].msg != "failed to appendEntries to" {
		t.Errorf("message %q", got[0].msg)
	}
}

func TestRaftLogWithAndNamed(t *testing.T) {
	root, h, _ := newTestRaftLogger(slog.LevelDebug)
	snap := root.With("path", "/a", "id", "s1").With("id", "s2").Named("snapshot")
	if got := fmt.Sprint(snap.ImpliedArgs()); got != "[path /a id s2]" {
		t.Errorf("implied args %s: a repeated key replaces its value", got)
	}
	if snap.Name() != "raft.snapshot" || snap.ResetNamed("store").Name() != "store" || root.Name() != "raft" {
		t.Errorf("names %q, %q, %q", snap.Name(), snap.ResetNamed("store").Name(), root.Name())
	}
	snap.Info("reaping snapshot", "id", "s3")
	root.Info("plain")
	got := h.take()
	if len(got) != 2 {
		t.Fatalf("records: %+v", got)
	}
	if a := got[0].attrs; a["logger"] != "raft.snapshot" || a["path"] != "/a" || a["id"] != "s3" {
		t.Errorf("derived logger's record: %v", a)
	}
	if a := got[1].attrs; a["path"] != "" || a["logger"] != "raft" {
		t.Errorf("the root picked up a child's attributes: %v", a)
	}
	// Derived loggers share the level, as in hclog.
	snap.SetLevel(hclog.Error)
	if root.GetLevel() != hclog.Error || root.IsWarn() {
		t.Error("SetLevel on a derived logger did not reach the root")
	}
	if len(root.ImpliedArgs()) != 0 {
		t.Error("With changed the root's implied args")
	}
}

func TestRaftLogRateLimit(t *testing.T) {
	l, h, clk := newTestRaftLogger(slog.LevelDebug)
	heartbeat := func(peer string, i int) {
		l.Error("failed to heartbeat to", "peer", peer, "backoff time", time.Duration(i)*time.Millisecond, "error", fmt.Errorf("attempt %d", i))
	}
	for i := range 5 {
		heartbeat("n2", i) // values other than the peer differ: still one line
		clk.t = clk.t.Add(time.Second)
	}
	heartbeat("n3", 0) // another peer is another line
	l.Error("failed to appendEntries to", "peer", "n2")
	l.With("peer", "n2").Error("failed to heartbeat to") // the peer from With counts too
	got := h.take()
	if len(got) != 3 {
		t.Fatalf("within the window: %d records %+v, want 3", len(got), got)
	}
	if got[0].attrs["suppressed"] != "" {
		t.Errorf("the first line says suppressed=%s", got[0].attrs["suppressed"])
	}

	clk.t = clk.t.Add(raftLogWindow) // n2's window has passed
	heartbeat("n2", 9)
	got = h.take()
	if len(got) != 1 || got[0].attrs["suppressed"] != "5" || got[0].attrs["error"] != "attempt 9" {
		t.Fatalf("after the window: %+v, want the line with suppressed=5 (4 heartbeats and the With one)", got)
	}
	heartbeat("n2", 10) // a new window: held back again
	if got := h.take(); len(got) != 0 {
		t.Fatalf("a new window let a repeat through: %+v", got)
	}
	clk.t = clk.t.Add(raftLogWindow)
	heartbeat("n2", 11)
	if got := h.take(); len(got) != 1 || got[0].attrs["suppressed"] != "1" {
		t.Fatalf("second window: %+v, want suppressed=1", got)
	}
	clk.t = clk.t.Add(raftLogWindow)
	heartbeat("n2", 12)
	if got := h.take(); len(got) != 1 || got[0].attrs["suppressed"] != "" {
		t.Fatalf("after a quiet window: %+v, want no suppressed attribute", got)
	}

	// Lines a level hides are not counted as held back.
	q, qh, qclk := newTestRaftLogger(slog.LevelWarn)
	q.Info("entering follower state", "address", "n1")
	q.Error("entering follower state", "address", "n1")
	qclk.t = qclk.t.Add(raftLogWindow)
	q.Error("entering follower state", "address", "n1")
	if got := qh.take(); len(got) != 2 || got[1].attrs["suppressed"] != "" {
		t.Fatalf("hidden lines counted: %+v", got)
	}
}

// The table of keys stays bounded when many distinct keys come and go
// (a snapshot ID per line, say).
func TestRaftLogPrune(t *testing.T) {
	l, _, clk := newTestRaftLogger(slog.LevelDebug)
	for i := range 10 * raftLogPruneAt {
		l.Info("reaping snapshot", "id", i)
		clk.t = clk.t.Add(raftLogWindow / 100)
	}
	l.out.lim.mu.Lock()
	n := len(l.out.lim.mu.lines)
	l.out.lim.mu.Unlock()
	if n > raftLogPruneAt+1 {
		t.Fatalf("%d keys kept, want at most %d", n, raftLogPruneAt+1)
	}
}

func TestRaftLogStandardWriter(t *testing.T) {
	l, h, _ := newTestRaftLogger(slog.LevelDebug)
	l.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Error}).Print("[INFO] forced")
	l.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}).Print("[ERROR] inferred")
	l.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true, InferLevelsWithTimestamp: true}).Print("2024/01/02 03:04:05 [WARN] stamped")
	fmt.Fprintln(l.StandardWriter(nil), "[ERROR] as is")
	want := []struct {
		msg   string
		level slog.Level
	}{
		{"forced", slog.LevelWarn},
		{"inferred", slog.LevelWarn},
		{"stamped", slog.LevelDebug},
		{"[ERROR] as is", slog.LevelDebug},
	}
	got := h.take()
	if len(got) != len(want) {
		t.Fatalf("records %+v", got)
	}
	for i, w := range want {
		if got[i].msg != w.msg || got[i].level != w.level {
			t.Errorf("record %d: %q at %v, want %q at %v", i, got[i].msg, got[i].level, w.msg, w.level)
		}
	}
}

// The groups of one node share the rate limit: a down peer that every
// group's leader fails to reach is one line per window, not one per group,
// and the next line counts what every group held back.
func TestRaftLogRateLimitIsNodeWide(t *testing.T) {
	h := newRecorder(slog.LevelWarn)
	clk := &testClock{t: time.Unix(1_000_000, 0)}
	lim := newRaftLogLimiter(clk.now)
	var groups []*raftLogger
	for i := range 9 {
		groups = append(groups, newSharedRaftLogger(slog.New(h).With("group", fmt.Sprintf("ks/*/%d", i)), lim))
	}
	for round := range 3 {
		for _, g := range groups {
			g.Error("failed to heartbeat to", "peer", "n3", "error", errors.New("connection refused"))
			g.Error("failed to make requestVote RPC", "target", "{Suffrage:Voter ID:n3 Address:n3}", "error", errors.New("connection refused"))
			g.Error("failed to make requestVote RPC", "target", "{Suffrage:Voter ID:n2 Address:n2}", "error", errors.New("connection refused"))
		}
		clk.t = clk.t.Add(time.Second * time.Duration(round+1))
	}
	got := h.take()
	if len(got) != 3 {
		t.Fatalf("9 groups x 3 rounds within one window: %d lines, want 3 (one per message and peer): %+v", len(got), got)
	}
	clk.t = clk.t.Add(raftLogWindow)
	groups[4].Error("failed to heartbeat to", "peer", "n3", "error", errors.New("connection refused"))
	got = h.take()
	if len(got) != 1 || got[0].attrs["suppressed"] != "26" || got[0].attrs["group"] != "ks/*/4" {
		t.Fatalf("after the window: %+v, want one line from ks/*/4 with suppressed=26 (27 heartbeat lines, one written)", got)
	}
}
