package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/internal/kverrors"
	"github.com/capkv/capkv/internal/wire"
	"github.com/capkv/capkv/ring"
)

// GetClusterMap returns the map clients build their ring from.
func (n *Node) GetClusterMap(context.Context, *api.ClusterMapRequest) (*api.ClusterMap, error) {
	if err := n.ready(); err != nil {
		return nil, err
	}
	return n.meta.Proto(), nil
}

// GetNodeInfo describes this node.
func (n *Node) GetNodeInfo(context.Context, *api.NodeInfoRequest) (*api.NodeInfo, error) {
	if err := n.ready(); err != nil {
		return nil, err
	}
	return n.info()
}

func (n *Node) info() (*api.NodeInfo, error) {
	parts, err := n.store.Partitions()
	if err != nil {
		return nil, err
	}
	lsm, vlog := n.store.Size()
	self, _ := n.r().Node(n.cfg.ID)
	return &api.NodeInfo{
		Id: n.cfg.ID, Addr: self.Addr, Region: n.cfg.Region, Epoch: n.r().Epoch(),
		UptimeMs: time.Since(n.started).Milliseconds(), Partitions: uint32(len(parts)),
		LsmBytes: lsm, VlogBytes: vlog, Version: Version,
	}, nil
}

// ClusterStatus asks every node for its info (bounded by a short timeout)
// and reports which ones answered.
func (n *Node) ClusterStatus(ctx context.Context, _ *api.ClusterStatusRequest) (*api.ClusterStatusResponse, error) {
	topo := n.r().Topology()
	primaries := map[string]uint32{}
	replicas := map[string]uint32{}
	for _, ks := range n.r().Keyspaces() {
		for _, p := range n.r().Partitions(ks.Name) {
			for i, id := range p.Replicas {
				if i == 0 {
					primaries[id]++
				}
				replicas[id]++
			}
		}
	}
	resp := &api.ClusterStatusResponse{Epoch: n.r().Epoch(), AnsweredBy: n.cfg.ID}
	resp.Nodes = make([]*api.NodeStatus, len(topo.Nodes))
	var wg sync.WaitGroup
	for i, nd := range topo.Nodes {
		st := &api.NodeStatus{Node: wire.NodeToProto(nd), Primaries: primaries[nd.ID], Replicas: replicas[nd.ID]}
		resp.Nodes[i] = st
		if err := n.down(nd.ID); err != nil {
			st.State, st.Error = "down", err.Error()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			info, err := n.peerInfo(ctx, nd.ID)
			if err != nil {
				st.State, st.Error = "down", err.Error()
				return
			}
			st.State, st.Info = "up", info
		}()
	}
	wg.Wait()
	for _, ks := range n.r().Keyspaces() {
		resp.Keyspaces = append(resp.Keyspaces, wire.KeyspaceToProto(ks))
	}
	return resp, nil
}

func (n *Node) peerInfo(ctx context.Context, id string) (*api.NodeInfo, error) {
	if id == n.cfg.ID {
		return n.info()
	}
	c, err := n.peer(id)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	info, err := api.NewAdminClient(c).GetNodeInfo(ctx, &api.NodeInfoRequest{})
	if err != nil {
		return nil, kverrors.FromStatus(err)
	}
	return info, nil
}

// Keyspaces lists the keyspaces.
func (n *Node) Keyspaces(context.Context, *api.KeyspacesRequest) (*api.KeyspacesResponse, error) {
	if err := n.ready(); err != nil {
		return nil, err
	}
	resp := &api.KeyspacesResponse{}
	for _, ks := range n.r().Keyspaces() {
		resp.Keyspaces = append(resp.Keyspaces, wire.KeyspaceToProto(ks))
	}
	return resp, nil
}

// Locate explains where a key lives.
func (n *Node) Locate(_ context.Context, req *api.LocateRequest) (*api.LocateResponse, error) {
	if err := n.ready(); err != nil {
		return nil, err
	}
	if len(req.GetKey()) > n.cfg.MaxKeySize {
		return nil, fmt.Errorf("%w: key is %d bytes, limit is %d", kverrors.ErrTooLarge, len(req.GetKey()), n.cfg.MaxKeySize)
	}
	p, err := n.r().Locate(req.GetKey())
	if err != nil {
		return nil, err
	}
	owner, _ := n.r().Node(p.Replicas[0])
	return &api.LocateResponse{
		Keyspace: p.Keyspace.Name, Mode: string(p.Keyspace.Mode), Partition: p.Partition.String(),
		Region: p.Partition.Region, Replicas: append([]string(nil), p.Replicas...),
		Owner: owner.ID, OwnerAddr: owner.Addr, Epoch: n.r().Epoch(), Leader: n.Leader(p.Partition.String()),
	}, nil
}

// Ring lists the partitions of one or every keyspace with their preference lists.
func (n *Node) Ring(_ context.Context, req *api.RingRequest) (*api.RingResponse, error) {
	if err := n.ready(); err != nil {
		return nil, err
	}
	resp := &api.RingResponse{Epoch: n.r().Epoch(), Vnodes: uint32(n.cfg.VNodes)}
	names := []string{req.GetKeyspace()}
	if req.GetKeyspace() == "" {
		names = names[:0]
		for _, ks := range n.r().Keyspaces() {
			names = append(names, ks.Name)
		}
	} else if _, ok := n.r().Keyspace(req.GetKeyspace()); !ok {
		return nil, fmt.Errorf("%w: %q", kverrors.ErrUnknownKeyspace, req.GetKeyspace())
	}
	for _, name := range names {
		for _, p := range n.r().Partitions(name) {
			resp.Partitions = append(resp.Partitions, &api.PartitionPlacement{Id: p.ID.String(), Replicas: p.Replicas, Error: p.Err})
		}
	}
	return resp, nil
}

// Repair runs anti-entropy now for the partitions of a keyspace: here for
// those this node replicates, through a replica for the others.
func (n *Node) Repair(ctx context.Context, req *api.RepairRequest) (*api.RepairResponse, error) {
	if err := n.ready(); err != nil {
		return nil, err
	}
	ks, ok := n.r().Keyspace(req.GetKeyspace())
	if !ok {
		return nil, fmt.Errorf("%w: %q", kverrors.ErrUnknownKeyspace, req.GetKeyspace())
	}
	start := time.Now()
	out := &api.RepairResponse{}
	for _, p := range n.r().Partitions(ks.Name) {
		if p.Err != "" || (req.GetPartition() != "" && p.ID.String() != req.GetPartition()) {
			continue
		}
		rt, err := n.router.Placement(ring.Placement{Keyspace: ks, Partition: p.ID, Replicas: p.Replicas}, nil)
		if err != nil {
			return nil, err
		}
		if rt.Rep.Serves(rt.T) {
			st, err := rt.Rep.Repair(ctx, rt.T)
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
				if errors.Is(last, kverrors.ErrWrongMode) {
					return nil, last // the mode has no repair: every replica says so
				}
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

// Join registers a node or updates its address and region (on the metadata leader).
func (n *Node) Join(ctx context.Context, req *api.JoinRequest) (*api.ClusterMap, error) {
	return n.meta.Join(ctx, req)
}

// CreateKeyspace adds a keyspace to the cluster map (on the metadata leader).
func (n *Node) CreateKeyspace(ctx context.Context, req *api.CreateKeyspaceRequest) (*api.ClusterMap, error) {
	return n.meta.CreateKeyspace(ctx, req)
}
