package ap

import (
	"slices"

	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/internal/kverrors"
)

// The write round's decisions, with no goroutines, clocks or network (the
// way etcd-io/raft keeps its quorum logic pure): writeRound takes the events
// of one write's replication and answers with the stores to send and, once,
// the outcome. Coordinator.Write is the driver that sends the stores and
// feeds their answers and the caller's deadline back in.

// Need is the number of acknowledgements a level asks of n replicas.
func Need(level consistency.Level, n int) int {
	switch level {
	case consistency.One:
		return 1
	case consistency.All:
		return n
	}
	return n/2 + 1
}

// writeEventKind says what happened to a write round.
type writeEventKind uint8

const (
	// evStart: the coordinator minted the write; replicate it. (Its local
	// store runs beside the stores this asks for, and the driver acts on
	// no finish before that store succeeded: the round counts it.)
	evStart writeEventKind = iota
	// evStored: a store the round asked for answered (Node, HintFor, Err).
	evStored
	// evDeadline: the caller's context ended; the round stops waiting.
	evDeadline
)

// writeEvent is one input of a write round.
type writeEvent struct {
	Kind    writeEventKind
	Node    string // evStored: the node that answered
	HintFor string // evStored: the HintFor of the store it answers
	Err     error  // evStored: nil if the node stored it
}

// writeActionKind says what a write round asks of its driver.
type writeActionKind uint8

const (
	// actStore: send the write to Node, as a hint for HintFor when that is set.
	actStore writeActionKind = iota
	// actFinish: the round is over with Result; later answers are ignored
	// (their stores still complete in the background).
	actFinish
)

// writeAction is one output of a write round.
type writeAction struct {
	Kind          writeActionKind
	Node, HintFor string      // actStore
	Result        roundResult // actFinish
}

// roundResult is how a write round ended.
type roundResult struct {
	Acked   []string // replicas that stored it, the coordinator first, then in answer order
	Hinted  []string // fallbacks that keep it as a hint, in answer order
	Sloppy  bool     // hints were counted for the level (met or not): fewer replicas than it needs acknowledged
	Need    int
	Counted int // acknowledgements that count for the level
	// Err is nil when the level was met, else kverrors.ErrIndeterminate:
	// the write is stored on the coordinator (and maybe elsewhere) and will
	// spread, so it is never a definite failure.
	Err error
}

// writeRound is the state of one write's replication beside the
// coordinator's local store.
type writeRound struct {
	self      string
	replicas  []string
	fallbacks []string // not yet tried, in the order to try them
	level     consistency.Level
	need      int
	acked     []string
	hinted    []string
	pending   int // stores sent and not answered
	started   bool
	done      bool
}

// newWriteRound starts the round of a write that self (a replica) stores:
// self counts as the first acknowledgement.
func newWriteRound(self string, replicas, fallbacks []string, level consistency.Level) *writeRound {
	return &writeRound{
		self: self, replicas: replicas, fallbacks: slices.Clone(fallbacks), level: level,
		need: Need(level, len(replicas)), acked: []string{self},
	}
}

// counted is the acknowledgements that count for the level: hints stand in
// for a replica at one and quorum, never at all (all promises every replica).
func (r *writeRound) counted() int {
	n := len(r.acked)
	if r.level != consistency.All {
		n += len(r.hinted)
	}
	return n
}

// Step feeds one event to the round and returns what to do next, stores
// first and the finish last. After the finish every event is ignored.
func (r *writeRound) Step(ev writeEvent) []writeAction {
	if r.done {
		return nil
	}
	var out []writeAction
	switch ev.Kind {
	case evStart:
		if r.started {
			return nil
		}
		r.started = true
		for _, n := range r.replicas {
			if n != r.self {
				out = append(out, writeAction{Kind: actStore, Node: n})
				r.pending++
			}
		}
	case evStored:
		if r.pending == 0 {
			return nil // nothing was asked: not an answer of this round
		}
		r.pending--
		switch {
		case ev.Err == nil && ev.HintFor == "":
			r.acked = append(r.acked, ev.Node)
		case ev.Err == nil:
			r.hinted = append(r.hinted, ev.Node)
		case len(r.fallbacks) > 0:
			// Sloppy quorum: the next fallback keeps it for the replica; a
			// failed fallback passes its replica on to the one after it.
			target := ev.HintFor
			if target == "" {
				target = ev.Node
			}
			out = append(out, writeAction{Kind: actStore, Node: r.fallbacks[0], HintFor: target})
			r.fallbacks = r.fallbacks[1:]
			r.pending++
		}
	case evDeadline:
		if !r.started {
			return nil
		}
		r.pending = 0
	}
	// The first answers that meet the level end the round, even when a
	// strict quorum was still on its way (Dynamo counts the first W too).
	if r.started && (r.counted() >= r.need || r.pending == 0) {
		r.done = true
		out = append(out, writeAction{Kind: actFinish, Result: r.result()})
	}
	return out
}

func (r *writeRound) result() roundResult {
	res := roundResult{
		Acked: slices.Clone(r.acked), Hinted: slices.Clone(r.hinted), Need: r.need, Counted: r.counted(),
		Sloppy: len(r.hinted) > 0 && r.level != consistency.All && len(r.acked) < r.need,
	}
	if res.Counted < r.need {
		res.Err = kverrors.ErrIndeterminate
	}
	return res
}
