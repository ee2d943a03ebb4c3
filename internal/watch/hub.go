// Package watch fans the changes a node applies out to the watch streams
// open on it.
//
// The replication layers publish what they applied, per partition: the cp
// state machine after every applied Raft batch (in log order), the ap clock
// store after every merge that changed a key. Subscribers name a partition
// and a key prefix. Publishing never blocks the apply path: each subscriber
// has a bounded queue, and one that falls behind is cut off with ErrSlow
// (its client re-reads and watches again), the choice etcd makes too.
// Nothing is kept: a subscriber sees the changes applied after it joined.
package watch

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"
)

// Event is one change to one key.
type Event struct {
	Key       string
	Value     []byte
	Deleted   bool
	Revision  uint64 // cp: Raft index; ap: HLC of the newest write
	Timestamp uint64 // HLC of the write
	Siblings  int    // ap: live concurrent values after the change
}

// ErrSlow ends a subscription whose queue overflowed: events were lost.
var ErrSlow = errors.New("watcher fell behind and events were dropped; read the current state and watch again")

// ErrClosed ends subscriptions when the hub closes (the node stops).
var ErrClosed = errors.New("node is shutting down")

// ErrReset ends a partition's subscriptions when its replica's state jumped
// without applying the changes one by one (a Raft snapshot was installed).
var ErrReset = errors.New("the replica installed a snapshot; changes it skipped were not seen one by one; read the current state and watch again")

// DefaultQueue is the batches a subscriber may have pending.
const DefaultQueue = 1024

// Hub routes published events to subscribers. The zero value is not
// usable; use NewHub.
type Hub struct {
	queue int
	n     atomic.Int64 // subscribers, read without the lock on every publish
	mu    sync.Mutex
	subs  map[string]map[*Sub]struct{} // partition -> subscribers
	done  bool
}

// NewHub returns a hub whose subscribers may have queue batches pending
// (0: DefaultQueue).
func NewHub(queue int) *Hub {
	if queue <= 0 {
		queue = DefaultQueue
	}
	return &Hub{queue: queue, subs: map[string]map[*Sub]struct{}{}}
}

// Sub is one subscription.
type Sub struct {
	hub       *Hub
	partition string
	prefix    string
	ch        chan []Event
	mu        sync.Mutex
	err       error
	done      chan struct{}
}

// Subscribe starts delivering the partition's events for keys with prefix.
func (h *Hub) Subscribe(partition, prefix string) (*Sub, error) {
	s := &Sub{hub: h, partition: partition, prefix: prefix, ch: make(chan []Event, h.queue), done: make(chan struct{})}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.done {
		return nil, ErrClosed
	}
	m := h.subs[partition]
	if m == nil {
		m = map[*Sub]struct{}{}
		h.subs[partition] = m
	}
	m[s] = struct{}{}
	h.n.Add(1)
	return s, nil
}

// Events delivers batches of events in the order they were applied.
func (s *Sub) Events() <-chan []Event { return s.ch }

// Done is closed when the subscription ends by itself (ErrSlow, ErrClosed);
// Err says why.
func (s *Sub) Done() <-chan struct{} { return s.done }

// Err is why the subscription ended, or nil.
func (s *Sub) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close ends the subscription; safe to call more than once.
func (s *Sub) Close() { s.hub.remove(s, nil) }

func (h *Hub) remove(s *Sub, why error) {
	h.mu.Lock()
	m := h.subs[s.partition]
	_, ok := m[s]
	if ok {
		delete(m, s)
		if len(m) == 0 {
			delete(h.subs, s.partition)
		}
		h.n.Add(-1)
	}
	h.mu.Unlock()
	if ok {
		s.mu.Lock()
		s.err = why
		s.mu.Unlock()
		close(s.done)
	}
}

// Subscribers is the number of open subscriptions.
func (h *Hub) Subscribers() int { return int(h.n.Load()) }

// Active reports whether anyone watches: publishers skip building events
// when nobody does.
func (h *Hub) Active() bool { return h != nil && h.n.Load() > 0 }

// Publish hands one applied batch of a partition to its subscribers. It
// never blocks.
func (h *Hub) Publish(partition string, events []Event) {
	if !h.Active() || len(events) == 0 {
		return
	}
	var slow []*Sub
	h.mu.Lock()
	for s := range h.subs[partition] {
		var mine []Event
		for _, e := range events {
			if strings.HasPrefix(e.Key, s.prefix) {
				mine = append(mine, e)
			}
		}
		if len(mine) == 0 {
			continue
		}
		select {
		case s.ch <- mine:
		default:
			slow = append(slow, s)
		}
	}
	h.mu.Unlock()
	for _, s := range slow {
		h.remove(s, ErrSlow)
	}
}

// EndPartition ends every subscription of partition with why.
func (h *Hub) EndPartition(partition string, why error) {
	if !h.Active() {
		return
	}
	h.mu.Lock()
	var subs []*Sub
	for s := range h.subs[partition] {
		subs = append(subs, s)
	}
	h.mu.Unlock()
	for _, s := range subs {
		h.remove(s, why)
	}
}

// Close ends every subscription with ErrClosed.
func (h *Hub) Close() {
	h.mu.Lock()
	h.done = true
	var all []*Sub
	for _, m := range h.subs {
		for s := range m {
			all = append(all, s)
		}
	}
	h.mu.Unlock()
	for _, s := range all {
		h.remove(s, ErrClosed)
	}
}
