package cp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
	oteltrace "go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/internal/fault"
	"github.com/capkv/capkv/internal/trace"
)

// RPC kinds carried in api.RaftFrame.Kind.
const (
	kindAppend uint32 = iota + 1
	kindVote
	kindPreVote
	kindTimeoutNow
	kindSnapshot
)

// Timeouts of outgoing Raft RPCs. Elections and heartbeats must fail fast
// when a peer is unreachable, so that a blackholed peer costs one timeout,
// not a stuck replication goroutine.
const (
	callTimeout     = 2 * time.Second
	snapshotTimeout = 5 * time.Minute
	snapshotChunk   = 256 << 10
)

// ErrUnknownGroup is answered for a frame addressed to a group this node
// does not (yet) run.
var ErrUnknownGroup = errors.New("raft group not running on this node")

// Dialer returns the shared connection to another node, by node ID.
type Dialer func(nodeID string) (*grpc.ClientConn, error)

// Network is the node-level Raft network. Every group's Transport sends over
// the one connection per peer node that Dialer returns; the gRPC server side
// (the api.RaftServer methods) hands incoming frames to the group they name.
//
// Raft server addresses are node IDs: the cluster map resolves them to
// host:port, so a node keeps its identity when its address changes.
type Network struct {
	self   string
	dial   Dialer
	faults fault.Injector
	// Tracing records the spans of traced entries this node sends and
	// receives (tracing.go; nil: none). Set before groups start.
	Tracing oteltrace.TracerProvider
	// HeartbeatPeriod is the shortest interval of raft's periodic
	// heartbeats (Tuning.LeaderHeartbeatPeriod of the groups; 0: of DefaultTuning):
	// a heartbeat sooner than that is a leadership check, sent at once.
	HeartbeatPeriod time.Duration
	hbUrgent        atomic.Int64 // heartbeats sent without waiting for the window

	mu struct {
		sync.Mutex
		groups map[string]*Transport
		hb     map[string]*hbQueue // target node -> heartbeats waiting for the next batch
	}

	api.UnimplementedRaftServer
}

// NewNetwork creates the Raft network of node self. faults may be nil.
func NewNetwork(self string, dial Dialer, faults fault.Injector) *Network {
	if faults == nil {
		faults = fault.None{}
	}
	n := &Network{self: self, dial: dial, faults: faults}
	n.mu.groups = make(map[string]*Transport)
	return n
}

func (n *Network) hbPeriod() time.Duration {
	if n.HeartbeatPeriod > 0 {
		return n.HeartbeatPeriod
	}
	return DefaultTuning().LeaderHeartbeatPeriod()
}

// Transport returns the transport of group, creating it on first use.
func (n *Network) Transport(group string) *Transport {
	n.mu.Lock()
	defer n.mu.Unlock()
	if t, ok := n.mu.groups[group]; ok && !t.isClosed() {
		return t
	}
	t := &Transport{net: n, group: group, consumer: make(chan raft.RPC, 64), shutdown: make(chan struct{}), created: time.Now()}
	n.mu.groups[group] = t
	return t
}

func (n *Network) lookup(group string) *Transport {
	n.mu.Lock()
	defer n.mu.Unlock()
	t := n.mu.groups[group]
	if t == nil || t.isClosed() {
		return nil
	}
	return t
}

func (n *Network) remove(t *Transport) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.mu.groups[t.group] == t {
		delete(n.mu.groups, t.group)
	}
}

// --- encoding ---

// msgpack is shared: a handle caches per-type encoding plans, and building
// them again for every message cost more than the message itself.
var msgpack = &codec.MsgpackHandle{}

func encode(v any) ([]byte, error) {
	var b []byte
	if err := codec.NewEncoderBytes(&b, msgpack).Encode(v); err != nil {
		return nil, err
	}
	return b, nil
}

func decode(b []byte, v any) error {
	return codec.NewDecoderBytes(b, msgpack).Decode(v)
}

