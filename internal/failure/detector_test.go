package failure

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/capkv/capkv/internal/kverrors"
)

// fakeNet answers probes for the nodes that are reachable.
type fakeNet struct {
	mu     sync.Mutex
	cut    map[string]bool // probes to these hang until their deadline
	probes map[string]int
	downs  map[string]int
}

func newFakeNet() *fakeNet {
	return &fakeNet{cut: map[string]bool{}, probes: map[string]int{}, downs: map[string]int{}}
}

func (f *fakeNet) probe(ctx context.Context, id string) error {
	f.mu.Lock()
	f.probes[id]++
	cut := f.cut[id]
	f.mu.Unlock()
	if cut {
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

func (f *fakeNet) set(id string, cut bool) {
	f.mu.Lock()
	f.cut[id] = cut
	f.mu.Unlock()
}

func (f *fakeNet) count(m map[string]int, id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return m[id]
}

func start(t *testing.T, f *fakeNet, peers func() []string) (*Detector, context.CancelFunc) {
	d := New(Config{
		Interval: 500 * time.Millisecond, DownAfter: 1500 * time.Millisecond,
		Probe: f.probe, Peers: peers,
		OnDown: func(id string) { f.mu.Lock(); f.downs[id]++; f.mu.Unlock() },
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return d, cancel
}

func TestDownAfterSilenceAndUpAtFirstAnswer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeNet()
		d, _ := start(t, f, func() []string { return []string{"n2", "n3"} })
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if d.Down("n2") || d.Down("n3") {
			t.Fatalf("answering nodes marked down: %+v", d.States())
		}
		f.set("n3", true)
		cutAt := time.Now()
		for !d.Down("n3") {
			time.Sleep(10 * time.Millisecond)
			if time.Since(cutAt) > 3*time.Second {
				t.Fatalf("n3 silent for %s and still up", time.Since(cutAt))
			}
		}
		// Heard last up to an interval before the cut; down once a probe
		// waited DownAfter in vain, noticed at the next tick.
		if took := time.Since(cutAt); took < time.Second || took > 2500*time.Millisecond {
			t.Errorf("n3 went down %s after the cut, want 1-2.5s", took)
		}
		if d.Down("n2") {
			t.Error("n2 went down with n3")
		}
		if got := f.count(f.downs, "n3"); got != 1 {
			t.Errorf("OnDown ran %d times for n3, want 1", got)
		}
		time.Sleep(time.Second)
		st, _ := d.State("n3")
		if st.Up || st.LastErr == "" {
			t.Errorf("state of n3: %+v, want down with the probe's error", st)
		}
		time.Sleep(5 * time.Second)
		if got := f.count(f.downs, "n3"); got != 1 {
			t.Errorf("OnDown ran %d times while n3 stayed down, want 1", got)
		}
		f.set("n3", false)
		healAt := time.Now()
		for d.Down("n3") {
			time.Sleep(10 * time.Millisecond)
		}
		if took := time.Since(healAt); took > 600*time.Millisecond {
			t.Errorf("n3 came back up %s after the heal, want within an interval", took)
		}
	})
}

func TestTrafficReplacesProbes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeNet()
		d, _ := start(t, f, func() []string { return []string{"n2"} })
		synctest.Wait()
		base := f.count(f.probes, "n2")
		for range 40 { // 4 s of calls answered every 100 ms
			d.Heard("n2")
			time.Sleep(100 * time.Millisecond)
		}
		if got := f.count(f.probes, "n2") - base; got != 0 {
			t.Errorf("%d probes sent to a node answering calls", got)
		}
		time.Sleep(2 * time.Second)
		if got := f.count(f.probes, "n2") - base; got < 3 {
			t.Errorf("%d probes in 2 s of silence, want about 4", got)
		}
		if d.Down("n2") {
			t.Error("a node answering probes is down")
		}
	})
}

func TestPeersFollowTheMap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeNet()
		var peers atomic.Pointer[[]string]
		p := []string{"n2"}
		peers.Store(&p)
		f.set("n9", true)
		d, _ := start(t, f, func() []string { return *peers.Load() })
		time.Sleep(time.Second)
		d.Heard("n9") // not watched: ignored
		if _, ok := d.State("n9"); ok {
			t.Fatal("an unwatched node has a state")
		}
		p2 := []string{"n2", "n9"}
		peers.Store(&p2)
		time.Sleep(time.Second)
		if d.Down("n9") {
			t.Error("a node just added to the map is down before DownAfter")
		}
		time.Sleep(2 * time.Second)
		if !d.Down("n9") {
			t.Error("a silent node added to the map is still up")
		}
		p3 := []string{"n2"}
		peers.Store(&p3)
		time.Sleep(time.Second)
		if _, ok := d.State("n9"); ok || d.Down("n9") {
			t.Error("a node removed from the map is still watched")
		}
		if len(d.States()) != 1 {
			t.Errorf("states %+v, want n2 only", d.States())
		}
	})
}

