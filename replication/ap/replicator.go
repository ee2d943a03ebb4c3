package ap

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"time"

	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/internal/kverrors"
	"github.com/capkv/capkv/internal/watch"
	"github.com/capkv/capkv/replication"
	"github.com/capkv/capkv/ring"
	"github.com/capkv/capkv/shard"
)

// Config wires the ap mode on one node.
type Config struct {
	Self  string
	Store *shard.Store
	// Clock is the node's HLC: it stamps writes and follows what replicas receive.
	Clock *consistency.Clock
	// Watch, when set, receives every change merged here.
	Watch *watch.Hub
	// Dial reaches other nodes' Replica service.
	Dial Dialer
	// Ring is the current cluster map (preference lists, fallback candidates).
	Ring func() *ring.Ring
	// Down reports nodes the failure detector holds unreachable: they are
	// the last fallbacks tried for a hint.
	Down func(node string) bool
	// AntiEntropyInterval: how often this node repairs the partitions whose
	// preference list it heads (0: only on demand).
	AntiEntropyInterval time.Duration
	// HandoffInterval: how often hints are offered to their targets (0: 1s).
	HandoffInterval time.Duration
	// TombstoneGrace: see DefaultTombstoneGrace (0: the default).
	TombstoneGrace time.Duration
	Log            *slog.Logger
}

// Replicator is the ap mode's replication.Replicator and the owner of its
// background work: hinted handoff and anti-entropy run from Start to Close.
type Replicator struct {
	cfg       Config
	clocks    *ClockStore
	hints     *HintStore
	coord     *Coordinator
	transport Transport
	server    *Server
	runner    *runner
}

var _ replication.Replicator = (*Replicator)(nil)

// New builds the ap mode of a node; Start begins its background loops.
func New(cfg Config) *Replicator {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Down == nil {
		cfg.Down = func(string) bool { return false }
	}
	r := &Replicator{cfg: cfg, clocks: NewClockStore(cfg.Store), hints: NewHintStore(cfg.Store), transport: Transport{Dial: cfg.Dial}}
	r.clocks.Watch = cfg.Watch
	r.coord = NewCoordinator(cfg.Self, r.clocks, r.hints, r.transport, cfg.Log)
	r.coord.Clock = cfg.Clock
	r.coord.TombstoneGrace = cfg.TombstoneGrace
	r.server = &Server{Clocks: r.clocks, Hints: r.hints, Clock: cfg.Clock, Owns: r.owns}
	r.runner = newRunner(r)
	return r
}

// Server is the Replica service to register on the node's gRPC server.
func (r *Replicator) Server() *Server { return r.server }

// Start begins hinted handoff and periodic anti-entropy.
func (r *Replicator) Start() { r.runner.start() }

// Close stops the background loops and waits for them and for the stores
// and repairs that outlived their requests.
func (r *Replicator) Close() {
	r.runner.close()
	r.coord.Close()
}

// HintsPending counts the hints this node holds for unreachable replicas.
func (r *Replicator) HintsPending() (int, error) { return r.hints.Count() }

// Forwarding: any replica serves; a node that holds none tries each once.
func (r *Replicator) Forwarding() replication.Forwarding { return replication.Forwarding{} }

// Serves reports whether this node is in t's preference list: only a
// replica coordinates, so dots are minted where the key's clock lives.
func (r *Replicator) Serves(t replication.Target) bool {
	return slices.Contains(t.Placement.Replicas, r.cfg.Self)
}

func lww(t replication.Target) bool { return t.Placement.Keyspace.Resolve == ring.ResolveLWW }

func (r *Replicator) receipt(t replication.Target, acked, hinted []string, sloppy bool, siblings int) replication.Receipt {
	return replication.Receipt{
		AckedBy:           append(append([]string(nil), acked...), hinted...),
		Hinted:            len(hinted) > 0,
		Sloppy:            sloppy,
		Siblings:          siblings,
		MajorityReachable: len(acked) > len(t.Placement.Replicas)/2,
	}
}

// Get reads the key from the level's count of replicas, merges their clocks
// (repairing the ones behind) and resolves them into a value and siblings.
func (r *Replicator) Get(ctx context.Context, t replication.Target, key string) (replication.ReadResult, error) {
	res, err := r.coord.Read(ctx, ReadRequest{Partition: t.Partition(), Key: key, Replicas: t.Placement.Replicas, Level: t.Level, LWW: lww(t)})
	if err != nil {
		return replication.ReadResult{}, err
	}
	v := Resolve(res.Clock, lww(t))
	out := replication.ReadResult{Receipt: r.receipt(t, res.Acked, nil, false, len(v.Live))}
	if !v.Found {
		return out, fmt.Errorf("%w: key %q", kverrors.ErrNotFound, key)
	}
	out.Item = replication.Item{Key: key, Value: v.Newest.Data, Timestamp: uint64(v.Newest.Timestamp), Version: v.Newest.Dot.Counter}
	out.Context = v.Context.Encode(nil)
	out.DeletedConcurrently = v.Deleted
	for _, s := range v.Live {
		out.Siblings = append(out.Siblings, replication.Sibling{Value: s.Data, Timestamp: uint64(s.Timestamp), Dot: s.Dot.String()})
	}
	return out, nil
}

