package meta

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/internal/kverrors"
	"github.com/capkv/capkv/internal/wire"
	"github.com/capkv/capkv/replication"
	"github.com/capkv/capkv/replication/cp"
	"github.com/capkv/capkv/ring"
)

// The keyspace life cycle beyond the map change itself: a created keyspace
// is usable everywhere when CreateKeyspace returns, a dropped one is gone
// from every reachable node when DropKeyspace returns, and a node that does
// not know a keyspace asks the metadata leader (Refresh) before refusing.

const (
	// lifecyclePoll is how often create and drop look at the nodes again.
	lifecyclePoll = 50 * time.Millisecond
	// refreshTimeout bounds one fresh read of the map.
	refreshTimeout = 2 * time.Second
	// peerTimeout bounds one node's answer while waiting on it.
	peerTimeout = time.Second
)

// refresh is one fresh read of the map that callers wait for.
type refresh struct {
	done chan struct{}
	err  error
}

// Refresh reads the map through the metadata leader and adopts it if it is
// newer, so that a keyspace created since this node's last poll is known.
// Concurrent callers share a read, but never one that began before they
// called: it might have missed a change they already saw committed.
func (s *Service) Refresh(ctx context.Context) error {
	s.refreshMu.Lock()
	if s.refreshMu.closed {
		s.refreshMu.Unlock()
		return fmt.Errorf("%w: node %s is shutting down", kverrors.ErrUnavailable, s.cfg.Self)
	}
	if s.refreshMu.next == nil {
		s.refreshMu.next = &refresh{done: make(chan struct{})}
	}
	f := s.refreshMu.next
	if !s.refreshMu.running {
		s.refreshMu.running = true
		s.wg.Add(1)
		go s.runRefreshes()
	}
	s.refreshMu.Unlock()
	select {
	case <-f.done:
		return f.err
	case <-ctx.Done():
		return fmt.Errorf("%w: reading the cluster map from the metadata group: %w", kverrors.ErrUnavailable, ctx.Err())
	}
}

// runRefreshes serves queued refreshes one after the other until none waits.
func (s *Service) runRefreshes() {
	defer s.wg.Done()
	for {
		s.refreshMu.Lock()
		f := s.refreshMu.next
		s.refreshMu.next = nil
		if f == nil {
			s.refreshMu.running = false
			s.refreshMu.Unlock()
			return
		}
		s.refreshMu.Unlock()
		ctx, cancel := context.WithTimeout(s.ctx, refreshTimeout)
		pm, err := s.freshMap(ctx, 0)
		cancel()
		if err == nil {
			s.adoptProto(pm)
		}
		f.err = err
		close(f.done)
	}
}

// freshMap reads the map on the metadata leader behind a read index.
func (s *Service) freshMap(ctx context.Context, hops uint32) (*api.ClusterMap, error) {
	return s.onLeader(ctx, hops, func(g *cp.Group) (*clusterMap, error) {
		if _, err := g.ReadBarrier(ctx); err != nil {
			return nil, err
		}
		m, _, found, err := s.readLocalMap()
		if err != nil {
			return nil, err
		}
		if !found {
			return nil, fmt.Errorf("%w: the cluster map is not bootstrapped yet", kverrors.ErrUnavailable)
		}
		return m, nil
	}, func(ctx context.Context, c api.AdminClient, hops uint32) (*api.ClusterMap, error) {
		return c.GetClusterMap(ctx, &api.ClusterMapRequest{Fresh: true, Hops: hops})
	})
}

// adoptProto adopts a map received from another node, if newer.
func (s *Service) adoptProto(pm *api.ClusterMap) {
	if pm.GetEpoch() == 0 {
		return
	}
	s.adopt(mapFromProto(pm))
}

// AdoptedEpoch is the newest map this node's replicators have adopted.
func (s *Service) AdoptedEpoch() uint64 { return s.adopted.Load() }

// DropKeyspace removes a keyspace and its replica assignments from the map
// (a later keyspace of the same name is placed afresh) and returns once
// every node has deleted its data. The metadata leader keeps the name as
// dropped until it has seen every node of the map confirm that (adopt the
// drop's epoch); only then may the name be created again. Dropping it again
// while some node has not confirmed waits again.
func (s *Service) DropKeyspace(ctx context.Context, req *api.DropKeyspaceRequest) (*api.ClusterMap, error) {
	name := req.GetName()
	pm, err := s.onLeader(ctx, req.GetHops(), func(g *cp.Group) (*clusterMap, error) {
		m, err := s.updateMap(ctx, g, func(m *clusterMap) error {
			i := slices.IndexFunc(m.Keyspaces, func(k ring.KeyspaceConfig) bool { return k.Name == name })
			if _, ok := m.Dropped[name]; ok && i < 0 {
				return errNoChange // dropped before, not yet confirmed everywhere
			}
			if i < 0 {
				var names []string
				for _, k := range m.Keyspaces {
					names = append(names, k.Name)
				}
				slices.Sort(names)
				return fmt.Errorf("%w %q (known keyspaces: %s)", kverrors.ErrUnknownKeyspace, name, strings.Join(names, ", "))
			}
			m.Keyspaces = slices.Delete(m.Keyspaces, i, i+1)
			for id := range m.Assignments {
				if pid, err := ring.ParsePartitionID(id); err == nil && pid.Keyspace == name {
					delete(m.Assignments, id)
				}
			}
			m.forgetMoves(name)
			if m.Dropped == nil {
				m.Dropped = map[string]uint64{}
			}
			m.Dropped[name] = m.Epoch + 1 // the epoch updateMap gives this map
			return nil
		})
		if err != nil {
			return nil, err
		}
		// Half the time left: the node the client asked needs the rest to
		// say which nodes have not confirmed, if any.
		wctx, cancel := halfDeadline(ctx)
		defer cancel()
		if down, err := s.waitNodes(wctx, nodeIDs(m.Nodes), m.Dropped[name], nil); err != nil || len(down) > 0 {
			return m, nil // dropped; the name stays reserved
		}
		return s.updateMap(ctx, g, func(m *clusterMap) error {
			if _, ok := m.Dropped[name]; !ok {
				return errNoChange
			}
			delete(m.Dropped, name)
			return nil
		})
	}, func(ctx context.Context, c api.AdminClient, hops uint32) (*api.ClusterMap, error) {
		return c.DropKeyspace(ctx, &api.DropKeyspaceRequest{Name: name, Hops: hops})
	})
	if err != nil || req.GetHops() > 0 {
		return pm, err
	}
	s.adoptProto(pm)
	down, err := s.waitNodes(ctx, nodeIDs(wire.TopologyFromProto(pm).Nodes), pm.GetEpoch(), nil)
	if err == nil && len(down) > 0 {
		err = fmt.Errorf("%w: node(s) %s are down (failure detector); they delete it when they next adopt the map, "+
			"and the name can be created again after a drop that finds every node up", kverrors.ErrUnavailable, strings.Join(down, ", "))
	}
	if err != nil {
		return nil, fmt.Errorf("keyspace %q is dropped from the cluster map, but not every node has deleted its data yet: %w", name, err)
	}
	return pm, nil
}

