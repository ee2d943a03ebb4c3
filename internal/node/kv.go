package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/internal/kverrors"
	"github.com/capkv/capkv/ring"
	"github.com/capkv/capkv/shard"
)

// route is where a request goes: the placement of its key, its effective
// consistency level, and whether this node serves it.
type route struct {
	p     ring.Placement
	level consistency.Level
	local bool
	owner string
}

func (n *Node) route(key string, h *api.RequestHeader) (route, error) {
	if len(key) > n.cfg.MaxKeySize {
		return route{}, fmt.Errorf("%w: key is %d bytes, limit is %d", kverrors.ErrTooLarge, len(key), n.cfg.MaxKeySize)
	}
	p, err := n.ring.Locate(key)
	if err != nil {
		return route{}, err
	}
	lvl, err := n.level(p.Keyspace, h)
	if err != nil {
		return route{}, err
	}
	rt := route{p: p, level: lvl, owner: p.Replicas[0]}
	rt.local = rt.owner == n.cfg.ID
	if !rt.local && h.GetHops() > 0 {
		return route{}, fmt.Errorf("%w: node %s received a forwarded request for %q owned by %s (epoch %d, sender's %d)",
			kverrors.ErrStaleEpoch, n.cfg.ID, key, rt.owner, n.ring.Epoch(), h.GetEpoch())
	}
	return rt, nil
}

func (n *Node) level(ks *ring.KeyspaceConfig, h *api.RequestHeader) (consistency.Level, error) {
	req, err := consistency.ParseLevel(h.GetConsistency())
	if err != nil {
		return "", fmt.Errorf("%w: %v", kverrors.ErrInvalidArgument, err)
	}
	lvl, err := ks.Mode.Resolve(req, ks.DefaultLevel)
	if err != nil {
		return "", fmt.Errorf("%w: keyspace %q: %v", kverrors.ErrInvalidArgument, ks.Name, err)
	}
	return lvl, nil
}

// receipt describes a request this node served itself.
func (n *Node) receipt(rt route) *api.Receipt {
	return &api.Receipt{
		Keyspace:          rt.p.Keyspace.Name,
		Mode:              string(rt.p.Keyspace.Mode),
		Level:             string(rt.level),
		Partition:         rt.p.Partition.String(),
		Replicas:          append([]string(nil), rt.p.Replicas...),
		AckedBy:           []string{n.cfg.ID},
		ServedBy:          n.cfg.ID,
		Coordinator:       n.cfg.ID,
		Epoch:             n.ring.Epoch(),
	}
}

// forwarded marks a receipt that came back from the owner through this node.
func (n *Node) forwarded(r *api.Receipt) {
	if r != nil {
		r.Coordinator = n.cfg.ID
		r.Forwarded = true
	}
}

func forwardHeader(h *api.RequestHeader, epoch uint64) *api.RequestHeader {
	out := &api.RequestHeader{Epoch: epoch, Hops: h.GetHops() + 1}
	if h != nil {
		out.Consistency = h.Consistency
		out.RequestId = h.RequestId
	}
	return out
}

func (n *Node) kvPeer(id string) (api.KVClient, error) {
	c, err := n.peer(id)
	if err != nil {
		return nil, err
	}
	return api.NewKVClient(c), nil
}

// forwardErr explains a failed forward; the sentinel kind is preserved.
func (n *Node) forwardErr(owner string, err error) error {
	err = kverrors.FromStatus(err)
	return fmt.Errorf("via owner %s: %w", owner, err)
}

func (n *Node) replica(p ring.Placement) *shard.Replica {
	return n.store.Replica(p.Partition.String())
}

// Get returns the current value of a key.
func (n *Node) Get(ctx context.Context, req *api.GetRequest) (*api.GetResponse, error) {
	rt, err := n.route(req.GetKey(), req.GetHeader())
	if err != nil {
		return nil, err
	}
	if !rt.local {
		c, err := n.kvPeer(rt.owner)
		if err != nil {
			return nil, err
		}
		resp, err := c.Get(ctx, &api.GetRequest{Header: forwardHeader(req.GetHeader(), n.ring.Epoch()), Key: req.GetKey()})
		if err != nil {
			return nil, n.forwardErr(rt.owner, err)
		}
		n.forwarded(resp.GetReceipt())
		return resp, nil
	}
	rec, found, err := n.replica(rt.p).Get(req.GetKey())
	if err != nil {
		return nil, err
	}
	if !found || rec.Tombstone {
		return nil, fmt.Errorf("%w: key %q", kverrors.ErrNotFound, req.GetKey())
	}
	return &api.GetResponse{
		Kv:      &api.KeyValue{Key: req.GetKey(), Value: rec.Value, Version: rec.Version, Timestamp: uint64(rec.Timestamp)},
		Receipt: n.receipt(rt),
	}, nil
}