// Write coordinates a put or delete: the dot is minted here and the clock
// sent to every replica, with hints on fallbacks for the unreachable ones.
func (r *Replicator) Write(ctx context.Context, t replication.Target, w replication.Write) (replication.WriteResult, error) {
	var v consistency.Value
	switch w.Op {
	case replication.OpPut:
		v.Data = w.Value
	case replication.OpDelete:
		v.Tombstone = true
	case replication.OpCAS:
		return replication.WriteResult{}, fmt.Errorf("%w: compare-and-set needs a cp keyspace; %q is %s (leaderless replicas cannot agree on one current value)",
			kverrors.ErrWrongMode, t.Placement.Keyspace.Name, t.Placement.Keyspace.Mode)
	default:
		return replication.WriteResult{}, fmt.Errorf("%w: write op %d", kverrors.ErrInvalidArgument, w.Op)
	}
	var causal consistency.VV
	if len(w.Context) > 0 {
		var err error
		if causal, err = consistency.DecodeVV(w.Context); err != nil {
			return replication.WriteResult{}, fmt.Errorf("%w: causal context: %v", kverrors.ErrInvalidArgument, err)
		}
	}
	// The coordinator stamps the write with the HLC under the key's lock.
	// During a move the joining nodes take every write too, and their acks
	// count towards the level over replicas and joiners together: nothing
	// acknowledged can be missed by the switch, since what the old replicas
	// hold is streamed to the joiners and handed over again when they leave.
	res, err := r.coord.Write(ctx, WriteRequest{Partition: t.Partition(), Key: w.Key, Replicas: slices.Concat(t.Placement.Replicas, t.Placement.Joining),
		Fallbacks: r.fallbacks(t.Placement), Level: t.Level, LWW: lww(t), Context: causal, Value: v,
		MaxSiblings: t.Placement.Keyspace.SiblingCap()})
	if err != nil {
		return replication.WriteResult{}, err
	}
	// Version is this write's dot counter (the dot's node is the serving
	// node): with the context it was sent with, the writer's client knows
	// exactly what it has seen, and its next write supersedes this one
	// without reading first. Siblings counts the live values left, so a
	// delete that left a concurrent value is seen not to have removed it.
	out := replication.WriteResult{Existed: res.HadLive, Version: res.Dot.Counter,
		Receipt: r.receipt(t, res.Acked, res.Hinted, res.Sloppy, len(res.Clock.Live()))}
	if w.Op == replication.OpPut {
		out.Timestamp = uint64(res.Timestamp)
	}
	return out, nil
}

// fallbacks lists the eligible nodes outside the preference list (same
// region when the partition has one), in the order to try for hints.
func (r *Replicator) fallbacks(p ring.Placement) []string {
	var out []string
	for _, nd := range r.cfg.Ring().Topology().Nodes {
		if slices.Contains(p.Replicas, nd.ID) || slices.Contains(p.Joining, nd.ID) || (p.Partition.Region != "" && nd.Region != p.Partition.Region) {
			continue
		}
		out = append(out, nd.ID)
	}
	return FallbackOrder(p.Partition.String(), out, r.cfg.Down)
}

// Scan lists up to limit keys of t's partition with prefix after after from
// this replica alone, each resolved to its last writer's value; the receipt
// says so (level one), whatever level was asked.
func (r *Replicator) Scan(_ context.Context, t replication.Target, prefix, after string, limit int) (replication.ScanResult, error) {
	out := replication.ScanResult{Receipt: replication.Receipt{AckedBy: []string{r.cfg.Self}, Level: consistency.One}}
	var derr error
	err := r.cfg.Store.Replica(t.Partition()).Scan(prefix, after, limit+1, false, func(key string, rec shard.Record) bool {
		d, err := consistency.DecodeDVV(rec.Value)
		if err != nil {
			derr = fmt.Errorf("%w: key %q: %v", kverrors.ErrInternal, key, err)
			return false
		}
		v := Resolve(d, lww(t))
		if v.Found {
			out.Items = append(out.Items, replication.Item{Key: key, Value: v.Newest.Data, Version: v.Newest.Dot.Counter, Timestamp: uint64(v.Newest.Timestamp)})
		}
		return true
	})
	if err == nil {
		err = derr
	}
	if len(out.Items) > limit {
		out.Items, out.More = out.Items[:limit], true
	}
	return out, err
}

// Watch subscribes to what merges change on this replica.
func (r *Replicator) Watch(t replication.Target, prefix string) (*watch.Sub, error) {
	return r.cfg.Watch.Subscribe(t.Partition(), prefix)
}

// Repair makes every replica of t's partition identical to the merge of all
// of them, then collects tombstones every replica holds.
func (r *Replicator) Repair(ctx context.Context, t replication.Target) (replication.RepairResult, error) {
	st, err := r.coord.Repair(ctx, r.transport, t.Partition(), t.Placement.Replicas, lww(t))
	return replication.RepairResult{LeavesDiffering: st.LeavesDiffering, Pulled: st.Pulled, Pushed: st.Pushed, Purged: st.Purged}, err
}

// Adopt has nothing to start (the loops read the newest map on every
// round); it forgets the hints of keyspaces rg no longer has. (Their data is
// removed by the node, whatever the keyspace's mode was.)
func (r *Replicator) Adopt(rg *ring.Ring) error {
	n, err := r.hints.Forget(func(partition string) bool {
		pid, err := ring.ParsePartitionID(partition)
		if err != nil {
			return true // not a keyspace's: not ours to judge
		}
		_, ok := rg.Keyspace(pid.Keyspace)
		return ok
	})
	if n > 0 {
		r.cfg.Log.Info("hints of dropped keyspaces forgotten", "hints", n)
	}
	return err
}
