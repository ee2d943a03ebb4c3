package jepsen

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/internal/dial"
	"github.com/capkv/capkv/internal/kverrors"
)

// Members is what the membership nemesis needs of a backend: nodes it can
// start during the run and stop once they left the map (ProcessCluster).
type Members interface {
	// Join starts a fresh node that registers with --join.
	Join(ctx context.Context) (NodeInfo, error)
	// Retire stops a node that has left the map; Nodes no longer lists it.
	Retire(id string) error
	// AllNodes lists every node started, retired ones too.
	AllNodes() []NodeInfo
}

// memberAdmin is the cluster's side of a membership change (the admin RPCs;
// a fake in the unit test).
type memberAdmin interface {
	RemoveNode(ctx context.Context, id string) error
	// JoinMoved reports whether a rebalancing that moves replicas to id
	// has been planned and has completed.
	JoinMoved(ctx context.Context, id string) (bool, error)
	// InMap reports whether id is still in the cluster map.
	InMap(ctx context.Context, id string) (bool, error)
}

// Membership changes the cluster's members while the workload runs: it
// joins a fresh node, waits for the join's moves, then drains one of the
// original nodes (kvctl node remove) and stops it once it left the map; then
// joins again, and so on. The cluster never has fewer nodes than it started
// with, so the rest can always hold the replication factor. It runs on a
// track of its own (see Schedule), so partitions and kills hit the moves.
type Membership struct {
	// MoveWait bounds the wait for a join's moves (and, before a drain, for
	// the rebalancing a drain is refused during); DrainWait the drain's.
	MoveWait, DrainWait time.Duration
	// Poll is the interval between status checks.
	Poll time.Duration

	admin func(c Cluster) memberAdmin // nil: the admin RPCs of c's nodes

	mu       sync.Mutex
	original []string
	draining string // a drain that did not finish within DrainWait
}

// NewMembership is the nemesis with its default bounds.
func NewMembership() *Membership {
	return &Membership{MoveWait: 45 * time.Second, DrainWait: 60 * time.Second, Poll: 500 * time.Millisecond}
}

func (*Membership) Name() string { return "membership" }

// ownTrack: Schedule runs it beside the other nemeses, not in turn with them.
func (*Membership) ownTrack() {}

var errNoMembers = errors.New("the membership nemesis needs the process or netns backend (nodes kvjepsen starts itself)")

// Inject takes the next step: a join when the cluster has no more nodes
// than it started with, else the drain of an original node (or, once all
// are gone, of the oldest node). Its fault's Heal waits for the step to
// complete (bounded) and, after a drain, stops the drained node.
func (m *Membership) Inject(ctx context.Context, c Cluster, rng *rand.Rand) (Fault, error) {
	mc, ok := c.(Members)
	if !ok {
		return nil, errNoMembers
	}
	adm := m.adminOf(c)
	m.mu.Lock()
	defer m.mu.Unlock()
	live := ids(c)
	if m.original == nil {
		m.original = live
	}
	if m.draining != "" {
		// A drain that outlived DrainWait: only once it is done may another
		// change start (two drains at once could leave too few nodes).
		in, err := adm.InMap(ctx, m.draining)
		if err != nil || in {
			return nil, fmt.Errorf("the drain of %s is still running (%v)", m.draining, err)
		}
		if err := mc.Retire(m.draining); err != nil {
			return nil, err
		}
		m.draining = ""
		live = ids(c)
	}
	if len(live) <= len(m.original) {
		jctx, cancel := context.WithTimeout(ctx, 40*time.Second)
		n, err := mc.Join(jctx)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("join: %w", err)
		}
		return procFault{"join " + n.ID, func(ctx context.Context) error {
			return m.waitMoves(ctx, adm, n.ID)
		}}, nil
	}
	victim := m.victim(live, rng)
	// A drain is refused while a rebalancing runs (the join's moves may
	// still be going, e.g. retried after a kill): retry until MoveWait.
	deadline := time.Now().Add(m.MoveWait)
	for {
		err := adm.RemoveNode(ctx, victim)
		if err == nil {
			break
		}
		if !time.Now().Before(deadline) {
			return nil, fmt.Errorf("remove %s: %w", victim, err)
		}
		sleepCtx(ctx, m.Poll)
	}
	m.draining = victim
	return procFault{"remove " + victim, func(ctx context.Context) error {
		return m.finishDrain(ctx, mc, adm, victim)
	}}, nil
}

