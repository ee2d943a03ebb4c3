package ap

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/internal/kverrors"
	"github.com/capkv/capkv/internal/trace"
)

// Peers reaches the Replica service of other nodes.
type Peers interface {
	Store(ctx context.Context, node string, req *api.ReplicaStoreRequest) (*api.ReplicaStoreResponse, error)
	Fetch(ctx context.Context, node string, req *api.ReplicaFetchRequest) (*api.ReplicaFetchResponse, error)
}

// replicaTimeout bounds one replica's store or fetch; stores the coordinator
// no longer waits for still complete within it.
const replicaTimeout = 2 * time.Second

// Coordinator runs ap reads and writes on one node.
type Coordinator struct {
	Self  string
	Clock *consistency.Clock // stamps writes; nil: the caller's Value.Timestamp is kept
	// TombstoneGrace: see DefaultTombstoneGrace (0: the default).
	TombstoneGrace time.Duration
	Clocks         *ClockStore
	Hints          *HintStore
	Peers          Peers
	Log            *slog.Logger

	seed    maphash.Seed
	stripes [256]sync.Mutex // one Update at a time per key on this node
	dots    *dotLease       // every dot counter minted here
	bg      sync.WaitGroup  // stores and repairs that outlive their request
}

// NewCoordinator returns a coordinator for node self.
func NewCoordinator(self string, clocks *ClockStore, hints *HintStore, peers Peers, log *slog.Logger) *Coordinator {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Coordinator{Self: self, Clocks: clocks, Hints: hints, Peers: peers, Log: log, seed: maphash.MakeSeed(), dots: newDotLease(clocks.st)}
}

// Close waits for background stores, repairs and dot reservations.
func (c *Coordinator) Close() {
	c.bg.Wait()
	c.dots.close()
}

// WriteRequest is one coordinated write.
type WriteRequest struct {
	Partition, Key string
	Replicas       []string // the preference list; Self must be in it
	Fallbacks      []string // other eligible nodes, in the order to try for hints
	Level          consistency.Level
	LWW            bool
	Context        consistency.VV
	Value          consistency.Value
	// MaxSiblings, when positive, refuses a write that would leave the key
	// with more live siblings than this (and more than it had): the cap on
	// what blind or stale-context writers can pile up.
	MaxSiblings int
}

// WriteResult says who stored the write.
type WriteResult struct {
	Clock consistency.DVV
	// Dot names the write: with the request's context it is exactly what
	// the writer has seen of the key (its session context).
	Dot       consistency.Dot
	Timestamp consistency.Timestamp // the write's HLC
	Acked     []string              // replicas of the preference list that stored it
	Hinted    []string              // fallback nodes that stored it as a hint
	Sloppy    bool                  // hinted acknowledgements were counted
	Need      int
	// HadLive: the coordinator's copy had a live value before this write
	// (for a delete: whether something was deleted, as far as it knew).
	HadLive bool
}

// Write mints the write's dot here, then stores it locally while it sends
// it to the other replicas. It succeeds once the local store and the level's
// count of acknowledgements (the local one included) are in: the coordinator
// keeps every dot it acknowledged, so its next write of the key, which
// covers its own earlier dots, cannot supersede one it never saw.
func (c *Coordinator) Write(ctx context.Context, w WriteRequest) (WriteResult, error) {
	if !slices.Contains(w.Replicas, c.Self) {
		return WriteResult{}, fmt.Errorf("%w: %s is not a replica of %s", kverrors.ErrInternal, c.Self, w.Partition)
	}
	res := WriteResult{Need: Need(w.Level, len(w.Replicas))}
	// The key's stripe is held from the read to the end of the local store:
	// the next write of the key here must see this one's dot, or its
	// context (which covers every earlier dot of this node) would drop it.
	mu := &c.stripes[maphash.String(c.seed, w.Partition+"\x00"+w.Key)%uint64(len(c.stripes))]
	mu.Lock()
	next, clock, err := c.mint(w, &res)
	if err != nil {
		mu.Unlock()
		return res, err
	}

	// The round (quorum.go) decides; this loop only sends its stores and
	// feeds it their answers and the caller's deadline. Every store gets a
	// slot in the buffered channel, so one answering after the round is
	// over never blocks.
	round := newWriteRound(c.Self, w.Replicas, w.Fallbacks, w.Level)
	answers := make(chan writeEvent, len(w.Replicas)+len(w.Fallbacks))
	store := func(node, hintFor string) {
		c.bg.Add(1)
		go func() {
			defer c.bg.Done()
			// Stores outlive the request: a write the caller gave up on
			// still spreads as far as it can.
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), replicaTimeout)
			defer cancel()
			sctx, span := replicaSpan(sctx, "ap.store", w.Partition, node, hintFor)
			_, err := c.Peers.Store(sctx, node, &api.ReplicaStoreRequest{Partition: w.Partition, Key: w.Key, Clock: clock, HintFor: hintFor, Lww: w.LWW})
			trace.End(span, err)
			answers <- writeEvent{Kind: evStored, Node: node, HintFor: hintFor, Err: err}
		}()
	}
	// The round counts this node from the start; the stores go out first
	// and the local one runs beside them, and nothing is decided before it
	// is durable. The dot is safe to send before that: the lease reserved
	// it durably (dotlease.go), so a crash here never mints it again.
	acts := round.Step(writeEvent{Kind: evStart})
	var finish []writeAction
	for _, a := range acts {
		if a.Kind == actStore {
			store(a.Node, a.HintFor)
		} else {
			finish = append(finish, a)
		}
	}
	res.Clock, err = c.Clocks.Merge(w.Partition, w.Key, next, w.LWW)
	mu.Unlock()
	if err != nil {
		// The others may store it: the write may exist and spread.
		return res, fmt.Errorf("%w: partition %s: the coordinator's own store failed after the write was sent to the other replicas: %w",
			kverrors.ErrIndeterminate, w.Partition, err)
	}
	acts = finish
	for {
		for _, a := range acts {
			switch a.Kind {
			case actStore:
				store(a.Node, a.HintFor)
			case actFinish:
				out := a.Result
				res.Acked, res.Hinted, res.Sloppy = out.Acked, out.Hinted, out.Sloppy
				if out.Err != nil {
					return res, fmt.Errorf("%w: partition %s: %d of %d replicas acknowledged (level %s needs %d); the write is stored on %v and may spread",
						out.Err, w.Partition, out.Counted, len(w.Replicas), w.Level, out.Need, slices.Concat(out.Acked, out.Hinted))
				}
				return res, nil
			}
		}
		select {
		case ev := <-answers:
			acts = round.Step(ev)
		case <-ctx.Done():
			acts = round.Step(writeEvent{Kind: evDeadline})
		}
	}
}

