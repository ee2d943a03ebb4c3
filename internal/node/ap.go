package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/internal/kverrors"
	"github.com/capkv/capkv/replication/ap"
	"github.com/capkv/capkv/ring"
)

// apPeers reaches other nodes' Replica service through the peer pool.
type apPeers struct{ n *Node }

func (p apPeers) client(id string) (api.ReplicaClient, error) {
	if err := p.n.down(id); err != nil {
		return nil, err // do not wait on it: the coordinator turns to a fallback
	}
	c, err := p.n.peer(id)
	if err != nil {
		return nil, err
	}
	return api.NewReplicaClient(c), nil
}

func (p apPeers) Store(ctx context.Context, node string, req *api.ReplicaStoreRequest) (*api.ReplicaStoreResponse, error) {
	c, err := p.client(node)
	if err != nil {
		return nil, err
	}
	resp, err := c.Store(ctx, req)
	return resp, kverrors.FromStatus(err)
}

func (p apPeers) Fetch(ctx context.Context, node string, req *api.ReplicaFetchRequest) (*api.ReplicaFetchResponse, error) {
	c, err := p.client(node)
	if err != nil {
		return nil, err
	}
	resp, err := c.Fetch(ctx, req)
	return resp, kverrors.FromStatus(err)
}

// replicaServer is the Replica gRPC service: what coordinators call.
type replicaServer struct {
	n *Node
	api.UnimplementedReplicaServer
}

func (s replicaServer) Store(_ context.Context, req *api.ReplicaStoreRequest) (*api.ReplicaStoreResponse, error) {
	d, err := consistency.DecodeDVV(req.GetClock())
	if err != nil {
		return nil, fmt.Errorf("%w: %v", kverrors.ErrInvalidArgument, err)
	}
	for _, sib := range d.Values() {
		s.n.clock.Update(sib.Timestamp) // later local writes order after what we received
	}
	if req.GetHintFor() != "" {
		if err := s.n.hints.Add(req.GetHintFor(), req.GetPartition(), req.GetKey(), d, req.GetLww()); err != nil {
			return nil, err
		}
		return &api.ReplicaStoreResponse{}, nil
	}
	merged, err := s.n.clocks.Merge(req.GetPartition(), req.GetKey(), d, req.GetLww())
	if err != nil {
		return nil, err
	}
	return &api.ReplicaStoreResponse{Clock: merged.Encode(nil)}, nil
}

func (s replicaServer) Fetch(_ context.Context, req *api.ReplicaFetchRequest) (*api.ReplicaFetchResponse, error) {
	d, found, err := s.n.clocks.Read(req.GetPartition(), req.GetKey())
	if err != nil {
		return nil, err
	}
	return &api.ReplicaFetchResponse{Clock: d.Encode(nil), Found: found}, nil
}

// handoffLoop hands hints to their targets once a second until Close.
func (n *Node) handoffLoop() {
	defer n.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	peers := apPeers{n}
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		k, err := n.hints.Handoff(ctx, func(ctx context.Context, h ap.Hint) error {
			_, err := peers.Store(ctx, h.Target, &api.ReplicaStoreRequest{Partition: h.Partition, Key: h.Key, Clock: h.Clock.Encode(nil),
				Lww: n.isLWW(h.Partition)})
			return err
		})
		cancel()
		if err != nil {
			n.log.Warn("hinted handoff", "err", err)
		} else if k > 0 {
			n.log.Info("hinted handoff", "delivered", k)
		}
	}
}

func (n *Node) isLWW(partition string) bool {
	pid, err := ring.ParsePartitionID(partition)
	if err != nil {
		return false
	}
	ks, ok := n.r().Keyspace(pid.Keyspace)
	return ok && ks.Resolve == ring.ResolveLWW
}

// fallbacks lists the eligible nodes outside the preference list, in an
// order spread by partition, for sloppy-quorum hints.
func (n *Node) fallbacks(p ring.Placement) []string {
	var out []string
	for _, nd := range n.r().Topology().Nodes {
		if slices.Contains(p.Replicas, nd.ID) {
			continue
		}
		if p.Partition.Region != "" && nd.Region != p.Partition.Region {
			continue
		}
		out = append(out, nd.ID)
	}
	pid := p.Partition.String()
	slices.SortFunc(out, func(a, b string) int {
		ha, hb := xxhash.Sum64String(pid+a), xxhash.Sum64String(pid+b)
		switch {
		case ha < hb:
			return -1
		case ha > hb:
			return 1
		}
		return 0
	})
	// Nodes the failure detector holds down go last: a hint is only useful
	// on a node that takes it now.
	slices.SortStableFunc(out, func(a, b string) int { return cmpBool(n.fd.Down(a), n.fd.Down(b)) })
	return out
}

