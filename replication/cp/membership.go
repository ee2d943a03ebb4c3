package cp

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/capkv/capkv/internal/kverrors"
)

// Moving a partition's Raft group from one replica set to another, one
// server at a time, as hashicorp/raft's membership API requires:
//
//  1. a new replica joins as a nonvoter (AddNonvoter): it receives the log,
//     or a snapshot, without counting towards any quorum;
//  2. once it has caught up it becomes a voter (AddVoter);
//  3. a replica that leaves is removed (RemoveServer); when it leads, it
//     first hands leadership to another voter, so the group is never
//     without a leader for longer than a transfer.
//
// Additions come before removals, so the group never has fewer voters than
// the smaller of the two sets. Every change names the configuration index
// it was planned on (prevIndex): two movers racing on one group cannot
// interleave their changes, one gets ErrMoveConflict and plans again.
//
// A joining replica starts with GroupConfig.Join: it must never bootstrap,
// which would give it a configuration of its own.

// StepKind is one kind of membership change.
type StepKind int

// The steps of a move, in the order NextStep proposes them.
const (
	StepDone       StepKind = iota // the configuration is the target
	StepAddLearner                 // add Server as a nonvoter
	StepPromote                    // make the caught-up nonvoter Server a voter
	StepTransfer                   // Server (the leader) leaves: hand leadership to another voter first
	StepRemove                     // remove Server
)

func (k StepKind) String() string {
	switch k {
	case StepDone:
		return "done"
	case StepAddLearner:
		return "add-learner"
	case StepPromote:
		return "promote"
	case StepTransfer:
		return "transfer-leadership"
	case StepRemove:
		return "remove"
	}
	return fmt.Sprintf("step(%d)", int(k))
}

// Step is the next membership change of a move.
type Step struct {
	Kind   StepKind
	Server string
}

func (s Step) String() string {
	if s.Kind == StepDone {
		return "done"
	}
	return s.Kind.String() + " " + s.Server
}

// Member is one server of a group's configuration.
type Member struct {
	ID    string
	Voter bool
}

// NextStep plans the next change that takes the configuration cur towards
// the replica set target, with leader the current leader. It is a pure
// function: the mover executes the step, reads the configuration again and
// asks for the next one, so a move interrupted at any point (a crash, a lost
// leadership) resumes from whatever configuration it left.
//
// Order: missing target replicas are added as learners, learners of the
// target promoted (in target order), and only then are servers outside the
// target removed: learners first (they hold no vote), then voters, the
// leader last and only after a transfer.
func NextStep(cur []Member, target []string, leader string) Step {
	has := map[string]Member{}
	for _, m := range cur {
		has[m.ID] = m
	}
	for _, id := range target {
		if _, ok := has[id]; !ok {
			return Step{Kind: StepAddLearner, Server: id}
		}
	}
	for _, id := range target {
		if !has[id].Voter {
			return Step{Kind: StepPromote, Server: id}
		}
	}
	var leaving []Member
	for _, m := range cur {
		if !slices.Contains(target, m.ID) {
			leaving = append(leaving, m)
		}
	}
	// Learners, then voters other than the leader, then the leader.
	slices.SortStableFunc(leaving, func(a, b Member) int {
		rank := func(m Member) int {
			switch {
			case !m.Voter:
				return 0
			case m.ID != leader:
				return 1
			}
			return 2
		}
		return rank(a) - rank(b)
	})
	if len(leaving) == 0 {
		return Step{Kind: StepDone}
	}
	m := leaving[0]
	if m.Voter && m.ID == leader {
		return Step{Kind: StepTransfer, Server: m.ID}
	}
	return Step{Kind: StepRemove, Server: m.ID}
}

// ErrMoveConflict: the configuration changed between planning a step and
// applying it (another mover, or a new leader replaying its own); plan again.
var ErrMoveConflict = errors.New("group configuration changed concurrently")

// Members returns the group's current configuration and the log index it
// was committed at.
func (g *Group) Members() ([]Member, uint64, error) {
	f := g.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, 0, fmt.Errorf("%w: partition %s: read configuration: %v", kverrors.ErrUnavailable, g.cfg.ID, err)
	}
	var out []Member
	for _, s := range f.Configuration().Servers {
		out = append(out, Member{ID: string(s.ID), Voter: s.Suffrage == raft.Voter})
	}
	// The configuration's own index when raft reports it, else the newest
	// one applied here. (0, after a restart before any change, disables
	// raft's check; NextStep's re-planning from the configuration still
	// keeps a single mover's steps in order.)
	return out, max(f.Index(), g.fsm.configIndex.Load()), nil
}

// CaughtUp waits until server has applied index (the mover asks the node
// that runs the new replica); the learner is promoted only then, so that a
// new voter never holds up commits while it fetches the log.
type CaughtUp func(ctx context.Context, server string, index uint64) error

