package jepsen

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/internal/dial"
)

// Fault is an injected fault; Heal undoes it. Faults print themselves.
type Fault interface {
	String() string
	Heal(ctx context.Context) error
}

// Nemesis injects one kind of fault.
type Nemesis interface {
	Name() string
	Inject(ctx context.Context, c Cluster, rng *rand.Rand) (Fault, error)
}

// Nemeses by name, as --nemesis takes them.
var Nemeses = map[string]func() Nemesis{
	"partition-halves": func() Nemesis { return halves{} },
	"isolate-leader":   func() Nemesis { return isolateLeader{} },
	"majorities-ring":  func() Nemesis { return majoritiesRing{} },
	"bridge":           func() Nemesis { return bridge{} },
	"kill":             func() Nemesis { return kill{} },
	"pause":            func() Nemesis { return pause{} },
	"loss":             func() Nemesis { return loss{} },
	"delay":            func() Nemesis { return delay{} },
	"clock-skew":       func() Nemesis { return skew{} },
	"membership":       func() Nemesis { return NewMembership() },
}

// ParseNemeses parses a comma-separated list ("all" for every one).
func ParseNemeses(s string) ([]Nemesis, error) {
	var names []string
	if s == "all" {
		for n := range Nemeses {
			names = append(names, n)
		}
		sort.Strings(names)
	} else {
		for _, n := range strings.Split(s, ",") {
			if n = strings.TrimSpace(n); n != "" {
				names = append(names, n)
			}
		}
	}
	var out []Nemesis
	for _, n := range names {
		mk, ok := Nemeses[n]
		if !ok {
			var known []string
			for k := range Nemeses {
				known = append(known, k)
			}
			sort.Strings(known)
			return nil, fmt.Errorf("unknown nemesis %q (known: %s, or all)", n, strings.Join(known, ", "))
		}
		out = append(out, mk())
	}
	if len(out) == 0 {
		return nil, errors.New("no nemesis given")
	}
	return out, nil
}

func ids(c Cluster) []string {
	var out []string
	for _, n := range c.Nodes() {
		out = append(out, n.ID)
	}
	return out
}

// cutBetween cuts every link between groups a and b, both ways.
func cutBetween(a, b []string) []Link {
	var out []Link
	for _, x := range a {
		for _, y := range b {
			out = append(out, Link{From: x, To: y}, Link{From: y, To: x})
		}
	}
	return out
}

type netFault struct {
	c     Cluster
	desc  string
	sides map[string]string
}

func (f netFault) String() string                 { return f.desc }
func (f netFault) Heal(ctx context.Context) error { return f.c.Cut(ctx, nil) }

// Sides labels each node "minority" or "majority" when the fault splits the
// cluster into a cut-off minority and a majority.
func (f netFault) Sides() map[string]string { return f.sides }

func partition(ctx context.Context, c Cluster, desc string, links []Link) (Fault, error) {
	if err := c.Cut(ctx, links); err != nil {
		return nil, healAfter(ctx, c, err)
	}
	return netFault{c: c, desc: desc}, nil
}

// healAfter heals the network after a cut failed on some node: the others
// got their rules, and a fault that failed to inject is never healed.
func healAfter(ctx context.Context, c Cluster, err error) error {
	if herr := c.Cut(ctx, nil); herr != nil {
		return fmt.Errorf("%w (and healing the partial cut failed: %v)", err, herr)
	}
	return err
}

// split partitions a (the minority) from b (the majority).
func split(ctx context.Context, c Cluster, desc string, a, b []string) (Fault, error) {
	if err := c.Cut(ctx, cutBetween(a, b)); err != nil {
		return nil, healAfter(ctx, c, err)
	}
	sides := map[string]string{}
	for _, x := range a {
		sides[x] = "minority"
	}
	for _, x := range b {
		sides[x] = "majority"
	}
	return netFault{c: c, desc: desc, sides: sides}, nil
}

// Sided is a fault that splits the cluster into labelled sides.
type Sided interface{ Sides() map[string]string }

// halves splits the nodes into a random minority and majority.
type halves struct{}

func (halves) Name() string { return "partition-halves" }
func (halves) Inject(ctx context.Context, c Cluster, rng *rand.Rand) (Fault, error) {
	all := ids(c)
	rng.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
	a, b := all[:len(all)/2], all[len(all)/2:]
	sort.Strings(a)
	sort.Strings(b)
	return split(ctx, c, fmt.Sprintf("partition %v | %v", a, b), a, b)
}