// cmpBool orders false before true.
func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

// apServe runs local on this node if it is a replica of the key's partition,
// else forwards to the first replica that answers.
func (n *Node) apServe(ctx context.Context, rt route, h *api.RequestHeader, local func() error,
	forward func(ctx context.Context, c api.KVClient, h *api.RequestHeader) error) error {
	if slices.Contains(rt.p.Replicas, n.cfg.ID) {
		return local()
	}
	var errs []error
	maybe := false // some attempt may have reached a replica and been applied
	// Replicas the failure detector holds down are tried last (they fail at
	// once, without a network round trip), so the live ones share the time.
	replicas := slices.Clone(rt.p.Replicas)
	slices.SortStableFunc(replicas, func(a, b string) int { return cmpBool(n.fd.Down(a), n.fd.Down(b)) })
	live := len(n.upReplicas(replicas))
	for i, r := range replicas {
		// A replica cut off by a partition may swallow the request until the
		// deadline: give each live try a share of the time left, so the next
		// replica is still tried (ap promises service while any answers).
		// Down replicas come last and fail at once without a share.
		actx, cancel := ctx, context.CancelFunc(func() {})
		if dl, ok := ctx.Deadline(); ok && i < live-1 {
			actx, cancel = context.WithTimeout(ctx, max(time.Until(dl)/time.Duration(live-i), 100*time.Millisecond))
		}
		err := n.forwardTo(actx, r, h, forward)
		timedOut := actx.Err() != nil && ctx.Err() == nil
		cancel()
		if err == nil {
			return nil
		}
		if !errors.Is(err, kverrors.ErrUnavailable) && !timedOut {
			return err
		}
		maybe = maybe || timedOut || errors.Is(err, kverrors.ErrIndeterminate)
		errs = append(errs, err)
	}
	if maybe {
		// A replica may have applied it before its answer was lost: not a
		// definite failure (kvjepsen's set checker caught this).
		return fmt.Errorf("%w: no replica of %s answered %s in time; one may have applied the request: %w",
			kverrors.ErrIndeterminate, rt.p.Partition, n.cfg.ID, errors.Join(errs...))
	}
	return fmt.Errorf("%w: no replica of %s is reachable from %s: %w", kverrors.ErrUnavailable, rt.p.Partition, n.cfg.ID, errors.Join(errs...))
}

func (n *Node) apReceipt(rt route, acked, hinted []string, sloppy bool, siblings int) *api.Receipt {
	r := n.receipt(rt)
	r.AckedBy = append(append([]string(nil), acked...), hinted...)
	r.Hinted = len(hinted) > 0
	r.SloppyQuorum = sloppy
	r.Siblings = uint32(siblings)
	r.MajorityReachable = len(acked) > len(rt.p.Replicas)/2
	return r
}

func (n *Node) apGet(ctx context.Context, rt route, req *api.GetRequest) (*api.GetResponse, error) {
	var resp *api.GetResponse
	err := n.apServe(ctx, rt, req.GetHeader(), func() error {
		lww := rt.p.Keyspace.Resolve == ring.ResolveLWW
		res, err := n.apc.Read(ctx, ap.ReadRequest{Partition: rt.p.Partition.String(), Key: req.GetKey(), Replicas: rt.p.Replicas, Level: rt.level, LWW: lww})
		if err != nil {
			return err
		}
		v := ap.Resolve(res.Clock, lww)
		if !v.Found {
			return fmt.Errorf("%w: key %q", kverrors.ErrNotFound, req.GetKey())
		}
		resp = &api.GetResponse{
			Kv:                  &api.KeyValue{Key: req.GetKey(), Value: v.Newest.Data, Timestamp: uint64(v.Newest.Timestamp), Version: v.Newest.Dot.Counter},
			Context:             v.Context.Encode(nil),
			DeletedConcurrently: v.Deleted,
			Receipt:             n.apReceipt(rt, res.Acked, nil, false, len(v.Live)),
		}
		for _, s := range v.Live {
			resp.Siblings = append(resp.Siblings, &api.Sibling{Value: s.Data, Timestamp: uint64(s.Timestamp), Dot: s.Dot.String()})
		}
		return nil
	}, func(ctx context.Context, c api.KVClient, h *api.RequestHeader) error {
		r, err := c.Get(ctx, &api.GetRequest{Header: h, Key: req.GetKey()})
		resp = r
		return err
	})
	if err != nil {
		return nil, err
	}
	n.forwarded(resp.GetReceipt())
	return resp, nil
}

