package meta

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/internal/kverrors"
	"github.com/capkv/capkv/internal/rebalance"
	"github.com/capkv/capkv/replication/cp"
	"github.com/capkv/capkv/ring"
)

// Rebalancing. When a node joins, the metadata leader plans the moves of
// every partition whose preference list now differs from its pinned replica
// set (ring.PlanMoves) and stores the plan in the map. Its mover then runs
// the moves, a few per node at a time (rebalance.Plan.Next):
//
//  1. the map names the partition's new nodes in Joining: cp nodes start a
//     learner replica (never bootstrapped), ap coordinators write to them
//     as well as to the replicas;
//  2. once every node involved adopted that map, the data moves: for cp the
//     partition's leader changes the Raft membership one server at a time
//     (cp.Group.Move: learner, caught up, voter, leader transfer, removal);
//     for ap a staying replica streams its data to the new nodes;
//  3. the map pins the new replica set and forgets Joining; old replicas
//     that left stop (cp) or hand their data to the new owners and drop it
//     (ap).
//
// Every step is idempotent and a failed or interrupted move is retried
// (a new metadata leader takes over the plan from the stored map), so a
// kill or a partition in the middle of a move delays it but loses nothing.

// moveTimeout bounds one attempt at one move.
const moveTimeout = 2 * time.Minute

type movers struct {
	mu      sync.Mutex
	running map[string]bool // partition ids this service's mover runs now
}

func (s *Service) moverRunning(id string) bool {
	s.moves.mu.Lock()
	defer s.moves.mu.Unlock()
	return s.moves.running[id]
}

// startMover claims partition id (or GroupID, for a metadata seat move) for
// a mover of this service; false means one runs it already. The mover calls
// stopMover when it ends.
func (s *Service) startMover(id string) bool {
	s.moves.mu.Lock()
	defer s.moves.mu.Unlock()
	if s.moves.running == nil {
		s.moves.running = map[string]bool{}
	}
	if s.moves.running[id] {
		return false
	}
	s.moves.running[id] = true
	return true
}

func (s *Service) stopMover(id string) {
	s.moves.mu.Lock()
	delete(s.moves.running, id)
	s.moves.mu.Unlock()
}

// replan plans the moves of m's current node set when no plan is running.
func (s *Service) replan(m *clusterMap) {
	if m.Rebalance != nil && !m.Rebalance.Complete() {
		return // the mover replans when this one completes
	}
	plan, err := ring.PlanMoves(m.topology(), ring.Options{VNodes: s.cfg.VNodes}, m.Leaving)
	if err != nil {
		s.cfg.Log.Warn("rebalance: cannot plan", "err", err)
		return
	}
	if len(plan.Moves) == 0 {
		return
	}
	m.Rebalance = rebalance.New(m.Epoch+1, plan, s.cfg.MoveLimit)
	s.cfg.Log.Info("rebalance planned", "moves", len(plan.Moves), "replicas_moving", plan.Moved, "of", plan.Replicas,
		"fraction", fmt.Sprintf("%.3f", plan.MovedFraction()))
}

// forgetMoves drops the moves of keyspace name (being dropped) from the
// plan and the map: they could never run (their partitions are gone), and a
// move left failing would keep the plan from ever completing, which holds
// up every later join and drain. A mover still running one finds it gone
// and records nothing.
func (m *clusterMap) forgetMoves(name string) {
	for id := range m.Joining {
		if pid, err := ring.ParsePartitionID(id); err == nil && pid.Keyspace == name {
			delete(m.Joining, id)
		}
	}
	if p := m.Rebalance; p != nil {
		p.Moves = slices.DeleteFunc(p.Moves, func(mv rebalance.Move) bool { return mv.Partition.Keyspace == name })
	}
}