// isolateLeader cuts the leader of the register keys' partition off.
type isolateLeader struct{}

func (isolateLeader) Name() string { return "isolate-leader" }
func (isolateLeader) Inject(ctx context.Context, c Cluster, rng *rand.Rand) (Fault, error) {
	leader := findLeader(ctx, c, "accounts/eu/1/r")
	if leader == "" {
		all := ids(c)
		leader = all[rng.IntN(len(all))]
	}
	var rest []string
	for _, id := range ids(c) {
		if id != leader {
			rest = append(rest, id)
		}
	}
	return split(ctx, c, fmt.Sprintf("isolate leader %s", leader), []string{leader}, rest)
}

// findLeader asks the nodes who leads key's partition; "" if none knows.
func findLeader(ctx context.Context, c Cluster, key string) string {
	for _, n := range c.Nodes() {
		cc, err := dial.Conn(n.Addr, c.DialOptions()...)
		if err != nil {
			continue
		}
		lctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		resp, err := api.NewAdminClient(cc).Locate(lctx, &api.LocateRequest{Key: key})
		cancel()
		cc.Close()
		if err == nil && resp.GetLeader() != "" {
			return resp.GetLeader()
		}
	}
	return ""
}

// majoritiesRing: every node sees a majority (its ring neighbours), but no
// two nodes see the same majority.
type majoritiesRing struct{}

func (majoritiesRing) Name() string { return "majorities-ring" }
func (majoritiesRing) Inject(ctx context.Context, c Cluster, rng *rand.Rand) (Fault, error) {
	all := ids(c)
	rng.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
	n := len(all)
	keep := (n / 2) / 2 // ring distance kept: with itself, a node sees a bare majority
	if keep < 1 {
		keep = 1
	}
	var links []Link
	for i := range all {
		for j := range all {
			d := (j - i + n) % n
			if d != 0 && min(d, n-d) > keep {
				links = append(links, Link{From: all[i], To: all[j]})
			}
		}
	}
	return partition(ctx, c, fmt.Sprintf("majorities ring %v", all), links)
}

// bridge: two halves that only one node connects.
type bridge struct{}

func (bridge) Name() string { return "bridge" }
func (bridge) Inject(ctx context.Context, c Cluster, rng *rand.Rand) (Fault, error) {
	all := ids(c)
	rng.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
	mid := len(all) / 2
	a, b, via := all[:mid], all[mid+1:], all[mid]
	return partition(ctx, c, fmt.Sprintf("bridge %v -%s- %v", a, via, b), cutBetween(a, b))
}

type procFault struct {
	desc string
	heal func(ctx context.Context) error
}

func (f procFault) String() string                 { return f.desc }
func (f procFault) Heal(ctx context.Context) error { return f.heal(ctx) }

// kill sends SIGKILL to a random node; healing restarts it.
type kill struct{}

func (kill) Name() string { return "kill" }
func (kill) Inject(ctx context.Context, c Cluster, rng *rand.Rand) (Fault, error) {
	all := ids(c)
	id := all[rng.IntN(len(all))]
	if err := c.Kill(id); err != nil {
		return nil, err
	}
	return procFault{"kill -9 " + id, func(ctx context.Context) error { return c.Restart(ctx, id) }}, nil
}

// pause freezes a random node with SIGSTOP; healing sends SIGCONT.
type pause struct{}

func (pause) Name() string { return "pause" }
func (pause) Inject(ctx context.Context, c Cluster, rng *rand.Rand) (Fault, error) {
	all := ids(c)
	id := all[rng.IntN(len(all))]
	if err := c.Pause(id); err != nil {
		return nil, err
	}
	return procFault{"pause " + id, func(context.Context) error { return c.Resume(id) }}, nil
}

// loss drops 20% of node-to-node packets (netns backend).
type loss struct{}

func (loss) Name() string { return "loss" }
func (loss) Inject(ctx context.Context, c Cluster, rng *rand.Rand) (Fault, error) {
	if err := c.Loss(ctx, 20); err != nil {
		return nil, err
	}
	return procFault{"drop 20% of packets between nodes", func(ctx context.Context) error { return c.Loss(ctx, 0) }}, nil
}

// delay slows every message to and from a random node by 150ms (process
// backend: kvd's fault hook holds each message; there is no netem here).
type delay struct{}

