// Package meta is capkv's placement driver: the cluster map (nodes and
// their labels, keyspaces, partition replica assignments, epochs) kept in a
// small Raft group of its own, the metadata group, on the first MetaSize
// nodes of the initial cluster.
//
// The map is one JSON value under mapKey, changed only by compare-and-set on
// its version, so concurrent joins and keyspace creations never lose each
// other's changes. Every node follows it: members read their local replica,
// the others poll the members; a node acts on a map only when its epoch is
// newer than the one it has (Service.Ring). Joins and keyspace creations run
// on the metadata leader; any node forwards them there.
package meta

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/internal/access"
	"github.com/capkv/capkv/internal/kverrors"
	"github.com/capkv/capkv/internal/rebalance"
	"github.com/capkv/capkv/internal/wire"
	"github.com/capkv/capkv/replication"
	"github.com/capkv/capkv/replication/cp"
	"github.com/capkv/capkv/ring"
)

const (
	// GroupID is the metadata group's partition id (never a user keyspace:
	// keyspace names cannot start with '_').
	GroupID = "_meta/*/0"
	mapKey  = "cluster/map"
	mapPoll = 500 * time.Millisecond
	// maxHops bounds forwarding a map change towards the metadata leader.
	maxHops = 2
	// leaderWait is how often a change without a reachable leader looks again.
	leaderWait = 100 * time.Millisecond
)

// Config wires the metadata service of one node.
type Config struct {
	Self   string
	Region string
	// Advertise is the address other nodes reach this one at (known once it listens).
	Advertise func() string
	// Peers is the initial cluster (empty when joining); the first MetaSize
	// of them are the metadata group.
	Peers    []ring.Node
	MetaSize int
	// Keyspaces of the initial map.
	Keyspaces []ring.KeyspaceConfig
	// AdminIdentities are the cluster admin identities (internal/access):
	// with none, a keyspace's grants must keep an identity with admin.
	AdminIdentities []string
	VNodes          int
	// Join lists addresses to register through; JoinTimeout bounds it.
	Join        []string
	JoinTimeout time.Duration
	// Host runs the metadata group's replica on members; Storage is that
	// replica's data.
	Host    *cp.Host
	Storage cp.Storage
	Clock   *consistency.Clock
	// Peer reaches a node of the map; DialAddr an address outside it (join targets).
	Peer     func(id string) (grpc.ClientConnInterface, error)
	DialAddr func(addr string) (grpc.ClientConnInterface, error)
	// Down reports nodes the failure detector holds unreachable (polls skip
	// them); Unreachable says why, for the cluster status.
	Down        func(id string) bool
	Unreachable func(id string) error
	// Info describes this node for the cluster status.
	Info func() (*api.NodeInfo, error)
	// OnMap is called with every newer ring this node adopts, in epoch order.
	OnMap func(*ring.Ring) error
	// Incarnation names this node's data directory (identity.go in
	// internal/node): registered in the map, so that a wiped node cannot
	// come back under its old ID.
	Incarnation string
	// MoveLimit is how many moves of a rebalancing one node takes part in
	// at once (0: rebalance.DefaultLimit).
	MoveLimit int
	Log       *slog.Logger
}

// Service follows the cluster map on one node and, on members of the
// metadata group, changes it.
type Service struct {
	cfg     Config
	ringp   atomic.Pointer[ring.Ring] // the newest map adopted; epoch 0: none yet
	members atomic.Pointer[[]string]
	mapMu   sync.Mutex    // serializes adopting
	adopted atomic.Uint64 // epoch of the newest map OnMap accepted
	stop    chan struct{}
	ctx     context.Context // canceled by Close: background reads of the map
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	once    sync.Once

	// polled is owned by loop: the versions of the stored map that sync
	// adopted and that rebalanceTick found without a plan. An unchanged map
	// is not decoded again (JSON-decoding it twice a second was a few
	// percent of an idle node's CPU).
	polled struct{ synced, noPlan uint64 }

	moves      movers      // the rebalancing moves this node's mover runs
	registered atomic.Bool // this node's incarnation is in the map

	refreshMu struct {
		sync.Mutex
		next    *refresh // the read the next callers wait for; not begun yet
		running bool     // runRefreshes is serving reads
		closed  bool
	}
}

