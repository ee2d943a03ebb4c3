package route

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/internal/kverrors"
	"github.com/capkv/capkv/replication"
	"github.com/capkv/capkv/ring"
)

// The forwarding loops wait for elections and share deadlines out between
// replicas: these tests run them in fake time (testing/synctest), with a
// failure detector and replicas that the test scripts, so each duration is
// exact and no test sleeps for real.

// fakeRep is a replicator of which only the routing policy matters here.
type fakeRep struct {
	replication.Replicator
	leader bool
	serves bool
}

func (f fakeRep) Forwarding() replication.Forwarding {
	return replication.Forwarding{WaitForLeader: f.leader}
}
func (f fakeRep) Serves(replication.Target) bool { return f.serves }

// noLeader is a replica's answer while no leader is known.
type noLeader struct{}

func (noLeader) Error() string      { return "no leader" }
func (noLeader) RedirectTo() string { return "" }

// peerKV names the node a forward went to.
type peerKV struct {
	api.KVClient
	id string
}

type world struct {
	mu      sync.Mutex
	down    map[string]bool
	tried   []string
	started time.Time
	stop    chan struct{} // the node's stop (nil: never)
}

func (w *world) router(t *testing.T) *Router {
	t.Helper()
	rg, err := ring.New(ring.Topology{Epoch: 7}, ring.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return New(Config{
		Self:  "n1",
		Ring:  func() *ring.Ring { return rg },
		Ready: func() error { return nil },
		KV: func(id string) (api.KVClient, error) {
			if w.isDown(id) {
				return nil, kverrors.ErrUnavailable
			}
			return peerKV{id: id}, nil
		},
		Down: w.isDown,
		Reachable: func(ids []string) []string {
			var up []string
			for _, id := range ids {
				if !w.isDown(id) {
					up = append(up, id)
				}
			}
			return up
		},
		Stop: w.stop,
	})
}

func (w *world) isDown(id string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.down[id]
}

func (w *world) elapsed() time.Duration { return time.Since(w.started) }

func route(rep fakeRep) Route {
	return Route{Rep: rep, T: replication.Target{Level: consistency.Linearizable, Placement: ring.Placement{
		Keyspace:  &ring.KeyspaceConfig{Name: "ks"},
		Partition: ring.PartitionID{Keyspace: "ks", Index: 0},
		Replicas:  []string{"n1", "n2", "n3"},
	}}}
}

// A replica that sees no leader but reaches a majority waits for the
// election, and is served as soon as one ends.
func TestLeaderWaitEndsWithTheElection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := &world{down: map[string]bool{}, started: time.Now()}
		r := w.router(t)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		elected := 300 * time.Millisecond
		calls := 0
		err := r.Call(ctx, route(fakeRep{leader: true, serves: true}), nil, func(context.Context) error {
			calls++
			if w.elapsed() < elected {
				return noLeader{}
			}
			return nil
		}, nil)
		if err != nil {
			t.Fatalf("Call: %v", err)
		}
		if got := w.elapsed(); got < elected || got > elected+leaderWait {
			t.Fatalf("served after %v, want within one look (%v) of the election at %v", got, leaderWait, elected)
		}
		if want := int(elected/leaderWait) + 1; calls != want {
			t.Fatalf("%d looks for a leader, want %d (one every %v)", calls, want, leaderWait)
		}
	})
}

// A replica on the minority side refuses at once: no election can succeed
// there, and waiting would only turn a clear answer into a timeout.
func TestMinorityRefusesAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := &world{down: map[string]bool{"n2": true, "n3": true}, started: time.Now()}
		r := w.router(t)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := r.Call(ctx, route(fakeRep{leader: true, serves: true}), nil,
			func(context.Context) error { return noLeader{} }, nil)
		if !errors.Is(err, kverrors.ErrUnavailable) {
			t.Fatalf("err = %v, want Unavailable", err)
		}
		if got := w.elapsed(); got != 0 {
			t.Fatalf("refused after %v, want at once", got)
		}
		t.Logf("answer: %v", err)
	})
}

