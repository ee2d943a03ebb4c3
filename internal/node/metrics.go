package node

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/status"

	"github.com/capkv/capkv/api"
	"github.com/capkv/capkv/internal/metrics"
	"github.com/capkv/capkv/ring"
)

// MetricsHandler serves the node's Prometheus metrics.
func (n *Node) MetricsHandler() http.Handler { return n.metrics.Handler() }

const kvMethodPrefix = "/capkv.v1.KV/"

// observe records a KV request in the metrics: its keyspace and mode come
// from the receipt when there is one, else from the key. err is the status
// the caller gets.
func (n *Node) observe(method string, req, resp any, err error, took time.Duration) {
	op, ok := strings.CutPrefix(method, kvMethodPrefix)
	if !ok {
		return
	}
	r := metrics.Request{Op: op, Seconds: took.Seconds(), Code: status.Code(err).String()}
	var rc *api.Receipt
	if x, ok := resp.(interface{ GetReceipt() *api.Receipt }); ok && err == nil {
		rc = x.GetReceipt()
	}
	if rc != nil {
		r.Keyspace, r.Mode, r.Level = rc.GetKeyspace(), rc.GetMode(), rc.GetLevel()
		r.Forwarded, r.Hinted, r.Sloppy, r.Siblings = rc.GetForwarded(), rc.GetHinted(), rc.GetSloppyQuorum(), int(rc.GetSiblings())
	} else {
		var key string
		switch x := req.(type) {
		case interface{ GetKey() string }:
			key = x.GetKey()
		case interface{ GetPrefix() string }:
			key = x.GetPrefix()
		}
		if name, err := ring.SplitKeyspace(key); err == nil {
			if ks, ok := n.r().Keyspace(name); ok {
				r.Keyspace, r.Mode = ks.Name, string(ks.Mode)
			}
		}
		if x, ok := req.(interface{ GetHeader() *api.RequestHeader }); ok {
			r.Level = x.GetHeader().GetConsistency()
		}
	}
	if x, ok := req.(interface{ GetHeader() *api.RequestHeader }); ok && x.GetHeader().GetHops() > 0 {
		r.FromNode = true
	}
	if r.Keyspace == "" {
		r.Keyspace = "unknown" // bounded: unknown keyspaces share one series
	}
	n.metrics.Observe(r)
}

var (
	descEpoch    = prometheus.NewDesc("capkv_cluster_epoch", "Epoch of the cluster map this node follows.", nil, nil)
	descKeyspace = prometheus.NewDesc("capkv_keyspace_info", "Keyspaces of the cluster map (value 1), with their mode and default level.",
		[]string{"keyspace", "mode", "default_level", "replicas"}, nil)
	descPeerUp  = prometheus.NewDesc("capkv_peer_up", "Whether this node's failure detector holds the peer reachable (1) or down (0).", []string{"peer"}, nil)
	descLeader  = prometheus.NewDesc("capkv_cp_leader", "Whether this node leads the cp partition's Raft group.", []string{"partition"}, nil)
	descApplied = prometheus.NewDesc("capkv_cp_applied_index", "Last Raft log index this replica applied.", []string{"partition"}, nil)
	descContact = prometheus.NewDesc("capkv_cp_last_contact_seconds",
		"Time since this follower last heard from its leader (how stale its stale reads may be); 0 on the leader.", []string{"partition"}, nil)
	descHints   = prometheus.NewDesc("capkv_ap_hints_pending", "Hints this node holds for unreachable ap replicas.", nil, nil)
	descWatches = prometheus.NewDesc("capkv_watch_streams", "Watch streams open on this node.", nil, nil)
)

// readState samples the node's state for a scrape.
func (n *Node) readState() []metrics.Gauge {
	r := n.r()
	out := []metrics.Gauge{{Desc: descEpoch, Value: float64(r.Epoch())}}
	for _, ks := range r.Keyspaces() {
		out = append(out, metrics.Gauge{Desc: descKeyspace, Value: 1,
			Labels: []string{ks.Name, string(ks.Mode), string(ks.DefaultLevel), strconv.Itoa(ks.Replicas)}})
	}
	for _, st := range n.fd.States() {
		v := 0.0
		if st.Up {
			v = 1
		}
		out = append(out, metrics.Gauge{Desc: descPeerUp, Value: v, Labels: []string{st.ID}})
	}
	for _, g := range n.host.Groups() {
		id := g.ID()
		leader, contact := 0.0, 0.0
		if g.IsLeader() {
			leader = 1
		} else if lc := g.LastContact(); !lc.IsZero() {
			contact = time.Since(lc).Seconds()
		}
		out = append(out,
			metrics.Gauge{Desc: descLeader, Value: leader, Labels: []string{id}},
			metrics.Gauge{Desc: descApplied, Value: float64(g.AppliedIndex()), Labels: []string{id}},
			metrics.Gauge{Desc: descContact, Value: contact, Labels: []string{id}})
	}
	if c, err := n.apr.HintsPending(); err == nil {
		out = append(out, metrics.Gauge{Desc: descHints, Value: float64(c)})
	}
	out = append(out, metrics.Gauge{Desc: descWatches, Value: float64(n.watch.Subscribers())})
	return out
}

func (n *Node) stateCollector() prometheus.Collector {
	return metrics.StateFunc{
		Descs: []*prometheus.Desc{descEpoch, descKeyspace, descPeerUp, descLeader, descApplied, descContact, descHints, descWatches},
		Read:  n.readState,
	}
}