// victim picks a node to drain: an original one still there, else the
// oldest live node.
func (m *Membership) victim(live []string, rng *rand.Rand) string {
	var cands []string
	for _, id := range m.original {
		if slices.Contains(live, id) {
			cands = append(cands, id)
		}
	}
	if len(cands) == 0 {
		return live[0]
	}
	return cands[rng.IntN(len(cands))]
}

// waitMoves waits (bounded) for the moves to the joined node id. The plan
// is made after the join registered, so "complete" alone could be the
// previous plan's.
func (m *Membership) waitMoves(ctx context.Context, adm memberAdmin, id string) error {
	deadline := time.Now().Add(m.MoveWait)
	var last error
	for time.Now().Before(deadline) {
		done, err := adm.JoinMoved(ctx, id)
		if err == nil && done {
			return nil
		}
		last = err
		sleepCtx(ctx, m.Poll)
	}
	return fmt.Errorf("the moves to %s did not complete within %s (last error: %v); they go on in the background", id, m.MoveWait, last)
}

// finishDrain waits until victim left the map, then stops it. A drain that
// takes longer than DrainWait leaves the node running (it still serves);
// the next Inject checks it again.
func (m *Membership) finishDrain(ctx context.Context, mc Members, adm memberAdmin, victim string) error {
	deadline := time.Now().Add(m.DrainWait)
	for time.Now().Before(deadline) {
		if in, err := adm.InMap(ctx, victim); err == nil && !in {
			m.mu.Lock()
			defer m.mu.Unlock()
			m.draining = ""
			return mc.Retire(victim)
		}
		sleepCtx(ctx, m.Poll)
	}
	return fmt.Errorf("the drain of %s did not complete within %s; %s keeps running", victim, m.DrainWait, victim)
}

func (m *Membership) adminOf(c Cluster) memberAdmin {
	if m.admin != nil {
		return m.admin(c)
	}
	return rpcAdmin{c}
}

// rpcAdmin sends the admin RPCs to the live nodes in turn (any node
// forwards them to the metadata leader), never to the node being drained.
type rpcAdmin struct{ c Cluster }

func (a rpcAdmin) each(ctx context.Context, skip string, f func(ctx context.Context, adm api.AdminClient) error) error {
	var errs []error
	for _, n := range a.c.Nodes() {
		if n.ID == skip {
			continue
		}
		cc, err := dial.Conn(n.Addr, a.c.DialOptions()...)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		err = f(rctx, api.NewAdminClient(cc))
		cancel()
		cc.Close()
		if err == nil {
			return nil
		}
		err = kverrors.FromStatus(err)
		errs = append(errs, fmt.Errorf("%s: %w", n.ID, err))
		if errors.Is(err, kverrors.ErrInvalidArgument) {
			break // refused (unknown node, too few left, a rebalancing running): the others answer the same
		}
	}
	return errors.Join(errs...)
}

func (a rpcAdmin) RemoveNode(ctx context.Context, id string) error {
	return a.each(ctx, id, func(ctx context.Context, adm api.AdminClient) error {
		_, err := adm.RemoveNode(ctx, &api.RemoveNodeRequest{Id: id})
		return err
	})
}

func (a rpcAdmin) JoinMoved(ctx context.Context, id string) (bool, error) {
	var done bool
	err := a.each(ctx, "", func(ctx context.Context, adm api.AdminClient) error {
		st, err := adm.RebalanceStatus(ctx, &api.RebalanceStatusRequest{})
		if err == nil {
			done = st.GetComplete() && slices.ContainsFunc(st.GetMoves(), func(mv *api.MoveStatus) bool {
				return slices.Contains(mv.GetTo(), id)
			})
		}
		return err
	})
	return done, err
}

func (a rpcAdmin) InMap(ctx context.Context, id string) (bool, error) {
	var in bool
	err := a.each(ctx, id, func(ctx context.Context, adm api.AdminClient) error {
		cm, err := adm.GetClusterMap(ctx, &api.ClusterMapRequest{})
		if err == nil {
			in = slices.ContainsFunc(cm.GetNodes(), func(n *api.Node) bool { return n.GetId() == id })
		}
		return err
	})
	return in, err
}
