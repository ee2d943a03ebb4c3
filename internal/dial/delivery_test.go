package dial

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/capkv/capkv/internal/kverrors"
)

// testServer is a loopback gRPC server whose health service blocks its
// calls until they end, and which can kill its TCP connections, as a
// crashing node does. Its errors go through kverrors.ToStatus, as a node's.
type testServer struct {
	healthpb.UnimplementedHealthServer
	addr    string
	entered chan struct{} // a handler started: the request was delivered

	mu    sync.Mutex
	conns []net.Conn
}

func newTestServer(t *testing.T) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &testServer{addr: ln.Addr().String(), entered: make(chan struct{}, 16)}
	srv := grpc.NewServer(append(ServerOptions(),
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			resp, err := h(ctx, req)
			return resp, kverrors.ToStatus(err)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			return kverrors.ToStatus(h(srv, ss))
		}))...)
	healthpb.RegisterHealthServer(srv, s)
	go srv.Serve(&trackingListener{Listener: ln, s: s})
	t.Cleanup(srv.Stop)
	return s
}

// Check answers "ok" and blocks on anything else until the call ends.
func (s *testServer) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	if req.GetService() == "ok" {
		return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
	}
	s.entered <- struct{}{}
	<-ctx.Done()
	return nil, ctx.Err()
}

// Watch sends one message and blocks until the stream ends.
func (s *testServer) Watch(_ *healthpb.HealthCheckRequest, stream grpc.ServerStreamingServer[healthpb.HealthCheckResponse]) error {
	if err := stream.Send(&healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}); err != nil {
		return err
	}
	s.entered <- struct{}{}
	<-stream.Context().Done()
	return stream.Context().Err()
}

// kill closes every connection the server accepted.
func (s *testServer) kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		c.Close()
	}
	s.conns = nil
}

type trackingListener struct {
	net.Listener
	s *testServer
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.s.mu.Lock()
		l.s.conns = append(l.s.conns, c)
		l.s.mu.Unlock()
	}
	return c, err
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func healthClient(t *testing.T, addr string, extra ...grpc.DialOption) healthpb.HealthClient {
	t.Helper()
	cc, err := Conn(addr, extra...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return healthpb.NewHealthClient(cc)
}

// wantKind checks a call's error: its kind (and not the other one), its
// gRPC code, that gRPC's text is still there, and that no node produced it.
func wantKind(t *testing.T, what string, err, kind error, code codes.Code) {
	t.Helper()
	other := kverrors.ErrIndeterminate
	if kind == kverrors.ErrIndeterminate {
		other = kverrors.ErrUnavailable
	}
	switch {
	case !errors.Is(err, kind) || errors.Is(err, other):
		t.Errorf("%s: %v, want %v", what, err, kind)
	case status.Code(err) != code:
		t.Errorf("%s: code %v, want %v (%v)", what, status.Code(err), code, err)
	case !strings.HasPrefix(err.Error(), "rpc error: code = "):
		t.Errorf("%s: %q lost gRPC's text", what, err)
	}
}

func TestNothingSentIsUnavailable(t *testing.T) {
	hc := healthClient(t, closedAddr(t))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "ok"})
	wantKind(t, "unary call to a closed port", err, kverrors.ErrUnavailable, codes.Unavailable)
	if kverrors.FromNode(err) || kverrors.FromStatus(err) != err {
		t.Errorf("a transport failure was taken for a node's answer: %v", err)
	}

	// Waiting for a connection until the deadline: the request never left.
	wctx, wcancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer wcancel()
	_, err = hc.Check(wctx, &healthpb.HealthCheckRequest{Service: "ok"}, grpc.WaitForReady(true))
	wantKind(t, "deadline while connecting", err, kverrors.ErrUnavailable, codes.DeadlineExceeded)

	stream, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	wantKind(t, "stream to a closed port", err, kverrors.ErrUnavailable, codes.Unavailable)
}

