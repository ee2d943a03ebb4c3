package ap

import (
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/internal/kverrors"
)

// Tests of the pure write round (quorum.go): scripts under testdata/round
// where the test decides which store answers when and how, table tests of
// its edge cases, and a comparison with a brute-force reference over random
// small configurations. None of them starts a goroutine or touches a store.

var (
	rewrite   = flag.Bool("rewrite", false, "rewrite the expected output of the testdata scripts")
	roundSeed = flag.Uint64("round-seed", 0, "seed of TestWriteRoundMatchesReference (0: from the clock)")
)

// TestWriteRoundScripts runs testdata/round/*.txt. A script is a sequence of
// blocks: comment lines (#), a command, a line "----" and the expected
// output, ended by a blank line. Commands:
//
//	round replicas=a,b,c [fallbacks=d,e] [self=a] [level=one|quorum|all]
//	start            the coordinator stored the write locally
//	ok NODE          the store in flight to NODE succeeds
//	fail NODE        it fails
//	drop NODE        it is lost: no answer ever comes
//	deadline         the caller's context ends
//
// The output is the round's actions, one a line, or "(nothing)".
// go test -run TestWriteRoundScripts -rewrite rewrites the expected output.
func TestWriteRoundScripts(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "round", "*.txt"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no scripts: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			blocks := parseScript(t, file)
			var s roundScript
			for i := range blocks {
				b := &blocks[i]
				got := s.run(t, b)
				if *rewrite {
					b.want = got
					continue
				}
				if !slices.Equal(got, b.want) {
					t.Errorf("%s: %s\ngot:\n\t%s\nwant:\n\t%s", b.pos, b.cmd, strings.Join(got, "\n\t"), strings.Join(b.want, "\n\t"))
				}
			}
			if *rewrite {
				writeScript(t, file, blocks)
			}
		})
	}
}

type scriptBlock struct {
	pos      string   // file:line of the command
	comments []string // the lines before the command, kept by -rewrite
	cmd      string
	want     []string
}

func parseScript(t *testing.T, file string) []scriptBlock {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	var (
		out []scriptBlock
		pre []string
	)
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		if line == "" || strings.HasPrefix(line, "#") {
			pre = append(pre, line)
			continue
		}
		b := scriptBlock{pos: fmt.Sprintf("%s:%d", file, i+1), comments: pre, cmd: line}
		pre = nil
		if i+1 >= len(lines) || lines[i+1] != "----" {
			t.Fatalf("%s: %q is not followed by ----", b.pos, line)
		}
		for i += 2; i < len(lines) && lines[i] != ""; i++ {
			b.want = append(b.want, lines[i])
		}
		out = append(out, b)
	}
	return out
}

