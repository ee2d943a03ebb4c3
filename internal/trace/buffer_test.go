package trace

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

func span(trace, id, parent, name string, start, took time.Duration) Span {
	t0 := time.Unix(1000, 0)
	return Span{TraceID: trace, SpanID: id, ParentID: parent, Name: name, Node: "n1", Start: t0.Add(start), End: t0.Add(start + took)}
}

func TestBufferEvictsOldestByCount(t *testing.T) {
	b := NewBuffer("n1", 3, 1<<20)
	for i := range 5 {
		b.Add(span(fmt.Sprintf("t%d", i%2), fmt.Sprint(i), "", "s", time.Duration(i), 1))
	}
	if n, _ := b.Len(); n != 3 {
		t.Fatalf("buffer holds %d spans, want 3", n)
	}
	// Spans 0 and 1 were evicted: t0 keeps 2 and 4, t1 keeps 3.
	if got := b.Trace("t0"); len(got) != 2 || got[0].SpanID != "2" || got[1].SpanID != "4" {
		t.Fatalf("t0 = %+v, want spans 2 and 4", got)
	}
	if got := b.Trace("t1"); len(got) != 1 || got[0].SpanID != "3" {
		t.Fatalf("t1 = %+v, want span 3", got)
	}
	if got := b.Trace("nope"); len(got) != 0 {
		t.Fatalf("unknown trace = %+v", got)
	}
}

func TestBufferEvictsByBytes(t *testing.T) {
	one := span("t", "x", "", strings.Repeat("a", 1000), 0, 1)
	b := NewBuffer("n1", 1000, 3*one.size()+10)
	for i := range 10 {
		s := one
		s.SpanID = fmt.Sprint(i)
		b.Add(s)
	}
	n, bytes := b.Len()
	if n != 3 || bytes > 3*one.size()+10 {
		t.Fatalf("buffer holds %d spans / %d bytes, want 3 within %d", n, bytes, 3*one.size()+10)
	}
	if got := b.Trace("t"); got[0].SpanID != "7" {
		t.Fatalf("oldest kept = %s, want 7", got[0].SpanID)
	}
	// A span larger than the whole budget still goes in, alone.
	b.Add(span("big", "b", "", strings.Repeat("z", 10000), 0, 1))
	if n, _ := b.Len(); n != 1 || len(b.Trace("t")) != 0 {
		t.Fatalf("after an oversize span: %d spans, t has %d", n, len(b.Trace("t")))
	}
}

func TestProviderBuffersSampledOnly(t *testing.T) {
	ctx := context.Background()
	off, err := New(ctx, DefaultConfig("n1"))
	if err != nil {
		t.Fatal(err)
	}
	defer off.Close(ctx)
	// A root span that is not a KV request is never sampled, whatever the ratio.
	_, s := off.Tracer("t").Start(ctx, "capkv.v1.KV/Put")
	s.End()
	if n, _ := off.Buffer().Len(); n != 0 {
		t.Fatalf("ratio 0 buffered %d spans", n)
	}
	on, err := New(ctx, Config{Node: "n2", SampleRatio: 1, BufferSpans: 10, BufferBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer on.Close(ctx)
	_, s = on.Tracer("t").Start(ctx, "capkv.v1.Admin/Ring")
	s.End()
	rctx, root := on.Tracer("t").Start(ctx, "capkv.v1.KV/Put")
	cctx, child := Start(rctx, "child")
	if TraceID(cctx) != root.SpanContext().TraceID().String() {
		t.Fatalf("child trace %q, root %s", TraceID(cctx), root.SpanContext().TraceID())
	}
	End(child, nil)
	root.End()
	got := on.Buffer().Trace(root.SpanContext().TraceID().String())
	if len(got) != 2 || got[1].ParentID != got[0].SpanID || got[1].Attrs[string(KeyOutcome)] != "ok" || got[0].Node != "n2" {
		t.Fatalf("buffered %+v", got)
	}
	if n, _ := on.Buffer().Len(); n != 2 {
		t.Fatalf("admin root span was sampled: %d spans", n)
	}
	// The trace context survives a Raft entry's extensions.
	ext := Inject(cctx)
	if TraceID(Extract(ctx, ext)) != TraceID(cctx) || Inject(ctx) != nil {
		t.Fatalf("inject/extract: %q", ext)
	}
}

func TestBadConfig(t *testing.T) {
	if _, err := New(context.Background(), Config{SampleRatio: 2, BufferSpans: -1}); err == nil ||
		!strings.Contains(err.Error(), "ratio 2") || !strings.Contains(err.Error(), "-1 spans") {
		t.Fatalf("err = %v", err)
	}
}

func TestPrintTree(t *testing.T) {
	spans := []Span{
		span("t", "c2", "a", "second child", 3*time.Millisecond, time.Millisecond),
		span("t", "a", "", "root", 0, 5*time.Millisecond),
		span("t", "c1", "a", "first child", time.Millisecond, time.Millisecond),
		span("t", "g", "c1", "grandchild", 1500*time.Microsecond, 250*time.Microsecond),
		span("t", "o", "gone", "orphan", 4*time.Millisecond, time.Millisecond),
	}
	spans[2].Attrs = map[string]string{"capkv.partition": "p3", "capkv.mode": "cp", "rpc.method": "Put"}
	var b strings.Builder
	PrintTree(&b, spans)
	want := `    start      took  node span
      0ns    5.00ms  n1   root
   1.00ms    1.00ms  n1   ├─ first child partition=p3 mode=cp
   1.50ms   250.0µs  n1   │  └─ grandchild
   3.00ms    1.00ms  n1   └─ second child
   4.00ms    1.00ms  n1   orphan
`
	if b.String() != want {
		t.Fatalf("tree:\n%s\nwant:\n%s", b.String(), want)
	}
	var h strings.Builder
	if err := WriteHTML(&h, "t", spans); err != nil || !strings.Contains(h.String(), "grandchild") || strings.Count(h.String(), `<div class="b`) != 5 {
		t.Fatalf("html err=%v:\n%s", err, h.String())
	}
}