func TestProbeErrorsAreKept(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		boom := errors.New("connection refused")
		d := New(Config{Probe: func(context.Context, string) error { return boom }, Peers: func() []string { return []string{"n2"} }})
		ctx, cancel := context.WithCancel(context.Background())
		go d.Run(ctx)
		time.Sleep(2 * time.Second)
		st, _ := d.State("n2")
		if st.Up || st.LastErr != boom.Error() {
			t.Errorf("state %+v, want down with %q", st, boom)
		}
		cancel()
		synctest.Wait()
	})
}

// A node that answers every probe, only slowly (a loaded node, a far
// region), is never down, however much slower than the probe interval.
func TestSlowButAnsweringNodeStaysUp(t *testing.T) {
	for _, rtt := range []time.Duration{400 * time.Millisecond, 600 * time.Millisecond, 1200 * time.Millisecond, 1450 * time.Millisecond} {
		t.Run(rtt.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				downs := 0
				d := New(Config{
					Interval: 500 * time.Millisecond, DownAfter: 1500 * time.Millisecond,
					Probe: func(ctx context.Context, id string) error {
						select {
						case <-time.After(rtt):
							return nil
						case <-ctx.Done():
							return ctx.Err()
						}
					},
					Peers:  func() []string { return []string{"n2"} },
					OnDown: func(string) { downs++ },
				})
				ctx, cancel := context.WithCancel(context.Background())
				go d.Run(ctx)
				for range 200 { // 20 s
					time.Sleep(100 * time.Millisecond)
					if d.Down("n2") {
						t.Fatalf("a node answering every probe in %s was marked down", rtt)
					}
				}
				cancel()
				synctest.Wait()
				if downs != 0 {
					t.Fatalf("OnDown ran %d times", downs)
				}
			})
		})
	}
}

// A down node is probed every interval, not only when the previous probe
// gave up, so it is up again soon after it answers.
func TestDownNodeSeenUpWithinAnInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeNet()
		d, _ := start(t, f, func() []string { return []string{"n2"} })
		f.set("n2", true) // probes hang until their deadline
		time.Sleep(5 * time.Second)
		if !d.Down("n2") {
			t.Fatal("silent node still up")
		}
		f.set("n2", false)
		healAt := time.Now()
		for d.Down("n2") {
			time.Sleep(10 * time.Millisecond)
		}
		if took := time.Since(healAt); took > 600*time.Millisecond {
			t.Errorf("up %s after it answered again, want within an interval", took)
		}
	})
}

// What the detector reports is stamped by the clock it is given, so a
// node's clock (or a test's) decides LastSeen, Since and the silence it
// reports, never the machine's wall time.
func TestStatesUseTheGivenClock(t *testing.T) {
	base := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	now := base
	d := New(Config{Now: func() time.Time { return now }, Peers: func() []string { return []string{"n2"} },
		Probe: func(ctx context.Context, _ string) error { <-ctx.Done(); return ctx.Err() }})
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // probes give up at once
	var wg sync.WaitGroup
	d.tick(ctx, &wg) // starts watching n2
	wg.Wait()
	now = base.Add(time.Second)
	d.Heard("n2")
	now = base.Add(time.Second + DefaultDownAfter)
	d.tick(ctx, &wg)
	wg.Wait()
	st, ok := d.State("n2")
	if !ok || st.Up {
		t.Fatalf("state %+v, want n2 down after %v of silence", st, DefaultDownAfter)
	}
	if !st.LastSeen.Equal(base.Add(time.Second)) || !st.Since.Equal(now) {
		t.Fatalf("LastSeen %v Since %v, want %v and %v", st.LastSeen, st.Since, base.Add(time.Second), now)
	}
	now = now.Add(2 * time.Second)
	err := d.Unreachable("n2", "n1")
	if !errors.Is(err, kverrors.ErrUnavailable) || !strings.Contains(err.Error(), "silent for 3.5s") {
		t.Fatalf("Unreachable = %v, want unavailable, silent for 3.5s", err)
	}
}
