// Package failure is capkv's failure detector: each node's view of which
// other nodes it can reach right now.
//
// Every node probes every other node of the cluster map (a gRPC health
// check over the shared peer connection) unless it has heard from it lately:
// any answer to any call counts, so a busy pair of nodes sends no probes at
// all. A node is down when nothing has been heard from it for DownAfter and
// no probe younger than DownAfter is still waiting for its answer (so a slow
// node that answers within DownAfter is never down), and up again at its
// first answer. The view is local and may be wrong (a slow
// node looks like a dead one); it is used only to decide where not to wait:
// ap coordinators skip down replicas and write hints at once (sloppy
// quorum), and a cp request on the minority side is refused as soon as the
// node sees it cannot reach a majority of the partition's replicas, instead
// of at its deadline. Safety never depends on it: Raft and the version
// vectors decide what is committed and what is current.
package failure

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/capkv/capkv/internal/kverrors"
)

// Defaults for Config.
const (
	DefaultInterval  = 500 * time.Millisecond
	DefaultDownAfter = 1500 * time.Millisecond
)

// Config tunes a Detector.
type Config struct {
	// Interval is how often a node that has been quiet is probed.
	Interval time.Duration
	// DownAfter is how long a node may stay silent before it is down; a
	// probe waits this long for its answer.
	DownAfter time.Duration
	// Probe checks one node; nil error means it answered.
	Probe func(ctx context.Context, id string) error
	// Peers returns the nodes to watch (the cluster map without this node).
	Peers func() []string
	// OnDown runs (on the detector's goroutine) when a node goes down: the
	// node drops its connection to it, which a partition may have left
	// open but silent, so that the next call dials afresh.
	OnDown func(id string)
	// Now is the clock the detector stamps what it hears with (default
	// time.Now). Probe deadlines and the probing interval use the runtime's
	// timers, which testing/synctest fakes.
	Now func() time.Time
	Log *slog.Logger
}

// State is one node as the detector sees it.
type State struct {
	ID       string
	Up       bool
	LastSeen time.Time // last answer; zero: never
	Since    time.Time // when it entered this state
	LastErr  string    // the last failed probe's error
}

type peer struct {
	lastSeen time.Time
	since    time.Time // when watched, then when the state last changed
	down     bool
	inflight int       // probes waiting for their answer
	probeAt  time.Time // when the newest probe was sent
	lastErr  string
}

// Detector watches the other nodes. Its methods are safe for concurrent use.
type Detector struct {
	cfg Config
	mu  sync.Mutex
	p   map[string]*peer
}

// New returns a detector; Run starts it.
func New(cfg Config) *Detector {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.DownAfter <= 0 {
		cfg.DownAfter = DefaultDownAfter
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Detector{cfg: cfg, p: map[string]*peer{}}
}

// Heard records an answer from id (a probe or any other call).
func (d *Detector) Heard(id string) {
	now := d.cfg.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	p := d.p[id]
	if p == nil {
		return // not watched (yet): the next tick adds it
	}
	p.lastSeen = now
	if p.down {
		d.cfg.Log.Info("node up", "node", id, "down_for", now.Sub(p.since).Round(time.Millisecond))
		p.down, p.lastErr, p.since = false, "", now
	}
}

// Down reports whether id is considered down. Unknown nodes are up: the
// detector only ever says "do not wait for this one".
func (d *Detector) Down(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	p := d.p[id]
	return p != nil && p.down
}

// States returns the view of every watched node, by ID.
func (d *Detector) States() []State {
	d.mu.Lock()
	out := make([]State, 0, len(d.p))
	for id, p := range d.p {
		out = append(out, p.state(id))
	}
	d.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// State returns the view of one node; ok is false when it is not watched.
func (d *Detector) State(id string) (State, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	p, ok := d.p[id]
	if !ok {
		return State{ID: id, Up: true}, false
	}
	return p.state(id), true
}

func (p *peer) state(id string) State {
	return State{ID: id, Up: !p.down, LastSeen: p.lastSeen, Since: p.since, LastErr: p.lastErr}
}

// Run probes until ctx ends.
func (d *Detector) Run(ctx context.Context) {
	t := time.NewTicker(d.cfg.Interval)
	defer t.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		d.tick(ctx, &wg)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// maxInflight bounds the probes waiting on one down node.
func (d *Detector) maxInflight() int { return int(d.cfg.DownAfter/d.cfg.Interval) + 1 }

// tick syncs the watched set with the map, marks silent nodes down, and
// probes the quiet ones (one probe per node in flight at most).
func (d *Detector) tick(ctx context.Context, wg *sync.WaitGroup) {
	now := d.cfg.Now()
	want := map[string]bool{}
	for _, id := range d.cfg.Peers() {
		want[id] = true
	}
	var probe, downed []string
	d.mu.Lock()
	for id := range d.p {
		if !want[id] {
			delete(d.p, id)
		}
	}
	for id := range want {
		p := d.p[id]
		if p == nil {
			p = &peer{since: now} // a new node gets DownAfter to answer
			d.p[id] = p
		}
		last := p.lastSeen
		if last.IsZero() {
			last = p.since
		}
		waiting := p.inflight > 0 && now.Sub(p.probeAt) < d.cfg.DownAfter
		if !p.down && !waiting && now.Sub(last) >= d.cfg.DownAfter {
			p.down, p.since = true, now
			downed = append(downed, id)
			d.cfg.Log.Warn("node down", "node", id, "silent_for", now.Sub(last).Round(time.Millisecond), "last_error", p.lastErr)
		}
		// An up node has one probe at a time. A down node gets a new one
		// every interval even while older ones wait (a few at most), so
		// that it is seen up again within an interval of answering.
		quiet := now.Sub(p.lastSeen) >= d.cfg.Interval && now.Sub(p.probeAt) >= d.cfg.Interval
		if quiet && (p.inflight == 0 || (p.down && p.inflight < d.maxInflight())) {
			p.inflight++
			p.probeAt = now
			probe = append(probe, id)
		}
	}
	d.mu.Unlock()
	for _, id := range downed {
		if d.cfg.OnDown != nil {
			d.cfg.OnDown(id)
		}
	}
	for _, id := range probe {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pctx, cancel := context.WithTimeout(ctx, d.cfg.DownAfter)
			err := d.cfg.Probe(pctx, id)
			cancel()
			if err == nil {
				d.Heard(id)
			}
			d.mu.Lock()
			if p := d.p[id]; p != nil {
				p.inflight--
				if err != nil {
					p.lastErr = err.Error()
				}
			}
			d.mu.Unlock()
		}()
	}
}

// Unreachable returns an ErrUnavailable naming how long node id has been
// silent when the detector holds it down (callers then skip it rather than
// wait on it), nil otherwise. from names the node whose view it is.
func (d *Detector) Unreachable(id, from string) error {
	st, ok := d.State(id)
	if !ok || st.Up {
		return nil
	}
	silent := "never answered"
	if !st.LastSeen.IsZero() {
		silent = "silent for " + d.cfg.Now().Sub(st.LastSeen).Round(time.Millisecond).String()
	}
	return fmt.Errorf("%w: node %s is down as seen from %s (%s)", kverrors.ErrUnavailable, id, from, silent)
}

// Reachable filters ids to the nodes not held down; self always counts.
func (d *Detector) Reachable(ids []string, self string) []string {
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		if id == self || !d.Down(id) {
			out = append(out, id)
		}
	}
	return out
}
