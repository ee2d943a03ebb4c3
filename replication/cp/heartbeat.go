package cp

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/capkv/capkv/api"
)

// HeartbeatWindow is how long a periodic heartbeat waits for others to the
// same node before they go out together. hashicorp/raft sends one every
// 150-300 ms per group and follower (a leader's HeartbeatTimeout/10 to /5,
// see Tuning.LeaderHeartbeatTimeout), so a node leading many groups would
// make one call per group; with the window it makes at most one per window
// and follower. The delay is small next to the lease (500 ms) and the
// follower timeout (500 ms): the longest gap, 300 ms plus the window, keeps
// 175 ms to spare. At 10 ms, paced heartbeats (a few per window) were hardly
// gathered any more (1.4 per call for 8 groups per node pair); 25 ms gathers
// about twice as many.
//
// A heartbeat that follows the group's previous one to the same node sooner
// than the periodic interval is not periodic: raft sends those to confirm
// its leadership for a linearizable read (VerifyLeader), and a read must not
// wait for the window. It goes at once, and takes whatever is gathered along.
const HeartbeatWindow = 25 * time.Millisecond

// hbRetryBatches is how long a node that answered Unimplemented (an older
// version) gets single heartbeat calls before batches are tried again.
const hbRetryBatches = time.Minute

// hbFrameTimeout bounds one group's answer within a batch: a group that is
// shutting down must not hold up the other groups' heartbeats.
const hbFrameTimeout = 100 * time.Millisecond

// hbQueue gathers the heartbeats for one target node.
type hbQueue struct {
	mu          sync.Mutex
	pending     []*hbCall
	timer       *time.Timer // the window's flush, while one is set
	unsupported time.Time   // until then the target gets one call per heartbeat (it predates the RPC)
}

type hbCall struct {
	frame *api.RaftFrame
	out   chan hbResult
}

type hbResult struct {
	frame *api.RaftFrame
	err   error
}

func (n *Network) hbQueueFor(target string) *hbQueue {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.mu.hb == nil {
		n.mu.hb = map[string]*hbQueue{}
	}
	q := n.mu.hb[target]
	if q == nil {
		q = &hbQueue{}
		n.mu.hb[target] = q
	}
	return q
}

// heartbeat sends one heartbeat frame to target within the next batch and
// returns the answer. ok is false when the target cannot take batches: send
// it alone.
func (n *Network) heartbeat(ctx context.Context, target string, f *api.RaftFrame, urgent bool) (resp *api.RaftFrame, ok bool, err error) {
	q := n.hbQueueFor(target)
	c := &hbCall{frame: f, out: make(chan hbResult, 1)}
	q.mu.Lock()
	if time.Now().Before(q.unsupported) {
		q.mu.Unlock()
		return nil, false, nil
	}
	q.pending = append(q.pending, c)
	switch {
	case urgent:
		n.hbUrgent.Add(1)
		if q.timer != nil {
			q.timer.Stop()
			q.timer = nil
		}
		q.mu.Unlock()
		go n.flushHeartbeats(target, q)
	case q.timer == nil:
		q.timer = time.AfterFunc(HeartbeatWindow, func() { n.flushHeartbeats(target, q) })
		q.mu.Unlock()
	default:
		q.mu.Unlock()
	}
	select {
	case r := <-c.out:
		return r.frame, true, r.err
	case <-ctx.Done():
		return nil, true, ctx.Err()
	}
}

// flushHeartbeats sends what gathered for target in one call. Fault rules
// apply to the link, so to every heartbeat of the batch alike.
func (n *Network) flushHeartbeats(target string, q *hbQueue) {
	q.mu.Lock()
	calls := q.pending
	q.pending = nil
	if q.timer != nil {
		q.timer.Stop()
		q.timer = nil
	}
	q.mu.Unlock()
	if len(calls) == 0 {
		return
	}
	answer := func(i int, r hbResult) { calls[i].out <- r } // buffered: never blocks
	fail := func(err error) {
		for i := range calls {
			answer(i, hbResult{err: err})
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if err := n.faults.Deliver(ctx, n.self, target); err != nil {
		fail(err)
		return
	}
	cc, err := n.dial(target)
	if err != nil {
		fail(err)
		return
	}
	b := &api.RaftBatch{From: n.self, Frames: make([]*api.RaftFrame, len(calls))}
	for i, c := range calls {
		b.Frames[i] = c.frame
	}
	out, err := api.NewRaftClient(cc).Heartbeats(ctx, b)
	if status.Code(err) == codes.Unimplemented {
		q.mu.Lock()
		q.unsupported = time.Now().Add(hbRetryBatches)
		q.mu.Unlock()
	}
	if err != nil {
		fail(fmt.Errorf("raft heartbeats -> %s: %w", target, err))
		return
	}
	if len(out.GetFrames()) != len(calls) {
		fail(fmt.Errorf("raft heartbeats -> %s: %d answers to %d heartbeats", target, len(out.GetFrames()), len(calls)))
		return
	}
	for i, f := range out.GetFrames() {
		answer(i, hbResult{frame: f})
	}
}

// Heartbeats serves a batch of heartbeats, every group at once (each is
// answered by raft's heartbeat fast path, without touching the disk); a group
// that does not answer within hbFrameTimeout gets an error, the others their
// answers.
func (n *Network) Heartbeats(ctx context.Context, b *api.RaftBatch) (*api.RaftBatch, error) {
	if err := n.inbound(ctx, b.GetFrom()); err != nil {
		return nil, err
	}
	out := &api.RaftBatch{From: n.self, Frames: make([]*api.RaftFrame, len(b.GetFrames()))}
	var wg sync.WaitGroup
	for i, f := range b.GetFrames() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fctx, cancel := context.WithTimeout(ctx, hbFrameTimeout)
			defer cancel()
			r, err := n.dispatch(fctx, f, nil)
			if err != nil {
				r = &api.RaftFrame{Group: f.GetGroup(), Kind: f.GetKind(), From: n.self, Error: err.Error()}
			}
			out.Frames[i] = r
		}()
	}
	wg.Wait()
	if err := n.faults.Deliver(ctx, n.self, b.GetFrom()); err != nil {
		return nil, err // the answers are lost on the way back
	}
	return out, nil
}
