package cp

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/hashicorp/raft"

	"github.com/capkv/capkv/internal/fault"
)

// FaultyTransport wraps any raft.Transport (raft.InmemTransport in tests)
// and runs every outgoing request and its answer through Faults, so protocol
// tests can cut, delay or blackhole chosen links, one way or both, without a
// network. Pipelining is refused so every message passes the check.
type FaultyTransport struct {
	raft.Transport
	Self    string
	Faults  fault.Injector
	Timeout time.Duration // bound on a blackholed message (default 1s)

	acks Acks
}

// Acks is what followers acknowledged through this transport.
func (f *FaultyTransport) Acks() *Acks { return &f.acks }

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
	sent := time.Now()
	if err := f.roundTrip(target, func() error { return f.Transport.AppendEntries(id, target, args, resp) }); err != nil {
		return err
	}
	f.acks.observe(target, args, resp, sent)
	return nil
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

// TimeoutNow passes through the fault rules, ending the read lease first
// (Acks.fence).
func (f *FaultyTransport) TimeoutNow(id raft.ServerID, target raft.ServerAddress, args *raft.TimeoutNowRequest, resp *raft.TimeoutNowResponse) error {
	f.acks.fence()
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
