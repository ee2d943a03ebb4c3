package trace

import (
	"context"
	"slices"
	"sync"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	oteltrace "go.opentelemetry.io/otel/trace"
)

// Span is one finished span as the buffer keeps it: small, flat, and what
// kvctl trace prints.
type Span struct {
	TraceID  string            `json:"trace_id"`
	SpanID   string            `json:"span_id"`
	ParentID string            `json:"parent_id,omitempty"`
	Name     string            `json:"name"`
	Node     string            `json:"node"`
	Kind     string            `json:"kind,omitempty"`
	Start    time.Time         `json:"start"`
	End      time.Time         `json:"end"`
	Attrs    map[string]string `json:"attrs,omitempty"`
	Error    string            `json:"error,omitempty"`
}

// Duration is how long the span took.
func (s Span) Duration() time.Duration { return s.End.Sub(s.Start) }

// size estimates the bytes a buffered span holds.
func (s *Span) size() int {
	n := 160 + len(s.Name) + len(s.Node) + len(s.Kind) + len(s.Error)
	for k, v := range s.Attrs {
		n += 32 + len(k) + len(v)
	}
	return n
}

// Buffer is a bounded in-memory ring of finished spans, indexed by trace
// ID: when adding a span would exceed maxSpans or maxBytes, the oldest
// spans are evicted first. It is the sdk's span processor; OnEnd runs on
// the goroutine that ends a span, so it only converts and appends under a
// short lock.
type Buffer struct {
	node               string
	maxSpans, maxBytes int
	mu                 struct {
		sync.Mutex
		ring    []*Span // oldest at head
		head, n int
		bytes   int
		byTrace map[string][]*Span
	}
}

var _ sdktrace.SpanProcessor = (*Buffer)(nil)

// NewBuffer returns a buffer of at most maxSpans spans and about maxBytes
// bytes, recording spans of node.
func NewBuffer(node string, maxSpans, maxBytes int) *Buffer {
	b := &Buffer{node: node, maxSpans: max(maxSpans, 1), maxBytes: maxBytes}
	b.mu.ring = make([]*Span, b.maxSpans)
	b.mu.byTrace = map[string][]*Span{}
	return b
}

// Add stores s, evicting the oldest spans to stay within the bounds.
func (b *Buffer) Add(s Span) {
	sz := s.size()
	b.mu.Lock()
	defer b.mu.Unlock()
	for b.mu.n > 0 && (b.mu.n >= b.maxSpans || b.mu.bytes+sz > b.maxBytes) {
		b.evictLocked()
	}
	sp := &s
	b.mu.ring[(b.mu.head+b.mu.n)%len(b.mu.ring)] = sp
	b.mu.n++
	b.mu.bytes += sz
	b.mu.byTrace[s.TraceID] = append(b.mu.byTrace[s.TraceID], sp)
}

// evictLocked drops the oldest span.
func (b *Buffer) evictLocked() {
	old := b.mu.ring[b.mu.head]
	b.mu.ring[b.mu.head] = nil
	b.mu.head = (b.mu.head + 1) % len(b.mu.ring)
	b.mu.n--
	b.mu.bytes -= old.size()
	list := b.mu.byTrace[old.TraceID]
	if i := slices.Index(list, old); i >= 0 {
		list = slices.Delete(list, i, i+1)
	}
	if len(list) == 0 {
		delete(b.mu.byTrace, old.TraceID)
	} else {
		b.mu.byTrace[old.TraceID] = list
	}
}

// Trace returns copies of the buffered spans of traceID, by start time.
func (b *Buffer) Trace(traceID string) []Span {
	b.mu.Lock()
	list := b.mu.byTrace[traceID]
	out := make([]Span, 0, len(list))
	for _, s := range list {
		out = append(out, *s)
	}
	b.mu.Unlock()
	slices.SortFunc(out, func(a, c Span) int { return a.Start.Compare(c.Start) })
	return out
}

// Len is the number of buffered spans and their estimated bytes.
func (b *Buffer) Len() (spans, bytes int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.mu.n, b.mu.bytes
}

// OnStart implements sdktrace.SpanProcessor.
func (b *Buffer) OnStart(context.Context, sdktrace.ReadWriteSpan) {}

// OnEnd implements sdktrace.SpanProcessor: it buffers a sampled span.
func (b *Buffer) OnEnd(s sdktrace.ReadOnlySpan) {
	if !s.SpanContext().IsSampled() {
		return
	}
	sp := Span{TraceID: s.SpanContext().TraceID().String(), SpanID: s.SpanContext().SpanID().String(),
		Name: s.Name(), Node: b.node, Start: s.StartTime(), End: s.EndTime()}
	if s.Parent().IsValid() {
		sp.ParentID = s.Parent().SpanID().String()
	}
	if k := s.SpanKind(); k != oteltrace.SpanKindInternal && k != oteltrace.SpanKindUnspecified {
		sp.Kind = k.String()
	}
	if attrs := s.Attributes(); len(attrs) > 0 {
		sp.Attrs = make(map[string]string, len(attrs))
		for _, kv := range attrs {
			sp.Attrs[string(kv.Key)] = kv.Value.Emit()
		}
	}
	if st := s.Status(); st.Code == 1 { // codes.Error
		sp.Error = st.Description
		if sp.Error == "" {
			sp.Error = "error"
		}
	}
	b.Add(sp)
}

// Shutdown implements sdktrace.SpanProcessor.
func (b *Buffer) Shutdown(context.Context) error { return nil }

// ForceFlush implements sdktrace.SpanProcessor.
func (b *Buffer) ForceFlush(context.Context) error { return nil }

// TraceOrNil is Trace on a buffer that may be nil (a provider without one).
func (b *Buffer) TraceOrNil(traceID string) []Span {
	if b == nil {
		return nil
	}
	return b.Trace(traceID)
}
