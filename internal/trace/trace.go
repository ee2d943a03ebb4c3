package trace

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	oteltrace "go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/embedded"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"

	"github.com/capkv/capkv/internal/kverrors"
)

// ScopeName names capkv's own instrumentation.
const ScopeName = "github.com/capkv/capkv"

// Attribute keys of capkv's spans.
const (
	KeyKeyspace  = attribute.Key("capkv.keyspace")
	KeyPartition = attribute.Key("capkv.partition")
	KeyMode      = attribute.Key("capkv.mode")
	KeyLevel     = attribute.Key("capkv.level")
	KeyNode      = attribute.Key("capkv.node")
	KeyOutcome   = attribute.Key("capkv.outcome")
	KeyBatch     = attribute.Key("capkv.batch")
)

// Config configures one provider. Build it from DefaultConfig.
type Config struct {
	// Node names the node (or "kvctl") the spans are recorded on.
	Node string
	// SampleRatio is the probability that a request no one asked to trace
	// is traced (0: only requests whose parent is sampled; 1: all).
	SampleRatio float64
	// OTLPEndpoint, when set, is a collector's OTLP/gRPC address
	// (host:port); spans are batched to it as well as buffered.
	OTLPEndpoint string
	// OTLPInsecure sends to the collector in plaintext (the default for a
	// collector on loopback or inside the cluster network).
	OTLPInsecure bool
	// BufferSpans and BufferBytes bound the in-memory span buffer (0: no
	// buffer).
	BufferSpans, BufferBytes int
	// AlwaysSample samples every root span (kvctl --trace).
	AlwaysSample bool
}

// DefaultConfig is a node's tracing configuration: nothing sampled unless a
// client asks, a buffer of 10000 spans or 16 MiB, no export.
func DefaultConfig(node string) Config {
	return Config{Node: node, BufferSpans: 10000, BufferBytes: 16 << 20, OTLPInsecure: true}
}

// Validate reports every bad field with its value.
func (c Config) Validate() error {
	var errs []error
	if c.SampleRatio < 0 || c.SampleRatio > 1 {
		errs = append(errs, fmt.Errorf("trace sample ratio %v: must be between 0 and 1", c.SampleRatio))
	}
	if c.BufferSpans < 0 || c.BufferBytes < 0 {
		errs = append(errs, fmt.Errorf("trace buffer %d spans / %d bytes: must not be negative", c.BufferSpans, c.BufferBytes))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", kverrors.ErrInvalidArgument, err)
	}
	return nil
}

// Provider is one node's tracer provider with its span buffer.
type Provider struct {
	*sdktrace.TracerProvider
	buf   *Buffer
	ratio float64 // of new traces; 1 with AlwaysSample
}

// New builds a provider. The OTLP exporter connects lazily: an endpoint
// that is down is not an error here.
func New(ctx context.Context, cfg Config) (*Provider, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var sampler sdktrace.Sampler = sdktrace.ParentBased(requestSampler{sdktrace.TraceIDRatioBased(cfg.SampleRatio)})
	if cfg.AlwaysSample {
		sampler = sdktrace.AlwaysSample()
	}
	res := resource.NewSchemaless(attribute.String("service.name", "capkv"), attribute.String("service.instance.id", cfg.Node), KeyNode.String(cfg.Node))
	opts := []sdktrace.TracerProviderOption{sdktrace.WithSampler(sampler), sdktrace.WithResource(res)}
	p := &Provider{ratio: cfg.SampleRatio}
	if cfg.AlwaysSample {
		p.ratio = 1
	}
	if cfg.BufferSpans > 0 && cfg.BufferBytes > 0 {
		p.buf = NewBuffer(cfg.Node, cfg.BufferSpans, cfg.BufferBytes)
		opts = append(opts, sdktrace.WithSpanProcessor(p.buf))
	}
	if cfg.OTLPEndpoint != "" {
		eo := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(cfg.OTLPEndpoint)}
		if cfg.OTLPInsecure {
			eo = append(eo, otlptracegrpc.WithInsecure())
		}
		exp, err := otlptracegrpc.New(ctx, eo...)
		if err != nil {
			return nil, fmt.Errorf("%w: otlp exporter to %s: %v", kverrors.ErrInvalidArgument, cfg.OTLPEndpoint, err)
		}
		opts = append(opts, sdktrace.WithBatcher(exp))
	}
	p.TracerProvider = sdktrace.NewTracerProvider(opts...)
	return p, nil
}

