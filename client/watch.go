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
	// Attempts (WatchGap): failed attempts in a row to open the partition's
	// stream; 1 means it was open (or never tried) until now.
	Attempts int
}

// WatchOption configures Watch.
type WatchOption func(*watchOptions)

type watchOptions struct{ giveUp time.Duration }

// WatchGiveUpAfter ends the watch when no stream of any partition could be
// opened for d (every replica unreachable, the cluster stopped): a last
// WatchGap whose Err wraps ErrUnavailable says so, then the channel closes.
// Without it (or with d <= 0) Watch retries until ctx ends.
func WatchGiveUpAfter(d time.Duration) WatchOption {
	return func(o *watchOptions) { o.giveUp = d }
}

// watchHealth is how many partition streams of one Watch are open, and
// since when none has been.
type watchHealth struct {
	mu struct {
		sync.Mutex
		open      int
		darkSince time.Time // when open last dropped to 0
		attempts  int       // failed opens since then
		lastErr   error
	}
}

func (h *watchHealth) opened() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.mu.open++
}

func (h *watchHealth) closed() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.mu.open--; h.mu.open == 0 {
		h.mu.darkSince, h.mu.attempts = time.Now(), 0
	}
}

func (h *watchHealth) failed(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.mu.attempts++
	h.mu.lastErr = err
}

// dark reports how long no stream has been open (0: one is), with the
// failed attempts and the last error in that time.
func (h *watchHealth) dark() (time.Duration, int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.mu.open > 0 {
		return 0, 0, nil
	}
	return time.Since(h.mu.darkSince), h.mu.attempts, h.mu.lastErr
}

// watchBackoff bounds how fast a broken partition stream is reopened: the
// wait doubles with each failed attempt in a row, and starts again at the
// minimum once a stream was open.
const (
	watchBackoffMin = 100 * time.Millisecond
	watchBackoffMax = 5 * time.Second
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
// no replay of changes made before the watch began. WatchGiveUpAfter bounds
// how long it keeps trying when no replica answers.
func (c *Client) Watch(ctx context.Context, prefix string, opts ...WatchOption) (<-chan WatchEvent, error) {
	var o watchOptions
	for _, opt := range opts {
		opt(&o)
	}
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
	// wctx ends the partitions' loops when the caller's ctx ends or the
	// watch gives up.
	wctx, stop := context.WithCancel(ctx)
	health := &watchHealth{}
	health.mu.darkSince = time.Now()
	var opened sync.WaitGroup
	var all sync.WaitGroup
	for _, p := range parts {
		opened.Add(1)
		all.Add(1)
		go func() {
			defer all.Done()
			c.watchPartition(wctx, stop, prefix, p, ks.Mode == consistency.CP, out, opened.Done, health)
		}()
	}
	if o.giveUp > 0 {
		all.Add(1)
		go func() {
			defer all.Done()
			c.watchGiveUp(wctx, stop, prefix, o.giveUp, health, out)
		}()
	}
	go func() { all.Wait(); stop(); close(out) }()
	done := make(chan struct{})
	go func() { opened.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
	return out, nil
}

// watchGiveUp ends the watch (stop) once no partition stream has been open
// for giveUp, after a last gap event saying so.
func (c *Client) watchGiveUp(ctx context.Context, stop func(), prefix string, giveUp time.Duration, h *watchHealth, out chan<- WatchEvent) {
	t := time.NewTicker(min(giveUp/4, time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		dark, attempts, lastErr := h.dark()
		if dark < giveUp {
			continue
		}
		err := fmt.Errorf("%w: watch %s: no replica of any partition answered for %s (%d attempts); giving up", ErrUnavailable, prefix, dark.Round(time.Second), attempts)
		if lastErr != nil {
			err = fmt.Errorf("%w; last error: %v", err, lastErr)
		}
		select {
		case out <- WatchEvent{Kind: WatchGap, Err: err, Attempts: attempts}:
		case <-ctx.Done():
		}
		stop()
		return
	}
}

// watchPartition keeps one partition's stream open until ctx ends. ready is
// called once, after the first attempt to open it. A refusal for want of a
// read grant ends the whole watch (stop): reopening cannot help.
func (c *Client) watchPartition(ctx context.Context, stop func(), prefix string, p ring.PartitionInfo, cp bool, out chan<- WatchEvent, ready func(), h *watchHealth) {
	readyOnce := sync.OnceFunc(ready)
	defer readyOnce()
	pid := p.ID.String()
	var last uint64 // cp: newest revision delivered
	backoff := watchBackoffMin
	failures := 0 // failed opens in a row
	for attempt := 0; ctx.Err() == nil; attempt++ {
		addr, id := c.watchTarget(pid, p.Replicas, cp, attempt)
		wasOpen := false
		err := c.watchStream(ctx, addr, prefix, pid, cp, &last, out, func() {
			wasOpen = true
			h.opened()
			readyOnce()
		})
		if wasOpen {
			h.closed()
			failures, backoff = 0, watchBackoffMin
		}
		if ctx.Err() != nil {
			return
		}
		readyOnce()
		if err == nil {
			err = errors.New("stream ended")
		}
		if errors.Is(err, ErrPermissionDenied) {
			select {
			case out <- WatchEvent{Kind: WatchGap, Err: fmt.Errorf("watch %s: %w", prefix, err)}:
			case <-ctx.Done():
			}
			stop()
			return
		}
		failures++
		h.failed(err)
		gap := WatchEvent{Kind: WatchGap, Partition: pid, ServedBy: id, Attempts: failures,
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
