package ap

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/ring"
)

// runner is the ap mode's background work on one node: hinted handoff (every
// HandoffInterval, each hint offered to its target) and anti-entropy (every
// AntiEntropyInterval, a repair of each ap partition whose preference list
// starts with this node, so each partition has one repairer).
type runner struct {
	r    *Replicator
	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

func newRunner(r *Replicator) *runner { return &runner{r: r, stop: make(chan struct{})} }

func (u *runner) start() {
	handoff := u.r.cfg.HandoffInterval
	if handoff <= 0 {
		handoff = time.Second
	}
	u.every(handoff, u.handoff)
	u.every(handoff, u.retire)
	if u.r.cfg.AntiEntropyInterval > 0 {
		u.every(u.r.cfg.AntiEntropyInterval, u.antiEntropy)
	}
}

func (u *runner) close() {
	u.once.Do(func() { close(u.stop) })
	u.wg.Wait()
}

// every runs fn each period until close.
func (u *runner) every(period time.Duration, fn func()) {
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-u.stop:
				return
			case <-t.C:
			}
			fn()
		}
	}()
}

// handoff offers every pending hint to its target once.
func (u *runner) handoff() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	k, err := u.r.hints.Handoff(ctx, func(ctx context.Context, h Hint) error {
		req := &api.ReplicaStoreRequest{Partition: h.Partition, Key: h.Key, Clock: h.Clock.Encode(nil), Lww: u.lww(h.Partition)}
		targets := u.hintTargets(h)
		for _, to := range targets {
			if _, err := u.r.transport.Store(ctx, to, req); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		u.r.cfg.Log.Warn("hinted handoff", "err", err)
	} else if k > 0 {
		u.r.cfg.Log.Info("hinted handoff", "delivered", k)
	}
}

// hintTargets is where a hint goes: its target, unless the partition
// moved away from it since (rebalancing), then every current replica and
// joining node, so that a write a fallback kept is not lost with the move.
func (u *runner) hintTargets(h Hint) []string {
	pid, err := ring.ParsePartitionID(h.Partition)
	if err != nil {
		return []string{h.Target}
	}
	p, err := u.r.cfg.Ring().PlacementOf(pid)
	if err != nil || slices.Contains(p.Replicas, h.Target) || slices.Contains(p.Joining, h.Target) {
		return []string{h.Target}
	}
	return slices.Concat(p.Replicas, p.Joining)
}

func (u *runner) lww(partition string) bool {
	pid, err := ring.ParsePartitionID(partition)
	if err != nil {
		return false
	}
	ks, ok := u.r.cfg.Ring().Keyspace(pid.Keyspace)
	return ok && ks.Resolve == ring.ResolveLWW
}

// antiEntropy repairs the ap partitions this node heads the preference list of.
func (u *runner) antiEntropy() {
	rg := u.r.cfg.Ring()
	if rg.Epoch() == 0 {
		return // no cluster map yet
	}
	for _, ks := range rg.Keyspaces() {
		if ks.Mode != consistency.AP {
			continue
		}
		for _, p := range rg.Partitions(ks.Name) {
			if p.Err != "" || p.Replicas[0] != u.r.cfg.Self {
				continue
			}
			select {
			case <-u.stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			st, err := u.r.coord.Repair(ctx, u.r.transport, p.ID.String(), p.Replicas, ks.Resolve == ring.ResolveLWW)
			cancel()
			if err != nil {
				u.r.cfg.Log.Debug("anti-entropy", "partition", p.ID.String(), "err", err)
			} else if st.Pulled+st.Pushed+st.Purged > 0 {
				u.r.cfg.Log.Info("anti-entropy", "partition", p.ID.String(), "leaves", st.LeavesDiffering, "pulled", st.Pulled, "pushed", st.Pushed, "purged", st.Purged)
			}
		}
	}
}
