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
	if err := n.ready(); err != nil {
		return err
	}
	ksName, err := ring.SplitKeyspace(req.GetPrefix())
	if err != nil {
		return err
	}
	if _, ok := n.r().Keyspace(ksName); !ok {
		return fmt.Errorf("%w: %q", kverrors.ErrUnknownKeyspace, ksName)
	}
	if req.GetPartition() == "" {
		return fmt.Errorf("%w: watch names one partition of keyspace %q (kvctl watch and the Go client open one stream per partition)", kverrors.ErrInvalidArgument, ksName)
	}
	var replicas []string
	found := false
	for _, p := range n.r().Partitions(ksName) {
		if p.ID.String() == req.GetPartition() {
			replicas, found = p.Replicas, true
		}
	}
	if !found {
		return fmt.Errorf("%w: partition %q is not in keyspace %q of %s's map", kverrors.ErrStaleEpoch, req.GetPartition(), ksName, n.cfg.ID)
	}
	if !slices.Contains(replicas, n.cfg.ID) {
		return fmt.Errorf("%w: %s holds no replica of %s; its replicas are %v", kverrors.ErrStaleEpoch, n.cfg.ID, req.GetPartition(), replicas)
	}
	sub, err := n.watch.Subscribe(req.GetPartition(), req.GetPrefix())
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
