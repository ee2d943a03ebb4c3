package node

import (
	"context"
	"fmt"
	"sort"
	"sync"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/internal/kverrors"
	"github.com/capkv/capkv/internal/route"
	"github.com/capkv/capkv/replication"
	"github.com/capkv/capkv/ring"
)

// The KV service: each handler routes once, calls the mode's replicator
// here or forwards (route.Router.Call), and turns the result into the API's
// response with its CAP receipt.

func keyValue(it replication.Item) *api.KeyValue {
	return &api.KeyValue{Key: it.Key, Value: it.Value, Version: it.Version, Timestamp: it.Timestamp}
}

// Get returns the current value of a key.
func (n *Node) Get(ctx context.Context, req *api.GetRequest) (*api.GetResponse, error) {
	rt, err := n.router.Key(ctx, req.GetKey(), req.GetHeader())
	if err != nil {
		return nil, err
	}
	var resp *api.GetResponse
	err = n.router.Call(ctx, rt, req.GetHeader(),
		func(ctx context.Context) error {
			res, err := rt.Rep.Get(ctx, rt.T, req.GetKey())
			if err != nil {
				return err
			}
			resp = &api.GetResponse{Kv: keyValue(res.Item), Context: res.Context, DeletedConcurrently: res.DeletedConcurrently,
				Receipt: n.router.Receipt(rt, res.Receipt)}
			for _, s := range res.Siblings {
				resp.Siblings = append(resp.Siblings, &api.Sibling{Value: s.Value, Timestamp: s.Timestamp, Dot: s.Dot})
			}
			return nil
		},
		func(ctx context.Context, c api.KVClient, h *api.RequestHeader) error {
			r, err := c.Get(ctx, &api.GetRequest{Header: h, Key: req.GetKey()})
			resp = r
			return err
		})
	if err != nil {
		return nil, err
	}
	n.router.Forwarded(resp.GetReceipt())
	return resp, nil
}

func (n *Node) checkValue(v []byte) error {
	if len(v) > n.cfg.MaxValueSize {
		return fmt.Errorf("%w: value is %d bytes, limit is %d", kverrors.ErrTooLarge, len(v), n.cfg.MaxValueSize)
	}
	return nil
}

// write runs a put, delete or CAS: here when this node serves the key's
// partition (res, rc set), else through the node forward sends it to (the
// forward closure keeps that node's response; rc is nil).
func (n *Node) write(ctx context.Context, rt route.Route, h *api.RequestHeader, w replication.Write, forward route.Forward) (replication.WriteResult, *api.Receipt, error) {
	h = route.WithRequestID(h)
	rt.T.RequestID = h.GetRequestId()
	var res replication.WriteResult
	var rc *api.Receipt
	err := n.router.Call(ctx, rt, h, func(ctx context.Context) error {
		var err error
		if res, err = rt.Rep.Write(ctx, rt.T, w); err != nil {
			return err
		}
		rc = n.router.Receipt(rt, res.Receipt)
		return nil
	}, forward)
	return res, rc, err
}

// Put writes a key.
func (n *Node) Put(ctx context.Context, req *api.PutRequest) (*api.PutResponse, error) {
	rt, err := n.router.Key(ctx, req.GetKey(), req.GetHeader())
	if err != nil {
		return nil, err
	}
	if err := n.checkValue(req.GetValue()); err != nil {
		return nil, err
	}
	var fwd *api.PutResponse
	res, rc, err := n.write(ctx, rt, req.GetHeader(), replication.Write{Op: replication.OpPut, Key: req.GetKey(), Value: req.GetValue(), Context: req.GetContext()},
		func(ctx context.Context, c api.KVClient, h *api.RequestHeader) error {
			var err error
			fwd, err = c.Put(ctx, &api.PutRequest{Header: h, Key: req.GetKey(), Value: req.GetValue(), Context: req.GetContext()})
			return err
		})
	switch {
	case err != nil:
		return nil, err
	case rc == nil:
		n.router.Forwarded(fwd.GetReceipt())
		return fwd, nil
	}
	return &api.PutResponse{Version: res.Version, Timestamp: res.Timestamp, Receipt: rc}, nil
}

// Delete removes a key, leaving a tombstone.
func (n *Node) Delete(ctx context.Context, req *api.DeleteRequest) (*api.DeleteResponse, error) {
	rt, err := n.router.Key(ctx, req.GetKey(), req.GetHeader())
	if err != nil {
		return nil, err
	}
	var fwd *api.DeleteResponse
	res, rc, err := n.write(ctx, rt, req.GetHeader(), replication.Write{Op: replication.OpDelete, Key: req.GetKey(), Context: req.GetContext()},
		func(ctx context.Context, c api.KVClient, h *api.RequestHeader) error {
			var err error
			fwd, err = c.Delete(ctx, &api.DeleteRequest{Header: h, Key: req.GetKey(), Context: req.GetContext()})
			return err
		})
	switch {
	case err != nil:
		return nil, err
	case rc == nil:
		n.router.Forwarded(fwd.GetReceipt())
		return fwd, nil
	}
	return &api.DeleteResponse{Existed: res.Existed, Version: res.Version, Receipt: rc}, nil
}