// Buffer is the provider's span buffer (nil when it has none).
func (p *Provider) Buffer() *Buffer {
	if p == nil {
		return nil
	}
	return p.buf
}

// Close flushes the exporter and stops the provider.
func (p *Provider) Close(ctx context.Context) error {
	if p == nil || p.TracerProvider == nil {
		return nil
	}
	return p.Shutdown(ctx)
}

// propagator carries W3C trace context (traceparent, tracestate) in gRPC
// metadata; capkv sets no global propagator, so it is named here.
var propagator = propagation.TraceContext{}

func otelHandler(tp oteltrace.TracerProvider) stats.Handler {
	return otelgrpc.NewServerHandler(otelgrpc.WithTracerProvider(tp), otelgrpc.WithPropagators(propagator),
		otelgrpc.WithFilter(serverFilter))
}

// serverFilter leaves out the calls that are the cluster's own chatter:
// Raft (a traced entry gets spans of its own from package cp, and a
// heartbeat is no request) and health probes. The trace context of such a
// call is still read.
func serverFilter(info *stats.RPCTagInfo) bool {
	m := info.FullMethodName
	return !strings.HasPrefix(m, "/capkv.v1.Raft/") && !strings.HasPrefix(m, "/grpc.health.")
}

// requestSampler samples a new trace only at a client's request (the KV
// service): a ratio of 1 then traces every put and get, not also every
// anti-entropy exchange and cluster-map refresh the nodes make among
// themselves.
type requestSampler struct{ ratio sdktrace.Sampler }

func (s requestSampler) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	if !strings.HasPrefix(p.Name, "capkv.v1.KV/") {
		return sdktrace.SamplingResult{Decision: sdktrace.Drop, Tracestate: oteltrace.SpanContextFromContext(p.ParentContext).TraceState()}
	}
	return s.ratio.ShouldSample(p)
}

func (s requestSampler) Description() string { return "KV requests: " + s.ratio.Description() }

// ClientHandler is the stats handler of every client connection: it
// records the call on the provider of the span in the caller's context and
// passes the trace on. A call whose context carries no span context at all
// (every heartbeat, most node-to-node calls, every request with sampling
// off) skips otelgrpc entirely: there is nothing to record or propagate,
// and its per-call set-up was ~3% of a node's CPU on one-client gets.
func ClientHandler() stats.Handler {
	return skipNoSpan{otelgrpc.NewClientHandler(otelgrpc.WithTracerProvider(contextProvider{}), otelgrpc.WithPropagators(propagator))}
}

// skipNoSpan runs the wrapped client handler only for calls whose context
// holds a valid span context (sampled or not: an unsampled one still
// travels, so the callee does not sample the request anew).
type skipNoSpan struct{ stats.Handler }

func (h skipNoSpan) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	if !oteltrace.SpanContextFromContext(ctx).IsValid() {
		return ctx
	}
	return h.Handler.TagRPC(ctx, info)
}

// HandleRPC gets the context TagRPC returned, derived from the caller's, so
// the same test tells a skipped call without a context value (which would
// allocate on every call).
func (h skipNoSpan) HandleRPC(ctx context.Context, s stats.RPCStats) {
	if !oteltrace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	h.Handler.HandleRPC(ctx, s)
}

