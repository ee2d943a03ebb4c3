package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"time"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/internal/kverrors"
	"github.com/capkv/capkv/internal/wire"
	"github.com/capkv/capkv/replication/cp"
	"github.com/capkv/capkv/ring"
)

// The cluster map lives in a small Raft group of its own (the metadata
// group, like a placement driver) on the first MetaSize nodes of the initial
// cluster. It is one JSON value under mapKey, changed only by compare-and-set
// on its version, so concurrent joins and keyspace creations never lose each
// other's changes. Every node follows it: members read their local replica,
// the others poll the members; a node acts on a map only when its epoch is
// newer than the one it has.
const (
	metaGroupID = "_meta/*/0"
	mapKey      = "cluster/map"
	mapPoll     = 500 * time.Millisecond
)

// clusterMap is the stored form of the map.
type clusterMap struct {
	Epoch       uint64                `json:"epoch"`
	Meta        []string              `json:"meta"`
	Nodes       []ring.Node           `json:"nodes"`
	Keyspaces   []ring.KeyspaceConfig `json:"keyspaces"`
	Assignments map[string][]string   `json:"assignments,omitempty"`
}

func (m *clusterMap) topology() ring.Topology {
	return ring.Topology{Epoch: m.Epoch, Nodes: m.Nodes, Keyspaces: m.Keyspaces, Assignments: m.Assignments}
}

// assign pins the replica set of every partition that can be placed now and
// has no replica set yet. Pinned sets never change here: moving a partition
// is a rebalancing, with Raft membership changes, not a side effect of a join.
func (m *clusterMap) assign(vnodes int) error {
	r, err := ring.New(m.topology(), ring.Options{VNodes: vnodes})
	if err != nil {
		return err
	}
	if m.Assignments == nil {
		m.Assignments = map[string][]string{}
	}
	for _, ks := range r.Keyspaces() {
		for _, p := range r.Partitions(ks.Name) {
			if id := p.ID.String(); p.Err == "" && m.Assignments[id] == nil {
				m.Assignments[id] = slices.Clone(p.Replicas)
			}
		}
	}
	return nil
}

// metaMembers is the metadata group of an initial cluster.
func metaMembers(initial []ring.Node, size int) []string {
	var out []string
	for _, n := range initial {
		if len(out) < size {
			out = append(out, n.ID)
		}
	}
	return out
}

// metaLoop keeps this node's map current and, on the metadata leader,
// writes the initial map once. It runs until the node closes.
func (n *Node) metaLoop() {
	defer n.wg.Done()
	t := time.NewTicker(mapPoll)
	defer t.Stop()
	for {
		n.syncMap()
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
	}
}