// With a majority reachable but no election ending, the answer is a
// definite Unavailable before the caller's deadline, not the caller's own
// timeout.
func TestNoLeaderIsUnavailableBeforeTheDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := &world{down: map[string]bool{}, started: time.Now()}
		r := w.router(t)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		err := r.Call(ctx, route(fakeRep{leader: true, serves: true}), nil,
			func(context.Context) error { return noLeader{} }, nil)
		if !errors.Is(err, kverrors.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want Unavailable (not the deadline)", err)
		}
		// InnerDeadline keeps min(10%, 200 ms) of the time back.
		if got, want := w.elapsed(), 1800*time.Millisecond; got < want-leaderWait || got > want {
			t.Fatalf("answered after %v, want at the inner deadline %v", got, want)
		}
		if ctx.Err() != nil {
			t.Fatal("the caller's deadline passed before the answer")
		}
	})
}

// A request waiting for an election ends when its node begins to stop,
// not at its deadline: the node's graceful stop waits for every request in
// flight (kvd dev's Ctrl-C under load waited out request deadlines).
func TestLeaderWaitEndsWhenTheNodeStops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := &world{down: map[string]bool{}, started: time.Now(), stop: make(chan struct{})}
		r := w.router(t)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		stopAt := 300 * time.Millisecond
		time.AfterFunc(stopAt, func() { close(w.stop) })
		err := r.Call(ctx, route(fakeRep{leader: true, serves: true}), nil,
			func(context.Context) error { return noLeader{} }, nil)
		if !errors.Is(err, kverrors.ErrUnavailable) {
			t.Fatalf("err = %v, want Unavailable", err)
		}
		if got := w.elapsed(); got != stopAt {
			t.Fatalf("answered after %v, want when the node began to stop (%v)", got, stopAt)
		}
		t.Logf("answer: %v", err)
	})
}

// A node that is no replica rotates through the reachable replicas; a
// down one is never tried.
func TestNonReplicaRotatesThroughLiveReplicas(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := &world{down: map[string]bool{"n2": true}, started: time.Now()}
		r := w.router(t)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		rt := route(fakeRep{leader: true, serves: false})
		rt.T.Placement.Replicas = []string{"n2", "n3", "n4"}
		err := r.Call(ctx, rt, &api.RequestHeader{}, nil, func(_ context.Context, c api.KVClient, h *api.RequestHeader) error {
			id := c.(peerKV).id
			w.tried = append(w.tried, id)
			if h.GetHops() != 1 || h.GetEpoch() != 7 {
				t.Errorf("forwarded header: hops %d epoch %d, want 1 and 7", h.GetHops(), h.GetEpoch())
			}
			if id == "n3" {
				return kverrors.ToStatus(kverrors.ErrUnavailable)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("Call: %v", err)
		}
		if len(w.tried) != 2 || w.tried[0] != "n3" || w.tried[1] != "n4" {
			t.Fatalf("tried %v, want [n3 n4] (n2 is down)", w.tried)
		}
	})
}

// A leaderless mode gives each live replica a share of the time left, so a
// replica that swallows requests (cut off, but not yet detected) cannot use
// up the deadline; down replicas come last, without a share.
func TestLeaderlessSharesTheDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := &world{down: map[string]bool{"n1": true}, started: time.Now()}
		r := w.router(t)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		rt := route(fakeRep{serves: false})
		rt.T.Placement.Replicas = []string{"n1", "n2", "n3"}
		var at []time.Duration
		err := r.Call(ctx, rt, &api.RequestHeader{}, nil, func(ctx context.Context, c api.KVClient, _ *api.RequestHeader) error {
			id := c.(peerKV).id
			w.tried = append(w.tried, id)
			at = append(at, w.elapsed())
			if id == "n2" { // swallows the request
				<-ctx.Done()
				return ctx.Err()
			}
			return nil
		})
		if err != nil {
			t.Fatalf("Call: %v", err)
		}
		if len(w.tried) != 2 || w.tried[0] != "n2" || w.tried[1] != "n3" {
			t.Fatalf("tried %v, want [n2 n3] (n1 is down, last)", w.tried)
		}
		// Two live replicas: the first gets half of the 3 s.
		if at[1] != 1500*time.Millisecond {
			t.Fatalf("second replica tried after %v, want 1.5s (half the deadline)", at[1])
		}
	})
}