func (delay) Name() string { return "delay" }
func (delay) Inject(ctx context.Context, c Cluster, rng *rand.Rand) (Fault, error) {
	all := ids(c)
	slow := all[rng.IntN(len(all))]
	var links []Link
	for _, id := range all {
		if id != slow {
			links = append(links, Link{From: slow, To: id, Delay: 150 * time.Millisecond}, Link{From: id, To: slow, Delay: 150 * time.Millisecond})
		}
	}
	return partition(ctx, c, "delay 150ms to and from "+slow, links)
}

// skew moves a random node's clock 0.5-3s ahead or behind (its HLC
// timestamps: what last-writer-wins compares).
type skew struct{}

func (skew) Name() string { return "clock-skew" }
func (skew) Inject(ctx context.Context, c Cluster, rng *rand.Rand) (Fault, error) {
	all := ids(c)
	id := all[rng.IntN(len(all))]
	off := time.Duration(500+rng.IntN(2500)) * time.Millisecond
	if rng.IntN(2) == 0 {
		off = -off
	}
	if err := c.Skew(ctx, id, off); err != nil {
		return nil, err
	}
	return procFault{fmt.Sprintf("clock of %s %+dms", id, off.Milliseconds()), func(ctx context.Context) error { return c.Skew(ctx, id, 0) }}, nil
}

// Window is one fault's time span, in history time (ns since start).
type Window struct {
	Fault string            `json:"fault"`
	Start int64             `json:"start_ns"`
	End   int64             `json:"end_ns"`
	Sides map[string]string `json:"sides,omitempty"` // node id -> minority/majority
	// Membership marks a join or a drain (the membership nemesis's track).
	Membership bool `json:"membership,omitempty"`
}

// tracked is a nemesis that runs on a track of its own, beside the others.
type tracked interface{ ownTrack() }

// Schedule alternates faults and healthy periods until ctx ends, and always
// ends healed. It returns the fault windows. A nemesis on a track of its
// own (membership) takes its steps in parallel with the others, each step
// a window lasting until the step completed (bounded by the nemesis).
func Schedule(ctx context.Context, c Cluster, nemeses []Nemesis, faultFor, healFor time.Duration, rng *rand.Rand, h *History, log func(string)) []Window {
	var inTurn, own []Nemesis
	for _, n := range nemeses {
		if _, ok := n.(tracked); ok {
			own = append(own, n)
		} else {
			inTurn = append(inTurn, n)
		}
	}
	var mu sync.Mutex
	var windows []Window
	record := func(w Window) {
		mu.Lock()
		windows = append(windows, w)
		mu.Unlock()
	}
	var wg sync.WaitGroup
	for _, nm := range own {
		trng := rand.New(rand.NewPCG(rng.Uint64(), 13)) // a track's own: rand.Rand is not safe for concurrent use
		wg.Add(1)
		go func() {
			defer wg.Done()
			runTrack(ctx, c, []Nemesis{nm}, 0, healFor, trng, h, log, true, record)
		}()
	}
	if len(inTurn) > 0 {
		runTrack(ctx, c, inTurn, faultFor, healFor, rng, h, log, false, record)
	}
	wg.Wait()
	sort.Slice(windows, func(i, j int) bool { return windows[i].Start < windows[j].Start })
	return windows
}

// runTrack injects one of nemeses after each healthy period; the fault
// lasts faultFor, or (membership) until its Heal returns.
func runTrack(ctx context.Context, c Cluster, nemeses []Nemesis, faultFor, healFor time.Duration, rng *rand.Rand, h *History, log func(string), membership bool, record func(Window)) {
	for ctx.Err() == nil {
		sleepCtx(ctx, healFor)
		if ctx.Err() != nil {
			break
		}
		nm := nemeses[rng.IntN(len(nemeses))]
		f, err := nm.Inject(context.Background(), c, rng)
		if err != nil {
			log(fmt.Sprintf("nemesis %s failed to inject: %v", nm.Name(), err))
			continue
		}
		w := Window{Fault: f.String(), Start: h.Now(), Membership: membership}
		if sd, ok := f.(Sided); ok {
			w.Sides = sd.Sides()
		}
		log(fmt.Sprintf("%6.1fs fault: %s", float64(w.Start)/1e9, f))
		if faultFor > 0 {
			sleepCtx(ctx, faultFor)
		}
		if err := f.Heal(context.Background()); err != nil {
			log(fmt.Sprintf("heal %s: %v", f, err))
		}
		w.End = h.Now()
		log(fmt.Sprintf("%6.1fs healed: %s", float64(w.End)/1e9, f))
		record(w)
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
