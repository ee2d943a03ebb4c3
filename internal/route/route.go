// Package route is how a node runs a KV request. A Router resolves key ->
// keyspace -> partition -> the replicator of the keyspace's mode (the one
// place where the mode is chosen), runs the request here when this node
// serves the partition, and otherwise forwards it along the one forwarding
// path every operation shares: leader-based modes wait for an election until
// shortly before the deadline and refuse at once on a side without a
// majority; leaderless ones try each replica once, each live one with a
// share of the time left.
//
// Forwarding contract: any node accepts any request. A request is forwarded
// at most maxHops times (client -> any node -> a replica -> the leader); a
// node that receives one forwarded that often answers ErrStaleEpoch instead
// of forwarding again, so disagreeing maps can never make a request loop.
package route

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/internal/kverrors"
	"github.com/capkv/capkv/internal/trace"
	"github.com/capkv/capkv/replication"
	"github.com/capkv/capkv/ring"
)

// Config wires a Router.
type Config struct {
	Self string
	// Ring is the newest cluster map (epoch 0: none yet); Ready fails
	// until there is one.
	Ring  func() *ring.Ring
	Ready func() error
	// Refresh reads the newest map from the metadata group; it is asked
	// before a key or prefix is refused for an unknown keyspace, which may
	// have been created since this node's map (nil: never).
	Refresh func(ctx context.Context) error
	// Modes is the replicator of each keyspace mode.
	Modes      map[consistency.Mode]replication.Replicator
	MaxKeySize int
	// KV returns a client of node id's KV service, failing at once when the
	// failure detector holds the node down.
	KV func(id string) (api.KVClient, error)
	// Down and Reachable are the failure detector's view.
	Down      func(id string) bool
	Reachable func(ids []string) []string
	// Stop is closed when the node begins to stop: a request waiting for
	// an election then ends at once instead of holding the node's graceful
	// stop until its deadline (nil: never).
	Stop <-chan struct{}
}

// Router routes and forwards the KV requests of one node.
type Router struct{ cfg Config }

// New returns a router.
func New(cfg Config) *Router { return &Router{cfg: cfg} }

// Ready fails until this node has a cluster map.
func (r *Router) Ready() error { return r.cfg.Ready() }

// maxHops bounds forwarding: client -> any node -> a replica -> the leader.
const maxHops = 2

// leaderWait is how often a replica without a known leader looks again.
const leaderWait = 20 * time.Millisecond

// Route is where a request goes: its target (placement and effective
// level) and the replicator of the keyspace's mode.
type Route struct {
	T   replication.Target
	Rep replication.Replicator
}

// Key resolves key -> keyspace -> partition -> replicator.
func (r *Router) Key(ctx context.Context, key string, h *api.RequestHeader) (Route, error) {
	if err := r.Ready(); err != nil {
		return Route{}, err
	}
	if len(key) > r.cfg.MaxKeySize {
		return Route{}, fmt.Errorf("%w: key is %d bytes, limit is %d", kverrors.ErrTooLarge, len(key), r.cfg.MaxKeySize)
	}
	p, err := r.cfg.Ring().Locate(key)
	if errors.Is(err, kverrors.ErrUnknownKeyspace) {
		if err = r.refresh(ctx, err); err == nil {
			p, err = r.cfg.Ring().Locate(key)
		}
	}
	if err != nil {
		return Route{}, err
	}
	return r.Placement(p, h)
}

// Placement routes a known placement (scans, watches and repairs name
// partitions, not keys).
func (r *Router) Placement(p ring.Placement, h *api.RequestHeader) (Route, error) {
	lvl, err := r.Level(p.Keyspace, h)
	if err != nil {
		return Route{}, err
	}
	rep, ok := r.cfg.Modes[p.Keyspace.Mode]
	if !ok {
		return Route{}, fmt.Errorf("%w: keyspace %q has mode %q, which this node does not run", kverrors.ErrInternal, p.Keyspace.Name, p.Keyspace.Mode)
	}
	return Route{T: replication.Target{Placement: p, Level: lvl}, Rep: rep}, nil
}

// Level is the effective consistency level of a request to keyspace ks.
func (r *Router) Level(ks *ring.KeyspaceConfig, h *api.RequestHeader) (consistency.Level, error) {
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

// Receipt is the CAP receipt of a request this node served: where it was
// routed, plus what the mode reported it cost.
func (r *Router) Receipt(rt Route, m replication.Receipt) *api.Receipt {
	p := rt.T.Placement
	level := rt.T.Level
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
		ServedBy:          r.cfg.Self,
		Coordinator:       r.cfg.Self,
		Epoch:             r.cfg.Ring().Epoch(),
		Hinted:            m.Hinted,
		SloppyQuorum:      m.Sloppy,
		Siblings:          uint32(m.Siblings),
		AppliedIndex:      m.AppliedIndex,
		StalenessMs:       m.StalenessMs,
		MajorityReachable: m.MajorityReachable,
	}
}

