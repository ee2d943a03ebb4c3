package node

import (
	"errors"
	"fmt"
	"slices"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/internal/kverrors"
	"github.com/capkv/capkv/internal/watch"
	"github.com/capkv/capkv/ring"
)

// Watch streams what this node's replica of one partition applies, for keys
// with the request's prefix (see api.WatchRequest). The first message names
// the serving node and carries no events: once it arrives, every later
// change is delivered.
func (n *Node) Watch(req *api.WatchRequest, stream api.KV_WatchServer) error {
	return kverrors.ToStatus(n.watchPartition(req, stream))
}

func (n *Node) watchPartition(req *api.WatchRequest, stream api.KV_WatchServer) error {
	ks, err := n.router.Keyspace(stream.Context(), req.GetPrefix())
	if err != nil {
		return err
	}
	if req.GetPartition() == "" {
		return fmt.Errorf("%w: watch names one partition of keyspace %q (kvctl watch and the Go client open one stream per partition)", kverrors.ErrInvalidArgument, ks.Name)
	}
	parts := n.r().Partitions(ks.Name)
	i := slices.IndexFunc(parts, func(p ring.PartitionInfo) bool { return p.ID.String() == req.GetPartition() })
	if i < 0 {
		return fmt.Errorf("%w: partition %q is not in keyspace %q of %s's map", kverrors.ErrStaleEpoch, req.GetPartition(), ks.Name, n.cfg.ID)
	}
	p := parts[i]
	if !slices.Contains(p.Replicas, n.cfg.ID) {
		return fmt.Errorf("%w: %s holds no replica of %s; its replicas are %v", kverrors.ErrStaleEpoch, n.cfg.ID, req.GetPartition(), p.Replicas)
	}
	rt, err := n.router.Placement(ring.Placement{Keyspace: ks, Partition: p.ID, Replicas: p.Replicas}, nil)
	if err != nil {
		return err
	}
	sub, err := rt.Rep.Watch(rt.T, req.GetPrefix())
	if err != nil {
		return fmt.Errorf("%w: %v", kverrors.ErrUnavailable, err)
	}
	defer sub.Close()
	if err := stream.Send(&api.WatchResponse{ServedBy: n.cfg.ID}); err != nil {
		return err
	}
	ctx := stream.Context()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-sub.Done():
			if errors.Is(sub.Err(), watch.ErrSlow) {
				return fmt.Errorf("%w: partition %s on %s: %v", kverrors.ErrUnavailable, req.GetPartition(), n.cfg.ID, sub.Err())
			}
			return fmt.Errorf("%w: %v", kverrors.ErrUnavailable, sub.Err())
		case batch := <-sub.Events():
			resp := &api.WatchResponse{ServedBy: n.cfg.ID, Events: make([]*api.WatchEvent, len(batch))}
			for i, e := range batch {
				ev := &api.WatchEvent{Key: e.Key, Value: e.Value, Revision: e.Revision, Timestamp: e.Timestamp,
					Partition: req.GetPartition(), Siblings: uint32(e.Siblings)}
				if e.Deleted {
					ev.Kind = api.WatchEvent_DELETE
				}
				resp.Events[i] = ev
			}
			if err := stream.Send(resp); err != nil {
				return err
			}
		}
	}
}