func writeScript(t *testing.T, file string, blocks []scriptBlock) {
	t.Helper()
	var sb strings.Builder
	for _, b := range blocks {
		for _, c := range b.comments {
			sb.WriteString(c + "\n")
		}
		sb.WriteString(b.cmd + "\n----\n")
		for _, l := range b.want {
			sb.WriteString(l + "\n")
		}
		sb.WriteString("\n")
	}
	if err := os.WriteFile(file, []byte(strings.TrimRight(sb.String(), "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// roundScript is the state of one script: the round and the stores it sent
// that have not answered, with the HintFor each was sent with (the driver
// echoes it back in the answer, as Coordinator.Write does).
type roundScript struct {
	r        *writeRound
	inFlight map[string]string
	sent     map[string]bool
	finished bool
}

var errStoreFailed = errors.New("store failed")

func (s *roundScript) run(t *testing.T, b *scriptBlock) []string {
	t.Helper()
	fields := strings.Fields(b.cmd)
	arg := func() string {
		if len(fields) != 2 {
			t.Fatalf("%s: %q wants one node", b.pos, b.cmd)
		}
		return fields[1]
	}
	if fields[0] != "round" && s.r == nil {
		t.Fatalf("%s: %q before a round", b.pos, b.cmd)
	}
	var ev writeEvent
	switch fields[0] {
	case "round":
		opts := map[string]string{"level": "quorum"}
		for _, f := range fields[1:] {
			k, v, ok := strings.Cut(f, "=")
			if !ok {
				t.Fatalf("%s: %q is not key=value", b.pos, f)
			}
			opts[k] = v
		}
		split := func(v string) []string {
			if v == "" {
				return nil
			}
			return strings.Split(v, ",")
		}
		replicas := split(opts["replicas"])
		self := opts["self"]
		if self == "" && len(replicas) > 0 {
			self = replicas[0]
		}
		*s = roundScript{inFlight: map[string]string{}, sent: map[string]bool{}}
		s.r = newWriteRound(self, replicas, split(opts["fallbacks"]), consistency.Level(opts["level"]))
		return []string{fmt.Sprintf("need %d", s.r.need)}
	case "start":
		ev = writeEvent{Kind: evStart}
	case "ok", "fail":
		node := arg()
		hintFor, ok := s.inFlight[node]
		if !ok {
			t.Fatalf("%s: no store in flight to %s", b.pos, node)
		}
		delete(s.inFlight, node)
		ev = writeEvent{Kind: evStored, Node: node, HintFor: hintFor}
		if fields[0] == "fail" {
			ev.Err = errStoreFailed
		}
	case "drop":
		node := arg()
		if _, ok := s.inFlight[node]; !ok {
			t.Fatalf("%s: no store in flight to %s", b.pos, node)
		}
		delete(s.inFlight, node)
		return []string{"(nothing)"}
	case "deadline":
		ev = writeEvent{Kind: evDeadline}
	default:
		t.Fatalf("%s: unknown command %q", b.pos, b.cmd)
	}
	acts := s.r.Step(ev)
	checkActions(t, b.pos, acts, s.sent, &s.finished)
	var out []string
	for _, a := range acts {
		if a.Kind == actStore {
			s.inFlight[a.Node] = a.HintFor
		}
		out = append(out, formatAction(a))
	}
	if len(out) == 0 {
		out = []string{"(nothing)"}
	}
	return out
}

// checkActions checks what holds of every step: a node is sent the write at
// most once per round, nothing comes after the finish, and the finish is
// the last action of its step.
func checkActions(t *testing.T, pos string, acts []writeAction, sent map[string]bool, finished *bool) {
	t.Helper()
	for i, a := range acts {
		if *finished {
			t.Errorf("%s: action %s after the finish", pos, formatAction(a))
		}
		switch a.Kind {
		case actStore:
			if sent[a.Node] {
				t.Errorf("%s: %s is sent the write twice", pos, a.Node)
			}
			sent[a.Node] = true
		case actFinish:
			*finished = true
			if i != len(acts)-1 {
				t.Errorf("%s: the finish is not the last action", pos)
			}
		}
	}
}

func formatAction(a writeAction) string {
	switch a.Kind {
	case actStore:
		if a.HintFor != "" {
			return fmt.Sprintf("store %s hint-for=%s", a.Node, a.HintFor)
		}
		return "store " + a.Node
	case actFinish:
		r := a.Result
		outcome := "ok"
		if r.Err != nil {
			outcome = "indeterminate"
		}
		s := fmt.Sprintf("finish %s counted=%d/%d acked=%v hinted=%v", outcome, r.Counted, r.Need, r.Acked, r.Hinted)
		if r.Sloppy {
			s += " sloppy"
		}
		return s
	}
	return fmt.Sprintf("action %d?", a.Kind)
}

// The edges a driver should never hit but the round must survive.
func TestWriteRoundIgnoresStrayEvents(t *testing.T) {
	r := newWriteRound("a", []string{"a", "b", "c"}, []string{"d"}, consistency.Quorum)
	// Before the start nothing is in flight and there is nothing to stop.
	for _, ev := range []writeEvent{{Kind: evStored, Node: "b"}, {Kind: evDeadline}} {
		if acts := r.Step(ev); len(acts) != 0 {
			t.Fatalf("%+v before the start: %v", ev, acts)
		}
	}
	if acts := r.Step(writeEvent{Kind: evStart}); len(acts) != 2 {
		t.Fatalf("start: %v", acts)
	}
	if acts := r.Step(writeEvent{Kind: evStart}); len(acts) != 0 {
		t.Fatalf("a second start: %v", acts)
	}
	acts := r.Step(writeEvent{Kind: evStored, Node: "b"})
	if len(acts) != 1 || acts[0].Kind != actFinish || acts[0].Result.Err != nil {
		t.Fatalf("b acknowledged: %v", acts)
	}
	for _, ev := range []writeEvent{{Kind: evStored, Node: "c", Err: errStoreFailed}, {Kind: evDeadline}, {Kind: evStart}} {
		if acts := r.Step(ev); len(acts) != 0 {
			t.Fatalf("%+v after the finish: %v", ev, acts)
		}
	}
}

// The outcome of a round where every store answers at once, by level,
// replica count and how many replicas and fallbacks are up.
func TestWriteRoundOutcomeTable(t *testing.T) {
	for _, tc := range []struct {
		level         consistency.Level
		replicas      int // the coordinator is the first
		replicasUp    int // of the others
		fallbacks     int
		fallbacksUp   int // the first ones
		ok, sloppy    bool
		acked, hinted int
	}{
		{consistency.One, 3, 0, 0, 0, true, false, 1, 0},
		{consistency.One, 1, 0, 2, 2, true, false, 1, 0},
		{consistency.Quorum, 1, 0, 0, 0, true, false, 1, 0},
		{consistency.Quorum, 3, 2, 1, 1, true, false, 2, 0},
		{consistency.Quorum, 3, 1, 1, 1, true, false, 2, 0}, // b answers before c's failure is retried
		{consistency.Quorum, 3, 0, 1, 1, true, true, 1, 1},
		{consistency.Quorum, 3, 0, 0, 0, false, false, 1, 0},
		{consistency.Quorum, 3, 0, 2, 0, false, false, 1, 0},
		{consistency.Quorum, 2, 0, 2, 1, true, true, 1, 1},
		{consistency.Quorum, 5, 0, 3, 2, true, true, 1, 2},
		{consistency.Quorum, 5, 0, 3, 1, false, true, 1, 1}, // sloppy: the hint was counted, if not enough
		{consistency.Quorum, 4, 1, 2, 2, true, true, 2, 1},
		{consistency.All, 3, 2, 0, 0, true, false, 3, 0},
		{consistency.All, 3, 1, 1, 1, false, false, 2, 1}, // a hint never counts for all
		{consistency.All, 3, 0, 3, 3, false, false, 1, 2},
		{consistency.All, 1, 0, 1, 1, true, false, 1, 0},
	} {
		name := fmt.Sprintf("%s n=%d up=%d fallbacks=%d/%d", tc.level, tc.replicas, tc.replicasUp, tc.fallbacksUp, tc.fallbacks)
		var replicas, fallbacks []string
		up := map[string]bool{}
		for i := range tc.replicas {
			replicas = append(replicas, fmt.Sprintf("r%d", i))
			up[replicas[i]] = i <= tc.replicasUp
		}
		for i := range tc.fallbacks {
			fallbacks = append(fallbacks, fmt.Sprintf("f%d", i))
			up[fallbacks[i]] = i < tc.fallbacksUp
		}
		// Deliver the oldest store's answer first (FIFO), so replicas
		// answer before any hint they cause.
		r := newWriteRound(replicas[0], replicas, fallbacks, tc.level)
		queue := r.Step(writeEvent{Kind: evStart})
		var res *roundResult
		for len(queue) > 0 && res == nil {
			a := queue[0]
			queue = queue[1:]
			if a.Kind == actFinish {
				res = &a.Result
				break
			}
			ev := writeEvent{Kind: evStored, Node: a.Node, HintFor: a.HintFor}
			if !up[a.Node] {
				ev.Err = errStoreFailed
			}
			queue = append(queue, r.Step(ev)...)
		}
		if res == nil {
			t.Errorf("%s: the round never finished", name)
			continue
		}
		if (res.Err == nil) != tc.ok || res.Sloppy != tc.sloppy || len(res.Acked) != tc.acked || len(res.Hinted) != tc.hinted {
			t.Errorf("%s: %+v, want ok %v sloppy %v, %d acked, %d hinted", name, *res, tc.ok, tc.sloppy, tc.acked, tc.hinted)
		}
		if res.Err != nil && !errors.Is(res.Err, kverrors.ErrIndeterminate) {
			t.Errorf("%s: %v, want ErrIndeterminate", name, res.Err)
		}
		if res.Acked[0] != replicas[0] {
			t.Errorf("%s: acked %v, want the coordinator first", name, res.Acked)
		}
	}
}

// roundCase is one random configuration and network: whether each node's
// store succeeds and how long after it is sent its answer comes back.
type roundCase struct {
	self                string
	replicas, fallbacks []string
	level               consistency.Level
	ok                  map[string]bool
	delay               map[string]int // 1..6: ties are common
	deadline            int            // the caller gives up at this time; 0: never
}

func (c roundCase) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "self=%s replicas=%v fallbacks=%v level=%s deadline=%d;", c.self, c.replicas, c.fallbacks, c.level, c.deadline)
	for _, n := range slices.Concat(c.replicas, c.fallbacks) {
		fmt.Fprintf(&b, " %s:ok=%v,delay=%d", n, c.ok[n], c.delay[n])
	}
	return b.String()
}

func randomRoundCase(rng *rand.Rand) roundCase {
	c := roundCase{ok: map[string]bool{}, delay: map[string]int{}}
	for i := range 1 + rng.IntN(5) {
		c.replicas = append(c.replicas, fmt.Sprintf("r%d", i))
	}
	for i := range rng.IntN(4) {
		c.fallbacks = append(c.fallbacks, fmt.Sprintf("f%d", i))
	}
	c.self = c.replicas[rng.IntN(len(c.replicas))]
	c.level = []consistency.Level{consistency.One, consistency.Quorum, consistency.All}[rng.IntN(3)]
	for _, n := range slices.Concat(c.replicas, c.fallbacks) {
		c.ok[n] = rng.IntN(2) == 0
		c.delay[n] = 1 + rng.IntN(6)
	}
	if rng.IntN(3) == 0 {
		c.deadline = 1 + rng.IntN(12)
	}
	return c
}

// sentStore is a store a round sent: to node, as a hint for hintFor.
type sentStore struct{ node, hintFor string }

// refOutcome is what a write round should end with.
type refOutcome struct {
	ok, sloppy    bool
	acked, hinted []string
	sent          []sentStore
}

// referenceRound computes a case's outcome the long way round: first the
// whole timeline of answers as if the coordinator waited for every one (each
// failure, in time order, hands its replica to the next fallback), then the
// round is the shortest prefix of it that meets the level, cut at the
// deadline.
func referenceRound(c roundCase) refOutcome {
	type answer struct {
		t             int
		node, hintFor string
		ok            bool
		retry         *sentStore // the hint this failure sends, if a fallback is left
	}
	var timeline []*answer
	for _, r := range c.replicas {
		if r != c.self {
			timeline = append(timeline, &answer{t: c.delay[r], node: r, ok: c.ok[r]})
		}
	}
	byTime := func(a, b *answer) int {
		if a.t != b.t {
			return a.t - b.t
		}
		return strings.Compare(a.node, b.node)
	}
	next := 0
	for i := 0; i < len(timeline); i++ {
		slices.SortStableFunc(timeline[i:], byTime)
		a := timeline[i]
		if a.ok || next == len(c.fallbacks) {
			continue
		}
		f := c.fallbacks[next]
		next++
		target := a.hintFor
		if target == "" {
			target = a.node
		}
		a.retry = &sentStore{f, target}
		timeline = append(timeline, &answer{t: a.t + c.delay[f], node: f, hintFor: target, ok: c.ok[f]})
	}

	need := len(c.replicas)/2 + 1
	switch c.level {
	case consistency.One:
		need = 1
	case consistency.All:
		need = len(c.replicas)
	}
	out := refOutcome{acked: []string{c.self}}
	counted := func() int {
		if c.level == consistency.All {
			return len(out.acked)
		}
		return len(out.acked) + len(out.hinted)
	}
	for _, r := range c.replicas {
		if r != c.self {
			out.sent = append(out.sent, sentStore{r, ""})
		}
	}
	for _, a := range timeline {
		if counted() >= need || c.deadline > 0 && a.t >= c.deadline {
			break
		}
		switch {
		case a.ok && a.hintFor == "":
			out.acked = append(out.acked, a.node)
		case a.ok:
			out.hinted = append(out.hinted, a.node)
		case a.retry != nil:
			out.sent = append(out.sent, *a.retry)
		}
	}
	out.ok = counted() >= need
	out.sloppy = len(out.hinted) > 0 && c.level != consistency.All && len(out.acked) < need
	return out
}

// driveRound runs a case through the state machine: the test is the
// network, delivering each answer at its time (ties by node name) and the
// deadline before every answer due at or after it; answers after the finish
// are delivered too, and must be ignored.
func driveRound(t *testing.T, c roundCase) (refOutcome, bool) {
	t.Helper()
	type flight struct {
		t             int
		node, hintFor string
	}
	var (
		inFlight []flight
		out      refOutcome
		finished bool
		now      int
		sent     = map[string]bool{}
	)
	r := newWriteRound(c.self, c.replicas, c.fallbacks, c.level)
	apply := func(acts []writeAction) {
		checkActions(t, c.String(), acts, sent, &finished)
		for _, a := range acts {
			switch a.Kind {
			case actStore:
				out.sent = append(out.sent, sentStore{a.Node, a.HintFor})
				inFlight = append(inFlight, flight{now + c.delay[a.Node], a.Node, a.HintFor})
			case actFinish:
				out.ok, out.sloppy = a.Result.Err == nil, a.Result.Sloppy
				out.acked, out.hinted = a.Result.Acked, a.Result.Hinted
				if a.Result.Err != nil && !errors.Is(a.Result.Err, kverrors.ErrIndeterminate) {
					t.Errorf("%s: finish with %v", c, a.Result.Err)
				}
			}
		}
	}
	apply(r.Step(writeEvent{Kind: evStart}))
	deadlinePending := c.deadline > 0
	for len(inFlight) > 0 || deadlinePending {
		slices.SortFunc(inFlight, func(a, b flight) int {
			if a.t != b.t {
				return a.t - b.t
			}
			return strings.Compare(a.node, b.node)
		})
		if deadlinePending && (len(inFlight) == 0 || inFlight[0].t >= c.deadline) {
			deadlinePending = false
			now = c.deadline
			apply(r.Step(writeEvent{Kind: evDeadline}))
			continue
		}
		f := inFlight[0]
		inFlight = inFlight[1:]
		now = f.t
		ev := writeEvent{Kind: evStored, Node: f.node, HintFor: f.hintFor}
		if !c.ok[f.node] {
			ev.Err = errStoreFailed
		}
		apply(r.Step(ev))
	}
	return out, finished
}

// The state machine agrees with the reference on random small
// configurations: outcome, who acknowledged in which order, who keeps a
// hint, sloppiness, and every store it sent (with its hint target).
func TestWriteRoundMatchesReference(t *testing.T) {
	seed := *roundSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (replay: go test -run TestWriteRoundMatchesReference -round-seed %d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	const cases = 20000
	var sloppy, indeterminate, hinted int
	for i := range cases {
		c := randomRoundCase(rng)
		want := referenceRound(c)
		got, finished := driveRound(t, c)
		if !finished {
			t.Fatalf("case %d (seed %d): the round never finished: %s", i, seed, c)
		}
		same := got.ok == want.ok && got.sloppy == want.sloppy && slices.Equal(got.acked, want.acked) &&
			slices.Equal(got.hinted, want.hinted) && slices.Equal(got.sent, want.sent)
		if !same {
			t.Fatalf("case %d (seed %d): %s\ngot  %+v\nwant %+v", i, seed, c, got, want)
		}
		if want.sloppy {
			sloppy++
		}
		if !want.ok {
			indeterminate++
		}
		if len(want.hinted) > 0 {
			hinted++
		}
	}
	t.Logf("%d cases: %d indeterminate, %d with hints, %d sloppy", cases, indeterminate, hinted, sloppy)
}