// mint reads the key's clock and returns it updated with the write, under
// a dot from the lease, and encoded; it sets res's Dot, Timestamp and HadLive. Its errors
// are definite: nothing was sent or stored. The caller holds the key's stripe.
func (c *Coordinator) mint(w WriteRequest, res *WriteResult) (consistency.DVV, []byte, error) {
	cur, _, err := c.Clocks.Read(w.Partition, w.Key)
	if err != nil {
		return consistency.DVV{}, nil, err
	}
	res.HadLive = len(cur.Live()) > 0
	if c.Clock != nil {
		// The HLC of a write is later than every write it supersedes or sits
		// beside, whatever the wall clocks say: last-writer-wins then never
		// prefers a write this coordinator had already seen.
		for _, s := range cur.Values() {
			c.Clock.Update(s.Timestamp)
		}
		w.Value.Timestamp = c.Clock.Now()
	}
	// The dot counter rises above every dot this node minted before, for
	// any key and across restarts (the lease), and with an HLC above it
	// too: a purged key's history cannot come back as a reused dot (see
	// consistency.DVV.UpdateAbove).
	floor := max(cur.Context().Get(c.Self), w.Context.Get(c.Self))
	if c.Clock != nil {
		floor = max(floor, uint64(w.Value.Timestamp))
	}
	counter, err := c.dots.mint(floor)
	if err != nil {
		return consistency.DVV{}, nil, err
	}
	next, err := cur.UpdateAbove(w.Context, c.Self, w.Value, counter-1)
	if err != nil {
		return consistency.DVV{}, nil, err
	}
	res.Dot, res.Timestamp = newDot(cur, next), w.Value.Timestamp
	if err := checkSiblings(w, len(cur.Live()), len(next.Live())); err != nil {
		return consistency.DVV{}, nil, err
	}
	// What the local store would refuse for its size is refused before it
	// is sent anywhere (a merge with a concurrent change can still grow it;
	// then the local store fails and the write is indeterminate).
	enc := next.Encode(nil)
	if err := c.Clocks.fits(w.Key, len(enc)); err != nil {
		if len(next.Live()) > 1 {
			err = fmt.Errorf("%w: key %q would keep %d concurrent values (siblings), which together exceed the value limit; "+
				"write with the context of a read ('kvctl get --json', then 'put --context') to replace them: %w",
				kverrors.ErrTooLarge, w.Key, len(next.Live()), err)
		}
		return consistency.DVV{}, nil, err
	}
	return next, enc, nil
}

// newDot is the dot an update minted: the one sibling of next not in cur.
func newDot(cur, next consistency.DVV) consistency.Dot {
	for _, s := range next.Values() {
		if !cur.Context().Covers(s.Dot) {
			return s.Dot
		}
	}
	return consistency.Dot{}
}

// checkSiblings refuses a write that would grow a key's live siblings past
// the cap. A write that does not add to them (it names their context, or
// the key is already over the cap by merges from elsewhere) always passes:
// resolving must stay possible.
func checkSiblings(w WriteRequest, before, after int) error {
	if w.LWW || w.MaxSiblings <= 0 || after <= w.MaxSiblings || after <= before {
		return nil
	}
	return fmt.Errorf("%w: key %q would have %d concurrent values (siblings), over keyspace cap %d (max_siblings); nothing was written: "+
		"read the key and write with its context ('kvctl get --json', then 'put --context'; the Go client does this unless told WithBlindWrite) to replace them",
		kverrors.ErrConflict, w.Key, after, w.MaxSiblings)
}

