package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/internal/kverrors"
	"github.com/capkv/capkv/replication/ap"
	"github.com/capkv/capkv/replication/cp"
	"github.com/capkv/capkv/ring"
	"github.com/capkv/capkv/shard"
)

// maxHops bounds forwarding: client -> any node -> a replica -> the leader.
const maxHops = 2

// leaderWait is how often a replica without a known leader looks again.
const leaderWait = 20 * time.Millisecond

// route is where a request goes: the placement of its key and its
// effective consistency level.
type route struct {
	p     ring.Placement
	level consistency.Level
}

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
	lvl, err := n.level(p.Keyspace, h)
	if err != nil {
		return route{}, err
	}
	return route{p: p, level: lvl}, nil
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
		Keyspace:    rt.p.Keyspace.Name,
		Mode:        string(rt.p.Keyspace.Mode),
		Level:       string(rt.level),
		Partition:   rt.p.Partition.String(),
		Replicas:    append([]string(nil), rt.p.Replicas...),
		AckedBy:     []string{n.cfg.ID},
		ServedBy:    n.cfg.ID,
		Coordinator: n.cfg.ID,
		Epoch:       n.r().Epoch(),
	}
}

// cpReceipt adds what Raft guaranteed: a committed write or a confirmed
// read needed a majority; a stale read says how far behind it may be.
func (n *Node) cpReceipt(rt route, g *cp.Group, index uint64, majority bool) *api.Receipt {
	r := n.receipt(rt)
	r.AppliedIndex = index
	r.MajorityReachable = majority
	if !majority {
		r.AppliedIndex = g.AppliedIndex()
		if lc := g.LastContact(); !lc.IsZero() {
			r.StalenessMs = max(time.Since(lc).Milliseconds(), 0)
		} else {
			r.StalenessMs = -1 // never heard from a leader
		}
	}
	return r
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

func (n *Node) replica(p ring.Placement) *shard.Replica {
	return n.store.Replica(p.Partition.String())
}

// innerDeadline leaves a margin before the caller's deadline so that a
// request that cannot be served gets a definite Unavailable answer instead
// of the caller's own timeout.
func innerDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	dl, ok := ctx.Deadline()
	if !ok {
		return context.WithCancel(ctx)
	}
	margin := min(time.Until(dl)/10, 200*time.Millisecond)
	return context.WithDeadline(ctx, dl.Add(-margin))
}