func (n *Node) checkValue(v []byte) error {
	if len(v) > n.cfg.MaxValueSize {
		return fmt.Errorf("%w: value is %d bytes, limit is %d", kverrors.ErrTooLarge, len(v), n.cfg.MaxValueSize)
	}
	return nil
}

// Put writes a key.
func (n *Node) Put(ctx context.Context, req *api.PutRequest) (*api.PutResponse, error) {
	rt, err := n.route(req.GetKey(), req.GetHeader())
	if err != nil {
		return nil, err
	}
	if err := n.checkValue(req.GetValue()); err != nil {
		return nil, err
	}
	if !rt.local {
		c, err := n.kvPeer(rt.owner)
		if err != nil {
			return nil, err
		}
		resp, err := c.Put(ctx, &api.PutRequest{Header: forwardHeader(req.GetHeader(), n.ring.Epoch()), Key: req.GetKey(), Value: req.GetValue()})
		if err != nil {
			return nil, n.forwardErr(rt.owner, err)
		}
		n.forwarded(resp.GetReceipt())
		return resp, nil
	}
	rec, err := n.replica(rt.p).Update(req.GetKey(), func(cur shard.Record, found bool) (shard.Record, error) {
		return shard.Record{Value: req.GetValue(), Version: cur.Version + 1, Timestamp: n.clock.Now()}, nil
	})
	if err != nil {
		return nil, err
	}
	return &api.PutResponse{Version: rec.Version, Timestamp: uint64(rec.Timestamp), Receipt: n.receipt(rt)}, nil
}

// Delete removes a key, leaving a tombstone.
func (n *Node) Delete(ctx context.Context, req *api.DeleteRequest) (*api.DeleteResponse, error) {
	rt, err := n.route(req.GetKey(), req.GetHeader())
	if err != nil {
		return nil, err
	}
	if !rt.local {
		c, err := n.kvPeer(rt.owner)
		if err != nil {
			return nil, err
		}
		resp, err := c.Delete(ctx, &api.DeleteRequest{Header: forwardHeader(req.GetHeader(), n.ring.Epoch()), Key: req.GetKey()})
		if err != nil {
			return nil, n.forwardErr(rt.owner, err)
		}
		n.forwarded(resp.GetReceipt())
		return resp, nil
	}
	existed := false
	rec, err := n.replica(rt.p).Update(req.GetKey(), func(cur shard.Record, found bool) (shard.Record, error) {
		existed = found && !cur.Tombstone
		if !existed {
			return cur, errNoChange
		}
		return shard.Record{Tombstone: true, Version: cur.Version + 1, Timestamp: n.clock.Now()}, nil
	})
	if err != nil && !errors.Is(err, errNoChange) {
		return nil, err
	}
	return &api.DeleteResponse{Existed: existed, Version: rec.Version, Receipt: n.receipt(rt)}, nil
}

// errNoChange aborts an Update that has nothing to write.
var errNoChange = errors.New("no change")

// CAS writes a key only if its current state matches the expectation.
func (n *Node) CAS(ctx context.Context, req *api.CASRequest) (*api.CASResponse, error) {
	rt, err := n.route(req.GetKey(), req.GetHeader())
	if err != nil {
		return nil, err
	}
	if rt.p.Keyspace.Mode != consistency.CP {
		return nil, fmt.Errorf("%w: compare-and-set needs a cp keyspace; %q is %s (leaderless replicas cannot agree on one current value)",
			kverrors.ErrWrongMode, rt.p.Keyspace.Name, rt.p.Keyspace.Mode)
	}
	if req.ExpectedValue == nil && req.ExpectedVersion == nil {
		return nil, fmt.Errorf("%w: compare-and-set needs an expected value or an expected version (0 = key absent)", kverrors.ErrInvalidArgument)
	}
	if err := n.checkValue(req.GetValue()); err != nil {
		return nil, err
	}
	if !rt.local {
		c, err := n.kvPeer(rt.owner)
		if err != nil {
			return nil, err
		}
		fwd := &api.CASRequest{Header: forwardHeader(req.GetHeader(), n.ring.Epoch()), Key: req.GetKey(),
			ExpectedValue: req.ExpectedValue, ExpectedVersion: req.ExpectedVersion, Value: req.GetValue()}
		resp, err := c.CAS(ctx, fwd)
		if err != nil {
			return nil, n.forwardErr(rt.owner, err)
		}
		n.forwarded(resp.GetReceipt())
		return resp, nil
	}
	rec, err := n.replica(rt.p).Update(req.GetKey(), func(cur shard.Record, found bool) (shard.Record, error) {
		live := found && !cur.Tombstone
		if req.ExpectedVersion != nil {
			have := uint64(0)
			if live {
				have = cur.Version
			}
			if have != *req.ExpectedVersion {
				return cur, fmt.Errorf("%w: key %q is at version %d, expected %d", kverrors.ErrConflict, req.GetKey(), have, *req.ExpectedVersion)
			}
		}
		if req.ExpectedValue != nil {
			if !live {
				return cur, fmt.Errorf("%w: key %q does not exist, expected value %q", kverrors.ErrConflict, req.GetKey(), req.ExpectedValue)
			}
			if !bytes.Equal(cur.Value, req.ExpectedValue) {
				return cur, fmt.Errorf("%w: key %q has value %q, expected %q", kverrors.ErrConflict, req.GetKey(), cur.Value, req.ExpectedValue)
			}
		}
		return shard.Record{Value: req.GetValue(), Version: cur.Version + 1, Timestamp: n.clock.Now()}, nil
	})
	if err != nil {
		return nil, err
	}
	return &api.CASResponse{Version: rec.Version, Timestamp: uint64(rec.Timestamp), Receipt: n.receipt(rt)}, nil
}