// Forwarded marks a receipt that came back through this node.
func (r *Router) Forwarded(rc *api.Receipt) {
	if rc != nil && rc.Coordinator != r.cfg.Self {
		rc.Coordinator = r.cfg.Self
		rc.Forwarded = true
	}
}

func forwardHeader(h *api.RequestHeader, epoch uint64) *api.RequestHeader {
	out := &api.RequestHeader{Epoch: epoch, Hops: h.GetHops() + 1}
	if h != nil {
		out.Consistency = h.Consistency
		out.RequestId = h.RequestId
		out.Identity = h.Identity // the client's, which the next node checks too
	}
	return out
}

// Forward sends a request on to another node's KV service.
type Forward func(ctx context.Context, c api.KVClient, h *api.RequestHeader) error

// Call runs a request here when this node serves its partition (local) and
// otherwise forwards it, following the mode's policy. This is the one
// forwarding path of every KV operation.
func (r *Router) Call(ctx context.Context, rt Route, h *api.RequestHeader, local func(ctx context.Context) error, forward Forward) (err error) {
	ctx, span := trace.Start(ctx, "route")
	if span.IsRecording() {
		p := rt.T.Placement
		span.SetAttributes(trace.KeyKeyspace.String(p.Keyspace.Name), trace.KeyPartition.String(p.Partition.String()),
			trace.KeyMode.String(string(p.Keyspace.Mode)), trace.KeyLevel.String(string(rt.T.Level)), trace.KeyNode.String(r.cfg.Self))
	}
	defer func() { trace.End(span, err) }()
	if !rt.Rep.Forwarding().WaitForLeader {
		if rt.Rep.Serves(rt.T) {
			return local(ctx)
		}
		return r.forwardOnce(ctx, rt, h, forward)
	}
	return r.callLeader(ctx, rt, h, local, forward)
}

// callLeader serves a request of a leader-based mode. A replica runs it and
// follows the redirect to the leader it names; any other node rotates
// through the replicas the failure detector does not hold down. It waits for
// an election until shortly before the deadline, then answers Unavailable.
func (r *Router) callLeader(ctx context.Context, rt Route, h *api.RequestHeader, local func(ctx context.Context) error, forward Forward) error {
	ictx, cancel := replication.InnerDeadline(ctx)
	defer cancel()
	pid, replicas := rt.T.Partition(), rt.T.Placement.Replicas
	for attempt := 0; ; attempt++ {
		var to string
		serves := rt.Rep.Serves(rt.T)
		if serves {
			err := local(ictx)
			var rd replication.Redirect
			if !errors.As(err, &rd) {
				return err
			}
			to = rd.RedirectTo()
		} else {
			up := r.cfg.Reachable(replicas)
			if len(up) == 0 {
				return fmt.Errorf("%w: partition %s: no replica of %v is reachable from %s (failure detector)",
					kverrors.ErrUnavailable, pid, replicas, r.cfg.Self)
			}
			to = up[attempt%len(up)]
		}
		if to != "" && to != r.cfg.Self {
			err := r.forwardTo(ictx, to, h, forward)
			if !errors.Is(err, kverrors.ErrUnavailable) || errors.Is(err, kverrors.ErrStaleEpoch) {
				return err
			}
			// The node we forwarded to is unreachable; an election may be
			// under way, or another replica can help.
		}
		if serves && (to == "" || r.cfg.Down(to)) {
			// A replica that knows no reachable leader and reaches no
			// majority of the group's replicas: no election can succeed on
			// its side, so refuse now rather than at the deadline. (A leader
			// it can still reach would be tried again instead: in a bridge
			// partition it may hold a majority this node cannot see.)
			if up := len(r.cfg.Reachable(replicas)); up <= len(replicas)/2 {
				return fmt.Errorf("%w: partition %s: %s reaches %d of its %d replicas %v, no majority (minority side of a partition)",
					kverrors.ErrUnavailable, pid, r.cfg.Self, up, len(replicas), replicas)
			}
		}
		select {
		case <-ictx.Done():
			return fmt.Errorf("%w: partition %s has no leader reachable from %s before the deadline (minority side of a partition, or an election in progress)",
				kverrors.ErrUnavailable, pid, r.cfg.Self)
		case <-time.After(leaderWait):
		case <-r.cfg.Stop:
			return fmt.Errorf("%w: partition %s: node %s is shutting down", kverrors.ErrUnavailable, pid, r.cfg.Self)
		}
	}
}

