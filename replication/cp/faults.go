package cp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Faults decides the fate of each message between two nodes. The Raft
// network asks it before sending a request and before answering one, so a
// one-way rule cuts exactly one direction.
type Faults interface {
	// Deliver returns nil to let the message through (possibly after a
	// delay), or an error when it is lost.
	Deliver(ctx context.Context, from, to string) error
}

// NoFaults delivers everything.
type NoFaults struct{}

// Deliver always delivers.
func (NoFaults) Deliver(context.Context, string, string) error { return nil }

// ErrDropped is the error of a message a fault rule dropped.
var ErrDropped = errors.New("message dropped by fault rule")

// Rule is what happens to messages on one directed link.
type Rule struct {
	// Drop fails the message at once, like a refused connection.
	Drop bool
	// Blackhole holds the message until the sender's deadline passes, like
	// packets silently dropped by a firewall.
	Blackhole bool
	// Delay holds the message this long before delivering it.
	Delay time.Duration
}

func (r Rule) String() string {
	switch {
	case r.Drop:
		return "drop"
	case r.Blackhole:
		return "blackhole"
	case r.Delay > 0:
		return "delay " + r.Delay.String()
	}
	return "deliver"
}

// FaultTable is an in-process, portable fault injector: rules per directed
// link between node IDs. The zero value is not usable; call NewFaultTable.
// It is safe for concurrent use.
type FaultTable struct {
	mu    sync.Mutex
	rules map[[2]string]Rule
}

// NewFaultTable returns a table that delivers everything.
func NewFaultTable() *FaultTable { return &FaultTable{rules: map[[2]string]Rule{}} }

// Set installs rule on the link from -> to (one way).
func (f *FaultTable) Set(from, to string, r Rule) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules[[2]string{from, to}] = r
}

// Partition cuts every link between a and b, both ways, with rule r.
func (f *FaultTable) Partition(a, b []string, r Rule) {
	for _, x := range a {
		for _, y := range b {
			f.Set(x, y, r)
			f.Set(y, x, r)
		}
	}
}

// Heal removes every rule.
func (f *FaultTable) Heal() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = map[[2]string]Rule{}
}

// Rule returns the rule of a link.
func (f *FaultTable) Rule(from, to string) Rule {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rules[[2]string{from, to}]
}

// String lists the active rules, sorted.
func (f *FaultTable) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for l, r := range f.rules {
		out = append(out, fmt.Sprintf("%s->%s: %s", l[0], l[1], r))
	}
	sort.Strings(out)
	if len(out) == 0 {
		return "no faults"
	}
	return strings.Join(out, ", ")
}

// Deliver applies the link's rule.
func (f *FaultTable) Deliver(ctx context.Context, from, to string) error {
	r := f.Rule(from, to)
	switch {
	case r.Drop:
		return fmt.Errorf("%w: %s -> %s", ErrDropped, from, to)
	case r.Blackhole:
		<-ctx.Done()
		return fmt.Errorf("%w: %s -> %s blackholed: %v", ErrDropped, from, to, ctx.Err())
	case r.Delay > 0:
		t := time.NewTimer(r.Delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// FaultyTransport wraps any raft.Transport (raft.InmemTransport in tests)
// and runs every outgoing request and its answer through Faults, so protocol
// tests can cut, delay or blackhole chosen links, one way or both, without a
// network. Pipelining is refused so every message passes the check.
type FaultyTransport struct {
	raft.Transport
	Self    string
	Faults  Faults
	Timeout time.Duration // bound on a blackholed message (default 1s)
}

func (f *FaultyTransport) check(target raft.ServerAddress) error {
	to := f.Timeout
	if to <= 0 {
		to = time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), to)
	defer cancel()
	if err := f.Faults.Deliver(ctx, f.Self, string(target)); err != nil {
		return err
	}
	return nil
}

func (f *FaultyTransport) roundTrip(target raft.ServerAddress, send func() error) error {
	if err := f.check(target); err != nil {
		return err
	}
	if err := send(); err != nil {
		return err
	}
	// The answer travels target -> self.
	to := f.Timeout
	if to <= 0 {
		to = time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), to)
	defer cancel()
	return f.Faults.Deliver(ctx, string(target), f.Self)
}

// AppendEntriesPipeline is refused: raft falls back to one RPC at a time.
func (f *FaultyTransport) AppendEntriesPipeline(raft.ServerID, raft.ServerAddress) (raft.AppendPipeline, error) {
	return nil, raft.ErrPipelineReplicationNotSupported
}

// AppendEntries passes through the fault rules.
func (f *FaultyTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	return f.roundTrip(target, func() error { return f.Transport.AppendEntries(id, target, args, resp) })
}

// RequestVote passes through the fault rules.
func (f *FaultyTransport) RequestVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestVoteRequest, resp *raft.RequestVoteResponse) error {
	return f.roundTrip(target, func() error { return f.Transport.RequestVote(id, target, args, resp) })
}

// RequestPreVote passes through the fault rules.
func (f *FaultyTransport) RequestPreVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	pv, ok := f.Transport.(raft.WithPreVote)
	if !ok {
		return errors.New("wrapped transport has no pre-vote")
	}
	return f.roundTrip(target, func() error { return pv.RequestPreVote(id, target, args, resp) })
}

// TimeoutNow passes through the fault rules.
func (f *FaultyTransport) TimeoutNow(id raft.ServerID, target raft.ServerAddress, args *raft.TimeoutNowRequest, resp *raft.TimeoutNowResponse) error {
	return f.roundTrip(target, func() error { return f.Transport.TimeoutNow(id, target, args, resp) })
}

// InstallSnapshot passes through the fault rules.
func (f *FaultyTransport) InstallSnapshot(id raft.ServerID, target raft.ServerAddress, args *raft.InstallSnapshotRequest, resp *raft.InstallSnapshotResponse, data io.Reader) error {
	return f.roundTrip(target, func() error { return f.Transport.InstallSnapshot(id, target, args, resp, data) })
}

// Close closes the wrapped transport.
func (f *FaultyTransport) Close() error {
	if c, ok := f.Transport.(raft.WithClose); ok {
		return c.Close()
	}
	return nil
}
