package ap

import (
	"context"
	"fmt"

	"google.golang.org/grpc"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/internal/kverrors"
)

// The ap wire protocol is the api.Replica service: Store and Fetch carry one
// key's encoded clock between a coordinator and a replica (Store with
// HintFor set leaves it with a fallback node as a hint); Digest, Leaf and
// Purge are anti-entropy's Merkle exchange and tombstone collection.

// Dialer returns a connection to another node, or fails at once when the
// node is known to be unreachable (so a coordinator turns to a fallback
// instead of waiting on it).
type Dialer func(node string) (grpc.ClientConnInterface, error)

// Transport is the client side of the Replica service: the Peers and
// AntiEntropyPeers a coordinator and a repair use.
type Transport struct {
	Dial Dialer
}

var _ AntiEntropyPeers = Transport{}

func (t Transport) client(node string) (api.ReplicaClient, error) {
	c, err := t.Dial(node)
	if err != nil {
		return nil, err
	}
	return api.NewReplicaClient(c), nil
}

// Store sends one key's clock to node (a replica, or a fallback keeping a hint).
func (t Transport) Store(ctx context.Context, node string, req *api.ReplicaStoreRequest) (*api.ReplicaStoreResponse, error) {
	c, err := t.client(node)
	if err != nil {
		return nil, err
	}
	resp, err := c.Store(ctx, req)
	return resp, kverrors.FromStatus(err)
}

// Fetch reads one key's clock from node.
func (t Transport) Fetch(ctx context.Context, node string, req *api.ReplicaFetchRequest) (*api.ReplicaFetchResponse, error) {
	c, err := t.client(node)
	if err != nil {
		return nil, err
	}
	resp, err := c.Fetch(ctx, req)
	return resp, kverrors.FromStatus(err)
}

// Digest reads the Merkle leaves of node's replica of partition.
func (t Transport) Digest(ctx context.Context, node, partition string) ([]uint64, error) {
	c, err := t.client(node)
	if err != nil {
		return nil, err
	}
	resp, err := c.Digest(ctx, &api.DigestRequest{Partition: partition})
	if err != nil {
		return nil, kverrors.FromStatus(err)
	}
	if len(resp.GetLeaves()) != Leaves {
		return nil, fmt.Errorf("%w: %s sent %d leaves, want %d", kverrors.ErrInternal, node, len(resp.GetLeaves()), Leaves)
	}
	return resp.GetLeaves(), nil
}

// Leaf reads the keys and encoded clocks of one leaf of node's replica.
func (t Transport) Leaf(ctx context.Context, node, partition string, leaf uint32) (map[string][]byte, error) {
	c, err := t.client(node)
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

// Purge asks node to delete key if its clock is still exactly clock.
func (t Transport) Purge(ctx context.Context, node, partition, key string, clock []byte) (bool, error) {
	c, err := t.client(node)
	if err != nil {
		return false, err
	}
	resp, err := c.Purge(ctx, &api.PurgeRequest{Partition: partition, Key: key, Clock: clock})
	if err != nil {
		return false, kverrors.FromStatus(err)
	}
	return resp.GetPurged(), nil
}

// Server is the receiving side of the Replica service on one node.
type Server struct {
	Clocks *ClockStore
	Hints  *HintStore
	// Clock is moved past every timestamp received, so later local writes
	// order after them.
	Clock *consistency.Clock
	// Owns, when set, reports whether this node replicates (or is joining)
	// a partition; a store for one it does not is refused. That is what
	// makes a partition's hand-over safe when it moves away: a coordinator
	// still on the old map gets a refusal and keeps a hint for the replica
	// instead, which is handed to the new owners.
	Owns func(partition string) bool
	api.UnimplementedReplicaServer
}

// Store merges a coordinator's clock into this replica, or keeps it as a
// hint for the replica it names.
func (s *Server) Store(_ context.Context, req *api.ReplicaStoreRequest) (*api.ReplicaStoreResponse, error) {
	d, err := consistency.DecodeDVV(req.GetClock())
	if err != nil {
		return nil, fmt.Errorf("%w: %v", kverrors.ErrInvalidArgument, err)
	}
	for _, sib := range d.Values() {
		s.Clock.Update(sib.Timestamp)
	}
	if req.GetHintFor() != "" {
		if err := s.Hints.Add(req.GetHintFor(), req.GetPartition(), req.GetKey(), d, req.GetLww()); err != nil {
			return nil, err
		}
		return &api.ReplicaStoreResponse{}, nil
	}
	if s.Owns != nil && !s.Owns(req.GetPartition()) {
		return nil, fmt.Errorf("%w: this node no longer replicates partition %s (it moved); the sender's map is older", kverrors.ErrStaleEpoch, req.GetPartition())
	}
	merged, err := s.Clocks.Merge(req.GetPartition(), req.GetKey(), d, req.GetLww())
	if err != nil {
		return nil, err
	}
	return &api.ReplicaStoreResponse{Clock: merged.Encode(nil)}, nil
}

// Fetch returns this replica's clock of a key.
func (s *Server) Fetch(_ context.Context, req *api.ReplicaFetchRequest) (*api.ReplicaFetchResponse, error) {
	d, found, err := s.Clocks.Read(req.GetPartition(), req.GetKey())
	if err != nil {
		return nil, err
	}
	return &api.ReplicaFetchResponse{Clock: d.Encode(nil), Found: found}, nil
}

// Purge deletes a key whose clock is still exactly the one named.
func (s *Server) Purge(_ context.Context, req *api.PurgeRequest) (*api.PurgeResponse, error) {
	ok, err := s.Clocks.Purge(req.GetPartition(), req.GetKey(), req.GetClock())
	if err != nil {
		return nil, err
	}
	return &api.PurgeResponse{Purged: ok}, nil
}

// Digest returns the Merkle leaves of this replica of a partition.
func (s *Server) Digest(_ context.Context, req *api.DigestRequest) (*api.DigestResponse, error) {
	leaves, err := s.Clocks.Digest(req.GetPartition())
	if err != nil {
		return nil, err
	}
	return &api.DigestResponse{Leaves: leaves}, nil
}

// Leaf returns the keys and clocks of one Merkle leaf.
func (s *Server) Leaf(_ context.Context, req *api.LeafRequest) (*api.LeafResponse, error) {
	if req.GetLeaf() >= Leaves {
		return nil, fmt.Errorf("%w: leaf %d of %d", kverrors.ErrInvalidArgument, req.GetLeaf(), Leaves)
	}
	m, err := s.Clocks.LeafEntries(req.GetPartition(), req.GetLeaf())
	if err != nil {
		return nil, err
	}
	resp := &api.LeafResponse{}
	for k, v := range m {
		resp.Entries = append(resp.Entries, &api.KeyClock{Key: k, Clock: v})
	}
	return resp, nil
}
