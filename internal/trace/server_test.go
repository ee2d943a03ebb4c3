package trace

import (
	"context"
	"errors"
	"testing"

	oteltrace "go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// The server interceptor with sampling off hands an untraced call on with
// its own context (no span, nothing recorded), and a call that brings a
// sampled traceparent gets otelgrpc's server span in that trace, named by
// the method, ended with the call's status.
func TestServerTracing(t *testing.T) {
	p, err := New(context.Background(), Config{Node: "n1", BufferSpans: 100, BufferBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(context.Background())
	st := serverTracingOf(p)
	info := &grpc.UnaryServerInfo{FullMethod: "/capkv.v1.KV/Put"}
	var seen context.Context
	handler := func(ctx context.Context, req any) (any, error) {
		seen = ctx
		return nil, status.Error(codes.Unavailable, "no majority")
	}

	in := metadata.NewIncomingContext(context.Background(), metadata.Pairs("x-other", "1"))
	if _, err := st.unary(in, nil, info, handler); status.Code(err) != codes.Unavailable {
		t.Fatalf("untraced call: %v", err)
	}
	if seen != in {
		t.Error("an untraced call reached the handler with a derived context")
	}
	if n, _ := p.Buffer().Len(); n != 0 {
		t.Errorf("%d span(s) recorded for an untraced call", n)
	}

	const traceID = "0af7651916cd43dd8448eb211c80319c"
	in = metadata.NewIncomingContext(context.Background(), metadata.Pairs("traceparent", "00-"+traceID+"-b7ad6b7169203331-01"))
	if _, err := st.unary(in, nil, info, handler); status.Code(err) != codes.Unavailable {
		t.Fatalf("traced call: %v", err)
	}
	if sc := oteltrace.SpanContextFromContext(seen); sc.TraceID().String() != traceID || !sc.IsSampled() {
		t.Errorf("the handler's span context is %v, want trace %s sampled", sc, traceID)
	}
	spans := p.Buffer().Trace(traceID)
	if len(spans) != 1 {
		t.Fatalf("trace %s holds %d spans, want the server span: %+v", traceID, len(spans), spans)
	}
	s := spans[0]
	if s.Name != "capkv.v1.KV/Put" || s.Kind != "server" || s.ParentID != "b7ad6b7169203331" || s.Error == "" {
		t.Errorf("server span %+v: want capkv.v1.KV/Put, kind server, parent b7ad6b7169203331, the error", s)
	}
}

// With a ratio above 0 a call with no trace context may start a trace;
// the stream interceptor hands the handler the span's context.
func TestServerTracingStreamAndRatio(t *testing.T) {
	p, err := New(context.Background(), Config{Node: "n1", SampleRatio: 1, BufferSpans: 100, BufferBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(context.Background())
	st := serverTracingOf(p)
	var sc oteltrace.SpanContext
	err = st.stream(nil, fakeStream{ctx: context.Background()}, &grpc.StreamServerInfo{FullMethod: "/capkv.v1.KV/Watch"},
		func(srv any, ss grpc.ServerStream) error {
			sc = oteltrace.SpanContextFromContext(ss.Context())
			return errors.New("closed")
		})
	if err == nil || !sc.IsSampled() {
		t.Fatalf("stream: err %v, span context %v: want the handler's error and a sampled span", err, sc)
	}
	if spans := p.Buffer().Trace(sc.TraceID().String()); len(spans) != 1 || spans[0].Name != "capkv.v1.KV/Watch" {
		t.Errorf("stream spans: %+v, want one capkv.v1.KV/Watch", spans)
	}
}

type fakeStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s fakeStream) Context() context.Context { return s.ctx }
