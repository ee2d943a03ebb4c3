package ap

import (
	"bytes"
	"fmt"
	"hash/maphash"
	"sync"

	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/internal/kverrors"
	"github.com/capkv/capkv/internal/watch"
	"github.com/capkv/capkv/shard"
)

// ClockStore keeps the clocks of one node's ap partition replicas in its
// shard.Store: one record per key, the encoded DVV in the record's value.
//
// Every change of an ap key on this node goes through Merge, which holds the
// key's stripe lock from read to write: merges of one key never lose each
// other's siblings, and the write itself joins the store's group commit, so
// concurrent merges of different keys share one fsync.
type ClockStore struct {
	st      *shard.Store
	seed    maphash.Seed
	stripes [512]sync.Mutex
	// Watch, when set, receives every change a merge makes, in merge order
	// per key (published under the key's stripe lock).
	Watch *watch.Hub
}

// NewClockStore wraps a node's store.
func NewClockStore(st *shard.Store) *ClockStore { return &ClockStore{st: st, seed: maphash.MakeSeed()} }

// Read returns a key's clock (the zero clock when absent).
func (s *ClockStore) Read(partition, key string) (consistency.DVV, bool, error) {
	rec, found, err := s.st.Replica(partition).Get(key)
	if err != nil || !found {
		return consistency.DVV{}, false, err
	}
	return decodeRecord(rec)
}

func decodeRecord(rec shard.Record) (consistency.DVV, bool, error) {
	d, err := consistency.DecodeDVV(rec.Value)
	if err != nil {
		return consistency.DVV{}, false, fmt.Errorf("%w: stored clock: %v", kverrors.ErrInternal, err)
	}
	return d, true, nil
}

// Merge folds clock into the stored one atomically and returns the result.
// With lww only the last writer's sibling is kept.
func (s *ClockStore) Merge(partition, key string, clock consistency.DVV, lww bool) (consistency.DVV, error) {
	mu := &s.stripes[maphash.String(s.seed, partition+"\x00"+key)%uint64(len(s.stripes))]
	mu.Lock()
	defer mu.Unlock()
	rep := s.st.Replica(partition)
	cur, found, err := rep.Get(key)
	if err != nil {
		return consistency.DVV{}, err
	}
	merged := clock
	if found {
		have, _, err := decodeRecord(cur)
		if err != nil {
			return consistency.DVV{}, err
		}
		merged = have.Sync(clock)
	}
	if lww {
		merged = keepLast(merged)
	}
	if found && merged.Equal(mustDecode(cur)) {
		return merged, nil // nothing new: no write, no fsync
	}
	if err := rep.Put(key, toRecord(merged)); err != nil {
		return merged, err
	}
	if s.Watch.Active() {
		v := Resolve(merged, lww)
		e := watch.Event{Key: key, Deleted: !v.Found, Siblings: len(v.Live)}
		if v.Found {
			e.Value, e.Timestamp = v.Newest.Data, uint64(v.Newest.Timestamp)
		}
		for _, x := range merged.Values() {
			e.Revision = max(e.Revision, uint64(x.Timestamp))
		}
		s.Watch.Publish(partition, []watch.Event{e})
	}
	return merged, nil
}

func mustDecode(rec shard.Record) consistency.DVV {
	d, _, _ := decodeRecord(rec)
	return d
}

// toRecord stores a clock: its newest timestamp and whether every sibling is
// a tombstone are copied into the record so scans need not decode.
func toRecord(d consistency.DVV) shard.Record {
	rec := shard.Record{Value: d.Encode(nil)}
	if w, ok := d.LWW(); ok {
		rec.Timestamp = w.Timestamp
	}
	return rec
}

// keepLast reduces a clock to its last writer's sibling, keeping the context.
func keepLast(d consistency.DVV) consistency.DVV {
	w, ok := d.LWW()
	if !ok || d.Len() <= 1 {
		return d
	}
	return d.Keep(w.Dot)
}

// Resolve is what a read returns from a clock.
type Resolved struct {
	Live     []consistency.Sibling // siblings that are not deletes (lww: at most one)
	Deleted  bool                  // a delete is among the concurrent writes (or won, under lww)
	Found    bool
	Context  consistency.VV
	Newest   consistency.Sibling
	HasValue bool
}

// Resolve turns a clock into a read's answer.
func Resolve(d consistency.DVV, lww bool) Resolved {
	r := Resolved{Context: d.Context()}
	if lww {
		w, ok := d.LWW()
		if !ok || w.Tombstone {
			r.Deleted = ok
			return r
		}
		r.Live, r.Found, r.Newest, r.HasValue = []consistency.Sibling{w}, true, w, true
		return r
	}
	r.Live = d.Live()
	r.Deleted = len(r.Live) < d.Len()
	r.Found = len(r.Live) > 0
	for i, s := range r.Live {
		if i == 0 || s.Timestamp > r.Newest.Timestamp || (s.Timestamp == r.Newest.Timestamp && s.Dot.Compare(r.Newest.Dot) > 0) {
			r.Newest = s
		}
	}
	r.HasValue = r.Found
	return r
}

// Purge removes key if its stored clock is exactly expect (encoded): the
// compare-and-delete that garbage-collects a tombstone every replica holds.
func (s *ClockStore) Purge(partition, key string, expect []byte) (bool, error) {
	mu := &s.stripes[maphash.String(s.seed, partition+"\x00"+key)%uint64(len(s.stripes))]
	mu.Lock()
	defer mu.Unlock()
	rep := s.st.Replica(partition)
	cur, found, err := rep.Get(key)
	if err != nil || !found || !bytes.Equal(cur.Value, expect) {
		return false, err
	}
	return true, rep.Remove(key)
}

// purgeable reports whether a clock holds only tombstones, the newest older
// than cutoff.
func purgeable(d consistency.DVV, cutoff consistency.Timestamp) bool {
	if d.Len() == 0 || len(d.Live()) > 0 {
		return false
	}
	w, _ := d.LWW()
	return w.Timestamp < cutoff
}

// fits reports whether the store would take an n-byte encoded clock for
// key (its size limits), without writing.
func (s *ClockStore) fits(key string, n int) error {
	o := s.st.Options()
	if len(key) > o.MaxKeySize {
		return fmt.Errorf("%w: key is %d bytes, limit %d", kverrors.ErrTooLarge, len(key), o.MaxKeySize)
	}
	if n > o.MaxValueSize {
		return fmt.Errorf("%w: value of key %q is %d bytes, limit %d", kverrors.ErrTooLarge, key, n, o.MaxValueSize)
	}
	return nil
}
