// Package trace is capkv's OpenTelemetry tracing: one TracerProvider per
// node (and one in kvctl), the otelgrpc instrumentation that carries a
// trace across nodes (the client stats handler; on servers, interceptors
// that run otelgrpc's handler only for calls that are traced), an embedded
// in-memory span buffer that a node answers trace queries from, and the
// small helpers the rest of the code starts its own spans with.
//
// Sampling. A node samples a new trace with probability SampleRatio (kvd
// --trace-sample; 0, the default, samples nothing) and otherwise follows its
// parent: a request whose W3C traceparent says "sampled" is traced on every
// node it reaches, whatever their ratios. That is how a client forces a
// trace (kvctl --trace starts a sampled root span). A request that is not
// sampled gets a non-recording span: Start returns at once without
// allocating, and callers check Span.IsRecording before building attributes.
//
// Providers. Nodes of one process (kvd dev) each have their own provider,
// so each buffer holds the spans its node recorded. Code below the gRPC
// handlers never names a provider: Start uses the provider of the span
// already in the context (the server interceptor's span), and the client stats
// handler (ClientHandler) does the same, so a node's outgoing calls are
// recorded by that node. Code that runs without the request's context (Raft
// apply, replication) gets the span context from the log entry (Inject,
// Extract) and the provider from its owner.
//
// Export. The buffer (Buffer) keeps a node's newest spans, bounded in count
// and bytes, oldest evicted first; the Admin RPC TraceSpans reads it by
// trace ID. With an OTLP endpoint, spans are also batched to a collector
// over gRPC; a collector that is down loses spans, never requests.
//
// Logs. LogHandler wraps a slog.Handler so that records logged with a
// context that carries a valid span get trace_id and span_id attributes.
package trace