func nodeIDs(nodes []ring.Node) []string {
	var out []string
	for _, nd := range nodes {
		out = append(out, nd.ID)
	}
	return out
}

// halfDeadline bounds ctx to half of the time it has left.
func halfDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	dl, ok := ctx.Deadline()
	if !ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, time.Until(dl)/2)
}

// waitUsable waits until keyspace name can serve requests through any node:
// every reachable node holding one of its replicas has adopted epoch, and
// for cp every partition has a leader. (Nodes that hold no replica learn the
// keyspace on their first request for it, through Refresh.)
func (s *Service) waitUsable(ctx context.Context, name string, epoch uint64) error {
	ks, ok := s.Ring().Keyspace(name)
	if !ok {
		return fmt.Errorf("%w: keyspace %q is not in this node's map of epoch %d", kverrors.ErrInternal, name, s.Ring().Epoch())
	}
	var nodes []string
	for _, p := range s.Ring().Partitions(name) {
		for _, id := range p.Replicas {
			if !slices.Contains(nodes, id) {
				nodes = append(nodes, id)
			}
		}
	}
	slices.Sort(nodes)
	var leaders func(ctx context.Context) string
	if ks.Mode == consistency.CP {
		leaders = func(ctx context.Context) string { return s.leaderless(ctx, name, nodes) }
	}
	// Replica nodes held down do not stop it: cp serves from a majority,
	// ap hands their writes to fallbacks.
	if _, err := s.waitNodes(ctx, nodes, epoch, leaders); err != nil {
		return fmt.Errorf("keyspace %q is in the cluster map (epoch %d) but not usable yet: %w", name, epoch, err)
	}
	return nil
}

// waitNodes waits until every node of ids that the failure detector does not
// hold down has adopted epoch and then, when more is set, until more reports
// nothing missing. It returns the nodes held down (skipped: they catch up
// when they next adopt the map).
func (s *Service) waitNodes(ctx context.Context, ids []string, epoch uint64, more func(context.Context) string) ([]string, error) {
	ictx, cancel := replication.InnerDeadline(ctx)
	defer cancel()
	for {
		var down []string
		missing := ""
		for _, id := range ids {
			if s.cfg.Down(id) {
				down = append(down, id)
				continue
			}
			info, err := s.peerInfo(ictx, id)
			switch {
			case err != nil:
				missing = fmt.Sprintf("node %s did not answer: %v", id, err)
			case info.GetAdoptedEpoch() < epoch:
				missing = fmt.Sprintf("node %s has adopted epoch %d, not yet %d", id, info.GetAdoptedEpoch(), epoch)
			}
			if missing != "" {
				break
			}
		}
		if missing == "" && more != nil {
			missing = more(ictx)
		}
		if missing == "" {
			return down, nil
		}
		select {
		case <-ictx.Done():
			return down, fmt.Errorf("%w: before the deadline: %s", kverrors.ErrUnavailable, missing)
		case <-time.After(lifecyclePoll):
		}
	}
}

// leaderless names a partition of cp keyspace name for which none of its
// replica nodes knows a leader ("" when every partition has one).
func (s *Service) leaderless(ctx context.Context, name string, nodes []string) string {
	have := map[string]bool{}
	for _, id := range nodes {
		if s.cfg.Down(id) {
			continue
		}
		resp, err := s.peerRing(ctx, id, name)
		if err != nil {
			continue
		}
		for _, p := range resp.GetPartitions() {
			if p.GetLeader() != "" {
				have[p.GetId()] = true
			}
		}
	}
	for _, p := range s.Ring().Partitions(name) {
		if p.Err == "" && !have[p.ID.String()] {
			return fmt.Sprintf("partition %s has no Raft leader yet", p.ID)
		}
	}
	return ""
}

func (s *Service) peerRing(ctx context.Context, id, keyspace string) (*api.RingResponse, error) {
	req := &api.RingRequest{Keyspace: keyspace}
	if id == s.cfg.Self {
		return s.RingInfo(ctx, req)
	}
	c, err := s.cfg.Peer(id)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, peerTimeout)
	defer cancel()
	resp, err := api.NewAdminClient(c).Ring(ctx, req)
	if err != nil {
		return nil, kverrors.FromStatus(err)
	}
	return resp, nil
}
