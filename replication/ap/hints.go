package ap

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/shard"
)

// hintPartition holds this node's hints: writes it accepted for another
// replica that was unreachable (sloppy quorum), kept durably until handed over.
const hintPartition = "_hints/*/0"

// HintStore keeps hints in the node's store under hintPartition, keyed
// target NUL partition NUL key, merged like replica clocks.
type HintStore struct {
	st     *shard.Store
	clocks *ClockStore
}

// NewHintStore wraps a node's store.
func NewHintStore(st *shard.Store) *HintStore { return &HintStore{st: st, clocks: NewClockStore(st)} }

func hintKey(target, partition, key string) string { return target + "\x00" + partition + "\x00" + key }

// Add merges clock into the hint for target.
func (h *HintStore) Add(target, partition, key string, clock consistency.DVV, lww bool) error {
	_, err := h.clocks.Merge(hintPartition, hintKey(target, partition, key), clock, lww)
	return err
}

// Hint is one pending handoff.
type Hint struct {
	Target, Partition, Key string
	Clock                  consistency.DVV
	stored                 string
}

// Pending lists up to limit hints.
func (h *HintStore) Pending(limit int) ([]Hint, error) { return h.pendingAfter("", limit) }

// pendingAfter lists up to limit hints whose stored keys sort after after.
func (h *HintStore) pendingAfter(after string, limit int) ([]Hint, error) {
	var out []Hint
	var derr error
	err := h.st.Replica(hintPartition).Scan("", after, limit, false, func(k string, rec shard.Record) bool {
		parts := strings.SplitN(k, "\x00", 3)
		if len(parts) != 3 {
			return true
		}
		d, _, err := decodeRecord(rec)
		if err != nil {
			derr = err
			return false
		}
		out = append(out, Hint{Target: parts[0], Partition: parts[1], Key: parts[2], Clock: d, stored: k})
		return true
	})
	if err == nil {
		err = derr
	}
	return out, err
}

// Count is the number of pending hints (metrics read it at every scrape, so
// it counts keys without decoding the clocks).
func (h *HintStore) Count() (int, error) {
	n := 0
	err := h.st.Replica(hintPartition).Scan("", "", 0, false, func(k string, _ shard.Record) bool {
		if strings.Count(k, "\x00") >= 2 { // what Pending would list
			n++
		}
		return true
	})
	return n, err
}

// Delivered removes a hint once its target has it. A hint that changed since
// it was listed (a newer write arrived) is kept for the next round.
func (h *HintStore) Delivered(hint Hint) error {
	// Compare and delete under the key's lock, which Add takes too: a newer
	// hint merged in meanwhile must not be deleted with the old one.
	_, err := h.clocks.Purge(hintPartition, hint.stored, toRecord(hint.Clock).Value)
	return err
}

// Handoff delivers pending hints with store (a Store RPC to the target) until
// ctx ends; it returns how many were handed over.
//
// Hints are read a page at a time, in key order (grouped by target): a
// target that fails is skipped for the rest of the round, and the pages
// after it still reach the other targets, however many hints the failed one
// has piled up.
func (h *HintStore) Handoff(ctx context.Context, store func(ctx context.Context, hint Hint) error) (int, error) {
	const page, maxPages = 1000, 100 // bounds one round's scan
	done := 0
	down := map[string]bool{} // targets that failed this round
	after := ""
	for range maxPages {
		hints, err := h.pendingAfter(after, page)
		if err != nil {
			return done, err
		}
		for _, hint := range hints {
			if ctx.Err() != nil {
				return done, nil
			}
			if down[hint.Target] {
				continue
			}
			sctx, cancel := context.WithTimeout(ctx, time.Second)
			err := store(sctx, hint)
			cancel()
			if err != nil {
				down[hint.Target] = true
				continue
			}
			if err := h.Delivered(hint); err != nil {
				return done, fmt.Errorf("forget delivered hint: %w", err)
			}
			done++
		}
		if len(hints) < page {
			break
		}
		after = hints[len(hints)-1].stored
	}
	return done, nil
}

// Forget removes every hint whose partition keep rejects (its keyspace was
// dropped: handing it over would bring the data back) and returns how many.
func (h *HintStore) Forget(keep func(partition string) bool) (int, error) {
	var gone []string
	err := h.st.Replica(hintPartition).Scan("", "", 0, false, func(k string, _ shard.Record) bool {
		if parts := strings.SplitN(k, "\x00", 3); len(parts) == 3 && !keep(parts[1]) {
			gone = append(gone, k)
		}
		return true
	})
	if err != nil || len(gone) == 0 {
		return 0, err
	}
	return len(gone), h.st.Replica(hintPartition).Remove(gone...)
}
