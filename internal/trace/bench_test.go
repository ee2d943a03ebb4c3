package trace

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"
)

// BenchmarkServerTracing measures what tracing adds to each request on the
// server path: the interceptor's begin and end of the RPC span, and one
// span of our own. "off" is --trace-sample 0 with no traceparent (the
// default), "ratio1" --trace-sample 1, "asked" a request a client asked to
// trace (kvctl --trace).
func BenchmarkServerTracing(b *testing.B) {
	for _, tc := range []struct {
		name  string
		ratio float64
		md    bool // the call brings a sampled traceparent
	}{{"off", 0, false}, {"ratio1", 1, false}, {"asked", 0, true}} {
		b.Run(tc.name, func(b *testing.B) {
			p, err := New(context.Background(), Config{Node: "n1", SampleRatio: tc.ratio, BufferSpans: 10000, BufferBytes: 16 << 20})
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close(context.Background())
			st := serverTracingOf(p)
			info := &grpc.UnaryServerInfo{FullMethod: "/capkv.v1.KV/Put"}
			in := context.Background()
			if tc.md {
				in = metadata.NewIncomingContext(in, metadata.Pairs("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"))
			}
			handler := func(ctx context.Context, req any) (any, error) {
				sctx, s := Start(ctx, "route")
				if s.IsRecording() {
					s.SetAttributes(KeyKeyspace.String("accounts"), KeyPartition.String("p1"))
				}
				End(s, nil)
				return sctx, nil
			}
			b.ReportAllocs()
			for b.Loop() {
				st.unary(in, nil, info, handler)
			}
		})
	}
}

// BenchmarkClientHandler measures what tracing adds to each outgoing call:
// "nospan" is every heartbeat and every request with sampling off,
// "nospan-unskipped" the same call through otelgrpc's handler alone (what
// skipNoSpan saves), "sampled" a call made under a sampled span.
func BenchmarkClientHandler(b *testing.B) {
	p, err := New(context.Background(), Config{Node: "n1", AlwaysSample: true, BufferSpans: 10000, BufferBytes: 16 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close(context.Background())
	sampled, span := p.Tracer("bench").Start(context.Background(), "route")
	defer span.End()
	skipping := ClientHandler()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		h    stats.Handler
	}{{"nospan", context.Background(), skipping}, {"nospan-unskipped", context.Background(), skipping.(skipNoSpan).Handler}, {"sampled", sampled, skipping}} {
		b.Run(tc.name, func(b *testing.B) {
			h := tc.h
			info := &stats.RPCTagInfo{FullMethodName: "/capkv.v1.Raft/Heartbeats"}
			b.ReportAllocs()
			for b.Loop() {
				ctx := h.TagRPC(tc.ctx, info)
				h.HandleRPC(ctx, &stats.Begin{Client: true, BeginTime: time.Now()})
				h.HandleRPC(ctx, &stats.End{Client: true, BeginTime: time.Now(), EndTime: time.Now()})
			}
		})
	}
}