// ReadRequest is one coordinated read.
type ReadRequest struct {
	Partition, Key string
	Replicas       []string
	Level          consistency.Level
	LWW            bool
}

// ReadResult is the merged answer and who gave it.
type ReadResult struct {
	Clock    consistency.DVV
	Acked    []string
	Repaired []string // replicas sent the merged clock because they were behind
	Need     int
}

// Read fetches the key from the replicas, merges the first Need answers and
// repairs the replicas that answered with less.
func (c *Coordinator) Read(ctx context.Context, r ReadRequest) (ReadResult, error) {
	res := ReadResult{Need: Need(r.Level, len(r.Replicas))}
	type answer struct {
		node  string
		clock consistency.DVV
		err   error
	}
	if res.Need == 1 && slices.Contains(r.Replicas, c.Self) {
		// Level one on a replica: its own copy is the answer; asking the
		// others would only cost them work (anti-entropy repairs instead).
		d, _, err := c.Clocks.Read(r.Partition, r.Key)
		if err != nil {
			return res, err
		}
		if r.LWW {
			d = keepLast(d)
		}
		res.Clock, res.Acked = d, []string{c.Self}
		return res, nil
	}
	answers := make(chan answer, len(r.Replicas))
	for _, node := range r.Replicas {
		if node == c.Self {
			d, _, err := c.Clocks.Read(r.Partition, r.Key)
			answers <- answer{node, d, err}
			continue
		}
		go func() {
			fctx, cancel := context.WithTimeout(ctx, replicaTimeout)
			defer cancel()
			fctx, span := replicaSpan(fctx, "ap.fetch", r.Partition, node, "")
			resp, err := c.Peers.Fetch(fctx, node, &api.ReplicaFetchRequest{Partition: r.Partition, Key: r.Key})
			trace.End(span, err)
			var d consistency.DVV
			if err == nil && resp.GetFound() {
				d, err = consistency.DecodeDVV(resp.GetClock())
			}
			answers <- answer{node, d, err}
		}()
	}
	got := map[string]consistency.DVV{}
	var errs []error
	for i := 0; i < len(r.Replicas) && len(got) < res.Need; i++ {
		a := <-answers
		if a.err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", a.node, a.err))
			continue
		}
		got[a.node] = a.clock
		res.Clock = res.Clock.Sync(a.clock)
	}
	if len(got) < res.Need {
		return res, fmt.Errorf("%w: partition %s: %d of %d replicas answered (level %s needs %d): %v",
			kverrors.ErrUnavailable, r.Partition, len(got), len(r.Replicas), r.Level, res.Need, errors.Join(errs...))
	}
	if r.LWW {
		res.Clock = keepLast(res.Clock)
	}
	for node, d := range got {
		res.Acked = append(res.Acked, node)
		if !d.Equal(res.Clock) {
			res.Repaired = append(res.Repaired, node)
		}
	}
	slices.Sort(res.Acked)
	slices.Sort(res.Repaired)
	c.repair(ctx, r, res.Clock, res.Repaired)
	return res, nil
}

// repair sends the merged clock to replicas that were behind, in the
// background: the read does not wait for it.
func (c *Coordinator) repair(ctx context.Context, r ReadRequest, clock consistency.DVV, nodes []string) {
	if len(nodes) == 0 {
		return
	}
	enc := clock.Encode(nil)
	for _, node := range nodes {
		c.bg.Add(1)
		go func() {
			defer c.bg.Done()
			if node == c.Self {
				if _, err := c.Clocks.Merge(r.Partition, r.Key, clock, r.LWW); err != nil {
					c.Log.WarnContext(ctx, "read repair", "node", node, "key", r.Key, "err", err)
				}
				return
			}
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), replicaTimeout)
			defer cancel()
			sctx, span := replicaSpan(sctx, "ap.read_repair", r.Partition, node, "")
			_, err := c.Peers.Store(sctx, node, &api.ReplicaStoreRequest{Partition: r.Partition, Key: r.Key, Clock: enc, Lww: r.LWW})
			trace.End(span, err)
			if err != nil {
				c.Log.DebugContext(sctx, "read repair", "node", node, "key", r.Key, "err", err)
			}
		}()
	}
}

// replicaSpan starts the span of one replica call of a quorum round (or a
// hint write, or a read repair); untraced requests pay nothing.
func replicaSpan(ctx context.Context, name, partition, node, hintFor string) (context.Context, oteltrace.Span) {
	ctx, span := trace.Start(ctx, name)
	if span.IsRecording() {
		span.SetAttributes(trace.KeyPartition.String(partition), trace.KeyNode.String(node))
		if hintFor != "" {
			span.SetAttributes(attribute.String("capkv.hint_for", hintFor))
		}
	}
	return ctx, span
}
