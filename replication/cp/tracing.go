package cp

import (
	"context"
	"time"

	"github.com/hashicorp/raft"
	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/capkv/capkv/internal/trace"
)

// Tracing: a traced proposal carries its span context in its log entry's
// Extensions (a W3C traceparent, replicated and stored with the entry), so
// the leader's replication to each follower, the follower's append and
// every replica's apply are recorded as children of the propose span,
// although hashicorp/raft runs them on its own goroutines without the
// request's context. An untraced entry has no Extensions and costs nothing.

// tracedEntries starts one span per distinct traced entry context in
// entries (usually none, at most a handful), with tp.
func tracedEntries(tp oteltrace.TracerProvider, entries []*raft.Log, name string, attrs func(oteltrace.Span)) []oteltrace.Span {
	if tp == nil {
		return nil
	}
	var spans []oteltrace.Span
	var seen []string
	for _, l := range entries {
		if len(l.Extensions) == 0 {
			continue
		}
		dup := false
		for _, s := range seen {
			dup = dup || s == string(l.Extensions)
		}
		if dup {
			continue
		}
		seen = append(seen, string(l.Extensions))
		_, span := trace.StartWith(trace.Extract(context.Background(), l.Extensions), tp, name)
		if span.IsRecording() {
			attrs(span)
			spans = append(spans, span)
		}
	}
	return spans
}

// endSpans ends spans with the outcome of err.
func endSpans(spans []oteltrace.Span, err error) {
	for _, s := range spans {
		trace.End(s, err)
	}
}

// applySpans records the apply of a batch: one span per traced entry,
// from the batch's start, with the batch size.
func applySpans(tp oteltrace.TracerProvider, self, partition string, logs []*raft.Log, start time.Time) {
	for _, s := range tracedEntriesAt(tp, logs, start) {
		s.SetAttributes(trace.KeyPartition.String(partition), trace.KeyNode.String(self), trace.KeyBatch.Int(len(logs)))
		trace.End(s, nil)
	}
}

func tracedEntriesAt(tp oteltrace.TracerProvider, logs []*raft.Log, start time.Time) []oteltrace.Span {
	var out []oteltrace.Span
	for _, l := range logs {
		if len(l.Extensions) == 0 || tp == nil {
			continue
		}
		_, span := trace.StartWith(trace.Extract(context.Background(), l.Extensions), tp, "cp.apply", oteltrace.WithTimestamp(start))
		if span.IsRecording() {
			out = append(out, span)
		}
	}
	return out
}
