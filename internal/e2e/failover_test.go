package e2e

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/capkv/capkv/client"
)

// TestLeaderKillFailover kills -9 the Raft leader of a partition while a
// writer keeps writing to it, restarts it, and repeats. It reports failover
// time (kill to the first successful write) and checks that every
// acknowledged write is still there at the end.
func TestLeaderKillFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("kills and restarts processes for ~30s")
	}
	for _, n := range []int{3, 5} {
		t.Run(fmt.Sprintf("%d-nodes", n), func(t *testing.T) {
			cl := startCluster(t, n)
			c := newClient(t, cl.endpoints()...)
			var (
				mu        sync.Mutex
				acked     []string
				last      time.Time // completion of the latest-started successful write
				lastBegan time.Time // when that write was sent
			)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var wg sync.WaitGroup
			wg.Add(1)
			go func() { // one writer, unique keys, all in one partition (account 7)
				defer wg.Done()
				for i := 0; ctx.Err() == nil; i++ {
					key := fmt.Sprintf("accounts/eu/7/set/%06d", i)
					began := time.Now()
					wctx, wcancel := context.WithTimeout(ctx, 3*time.Second)
					_, err := c.Put(wctx, key, []byte("x"))
					wcancel()
					if err == nil {
						mu.Lock()
						acked = append(acked, key)
						if began.After(lastBegan) {
							lastBegan, last = began, time.Now()
						}
						mu.Unlock()
					} else if !errors.Is(err, client.ErrUnavailable) && !errors.Is(err, client.ErrIndeterminate) && ctx.Err() == nil {
						t.Errorf("write %s: unexpected error %v", key, err)
					}
				}
			}()
			var failovers []time.Duration
			for round := range 3 {
				time.Sleep(700 * time.Millisecond)
				// The leader is whoever serves a linearizable read of the partition.
				it, err := c.Get(ctxT(t), "accounts/eu/7/set/000000")
				if err != nil && !errors.Is(err, client.ErrNotFound) {
					t.Fatalf("round %d: %v", round, err)
				}
				if err != nil {
					round--
					continue
				}
				leader := cl.proc(it.Receipt.ServedBy)
				killed := time.Now()
				cl.kill(leader)
				deadline := killed.Add(15 * time.Second)
				for {
					mu.Lock()
					ok := lastBegan.After(killed) // a write sent after the kill succeeded
					at := last
					mu.Unlock()
					if ok {
						failovers = append(failovers, at.Sub(killed))
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("round %d: no successful write within 15s of killing leader %s", round, leader.id)
					}
					time.Sleep(5 * time.Millisecond)
				}
				cl.start(leader)
				cl.waitReady(leader)
			}
			cancel()
			wg.Wait()

			mu.Lock()
			keys := slices.Clone(acked)
			mu.Unlock()
			items, err := c.Scan(ctxT(t), "accounts/eu/7/set/")
			if err != nil {
				t.Fatal(err)
			}
			have := map[string]bool{}
			for _, it := range items {
				have[it.Key] = true
			}
			lost := 0
			for _, k := range keys {
				if !have[k] {
					lost++
					if lost < 5 {
						t.Errorf("acknowledged write %s is lost", k)
					}
				}
			}
			sorted := slices.Clone(failovers)
			sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
			t.Logf("%d nodes: %d acknowledged writes, %d lost, %d keys present; failover (kill -> first write) %v, median %v, max %v",
				n, len(keys), lost, len(items), failovers, sorted[len(sorted)/2], sorted[len(sorted)-1])
			if lost > 0 {
				t.Fatalf("%d of %d acknowledged writes lost", lost, len(keys))
			}
		})
	}
}