// Scan lists keys with a prefix. The coordinating node (hops = 0) asks every
// owner of a partition of the keyspace for its part and merges; an owner
// (hops > 0) scans only the partitions it owns.
func (n *Node) Scan(ctx context.Context, req *api.ScanRequest) (*api.ScanResponse, error) {
	prefix := req.GetPrefix()
	ksName, err := ring.SplitKeyspace(prefix)
	if err != nil {
		return nil, err
	}
	ks, ok := n.ring.Keyspace(ksName)
	if !ok {
		return nil, fmt.Errorf("%w: %q", kverrors.ErrUnknownKeyspace, ksName)
	}
	lvl, err := n.level(ks, req.GetHeader())
	if err != nil {
		return nil, err
	}
	limit := int(req.GetLimit())
	if limit <= 0 || limit > n.cfg.ScanLimit {
		limit = n.cfg.ScanLimit
	}
	parts := n.ring.Partitions(ksName)
	rc := &api.Receipt{Keyspace: ks.Name, Mode: string(ks.Mode), Level: string(lvl), Coordinator: n.cfg.ID,
		ServedBy: n.cfg.ID, Epoch: n.ring.Epoch()}

	if req.GetHeader().GetHops() > 0 {
		kvs, err := n.scanLocal(parts, prefix, req.GetStartAfter(), limit+1)
		if err != nil {
			return nil, err
		}
		rc.AckedBy = []string{n.cfg.ID}
		return &api.ScanResponse{Kvs: kvs, Receipt: rc}, nil
	}

	owners := map[string]bool{}
	for _, p := range parts {
		if p.Err == "" && len(p.Replicas) > 0 {
			owners[p.Replicas[0]] = true
		}
	}
	type part struct {
		kvs []*api.KeyValue
		err error
	}
	results := make(map[string]*part, len(owners))
	var wg sync.WaitGroup
	var mu sync.Mutex
	for owner := range owners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var r part
			if owner == n.cfg.ID {
				r.kvs, r.err = n.scanLocal(parts, prefix, req.GetStartAfter(), limit+1)
			} else if c, err := n.kvPeer(owner); err != nil {
				r.err = err
			} else {
				resp, err := c.Scan(ctx, &api.ScanRequest{Header: forwardHeader(req.GetHeader(), n.ring.Epoch()),
					Prefix: prefix, StartAfter: req.GetStartAfter(), Limit: uint32(limit)})
				if err != nil {
					r.err = n.forwardErr(owner, err)
				} else {
					r.kvs = resp.GetKvs()
				}
			}
			mu.Lock()
			results[owner] = &r
			mu.Unlock()
		}()
	}
	wg.Wait()
	var all []*api.KeyValue
	for owner, r := range results {
		if r.err != nil {
			return nil, r.err
		}
		all = append(all, r.kvs...)
		rc.AckedBy = append(rc.AckedBy, owner)
	}
	sort.Strings(rc.AckedBy)
	sort.Slice(all, func(i, j int) bool { return all[i].Key < all[j].Key })
	more := len(all) > limit
	if more {
		all = all[:limit]
	}
	return &api.ScanResponse{Kvs: all, More: more, Receipt: rc}, nil
}

// scanLocal scans the partitions this node owns, returning at most limit
// keys in key order.
func (n *Node) scanLocal(parts []ring.PartitionInfo, prefix, after string, limit int) ([]*api.KeyValue, error) {
	var out []*api.KeyValue
	for _, p := range parts {
		if p.Err != "" || len(p.Replicas) == 0 || p.Replicas[0] != n.cfg.ID {
			continue
		}
		err := n.store.Replica(p.ID.String()).Scan(prefix, after, limit, false, func(key string, rec shard.Record) bool {
			out = append(out, &api.KeyValue{Key: key, Value: rec.Value, Version: rec.Version, Timestamp: uint64(rec.Timestamp)})
			return true
		})
		if err != nil {
			return nil, err
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}