// CAS writes a key only if its current state matches the expectation.
func (n *Node) CAS(ctx context.Context, req *api.CASRequest) (*api.CASResponse, error) {
	rt, err := n.router.Key(ctx, req.GetKey(), req.GetHeader())
	if err != nil {
		return nil, err
	}
	if err := n.checkValue(req.GetValue()); err != nil {
		return nil, err
	}
	w := replication.Write{Op: replication.OpCAS, Key: req.GetKey(), Value: req.GetValue(),
		ExpectValue: req.ExpectedValue, HasExpectValue: req.ExpectedValue != nil,
		ExpectVersion: req.GetExpectedVersion(), HasExpectVersion: req.ExpectedVersion != nil}
	var fwd *api.CASResponse
	res, rc, err := n.write(ctx, rt, req.GetHeader(), w,
		func(ctx context.Context, c api.KVClient, h *api.RequestHeader) error {
			var err error
			fwd, err = c.CAS(ctx, &api.CASRequest{Header: h, Key: req.GetKey(), ExpectedValue: req.ExpectedValue,
				ExpectedVersion: req.ExpectedVersion, Value: req.GetValue()})
			return err
		})
	switch {
	case err != nil:
		return nil, err
	case rc == nil:
		n.router.Forwarded(fwd.GetReceipt())
		return fwd, nil
	}
	return &api.CASResponse{Version: res.Version, Timestamp: res.Timestamp, Receipt: rc}, nil
}

// Scan lists keys with a prefix. The coordinating node asks, for every
// partition of the keyspace, the replica that must serve it (the leader for
// linearizable cp scans) and merges the answers in key order.
func (n *Node) Scan(ctx context.Context, req *api.ScanRequest) (*api.ScanResponse, error) {
	prefix := req.GetPrefix()
	ks, err := n.router.Keyspace(ctx, prefix)
	if err != nil {
		return nil, err
	}
	lvl, err := n.router.Level(ks, req.GetHeader())
	if err != nil {
		return nil, err
	}
	limit := int(req.GetLimit())
	if limit <= 0 || limit > n.cfg.ScanLimit {
		limit = n.cfg.ScanLimit
	}
	var parts []ring.PartitionInfo
	for _, p := range n.r().Partitions(ks.Name) {
		if p.Err == "" && len(p.Replicas) > 0 && (req.GetPartition() == "" || p.ID.String() == req.GetPartition()) {
			parts = append(parts, p)
		}
	}
	if req.GetPartition() != "" && len(parts) == 0 {
		return nil, fmt.Errorf("%w: partition %q is not in the map of %s", kverrors.ErrStaleEpoch, req.GetPartition(), n.cfg.ID)
	}
	h := req.GetHeader()
	if h == nil {
		h = &api.RequestHeader{}
	}
	pages, errs := make([]route.Page, len(parts)), make([]error, len(parts))
	var wg sync.WaitGroup
	for i, p := range parts {
		wg.Go(func() {
			pages[i], errs[i] = n.scanPartition(ctx, h, ring.Placement{Keyspace: ks, Partition: p.ID, Replicas: p.Replicas}, prefix, req.GetStartAfter(), limit)
		})
	}
	wg.Wait()
	rc := &api.Receipt{Keyspace: ks.Name, Mode: string(ks.Mode), Level: string(lvl), Coordinator: n.cfg.ID,
		ServedBy: n.cfg.ID, Epoch: n.r().Epoch(), MajorityReachable: len(pages) > 0}
	by := map[string]bool{}
	for i, p := range pages {
		if errs[i] != nil {
			return nil, errs[i]
		}
		by[p.By] = true
		if p.Level != "" {
			rc.Level = p.Level // what the partitions did (ap scans read one replica)
		}
		rc.MajorityReachable = rc.MajorityReachable && p.Majority
	}
	for id := range by {
		rc.AckedBy = append(rc.AckedBy, id)
	}
	sort.Strings(rc.AckedBy)
	kvs, more := route.MergePages(pages, limit)
	return &api.ScanResponse{Kvs: kvs, More: more, Receipt: rc}, nil
}

// scanPartition reads one partition's page, here or on the node that serves it.
func (n *Node) scanPartition(ctx context.Context, h *api.RequestHeader, p ring.Placement, prefix, after string, limit int) (route.Page, error) {
	rt, err := n.router.Placement(p, h)
	if err != nil {
		return route.Page{}, err
	}
	var page route.Page
	err = n.router.Call(ctx, rt, h,
		func(ctx context.Context) error {
			res, err := rt.Rep.Scan(ctx, rt.T, prefix, after, limit)
			if err != nil {
				return err
			}
			rc := n.router.Receipt(rt, res.Receipt)
			page = route.Page{By: n.cfg.ID, More: res.More, Level: rc.Level, Majority: rc.MajorityReachable}
			for _, it := range res.Items {
				page.KVs = append(page.KVs, keyValue(it))
			}
			return nil
		},
		func(ctx context.Context, c api.KVClient, h *api.RequestHeader) error {
			resp, err := c.Scan(ctx, &api.ScanRequest{Header: h, Prefix: prefix, StartAfter: after, Limit: uint32(limit), Partition: p.Partition.String()})
			if err != nil {
				return err
			}
			rc := resp.GetReceipt()
			page = route.Page{KVs: resp.GetKvs(), More: resp.GetMore(), By: rc.GetServedBy(), Level: rc.GetLevel(), Majority: rc.GetMajorityReachable()}
			return nil
		})
	return page, err
}