// apWrite coordinates a put or delete of an ap key.
func (n *Node) apWrite(ctx context.Context, rt route, h *api.RequestHeader, key string, rawCtx []byte, v consistency.Value,
	forward func(ctx context.Context, c api.KVClient, h *api.RequestHeader) error) (ap.WriteResult, *api.Receipt, bool, error) {
	var causal consistency.VV
	if len(rawCtx) > 0 {
		var err error
		if causal, err = consistency.DecodeVV(rawCtx); err != nil {
			return ap.WriteResult{}, nil, false, fmt.Errorf("%w: causal context: %v", kverrors.ErrInvalidArgument, err)
		}
	}
	var res ap.WriteResult
	var rc *api.Receipt
	local := false
	err := n.apServe(ctx, rt, h, func() error {
		local = true
		v.Timestamp = n.clock.Now()
		var err error
		res, err = n.apc.Write(ctx, ap.WriteRequest{Partition: rt.p.Partition.String(), Key: key, Replicas: rt.p.Replicas,
			Fallbacks: n.fallbacks(rt.p), Level: rt.level, LWW: rt.p.Keyspace.Resolve == ring.ResolveLWW, Context: causal, Value: v})
		if err != nil {
			return err
		}
		rc = n.apReceipt(rt, res.Acked, res.Hinted, res.Sloppy, len(res.Clock.Live()))
		return nil
	}, forward)
	return res, rc, local, err
}

func (p apPeers) Digest(ctx context.Context, node, partition string) ([]uint64, error) {
	c, err := p.client(node)
	if err != nil {
		return nil, err
	}
	resp, err := c.Digest(ctx, &api.DigestRequest{Partition: partition})
	if err != nil {
		return nil, kverrors.FromStatus(err)
	}
	if len(resp.GetLeaves()) != ap.Leaves {
		return nil, fmt.Errorf("%w: %s sent %d leaves, want %d", kverrors.ErrInternal, node, len(resp.GetLeaves()), ap.Leaves)
	}
	return resp.GetLeaves(), nil
}

func (p apPeers) Leaf(ctx context.Context, node, partition string, leaf uint32) (map[string][]byte, error) {
	c, err := p.client(node)
	if err != nil {
		return nil, err
	}
	resp, err := c.Leaf(ctx, &api.LeafRequest{Partition: partition, Leaf: leaf})
	if err != nil {
		return nil, kverrors.FromStatus(err)
	}
	out := make(map[string][]byte, len(resp.GetEntries()))
	for _, e := range resp.GetEntries() {
		out[e.GetKey()] = e.GetClock()
	}
	return out, nil
}

func (p apPeers) Purge(ctx context.Context, node, partition, key string, clock []byte) (bool, error) {
	c, err := p.client(node)
	if err != nil {
		return false, err
	}
	resp, err := c.Purge(ctx, &api.PurgeRequest{Partition: partition, Key: key, Clock: clock})
	if err != nil {
		return false, kverrors.FromStatus(err)
	}
	return resp.GetPurged(), nil
}

func (s replicaServer) Purge(_ context.Context, req *api.PurgeRequest) (*api.PurgeResponse, error) {
	ok, err := s.n.clocks.Purge(req.GetPartition(), req.GetKey(), req.GetClock())
	if err != nil {
		return nil, err
	}
	return &api.PurgeResponse{Purged: ok}, nil
}

func (s replicaServer) Digest(_ context.Context, req *api.DigestRequest) (*api.DigestResponse, error) {
	leaves, err := s.n.clocks.Digest(req.GetPartition())
	if err != nil {
		return nil, err
	}
	return &api.DigestResponse{Leaves: leaves}, nil
}

