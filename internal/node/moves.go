package node

import (
	"context"
	"fmt"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/internal/kverrors"
	"github.com/capkv/capkv/internal/meta"
	"github.com/capkv/capkv/internal/route"
	"github.com/capkv/capkv/replication"
	"github.com/capkv/capkv/ring"
)

// partitionRoute resolves a partition id to its placement and mode.
func (n *Node) partitionRoute(id string) (route.Route, error) {
	pid, err := ring.ParsePartitionID(id)
	if err != nil {
		return route.Route{}, err
	}
	p, err := n.r().PlacementOf(pid)
	if err != nil {
		return route.Route{}, err
	}
	return n.router.Placement(p, nil)
}

// MovePartition runs this node's part of a rebalancing move, for the
// metadata group's mover (internal/meta/rebalance.go).
func (n *Node) MovePartition(ctx context.Context, req *api.MovePartitionRequest) (*api.MovePartitionResponse, error) {
	rt, err := n.partitionRoute(req.GetPartition())
	if err != nil {
		return nil, err
	}
	if len(req.GetTo()) == 0 {
		return nil, fmt.Errorf("%w: move of %s names no target replicas", kverrors.ErrInvalidArgument, req.GetPartition())
	}
	res, err := rt.Rep.Move(ctx, rt.T, replication.Moving{To: req.GetTo(), Joining: req.GetJoining(),
		Applied: func(ctx context.Context, node string) (uint64, error) {
			st, err := n.partitionStatusOf(ctx, node, req.GetPartition())
			if err != nil {
				return 0, err
			}
			if !st.GetRunning() {
				return 0, fmt.Errorf("%w: %s runs no replica of %s yet", kverrors.ErrUnavailable, node, req.GetPartition())
			}
			return st.GetAppliedIndex(), nil
		}})
	if err != nil {
		return nil, err
	}
	return &api.MovePartitionResponse{NotLeader: res.NotLeader, Leader: res.Leader, Keys: uint64(res.Keys), Bytes: uint64(res.Bytes)}, nil
}

// PartitionStatus says how far this node's replica of a partition is.
func (n *Node) PartitionStatus(_ context.Context, req *api.PartitionStatusRequest) (*api.PartitionStatusResponse, error) {
	if req.GetPartition() == meta.GroupID {
		return n.meta.MetaStatus(), nil
	}
	rt, err := n.partitionRoute(req.GetPartition())
	if err != nil {
		return nil, err
	}
	st := rt.Rep.Status(rt.T)
	return &api.PartitionStatusResponse{Running: st.Running, AppliedIndex: st.AppliedIndex, Leader: st.Leader}, nil
}

func (n *Node) partitionStatusOf(ctx context.Context, node, partition string) (*api.PartitionStatusResponse, error) {
	if node == n.cfg.ID {
		return n.PartitionStatus(ctx, &api.PartitionStatusRequest{Partition: partition})
	}
	c, err := n.peer(node)
	if err != nil {
		return nil, err
	}
	st, err := api.NewAdminClient(c).PartitionStatus(ctx, &api.PartitionStatusRequest{Partition: partition})
	return st, kverrors.FromStatus(err)
}

// RemoveNode drains a node and takes it out of the map.
func (n *Node) RemoveNode(ctx context.Context, req *api.RemoveNodeRequest) (*api.ClusterMap, error) {
	return n.meta.RemoveNode(ctx, req)
}

// RebalanceStatus lists the moves of the current or last rebalancing.
func (n *Node) RebalanceStatus(ctx context.Context, req *api.RebalanceStatusRequest) (*api.RebalanceStatusResponse, error) {
	return n.meta.RebalanceStatus(ctx, req)
}
