package dial

import (
	"context"
	"errors"
	"io"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/stats"

	"github.com/capkv/capkv/internal/kverrors"
)

// Delivery: whether a failed call may have reached the server is a fact the
// transport knows, so every connection records it per call and classifies
// the call's error with it (kverrors.FromTransport): a call that failed
// before any of its request was handed to the transport is ErrUnavailable
// (definite), one that failed later is ErrIndeterminate.
//
// The interceptors below are the outermost of a connection's chain (Conn
// installs them before the caller's options), so interceptors a caller adds
// see gRPC's errors unchanged, and errors they make with a kind pass through.

// delivery is what the transport did for one call, across its attempts
// (gRPC's transparent retries share it: once sent, always "maybe delivered").
type delivery struct {
	header  atomic.Bool // the request's headers were queued on a connection
	payload atomic.Bool // a request message was queued on a connection
}

type deliveryKey struct{}

// sent reports whether the server may have acted on the call. A server runs
// a handler that takes one request message (unary, server-streaming) only
// once that message arrived; a client-streaming handler starts on the
// headers alone.
func (d *delivery) sent(clientStreams bool) bool {
	if clientStreams {
		return d.header.Load() || d.payload.Load()
	}
	return d.payload.Load()
}

// deliveryStats records the transport's events into the call's delivery.
// gRPC calls it with a context derived from the one the interceptor gave
// the call, which carries the record.
type deliveryStats struct{}

func (deliveryStats) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }

func (deliveryStats) HandleRPC(ctx context.Context, s stats.RPCStats) {
	d, ok := ctx.Value(deliveryKey{}).(*delivery)
	if !ok {
		return
	}
	switch s.(type) {
	case *stats.OutHeader:
		d.header.Store(true)
	case *stats.OutPayload:
		d.payload.Store(true)
	}
}

func (deliveryStats) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }

func (deliveryStats) HandleConn(context.Context, stats.ConnStats) {}

// unaryDelivery classifies a unary call's error by what was sent.
func unaryDelivery(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	d := new(delivery)
	err := invoker(context.WithValue(ctx, deliveryKey{}, d), method, req, reply, cc, opts...)
	return kverrors.FromTransport(err, d.sent(false))
}

// streamDelivery classifies the errors of a stream's opening, sends and
// receives by what was sent. io.EOF, the clean end of a stream (and, from
// SendMsg, gRPC's hint to call RecvMsg for the status), stays as it is.
func streamDelivery(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	d := new(delivery)
	s, err := streamer(context.WithValue(ctx, deliveryKey{}, d), desc, cc, method, opts...)
	if err != nil {
		return nil, kverrors.FromTransport(err, d.sent(desc.ClientStreams))
	}
	return &deliveryStream{ClientStream: s, d: d, clientStreams: desc.ClientStreams}, nil
}

type deliveryStream struct {
	grpc.ClientStream
	d             *delivery
	clientStreams bool
}

func (s *deliveryStream) classify(err error) error {
	if err == nil || errors.Is(err, io.EOF) {
		return err
	}
	return kverrors.FromTransport(err, s.d.sent(s.clientStreams))
}

func (s *deliveryStream) SendMsg(m any) error { return s.classify(s.ClientStream.SendMsg(m)) }

func (s *deliveryStream) RecvMsg(m any) error { return s.classify(s.ClientStream.RecvMsg(m)) }

func (s *deliveryStream) CloseSend() error { return s.classify(s.ClientStream.CloseSend()) }
