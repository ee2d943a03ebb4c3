package ap

import (
	"context"
	"fmt"
	"sync"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/shard"
)

// Streaming a partition to a new replica (rebalancing): an old replica
// sends every key of the partition it holds, each with its whole clock
// (siblings, version vector and tombstones), and the new replica merges
// each into its own, exactly as it merges a coordinator's write. Merging
// makes the stream safe to repeat and to run while writes arrive: a write
// the new replica already has from a coordinator, or a key sent twice after
// an interrupted stream, merges to the same clock. A key written on the old
// replica after the stream passed it reaches the new replica with that
// write itself (during a move coordinators write to old and new owners) or
// with the final anti-entropy round before the old replica drops the
// partition.

// StreamStats counts what a stream sent.
type StreamStats struct {
	Keys  int   // keys sent (tombstones included)
	Bytes int64 // encoded clock bytes sent
}

// streamPage is how many keys are read from the store at a time; streamWidth
// how many stores are in flight to the new replica.
const (
	streamPage  = 256
	streamWidth = 8
)

// StreamPartition sends this node's copy of partition to node to, page by
// page in key order. progress, when set, is called after each page. It
// stops at the first failed store (the caller retries the whole stream,
// which is idempotent) or when ctx ends.
func StreamPartition(ctx context.Context, clocks *ClockStore, peers Peers, partition, to string, lww bool, progress func(StreamStats)) (StreamStats, error) {
	var stats StreamStats
	after := ""
	for {
		var page []*api.ReplicaStoreRequest
		err := clocks.st.Replica(partition).Scan("", after, streamPage, true, func(key string, rec shard.Record) bool {
			if _, err := consistency.DecodeDVV(rec.Value); err != nil {
				return true // not an ap clock: nothing a replica could merge (Read reports it)
			}
			page = append(page, &api.ReplicaStoreRequest{Partition: partition, Key: key, Clock: append([]byte(nil), rec.Value...), Lww: lww})
			after = key
			return true
		})
		if err != nil {
			return stats, fmt.Errorf("stream %s to %s: read: %w", partition, to, err)
		}
		if len(page) == 0 {
			return stats, nil
		}
		if err := storeAll(ctx, peers, to, page); err != nil {
			return stats, fmt.Errorf("stream %s to %s after %d keys: %w", partition, to, stats.Keys, err)
		}
		for _, r := range page {
			stats.Keys++
			stats.Bytes += int64(len(r.Clock))
		}
		if progress != nil {
			progress(stats)
		}
		if len(page) < streamPage {
			return stats, nil
		}
	}
}

// storeAll sends a page with at most streamWidth stores in flight.
func storeAll(ctx context.Context, peers Peers, to string, page []*api.ReplicaStoreRequest) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	sem := make(chan struct{}, streamWidth)
	for _, req := range page {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			sctx, scancel := context.WithTimeout(ctx, replicaTimeout)
			_, err := peers.Store(sctx, to, req)
			scancel()
			if err != nil {
				mu.Lock()
				if first == nil {
					first = fmt.Errorf("key %q: %w", req.GetKey(), err)
				}
				mu.Unlock()
				cancel()
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}