// When every live replica swallows the request, one of them may have
// applied it: the answer is indeterminate, never a definite failure.
func TestLeaderlessTimeoutsAreIndeterminate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := &world{down: map[string]bool{}, started: time.Now()}
		r := w.router(t)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		rt := route(fakeRep{serves: false})
		err := r.Call(ctx, rt, &api.RequestHeader{}, nil, func(ctx context.Context, _ api.KVClient, _ *api.RequestHeader) error {
			if dl, ok := ctx.Deadline(); ok && time.Until(dl) < 2*time.Second {
				<-ctx.Done()
				return ctx.Err()
			}
			return kverrors.ToStatus(kverrors.ErrUnavailable) // refused: definite
		})
		if !errors.Is(err, kverrors.ErrIndeterminate) {
			t.Fatalf("err = %v, want Indeterminate", err)
		}
	})
}

// A key or prefix of a keyspace this node's map lacks is refused only after
// asking for a newer map: the keyspace may have been created since.
func TestUnknownKeyspaceRefreshesFirst(t *testing.T) {
	mk := func(epoch uint64, ks ...ring.KeyspaceConfig) *ring.Ring {
		rg, err := ring.New(ring.Topology{Epoch: epoch, Nodes: []ring.Node{{ID: "n1"}}, Keyspaces: ks}, ring.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return rg
	}
	var cur atomic.Pointer[ring.Ring]
	cur.Store(mk(1))
	refreshes := 0
	refreshErr := error(nil)
	r := New(Config{Self: "n1", Ring: cur.Load, Ready: func() error { return nil }, MaxKeySize: 1024,
		Modes: map[consistency.Mode]replication.Replicator{consistency.CP: fakeRep{leader: true, serves: true}},
		Refresh: func(context.Context) error {
			refreshes++
			if refreshErr == nil {
				cur.Store(mk(2, ring.KeyspaceConfig{Name: "o1", Mode: consistency.CP, Replicas: 1, Partitions: 1}))
			}
			return refreshErr
		}})
	ctx := context.Background()
	refreshErr = errors.New("metadata leader unreachable")
	if _, err := r.Key(ctx, "o1/1", nil); !errors.Is(err, kverrors.ErrUnknownKeyspace) || !strings.Contains(err.Error(), "could not be asked") {
		t.Fatalf("Key with the metadata group unreachable: %v", err)
	}
	refreshErr = nil
	rt, err := r.Key(ctx, "o1/1", nil)
	if err != nil || rt.T.Partition() != "o1/*/0" {
		t.Fatalf("Key after a refresh: %+v, %v", rt.T, err)
	}
	if ks, err := r.Keyspace(ctx, "o1/"); err != nil || ks.Name != "o1" {
		t.Fatalf("Keyspace: %v, %v", ks, err)
	}
	if refreshes != 2 {
		t.Errorf("%d refreshes, want 2 (none once the keyspace is known)", refreshes)
	}
	if _, err := r.Key(ctx, "nosuch/1", nil); !errors.Is(err, kverrors.ErrUnknownKeyspace) || refreshes != 3 {
		t.Errorf("unknown keyspace after a refresh: %v (%d refreshes)", err, refreshes)
	}
}

// A forward carries the client's identity, which the next node checks.
func TestForwardKeepsIdentity(t *testing.T) {
	h := &api.RequestHeader{Identity: "alice", Consistency: "stale", Hops: 0}
	if got := forwardHeader(h, 7); got.GetIdentity() != "alice" || got.GetHops() != 1 || got.GetEpoch() != 7 {
		t.Fatalf("forwardHeader: %v", got)
	}
	if got := WithRequestID(h); got.GetIdentity() != "alice" || got.GetRequestId() == "" {
		t.Fatalf("WithRequestID: %v", got)
	}
}