// rebalanceTick runs on every map poll: on the metadata leader it starts
// the moves the plan lets run now.
func (s *Service) rebalanceTick() {
	g, ok := s.metaGroup()
	if !ok || !g.IsLeader() {
		return
	}
	m, v, found, err := s.readLocalMapAfter(s.polled.noPlan)
	if err != nil || !found || m == nil {
		return
	}
	if m.Rebalance == nil {
		s.polled.noPlan = v
		return
	}
	if m.Rebalance.Complete() && len(m.Leaving) > 0 {
		s.finishDrain(g, m)
		return
	}
	type started struct {
		idx int
		mv  rebalance.Move
	}
	var start []started
	ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
	defer cancel()
	_, err = s.updateMap(ctx, g, func(m *clusterMap) error {
		start = start[:0]
		p := m.Rebalance
		if p == nil {
			return errNoChange
		}
		changed := false
		if p.Complete() {
			before := p
			s.replan(m)
			if m.Rebalance == before {
				return errNoChange
			}
			p, changed = m.Rebalance, true
		}
		// Moves the stored plan says run but no mover here runs: their
		// mover was an earlier leader. They start again (idempotent).
		for i := range p.Moves {
			if p.Moves[i].State == rebalance.Running && !s.moverRunning(p.Moves[i].Partition.String()) {
				p.Moves[i].State = rebalance.Pending
				changed = true
			}
		}
		now := s.cfg.Clock.Now().Time()
		for _, i := range p.Next(now) {
			mv := p.Moves[i]
			if m.Joining == nil {
				m.Joining = map[string][]string{}
			}
			m.Joining[mv.Partition.String()] = mv.Joining()
			start = append(start, started{i, mv})
			changed = true
		}
		if !changed {
			return errNoChange
		}
		return nil
	})
	if err != nil {
		s.cfg.Log.Debug("rebalance: start moves", "err", err)
		return
	}
	for _, st := range start {
		if !s.startMover(st.mv.Partition.String()) {
			continue
		}
		s.wg.Add(1)
		go s.runMove(g, st.mv)
	}
}

