package trace

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/stats"
)

// BenchmarkServerHandler measures what tracing adds to each request on the
// server path: the stats handler's begin and end of the RPC span, and one
// span of our own. "off" is --trace-sample 0 with no traceparent (the
// default), "sampled" a request that is traced.
func BenchmarkServerHandler(b *testing.B) {
	for _, tc := range []struct {
		name  string
		ratio float64
	}{{"off", 0}, {"sampled", 1}} {
		b.Run(tc.name, func(b *testing.B) {
			p, err := New(context.Background(), Config{Node: "n1", SampleRatio: tc.ratio, BufferSpans: 10000, BufferBytes: 16 << 20})
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close(context.Background())
			h := ServerHandler(p)
			info := &stats.RPCTagInfo{FullMethodName: "/capkv.v1.KV/Put"}
			b.ReportAllocs()
			for b.Loop() {
				ctx := h.TagRPC(context.Background(), info)
				h.HandleRPC(ctx, &stats.Begin{BeginTime: time.Now()})
				sctx, s := Start(ctx, "route")
				if s.IsRecording() {
					s.SetAttributes(KeyKeyspace.String("accounts"), KeyPartition.String("p1"))
				}
				End(s, nil)
				h.HandleRPC(sctx, &stats.End{BeginTime: time.Now(), EndTime: time.Now()})
			}
		})
	}
}