func newCommand(kind uint32) (any, error) {
	switch kind {
	case kindAppend:
		return &raft.AppendEntriesRequest{}, nil
	case kindVote:
		return &raft.RequestVoteRequest{}, nil
	case kindPreVote:
		return &raft.RequestPreVoteRequest{}, nil
	case kindTimeoutNow:
		return &raft.TimeoutNowRequest{}, nil
	case kindSnapshot:
		return &raft.InstallSnapshotRequest{}, nil
	}
	return nil, fmt.Errorf("unknown raft rpc kind %d", kind)
}

// --- server side ---

// dispatch hands one decoded request to the group and waits for raft's answer.
func (n *Network) dispatch(ctx context.Context, f *api.RaftFrame, data io.Reader) (_ *api.RaftFrame, err error) {
	t := n.lookup(f.GetGroup())
	if t == nil {
		return &api.RaftFrame{Group: f.GetGroup(), Kind: f.GetKind(), From: n.self,
			Error: fmt.Sprintf("%v: %s on %s", ErrUnknownGroup, f.GetGroup(), n.self)}, nil
	}
	cmd, err := newCommand(f.GetKind())
	if err != nil {
		return nil, err
	}
	if err := decode(f.GetPayload(), cmd); err != nil {
		return nil, fmt.Errorf("decode raft %d for %s: %w", f.GetKind(), f.GetGroup(), err)
	}
	if out, refused := t.refuse(f, cmd); refused {
		return out, nil
	}
	if req, ok := cmd.(*raft.AppendEntriesRequest); ok && len(req.Entries) > 0 {
		// A follower's append of traced entries (tracing.go).
		spans := tracedEntries(n.Tracing, req.Entries, "cp.append", func(s oteltrace.Span) {
			s.SetAttributes(trace.KeyPartition.String(f.GetGroup()), trace.KeyNode.String(n.self), trace.KeyBatch.Int(len(req.Entries)))
		})
		defer func() { endSpans(spans, err) }()
	}
	respCh := make(chan raft.RPCResponse, 1)
	rpc := raft.RPC{Command: cmd, Reader: data, RespChan: respCh}
	if req, ok := cmd.(*raft.AppendEntriesRequest); ok && isHeartbeat(req) {
		if hb := t.heartbeatHandler(); hb != nil {
			hb(rpc)
			goto wait
		}
	}
	select {
	case t.consumer <- rpc:
	case <-t.shutdown:
		return nil, fmt.Errorf("group %s is shutting down", f.GetGroup())
	case <-ctx.Done():
		return nil, ctx.Err()
	}
wait:
	select {
	case r := <-respCh:
		out := &api.RaftFrame{Group: f.GetGroup(), Kind: f.GetKind(), From: n.self}
		if r.Error != nil {
			out.Error = r.Error.Error()
		}
		if r.Response != nil {
			if out.Payload, err = encode(r.Response); err != nil {
				return nil, err
			}
		}
		return out, nil
	case <-t.shutdown:
		return nil, fmt.Errorf("group %s is shutting down", f.GetGroup())
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func isHeartbeat(req *raft.AppendEntriesRequest) bool {
	leader := req.Addr
	if len(leader) == 0 {
		leader = req.Leader //nolint:staticcheck // older senders
	}
	return req.Term != 0 && leader != nil && req.PrevLogEntry == 0 && req.PrevLogTerm == 0 &&
		len(req.Entries) == 0 && req.LeaderCommitIndex == 0
}

// inbound applies the fault rules to a frame from another node: a request
// that the sender could not have delivered, or whose answer could not come
// back, fails like a lost packet.
func (n *Network) inbound(ctx context.Context, from string) error {
	if err := n.faults.Deliver(ctx, from, n.self); err != nil {
		return err
	}
	return nil
}

// Call serves AppendEntries, RequestVote, RequestPreVote and TimeoutNow.
func (n *Network) Call(ctx context.Context, f *api.RaftFrame) (*api.RaftFrame, error) {
	if err := n.inbound(ctx, f.GetFrom()); err != nil {
		return nil, err
	}
	resp, err := n.dispatch(ctx, f, nil)
	if err != nil {
		return nil, err
	}
	if err := n.faults.Deliver(ctx, n.self, f.GetFrom()); err != nil {
		return nil, err // the answer is lost on the way back
	}
	return resp, nil
}

// Pipeline serves pipelined AppendEntries in order.
func (n *Network) Pipeline(stream grpc.BidiStreamingServer[api.RaftFrame, api.RaftFrame]) error {
	for {
		f, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := n.inbound(stream.Context(), f.GetFrom()); err != nil {
			return err
		}
		resp, err := n.dispatch(stream.Context(), f, nil)
		if err != nil {
			return err
		}
		if err := n.faults.Deliver(stream.Context(), n.self, f.GetFrom()); err != nil {
			return err
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

// InstallSnapshot serves a streamed snapshot.
func (n *Network) InstallSnapshot(stream grpc.ClientStreamingServer[api.RaftFrame, api.RaftFrame]) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	if err := n.inbound(stream.Context(), first.GetFrom()); err != nil {
		return err
	}
	pr, pw := io.Pipe()
	go func() {
		for {
			f, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				pw.Close()
				return
			}
			if err != nil {
				pw.CloseWithError(err)
				return
			}
			if _, err := pw.Write(f.GetPayload()); err != nil {
				return
			}
		}
	}()
	resp, err := n.dispatch(stream.Context(), first, pr)
	pr.Close()
	if err != nil {
		return err
	}
	return stream.SendAndClose(resp)
}

// --- client side ---

// Transport is the raft.Transport of one group on one node.
type Transport struct {
	net      *Network
	group    string
	consumer chan raft.RPC

	shutdown  chan struct{}
	closeOnce sync.Once

	hbMu   sync.Mutex
	hb     func(raft.RPC)
	lastHB map[raft.ServerAddress]time.Time // when this group last sent a heartbeat to each peer

	acks Acks // what followers acknowledged, for receipts and the read lease

	// The vote fence: a replica that starts refuses to grant votes for
	// its followers' HeartbeatTimeout (voteFence; 0: DefaultTuning's). A
	// follower that heard from its leader rejects other candidates for a
	// HeartbeatTimeout, which the leader's read lease relies on; a restarted
	// replica has forgotten its leader, so it must not vote sooner either
	// (see Group.ReadBarrier).
	created   time.Time
	voteFence atomic.Int64 // time.Duration
	// leader, when set (bind), names the leader raft knows of: only that
	// node may make this replica campaign (TimeoutNow).
	leader atomic.Pointer[func() raft.ServerAddress]
}

// bind tells the transport how its group's raft instance learns its
// leader, and the HeartbeatTimeout its votes are fenced for after start.
func (t *Transport) bind(leader func() raft.ServerAddress, fence time.Duration) {
	t.leader.Store(&leader)
	t.voteFence.Store(int64(fence))
}

func (t *Transport) fenced() bool {
	f := time.Duration(t.voteFence.Load())
	if f <= 0 {
		f = DefaultTuning().HeartbeatTimeout
	}
	return time.Since(t.created) < f
}

// refuse answers, without raft, the requests a replica must not act on:
// votes within the vote fence of its start, and a TimeoutNow from a node
// other than its leader (a deposed leader's transfer arriving late would let
// its target win votes against the current leader's lease).
func (t *Transport) refuse(f *api.RaftFrame, cmd any) (*api.RaftFrame, bool) {
	var resp any
	switch cmd.(type) {
	case *raft.RequestVoteRequest:
		if !t.fenced() {
			return nil, false
		}
		resp = &raft.RequestVoteResponse{} // not granted; term 0 makes the candidate step down for nothing
	case *raft.RequestPreVoteRequest:
		if !t.fenced() {
			return nil, false
		}
		resp = &raft.RequestPreVoteResponse{}
	case *raft.TimeoutNowRequest:
		lf := t.leader.Load()
		if lf == nil {
			return nil, false
		}
		if l := (*lf)(); l == raft.ServerAddress(f.GetFrom()) {
			return nil, false
		}
		return &api.RaftFrame{Group: f.GetGroup(), Kind: f.GetKind(), From: t.net.self,
			Error: fmt.Sprintf("timeout-now for %s from %s refused: not the leader %s follows", f.GetGroup(), f.GetFrom(), t.net.self)}, true
	default:
		return nil, false
	}
	out := &api.RaftFrame{Group: f.GetGroup(), Kind: f.GetKind(), From: t.net.self}
	var err error
	if out.Payload, err = encode(resp); err != nil {
		out.Error = err.Error()
	}
	return out, true
}

// Acks is what this group's followers acknowledged to it as leader.
func (t *Transport) Acks() *Acks { return &t.acks }

var (
	_ raft.Transport   = (*Transport)(nil)
	_ raft.WithClose   = (*Transport)(nil)
	_ raft.WithPreVote = (*Transport)(nil)
)

func (t *Transport) isClosed() bool {
	select {
	case <-t.shutdown:
		return true
	default:
		return false
	}
}

func (t *Transport) heartbeatHandler() func(raft.RPC) {
	t.hbMu.Lock()
	defer t.hbMu.Unlock()
	return t.hb
}

// Consumer delivers incoming RPCs to raft.
func (t *Transport) Consumer() <-chan raft.RPC { return t.consumer }

// LocalAddr is this node's ID.
func (t *Transport) LocalAddr() raft.ServerAddress { return raft.ServerAddress(t.net.self) }

// SetHeartbeatHandler installs raft's fast path for heartbeats.
func (t *Transport) SetHeartbeatHandler(cb func(rpc raft.RPC)) {
	t.hbMu.Lock()
	defer t.hbMu.Unlock()
	t.hb = cb
}

// EncodePeer and DecodePeer: addresses are node IDs already.
func (t *Transport) EncodePeer(_ raft.ServerID, addr raft.ServerAddress) []byte { return []byte(addr) }

// DecodePeer is the inverse of EncodePeer.
func (t *Transport) DecodePeer(b []byte) raft.ServerAddress { return raft.ServerAddress(b) }

// Close stops the transport; pending inbound RPCs fail.
func (t *Transport) Close() error {
	t.closeOnce.Do(func() {
		close(t.shutdown)
		t.net.remove(t)
	})
	return nil
}

func (t *Transport) client(target raft.ServerAddress) (api.RaftClient, error) {
	if t.isClosed() {
		return nil, raft.ErrTransportShutdown
	}
	cc, err := t.net.dial(string(target))
	if err != nil {
		return nil, err
	}
	return api.NewRaftClient(cc), nil
}

// callContext bounds one outgoing call by callTimeout; a closing transport
// abandons its calls.
func (t *Transport) callContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	go func() {
		select {
		case <-t.shutdown:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// call sends one request frame and decodes the answer into resp.
func (t *Transport) call(target raft.ServerAddress, kind uint32, req, resp any) error {
	c, err := t.client(target)
	if err != nil {
		return err
	}
	payload, err := encode(req)
	if err != nil {
		return err
	}
	ctx, cancel := t.callContext()
	defer cancel()
	if err := t.net.faults.Deliver(ctx, t.net.self, string(target)); err != nil {
		return err
	}
	out, err := c.Call(ctx, &api.RaftFrame{Group: t.group, Kind: kind, Payload: payload, From: t.net.self})
	if err != nil {
		return fmt.Errorf("raft %s -> %s: %w", t.group, target, err)
	}
	return frameResult(out, resp)
}

func frameResult(f *api.RaftFrame, resp any) error {
	if f.GetError() != "" {
		return errors.New(f.GetError())
	}
	return decode(f.GetPayload(), resp)
}

// AppendEntries sends one AppendEntries RPC; heartbeats go out in batches
// with other groups' heartbeats to the same node.
func (t *Transport) AppendEntries(_ raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	if isHeartbeat(args) && !t.isClosed() {
		payload, err := encode(args)
		if err != nil {
			return err
		}
		ctx, cancel := t.callContext()
		defer cancel()
		// Sooner after this group's previous heartbeat to the target than
		// raft's periodic interval: a leadership check for a read, urgent.
		now := time.Now()
		t.hbMu.Lock()
		if t.lastHB == nil {
			t.lastHB = map[raft.ServerAddress]time.Time{}
		}
		urgent := now.Sub(t.lastHB[target]) < t.net.hbPeriod()
		t.lastHB[target] = now
		t.hbMu.Unlock()
		out, ok, err := t.net.heartbeat(ctx, string(target), &api.RaftFrame{Group: t.group, Kind: kindAppend, Payload: payload, From: t.net.self}, urgent)
		if ok {
			if err != nil {
				return fmt.Errorf("raft %s -> %s: %w", t.group, target, err)
			}
			if err := frameResult(out, resp); err != nil {
				return err
			}
			t.acks.observe(target, args, resp, now)
			return nil
		}
	}
	sent := time.Now()
	spans := t.replicateSpans(target, args)
	if err := t.call(target, kindAppend, args, resp); err != nil {
		endSpans(spans, err)
		return err
	}
	endSpans(spans, nil)
	t.acks.observe(target, args, resp, sent)
	return nil
}

// replicateSpans starts the leader's spans of sending traced entries to
// target (tracing.go).
func (t *Transport) replicateSpans(target raft.ServerAddress, args *raft.AppendEntriesRequest) []oteltrace.Span {
	return tracedEntries(t.net.Tracing, args.Entries, "cp.replicate", func(s oteltrace.Span) {
		s.SetAttributes(trace.KeyPartition.String(t.group), trace.KeyNode.String(string(target)), trace.KeyBatch.Int(len(args.Entries)))
	})
}

// RequestVote sends one RequestVote RPC.
func (t *Transport) RequestVote(_ raft.ServerID, target raft.ServerAddress, args *raft.RequestVoteRequest, resp *raft.RequestVoteResponse) error {
	return t.call(target, kindVote, args, resp)
}

// RequestPreVote sends one RequestPreVote RPC.
func (t *Transport) RequestPreVote(_ raft.ServerID, target raft.ServerAddress, args *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	return t.call(target, kindPreVote, args, resp)
}

// TimeoutNow sends one TimeoutNow RPC, ending the read lease first (Acks.fence).
func (t *Transport) TimeoutNow(_ raft.ServerID, target raft.ServerAddress, args *raft.TimeoutNowRequest, resp *raft.TimeoutNowResponse) error {
	t.acks.fence()
	return t.call(target, kindTimeoutNow, args, resp)
}

// InstallSnapshot streams a snapshot to target.
func (t *Transport) InstallSnapshot(_ raft.ServerID, target raft.ServerAddress, args *raft.InstallSnapshotRequest, resp *raft.InstallSnapshotResponse, data io.Reader) error {
	c, err := t.client(target)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), snapshotTimeout)
	defer cancel()
	if err := t.net.faults.Deliver(ctx, t.net.self, string(target)); err != nil {
		return err
	}
	payload, err := encode(args)
	if err != nil {
		return err
	}
	stream, err := c.InstallSnapshot(ctx)
	if err != nil {
		return err
	}
	if err := stream.Send(&api.RaftFrame{Group: t.group, Kind: kindSnapshot, Payload: payload, From: t.net.self}); err != nil {
		return err
	}
	buf := make([]byte, snapshotChunk)
	for {
		n, rerr := data.Read(buf)
		if n > 0 {
			if err := stream.Send(&api.RaftFrame{Group: t.group, Payload: append([]byte(nil), buf[:n]...)}); err != nil {
				return err
			}
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			return rerr
		}
	}
	out, err := stream.CloseAndRecv()
	if err != nil {
		return err
	}
	return frameResult(out, resp)
}

// AppendEntriesPipeline opens an ordered stream of AppendEntries to target.
func (t *Transport) AppendEntriesPipeline(_ raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	c, err := t.client(target)
	if err != nil {
		return nil, err
	}
	dctx, dcancel := context.WithTimeout(context.Background(), callTimeout)
	err = t.net.faults.Deliver(dctx, t.net.self, string(target))
	dcancel()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := c.Pipeline(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	p := &pipeline{t: t, target: string(target), stream: stream, cancel: cancel,
		inflight: make(chan *appendFuture, 128), done: make(chan raft.AppendFuture, 128), closed: make(chan struct{})}
	p.wg.Add(1)
	go p.receive()
	return p, nil
}

type pipeline struct {
	t        *Transport
	target   string
	stream   grpc.BidiStreamingClient[api.RaftFrame, api.RaftFrame]
	cancel   context.CancelFunc
	inflight chan *appendFuture
	done     chan raft.AppendFuture
	closed   chan struct{}
	once     sync.Once
	sendMu   sync.Mutex
	wg       sync.WaitGroup
}

type appendFuture struct {
	start time.Time
	req   *raft.AppendEntriesRequest
	resp  *raft.AppendEntriesResponse
	err   error
	ready chan struct{}
	spans []oteltrace.Span // of traced entries, ended with the answer
}

func (f *appendFuture) Error() error                          { <-f.ready; return f.err }
func (f *appendFuture) Start() time.Time                      { return f.start }
func (f *appendFuture) Request() *raft.AppendEntriesRequest   { return f.req }
func (f *appendFuture) Response() *raft.AppendEntriesResponse { return f.resp }

// AppendEntries queues one request; it blocks when 128 are in flight.
func (p *pipeline) AppendEntries(args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) (raft.AppendFuture, error) {
	payload, err := encode(args)
	if err != nil {
		return nil, err
	}
	dctx, dcancel := context.WithTimeout(p.stream.Context(), callTimeout)
	err = p.t.net.faults.Deliver(dctx, p.t.net.self, p.target)
	dcancel()
	if err != nil {
		return nil, err
	}
	f := &appendFuture{start: time.Now(), req: args, resp: resp, ready: make(chan struct{}), spans: p.t.replicateSpans(raft.ServerAddress(p.target), args)}
	select {
	case p.inflight <- f:
	case <-p.closed:
		return nil, raft.ErrPipelineShutdown
	}
	p.sendMu.Lock()
	err = p.stream.Send(&api.RaftFrame{Group: p.t.group, Kind: kindAppend, Payload: payload, From: p.t.net.self})
	p.sendMu.Unlock()
	if err != nil {
		return nil, err
	}
	return f, nil
}

// receive completes futures in order as responses arrive.
func (p *pipeline) receive() {
	defer p.wg.Done()
	for {
		out, err := p.stream.Recv()
		var f *appendFuture
		select {
		case f = <-p.inflight:
		case <-p.closed:
			return
		}
		if err != nil {
			f.err = err
		} else if f.err = frameResult(out, f.resp); f.err == nil {
			p.t.acks.observe(raft.ServerAddress(p.target), f.req, f.resp, f.start)
		}
		endSpans(f.spans, f.err)
		close(f.ready)
		select {
		case p.done <- f:
		case <-p.closed:
			return
		}
		if err != nil {
			return
		}
	}
}

// Consumer yields completed futures in order.
func (p *pipeline) Consumer() <-chan raft.AppendFuture { return p.done }

// Close cancels the stream and fails what is still in flight.
func (p *pipeline) Close() error {
	p.once.Do(func() {
		close(p.closed)
		p.cancel()
		p.wg.Wait()
		for {
			select {
			case f := <-p.inflight:
				f.err = raft.ErrPipelineShutdown
				close(f.ready)
			default:
				return
			}
		}
	})
	return nil
}