func (n *Node) syncMap() {
	if g, ok := n.host.Group(metaGroupID); ok {
		m, _, found, err := n.readLocalMap()
		switch {
		case err != nil:
			n.log.Warn("read cluster map", "err", err)
		case found:
			n.adopt(m)
		case g.IsLeader() && len(n.cfg.Peers) > 0:
			n.bootstrapMap(g)
		}
		return
	}
	// Not a member: ask the members.
	for _, id := range n.meta() {
		if n.fd.Down(id) {
			continue // do not spend a second of every poll on it
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		m, err := n.fetchMap(ctx, id)
		cancel()
		if err == nil {
			n.adopt(m)
			return
		}
	}
}

func (n *Node) fetchMap(ctx context.Context, id string) (*clusterMap, error) {
	c, err := n.peer(id)
	if err != nil {
		return nil, err
	}
	pm, err := api.NewAdminClient(c).GetClusterMap(ctx, &api.ClusterMapRequest{})
	if err != nil {
		return nil, kverrors.FromStatus(err)
	}
	if pm.GetEpoch() == 0 {
		return nil, fmt.Errorf("%w: %s has no cluster map yet", kverrors.ErrUnavailable, id)
	}
	t := wire.TopologyFromProto(pm)
	return &clusterMap{Epoch: t.Epoch, Meta: pm.GetMeta(), Nodes: t.Nodes, Keyspaces: t.Keyspaces, Assignments: t.Assignments}, nil
}

// readLocalMap reads the map from this node's metadata replica.
func (n *Node) readLocalMap() (*clusterMap, uint64, bool, error) {
	rec, found, err := n.store.Replica(metaGroupID).Get(mapKey)
	if err != nil || !found || rec.Tombstone {
		return nil, 0, false, err
	}
	var m clusterMap
	if err := json.Unmarshal(rec.Value, &m); err != nil {
		return nil, 0, false, fmt.Errorf("%w: stored cluster map is corrupt: %v", kverrors.ErrInternal, err)
	}
	return &m, rec.Version, true, nil
}

// bootstrapMap writes the initial map: the initial cluster and the
// configured keyspaces. Every seed may try; create-if-absent lets one win.
func (n *Node) bootstrapMap(g *cp.Group) {
	m := &clusterMap{Epoch: 1, Meta: metaMembers(n.cfg.Peers, n.cfg.MetaSize), Nodes: slices.Clone(n.cfg.Peers), Keyspaces: n.cfg.Keyspaces}
	if err := m.assign(n.cfg.VNodes); err != nil {
		n.log.Error("initial cluster map is invalid", "err", err)
		return
	}
	b, _ := json.Marshal(m)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := g.Propose(ctx, cp.Command{Op: cp.OpCAS, Key: mapKey, Value: b, HasExpectedVer: true, ExpectedVersion: 0, Timestamp: n.clock.Now()})
	if err != nil && !errors.Is(err, kverrors.ErrConflict) {
		n.log.Debug("bootstrap cluster map", "err", err)
		return
	}
	n.log.Info("cluster map bootstrapped", "nodes", len(m.Nodes), "keyspaces", len(m.Keyspaces))
}

// adopt switches to m if it is newer than the current map.
func (n *Node) adopt(m *clusterMap) {
	n.mapMu.Lock()
	defer n.mapMu.Unlock()
	if cur := n.ringp.Load(); cur != nil && cur.Epoch() >= m.Epoch {
		return
	}
	r, err := ring.New(m.topology(), ring.Options{VNodes: n.cfg.VNodes})
	if err != nil {
		n.log.Error("cluster map rejected", "epoch", m.Epoch, "err", err)
		return
	}
	n.metaIDs.Store(&m.Meta)
	n.ringp.Store(r)
	n.log.Info("cluster map", "epoch", m.Epoch, "nodes", len(m.Nodes), "keyspaces", len(m.Keyspaces))
	if err := n.adoptModes(); err != nil {
		n.log.Error("start raft groups", "err", err)
	}
}

// meta returns the metadata group's members as last known.
func (n *Node) meta() []string {
	if p := n.metaIDs.Load(); p != nil {
		return *p
	}
	return nil
}

// updateMap changes the map on the metadata leader with compare-and-set,
// retrying when another change won the race. fn may return errNoChange.
func (n *Node) updateMap(ctx context.Context, g *cp.Group, fn func(*clusterMap) error) (*clusterMap, error) {
	for attempt := 0; ; attempt++ {
		if _, err := g.ReadBarrier(ctx); err != nil {
			return nil, err
		}
		m, version, found, err := n.readLocalMap()
		if err != nil {
			return nil, err
		}
		if !found {
			return nil, fmt.Errorf("%w: the cluster map is not bootstrapped yet", kverrors.ErrUnavailable)
		}
		if err := fn(m); errors.Is(err, errNoChange) {
			return m, nil
		} else if err != nil {
			return nil, err
		}
		m.Epoch++
		if err := m.assign(n.cfg.VNodes); err != nil {
			return nil, err
		}
		b, _ := json.Marshal(m)
		_, err = g.Propose(ctx, cp.Command{Op: cp.OpCAS, Key: mapKey, Value: b, HasExpectedVer: true, ExpectedVersion: version, Timestamp: n.clock.Now()})
		if err == nil {
			n.adopt(m)
			return m, nil
		}
		if !errors.Is(err, kverrors.ErrConflict) || attempt >= 10 {
			return nil, err
		}
	}
}

// onMetaLeader runs local on the metadata leader, forwarding as needed.
func (n *Node) onMetaLeader(ctx context.Context, hops uint32, local func(g *cp.Group) (*clusterMap, error),
	forward func(ctx context.Context, c api.AdminClient, hops uint32) (*api.ClusterMap, error)) (*api.ClusterMap, error) {
	ictx, cancel := innerDeadline(ctx)
	defer cancel()
	for {
		var to string
		if g, ok := n.host.Group(metaGroupID); ok {
			m, err := local(g)
			if err == nil {
				return n.mapProto(m), nil
			}
			var nl *cp.NotLeaderError
			if !errors.As(err, &nl) {
				return nil, err
			}
			to = nl.Leader
		} else if ids := n.meta(); len(ids) > 0 {
			to = ids[int(hops)%len(ids)]
		}
		if to != "" && to != n.cfg.ID && hops < maxHops && !n.fd.Down(to) {
			c, err := n.peer(to)
			if err != nil {
				return nil, err
			}
			resp, err := forward(ctx, api.NewAdminClient(c), hops+1)
			if err == nil || !errors.Is(kverrors.FromStatus(err), kverrors.ErrUnavailable) {
				return resp, kverrors.FromStatus(err)
			}
		}
		select {
		case <-ictx.Done():
			return nil, fmt.Errorf("%w: no metadata leader reachable from %s before the deadline", kverrors.ErrUnavailable, n.cfg.ID)
		case <-time.After(leaderWait * 5):
		}
	}
}

func (n *Node) mapProto(m *clusterMap) *api.ClusterMap {
	return wire.MapToProto(m.topology(), n.cfg.VNodes, m.Meta)
}

// Join registers a node or updates its address and region.
func (n *Node) Join(ctx context.Context, req *api.JoinRequest) (*api.ClusterMap, error) {
	nd := req.GetNode()
	if nd.GetId() == "" || nd.GetAddr() == "" {
		return nil, fmt.Errorf("%w: join needs a node id and address", kverrors.ErrInvalidArgument)
	}
	joining := ring.Node{ID: nd.GetId(), Addr: nd.GetAddr(), Region: nd.GetRegion()}
	return n.onMetaLeader(ctx, req.GetHops(), func(g *cp.Group) (*clusterMap, error) {
		return n.updateMap(ctx, g, func(m *clusterMap) error {
			for i, x := range m.Nodes {
				if x.ID != joining.ID {
					continue
				}
				if x == joining {
					return errNoChange
				}
				if x.Region != joining.Region {
					return fmt.Errorf("%w: node %s is registered in region %q, not %q (its data is placed by region)", kverrors.ErrInvalidArgument, x.ID, x.Region, joining.Region)
				}
				m.Nodes[i] = joining
				return nil
			}
			m.Nodes = append(m.Nodes, joining)
			return nil
		})
	}, func(ctx context.Context, c api.AdminClient, hops uint32) (*api.ClusterMap, error) {
		return c.Join(ctx, &api.JoinRequest{Node: nd, Hops: hops})
	})
}

// CreateKeyspace adds a keyspace to the map.
func (n *Node) CreateKeyspace(ctx context.Context, req *api.CreateKeyspaceRequest) (*api.ClusterMap, error) {
	ks := wire.KeyspaceFromProto(req.GetKeyspace()).WithDefaults()
	if err := ks.Validate(); err != nil {
		return nil, err
	}
	return n.onMetaLeader(ctx, req.GetHops(), func(g *cp.Group) (*clusterMap, error) {
		return n.updateMap(ctx, g, func(m *clusterMap) error {
			for _, x := range m.Keyspaces {
				if x.Name != ks.Name {
					continue
				}
				if reflect.DeepEqual(x.WithDefaults(), ks) {
					return errNoChange
				}
				return fmt.Errorf("%w: keyspace %q already exists with another configuration (mode %s, %d replicas, %d partitions, template %s)",
					kverrors.ErrInvalidArgument, ks.Name, x.Mode, x.Replicas, x.Partitions, x.Template)
			}
			m.Keyspaces = append(m.Keyspaces, ks)
			return nil
		})
	}, func(ctx context.Context, c api.AdminClient, hops uint32) (*api.ClusterMap, error) {
		return c.CreateKeyspace(ctx, &api.CreateKeyspaceRequest{Keyspace: req.GetKeyspace(), Hops: hops})
	})
}

// joinCluster registers this node through the addresses in cfg.Join,
// retrying until JoinTimeout.
func (n *Node) joinCluster() error {
	deadline := time.Now().Add(n.cfg.JoinTimeout)
	self := &api.Node{Id: n.cfg.ID, Addr: n.advertise(), Region: n.cfg.Region}
	var last error
	for attempt := 0; time.Now().Before(deadline); attempt++ {
		for _, addr := range n.cfg.Join {
			c, err := n.dialAddr(addr)
			if err != nil {
				last = err
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			pm, err := api.NewAdminClient(c).Join(ctx, &api.JoinRequest{Node: self})
			cancel()
			if err != nil {
				last = fmt.Errorf("join via %s: %w", addr, kverrors.FromStatus(err))
				if errors.Is(last, kverrors.ErrInvalidArgument) {
					return last
				}
				continue
			}
			t := wire.TopologyFromProto(pm)
			n.adopt(&clusterMap{Epoch: t.Epoch, Meta: pm.GetMeta(), Nodes: t.Nodes, Keyspaces: t.Keyspaces, Assignments: t.Assignments})
			n.log.Info("joined the cluster", "via", addr, "epoch", t.Epoch)
			return nil
		}
		select {
		case <-n.stop:
			return errors.New("node closed while joining")
		case <-time.After(min(time.Duration(attempt+1)*200*time.Millisecond, 2*time.Second)):
		}
	}
	return fmt.Errorf("could not join the cluster via %v within %s: %w", n.cfg.Join, n.cfg.JoinTimeout, last)
}

// errNoChange aborts a map update that has nothing to change.
var errNoChange = errors.New("no change")