// forwardOnce sends a request of a leaderless mode to the first replica
// that answers.
func (r *Router) forwardOnce(ctx context.Context, rt Route, h *api.RequestHeader, forward Forward) error {
	var errs []error
	maybe := false // some attempt may have reached a replica and been applied
	// Replicas the failure detector holds down are tried last (they fail at
	// once, without a network round trip), so the live ones share the time.
	replicas := slices.Clone(rt.T.Placement.Replicas)
	slices.SortStableFunc(replicas, func(a, b string) int { return cmpBool(r.cfg.Down(a), r.cfg.Down(b)) })
	live := len(r.cfg.Reachable(replicas))
	for i, to := range replicas {
		// A replica cut off by a partition may swallow the request until the
		// deadline: give each live try a share of the time left, so the next
		// replica is still tried (ap promises service while any answers).
		// Down replicas come last and fail at once without a share.
		actx, cancel := ctx, context.CancelFunc(func() {})
		if dl, ok := ctx.Deadline(); ok && i < live-1 {
			actx, cancel = context.WithTimeout(ctx, max(time.Until(dl)/time.Duration(live-i), 100*time.Millisecond))
		}
		err := r.forwardTo(actx, to, h, forward)
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
			kverrors.ErrIndeterminate, rt.T.Partition(), r.cfg.Self, errors.Join(errs...))
	}
	return fmt.Errorf("%w: no replica of %s is reachable from %s: %w", kverrors.ErrUnavailable, rt.T.Partition(), r.cfg.Self, errors.Join(errs...))
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

func (r *Router) forwardTo(ctx context.Context, to string, h *api.RequestHeader, forward Forward) error {
	if h.GetHops() >= maxHops {
		return fmt.Errorf("%w: node %s received a request already forwarded %d times; its owner is %s (epoch %d, sender's %d)",
			kverrors.ErrStaleEpoch, r.cfg.Self, h.GetHops(), to, r.cfg.Ring().Epoch(), h.GetEpoch())
	}
	ctx, span := trace.Start(ctx, "forward")
	if span.IsRecording() {
		span.SetAttributes(trace.KeyNode.String(to))
	}
	c, err := r.cfg.KV(to)
	if err != nil {
		trace.End(span, err)
		return err
	}
	err = forward(ctx, c, forwardHeader(h, r.cfg.Ring().Epoch()))
	trace.End(span, err)
	if err != nil {
		return fmt.Errorf("via %s: %w", to, kverrors.FromStatus(err))
	}
	return nil
}

// WithRequestID gives a write a request ID if its client did not, so that
// a forward retried after a broken connection is applied at most once.
func WithRequestID(h *api.RequestHeader) *api.RequestHeader {
	if h.GetRequestId() != "" {
		return h
	}
	var b [12]byte
	rand.Read(b[:])
	out := &api.RequestHeader{RequestId: hex.EncodeToString(b[:])}
	if h != nil {
		out.Epoch, out.Consistency, out.Hops, out.Identity = h.Epoch, h.Consistency, h.Hops, h.Identity
	}
	return out
}

// Keyspace resolves the keyspace a prefix belongs to.
func (r *Router) Keyspace(ctx context.Context, prefix string) (*ring.KeyspaceConfig, error) {
	if err := r.Ready(); err != nil {
		return nil, err
	}
	name, err := ring.SplitKeyspace(prefix)
	if err != nil {
		return nil, err
	}
	ks, ok := r.cfg.Ring().Keyspace(name)
	if !ok {
		if err := r.refresh(ctx, fmt.Errorf("%w: %q", kverrors.ErrUnknownKeyspace, name)); err != nil {
			return nil, err
		}
		if ks, ok = r.cfg.Ring().Keyspace(name); !ok {
			return nil, fmt.Errorf("%w: %q", kverrors.ErrUnknownKeyspace, name)
		}
	}
	return ks, nil
}

// refresh asks the metadata group for the newest map after unknown, an
// unknown-keyspace error: nil means look again; otherwise the error to
// return (unknown, saying that the metadata group could not be asked).
func (r *Router) refresh(ctx context.Context, unknown error) error {
	if r.cfg.Refresh == nil {
		return unknown
	}
	if err := r.cfg.Refresh(ctx); err != nil {
		return fmt.Errorf("%w (the metadata group could not be asked for a newer map: %v)", unknown, err)
	}
	return nil
}
