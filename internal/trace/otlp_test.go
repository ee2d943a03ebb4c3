package trace

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
)

// receiver is an in-process OTLP trace collector.
type receiver struct {
	coltracepb.UnimplementedTraceServiceServer
	mu    sync.Mutex
	names map[string]string // span name -> service.instance.id
}

func (r *receiver) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		var inst string
		for _, a := range rs.GetResource().GetAttributes() {
			if a.GetKey() == "service.instance.id" {
				inst = a.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				r.names[s.GetName()] = inst
			}
		}
	}
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

func TestSpansReachOTLPCollector(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rcv := &receiver{names: map[string]string{}}
	srv := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(srv, rcv)
	go srv.Serve(lis)
	defer srv.Stop()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg := DefaultConfig("n7")
	cfg.OTLPEndpoint = lis.Addr().String()
	p, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	fctx, _ := Force(ctx)
	rctx, root := p.Tracer("t").Start(fctx, "capkv.v1.KV/Put")
	_, child := Start(rctx, "route")
	End(child, nil)
	root.End()
	// Close flushes the batch to the collector.
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	if rcv.names["capkv.v1.KV/Put"] != "n7" || rcv.names["route"] != "n7" {
		t.Fatalf("collector received %v, want KV/Put and route from n7", rcv.names)
	}
	if n, _ := p.Buffer().Len(); n != 2 {
		t.Fatalf("buffer holds %d spans next to the export, want 2", n)
	}
}