// A unary handler needs the request message: headers alone deliver nothing.
func TestHeadersWithoutMessageAreNotDelivered(t *testing.T) {
	s := newTestServer(t)
	hc := healthClient(t, s.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "ok"}); err != nil {
		t.Fatal(err) // connected: the next call's headers go out
	}
	_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: strings.Repeat("x", 64)}, grpc.MaxCallSendMsgSize(8))
	wantKind(t, "request over the send limit", err, kverrors.ErrUnavailable, codes.ResourceExhausted)
}

func TestSentThenConnectionKilledIsIndeterminate(t *testing.T) {
	s := newTestServer(t)
	hc := healthClient(t, s.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	done := make(chan error, 1)
	go func() {
		_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "block"})
		done <- err
	}()
	<-s.entered
	s.kill()
	wantKind(t, "unary call whose connection died", <-done, kverrors.ErrIndeterminate, codes.Unavailable)

	stream, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	<-s.entered
	s.kill()
	_, err = stream.Recv()
	wantKind(t, "stream whose connection died", err, kverrors.ErrIndeterminate, codes.Unavailable)
}

func TestDeadlineAfterSendIsIndeterminate(t *testing.T) {
	s := newTestServer(t)
	hc := healthClient(t, s.addr)
	// Connect first: on a loaded machine (CI, -race) a short deadline can
	// pass before the connection is up, and an unsent request is rightly a
	// definite failure, not the case under test.
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	if _, err := hc.Check(wctx, &healthpb.HealthCheckRequest{Service: "ok"}, grpc.WaitForReady(true)); err != nil {
		t.Fatalf("warm-up call: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "block"}, grpc.WaitForReady(true))
	// Two answers race: the client's own deadline (classified here as sent)
	// and the server's, whose handler also ends at the propagated deadline
	// and answers with its indeterminate status. A loaded machine lets the
	// server's win; callers read it with FromStatus, as here. Either way the
	// outcome must be indeterminate.
	err = kverrors.FromStatus(err)
	if !errors.Is(err, kverrors.ErrIndeterminate) || errors.Is(err, kverrors.ErrUnavailable) || status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("deadline after sending: %v (code %v), want ErrIndeterminate", err, status.Code(err))
	}
	select {
	case <-s.entered:
	default:
		t.Fatal("the handler never ran: the test did not send")
	}
}

// Interceptors a caller adds (a node's failure detector and fault hooks)
// run inside the classification: they see gRPC's own errors, and the errors
// they make, which have a kind, come out unchanged.
func TestCallerInterceptorsSeeGRPCErrors(t *testing.T) {
	var seen error
	observe := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		seen = invoker(ctx, method, req, reply, cc, opts...)
		return seen
	}
	hc := healthClient(t, closedAddr(t), grpc.WithChainUnaryInterceptor(observe))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "ok"})
	if _, isBare := seen.(interface{ GRPCStatus() *status.Status }); !isBare || errors.Is(seen, kverrors.ErrUnavailable) || status.Code(seen) != codes.Unavailable {
		t.Errorf("the caller's interceptor saw %T %v, want gRPC's bare Unavailable status", seen, seen)
	}
	wantKind(t, "after the caller's interceptor", err, kverrors.ErrUnavailable, codes.Unavailable)

	s := newTestServer(t)
	lost := fmt.Errorf("%w: answer lost", kverrors.ErrIndeterminate)
	dropped := fmt.Errorf("%w: request dropped", kverrors.ErrUnavailable)
	for _, c := range []struct {
		name string
		hook grpc.UnaryClientInterceptor
		want error
	}{
		{"answer lost", func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			if err := invoker(ctx, method, req, reply, cc, opts...); err != nil {
				return err
			}
			return lost
		}, lost},
		{"request dropped", func(context.Context, string, any, any, *grpc.ClientConn, grpc.UnaryInvoker, ...grpc.CallOption) error {
			return dropped
		}, dropped},
	} {
		hc := healthClient(t, s.addr, grpc.WithChainUnaryInterceptor(c.hook))
		if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "ok"}); err != c.want {
			t.Errorf("%s: %v, want the hook's error unchanged", c.name, err)
		}
	}
	if _, err := healthClient(t, s.addr).Check(ctx, &healthpb.HealthCheckRequest{Service: "ok"}); err != nil {
		t.Errorf("a successful call failed: %v", err)
	}
}