// ServerOptions install tracing on a node's gRPC server as interceptors
// that drive otelgrpc's server handler, and only for the calls it would trace: with a
// provider that samples no new traces (ratio 0, the default) a call that
// brings no traceparent runs untouched. Installing the handler with
// grpc.StatsHandler instead makes grpc-go gather its per-message stats
// (headers, payloads, timestamps) for every call whether or not anything
// reads them: 4-10% of the put rate with sampling off. The spans are the
// same: otelgrpc's, opened at the call's start and ended with its status.
func ServerOptions(tp oteltrace.TracerProvider) []grpc.ServerOption {
	st := serverTracingOf(tp)
	return []grpc.ServerOption{grpc.ChainUnaryInterceptor(st.unary), grpc.ChainStreamInterceptor(st.stream)}
}

func serverTracingOf(tp oteltrace.TracerProvider) serverTracing {
	st := serverTracing{h: otelHandler(tp), all: true}
	if p, ok := tp.(*Provider); ok && p.ratio == 0 {
		st.all = false
	}
	return st
}

type serverTracing struct {
	h   stats.Handler
	all bool // every call may start a trace (ratio > 0)
}

// traced says whether the call is handed to otelgrpc: always when new
// traces are sampled, else only when the caller sent a trace context.
// ValueFromIncomingContext does not copy the metadata.
func (st serverTracing) traced(ctx context.Context) bool {
	return st.all || len(metadata.ValueFromIncomingContext(ctx, "traceparent")) > 0
}

func (st serverTracing) begin(ctx context.Context, method string) (context.Context, time.Time) {
	ctx = st.h.TagRPC(ctx, &stats.RPCTagInfo{FullMethodName: method})
	now := time.Now()
	st.h.HandleRPC(ctx, &stats.Begin{BeginTime: now})
	return ctx, now
}

func (st serverTracing) end(ctx context.Context, began time.Time, err error) {
	st.h.HandleRPC(ctx, &stats.End{BeginTime: began, EndTime: time.Now(), Error: err})
}

func (st serverTracing) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if !st.traced(ctx) {
		return handler(ctx, req)
	}
	ctx, began := st.begin(ctx, info.FullMethod)
	resp, err := handler(ctx, req)
	st.end(ctx, began, err)
	return resp, err
}

func (st serverTracing) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if !st.traced(ss.Context()) {
		return handler(srv, ss)
	}
	ctx, began := st.begin(ss.Context(), info.FullMethod)
	err := handler(srv, tracedStream{ss, ctx})
	st.end(ctx, began, err)
	return err
}

// tracedStream is a server stream whose handler sees the span's context.
type tracedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s tracedStream) Context() context.Context { return s.ctx }

// contextProvider hands out a tracer that starts each span with the
// provider of the span in the context it is given.
type contextProvider struct{ embedded.TracerProvider }

func (contextProvider) Tracer(string, ...oteltrace.TracerOption) oteltrace.Tracer {
	return contextTracer{}
}

type contextTracer struct{ embedded.Tracer }

func (contextTracer) Start(ctx context.Context, name string, opts ...oteltrace.SpanStartOption) (context.Context, oteltrace.Span) {
	parent := oteltrace.SpanFromContext(ctx)
	if !parent.IsRecording() {
		// Not traced, or the parent is remote: nothing to record here, but
		// the span context (sampled or not) still travels.
		return ctx, parent
	}
	return parent.TracerProvider().Tracer(ScopeName).Start(ctx, name, opts...)
}

// noopSpan is the span of an untraced context; its End does nothing.
var noopSpan = oteltrace.SpanFromContext(context.Background())

// Start starts a span of capkv's own as a child of the span in ctx, with
// that span's provider. When ctx is not being recorded it returns ctx and
// a span whose End does nothing, without allocating.
func Start(ctx context.Context, name string, opts ...oteltrace.SpanStartOption) (context.Context, oteltrace.Span) {
	parent := oteltrace.SpanFromContext(ctx)
	if !parent.IsRecording() {
		return ctx, noopSpan
	}
	return parent.TracerProvider().Tracer(ScopeName).Start(ctx, name, opts...)
}

