package kverrors_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/capkv/capkv/internal/dial"
	"github.com/capkv/capkv/internal/kverrors"
)

// node is a loopback gRPC server shaped like a capkv node: its handler's
// errors wrap sentinels, ToStatus maps them once, and it forwards to other
// nodes over dial's connections. The health service's Check stands in for
// the KV service; the service name says what the handler does:
//
//	kind:I          fail with sentinel I of the table
//	block           wait until the call ends
//	via:ADDR:NAME   forward NAME to the node at ADDR, wrapping its error
type node struct {
	healthpb.UnimplementedHealthServer
	addr string
}

func startNode(t *testing.T) *node {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n := &node{addr: ln.Addr().String()}
	srv := grpc.NewServer(append(dial.ServerOptions(), grpc.ChainUnaryInterceptor(
		func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			resp, err := h(ctx, req)
			return resp, kverrors.ToStatus(err)
		}))...)
	healthpb.RegisterHealthServer(srv, n)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return n
}

func (n *node) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	name := req.GetService()
	switch {
	case strings.HasPrefix(name, "kind:"):
		i, err := strconv.Atoi(strings.TrimPrefix(name, "kind:"))
		if err != nil || i < 0 || i >= len(kverrors.Sentinels) {
			return nil, fmt.Errorf("%w: service %q", kverrors.ErrInvalidArgument, name)
		}
		return nil, fmt.Errorf("partition p3 on %s: %w", n.addr, kverrors.Sentinels[i].Err)
	case name == "block":
		<-ctx.Done()
		return nil, ctx.Err()
	case strings.HasPrefix(name, "via:"):
		rest := strings.TrimPrefix(name, "via:")
		host, rest, _ := strings.Cut(rest, ":")
		port, inner, _ := strings.Cut(rest, ":")
		to := host + ":" + port
		cc, err := dial.Conn(to)
		if err != nil {
			return nil, err
		}
		defer cc.Close()
		fctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		resp, err := healthpb.NewHealthClient(cc).Check(fctx, &healthpb.HealthCheckRequest{Service: inner})
		if err != nil {
			return nil, fmt.Errorf("via %s: %w", to, kverrors.FromStatus(err))
		}
		return resp, nil
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

func call(t *testing.T, addr, service string) error {
	t.Helper()
	cc, err := dial.Conn(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err == nil {
		t.Fatalf("%s on %s: no error", service, addr)
	}
	return err
}

// only reports whether err matches sentinel and no other sentinel.
func only(err, sentinel error) bool {
	for _, s := range kverrors.Sentinels {
		if errors.Is(err, s.Err) != (s.Err == sentinel) {
			return false
		}
	}
	return true
}

// Every sentinel crosses a real gRPC connection, and a forwarding hop, as
// itself, with its code and its text.
func TestWireRoundTrip(t *testing.T) {
	a, b := startNode(t), startNode(t)
	for i, s := range kverrors.Sentinels {
		text := fmt.Sprintf("partition p3 on %s: %s", b.addr, s.Err)
		raw := call(t, b.addr, fmt.Sprintf("kind:%d", i))
		err := kverrors.FromStatus(raw)
		if !only(err, s.Err) || status.Code(raw) != s.Code || err.Error() != text || !kverrors.FromNode(raw) {
			t.Errorf("%v: got %v (code %v, from node %t)", s.Err, err, status.Code(raw), kverrors.FromNode(raw))
		}
		// Node a forwards b's error.
		raw = call(t, a.addr, fmt.Sprintf("via:%s:kind:%d", b.addr, i))
		err = kverrors.FromStatus(raw)
		if !only(err, s.Err) || status.Code(raw) != s.Code || err.Error() != "via "+b.addr+": "+text {
			t.Errorf("%v via a hop: got %v (code %v)", s.Err, err, status.Code(raw))
		}
	}
}

// A forwarding node's transport failures reach the client with the kind
// the forwarding node's connection gave them, as that node's answer.
func TestWireForwardedTransportFailure(t *testing.T) {
	a, b := startNode(t), startNode(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	for _, c := range []struct {
		service string
		want    error
	}{
		{"via:" + closed + ":ok", kverrors.ErrUnavailable},      // never sent from a
		{"via:" + b.addr + ":block", kverrors.ErrIndeterminate}, // sent; a's deadline passed
	} {
		raw := call(t, a.addr, c.service)
		err := kverrors.FromStatus(raw)
		if !only(err, c.want) || !kverrors.FromNode(raw) || !strings.HasPrefix(err.Error(), "via ") {
			t.Errorf("%s: %v (from node %t), want %v from node a", c.service, err, kverrors.FromNode(raw), c.want)
		}
	}
}
