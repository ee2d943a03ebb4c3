// Package rebalance is the bookkeeping of a rebalancing: the moves a join
// or a drain needs (from ring.PlanMoves), their states, and the throttle
// that decides which run next. It is a pure core: the metadata group stores
// a Plan in the cluster map, and its mover asks Next what to start, runs
// those moves (cp membership changes, ap streams) and reports each outcome
// with Finish. Nothing here does I/O or reads a clock; times are passed in.
//
// Throttle: a node takes part in at most Limit running moves at once, as
// Riak's transfer limit, counting the nodes a move adds and removes (the
// ones that stream and receive data); so a join does not starve client
// traffic, and the moves of one partition never overlap.
package rebalance

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/capkv/capkv/ring"
)

// State is where one move is.
type State string

// The states of a move. A failed move is retried: Next treats it as pending
// once its backoff passed, so an interrupted move resumes (the steps are
// idempotent: cp re-plans from the group's configuration, ap re-streams).
const (
	Pending State = "pending"
	Running State = "running"
	Done    State = "done"
	Failed  State = "failed"
)

// DefaultLimit is the default number of running moves per node.
const DefaultLimit = 2

// Move is one partition's move and what it did so far.
type Move struct {
	ring.Move
	State    State
	Attempts int
	Err      string    // the last failure
	Retry    time.Time // a failed move waits until then
	Started  time.Time
	Finished time.Time
	Keys     int64 // ap: keys streamed
	Bytes    int64
}

// Plan is a rebalancing in progress.
type Plan struct {
	ID    uint64 // the map epoch it was planned at
	Limit int
	Moves []Move
	// Replicas counts the pinned replicas the plan considered, Moved those
	// that change node (ring.MovePlan).
	Replicas, Moved int
}

// New plans the moves of mp.
func New(id uint64, mp ring.MovePlan, limit int) *Plan {
	if limit <= 0 {
		limit = DefaultLimit
	}
	p := &Plan{ID: id, Limit: limit, Replicas: mp.Replicas, Moved: mp.Moved}
	for _, m := range mp.Moves {
		p.Moves = append(p.Moves, Move{Move: m, State: Pending})
	}
	return p
}

// involved is the nodes a move loads: those that join or leave it, and the
// first old replica that stays (it streams ap data to the joiners).
func involved(m ring.Move) []string {
	out := slices.Concat(m.Joining(), m.Leaving())
	for _, r := range m.From {
		if slices.Contains(m.To, r) {
			out = append(out, r)
			break
		}
	}
	return out
}

// Next marks the moves to start now as running and returns their indexes,
// in plan order: pending ones and failed ones whose retry time has come,
// as long as no node they involve is at the limit.
func (p *Plan) Next(now time.Time) []int {
	busy := map[string]int{}
	for _, m := range p.Moves {
		if m.State == Running {
			for _, n := range involved(m.Move) {
				busy[n]++
			}
		}
	}
	var start []int
	for i := range p.Moves {
		m := &p.Moves[i]
		ready := m.State == Pending || (m.State == Failed && !now.Before(m.Retry))
		if !ready {
			continue
		}
		nodes := involved(m.Move)
		if slices.ContainsFunc(nodes, func(n string) bool { return busy[n] >= p.Limit }) {
			continue
		}
		for _, n := range nodes {
			busy[n]++
		}
		m.State, m.Started, m.Err = Running, now, ""
		m.Attempts++
		start = append(start, i)
	}
	return start
}

// Finish records the outcome of running move i. A failure is retried after
// a backoff that doubles with each attempt, up to a minute.
func (p *Plan) Finish(i int, now time.Time, keys, bytes int64, err error) error {
	if i < 0 || i >= len(p.Moves) || p.Moves[i].State != Running {
		return fmt.Errorf("move %d is not running", i)
	}
	m := &p.Moves[i]
	m.Keys += keys
	m.Bytes += bytes
	if err != nil {
		m.State, m.Err = Failed, err.Error()
		m.Retry = now.Add(min(time.Second<<min(m.Attempts-1, 6), time.Minute))
		return nil
	}
	m.State, m.Finished = Done, now
	return nil
}

// RunningMove returns the index of the running move that is exactly m
// (partition, old and new replicas), or -1. A mover records its outcome
// only on the move it ran: a mover of an earlier plan (on a metadata leader
// deposed and re-elected while its move took long) must not mark another
// plan's move of the same partition done, nor pin that partition to its
// own target.
func (p *Plan) RunningMove(m ring.Move) int {
	return slices.IndexFunc(p.Moves, func(x Move) bool {
		return x.State == Running && x.Partition == m.Partition && slices.Equal(x.From, m.From) && slices.Equal(x.To, m.To)
	})
}

// Status counts moves by state.
type Status struct {
	Pending, Running, Done, Failed int
	Keys, Bytes                    int64
}

// Status summarises the plan.
func (p *Plan) Status() Status {
	var s Status
	for _, m := range p.Moves {
		switch m.State {
		case Pending:
			s.Pending++
		case Running:
			s.Running++
		case Done:
			s.Done++
		case Failed:
			s.Failed++
		}
		s.Keys += m.Keys
		s.Bytes += m.Bytes
	}
	return s
}

// Complete reports whether every move is done.
func (p *Plan) Complete() bool {
	return !slices.ContainsFunc(p.Moves, func(m Move) bool { return m.State != Done })
}

// String is the progress line `kvctl rebalance status` prints.
func (s Status) String() string {
	total := s.Pending + s.Running + s.Done + s.Failed
	parts := []string{fmt.Sprintf("%d/%d moves done", s.Done, total)}
	if s.Running > 0 {
		parts = append(parts, fmt.Sprintf("%d running", s.Running))
	}
	if s.Pending > 0 {
		parts = append(parts, fmt.Sprintf("%d pending", s.Pending))
	}
	if s.Failed > 0 {
		parts = append(parts, fmt.Sprintf("%d failed (retrying)", s.Failed))
	}
	parts = append(parts, fmt.Sprintf("%d keys, %d bytes streamed", s.Keys, s.Bytes))
	return strings.Join(parts, ", ")
}