func (s replicaServer) Leaf(_ context.Context, req *api.LeafRequest) (*api.LeafResponse, error) {
	if req.GetLeaf() >= ap.Leaves {
		return nil, fmt.Errorf("%w: leaf %d of %d", kverrors.ErrInvalidArgument, req.GetLeaf(), ap.Leaves)
	}
	m, err := s.n.clocks.LeafEntries(req.GetPartition(), req.GetLeaf())
	if err != nil {
		return nil, err
	}
	resp := &api.LeafResponse{}
	for k, v := range m {
		resp.Entries = append(resp.Entries, &api.KeyClock{Key: k, Clock: v})
	}
	return resp, nil
}

// antiEntropyLoop repairs, every AntiEntropyInterval, the ap partitions whose
// preference list starts with this node (one repairer per partition).
func (n *Node) antiEntropyLoop() {
	defer n.wg.Done()
	if n.cfg.AntiEntropyInterval <= 0 {
		return
	}
	t := time.NewTicker(n.cfg.AntiEntropyInterval)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		if n.ready() != nil {
			continue
		}
		for _, ks := range n.r().Keyspaces() {
			if ks.Mode != consistency.AP {
				continue
			}
			for _, p := range n.r().Partitions(ks.Name) {
				if p.Err != "" || p.Replicas[0] != n.cfg.ID {
					continue
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				st, err := n.apc.Repair(ctx, apPeers{n}, p.ID.String(), p.Replicas, ks.Resolve == ring.ResolveLWW)
				cancel()
				if err != nil {
					n.log.Debug("anti-entropy", "partition", p.ID.String(), "err", err)
				} else if st.Pulled+st.Pushed+st.Purged > 0 {
					n.log.Info("anti-entropy", "partition", p.ID.String(), "leaves", st.LeavesDiffering, "pulled", st.Pulled, "pushed", st.Pushed, "purged", st.Purged)
				}
			}
		}
	}
}

// Repair runs anti-entropy now for the partitions of an ap keyspace: here for
// those this node replicates, through a replica for the others.
func (n *Node) Repair(ctx context.Context, req *api.RepairRequest) (*api.RepairResponse, error) {
	if err := n.ready(); err != nil {
		return nil, err
	}
	ks, ok := n.r().Keyspace(req.GetKeyspace())
	if !ok {
		return nil, fmt.Errorf("%w: %q", kverrors.ErrUnknownKeyspace, req.GetKeyspace())
	}
	if ks.Mode != consistency.AP {
		return nil, fmt.Errorf("%w: %q is a cp keyspace: Raft keeps its replicas identical, there is nothing to repair", kverrors.ErrWrongMode, ks.Name)
	}
	start := time.Now()
	out := &api.RepairResponse{}
	for _, p := range n.r().Partitions(ks.Name) {
		if p.Err != "" || (req.GetPartition() != "" && p.ID.String() != req.GetPartition()) {
			continue
		}
		if slices.Contains(p.Replicas, n.cfg.ID) {
			st, err := n.apc.Repair(ctx, apPeers{n}, p.ID.String(), p.Replicas, ks.Resolve == ring.ResolveLWW)
			if err != nil {
				return nil, fmt.Errorf("repair %s: %w", p.ID, err)
			}
			out.Partitions++
			out.LeavesDiffering += uint32(st.LeavesDiffering)
			out.KeysPulled += uint32(st.Pulled)
			out.KeysPushed += uint32(st.Pushed)
			out.TombstonesPurged += uint32(st.Purged)
			continue
		}
		if req.GetHops() > 0 {
			return nil, fmt.Errorf("%w: %s holds no replica of %s", kverrors.ErrStaleEpoch, n.cfg.ID, p.ID)
		}
		var last error
		for _, r := range p.Replicas {
			if err := n.down(r); err != nil {
				last = err
				continue
			}
			c, err := n.peer(r)
			if err != nil {
				last = err
				continue
			}
			resp, err := api.NewAdminClient(c).Repair(ctx, &api.RepairRequest{Keyspace: ks.Name, Partition: p.ID.String(), Hops: 1})
			if err != nil {
				last = kverrors.FromStatus(err)
				continue
			}
			out.Partitions += resp.GetPartitions()
			out.LeavesDiffering += resp.GetLeavesDiffering()
			out.KeysPulled += resp.GetKeysPulled()
			out.KeysPushed += resp.GetKeysPushed()
			out.TombstonesPurged += resp.GetTombstonesPurged()
			last = nil
			break
		}
		if last != nil {
			return nil, fmt.Errorf("repair %s: no replica reachable: %w", p.ID, last)
		}
	}
	out.Millis = time.Since(start).Milliseconds()
	return out, nil
}
