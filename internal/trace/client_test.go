package trace

import (
	"context"
	"strings"
	"testing"
	"time"

	oteltrace "go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"
)

// clientCall runs one call's worth of the client handler and returns the
// outgoing traceparent it attached, if any.
func clientCall(ctx context.Context) (ctxOut context.Context, traceparent string) {
	h := ClientHandler()
	ctx = h.TagRPC(ctx, &stats.RPCTagInfo{FullMethodName: "/capkv.v1.KV/Put"})
	h.HandleRPC(ctx, &stats.Begin{Client: true, BeginTime: time.Now()})
	h.HandleRPC(ctx, &stats.End{Client: true, BeginTime: time.Now(), EndTime: time.Now()})
	md, _ := metadata.FromOutgoingContext(ctx)
	return ctx, strings.Join(md.Get("traceparent"), ",")
}

// A call without a span context passes through untouched: no metadata, no
// context values, so the heartbeat path pays nothing for tracing.
func TestClientHandlerSkipsCallsWithoutSpan(t *testing.T) {
	in := context.Background()
	out, tp := clientCall(in)
	if out != in {
		t.Errorf("TagRPC derived a new context for a call without a span")
	}
	if tp != "" {
		t.Errorf("traceparent %q sent for a call without a span", tp)
	}
}

// A sampled span's trace travels with the call, and so does an unsampled
// one's (flags 00), so the callee does not sample the request anew.
func TestClientHandlerPropagatesSpanContext(t *testing.T) {
	p, err := New(context.Background(), Config{Node: "n1", AlwaysSample: true, BufferSpans: 100, BufferBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(context.Background())
	ctx, span := p.Tracer("test").Start(context.Background(), "route")
	_, tp := clientCall(ctx)
	span.End()
	want := span.SpanContext().TraceID().String()
	if !strings.Contains(tp, want) || !strings.HasSuffix(tp, "-01") {
		t.Errorf("sampled call sent traceparent %q, want trace %s, flags 01", tp, want)
	}

	sc := oteltrace.NewSpanContext(oteltrace.SpanContextConfig{
		TraceID: oteltrace.TraceID{1, 2, 3}, SpanID: oteltrace.SpanID{4, 5, 6}, TraceFlags: 0})
	_, tp = clientCall(oteltrace.ContextWithSpanContext(context.Background(), sc))
	if !strings.Contains(tp, sc.TraceID().String()) || !strings.HasSuffix(tp, "-00") {
		t.Errorf("unsampled call sent traceparent %q, want trace %s, flags 00", tp, sc.TraceID())
	}
}
