package node

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/capkv/capkv/internal/metrics"
)

// MetricsHandler serves the node's Prometheus metrics.
func (n *Node) MetricsHandler() http.Handler { return n.metrics.Handler() }

// observe records a KV request in the metrics; err is the status the
// caller gets.
func (n *Node) observe(method string, req, resp any, err error, took time.Duration) {
	n.metrics.ObserveRPC(method, req, resp, err, took, func(name string) (string, bool) {
		ks, ok := n.r().Keyspace(name)
		if !ok {
			return "", false
		}
		return string(ks.Mode), true
	})
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
