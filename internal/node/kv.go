package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/internal/kverrors"
	"github.com/capkv/capkv/replication"
	"github.com/capkv/capkv/ring"
)

// maxHops bounds forwarding: client -> any node -> a replica -> the leader.
const maxHops = 2

// leaderWait is how often a replica without a known leader looks again.
const leaderWait = 20 * time.Millisecond

// route is where a request goes: its target (placement and effective level)
// and the replicator of the keyspace's mode, chosen here and nowhere else.
type route struct {
	t   replication.Target
	rep replication.Replicator
}

// route resolves key -> keyspace -> partition -> replicator.
func (n *Node) route(key string, h *api.RequestHeader) (route, error) {
	if err := n.ready(); err != nil {
		return route{}, err
	}
	if len(key) > n.cfg.MaxKeySize {
		return route{}, fmt.Errorf("%w: key is %d bytes, limit is %d", kverrors.ErrTooLarge, len(key), n.cfg.MaxKeySize)
	}
	p, err := n.r().Locate(key)
	if err != nil {
		return route{}, err
	}
	return n.routePlacement(p, h)
}

// routePlacement is route for a known placement (scans, watches and repairs
// name partitions, not keys).
func (n *Node) routePlacement(p ring.Placement, h *api.RequestHeader) (route, error) {
	lvl, err := n.level(p.Keyspace, h)
	if err != nil {
		return route{}, err
	}
	rep, ok := n.modes[p.Keyspace.Mode]
	if !ok {
		return route{}, fmt.Errorf("%w: keyspace %q has mode %q, which this node does not run", kverrors.ErrInternal, p.Keyspace.Name, p.Keyspace.Mode)
	}
	return route{t: replication.Target{Placement: p, Level: lvl}, rep: rep}, nil
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

// receipt is the CAP receipt of a request this node served: where it was
// routed, plus what the mode reported it cost.
func (n *Node) receipt(rt route, m replication.Receipt) *api.Receipt {
	p := rt.t.Placement
	level := rt.t.Level
	if m.Level != "" {
		level = m.Level
	}
	return &api.Receipt{
		Keyspace:          p.Keyspace.Name,
		Mode:              string(p.Keyspace.Mode),
		Level:             string(level),
		Partition:         p.Partition.String(),
		Replicas:          append([]string(nil), p.Replicas...),
		AckedBy:           m.AckedBy,
		ServedBy:          n.cfg.ID,
		Coordinator:       n.cfg.ID,
		Epoch:             n.r().Epoch(),
		Hinted:            m.Hinted,
		SloppyQuorum:      m.Sloppy,
		Siblings:          uint32(m.Siblings),
		AppliedIndex:      m.AppliedIndex,
		StalenessMs:       m.StalenessMs,
		MajorityReachable: m.MajorityReachable,
	}
}

// forwarded marks a receipt that came back through this node.
func (n *Node) forwarded(r *api.Receipt) {
	if r != nil && r.Coordinator != n.cfg.ID {
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
	if err := n.down(id); err != nil {
		return nil, err
	}
	c, err := n.peer(id)
	if err != nil {
		return nil, err
	}
	return api.NewKVClient(c), nil
}

// forwardFunc sends a request on to another node's KV service.
type forwardFunc func(ctx context.Context, c api.KVClient, h *api.RequestHeader) error

// call runs a request here when this node serves its partition (local) and
// otherwise forwards it, following the mode's policy. This is the one
// forwarding path of every KV operation.
func (n *Node) call(ctx context.Context, rt route, h *api.RequestHeader, local func(ctx context.Context) error, forward forwardFunc) error {
	if !rt.rep.Forwarding().WaitForLeader {
		if rt.rep.Serves(rt.t) {
			return local(ctx)
		}
		return n.forwardOnce(ctx, rt, h, forward)
	}
	return n.callLeader(ctx, rt, h, local, forward)
}

// callLeader serves a request of a leader-based mode. A replica runs it and
// follows the redirect to the leader it names; any other node rotates
// through the replicas the failure detector does not hold down. It waits for
// an election until shortly before the deadline, then answers Unavailable.
func (n *Node) callLeader(ctx context.Context, rt route, h *api.RequestHeader, local func(ctx context.Context) error, forward forwardFunc) error {
	ictx, cancel := replication.InnerDeadline(ctx)
	defer cancel()
	pid, replicas := rt.t.Partition(), rt.t.Placement.Replicas
	for attempt := 0; ; attempt++ {
		var to string
		serves := rt.rep.Serves(rt.t)
		if serves {
			err := local(ictx)
			var rd replication.Redirect
			if !errors.As(err, &rd) {
				return err
			}
			to = rd.RedirectTo()
		} else {
			up := n.upReplicas(replicas)
			if len(up) == 0 {
				return fmt.Errorf("%w: partition %s: no replica of %v is reachable from %s (failure detector)",
					kverrors.ErrUnavailable, pid, replicas, n.cfg.ID)
			}
			to = up[attempt%len(up)]
		}
		if to != "" && to != n.cfg.ID {
			err := n.forwardTo(ictx, to, h, forward)
			if !errors.Is(err, kverrors.ErrUnavailable) || errors.Is(err, kverrors.ErrStaleEpoch) {
				return err
			}
			// The node we forwarded to is unreachable; an election may be
			// under way, or another replica can help.
		}
		if serves && (to == "" || n.fd.Down(to)) {
			// A replica that knows no reachable leader and reaches no
			// majority of the group's replicas: no election can succeed on
			// its side, so refuse now rather than at the deadline. (A leader
			// it can still reach would be tried again instead: in a bridge
			// partition it may hold a majority this node cannot see.)
			if r := len(n.upReplicas(replicas)); r <= len(replicas)/2 {
				return fmt.Errorf("%w: partition %s: %s reaches %d of its %d replicas %v, no majority (minority side of a partition)",
					kverrors.ErrUnavailable, pid, n.cfg.ID, r, len(replicas), replicas)
			}
		}
		select {
		case <-ictx.Done():
			return fmt.Errorf("%w: partition %s has no leader reachable from %s before the deadline (minority side of a partition, or an election in progress)",
				kverrors.ErrUnavailable, pid, n.cfg.ID)
		case <-time.After(leaderWait):
		}
	}
}

// forwardOnce sends a request of a leaderless mode to the first replica
// that answers.
func (n *Node) forwardOnce(ctx context.Context, rt route, h *api.RequestHeader, forward forwardFunc) error {
	var errs []error
	maybe := false // some attempt may have reached a replica and been applied
	// Replicas the failure detector holds down are tried last (they fail at
	// once, without a network round trip), so the live ones share the time.
	replicas := slices.Clone(rt.t.Placement.Replicas)
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
			kverrors.ErrIndeterminate, rt.t.Partition(), n.cfg.ID, errors.Join(errs...))
	}
	return fmt.Errorf("%w: no replica of %s is reachable from %s: %w", kverrors.ErrUnavailable, rt.t.Partition(), n.cfg.ID, errors.Join(errs...))
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

func (n *Node) forwardTo(ctx context.Context, to string, h *api.RequestHeader, forward forwardFunc) error {
	if h.GetHops() >= maxHops {
		return fmt.Errorf("%w: node %s received a request already forwarded %d times; its owner is %s (epoch %d, sender's %d)",
			kverrors.ErrStaleEpoch, n.cfg.ID, h.GetHops(), to, n.r().Epoch(), h.GetEpoch())
	}
	c, err := n.kvPeer(to)
	if err != nil {
		return err
	}
	if err := forward(ctx, c, forwardHeader(h, n.r().Epoch())); err != nil {
		return fmt.Errorf("via %s: %w", to, kverrors.FromStatus(err))
	}
	return nil
}

func keyValue(it replication.Item) *api.KeyValue {
	return &api.KeyValue{Key: it.Key, Value: it.Value, Version: it.Version, Timestamp: it.Timestamp}
}

// Get returns the current value of a key.
func (n *Node) Get(ctx context.Context, req *api.GetRequest) (*api.GetResponse, error) {
	rt, err := n.route(req.GetKey(), req.GetHeader())
	if err != nil {
		return nil, err
	}
	var resp *api.GetResponse
	err = n.call(ctx, rt, req.GetHeader(),
		func(ctx context.Context) error {
			res, err := rt.rep.Get(ctx, rt.t, req.GetKey())
			if err != nil {
				return err
			}
			resp = &api.GetResponse{Kv: keyValue(res.Item), Context: res.Context, DeletedConcurrently: res.DeletedConcurrently,
				Receipt: n.receipt(rt, res.Receipt)}
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
	n.forwarded(resp.GetReceipt())
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
func (n *Node) write(ctx context.Context, rt route, h *api.RequestHeader, w replication.Write, forward forwardFunc) (replication.WriteResult, *api.Receipt, error) {
	h = withRequestID(h)
	rt.t.RequestID = h.GetRequestId()
	var res replication.WriteResult
	var rc *api.Receipt
	err := n.call(ctx, rt, h, func(ctx context.Context) error {
		var err error
		if res, err = rt.rep.Write(ctx, rt.t, w); err != nil {
			return err
		}
		rc = n.receipt(rt, res.Receipt)
		return nil
	}, forward)
	return res, rc, err
}

// withRequestID gives a write a request ID if its client did not, so that
// a forward retried after a broken connection is applied at most once.
func withRequestID(h *api.RequestHeader) *api.RequestHeader {
	if h.GetRequestId() != "" {
		return h
	}
	var b [12]byte
	rand.Read(b[:])
	out := &api.RequestHeader{RequestId: hex.EncodeToString(b[:])}
	if h != nil {
		out.Epoch, out.Consistency, out.Hops = h.Epoch, h.Consistency, h.Hops
	}
	return out
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
		n.forwarded(fwd.GetReceipt())
		return fwd, nil
	}
	return &api.PutResponse{Version: res.Version, Timestamp: res.Timestamp, Receipt: rc}, nil
}

// Delete removes a key, leaving a tombstone.
func (n *Node) Delete(ctx context.Context, req *api.DeleteRequest) (*api.DeleteResponse, error) {
	rt, err := n.route(req.GetKey(), req.GetHeader())
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
		n.forwarded(fwd.GetReceipt())
		return fwd, nil
	}
	return &api.DeleteResponse{Existed: res.Existed, Version: res.Version, Receipt: rc}, nil
}

// CAS writes a key only if its current state matches the expectation.
func (n *Node) CAS(ctx context.Context, req *api.CASRequest) (*api.CASResponse, error) {
	rt, err := n.route(req.GetKey(), req.GetHeader())
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
		n.forwarded(fwd.GetReceipt())
		return fwd, nil
	}
	return &api.CASResponse{Version: res.Version, Timestamp: res.Timestamp, Receipt: rc}, nil
}

// keyspace resolves the keyspace a prefix belongs to.
func (n *Node) keyspace(prefix string) (*ring.KeyspaceConfig, error) {
	if err := n.ready(); err != nil {
		return nil, err
	}
	name, err := ring.SplitKeyspace(prefix)
	if err != nil {
		return nil, err
	}
	ks, ok := n.r().Keyspace(name)
	if !ok {
		return nil, fmt.Errorf("%w: %q", kverrors.ErrUnknownKeyspace, name)
	}
	return ks, nil
}

// Scan lists keys with a prefix. The coordinating node asks, for every
// partition of the keyspace, the replica that must serve it (the leader for
// linearizable cp scans) and merges the answers in key order.
func (n *Node) Scan(ctx context.Context, req *api.ScanRequest) (*api.ScanResponse, error) {
	prefix := req.GetPrefix()
	ks, err := n.keyspace(prefix)
	if err != nil {
		return nil, err
	}
	lvl, err := n.level(ks, req.GetHeader())
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

	type result struct {
		kvs      []*api.KeyValue
		more     bool // the serving node cut its answer at the limit
		by       string
		level    string
		majority bool
		err      error
	}
	results := make([]result, len(parts))
	var wg sync.WaitGroup
	for i, p := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := &results[i]
			rt, err := n.routePlacement(ring.Placement{Keyspace: ks, Partition: p.ID, Replicas: p.Replicas}, req.GetHeader())
			if err != nil {
				res.err = err
				return
			}
			h := req.GetHeader()
			if h == nil {
				h = &api.RequestHeader{}
			}
			res.err = n.call(ctx, rt, h,
				func(ctx context.Context) error {
					page, err := rt.rep.Scan(ctx, rt.t, prefix, req.GetStartAfter(), limit)
					if err != nil {
						return err
					}
					rc := n.receipt(rt, page.Receipt)
					res.by, res.more, res.level, res.majority = n.cfg.ID, page.More, rc.Level, rc.MajorityReachable
					for _, it := range page.Items {
						res.kvs = append(res.kvs, keyValue(it))
					}
					return nil
				},
				func(ctx context.Context, c api.KVClient, h *api.RequestHeader) error {
					resp, err := c.Scan(ctx, &api.ScanRequest{Header: h, Prefix: prefix, StartAfter: req.GetStartAfter(),
						Limit: uint32(limit), Partition: p.ID.String()})
					if err != nil {
						return err
					}
					rc := resp.GetReceipt()
					res.kvs, res.more, res.by, res.level, res.majority = resp.GetKvs(), resp.GetMore(), rc.GetServedBy(), rc.GetLevel(), rc.GetMajorityReachable()
					return nil
				})
		}()
	}
	wg.Wait()
	rc := &api.Receipt{Keyspace: ks.Name, Mode: string(ks.Mode), Level: string(lvl), Coordinator: n.cfg.ID,
		ServedBy: n.cfg.ID, Epoch: n.r().Epoch(), MajorityReachable: len(results) > 0}
	var all []*api.KeyValue
	acked := map[string]bool{}
	// A partition that cut its answer at the limit may hold more keys after
	// its last one; the merged page must stop there, or the next page (which
	// starts after the merged page's last key) would skip them.
	cut, cutoff := false, ""
	for _, r := range results {
		if r.err != nil {
			return nil, r.err
		}
		if r.more && len(r.kvs) > 0 {
			if last := r.kvs[len(r.kvs)-1].Key; !cut || last < cutoff {
				cutoff = last
			}
			cut = true
		}
		all = append(all, r.kvs...)
		acked[r.by] = true
		if r.level != "" {
			rc.Level = r.level // what the partitions did (ap scans read one replica)
		}
		rc.MajorityReachable = rc.MajorityReachable && r.majority
	}
	for id := range acked {
		rc.AckedBy = append(rc.AckedBy, id)
	}
	sort.Strings(rc.AckedBy)
	sort.Slice(all, func(i, j int) bool { return all[i].Key < all[j].Key })
	if cut {
		i := sort.Search(len(all), func(i int) bool { return all[i].Key > cutoff })
		all = all[:i]
	}
	more := len(all) > limit || cut
	if len(all) > limit {
		all = all[:limit]
	}
	return &api.ScanResponse{Kvs: all, More: more, Receipt: rc}, nil
}