// serve runs a request on the replica that must execute it.
//
// ap keyspaces (until leaderless replication lands): the first node of the
// preference list. cp keyspaces: the Raft leader when leader is true (writes,
// linearizable reads), any replica otherwise (stale reads). local runs the
// request here; forward sends it on. A replica that knows no leader waits for
// an election until shortly before the deadline, then answers Unavailable.
func (n *Node) serve(ctx context.Context, rt route, h *api.RequestHeader, leader bool,
	local func(ctx context.Context, g *cp.Group) error,
	forward func(ctx context.Context, c api.KVClient, h *api.RequestHeader) error) error {

	if rt.p.Keyspace.Mode != consistency.CP {
		return n.apServe(ctx, rt, h, func() error { return local(ctx, nil) }, forward)
	}
	ictx, cancel := innerDeadline(ctx)
	defer cancel()
	pid := rt.p.Partition.String()
	for attempt := 0; ; attempt++ {
		var to string
		g, replica := n.host.Group(pid)
		if replica {
			if !leader {
				return local(ctx, g)
			}
			err := local(ictx, g)
			var nl *cp.NotLeaderError
			if !errors.As(err, &nl) {
				return err
			}
			to = nl.Leader
		} else {
			// Not a replica: any replica knows its leader; rotate through
			// the ones the failure detector does not hold down.
			up := n.upReplicas(rt.p.Replicas)
			if len(up) == 0 {
				return fmt.Errorf("%w: partition %s: no replica of %v is reachable from %s (failure detector)",
					kverrors.ErrUnavailable, pid, rt.p.Replicas, n.cfg.ID)
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
		if replica && (to == "" || n.fd.Down(to)) {
			// A replica that knows no reachable leader and reaches no
			// majority of the group's replicas: no election can succeed on
			// its side, so refuse now rather than at the deadline. (A leader
			// it can still reach would be tried again instead: in a bridge
			// partition it may hold a majority this node cannot see.)
			if r := len(n.upReplicas(rt.p.Replicas)); r <= len(rt.p.Replicas)/2 {
				return fmt.Errorf("%w: partition %s: %s reaches %d of its %d replicas %v, no majority (minority side of a partition)",
					kverrors.ErrUnavailable, pid, n.cfg.ID, r, len(rt.p.Replicas), rt.p.Replicas)
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

func (n *Node) forwardTo(ctx context.Context, to string, h *api.RequestHeader,
	forward func(ctx context.Context, c api.KVClient, h *api.RequestHeader) error) error {
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

// Get returns the current value of a key.
func (n *Node) Get(ctx context.Context, req *api.GetRequest) (*api.GetResponse, error) {
	rt, err := n.route(req.GetKey(), req.GetHeader())
	if err != nil {
		return nil, err
	}
	if rt.p.Keyspace.Mode == consistency.AP {
		return n.apGet(ctx, rt, req)
	}
	var resp *api.GetResponse
	err = n.serve(ctx, rt, req.GetHeader(), rt.level == consistency.Linearizable,
		func(ctx context.Context, g *cp.Group) error {
			var rc *api.Receipt
			if g == nil {
				rc = n.receipt(rt)
			} else if rt.level == consistency.Linearizable && !n.cfg.UnsafeLocalReads {
				idx, err := g.ReadBarrier(ctx)
				if err != nil {
					return err
				}
				rc = n.cpReceipt(rt, g, idx, true)
			} else {
				rc = n.cpReceipt(rt, g, 0, false)
			}
			rec, found, err := n.replica(rt.p).Get(req.GetKey())
			if err != nil {
				return err
			}
			if !found || rec.Tombstone {
				return fmt.Errorf("%w: key %q", kverrors.ErrNotFound, req.GetKey())
			}
			resp = &api.GetResponse{Receipt: rc,
				Kv: &api.KeyValue{Key: req.GetKey(), Value: rec.Value, Version: rec.Version, Timestamp: uint64(rec.Timestamp)}}
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

// write runs a mutation: through Raft for cp keyspaces, as a local
// read-modify-write on the owner otherwise.
func (n *Node) write(ctx context.Context, rt route, h *api.RequestHeader, cmd cp.Command,
	forward func(ctx context.Context, c api.KVClient, h *api.RequestHeader) error) (cp.Result, *api.Receipt, error) {
	var res cp.Result
	var rc *api.Receipt
	h = withRequestID(h)
	err := n.serve(ctx, rt, h, true,
		func(ctx context.Context, g *cp.Group) error {
			cmd.Timestamp = n.clock.Now()
			cmd.RequestID = h.GetRequestId()
			if g == nil {
				var err error
				res, err = n.applyLocal(rt, cmd)
				rc = n.receipt(rt)
				return err
			}
			var err error
			res, err = g.Propose(ctx, cmd)
			if err != nil {
				return err
			}
			rc = n.cpReceipt(rt, g, res.Version, true)
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

// applyLocal executes a mutation on this node's copy without replication.
func (n *Node) applyLocal(rt route, cmd cp.Command) (cp.Result, error) {
	var res cp.Result
	_, err := n.replica(rt.p).Update(cmd.Key, func(cur shard.Record, found bool) (shard.Record, error) {
		live := found && !cur.Tombstone
		next := cur.Version + 1
		switch cmd.Op {
		case cp.OpDelete:
			if !live {
				res = cp.Result{Version: cur.Version}
				return cur, errNoChange
			}
			res = cp.Result{Version: next, Timestamp: cmd.Timestamp, Existed: true}
			return shard.Record{Tombstone: true, Version: next, Timestamp: cmd.Timestamp}, nil
		case cp.OpCAS:
			if cmd.HasExpectedVer && (!live && cmd.ExpectedVersion != 0 || live && cur.Version != cmd.ExpectedVersion) {
				return cur, fmt.Errorf("%w: key %q is at version %d, expected %d", kverrors.ErrConflict, cmd.Key, cur.Version, cmd.ExpectedVersion)
			}
			if cmd.HasExpectedVal && (!live || !bytes.Equal(cur.Value, cmd.ExpectedValue)) {
				return cur, fmt.Errorf("%w: key %q does not hold the expected value %q", kverrors.ErrConflict, cmd.Key, cmd.ExpectedValue)
			}
		}
		res = cp.Result{Version: next, Timestamp: cmd.Timestamp}
		return shard.Record{Value: cmd.Value, Version: next, Timestamp: cmd.Timestamp}, nil
	})
	if errors.Is(err, errNoChange) {
		err = nil
	}
	return res, err
}

// errNoChange aborts an Update that has nothing to write.
var errNoChange = errors.New("no change")

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
	if rt.p.Keyspace.Mode == consistency.AP {
		res, rc, _, err := n.apWrite(ctx, rt, withRequestID(req.GetHeader()), req.GetKey(), req.GetContext(), consistency.Value{Data: req.GetValue()},
			func(ctx context.Context, c api.KVClient, h *api.RequestHeader) error {
				var err error
				fwd, err = c.Put(ctx, &api.PutRequest{Header: h, Key: req.GetKey(), Value: req.GetValue(), Context: req.GetContext()})
				return err
			})
		if err != nil {
			return nil, err
		}
		if fwd != nil {
			n.forwarded(fwd.GetReceipt())
			return fwd, nil
		}
		w, _ := res.Clock.LWW()
		return &api.PutResponse{Version: w.Dot.Counter, Timestamp: uint64(w.Timestamp), Receipt: rc}, nil
	}
	res, rc, err := n.write(ctx, rt, req.GetHeader(), cp.Command{Op: cp.OpPut, Key: req.GetKey(), Value: req.GetValue()},
		func(ctx context.Context, c api.KVClient, h *api.RequestHeader) error {
			var err error
			fwd, err = c.Put(ctx, &api.PutRequest{Header: h, Key: req.GetKey(), Value: req.GetValue()})
			return err
		})
	if err != nil {
		return nil, err
	}
	if fwd != nil {
		n.forwarded(fwd.GetReceipt())
		return fwd, nil
	}
	return &api.PutResponse{Version: res.Version, Timestamp: uint64(res.Timestamp), Receipt: rc}, nil
}

// Delete removes a key, leaving a tombstone.
func (n *Node) Delete(ctx context.Context, req *api.DeleteRequest) (*api.DeleteResponse, error) {
	rt, err := n.route(req.GetKey(), req.GetHeader())
	if err != nil {
		return nil, err
	}
	var fwd *api.DeleteResponse
	if rt.p.Keyspace.Mode == consistency.AP {
		res, rc, _, err := n.apWrite(ctx, rt, withRequestID(req.GetHeader()), req.GetKey(), req.GetContext(), consistency.Value{Tombstone: true},
			func(ctx context.Context, c api.KVClient, h *api.RequestHeader) error {
				var err error
				fwd, err = c.Delete(ctx, &api.DeleteRequest{Header: h, Key: req.GetKey(), Context: req.GetContext()})
				return err
			})
		if err != nil {
			return nil, err
		}
		if fwd != nil {
			n.forwarded(fwd.GetReceipt())
			return fwd, nil
		}
		return &api.DeleteResponse{Existed: res.HadLive, Receipt: rc}, nil
	}
	res, rc, err := n.write(ctx, rt, req.GetHeader(), cp.Command{Op: cp.OpDelete, Key: req.GetKey()},
		func(ctx context.Context, c api.KVClient, h *api.RequestHeader) error {
			var err error
			fwd, err = c.Delete(ctx, &api.DeleteRequest{Header: h, Key: req.GetKey()})
			return err
		})
	if err != nil {
		return nil, err
	}
	if fwd != nil {
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
	cmd := cp.Command{Op: cp.OpCAS, Key: req.GetKey(), Value: req.GetValue()}
	if req.ExpectedValue != nil {
		cmd.HasExpectedVal, cmd.ExpectedValue = true, req.ExpectedValue
	}
	if req.ExpectedVersion != nil {
		cmd.HasExpectedVer, cmd.ExpectedVersion = true, *req.ExpectedVersion
	}
	var fwd *api.CASResponse
	res, rc, err := n.write(ctx, rt, req.GetHeader(), cmd,
		func(ctx context.Context, c api.KVClient, h *api.RequestHeader) error {
			var err error
			fwd, err = c.CAS(ctx, &api.CASRequest{Header: h, Key: req.GetKey(), ExpectedValue: req.ExpectedValue,
				ExpectedVersion: req.ExpectedVersion, Value: req.GetValue()})
			return err
		})
	if err != nil {
		return nil, err
	}
	if fwd != nil {
		n.forwarded(fwd.GetReceipt())
		return fwd, nil
	}
	return &api.CASResponse{Version: res.Version, Timestamp: uint64(res.Timestamp), Receipt: rc}, nil
}

// Scan lists keys with a prefix. The coordinating node asks, for every
// partition of the keyspace, the replica that must serve it (the leader for
// linearizable cp scans) and merges the answers in key order.
func (n *Node) Scan(ctx context.Context, req *api.ScanRequest) (*api.ScanResponse, error) {
	if err := n.ready(); err != nil {
		return nil, err
	}
	prefix := req.GetPrefix()
	ksName, err := ring.SplitKeyspace(prefix)
	if err != nil {
		return nil, err
	}
	ks, ok := n.r().Keyspace(ksName)
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
	var parts []ring.PartitionInfo
	for _, p := range n.r().Partitions(ksName) {
		if p.Err == "" && len(p.Replicas) > 0 && (req.GetPartition() == "" || p.ID.String() == req.GetPartition()) {
			parts = append(parts, p)
		}
	}
	if req.GetPartition() != "" && len(parts) == 0 {
		return nil, fmt.Errorf("%w: partition %q is not in the map of %s", kverrors.ErrStaleEpoch, req.GetPartition(), n.cfg.ID)
	}
	rc := &api.Receipt{Keyspace: ks.Name, Mode: string(ks.Mode), Level: string(lvl), Coordinator: n.cfg.ID,
		ServedBy: n.cfg.ID, Epoch: n.r().Epoch()}

	type result struct {
		kvs  []*api.KeyValue
		more bool // the serving node cut its answer at the limit
		by   string
		err  error
	}
	results := make([]result, len(parts))
	var wg sync.WaitGroup
	for i, p := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rt := route{p: ring.Placement{Keyspace: ks, Partition: p.ID, Replicas: p.Replicas}, level: lvl}
			h := req.GetHeader()
			if h == nil {
				h = &api.RequestHeader{}
			}
			res := &results[i]
			res.err = n.serve(ctx, rt, h, lvl == consistency.Linearizable,
				func(ctx context.Context, g *cp.Group) error {
					if g != nil && lvl == consistency.Linearizable && !n.cfg.UnsafeLocalReads {
						if _, err := g.ReadBarrier(ctx); err != nil {
							return err
						}
					}
					res.by = n.cfg.ID
					var derr error
					err := n.store.Replica(p.ID.String()).Scan(prefix, req.GetStartAfter(), limit+1, false, func(key string, rec shard.Record) bool {
						if ks.Mode == consistency.AP {
							// ap scans read one replica (level one) and show the
							// last writer's value of each key.
							d, err := consistency.DecodeDVV(rec.Value)
							if err != nil {
								derr = fmt.Errorf("%w: key %q: %v", kverrors.ErrInternal, key, err)
								return false
							}
							v := ap.Resolve(d, ks.Resolve == ring.ResolveLWW)
							if !v.Found {
								return true
							}
							res.kvs = append(res.kvs, &api.KeyValue{Key: key, Value: v.Newest.Data, Version: v.Newest.Dot.Counter, Timestamp: uint64(v.Newest.Timestamp)})
							return true
						}
						res.kvs = append(res.kvs, &api.KeyValue{Key: key, Value: rec.Value, Version: rec.Version, Timestamp: uint64(rec.Timestamp)})
						return true
					})
					if err == nil {
						err = derr
					}
					return err
				},
				func(ctx context.Context, c api.KVClient, h *api.RequestHeader) error {
					resp, err := c.Scan(ctx, &api.ScanRequest{Header: h, Prefix: prefix, StartAfter: req.GetStartAfter(),
						Limit: uint32(limit), Partition: p.ID.String()})
					if err != nil {
						return err
					}
					res.kvs, res.more, res.by = resp.GetKvs(), resp.GetMore(), resp.GetReceipt().GetServedBy()
					return nil
				})
		}()
	}
	wg.Wait()
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
	}
	for id := range acked {
		rc.AckedBy = append(rc.AckedBy, id)
	}
	sort.Strings(rc.AckedBy)
	rc.MajorityReachable = ks.Mode == consistency.CP && lvl == consistency.Linearizable
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