// PollApplied is the CaughtUp of a mover that can ask a node how far its
// replica is (applied): it asks every 50ms until server has applied index,
// and when ctx ends first its error says what the last answer was.
func PollApplied(applied func(ctx context.Context, server string) (uint64, error)) CaughtUp {
	return func(ctx context.Context, server string, index uint64) error {
		for {
			// Each answer gets a second: a call into a partition that drops
			// packets would otherwise hang on the dead connection for the
			// whole wait, past the heal.
			actx, cancel := context.WithTimeout(ctx, pollAnswerTimeout)
			n, err := applied(actx, server)
			cancel()
			if err == nil && n >= index {
				return nil
			}
			select {
			case <-ctx.Done():
				if err != nil {
					return fmt.Errorf("%w (last answer: %v)", ctx.Err(), err)
				}
				return fmt.Errorf("%w (applied %d of %d)", ctx.Err(), n, index)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
}

// MoveStep runs one step of a move towards target on this replica, which
// must lead the group. It returns the step it ran (StepDone when there is
// nothing left). After a StepTransfer this replica no longer leads: the
// caller continues on the new leader, which NotLeaderError names.
func (g *Group) MoveStep(ctx context.Context, target []string, caughtUp CaughtUp) (Step, error) {
	if g.raft.State() != raft.Leader {
		return Step{}, g.notLeader()
	}
	cur, idx, err := g.Members()
	if err != nil {
		return Step{}, err
	}
	st := NextStep(cur, target, g.cfg.Self)
	timeout := time.Until(deadlineOr(ctx, 10*time.Second))
	if timeout <= 0 {
		return st, fmt.Errorf("%w: partition %s: deadline passed before %s", kverrors.ErrUnavailable, g.cfg.ID, st)
	}
	id := raft.ServerID(st.Server)
	addr := raft.ServerAddress(st.Server)
	var f raft.Future
	switch st.Kind {
	case StepDone:
		return st, nil
	case StepAddLearner:
		f = g.raft.AddNonvoter(id, addr, idx, timeout)
	case StepPromote:
		// The learner must hold what was committed when it was planned.
		// The wait ends when this replica stops leading: a deposed
		// leader's mover would otherwise wait out its whole deadline (a
		// learner cut off from it never catches up) while it holds the
		// move, and the next leader's mover could not start it.
		lctx, stop := g.whileLeading(ctx)
		err := caughtUp(lctx, st.Server, g.raft.CommitIndex())
		lost := stop()
		if lost {
			return st, g.notLeader()
		}
		if err != nil {
			return st, fmt.Errorf("partition %s: learner %s not caught up: %w", g.cfg.ID, st.Server, err)
		}
		f = g.raft.AddVoter(id, addr, idx, timeout)
	case StepTransfer:
		f = g.raft.LeadershipTransfer()
	case StepRemove:
		f = g.raft.RemoveServer(id, idx, timeout)
	}
	if _, err := g.await(ctx, f); err != nil {
		switch {
		case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost):
			return st, g.notLeader()
		case st.Kind != StepTransfer && isConfigRace(err):
			return st, fmt.Errorf("%w: partition %s: %s: %v", ErrMoveConflict, g.cfg.ID, st, err)
		}
		return st, fmt.Errorf("%w: partition %s: %s: %v", kverrors.ErrUnavailable, g.cfg.ID, st, err)
	}
	g.log.Info("membership step", "step", st.String(), "config_index", idx)
	return st, nil
}

// Move runs MoveStep until the group's configuration is target or the
// step fails. It stops, with a *NotLeaderError, when this replica hands
// leadership away or loses it.
func (g *Group) Move(ctx context.Context, target []string, caughtUp CaughtUp) error {
	if len(target) == 0 {
		return fmt.Errorf("%w: partition %s: a move needs at least one target replica", kverrors.ErrInvalidArgument, g.cfg.ID)
	}
	for {
		st, err := g.MoveStep(ctx, target, caughtUp)
		if err != nil {
			if errors.Is(err, ErrMoveConflict) {
				continue // plan again on the configuration that won
			}
			return err
		}
		if st.Kind == StepDone {
			return nil
		}
		if st.Kind == StepTransfer {
			return g.notLeader()
		}
	}
}

// isConfigRace reports hashicorp/raft's refusal of a change planned on a
// configuration that is no longer the latest.
func isConfigRace(err error) bool {
	// raft returns this as an unexported fmt error: "configuration changed
	// since %v (latest is %v)"; there is no sentinel to match.
	return err != nil && strings.Contains(err.Error(), "configuration changed since")
}

// pollAnswerTimeout bounds one question of PollApplied.
const pollAnswerTimeout = time.Second

// leadershipPoll is how often whileLeading checks that this replica still
// leads.
const leadershipPoll = 50 * time.Millisecond

// whileLeading returns a context that ends with ctx or as soon as this
// replica stops leading (or leadership changed and came back: its term is
// not the one the caller planned in). stop releases it and says whether
// leadership was lost.
func (g *Group) whileLeading(ctx context.Context) (context.Context, func() (lost bool)) {
	gen := g.gen.Load()
	lctx, cancel := context.WithCancelCause(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(leadershipPoll)
		defer t.Stop()
		for {
			select {
			case <-lctx.Done():
				return
			case <-g.stop:
				cancel(errLeadershipLost)
				return
			case <-t.C:
				if g.gen.Load() != gen || g.raft.State() != raft.Leader {
					cancel(errLeadershipLost)
					return
				}
			}
		}
	}()
	return lctx, func() bool {
		// The first cancel's cause stays: a loss seen before this one counts.
		cancel(nil)
		wg.Wait()
		return errors.Is(context.Cause(lctx), errLeadershipLost)
	}
}

var errLeadershipLost = errors.New("leadership lost")

func deadlineOr(ctx context.Context, d time.Duration) time.Time {
	if dl, ok := ctx.Deadline(); ok {
		return dl
	}
	return time.Now().Add(d)
}