// runMove runs one move and records its outcome in the map.
func (s *Service) runMove(g *cp.Group, mv rebalance.Move) {
	defer s.wg.Done()
	id := mv.Partition.String()
	defer s.stopMover(id)
	began := time.Now()
	ctx, cancel := context.WithTimeout(s.ctx, moveTimeout)
	// A joining node the failure detector holds down cannot receive the
	// partition: give this attempt up at once (it is retried with backoff)
	// instead of waiting out the timeout. A mover whose node no longer
	// leads the metadata group stops too: it could not record the outcome,
	// and while it runs the move is claimed here, so a re-elected leader
	// could not start it again.
	deposed := make(chan struct{})
	go func() {
		for ctx.Err() == nil {
			if slices.ContainsFunc(mv.Joining(), s.cfg.Down) {
				cancel()
				return
			}
			if !g.IsLeader() {
				close(deposed)
				cancel()
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	keys, bytes, err := s.executeMove(ctx, mv)
	if err != nil && ctx.Err() != nil && slices.ContainsFunc(mv.Joining(), s.cfg.Down) {
		err = fmt.Errorf("%w: joining node(s) %v down: %v", kverrors.ErrUnavailable, mv.Joining(), err)
	}
	cancel()
	if s.ctx.Err() != nil {
		return // closing: the next leader's mover starts it again
	}
	select {
	case <-deposed:
		s.cfg.Log.Info("move handed to the next metadata leader", "partition", id, "err", err)
		return
	default:
	}
	log := s.cfg.Log.With("partition", id, "from", mv.From, "to", mv.To)
	if err != nil {
		log.Warn("move failed; it is retried", "err", err, "attempt", mv.Attempts)
	} else {
		log.Info("partition moved", "took", time.Since(began).Round(time.Millisecond), "keys", keys, "bytes", bytes)
	}
	rctx, rcancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer rcancel()
	_, uerr := s.updateMap(rctx, g, func(m *clusterMap) error {
		p := m.Rebalance
		if p == nil {
			return errNoChange
		}
		i := p.RunningMove(mv.Move)
		if i < 0 {
			return errNoChange
		}
		if err == nil {
			m.Assignments[id] = slices.Clone(mv.To)
			delete(m.Joining, id)
		}
		return p.Finish(i, s.cfg.Clock.Now().Time(), keys, bytes, err)
	})
	if uerr != nil {
		log.Warn("move outcome not recorded; the move runs again", "err", uerr)
	}
}

// executeMove moves the data of one partition.
func (s *Service) executeMove(ctx context.Context, mv rebalance.Move) (keys, bytes int64, err error) {
	r := s.Ring()
	ks, ok := r.Keyspace(mv.Partition.Keyspace)
	if !ok {
		return 0, 0, fmt.Errorf("%w: keyspace %q is gone", kverrors.ErrInvalidArgument, mv.Partition.Keyspace)
	}
	id := mv.Partition.String()
	involved := slices.Compact(slices.Sorted(slices.Values(slices.Concat(mv.From, mv.To))))
	// Everyone writes to the new nodes (ap) and the learners run (cp)
	// before data moves.
	if _, err := s.waitNodes(ctx, involved, r.Epoch(), nil); err != nil {
		return 0, 0, err
	}
	req := &api.MovePartitionRequest{Partition: id, To: mv.To, Joining: mv.Joining()}
	if ks.Mode == consistency.CP {
		return s.moveCP(ctx, mv, req)
	}
	return s.moveAP(ctx, mv, req)
}

// moveCP asks the partition's leader to change its membership, following
// leadership (a transfer away from a leaving leader moves it mid-way), and
// returns what the leader says the new replicas hold.
func (s *Service) moveCP(ctx context.Context, mv rebalance.Move, req *api.MovePartitionRequest) (keys, bytes int64, err error) {
	candidates := slices.Concat(mv.From, mv.Joining())
	to := ""
	var last error
	for attempt := 0; ctx.Err() == nil; attempt++ {
		if to == "" {
			to = candidates[attempt%len(candidates)]
		}
		if s.cfg.Down(to) {
			to = ""
			continue
		}
		resp, err := s.adminCall(ctx, to, func(ctx context.Context, c api.AdminClient) (*api.MovePartitionResponse, error) {
			return c.MovePartition(ctx, req)
		})
		switch {
		case err != nil:
			last, to = err, ""
		case resp.GetNotLeader():
			last, to = fmt.Errorf("%s does not lead %s", to, req.GetPartition()), resp.GetLeader()
		default:
			return int64(resp.GetKeys()), int64(resp.GetBytes()), nil
		}
		select {
		case <-ctx.Done():
		case <-time.After(min(time.Duration(attempt+1)*100*time.Millisecond, time.Second)):
		}
	}
	return 0, 0, fmt.Errorf("%w: move of %s did not complete: %v", kverrors.ErrUnavailable, req.GetPartition(), last)
}

// moveAP asks a replica that stays (or any old one) to stream its data to
// the joining nodes.
func (s *Service) moveAP(ctx context.Context, mv rebalance.Move, req *api.MovePartitionRequest) (int64, int64, error) {
	var sources []string
	for _, n := range mv.From {
		if slices.Contains(mv.To, n) {
			sources = append(sources, n)
		}
	}
	for _, n := range mv.From {
		if !slices.Contains(sources, n) {
			sources = append(sources, n)
		}
	}
	var errs []error
	for _, src := range sources {
		if s.cfg.Down(src) {
			errs = append(errs, fmt.Errorf("%s is down", src))
			continue
		}
		resp, err := s.adminCall(ctx, src, func(ctx context.Context, c api.AdminClient) (*api.MovePartitionResponse, error) {
			return c.MovePartition(ctx, req)
		})
		if err == nil {
			return int64(resp.GetKeys()), int64(resp.GetBytes()), nil
		}
		errs = append(errs, fmt.Errorf("stream from %s: %w", src, err))
	}
	return 0, 0, fmt.Errorf("%w: no old replica of %s could stream it: %w", kverrors.ErrUnavailable, req.GetPartition(), errors.Join(errs...))
}

func (s *Service) adminCall(ctx context.Context, id string, call func(context.Context, api.AdminClient) (*api.MovePartitionResponse, error)) (*api.MovePartitionResponse, error) {
	c, err := s.cfg.Peer(id)
	if err != nil {
		return nil, err
	}
	resp, err := call(ctx, api.NewAdminClient(c))
	return resp, kverrors.FromStatus(err)
}

// RebalanceStatus reports the stored plan, read on a member of the
// metadata group (forwarded by others).
func (s *Service) RebalanceStatus(ctx context.Context, req *api.RebalanceStatusRequest) (*api.RebalanceStatusResponse, error) {
	if _, ok := s.metaGroup(); ok {
		m, _, found, err := s.readLocalMap()
		if err != nil {
			return nil, err
		}
		if !found {
			return nil, fmt.Errorf("%w: the cluster map is not bootstrapped yet", kverrors.ErrUnavailable)
		}
		out := statusProto(m.Rebalance)
		if len(m.Leaving) > 0 {
			out.Leaving, out.Complete = m.Leaving, false // done once they left the map
			for _, id := range m.Leaving {
				if slices.Contains(m.Meta, id) && m.MetaJoining != "" {
					out.MetaSeat = id + " -> " + m.MetaJoining
				}
			}
		}
		return out, nil
	}
	if req.GetHops() >= maxHops {
		return nil, fmt.Errorf("%w: rebalance status forwarded %d times", kverrors.ErrStaleEpoch, req.GetHops())
	}
	var last error
	for _, id := range s.Members() {
		if id == s.cfg.Self || s.cfg.Down(id) {
			continue
		}
		c, err := s.cfg.Peer(id)
		if err != nil {
			last = err
			continue
		}
		resp, err := api.NewAdminClient(c).RebalanceStatus(ctx, &api.RebalanceStatusRequest{Hops: req.GetHops() + 1})
		if err == nil {
			return resp, nil
		}
		last = kverrors.FromStatus(err)
	}
	return nil, fmt.Errorf("%w: no metadata member answered: %v", kverrors.ErrUnavailable, last)
}

func statusProto(p *rebalance.Plan) *api.RebalanceStatusResponse {
	if p == nil {
		return &api.RebalanceStatusResponse{Complete: true}
	}
	out := &api.RebalanceStatusResponse{PlannedAtEpoch: p.ID, Limit: uint32(p.Limit), Complete: p.Complete(),
		Replicas: uint32(p.Replicas), Moved: uint32(p.Moved)}
	ms := func(t time.Time) int64 {
		if t.IsZero() {
			return 0
		}
		return t.UnixMilli()
	}
	for _, m := range p.Moves {
		out.Moves = append(out.Moves, &api.MoveStatus{
			Partition: m.Partition.String(), From: m.From, To: m.To, State: string(m.State), Attempts: uint32(m.Attempts),
			Error: m.Err, Keys: uint64(m.Keys), Bytes: uint64(m.Bytes), StartedUnixMs: ms(m.Started), FinishedUnixMs: ms(m.Finished),
		})
	}
	return out
}

// RemoveNode drains node req.Id: it plans moving every replica the node
// holds to the others and marks it leaving; the mover runs the moves, moves
// a metadata seat the node holds, and then takes it out of the map.
func (s *Service) RemoveNode(ctx context.Context, req *api.RemoveNodeRequest) (*api.ClusterMap, error) {
	id := req.GetId()
	if id == "" {
		return nil, fmt.Errorf("%w: remove node: give the node's id", kverrors.ErrInvalidArgument)
	}
	return s.onLeader(ctx, req.GetHops(), func(g *cp.Group) (*clusterMap, error) {
		return s.updateMap(ctx, g, func(m *clusterMap) error {
			if !slices.ContainsFunc(m.Nodes, func(n ring.Node) bool { return n.ID == id }) {
				var ids []string
				for _, n := range m.Nodes {
					ids = append(ids, n.ID)
				}
				return fmt.Errorf("%w: node %q is not in the cluster map (nodes: %v)", kverrors.ErrInvalidArgument, id, ids)
			}
			if slices.Contains(m.Leaving, id) {
				return errNoChange // already draining
			}
			old := m.Rebalance
			if old != nil && !old.Complete() {
				if err := replaceable(old, id, s.cfg.Down(id)); err != nil {
					return err
				}
			}
			leaving := append(slices.Clone(m.Leaving), id)
			plan, err := ring.PlanMoves(m.topology(), ring.Options{VNodes: s.cfg.VNodes}, leaving)
			if err != nil {
				return err
			}
			if old != nil && !old.Complete() {
				plan = withCleanup(plan, old, m.Assignments)
			}
			if len(m.Nodes)-len(leaving) < 1 {
				return fmt.Errorf("%w: removing %s would leave no node", kverrors.ErrInvalidArgument, id)
			}
			m.Leaving = leaving
			m.Rebalance = rebalance.New(m.Epoch+1, plan, s.cfg.MoveLimit)
			s.cfg.Log.Info("drain planned", "node", id, "moves", len(plan.Moves), "replicas_moving", plan.Moved)
			return nil
		})
	}, func(ctx context.Context, c api.AdminClient, hops uint32) (*api.ClusterMap, error) {
		return c.RemoveNode(ctx, &api.RemoveNodeRequest{Id: id, Hops: hops})
	})
}

// replaceable says whether the incomplete plan p may give way to a drain
// of node id. Only when every move left is a move to id and id is down: a
// joiner that died for good would otherwise hold the plan, and with it
// every later drain, forever (its moves fail and are retried). No move may
// be running, so that no mover works towards the old targets while the new
// plan's movers work towards others (a failed attempt is cancelled as soon
// as the failure detector holds its joiner down).
func replaceable(p *rebalance.Plan, id string, down bool) error {
	st := p.Status()
	for _, mv := range p.Moves {
		if mv.State != rebalance.Done && (!down || !slices.Contains(mv.Joining(), id)) {
			return fmt.Errorf("%w: a rebalancing is in progress (%d of %d moves done); remove %s once it completes (kvctl rebalance status)",
				kverrors.ErrUnavailable, st.Done, len(p.Moves), id)
		}
	}
	if st.Running > 0 {
		return fmt.Errorf("%w: a rebalancing waits for %s, which is down (%d of %d moves done, %d being retried); try again in a few seconds",
			kverrors.ErrUnavailable, id, st.Done, len(p.Moves), st.Running)
	}
	return nil
}

// withCleanup adds to plan a move of every partition the incomplete plan
// old did not finish moving and plan leaves where it is: its Raft group may
// still hold the abandoned joiner (a learner, or a voter that counts
// towards every quorum), and the move to its pinned replicas removes it
// (cp plans every step from the group's configuration).
func withCleanup(plan ring.MovePlan, old *rebalance.Plan, pinned map[string][]string) ring.MovePlan {
	for _, mv := range old.Moves {
		from, ok := pinned[mv.Partition.String()]
		if mv.State == rebalance.Done || !ok ||
			slices.ContainsFunc(plan.Moves, func(x ring.Move) bool { return x.Partition == mv.Partition }) {
			continue
		}
		plan.Moves = append(plan.Moves, ring.Move{Partition: mv.Partition, From: slices.Clone(from), To: slices.Clone(from)})
	}
	slices.SortFunc(plan.Moves, func(a, b ring.Move) int { return strings.Compare(a.Partition.String(), b.Partition.String()) })
	return plan
}

// finishDrain runs once a drain's moves are done: a leaving metadata
// member's seat moves to another node (a Raft membership change of the
// metadata group, like any cp move), then the leaving nodes leave the map.
func (s *Service) finishDrain(g *cp.Group, m *clusterMap) {
	var seat string // a leaving node that holds a metadata seat
	for _, id := range m.Leaving {
		if slices.Contains(m.Meta, id) {
			seat = id
			break
		}
	}
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	if seat == "" {
		_, err := s.updateMap(ctx, g, func(m *clusterMap) error {
			if len(m.Leaving) == 0 || (m.Rebalance != nil && !m.Rebalance.Complete()) {
				return errNoChange
			}
			for _, reps := range m.Assignments {
				for _, id := range m.Leaving {
					if slices.Contains(reps, id) {
						return fmt.Errorf("%w: %s still holds replicas", kverrors.ErrUnavailable, id)
					}
				}
			}
			m.Nodes = slices.DeleteFunc(m.Nodes, func(n ring.Node) bool { return slices.Contains(m.Leaving, n.ID) })
			s.cfg.Log.Info("nodes drained and removed from the map", "nodes", m.Leaving)
			m.Leaving = nil
			return nil
		})
		if err != nil {
			s.cfg.Log.Warn("finish drain", "err", err)
		}
		return
	}
	if m.MetaJoining == "" {
		var next string
		for _, n := range m.Nodes {
			if !slices.Contains(m.Meta, n.ID) && !slices.Contains(m.Leaving, n.ID) && !s.cfg.Down(n.ID) {
				next = n.ID
				break
			}
		}
		_, err := s.updateMap(ctx, g, func(m *clusterMap) error {
			if m.MetaJoining != "" {
				return errNoChange
			}
			if next == "" { // nobody to take the seat: the group shrinks
				m.MetaJoining = "-"
			} else {
				m.MetaJoining = next
			}
			return nil
		})
		if err != nil {
			s.cfg.Log.Warn("plan metadata seat move", "err", err)
		}
		return // the next tick moves the seat, once the new node runs a learner
	}
	target := slices.DeleteFunc(slices.Clone(m.Meta), func(id string) bool { return id == seat })
	if m.MetaJoining != "-" {
		target = append(target, m.MetaJoining)
	}
	if !s.startMover(GroupID) {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer s.stopMover(GroupID)
		mctx, mcancel := context.WithTimeout(s.ctx, moveTimeout)
		defer mcancel()
		err := g.Move(mctx, target, cp.PollApplied(s.metaApplied))
		var nl *cp.NotLeaderError
		if errors.As(err, &nl) {
			return // handed leadership on (this node leaves): the next leader goes on
		}
		if err != nil {
			s.cfg.Log.Warn("metadata seat move failed; retrying", "from", seat, "to", m.MetaJoining, "err", err)
			return
		}
		uctx, ucancel := context.WithTimeout(s.ctx, 10*time.Second)
		defer ucancel()
		if _, err := s.updateMap(uctx, g, func(m *clusterMap) error {
			m.Meta, m.MetaJoining = target, ""
			return nil
		}); err != nil {
			s.cfg.Log.Warn("record metadata seat move", "err", err)
			return
		}
		s.cfg.Log.Info("metadata seat moved", "from", seat, "members", target)
	}()
}

// metaApplied is how far node id's replica of the metadata group is.
func (s *Service) metaApplied(ctx context.Context, id string) (uint64, error) {
	if id == s.cfg.Self {
		g, ok := s.cfg.Host.Group(GroupID)
		if !ok {
			return 0, fmt.Errorf("no metadata replica here")
		}
		return g.Progress(), nil
	}
	c, err := s.cfg.Peer(id)
	if err != nil {
		return 0, err
	}
	st, err := api.NewAdminClient(c).PartitionStatus(ctx, &api.PartitionStatusRequest{Partition: GroupID})
	if err != nil {
		return 0, kverrors.FromStatus(err)
	}
	if !st.GetRunning() {
		return 0, fmt.Errorf("%s runs no metadata replica yet", id)
	}
	return st.GetAppliedIndex(), nil
}

// MetaStatus is this node's metadata replica (PartitionStatus of GroupID).
func (s *Service) MetaStatus() *api.PartitionStatusResponse {
	g, ok := s.cfg.Host.Group(GroupID) // a learner taking a seat too
	if !ok || !g.Running() {
		return &api.PartitionStatusResponse{}
	}
	return &api.PartitionStatusResponse{Running: true, AppliedIndex: g.Progress(), Leader: g.IsLeader()}
}

// metaGroup is this node's replica of the metadata group while it takes
// part in it (a replica whose seat moved stops by itself, and from then on
// this node asks the members, like any other).
func (s *Service) metaGroup() (*cp.Group, bool) {
	g, ok := s.cfg.Host.Group(GroupID)
	if !ok || !g.Running() || !slices.Contains(s.Members(), s.cfg.Self) {
		return nil, false // not a member (yet: a learner taking a seat; or any more)
	}
	return g, true
}

// WipedNode is the refusal of a node that came back with a new data
// directory under an ID the map knows.
func WipedNode(id, known, now string) error {
	return fmt.Errorf("%w: node %s is in the cluster map with another data directory (incarnation %s; this one is %s): "+
		"a wiped node must not come back under its old ID, since its Raft votes are gone and it could help elect two leaders in one term; "+
		"remove it (kvctl node remove %s) and start it with a new --id", kverrors.ErrInvalidArgument, id, known, now, id)
}

// register records this node's incarnation in the map once it has one
// (initial members never call Join; a node that joined did so with it).
func (s *Service) register() {
	if s.cfg.Incarnation == "" || s.registered.Load() {
		return
	}
	r := s.Ring()
	nd, ok := r.Node(s.cfg.Self)
	if r.Epoch() == 0 || !ok {
		return
	}
	if nd.Incarnation == s.cfg.Incarnation {
		s.registered.Store(true)
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, 3*time.Second)
	defer cancel()
	_, err := s.Join(ctx, &api.JoinRequest{Node: &api.Node{Id: s.cfg.Self, Addr: nd.Addr, Region: nd.Region, Incarnation: s.cfg.Incarnation}})
	if err != nil {
		s.cfg.Log.Debug("register incarnation", "err", err)
		if errors.Is(err, kverrors.ErrInvalidArgument) {
			s.cfg.Log.Error("this node's data directory is not the one the cluster knows", "err", err)
			s.registered.Store(true) // nothing to retry
		}
		return
	}
	s.registered.Store(true)
}
