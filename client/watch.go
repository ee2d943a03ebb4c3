package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/consistency"
	"github.com/capkv/capkv/internal/kverrors"
	"github.com/capkv/capkv/ring"
)

// WatchKind says what a WatchEvent reports.
type WatchKind int

const (
	// WatchPut: the key was written (Value holds the new value).
	WatchPut WatchKind = iota
	// WatchDelete: the key was deleted.
	WatchDelete
	// WatchGap: the stream of one partition broke and was reopened on a
	// replica (Err says why); changes applied in between may be missing.
	// Read the keys again if that matters.
	WatchGap
)

func (k WatchKind) String() string {
	switch k {
	case WatchPut:
		return "PUT"
	case WatchDelete:
		return "DELETE"
	}
	return "GAP"
}

// WatchEvent is one change seen by Watch.
type WatchEvent struct {
	Kind      WatchKind
	Key       string
	Value     []byte
	Revision  uint64 // cp: the Raft log index that applied it; ap: HLC of the newest write
	Timestamp consistency.Timestamp
	Partition string
	Siblings  int    // ap: concurrent values live after the change
	ServedBy  string // the replica whose stream carried it
	Err       error  // WatchGap: why the partition's stream was reopened
}

// watchBackoff bounds how fast a broken partition stream is reopened.
const (
	watchBackoffMin = 100 * time.Millisecond
	watchBackoffMax = 2 * time.Second
)

