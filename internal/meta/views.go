package meta

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/internal/kverrors"
	"github.com/capkv/capkv/internal/wire"
)

// The cluster map's read side of the Admin service: every node answers from
// the map it follows.

// Ready fails until this node has a cluster map.
func (s *Service) Ready() error {
	if s.Ring().Epoch() == 0 {
		return fmt.Errorf("%w: node %s has no cluster map yet (joining, or the metadata group has no leader)", kverrors.ErrUnavailable, s.cfg.Self)
	}
	return nil
}

// leader is the leader of cp partition id as this node sees it ("" if it
// holds no replica or knows no leader).
func (s *Service) leader(id string) string {
	if g, ok := s.cfg.Host.Group(id); ok {
		return g.Leader()
	}
	return ""
}

// GetClusterMap returns the map clients build their ring from.
// With fresh set it reads the map through the metadata leader first.
func (s *Service) GetClusterMap(ctx context.Context, req *api.ClusterMapRequest) (*api.ClusterMap, error) {
	if req.GetFresh() {
		pm, err := s.freshMap(ctx, req.GetHops())
		if err != nil {
			return nil, err
		}
		s.adoptProto(pm)
		return pm, nil
	}
	if err := s.Ready(); err != nil {
		return nil, err
	}
	return s.Proto(), nil
}

// Keyspaces lists the keyspaces.
func (s *Service) Keyspaces(context.Context, *api.KeyspacesRequest) (*api.KeyspacesResponse, error) {
	if err := s.Ready(); err != nil {
		return nil, err
	}
	resp := &api.KeyspacesResponse{}
	for _, ks := range s.Ring().Keyspaces() {
		resp.Keyspaces = append(resp.Keyspaces, wire.KeyspaceToProto(ks))
	}
	return resp, nil
}

// Locate explains where a key lives.
func (s *Service) Locate(ctx context.Context, req *api.LocateRequest) (*api.LocateResponse, error) {
	if err := s.Ready(); err != nil {
		return nil, err
	}
	p, err := s.Ring().Locate(req.GetKey())
	if errors.Is(err, kverrors.ErrUnknownKeyspace) && s.Refresh(ctx) == nil {
		p, err = s.Ring().Locate(req.GetKey()) // created since this node's last poll?
	}
	if err != nil {
		return nil, err
	}
	owner, _ := s.Ring().Node(p.Replicas[0])
	return &api.LocateResponse{
		Keyspace: p.Keyspace.Name, Mode: string(p.Keyspace.Mode), Partition: p.Partition.String(),
		Region: p.Partition.Region, Replicas: append([]string(nil), p.Replicas...),
		Owner: owner.ID, OwnerAddr: owner.Addr, Epoch: s.Ring().Epoch(), Leader: s.leader(p.Partition.String()),
	}, nil
}

// RingInfo lists the partitions of one or every keyspace with their preference lists.
func (s *Service) RingInfo(_ context.Context, req *api.RingRequest) (*api.RingResponse, error) {
	if err := s.Ready(); err != nil {
		return nil, err
	}
	resp := &api.RingResponse{Epoch: s.Ring().Epoch(), Vnodes: uint32(s.cfg.VNodes)}
	names := []string{req.GetKeyspace()}
	if req.GetKeyspace() == "" {
		names = names[:0]
		for _, ks := range s.Ring().Keyspaces() {
			names = append(names, ks.Name)
		}
	} else if _, ok := s.Ring().Keyspace(req.GetKeyspace()); !ok {
		return nil, fmt.Errorf("%w: %q", kverrors.ErrUnknownKeyspace, req.GetKeyspace())
	}
	for _, name := range names {
		for _, p := range s.Ring().Partitions(name) {
			resp.Partitions = append(resp.Partitions, &api.PartitionPlacement{Id: p.ID.String(), Replicas: p.Replicas, Error: p.Err, Leader: s.leader(p.ID.String())})
		}
	}
	return resp, nil
}

// ClusterStatus asks every node for its info (bounded by a short timeout)
// and reports which ones answered.
func (s *Service) ClusterStatus(ctx context.Context, _ *api.ClusterStatusRequest) (*api.ClusterStatusResponse, error) {
	topo := s.Ring().Topology()
	primaries := map[string]uint32{}
	replicas := map[string]uint32{}
	for _, ks := range s.Ring().Keyspaces() {
		for _, p := range s.Ring().Partitions(ks.Name) {
			for i, id := range p.Replicas {
				if i == 0 {
					primaries[id]++
				}
				replicas[id]++
			}
		}
	}
	resp := &api.ClusterStatusResponse{Epoch: s.Ring().Epoch(), AnsweredBy: s.cfg.Self}
	resp.Nodes = make([]*api.NodeStatus, len(topo.Nodes))
	var wg sync.WaitGroup
	for i, nd := range topo.Nodes {
		st := &api.NodeStatus{Node: wire.NodeToProto(nd), Primaries: primaries[nd.ID], Replicas: replicas[nd.ID]}
		resp.Nodes[i] = st
		if err := s.cfg.Unreachable(nd.ID); err != nil {
			st.State, st.Error = "down", err.Error()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			info, err := s.peerInfo(ctx, nd.ID)
			if err != nil {
				st.State, st.Error = "down", err.Error()
				return
			}
			st.State, st.Info = "up", info
		}()
	}
	wg.Wait()
	for _, ks := range s.Ring().Keyspaces() {
		resp.Keyspaces = append(resp.Keyspaces, wire.KeyspaceToProto(ks))
	}
	return resp, nil
}

func (s *Service) peerInfo(ctx context.Context, id string) (*api.NodeInfo, error) {
	if id == s.cfg.Self {
		return s.cfg.Info()
	}
	c, err := s.cfg.Peer(id)
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
