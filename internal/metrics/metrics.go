// Package metrics is what a kvd node exports for Prometheus: requests by
// operation, keyspace, mode, level and outcome, their latency, what the CAP
// trade-off cost them (forwards, hints, sloppy quorums, siblings), and the
// node's view of its Raft groups, hints, peers and watchers, read at scrape
// time so that the request path pays only for counter increments.
//
// Each node has its own registry (tests run several nodes in one process);
// kvd serves it on --metrics-addr at /metrics.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Request describes one served KV request.
type Request struct {
	Op, Keyspace, Mode, Level, Code string
	Seconds                         float64
	Forwarded, Hinted, Sloppy       bool
	Siblings                        int
	// FromNode: another node forwarded it here. Such requests are counted
	// apart, so that summing requests_total over the nodes counts every
	// client request once.
	FromNode bool
}

// Metrics holds one node's collectors.
type Metrics struct {
	reg       *prometheus.Registry
	requests  *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	forwarded *prometheus.CounterVec
	inbound   *prometheus.CounterVec
	hinted    *prometheus.CounterVec
	sloppy    *prometheus.CounterVec
	siblings  *prometheus.CounterVec
}

// New creates a node's metrics; state is read at every scrape (nil: none).
func New(node string, state prometheus.Collector) *Metrics {
	reg := prometheus.NewRegistry()
	f := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "capkv", Name: name, Help: help}, labels)
	}
	m := &Metrics{
		reg:      reg,
		requests: f("requests_total", "KV requests clients sent to this node, by outcome (requests other nodes forwarded here are in requests_from_nodes_total).", "op", "keyspace", "mode", "level", "code"),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "capkv", Name: "request_duration_seconds",
			Help:    "Latency of KV requests at this node, forwarding included.",
			Buckets: []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5},
		}, []string{"op", "mode", "level"}),
		forwarded: f("forwarded_total", "Requests this node passed on to a replica or leader.", "op", "keyspace", "mode"),
		inbound:   f("requests_from_nodes_total", "Requests other nodes forwarded to this one, by outcome.", "op", "keyspace", "mode", "code"),
		hinted:    f("ap_hinted_writes_total", "ap writes that left a hint on a fallback node for an unreachable replica.", "keyspace"),
		sloppy:    f("ap_sloppy_quorum_total", "ap writes whose quorum counted hints (sloppy quorum).", "keyspace"),
		siblings:  f("ap_sibling_reads_total", "ap reads that returned concurrent values (siblings).", "keyspace"),
	}
	// Every series carries the node's ID, so that several nodes' metrics
	// can be told apart wherever they are collected.
	r := prometheus.WrapRegistererWith(prometheus.Labels{"node": node}, reg)
	r.MustRegister(m.requests, m.latency, m.forwarded, m.inbound, m.hinted, m.sloppy, m.siblings,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if state != nil {
		r.MustRegister(state)
	}
	return m
}

// Observe records one request.
func (m *Metrics) Observe(r Request) {
	if m == nil {
		return
	}
	if r.FromNode {
		m.inbound.WithLabelValues(r.Op, r.Keyspace, r.Mode, r.Code).Inc()
		return
	}
	m.requests.WithLabelValues(r.Op, r.Keyspace, r.Mode, r.Level, r.Code).Inc()
	m.latency.WithLabelValues(r.Op, r.Mode, r.Level).Observe(r.Seconds)
	if r.Forwarded {
		m.forwarded.WithLabelValues(r.Op, r.Keyspace, r.Mode).Inc()
	}
	if r.Hinted {
		m.hinted.WithLabelValues(r.Keyspace).Inc()
	}
	if r.Sloppy {
		m.sloppy.WithLabelValues(r.Keyspace).Inc()
	}
	if r.Siblings > 1 {
		m.siblings.WithLabelValues(r.Keyspace).Inc()
	}
}

// Handler serves the registry in Prometheus' text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// Registry is the node's registry (tests gather from it).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Gauge is one sample of a state collector.
type Gauge struct {
	Desc   *prometheus.Desc
	Value  float64
	Labels []string
}

// StateFunc adapts a function that reads the node's state into a collector.
type StateFunc struct {
	Descs []*prometheus.Desc
	Read  func() []Gauge
}

// Describe implements prometheus.Collector.
func (s StateFunc) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range s.Descs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (s StateFunc) Collect(ch chan<- prometheus.Metric) {
	for _, g := range s.Read() {
		ch <- prometheus.MustNewConstMetric(g.Desc, prometheus.GaugeValue, g.Value, g.Labels...)
	}
}
