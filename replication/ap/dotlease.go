package ap

import (
	"encoding/binary"
	"fmt"
	"math"
	"sync"

	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/internal/kverrors"
	"github.com/capkv/capkv/shard"
)

// dotPartition holds this node's dot lease: the bound below which every
// dot counter it minted lies.
const dotPartition = "_dots/*/0"

const dotLeaseKey = "reserved"

// dotBlock is how far one reservation reaches. Counters follow the HLC
// (UpdateAbove's floor), which advances 65,536 counters per millisecond of
// wall time, so a block is measured in HLC time: one minute of it, renewed
// in the background at half, costs one synced write every 30 s or so
// however busy the node is. After a restart counters start at the bound,
// at most a block ahead of the HLC: harmless, a counter only has to be new.
var dotBlock = uint64(consistency.MakeTimestamp(60_000, 0))

// dotLease hands out this node's dot counters, as Riak's vnode counter
// lease does: every counter is above every counter handed out before, in
// this run or any earlier one, because a counter is only handed out once a
// bound at or above it is durable, and a restart starts above the bound.
// So a write may go to the other replicas before the coordinator's own copy
// (which also records the counter, in the key's clock) is on disk: after a
// crash in between, the dot is not minted again for another value.
type dotLease struct {
	st *shard.Store

	mu struct {
		sync.Mutex
		loaded   bool
		last     uint64 // the highest counter handed out (or the bound found at start)
		reserved uint64 // durable: no counter above it was handed out
		renewing bool   // a reservation is being written
		renewed  *sync.Cond
		err      error // the last background reservation's failure, reported by the next mint that needs it
	}
	bg sync.WaitGroup // background renewals, joined by close
}

func newDotLease(st *shard.Store) *dotLease {
	l := &dotLease{st: st}
	l.mu.renewed = sync.NewCond(&l.mu.Mutex)
	return l
}

// mint returns a counter above floor and above every counter handed out
// before. It waits for a reservation only when the bound was reached (the
// first mint after a start, or one whose floor jumped past the bound);
// otherwise it starts the next reservation early, in the background.
func (l *dotLease) mint(floor uint64) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.mu.loaded {
		bound, err := l.load()
		if err != nil {
			return 0, err
		}
		l.mu.loaded, l.mu.last, l.mu.reserved = true, bound, bound
	}
	for {
		// Others may have minted while this one waited: start from the last.
		last := max(floor, l.mu.last)
		if last == math.MaxUint64 {
			return 0, fmt.Errorf("%w: dot counter exhausted (floor %d); the node needs a new ID", consistency.ErrInvalidClock, floor)
		}
		c := last + 1
		if c <= l.mu.reserved {
			l.mu.last = c
			if l.mu.reserved-c < dotBlock/2 && !l.mu.renewing {
				l.renewLocked(c)
			}
			return c, nil
		}
		if !l.mu.renewing {
			l.mu.err = nil
			l.renewLocked(c)
		}
		l.mu.renewed.Wait()
		if !l.mu.renewing && l.mu.err != nil && max(floor, l.mu.last)+1 > l.mu.reserved {
			return 0, l.mu.err
		}
	}
}

// renewLocked starts writing the bound c plus a block, in a goroutine that
// wakes every waiting mint when it is done.
func (l *dotLease) renewLocked(c uint64) {
	target := c + dotBlock
	if target < c {
		target = math.MaxUint64
	}
	l.mu.renewing = true
	l.bg.Add(1)
	go func() {
		defer l.bg.Done()
		err := l.store(target)
		l.mu.Lock()
		defer l.mu.Unlock()
		l.mu.renewing = false
		if err == nil {
			l.mu.reserved = max(l.mu.reserved, target)
		} else {
			l.mu.err = err
		}
		l.mu.renewed.Broadcast()
	}()
}

func (l *dotLease) load() (uint64, error) {
	rec, found, err := l.st.Replica(dotPartition).Get(dotLeaseKey)
	if err != nil || !found {
		return 0, err
	}
	if len(rec.Value) != 8 {
		return 0, fmt.Errorf("%w: stored dot lease is %d bytes, want 8", kverrors.ErrInternal, len(rec.Value))
	}
	return binary.BigEndian.Uint64(rec.Value), nil
}

// store makes bound durable (with the store's SyncWrites, fsynced).
func (l *dotLease) store(bound uint64) error {
	if err := l.st.Replica(dotPartition).Put(dotLeaseKey, shard.Record{Value: binary.BigEndian.AppendUint64(nil, bound)}); err != nil {
		return fmt.Errorf("reserve dot counters up to %d: %w", bound, err)
	}
	return nil
}

// close waits for a reservation in flight.
func (l *dotLease) close() { l.bg.Wait() }
