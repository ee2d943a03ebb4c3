package node

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/internal/kverrors"
	"github.com/capkv/capkv/ring"
)

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
		LsmBytes: lsm, VlogBytes: vlog, Version: Version, AdoptedEpoch: n.meta.AdoptedEpoch(),
	}, nil
}

// ClusterStatus asks every node for its info and reports which answered.
func (n *Node) ClusterStatus(ctx context.Context, req *api.ClusterStatusRequest) (*api.ClusterStatusResponse, error) {
	return n.meta.ClusterStatus(ctx, req)
}

// GetClusterMap returns the map clients build their ring from.
func (n *Node) GetClusterMap(ctx context.Context, req *api.ClusterMapRequest) (*api.ClusterMap, error) {
	return n.meta.GetClusterMap(ctx, req)
}

// Keyspaces lists the keyspaces.
func (n *Node) Keyspaces(ctx context.Context, req *api.KeyspacesRequest) (*api.KeyspacesResponse, error) {
	return n.meta.Keyspaces(ctx, req)
}

// Locate explains where a key lives.
func (n *Node) Locate(ctx context.Context, req *api.LocateRequest) (*api.LocateResponse, error) {
	if len(req.GetKey()) > n.cfg.MaxKeySize {
		return nil, fmt.Errorf("%w: key is %d bytes, limit is %d", kverrors.ErrTooLarge, len(req.GetKey()), n.cfg.MaxKeySize)
	}
	return n.meta.Locate(ctx, req)
}

// Ring lists the partitions of one or every keyspace with their preference lists.
func (n *Node) Ring(ctx context.Context, req *api.RingRequest) (*api.RingResponse, error) {
	return n.meta.RingInfo(ctx, req)
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

// CreateKeyspace adds a keyspace to the cluster map (on the metadata leader)
// and returns once it is usable.
func (n *Node) CreateKeyspace(ctx context.Context, req *api.CreateKeyspaceRequest) (*api.ClusterMap, error) {
	return n.meta.CreateKeyspace(ctx, req)
}

// DropKeyspace removes a keyspace from the cluster map (on the metadata
// leader) and returns once every reachable node has deleted its data.
func (n *Node) DropKeyspace(ctx context.Context, req *api.DropKeyspaceRequest) (*api.ClusterMap, error) {
	return n.meta.DropKeyspace(ctx, req)
}

// GrantKeyspace changes a keyspace's grants (on the metadata leader) and
// returns once every reachable node has adopted them.
func (n *Node) GrantKeyspace(ctx context.Context, req *api.GrantKeyspaceRequest) (*api.ClusterMap, error) {
	return n.meta.GrantKeyspace(ctx, req)
}

// TraceSpans returns the spans of one trace in this node's span buffer.
func (n *Node) TraceSpans(_ context.Context, req *api.TraceSpansRequest) (*api.TraceSpansResponse, error) {
	id := strings.ToLower(req.GetTraceId())
	if len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" {
		return nil, fmt.Errorf("%w: trace ID %q: want 32 hex digits", kverrors.ErrInvalidArgument, req.GetTraceId())
	}
	resp := &api.TraceSpansResponse{}
	for _, s := range n.tracing.Buffer().TraceOrNil(id) {
		resp.Spans = append(resp.Spans, &api.TraceSpan{TraceId: s.TraceID, SpanId: s.SpanID, ParentId: s.ParentID, Name: s.Name,
			Node: s.Node, Kind: s.Kind, StartUnixNano: s.Start.UnixNano(), EndUnixNano: s.End.UnixNano(), Attrs: s.Attrs, Error: s.Error})
	}
	return resp, nil
}