// New returns the service; until the first map arrives its ring knows the
// initial cluster (so the metadata group can talk) or only this node, and no
// keyspaces.
func New(cfg Config, self ring.Node) (*Service, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s := &Service{cfg: cfg, stop: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	boot := cfg.Peers
	if len(boot) == 0 {
		boot = []ring.Node{self}
	}
	r, err := ring.New(ring.Topology{Nodes: boot}, ring.Options{VNodes: cfg.VNodes})
	if err != nil {
		return nil, err
	}
	s.ringp.Store(r)
	if len(cfg.Peers) > 0 {
		ids := Members(cfg.Peers, cfg.MetaSize)
		s.members.Store(&ids)
	}
	return s, nil
}

// Start runs this node's metadata replica if it is a member, starts
// following the map and, for a joining node, registers it.
func (s *Service) Start() error {
	if ids := s.Members(); slices.Contains(ids, s.cfg.Self) {
		if _, err := s.cfg.Host.Ensure(GroupID, ids, s.cfg.Storage); err != nil {
			return err
		}
	}
	s.wg.Add(1)
	go s.loop()
	if len(s.cfg.Join) > 0 {
		return s.join()
	}
	return nil
}

// Close stops following the map.
func (s *Service) Close() {
	s.once.Do(func() {
		close(s.stop)
		s.cancel()
		s.refreshMu.Lock()
		s.refreshMu.closed = true // no refresh starts after the Wait below
		s.refreshMu.Unlock()
	})
	s.wg.Wait()
}

// Ring is the ring of the newest map this node adopted.
func (s *Service) Ring() *ring.Ring { return s.ringp.Load() }

// Members are the metadata group's members as last known.
func (s *Service) Members() []string {
	if p := s.members.Load(); p != nil {
		return *p
	}
	return nil
}

// Proto is the current map as clients read it.
func (s *Service) Proto() *api.ClusterMap {
	return wire.MapToProto(s.Ring().Topology(), s.cfg.VNodes, s.Members())
}

// clusterMap is the stored form of the map.
type clusterMap struct {
	Epoch       uint64                `json:"epoch"`
	Meta        []string              `json:"meta"`
	Nodes       []ring.Node           `json:"nodes"`
	Keyspaces   []ring.KeyspaceConfig `json:"keyspaces"`
	Assignments map[string][]string   `json:"assignments,omitempty"`
	// Dropped: keyspaces dropped (name -> epoch of the drop) that some node
	// may still hold data of. Their names cannot be created again until
	// every node has deleted it: a node that comes back with the old Raft log
	// of a re-created partition could win an election in the new group.
	Dropped map[string]uint64 `json:"dropped,omitempty"`
	// Joining: nodes partitions are moving to (rebalance.go).
	Joining map[string][]string `json:"joining,omitempty"`
	// Rebalance is the current or last rebalancing (nil: none ever ran).
	Rebalance *rebalance.Plan `json:"rebalance,omitempty"`
	// Leaving: nodes being drained; MetaJoining: the node taking a leaving
	// node's metadata seat (rebalance.go).
	Leaving     []string `json:"leaving,omitempty"`
	MetaJoining string   `json:"meta_joining,omitempty"`
}

func (m *clusterMap) topology() ring.Topology {
	return ring.Topology{Epoch: m.Epoch, Nodes: m.Nodes, Keyspaces: m.Keyspaces, Assignments: m.Assignments, Joining: m.Joining, Leaving: m.Leaving, MetaJoining: m.MetaJoining}
}

// mapFromProto is a map another node sent. It lacks what only the
// metadata group's replicas keep (dropped names, the rebalancing plan).
func mapFromProto(pm *api.ClusterMap) *clusterMap {
	t := wire.TopologyFromProto(pm)
	return &clusterMap{Epoch: t.Epoch, Meta: pm.GetMeta(), Nodes: t.Nodes, Keyspaces: t.Keyspaces, Assignments: t.Assignments, Joining: t.Joining, Leaving: t.Leaving, MetaJoining: t.MetaJoining}
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

// Members is the metadata group of an initial cluster.
func Members(initial []ring.Node, size int) []string {
	var out []string
	for _, n := range initial {
		if len(out) < size {
			out = append(out, n.ID)
		}
	}
	return out
}

// loop keeps this node's map current and, on the metadata leader, writes
// the initial map once. It runs until Close.
func (s *Service) loop() {
	defer s.wg.Done()
	t := time.NewTicker(mapPoll)
	defer t.Stop()
	for {
		s.sync()
		s.register()
		s.rebalanceTick()
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
	}
}

func (s *Service) sync() {
	if g, ok := s.metaGroup(); ok {
		m, v, found, err := s.readLocalMapAfter(s.polled.synced)
		switch {
		case err != nil:
			s.cfg.Log.Warn("read cluster map", "err", err)
		case found && m == nil: // adopted at the last poll
		case found:
			s.adopt(m)
			s.polled.synced = v
		case g.IsLeader() && len(s.cfg.Peers) > 0:
			s.bootstrapMap(g)
		}
		if g.Leader() != "" {
			return
		}
		// No leader in sight: this replica may have been removed from the
		// group (its seat moved) without hearing of it. The others say.
	}
	// Not a member (or no longer one, or cut off): ask the members.
	for _, id := range s.Members() {
		if id == s.cfg.Self || s.cfg.Down(id) {
			continue // do not spend a second of every poll on it
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		m, err := s.fetchMap(ctx, id)
		cancel()
		if err == nil {
			s.adopt(m)
			return
		}
	}
}

func (s *Service) fetchMap(ctx context.Context, id string) (*clusterMap, error) {
	c, err := s.cfg.Peer(id)
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
	return mapFromProto(pm), nil
}

// readLocalMap reads the map from this node's metadata replica.
func (s *Service) readLocalMap() (*clusterMap, uint64, bool, error) {
	return s.readLocalMapAfter(0)
}

// readLocalMapAfter is readLocalMap that does not decode a map whose
// version is seen: it returns a nil map, the version and found.
func (s *Service) readLocalMapAfter(seen uint64) (*clusterMap, uint64, bool, error) {
	rec, found, err := s.cfg.Storage.Get(mapKey)
	if err != nil || !found || rec.Tombstone {
		return nil, 0, false, err
	}
	if seen != 0 && rec.Version == seen {
		return nil, rec.Version, true, nil
	}
	var m clusterMap
	if err := json.Unmarshal(rec.Value, &m); err != nil {
		return nil, 0, false, fmt.Errorf("%w: stored cluster map is corrupt: %v", kverrors.ErrInternal, err)
	}
	return &m, rec.Version, true, nil
}

// bootstrapMap writes the initial map: the initial cluster and the
// configured keyspaces. Every seed may try; create-if-absent lets one win.
func (s *Service) bootstrapMap(g *cp.Group) {
	m := &clusterMap{Epoch: 1, Meta: Members(s.cfg.Peers, s.cfg.MetaSize), Nodes: slices.Clone(s.cfg.Peers), Keyspaces: s.cfg.Keyspaces}
	if err := m.assign(s.cfg.VNodes); err != nil {
		s.cfg.Log.Error("initial cluster map is invalid", "err", err)
		return
	}
	b, _ := json.Marshal(m)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := g.Propose(ctx, cp.Command{Op: cp.OpCAS, Key: mapKey, Value: b, HasExpectedVer: true, ExpectedVersion: 0, Timestamp: s.cfg.Clock.Now()})
	if err != nil && !errors.Is(err, kverrors.ErrConflict) {
		s.cfg.Log.Debug("bootstrap cluster map", "err", err)
		return
	}
	s.cfg.Log.Info("cluster map bootstrapped", "nodes", len(m.Nodes), "keyspaces", len(m.Keyspaces))
}

// adopt switches to m if it is newer than the current map.
func (s *Service) adopt(m *clusterMap) {
	s.mapMu.Lock()
	defer s.mapMu.Unlock()
	if cur := s.ringp.Load(); cur != nil && cur.Epoch() >= m.Epoch {
		return
	}
	r, err := ring.New(m.topology(), ring.Options{VNodes: s.cfg.VNodes})
	if err != nil {
		s.cfg.Log.Error("cluster map rejected", "epoch", m.Epoch, "err", err)
		return
	}
	s.members.Store(&m.Meta)
	s.ringp.Store(r)
	if g, ok := s.cfg.Host.Group(GroupID); ok && !slices.Contains(m.Meta, s.cfg.Self) && m.MetaJoining != s.cfg.Self {
		// This node's metadata seat moved away: its replica goes.
		s.cfg.Log.Info("metadata seat moved away; stopping this node's metadata replica", "members", m.Meta)
		g.Shutdown()
	}
	if m.MetaJoining == s.cfg.Self || (slices.Contains(m.Meta, s.cfg.Self) && len(s.cfg.Peers) == 0) {
		// This node takes a leaving node's metadata seat (a learner first),
		// or took one before it restarted: a node that joined has no
		// initial cluster to start its replica from. Join never bootstraps.
		if _, err := s.cfg.Host.Join(GroupID, s.cfg.Storage); err != nil {
			s.cfg.Log.Error("join the metadata group", "err", err)
		}
	}
	s.cfg.Log.Info("cluster map", "epoch", m.Epoch, "nodes", len(m.Nodes), "keyspaces", len(m.Keyspaces))
	if err := s.cfg.OnMap(r); err != nil {
		s.cfg.Log.Error("adopt cluster map", "epoch", m.Epoch, "err", err)
		return
	}
	s.adopted.Store(m.Epoch)
}

// updateMap changes the map on the metadata leader with compare-and-set,
// retrying when another change won the race. fn may return errNoChange.
func (s *Service) updateMap(ctx context.Context, g *cp.Group, fn func(*clusterMap) error) (*clusterMap, error) {
	for attempt := 0; ; attempt++ {
		if _, err := g.ReadBarrier(ctx); err != nil {
			return nil, err
		}
		m, version, found, err := s.readLocalMap()
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
		if err := m.assign(s.cfg.VNodes); err != nil {
			return nil, err
		}
		b, _ := json.Marshal(m)
		_, err = g.Propose(ctx, cp.Command{Op: cp.OpCAS, Key: mapKey, Value: b, HasExpectedVer: true, ExpectedVersion: version, Timestamp: s.cfg.Clock.Now()})
		if err == nil {
			s.adopt(m)
			return m, nil
		}
		if !errors.Is(err, kverrors.ErrConflict) || attempt >= 10 {
			return nil, err
		}
	}
}

// onMetaLeader runs local on the metadata leader, forwarding as needed.
func (s *Service) onLeader(ctx context.Context, hops uint32, local func(g *cp.Group) (*clusterMap, error),
	forward func(ctx context.Context, c api.AdminClient, hops uint32) (*api.ClusterMap, error)) (*api.ClusterMap, error) {
	ictx, cancel := replication.InnerDeadline(ctx)
	defer cancel()
	var last error // the last forwarded answer: a leader's refusal says why
	for attempt := 0; ; attempt++ {
		var to string
		if g, ok := s.metaGroup(); ok {
			m, err := local(g)
			if err == nil {
				return s.mapProto(m), nil
			}
			var nl *cp.NotLeaderError
			if !errors.As(err, &nl) {
				return nil, err
			}
			to = nl.Leader
		} else if ids := slices.DeleteFunc(slices.Clone(s.Members()), func(id string) bool { return id == s.cfg.Self }); len(ids) > 0 {
			to = ids[(int(hops)+attempt)%len(ids)] // not self: a replica whose seat moved asks the others
		}
		if to != "" && to != s.cfg.Self && hops < maxHops && !s.cfg.Down(to) {
			c, err := s.cfg.Peer(to)
			if err != nil {
				return nil, err
			}
			resp, err := forward(ctx, api.NewAdminClient(c), hops+1)
			if err == nil || !errors.Is(kverrors.FromStatus(err), kverrors.ErrUnavailable) {
				return resp, kverrors.FromStatus(err)
			}
			last = kverrors.FromStatus(err)
		}
		select {
		case <-ictx.Done():
			if last != nil && ctx.Err() == nil {
				// Unavailable is retried (a leader may be on its way), but
				// one that answered and refused is the answer, not "no
				// leader reachable".
				return nil, last
			}
			return nil, fmt.Errorf("%w: no metadata leader reachable from %s before the deadline", kverrors.ErrUnavailable, s.cfg.Self)
		case <-time.After(leaderWait):
		}
	}
}

func (s *Service) mapProto(m *clusterMap) *api.ClusterMap {
	return wire.MapToProto(m.topology(), s.cfg.VNodes, m.Meta)
}

// Join registers a node or updates its address and region.
func (s *Service) Join(ctx context.Context, req *api.JoinRequest) (*api.ClusterMap, error) {
	nd := req.GetNode()
	if nd.GetId() == "" || nd.GetAddr() == "" {
		return nil, fmt.Errorf("%w: join needs a node id and address", kverrors.ErrInvalidArgument)
	}
	joining := ring.Node{ID: nd.GetId(), Addr: nd.GetAddr(), Region: nd.GetRegion(), Incarnation: nd.GetIncarnation()}
	return s.onLeader(ctx, req.GetHops(), func(g *cp.Group) (*clusterMap, error) {
		return s.updateMap(ctx, g, func(m *clusterMap) error {
			for i, x := range m.Nodes {
				if x.ID != joining.ID {
					continue
				}
				if x.Incarnation != "" && joining.Incarnation != "" && x.Incarnation != joining.Incarnation {
					return WipedNode(x.ID, x.Incarnation, joining.Incarnation)
				}
				if joining.Incarnation == "" {
					joining.Incarnation = x.Incarnation // an older node's join keeps what is known
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
			s.replan(m) // partitions whose preference list now includes it move
			return nil
		})
	}, func(ctx context.Context, c api.AdminClient, hops uint32) (*api.ClusterMap, error) {
		return c.Join(ctx, &api.JoinRequest{Node: nd, Hops: hops})
	})
}

// CreateKeyspace adds a keyspace to the map.
func (s *Service) CreateKeyspace(ctx context.Context, req *api.CreateKeyspaceRequest) (*api.ClusterMap, error) {
	ks := wire.KeyspaceFromProto(req.GetKeyspace()).WithDefaults()
	ks.Grants = nil // grants are given by GrantKeyspace, by an admin
	if err := ks.Validate(); err != nil {
		return nil, err
	}
	pm, err := s.onLeader(ctx, req.GetHops(), func(g *cp.Group) (*clusterMap, error) {
		return s.updateMap(ctx, g, func(m *clusterMap) error {
			for _, x := range m.Keyspaces {
				if x.Name != ks.Name {
					continue
				}
				x.Grants = nil // creating it again is a no-op whatever its grants
				if reflect.DeepEqual(x.WithDefaults(), ks) {
					return errNoChange
				}
				return fmt.Errorf("%w: keyspace %q already exists with another configuration (mode %s, %d replicas, %d partitions, template %s)",
					kverrors.ErrInvalidArgument, ks.Name, x.Mode, x.Replicas, x.Partitions, x.Template)
			}
			if e, ok := m.Dropped[ks.Name]; ok {
				return fmt.Errorf("%w: keyspace %q was dropped at epoch %d and not every node has confirmed deleting its data yet (one was down); "+
					"run `kvctl keyspace drop %s --yes` again once every node is up", kverrors.ErrInvalidArgument, ks.Name, e, ks.Name)
			}
			// A keyspace no partition of which can be placed could never be
			// used (only dropped): refuse it with the numbers.
			if err := ks.CheckPlacement(m.Nodes); err != nil {
				return err
			}
			m.Keyspaces = append(m.Keyspaces, ks)
			return nil
		})
	}, func(ctx context.Context, c api.AdminClient, hops uint32) (*api.ClusterMap, error) {
		return c.CreateKeyspace(ctx, &api.CreateKeyspaceRequest{Keyspace: req.GetKeyspace(), Hops: hops})
	})
	if err != nil || req.GetHops() > 0 {
		return pm, err
	}
	// The node the client asked waits, so that the client can use the
	// keyspace through any node as soon as this returns.
	s.adoptProto(pm)
	if err := s.waitUsable(ctx, ks.Name, pm.GetEpoch()); err != nil {
		return nil, err
	}
	return pm, nil
}

// GrantKeyspace adds an identity's permissions on a keyspace to those it
// has, or with revoke removes its grant. It returns once every node the
// failure detector does not hold down has adopted the new map, so that a
// revoke is in force on each of them when it returns. Whether the caller
// may change grants is the node's access check (internal/access), made
// before this is called.
func (s *Service) GrantKeyspace(ctx context.Context, req *api.GrantKeyspaceRequest) (*api.ClusterMap, error) {
	name, g := req.GetKeyspace(), wire.GrantFromProto(req.GetGrant())
	if g.Identity == "" {
		return nil, fmt.Errorf("%w: a grant names an identity (a client certificate's common name)", kverrors.ErrInvalidArgument)
	}
	if !req.GetRevoke() && !g.Read && !g.Write && !g.Admin {
		return nil, fmt.Errorf("%w: grant to %q on keyspace %q gives no permission (read, write or admin)", kverrors.ErrInvalidArgument, g.Identity, name)
	}
	pm, err := s.onLeader(ctx, req.GetHops(), func(cg *cp.Group) (*clusterMap, error) {
		return s.updateMap(ctx, cg, func(m *clusterMap) error {
			i := slices.IndexFunc(m.Keyspaces, func(k ring.KeyspaceConfig) bool { return k.Name == name })
			if i < 0 {
				return fmt.Errorf("%w: %q", kverrors.ErrUnknownKeyspace, name)
			}
			grants, changed := ring.ApplyGrant(m.Keyspaces[i].Grants, g, req.GetRevoke())
			if !changed {
				return errNoChange
			}
			if err := access.CheckManageable(name, grants, s.cfg.AdminIdentities); err != nil {
				return err
			}
			m.Keyspaces[i].Grants = grants
			return nil
		})
	}, func(ctx context.Context, c api.AdminClient, hops uint32) (*api.ClusterMap, error) {
		return c.GrantKeyspace(ctx, &api.GrantKeyspaceRequest{Keyspace: name, Grant: req.GetGrant(), Revoke: req.GetRevoke(), Hops: hops})
	})
	if err != nil || req.GetHops() > 0 {
		return pm, err
	}
	s.adoptProto(pm)
	if _, err := s.waitNodes(ctx, nodeIDs(wire.TopologyFromProto(pm).Nodes), pm.GetEpoch(), nil); err != nil {
		return nil, fmt.Errorf("the grants of keyspace %q are changed in the cluster map (epoch %d), but not every node has adopted it yet: %w", name, pm.GetEpoch(), err)
	}
	return pm, nil
}

// join registers this node through the addresses in cfg.Join, retrying
// until JoinTimeout. Every failed attempt is logged: a node that cannot
// join says so while it tries, not only when it gives up.
func (s *Service) join() error {
	start := time.Now()
	deadline := start.Add(s.cfg.JoinTimeout)
	self := &api.Node{Id: s.cfg.Self, Addr: s.cfg.Advertise(), Region: s.cfg.Region, Incarnation: s.cfg.Incarnation}
	var last error
	tries := 0
	for attempt := 0; time.Now().Before(deadline); attempt++ {
		wait := min(time.Duration(attempt+1)*200*time.Millisecond, 2*time.Second)
		for _, addr := range s.cfg.Join {
			tries++
			c, err := s.cfg.DialAddr(addr)
			if err != nil {
				last = err
				s.cfg.Log.Warn("join attempt failed", "attempt", tries, "via", addr, "err", err, "retry_in", wait, "gives_up_in", time.Until(deadline).Round(time.Millisecond))
				continue
			}
			// One attempt never runs past the join deadline.
			ctx, cancel := context.WithTimeout(context.Background(), min(5*time.Second, time.Until(deadline)))
			pm, err := api.NewAdminClient(c).Join(ctx, &api.JoinRequest{Node: self})
			cancel()
			if err != nil {
				last = fmt.Errorf("join via %s: %w", addr, kverrors.FromStatus(err))
				if errors.Is(last, kverrors.ErrInvalidArgument) {
					return last
				}
				s.cfg.Log.Warn("join attempt failed", "attempt", tries, "via", addr, "err", kverrors.FromStatus(err), "retry_in", wait, "gives_up_in", time.Until(deadline).Round(time.Millisecond))
				continue
			}
			s.adopt(mapFromProto(pm))
			s.cfg.Log.Info("joined the cluster", "via", addr, "epoch", pm.GetEpoch())
			return nil
		}
		select {
		case <-s.stop:
			return errors.New("node closed while joining")
		case <-time.After(min(wait, time.Until(deadline))):
		}
	}
	return fmt.Errorf("%w: could not join the cluster via %v within --join-timeout %s (%d attempts): %w", kverrors.ErrUnavailable, s.cfg.Join, s.cfg.JoinTimeout, tries, last)
}

// errNoChange aborts a map update that has nothing to change.
var errNoChange = errors.New("no change")