// Watch streams the changes to keys with prefix (which must start with a
// keyspace name) until ctx ends, then closes the channel.
//
// It opens one stream per partition of the keyspace, to a replica (the
// cached leader of a cp partition when known), and returns once every
// partition's stream is open or has failed once: changes applied after that
// are delivered. A partition whose stream cannot be opened or breaks gets a
// WatchGap event and is retried on its other replicas with backoff. Within a
// partition, cp changes arrive in Raft log order, each once (a reopened
// stream skips revisions already delivered); ap changes arrive in the order
// the serving replica merged them. There is no order across partitions, and
// no replay of changes made before the watch began.
func (c *Client) Watch(ctx context.Context, prefix string) (<-chan WatchEvent, error) {
	if err := c.checkKey(prefix); err != nil {
		return nil, fmt.Errorf("watch prefix: %w", err)
	}
	ksName, err := ring.SplitKeyspace(prefix)
	if err != nil {
		return nil, err
	}
	if _, ok := c.Ring().Keyspace(ksName); !ok {
		// Perhaps created after our map was fetched.
		rctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
		rerr := c.refresh(rctx, true)
		cancel()
		if _, ok := c.Ring().Keyspace(ksName); !ok {
			return nil, errors.Join(fmt.Errorf("%w: %q", ErrUnknownKeyspace, ksName), rerr)
		}
	}
	ks, _ := c.Ring().Keyspace(ksName)
	var parts []ring.PartitionInfo
	for _, p := range c.Ring().Partitions(ksName) {
		if p.Err == "" && len(p.Replicas) > 0 {
			parts = append(parts, p)
		}
	}
	if len(parts) == 0 {
		return nil, fmt.Errorf("%w: keyspace %q has no placeable partition", ErrUnavailable, ksName)
	}
	out := make(chan WatchEvent, 256)
	var opened sync.WaitGroup
	var all sync.WaitGroup
	for _, p := range parts {
		opened.Add(1)
		all.Add(1)
		go func() {
			defer all.Done()
			c.watchPartition(ctx, prefix, p, ks.Mode == consistency.CP, out, opened.Done)
		}()
	}
	go func() { all.Wait(); close(out) }()
	done := make(chan struct{})
	go func() { opened.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
	return out, nil
}

// watchPartition keeps one partition's stream open until ctx ends. ready is
// called once, after the first attempt to open it.
func (c *Client) watchPartition(ctx context.Context, prefix string, p ring.PartitionInfo, cp bool, out chan<- WatchEvent, ready func()) {
	readyOnce := sync.OnceFunc(ready)
	defer readyOnce()
	pid := p.ID.String()
	var last uint64 // cp: newest revision delivered
	backoff := watchBackoffMin
	for attempt := 0; ctx.Err() == nil; attempt++ {
		addr, id := c.watchTarget(pid, p.Replicas, cp, attempt)
		err := c.watchStream(ctx, addr, prefix, pid, cp, &last, out, readyOnce)
		if ctx.Err() != nil {
			return
		}
		readyOnce()
		if err == nil {
			err = errors.New("stream ended")
		}
		gap := WatchEvent{Kind: WatchGap, Partition: pid, ServedBy: id,
			Err: fmt.Errorf("partition %s: stream from %s broke: %w", pid, id, err)}
		select {
		case out <- gap:
		case <-ctx.Done():
			return
		}
		if errors.Is(err, ErrStaleEpoch) {
			rctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
			c.Refresh(rctx)
			cancel()
			for _, q := range c.Ring().Partitions(p.ID.Keyspace) {
				if q.ID == p.ID && q.Err == "" {
					p = q
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, watchBackoffMax)
	}
}

// watchTarget picks the replica for an attempt: a cp partition's cached
// leader first (it applies first), then the replicas in turn.
func (c *Client) watchTarget(pid string, replicas []string, cp bool, attempt int) (addr, id string) {
	r := c.Ring()
	if cp && attempt == 0 {
		c.mu.Lock()
		leader := c.mu.leaders[pid]
		c.mu.Unlock()
		if n, ok := r.Node(leader); ok && slices.Contains(replicas, leader) {
			return n.Addr, n.ID
		}
	}
	id = replicas[attempt%len(replicas)]
	if n, ok := r.Node(id); ok {
		return n.Addr, id
	}
	return "", id
}

// watchStream runs one stream until it breaks or ctx ends.
func (c *Client) watchStream(ctx context.Context, addr, prefix, pid string, cp bool, last *uint64, out chan<- WatchEvent, opened func()) error {
	if addr == "" {
		return fmt.Errorf("%w: replica not in the cluster map", ErrStaleEpoch)
	}
	cc, err := c.conn(addr)
	if err != nil {
		return err
	}
	// The stream ends when ctx does, but does not carry ctx's deadline to
	// the server: a server that hits the deadline first would end the stream
	// cleanly, and that would look like a broken stream here.
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	defer context.AfterFunc(ctx, cancel)()
	// Opening is bounded like a request; the open stream is not.
	openTimer := time.AfterFunc(c.cfg.RequestTimeout, cancel)
	stream, err := api.NewKVClient(cc).Watch(sctx, &api.WatchRequest{Prefix: prefix, Partition: pid})
	if err != nil {
		return kverrors.FromStatus(err)
	}
	first, err := stream.Recv() // the server's "subscribed" message
	if !openTimer.Stop() && err == nil {
		err = context.DeadlineExceeded
	}
	if err != nil {
		return kverrors.FromStatus(err)
	}
	opened()
	for {
		resp, err := stream.Recv()
		if err != nil {
			return kverrors.FromStatus(err)
		}
		for _, e := range resp.GetEvents() {
			if cp {
				if e.GetRevision() <= *last {
					continue // a reopened stream on a lagging replica: already delivered
				}
				*last = e.GetRevision()
			}
			ev := WatchEvent{Kind: WatchPut, Key: e.GetKey(), Value: e.GetValue(), Revision: e.GetRevision(),
				Timestamp: consistency.Timestamp(e.GetTimestamp()), Partition: pid, Siblings: int(e.GetSiblings()), ServedBy: first.GetServedBy()}
			if e.GetKind() == api.WatchEvent_DELETE {
				ev.Kind, ev.Value = WatchDelete, nil
			}
			select {
			case out <- ev:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
}