// StartWith starts a span with tp as a child of the span context in ctx
// (remote or local): for code that runs outside the request's goroutine
// (Raft apply and replication) and knows its node's provider. A parent that
// is not sampled gives the no-op span.
func StartWith(ctx context.Context, tp oteltrace.TracerProvider, name string, opts ...oteltrace.SpanStartOption) (context.Context, oteltrace.Span) {
	if tp == nil || !oteltrace.SpanContextFromContext(ctx).IsSampled() {
		return ctx, noopSpan
	}
	return tp.Tracer(ScopeName).Start(ctx, name, opts...)
}

// End records the outcome of err on span (ok, or the error's text) and
// ends it.
func End(span oteltrace.Span, err error) {
	if span.IsRecording() {
		if err != nil {
			span.SetAttributes(KeyOutcome.String(Outcome(err)))
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		} else {
			span.SetAttributes(KeyOutcome.String("ok"))
		}
	}
	span.End()
}

// TraceID is the trace ID of a sampled span in ctx, "" otherwise.
func TraceID(ctx context.Context) string {
	sc := oteltrace.SpanContextFromContext(ctx)
	if !sc.IsSampled() {
		return ""
	}
	return sc.TraceID().String()
}

// Inject encodes the sampled span context of ctx as a traceparent header
// value, for a Raft log entry's extensions; nil when ctx is not sampled.
func Inject(ctx context.Context) []byte {
	sc := oteltrace.SpanContextFromContext(ctx)
	if !sc.IsSampled() {
		return nil
	}
	c := propagation.MapCarrier{}
	propagator.Inject(ctx, c)
	return []byte(c["traceparent"])
}

// Extract returns a context whose remote parent is the span context Inject
// encoded in b (ctx unchanged when b holds none).
func Extract(ctx context.Context, b []byte) context.Context {
	if len(b) == 0 {
		return ctx
	}
	return propagator.Extract(ctx, propagation.MapCarrier{"traceparent": string(b)})
}

// outcomes names an error's kind on a span, first match wins.
var outcomes = []struct {
	err  error
	name string
}{
	{kverrors.ErrNotFound, "not_found"}, {kverrors.ErrTooLarge, "too_large"}, {kverrors.ErrUnknownKeyspace, "unknown_keyspace"},
	{kverrors.ErrInvalidArgument, "invalid_argument"}, {kverrors.ErrWrongMode, "wrong_mode"}, {kverrors.ErrConflict, "conflict"},
	{kverrors.ErrStaleEpoch, "stale_epoch"}, {kverrors.ErrUnavailable, "unavailable"}, {kverrors.ErrIndeterminate, "indeterminate"},
	{kverrors.ErrUnauthenticated, "unauthenticated"}, {kverrors.ErrPermissionDenied, "permission_denied"}, {kverrors.ErrInternal, "internal"},
}

// Outcome is the value of the outcome attribute for err: "ok", the kind of
// a capkv error, or "error".
func Outcome(err error) string {
	if err == nil {
		return "ok"
	}
	for _, o := range outcomes {
		if errors.Is(err, o.err) {
			return o.name
		}
	}
	return "error"
}

// Force returns ctx with a new sampled remote span context, and its trace
// ID: every call made with it is traced on every node it reaches (their
// parent-based samplers follow it), whatever their sample ratios. It is
// what kvctl --trace does; the client records no span of its own.
func Force(ctx context.Context) (context.Context, string) {
	var tid oteltrace.TraceID
	var sid oteltrace.SpanID
	rand.Read(tid[:])
	rand.Read(sid[:])
	sc := oteltrace.NewSpanContext(oteltrace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: oteltrace.FlagsSampled, Remote: true})
	return oteltrace.ContextWithRemoteSpanContext(ctx, sc), tid.String()
}
